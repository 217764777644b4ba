//! What the example providers share: connecting to the gateway on /adjunct,
//! reconnecting with capped exponential back-off and jitter when the
//! connection closes or is lost, authenticating with the resume token
//! (`Authorization: Bearer`, the password when the token is refused),
//! registering again, and stopping only on Ctrl-C or SIGTERM. An example
//! brings a [`Service`]: the namespaces it serves and how it answers one
//! routed request. Calls to the service survive reconnects.
//!
//! Progress goes to stdout; stderr gets only what needs an operator.

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

/// An application server behind the gateway.
pub trait Service {
    /// The namespaces it registers for.
    fn namespaces(&self) -> &'static [&'static str];
    /// The line printed once it is registered.
    fn registered(&self) -> String;
    /// One routed request: its answer (unless it is a notification), then
    /// any `adjunct.publish` requests it causes.
    fn request(&mut self, m: &Value) -> Vec<Value>;
}

/// Runs `service` until Ctrl-C or SIGTERM (exit 0). Exits 1 when the gateway
/// refuses the password or a right, or the CA file is unusable: retrying
/// would only lock the account. `name` prefixes the error line.
pub async fn main(name: &str, default_user: &str, mut service: impl Service) -> ExitCode {
    match run(default_user, &mut service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

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

fn args(default_user: &str) -> Result<Args, String> {
    let mut url = "wss://127.0.0.1:8443/adjunct".to_owned();
    let mut user = default_user.to_owned();
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

async fn run(default_user: &str, service: &mut impl Service) -> Result<(), String> {
    let args = args(default_user)?;
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
                match serve(ws, &mut link, service, &stop, &mut backoff).await? {
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
    service: &mut impl Service,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<Ended, String> {
    let hello = [
        json!({"jsonrpc":"2.0","id":"token","method":"session.token"}),
        json!({"jsonrpc":"2.0","id":"register","method":"adjunct.register","params":{"namespaces":service.namespaces()}}),
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
                on_answer(&m, link, &*service, backoff)?;
                continue;
            }
            for out in service.request(&m) {
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
fn on_answer(
    m: &Value,
    link: &mut Link,
    service: &impl Service,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let id = m["id"].as_str().unwrap_or_default();
    match (id, m.get("result"), m.get("error")) {
        ("token", Some(r), _) => {
            if let (Some(t), Some(exp)) = (r["resumeToken"].as_str(), r["resumeExpires"].as_u64()) {
                link.token = Some((t.to_owned(), exp));
            }
        }
        ("register", Some(_), _) => {
            backoff.reset();
            println!("{}", service.registered());
        }
        ("register", _, Some(e)) => return Err(format!("adjunct.register was refused: {e}")),
        (_, _, Some(e)) => eprintln!("warning: the gateway refused {id}: {e}"),
        _ => {}
    }
    Ok(())
}
