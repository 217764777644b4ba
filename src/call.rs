//! `adjunct-gateway call`: the operator's client. Connects to a gateway over
//! TLS, logs in with `session.login`, calls one method and prints its result
//! as pretty JSON; with `--watch` subscribes and prints each event as one
//! JSON line until Ctrl-C or the gateway closes.
//!
//! Trust: `--ca FILE` (PEM) replaces the system's roots. Every failure, from
//! the TCP connect to a JSON-RPC error, is a [`CallError`] whose text names
//! what failed; the binary prints it and exits 1.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// What to do.
pub struct Call {
    /// `wss://host:port/adjunct` or `/portal`.
    pub url: String,
    pub user: String,
    pub password: String,
    /// PEM file of the CA to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    pub method: Option<String>,
    pub params: Option<Value>,
    /// Topic patterns to subscribe to and print.
    pub watch: Vec<String>,
    /// Bound on connecting and on each answer.
    pub timeout: Duration,
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// Bad arguments (URL, CA file).
    Usage(String),
    /// TCP, TLS or the WebSocket upgrade failed.
    Connect(String),
    /// The gateway answered with a JSON-RPC error.
    Rpc {
        method: String,
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// The connection ended unexpectedly.
    Closed(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Usage(m) | CallError::Connect(m) | CallError::Closed(m) => f.write_str(m),
            CallError::Rpc {
                method,
                code,
                message,
                data,
            } => {
                write!(f, "{method}: error {code}: {message}")?;
                if let Some(data) = data {
                    write!(f, " {data}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CallError {}

/// Runs the call, writing results and events to stdout.
pub async fn run(call: Call) -> Result<(), CallError> {
    let mut conn = Conn::open(&call).await?;
    conn.request(
        "session.login",
        json!({"user": call.user, "password": call.password}),
    )
    .await?;
    if let Some(method) = &call.method {
        let params = call.params.clone().unwrap_or(Value::Null);
        let result = conn.request(method, params).await?;
        let pretty = serde_json::to_string_pretty(&result).unwrap_or_default();
        println!("{pretty}");
    }
    if call.watch.is_empty() {
        conn.close(CloseCode::Normal).await;
        return Ok(());
    }
    conn.request("events.subscribe", json!({ "topics": call.watch }))
        .await?;
    eprintln!("watching {} (Ctrl-C to stop)", call.watch.join(", "));
    conn.watch().await
}

struct Conn {
    ws: Ws,
    next_id: u64,
    timeout: Duration,
}

impl Conn {
    async fn open(call: &Call) -> Result<Conn, CallError> {
        let request = call
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| CallError::Usage(format!("--url {}: {e}", call.url)))?;
        let uri = request.uri();
        if uri.scheme_str() != Some("wss") {
            return Err(CallError::Usage(format!(
                "--url {}: only wss:// is supported",
                call.url
            )));
        }
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.clone())
            .map_err(|_| CallError::Usage(format!("--url {}: bad host name", call.url)))?;
        let connector = connector(call.ca.as_ref())?;
        let connect = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| CallError::Connect(format!("cannot connect to {host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(name, tcp).await.map_err(|e| {
                CallError::Connect(format!("TLS handshake with {host}:{port} failed: {e}"))
            })?;
            let config = WebSocketConfig::default()
                .max_message_size(Some(64 << 20))
                .max_frame_size(Some(64 << 20));
            tokio_tungstenite::client_async_with_config(request, tls, Some(config))
                .await
                .map(|(ws, _)| ws)
                .map_err(|e| CallError::Connect(upgrade_error(&e)))
        };
        let ws = tokio::time::timeout(call.timeout, connect)
            .await
            .map_err(|_| {
                CallError::Connect(format!(
                    "no connection to {host}:{port} within {:?}",
                    call.timeout
                ))
            })??;
        Ok(Conn {
            ws,
            next_id: 1,
            timeout: call.timeout,
        })
    }

    /// Sends a request and waits for its answer (other messages are skipped).
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            req["params"] = params;
        }
        self.ws
            .send(Message::text(req.to_string()))
            .await
            .map_err(|e| CallError::Closed(format!("{method}: cannot send: {e}")))?;
        let answer = tokio::time::timeout(self.timeout, async {
            loop {
                let v = self.next_json(method).await?;
                if v.get("id") == Some(&json!(id)) {
                    return Ok(v);
                }
            }
        })
        .await
        .map_err(|_| {
            CallError::Closed(format!("{method}: no answer within {:?}", self.timeout))
        })??;
        if let Some(e) = answer.get("error") {
            return Err(CallError::Rpc {
                method: method.to_owned(),
                code: e["code"].as_i64().unwrap_or(0),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
                data: e.get("data").cloned(),
            });
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    /// The next text message as JSON; a close or an error ends the call.
    async fn next_json(&mut self, doing: &str) -> Result<Value, CallError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).map_err(|e| {
                        CallError::Closed(format!("{doing}: the gateway sent invalid JSON: {e}"))
                    })
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(CallError::Closed(match frame {
                        Some(f) => format!(
                            "{doing}: the gateway closed the connection: {} {}",
                            u16::from(f.code),
                            f.reason
                        ),
                        None => format!("{doing}: the gateway closed the connection"),
                    }))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(CallError::Closed(format!("{doing}: {e}"))),
                None => return Err(CallError::Closed(format!("{doing}: the connection ended"))),
            }
        }
    }

    /// Prints events until Ctrl-C (a normal end) or the gateway closes.
    async fn watch(mut self) -> Result<(), CallError> {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            let v = tokio::select! {
                _ = &mut ctrl_c => {
                    self.close(CloseCode::Normal).await;
                    return Ok(());
                }
                v = self.next_json("watch") => v?,
            };
            match v.get("method").and_then(Value::as_str) {
                Some("event") => {
                    let mut out = std::io::stdout().lock();
                    let line = v.get("params").cloned().unwrap_or(Value::Null);
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        // stdout closed (e.g. `| head`): stop quietly.
                        self.close(CloseCode::Normal).await;
                        return Ok(());
                    }
                }
                Some("event.lost") => {
                    eprintln!(
                        "{} events lost (this client was too slow)",
                        v["params"]["count"]
                    );
                }
                _ => {}
            }
        }
    }

    async fn close(&mut self, code: CloseCode) {
        let frame = CloseFrame {
            code,
            reason: "".into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            self.ws.close(Some(frame)).await.ok()?;
            while let Some(Ok(_)) = self.ws.next().await {}
            Some(())
        })
        .await;
    }
}

/// The TLS client: the CA in `ca`, or the system's roots.
fn connector(ca: Option<&PathBuf>) -> Result<TlsConnector, CallError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| CallError::Usage(format!("--ca {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(CallError::Usage(format!(
                    "--ca {}: no certificate found",
                    path.display()
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| CallError::Usage(format!("--ca {}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(CallError::Usage(
                    "no system CA certificates found: pass --ca FILE".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CallError::Usage(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A refused upgrade, said plainly (the HTTP status and the gateway's text).
fn upgrade_error(e: &WsError) -> String {
    match e {
        WsError::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .unwrap_or_default();
            format!(
                "the WebSocket upgrade was refused: HTTP {} {body}",
                response.status()
            )
        }
        other => format!("the WebSocket upgrade failed: {other}"),
    }
}
