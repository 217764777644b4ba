//! Test harness: starts the real gateway on 127.0.0.1:0 with TLS (a CA made
//! here) and talks to it with a real TLS WebSocket client. No mocks.
#![allow(dead_code)]

mod prereq;
pub mod proc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use adjunct_gateway::config::Config;

pub const APP_PW: &str = "app-Pass-1x";
pub const PORTAL_PW: &str = "portal-Pass-2x";
pub const CTI_PW: &str = "cti-Pass-3x";
pub const OFF_PW: &str = "off-Pass-4x";
pub const TURN_PW: &str = "turn-Pass-5x";

/// A cheap argon2id hash (tests only: production uses the default cost).
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(256, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"test-salt-16byte").unwrap();
    a.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// Rights groups and users every test gateway has.
pub fn base_directory() -> String {
    format!(
        r#"
[[rights_group]]
name = "Application Servers"
rights = ["Adjunct Server Connection", "one-X CTI API"]

[[rights_group]]
name = "Portal Users"
rights = ["TURN Server Connection", "one-X CTI API"]

[[rights_group]]
name = "CTI Only"
rights = ["one-X CTI API"]

[[service_user]]
name = "app1"
password = "{}"
groups = ["Application Servers"]

[[service_user]]
name = "portal1"
password = "{}"
groups = ["Portal Users"]

[[service_user]]
name = "cti1"
password = "{}"
groups = ["CTI Only"]

[[rights_group]]
name = "TURN Only"
rights = ["TURN Server Connection"]

[[service_user]]
name = "turn1"
password = "{}"
groups = ["TURN Only"]

[[service_user]]
name = "off1"
password = "{}"
groups = ["Application Servers"]
enabled = false
"#,
        cheap_hash(APP_PW),
        cheap_hash(PORTAL_PW),
        cheap_hash(CTI_PW),
        cheap_hash(TURN_PW),
        cheap_hash(OFF_PW)
    )
}

pub struct TestGateway {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub ca_pem: String,
    pub running: Option<adjunct_gateway::Running>,
    pub addr: SocketAddr,
}

/// Writes certs and a config (`[server]` section plus `extra`) into a temp dir.
/// The metrics listener (`[admin]`) takes a free port, so gateways can run in
/// parallel; `extra` must not have an `[admin]` section.
pub fn write_config(dir: &Path, server: &str, extra: &str) -> (PathBuf, String) {
    let certs = adjunct_gateway::tls::generate_dev_certs(&["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    std::fs::write(dir.join("server.pem"), &certs.server_pem).unwrap();
    std::fs::write(dir.join("server.key"), &certs.server_key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), &certs.ca_pem).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n{}\n{extra}\n",
        base_directory()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    (path, certs.ca_pem)
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with("", "").await
    }

    /// `server` goes into `[server]`; `extra` is appended (other sections).
    pub async fn start_with(server: &str, extra: &str) -> TestGateway {
        adjunct_gateway::tls::install_provider();
        let dir = tempfile::tempdir().unwrap();
        let (config_path, ca_pem) = write_config(dir.path(), server, extra);
        let config = Config::load(&config_path).unwrap();
        let running = adjunct_gateway::start(config).await.unwrap();
        let addr = running.addr;
        TestGateway {
            dir,
            config_path,
            ca_pem,
            running: Some(running),
            addr,
        }
    }

    pub fn gateway(&self) -> &Arc<adjunct_gateway::gateway::Gateway> {
        &self.running.as_ref().unwrap().gateway
    }

    /// Rewrites the config file with `f` and reloads (the SIGHUP path).
    pub fn edit_and_reload(
        &self,
        f: impl FnOnce(String) -> String,
    ) -> Result<adjunct_gateway::gateway::ReloadReport, String> {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&self.config_path, f(text)).unwrap();
        self.gateway().reload()
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    pub fn connector(&self) -> TlsConnector {
        connector(&self.ca_pem)
    }

    /// A WebSocket on `path` with optional extra headers (name, value).
    pub async fn ws(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        ws_connect(self.addr, &self.ca_pem, path, headers).await
    }

    /// app1 on /adjunct (Basic credentials on the upgrade), registered as
    /// the provider of `cti`.
    pub async fn cti_provider(&self) -> Client {
        let mut p = self
            .ws("/adjunct", &[("Authorization", &basic("app1", APP_PW))])
            .await
            .unwrap();
        assert_eq!(
            p.ok("adjunct.register", json!({"namespaces": ["cti"]}))
                .await,
            json!({"namespaces": ["cti"]})
        );
        p
    }

    /// Connects to /portal (or /adjunct) and logs in with session.login.
    pub async fn login(&self, path: &str, user: &str, password: &str) -> Client {
        let mut c = self.ws(path, &[]).await.unwrap();
        let r = c
            .call("session.login", json!({"user": user, "password": password}))
            .await;
        assert!(r.get("result").is_some(), "login failed: {r}");
        c
    }

    /// Where `GET /metrics` is served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.running
            .as_ref()
            .unwrap()
            .admin_addr
            .expect("the metrics listener is on")
    }

    /// The metrics exposition, scraped over plain HTTP like Prometheus does.
    pub async fn scrape(&self) -> String {
        let (status, text) = raw_http(
            self.admin_addr(),
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "{text}");
        text
    }

    /// One raw HTTPS request; returns (status, full response text).
    pub async fn http(&self, request: &str) -> (u16, String) {
        raw_https(self.addr, &self.ca_pem, request.as_bytes()).await
    }
}

/// Trust anchors holding the test CA.
pub fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    roots
}

pub fn connector(ca_pem: &str) -> TlsConnector {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

pub async fn tls_connect(addr: SocketAddr, ca_pem: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector(ca_pem)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

pub async fn raw_https(addr: SocketAddr, ca_pem: &str, request: &[u8]) -> (u16, String) {
    exchange(tls_connect(addr, ca_pem).await.unwrap(), request).await
}

/// One plain-HTTP request; returns (status, full response text).
pub async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    exchange(TcpStream::connect(addr).await.unwrap(), request.as_bytes()).await
}

/// Writes `request`, reads until the server closes (bounded): (status, text).
async fn exchange(
    mut io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    request: &[u8],
) -> (u16, String) {
    io.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The value of one exposed series (`name{labels}` exactly as exposed).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

pub async fn ws_connect(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let tls = tls_connect(addr, ca_pem).await?;
    ws_over(tls, addr, path, headers).await
}

/// A TLS connection from a chosen local address (127.0.0.2, …) through
/// `connector` (which may present a client certificate).
pub async fn tls_connect_from(
    addr: SocketAddr,
    local: std::net::IpAddr,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    let tcp = socket.connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The WebSocket upgrade over an established TLS connection.
pub async fn ws_over(
    tls: TlsStream<TcpStream>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("wss://localhost:{}{path}", addr.port()).into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, tls, Some(config)).await?;
    Ok(Client {
        ws,
        next_id: 1,
        events: Vec::new(),
    })
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A JSON-RPC client over a real TLS WebSocket.
pub struct Client {
    pub ws: WebSocketStream<TlsStream<TcpStream>>,
    next_id: u64,
    /// Notifications received while waiting for answers.
    pub events: Vec<Value>,
}

pub const WAIT: Duration = Duration::from_secs(10);

impl Client {
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.unwrap();
    }

    /// Next text message as JSON (panics on close or timeout).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a message");
            match msg {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next text frame, raw (None on close).
    pub async fn ws_next_text(&mut self) -> Option<String> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.ok()? {
                Some(Ok(Message::Text(t))) => return Some(t.as_str().to_owned()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    }

    /// Waits for a message or gives up after `d` (None).
    pub async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(d, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(serde_json::from_str(t.as_str()).unwrap())
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Sends a request and returns the whole answer with the same id.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let req = if params.is_null() {
            json!({"jsonrpc": "2.0", "id": id, "method": method})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        };
        self.send_text(req.to_string()).await;
        loop {
            let v = self.recv().await;
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
            self.events.push(v);
        }
    }

    /// The result of a call that must succeed.
    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params).await;
        r.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{method} failed: {r}"))
    }

    /// The error code of a call that must fail.
    pub async fn err(&mut self, method: &str, params: Value) -> (i64, Value) {
        let r = self.call(method, params).await;
        let e = r
            .get("error")
            .unwrap_or_else(|| panic!("{method} succeeded: {r}"));
        (e["code"].as_i64().unwrap(), e.clone())
    }

    /// Reads until the server closes; returns the close code (None: no close frame).
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// Error code of a JSON-RPC answer.
pub fn code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or(0)
}

/// Captures everything this test binary's gateways log at `filter`, as the
/// text format writes it without colours. The first call installs the
/// global subscriber; every later call returns the same buffer.
pub fn capture_logs(filter: &str) -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(filter)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
