//! Client connections on the gateway's own stack (tokio, rustls with ring,
//! tokio-tungstenite): TLS from a chosen loopback source address, the
//! WebSocket upgrade, and the small helpers every scenario uses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Connections per source address before moving to the next one, well
/// under the ephemeral port range.
const PER_SOURCE: usize = 2000;

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub connector: TlsConnector,
    sources: Arc<AtomicUsize>,
}

impl Target {
    pub fn new(addr: SocketAddr, ca_pem: &str) -> anyhow::Result<Target> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.context("CA PEM")?)?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Target {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
            sources: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The next loopback source address: 127.0.0.2, 127.0.0.3, …
    fn next_source(&self) -> IpAddr {
        let n = self.sources.fetch_add(1, Ordering::Relaxed) / PER_SOURCE;
        let host = 2 + (n % 250) as u8;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
    }

    /// TCP + TLS + upgrade to `path`, with an `Authorization` header if given.
    pub async fn connect(&self, path: &str, authorization: Option<&str>) -> anyhow::Result<Ws> {
        self.connect_from(self.next_source(), path, authorization)
            .await
    }

    /// Like `connect`, from the loopback address `source`.
    pub async fn connect_from(
        &self,
        source: IpAddr,
        path: &str,
        authorization: Option<&str>,
    ) -> anyhow::Result<Ws> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let tcp = socket.connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let mut request =
            format!("wss://localhost:{}{path}", self.addr.port()).into_client_request()?;
        if let Some(auth) = authorization {
            request
                .headers_mut()
                .insert("Authorization", HeaderValue::from_str(auth)?);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .max_message_size(Some(1 << 20));
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(request, tls, Some(config)).await?;
        Ok(ws)
    }

    /// Like `connect`, retrying for up to `patience` (a restarting server).
    pub async fn connect_retrying(
        &self,
        path: &str,
        authorization: Option<&str>,
        patience: Duration,
    ) -> anyhow::Result<Ws> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut pause = Duration::from_millis(20);
        loop {
            match self.connect(path, authorization).await {
                Ok(ws) => return Ok(ws),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    // Jitter spreads a reconnecting crowd over time.
                    let jitter = Duration::from_micros(rand::random::<u64>() % 20_000);
                    tokio::time::sleep(pause + jitter).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }
}

/// Sends one request and waits for the answer with the same numeric id;
/// an error answer is an error.
pub async fn call(ws: &mut Ws, id: u64, method: &str, params: &str) -> anyhow::Result<String> {
    let answer = ask(ws, id, method, params).await?;
    anyhow::ensure!(!answer.contains("\"error\""), "{method} failed: {answer}");
    Ok(answer)
}

/// Sends one request and returns the answer with the same numeric id,
/// whether a result or an error.
pub async fn ask(ws: &mut Ws, id: u64, method: &str, params: &str) -> anyhow::Result<String> {
    ws.send(Message::text(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#
    )))
    .await?;
    answer(ws, id, Duration::from_secs(30)).await
}

/// Waits up to `within` for the message with numeric id `id`.
pub async fn answer(ws: &mut Ws, id: u64, within: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("no answer in {within:?}"))?
            .context("connection closed")??;
        if let Message::Text(t) = msg {
            if id_of(t.as_str()) == Some(id) {
                return Ok(t.as_str().to_owned());
            }
        }
    }
}

/// The `error.code` of a JSON-RPC answer, if it is an error.
pub fn error_code(answer: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(answer).ok()?;
    v.get("error")?.get("code")?.as_i64()
}

/// The numeric `"id"` of a JSON-RPC message, found without parsing it all.
pub fn id_of(text: &str) -> Option<u64> {
    let at = text.find("\"id\":")? + 5;
    let digits = text.get(at..)?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits.get(..end)?.parse().ok()
}

/// A string member of a JSON object, parsed properly (setup paths only).
pub fn string_field(text: &str, path: &[&str]) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let mut at = &v;
    for key in path {
        at = at.get(key).with_context(|| format!("no {key} in {text}"))?;
    }
    at.as_str()
        .map(str::to_owned)
        .with_context(|| format!("not a string in {text}"))
}

/// Raises this process's descriptor limit as far as allowed; returns it.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// A WebSocket the generator's light clients drive on the TLS stream
/// itself: the bytes read and not yet used travel with the stream, so
/// nothing that came behind an answer is lost between [`Raw::call`] and
/// [`serve_frames`].
pub struct Raw {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Raw {
    /// Takes the stream from tungstenite right after the upgrade, before
    /// any request: the gateway sends nothing unasked then (its first ping
    /// comes a heartbeat later), so tungstenite holds no byte of it.
    pub fn open(ws: Ws) -> Raw {
        Raw {
            tls: ws.into_inner(),
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Reads more of the stream; false when it ended or failed.
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        // Room for a whole TLS record.
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(16 * 1024);
        }
        matches!(self.tls.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    /// Sends one request and waits up to 30 s for the answer with its id
    /// (pings on the way are answered); fails on an error answer. What came
    /// after the answer stays for [`serve_frames`].
    pub async fn call(&mut self, id: u64, method: &str, params: &str) -> anyhow::Result<String> {
        use tokio::io::AsyncWriteExt;
        let mut out = Vec::new();
        let request =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
        push_client_frame(&mut out, 0x1, request.as_bytes());
        self.tls.write_all(&out).await?;
        self.tls.flush().await?;
        let within = Duration::from_secs(30);
        let answer = tokio::time::timeout(within, async {
            loop {
                let mut at = 0;
                let mut found = None;
                out.clear();
                while let Some((opcode, payload, used)) =
                    server_frame(self.buf.get(at..).unwrap_or_default())
                {
                    at += used;
                    match opcode {
                        0x1 => {
                            let text = String::from_utf8_lossy(payload);
                            if id_of(&text) == Some(id) {
                                found = Some(text.into_owned());
                                break;
                            }
                        }
                        0x8 => anyhow::bail!("connection closed"),
                        0x9 => push_client_frame(&mut out, 0xA, payload),
                        _ => {}
                    }
                }
                self.buf.drain(..at);
                if !out.is_empty() {
                    self.tls.write_all(&out).await?;
                    self.tls.flush().await?;
                }
                if let Some(text) = found {
                    return Ok(text);
                }
                anyhow::ensure!(self.fill().await, "connection closed");
            }
        })
        .await
        .with_context(|| format!("no answer in {within:?}"))??;
        anyhow::ensure!(!answer.contains("\"error\""), "{method} failed: {answer}");
        Ok(answer)
    }
}

/// Serves a WebSocket on the TLS stream itself, frame by frame, for the
/// generator's light clients: each text frame's payload goes to `on_text`,
/// which may append frames to send (`push_client_frame`); pings are
/// answered; what one read brought is answered in one write. Ends when the
/// stream does, fails or closes.
pub async fn serve_frames(mut raw: Raw, mut on_text: impl FnMut(&[u8], &mut Vec<u8>)) {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::new();
    loop {
        let mut at = 0;
        while let Some((opcode, payload, used)) =
            server_frame(raw.buf.get(at..).unwrap_or_default())
        {
            at += used;
            match opcode {
                0x1 => on_text(payload, &mut out),
                0x8 => return,
                0x9 => push_client_frame(&mut out, 0xA, payload),
                _ => {}
            }
        }
        raw.buf.drain(..at);
        if !out.is_empty() {
            if raw.tls.write_all(&out).await.is_err() || raw.tls.flush().await.is_err() {
                return;
            }
            out.clear();
        }
        if !raw.fill().await {
            return;
        }
    }
}

/// The first whole server frame (unmasked) of `bytes`: its opcode, its
/// payload and the bytes it takes; `None` until all of it is there.
pub fn server_frame(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&b0, rest) = bytes.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    let (len, rest) = match b1 & 0x7F {
        126 => {
            let (field, rest) = rest.split_first_chunk::<2>()?;
            (u64::from(u16::from_be_bytes(*field)), rest)
        }
        127 => {
            let (field, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*field), rest)
        }
        short => (u64::from(short), rest),
    };
    let rest = if b1 & 0x80 != 0 { rest.get(4..)? } else { rest };
    let len = usize::try_from(len).ok()?;
    let payload = rest.get(..len)?;
    let used = bytes.len() - rest.len() + len;
    Some((b0 & 0x0F, payload, used))
}

/// Appends a client frame (FIN, `opcode`, masked with a zero key, so the
/// payload goes as is) to `out`.
pub fn push_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n => match u16::try_from(n) {
            Ok(n) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        },
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::server_frame;

    #[test]
    fn server_frames_are_found_whole_or_not_at_all() {
        let mut stream = Vec::new();
        let mut frames = Vec::new();
        for (opcode, len) in [(0x1u8, 5usize), (0x9, 0), (0x1, 200), (0x2, 70_000)] {
            let mut f = vec![0x80 | opcode];
            match len {
                0..=125 => f.push(len as u8),
                126..=0xFFFF => {
                    f.push(126);
                    f.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    f.push(127);
                    f.extend_from_slice(&(len as u64).to_be_bytes());
                }
            }
            f.extend(std::iter::repeat_n(b'x', len));
            frames.push((opcode, len, f.len()));
            stream.extend_from_slice(&f);
        }
        let mut at = 0;
        for &(opcode, len, used) in &frames {
            // Every cut short of the whole frame is not a frame yet.
            for cut in [1, 2, used - 1] {
                assert!(server_frame(&stream[at..at + cut.min(used - 1)]).is_none());
            }
            let (o, payload, u) = server_frame(&stream[at..]).unwrap();
            assert_eq!((o, payload.len(), u), (opcode, len, used));
            at += used;
        }
        assert!(server_frame(&stream[at..]).is_none());
    }
}
