//! A small simulated CTI application server: it connects to the gateway on
//! /adjunct, registers for the "cti" namespace, serves `cti.extensions`,
//! `cti.make_call`, `cti.answer`, `cti.hold`, `cti.clear` and `cti.list`
//! over a few extensions, and publishes call-state events on
//! `cti.call.<extension>`.
//!
//! It behaves like a real application server: when the connection closes or
//! is lost (the gateway restarting, close 1001, a reset, a refused connect) it
//! reconnects with capped exponential back-off and jitter, authenticates with
//! its resume token (`Authorization: Bearer`, falling back to the password
//! when the token is refused), and registers again. Calls survive a
//! reconnect. It exits 0 only on Ctrl-C or SIGTERM; it exits 1 when the
//! gateway refuses its password or its right, or the CA file is unusable,
//! because retrying would only lock the account.
//!
//! Progress goes to stdout; stderr gets only what needs an operator.
//!
//! Run it beside a gateway started with the embedded default:
//!
//! ```text
//! ADJUNCT_GATEWAY_PASSWORD=<appserver1's password> \
//!   cargo run --example cti_provider -- --url wss://127.0.0.1:8443/adjunct --user appserver1 --ca certs/ca.pem
//! ```
//!
//! then, from the demo page or any client holding one-X CTI API, call
//! `cti.make_call {"from":"201","to":"202"}` and subscribe to `cti.call.*`.
//!
//! Provider error codes: 4000 bad params, 4004 no such call, 4009 the call
//! is not in a state that allows the request.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

const EXTENSIONS: &[&str] = &["201", "202", "203", "204"];

/// First reconnect delay; it doubles per failed attempt up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// TCP connect, TLS and the upgrade together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Our own pings detect a gateway that vanished without a reset; the
/// gateway pings every 30 s by default, so 45 s of silence means it is gone.
const PING_EVERY: Duration = Duration::from_secs(15);
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// A token this close to its expiry is not offered any more.
const TOKEN_MARGIN_SECS: u64 = 60;

type Ws = WebSocketStream<TlsStream<TcpStream>>;

struct Args {
    url: String,
    user: String,
    ca: String,
}

fn args() -> Result<Args, String> {
    let mut url = "wss://127.0.0.1:8443/adjunct".to_owned();
    let mut user = "appserver1".to_owned();
    let mut ca = "certs/ca.pem".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--url" => url = v,
            "--user" => user = v,
            "--ca" => ca = v,
            _ => return Err(format!("unknown argument {a} (--url, --user, --ca)")),
        }
    }
    Ok(Args { url, user, ca })
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cti_provider: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args = args()?;
    let password = std::env::var("ADJUNCT_GATEWAY_PASSWORD")
        .map_err(|_| "set ADJUNCT_GATEWAY_PASSWORD to the user's password")?;
    adjunct_gateway::tls::install_provider();
    let tls = tls_config(&args.ca)?;
    let stop = CancellationToken::new();
    tokio::spawn(cancel_on_signal(stop.clone()));

    let mut link = Link {
        tls,
        url: args.url,
        user: args.user,
        password,
        token: None,
    };
    let mut pbx = Pbx::default();
    let mut backoff = Backoff::new();
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(CONNECT_TIMEOUT, link.connect()) => {
                r.unwrap_or_else(|_| Err(Failure::Transient("connect timed out".into())))
            }
        };
        let why = match outcome {
            Ok((ws, how)) => {
                println!("connected to {} as {} ({how})", link.url, link.user);
                match serve(ws, &mut link, &mut pbx, &stop, &mut backoff).await? {
                    Ended::Stopped => break,
                    Ended::Closed(why) => why,
                }
            }
            Err(Failure::TokenRefused) => {
                link.token = None;
                println!("the resume token was refused; logging in with the password");
                continue;
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(e)) => format!("cannot reach {}: {e}", link.url),
        };
        let delay = backoff.next();
        println!("{why}; reconnecting in {:.1} s", delay.as_secs_f64());
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    println!("stopped");
    Ok(())
}

fn tls_config(ca: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca {ca}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--ca {ca}: {e}"))?;
        roots.add(cert).map_err(|e| format!("--ca {ca}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("--ca {ca}: no certificate in the file"));
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Ctrl-C or SIGTERM: the only ways this program ends with status 0.
async fn cancel_on_signal(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    stop.cancel();
}

/// Capped exponential back-off with equal jitter: half the step is fixed,
/// half random, so providers restarted together do not reconnect together.
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            step: BACKOFF_FIRST,
        }
    }

    fn next(&mut self) -> Duration {
        let half = self.step / 2;
        let delay = half + half.mul_f64(rand::rng().random::<f64>());
        self.step = (self.step * 2).min(BACKOFF_CAP);
        delay
    }

    fn reset(&mut self) {
        self.step = BACKOFF_FIRST;
    }
}

/// Why a connection attempt failed.
enum Failure {
    /// Try again after the back-off.
    Transient(String),
    /// 401 to a resume token: retry at once with the password.
    TokenRefused,
    /// Retrying cannot help (and could lock the account).
    Fatal(String),
}

/// How a served connection ended.
enum Ended {
    Stopped,
    Closed(String),
}

/// The gateway address and the credentials, including the latest resume token.
struct Link {
    tls: Arc<rustls::ClientConfig>,
    url: String,
    user: String,
    password: String,
    /// The token and its expiry (Unix seconds).
    token: Option<(String, u64)>,
}

impl Link {
    fn usable_token(&self) -> Option<&str> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.token
            .as_ref()
            .filter(|(_, expires)| *expires > now + TOKEN_MARGIN_SECS)
            .map(|(t, _)| t.as_str())
    }

    /// Opens an authenticated WebSocket: Bearer with a usable resume token,
    /// Basic otherwise. Returns it with the credential used.
    async fn connect(&self) -> Result<(Ws, &'static str), Failure> {
        let fatal = |e: &dyn std::fmt::Display| Failure::Fatal(format!("--url {}: {e}", self.url));
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| fatal(&e))?;
        let host = request
            .uri()
            .host()
            .ok_or_else(|| fatal(&"no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = request.uri().port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone()).map_err(|e| fatal(&e))?;
        let (authorization, how) = match self.usable_token() {
            Some(token) => (format!("Bearer {token}"), "resume token"),
            None => {
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", self.user, self.password));
                (format!("Basic {basic}"), "password")
            }
        };
        let value = HeaderValue::from_str(&authorization).map_err(|_| {
            Failure::Fatal("the user name or password is not a valid header".into())
        })?;
        request.headers_mut().insert("Authorization", value);

        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| Failure::Transient(io_text(&e)))?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .map_err(tls_failure)?;
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((ws, _)) => Ok((ws, how)),
            Err(WsError::Http(response)) => Err(match response.status().as_u16() {
                401 if how == "resume token" => Failure::TokenRefused,
                401 => Failure::Fatal(format!(
                    "the gateway refused {}'s password (401); check ADJUNCT_GATEWAY_PASSWORD",
                    self.user
                )),
                403 => Failure::Fatal(format!(
                    "{} lacks the right Adjunct Server Connection (403)",
                    self.user
                )),
                status @ (429 | 503) => Failure::Transient(format!("HTTP {status}")),
                status => Failure::Fatal(format!("the upgrade got HTTP {status}")),
            }),
            Err(e) => Err(Failure::Transient(e.to_string())),
        }
    }
}

/// A certificate the CA does not vouch for will not heal by retrying.
fn tls_failure(e: std::io::Error) -> Failure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(why)) => {
            Failure::Fatal(format!("the gateway's certificate: {why:?} (check --ca)"))
        }
        _ => Failure::Transient(io_text(&e)),
    }
}

/// "connection refused" rather than "Connection refused (os error 111)".
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::Other => e.to_string(),
        kind => kind.to_string(),
    }
}

/// Serves one connection until it ends or the program is stopped.
async fn serve(
    mut ws: Ws,
    link: &mut Link,
    pbx: &mut Pbx,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<Ended, String> {
    let hello = [
        json!({"jsonrpc":"2.0","id":"token","method":"session.token"}),
        json!({"jsonrpc":"2.0","id":"register","method":"adjunct.register","params":{"namespaces":["cti"]}}),
    ];
    for m in hello {
        if let Err(e) = ws.send(Message::text(m.to_string())).await {
            return Ok(Ended::Closed(format!("connection lost ({e})")));
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut last_heard = Instant::now();
    let mut close: Option<String> = None;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => {
                let bye = CloseFrame { code: CloseCode::Normal, reason: "provider stopping".into() };
                let _ = ws.send(Message::Close(Some(bye))).await;
                // Give the gateway a moment to echo the close.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return Ok(Ended::Stopped);
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return Ok(Ended::Closed(format!(
                        "nothing heard from the gateway for {} s", SILENCE_LIMIT.as_secs()
                    )));
                }
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    return Ok(Ended::Closed("connection lost".into()));
                }
                continue;
            }
            msg = ws.next() => msg,
        };
        let text = match msg {
            // The stream ends after the close handshake (or at EOF).
            None => {
                return Ok(Ended::Closed(
                    close.unwrap_or_else(|| "connection lost".into()),
                ))
            }
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) if close.is_some() => {
                return Ok(Ended::Closed(close.unwrap_or_default()));
            }
            Some(Err(e)) => {
                return Ok(Ended::Closed(
                    close.unwrap_or(format!("connection lost ({e})")),
                ))
            }
            Some(Ok(m)) => {
                last_heard = Instant::now();
                match m {
                    Message::Text(text) => text,
                    Message::Close(frame) => {
                        close = Some(describe_close(frame.as_ref()));
                        continue; // tungstenite echoes it; the stream then ends
                    }
                    _ => continue,
                }
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            eprintln!("warning: the gateway sent a frame that is not JSON");
            continue;
        };
        let messages = match v {
            Value::Array(items) => items,
            one => vec![one],
        };
        for m in messages {
            if m.get("method").is_none() {
                on_answer(&m, link, backoff)?;
                continue;
            }
            for out in pbx.request(&m) {
                if let Err(e) = ws.send(Message::text(out.to_string())).await {
                    return Ok(Ended::Closed(format!("connection lost ({e})")));
                }
            }
        }
    }
}

fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if f.code == CloseCode::Away => {
            format!("gateway going away ({} {})", u16::from(f.code), f.reason)
        }
        Some(f) => {
            let text = format!(
                "the gateway closed the session ({} {})",
                u16::from(f.code),
                f.reason
            );
            eprintln!("warning: {text}");
            text
        }
        None => "the gateway closed the session".into(),
    }
}

/// Answers to our own requests: the resume token, the registration, publishes.
fn on_answer(m: &Value, link: &mut Link, backoff: &mut Backoff) -> Result<(), String> {
    let id = m["id"].as_str().unwrap_or_default();
    match (id, m.get("result"), m.get("error")) {
        ("token", Some(r), _) => {
            if let (Some(t), Some(exp)) = (r["resumeToken"].as_str(), r["resumeExpires"].as_u64()) {
                link.token = Some((t.to_owned(), exp));
            }
        }
        ("register", Some(_), _) => {
            backoff.reset();
            println!("registered for cti.*; serving extensions {EXTENSIONS:?}");
        }
        ("register", _, Some(e)) => return Err(format!("adjunct.register was refused: {e}")),
        (_, _, Some(e)) => eprintln!("warning: the gateway refused {id}: {e}"),
        _ => {}
    }
    Ok(())
}

#[derive(Clone)]
struct Call {
    from: String,
    to: String,
    state: &'static str,
}

/// The simulated telephone system: calls by id. It outlives connections.
#[derive(Default)]
struct Pbx {
    calls: BTreeMap<u64, Call>,
    last_call: u64,
    last_publish: u64,
}

type Outcome = Result<Value, (i64, String)>;

impl Pbx {
    /// One routed request: the answer (unless it is a notification), then
    /// the events it caused.
    fn request(&mut self, v: &Value) -> Vec<Value> {
        let method = v["method"].as_str().unwrap_or_default();
        let caller = v["caller"]["user"].as_str().unwrap_or("?");
        let (outcome, events) = self.handle(method, &v["params"]);
        println!(
            "{caller} -> {method}: {}",
            outcome
                .as_ref()
                .map_or_else(|e| e.1.clone(), Value::to_string)
        );
        let mut out = Vec::new();
        if let Some(id) = v.get("id") {
            out.push(match outcome {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Err((code, message)) => {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                }
            });
        }
        for (extension, data) in events {
            self.last_publish += 1;
            out.push(
                json!({"jsonrpc": "2.0", "id": format!("pub-{}", self.last_publish),
                "method": "adjunct.publish",
                "params": {"topic": format!("cti.call.{extension}"), "data": data}}),
            );
        }
        out
    }

    fn handle(&mut self, method: &str, p: &Value) -> (Outcome, Vec<(String, Value)>) {
        match method {
            "cti.extensions" => (Ok(json!({"extensions": EXTENSIONS})), vec![]),
            "cti.list" => (
                Ok(json!(self
                    .calls
                    .iter()
                    .map(|(id, c)| json!({"callId": id, "from": c.from, "to": c.to, "state": c.state}))
                    .collect::<Vec<_>>())),
                vec![],
            ),
            "cti.make_call" => self.make_call(p),
            "cti.answer" | "cti.hold" | "cti.clear" => self.change(method, p),
            _ => (Err((-32601, "method not found".to_owned())), vec![]),
        }
    }

    fn make_call(&mut self, p: &Value) -> (Outcome, Vec<(String, Value)>) {
        let from = p["from"].as_str().unwrap_or_default();
        let to = p["to"].as_str().unwrap_or_default();
        if !EXTENSIONS.contains(&from) || !EXTENSIONS.contains(&to) || from == to {
            let message = format!("from and to must be two different extensions of {EXTENSIONS:?}");
            return (Err((4000, message)), vec![]);
        }
        self.last_call += 1;
        let id = self.last_call;
        self.calls.insert(
            id,
            Call {
                from: from.to_owned(),
                to: to.to_owned(),
                state: "ringing",
            },
        );
        let data = |state| json!({"callId": id, "state": state, "from": from, "to": to});
        let events = vec![
            (from.to_owned(), data("dialing")),
            (to.to_owned(), data("ringing")),
        ];
        (Ok(json!({"callId": id})), events)
    }

    /// answer (ringing or held → connected), hold (connected → held),
    /// clear (any → cleared, and the call is gone).
    fn change(&mut self, method: &str, p: &Value) -> (Outcome, Vec<(String, Value)>) {
        let Some(id) = p["callId"].as_u64() else {
            return (
                Err((4000, "callId must be a call id (integer)".to_owned())),
                vec![],
            );
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return (Err((4004, "no such call".to_owned())), vec![]);
        };
        let next = match (method, call.state) {
            ("cti.answer", "ringing" | "held") => "connected",
            ("cti.hold", "connected") => "held",
            ("cti.clear", _) => "cleared",
            (_, state) => {
                let message = format!("call {id} is {state}; {method} does not apply");
                return (Err((4009, message)), vec![]);
            }
        };
        call.state = next;
        let c = call.clone();
        if next == "cleared" {
            self.calls.remove(&id);
        }
        let data = json!({"callId": id, "state": next, "from": c.from, "to": c.to});
        let events = vec![(c.from, data.clone()), (c.to, data)];
        (Ok(json!({"callId": id, "state": next})), events)
    }
}
