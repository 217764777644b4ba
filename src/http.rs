//! The HTTP/1.1 part of a connection: reading the request head (bounded),
//! deciding what kind of request it is, and writing plain answers and the
//! 101 Switching Protocols of a WebSocket upgrade. Hand-written around
//! httparse on purpose: the head is bounded and read under the handshake
//! deadline, authentication (Basic, Bearer) happens before the 101, and the
//! bytes read past the head go to the WebSocket unchanged. Every answer carries `Date`, exactly one `Connection` and (except the
//! 101) a `Content-Length` that is the body's length.
//!
//! Must not authenticate or know about sessions: `server` decides, this
//! module only speaks HTTP.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The parts of a request head the gateway uses.
#[derive(Debug, Default)]
pub struct Head {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    pub authorization: Option<String>,
    pub origin: Option<String>,
    pub host: Option<String>,
    /// A header that must appear at most once appeared again (its name):
    /// `Authorization`, `Origin` or `Host` (answered 400).
    pub duplicate: Option<&'static str>,
}

#[derive(Debug)]
pub enum HeadError {
    /// The peer closed or the socket failed before a full head arrived.
    Io,
    /// Not HTTP/1.x (400).
    Malformed,
    /// Head larger than allowed or too many headers (431).
    TooLarge,
}

const MAX_HEADERS: usize = 64;

/// Reads one request head. Returns it and any bytes that came after it.
pub async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    max_bytes: usize,
) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut first = true;
    loop {
        let n = io.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io);
        }
        let new = chunk.get(..n).unwrap_or_default();
        buf.extend_from_slice(new);
        // Parsed on the first read and whenever a line has ended (a bad
        // line gets its 400 as soon as it is whole), not after every read: a
        // head sent a byte at a time would cost a parse of all of it per
        // byte. Lines are few: past `MAX_HEADERS` the parse refuses the head.
        if !std::mem::take(&mut first) && !new.contains(&b'\n') && buf.len() <= max_bytes {
            continue;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) if len > max_bytes => {
                return Err(HeadError::TooLarge)
            }
            Ok(httparse::Status::Complete(len)) => {
                let head = to_head(&req);
                let rest = buf.get(len..).map(<[u8]>::to_vec).unwrap_or_default();
                return Ok((head, rest));
            }
            Ok(httparse::Status::Partial) if buf.len() > max_bytes => {
                return Err(HeadError::TooLarge)
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

fn to_head(req: &httparse::Request<'_, '_>) -> Head {
    let mut head = Head {
        method: req.method.unwrap_or_default().to_owned(),
        path: req
            .path
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned(),
        ..Head::default()
    };
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_owned();
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            head.connection_upgrade |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = Some(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            once(
                &mut head.authorization,
                value,
                "Authorization",
                &mut head.duplicate,
            );
        } else if name.eq_ignore_ascii_case("origin") {
            once(&mut head.origin, value, "Origin", &mut head.duplicate);
        } else if name.eq_ignore_ascii_case("host") {
            once(&mut head.host, value, "Host", &mut head.duplicate);
        }
    }
    head
}

/// Sets a header that may appear once; a second one is recorded in
/// `duplicate` (the first duplicate found) instead of replacing the first.
fn once(
    slot: &mut Option<String>,
    value: String,
    name: &'static str,
    duplicate: &mut Option<&'static str>,
) {
    if slot.is_some() {
        duplicate.get_or_insert(name);
    } else {
        *slot = Some(value);
    }
}

/// A plain answer that ends the connection.
///
/// `respond` writes the framing headers itself (`Date`, `Content-Type`,
/// `Content-Length`, `Connection`, `Cache-Control`,
/// `X-Content-Type-Options`), each exactly once; `headers` holds only the
/// others. An answer that offers `Upgrade` (426) gets `Connection: upgrade,
/// close`, as RFC 9110 §7.8 asks of a sender of `Upgrade`.
pub struct Answer {
    pub status: u16,
    pub reason: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Headers `respond` writes itself; an `Answer` never carries them.
const FRAMING: [&str; 6] = [
    "date",
    "content-type",
    "content-length",
    "connection",
    "cache-control",
    "x-content-type-options",
];

impl Answer {
    pub fn text(status: u16, reason: &'static str, body: &str) -> Answer {
        Answer {
            status,
            reason,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n").into_bytes(),
        }
    }

    /// Adds a header other than the framing ones (those are `respond`'s).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        debug_assert!(
            !FRAMING.iter().any(|f| f.eq_ignore_ascii_case(name)),
            "{name} is written by respond"
        );
        self.headers.push((name, value.into()));
        self
    }

    /// The whole answer as bytes: status line, headers, body.
    fn to_bytes(&self, date: &str) -> Vec<u8> {
        let upgrade = self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("upgrade"));
        let connection = if upgrade { "upgrade, close" } else { "close" };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nDate: {date}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {connection}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// The `Date` header's value now (RFC 9110 §5.6.7 IMF-fixdate).
fn date_now() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

/// Writes `answer` and shuts the stream down.
pub async fn respond<S: AsyncWrite + Unpin>(io: &mut S, answer: &Answer) {
    let _ = io.write_all(&answer.to_bytes(&date_now())).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

/// Writes the 101 answer that turns the connection into a WebSocket. It has
/// no `Content-Length`: a 1xx answer has no body (RFC 9110 §8.6).
pub async fn switch_protocols<S: AsyncWrite + Unpin>(
    io: &mut S,
    ws_key: &str,
) -> std::io::Result<()> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
    let out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nDate: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n",
        date_now()
    );
    io.write_all(out.as_bytes()).await?;
    io.flush().await
}

/// Decodes `Authorization: Basic …` into (user, password).
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The token of an `Authorization: Bearer …` value.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_an_upgrade_head_and_keeps_trailing_bytes() {
        let raw = b"GET /portal?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://x\r\n\r\nXYZ";
        let (head, rest) = read_head(&mut &raw[..], 16384).await.unwrap();
        assert_eq!(head.path, "/portal");
        assert!(head.upgrade_websocket && head.connection_upgrade);
        assert_eq!(head.ws_version.as_deref(), Some("13"));
        assert_eq!(head.origin.as_deref(), Some("https://x"));
        assert_eq!(rest, b"XYZ");
    }

    /// Hands out its bytes `step` at a time, as a peer sending the head in
    /// small TLS records would.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl tokio::io::AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.step.min(self.bytes.len()).min(buf.remaining());
            let (now, later) = self.bytes.split_at(n);
            buf.put_slice(now);
            self.bytes = later;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Whatever the reads cut, the head ends where it ends (bare LF line
    /// ends too); garbage is refused at the first read or once its line
    /// ends, a head without an end at the size bound.
    #[tokio::test]
    async fn the_head_is_found_whatever_the_reads_cut() {
        let crlf: &[u8] = b"GET /portal HTTP/1.1\r\nHost: a\r\nOrigin: https://x\r\n\r\nXYZ";
        let lf: &[u8] = b"GET /portal HTTP/1.1\nHost: a\nOrigin: https://x\n\nXYZ";
        for raw in [crlf, lf] {
            for step in [1, 2, 3, 5, 1024] {
                let mut t = Trickle { bytes: raw, step };
                let (head, rest) = read_head(&mut t, 16384).await.unwrap();
                assert_eq!(
                    (head.path.as_str(), head.origin.as_deref()),
                    ("/portal", Some("https://x"))
                );
                // What came past the head, then what is still unread.
                assert_eq!([rest.as_slice(), t.bytes].concat(), b"XYZ", "step {step}");
            }
        }
        let mut t = Trickle {
            bytes: b"\x16\x03\x01 not http at all",
            step: 1,
        };
        assert!(matches!(
            read_head(&mut t, 16384).await,
            Err(HeadError::Malformed)
        ));
        // A good start, then a bad line: refused when that line ends, long
        // before the size bound.
        let mut bad = b"GET / HTTP/1.1\r\nno colon here\r\n".to_vec();
        bad.extend(std::iter::repeat_n(b'x', 20_000));
        let mut t = Trickle {
            bytes: &bad,
            step: 3,
        };
        assert!(matches!(
            read_head(&mut t, 16384).await,
            Err(HeadError::Malformed)
        ));
        assert!(t.bytes.len() > 19_000, "refused at the bad line");
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(20_000));
        let mut t = Trickle {
            bytes: endless.as_bytes(),
            step: 7,
        };
        assert!(matches!(
            read_head(&mut t, 16384).await,
            Err(HeadError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn a_second_authorization_origin_or_host_is_recorded_not_taken() {
        let raw = b"GET /adjunct HTTP/1.1\r\nHost: a\r\nauthorization: Basic eDp5\r\nAuthorization: Basic YTpi\r\n\r\n";
        let (head, _) = read_head(&mut &raw[..], 16384).await.unwrap();
        assert_eq!(head.duplicate, Some("Authorization"));
        assert_eq!(head.authorization.as_deref(), Some("Basic eDp5"));
        let raw =
            b"GET /portal HTTP/1.1\r\nOrigin: https://a\r\nHost: a\r\nORIGIN: https://b\r\n\r\n";
        let (head, _) = read_head(&mut &raw[..], 16384).await.unwrap();
        assert_eq!(head.duplicate, Some("Origin"));
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        let (head, _) = read_head(&mut &raw[..], 16384).await.unwrap();
        assert_eq!(head.duplicate, Some("Host"));
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nOrigin: https://a\r\n\r\n";
        let (head, _) = read_head(&mut &raw[..], 16384).await.unwrap();
        assert_eq!(head.duplicate, None);
    }

    #[tokio::test]
    async fn oversized_and_garbage_heads_are_refused() {
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b"X-A: b\r\n".as_slice(), 4000).flatten());
        assert!(matches!(
            read_head(&mut &big[..], 16384).await,
            Err(HeadError::TooLarge)
        ));
        assert!(matches!(
            read_head(&mut &b"\x16\x03\x01garbage\r\n\r\n"[..], 16384).await,
            Err(HeadError::Malformed)
        ));
    }

    #[test]
    fn an_answer_frames_itself_once() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let plain = Answer::text(404, "Not Found", "not found").to_bytes(date);
        let plain = String::from_utf8(plain).unwrap();
        assert_eq!(
            plain,
            "HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\nnot found\n"
        );
        let offer = Answer::text(426, "Upgrade Required", "x")
            .header("Upgrade", "websocket")
            .to_bytes(date);
        let offer = String::from_utf8(offer).unwrap();
        assert_eq!(offer.matches("Connection:").count(), 1, "{offer}");
        assert!(offer.contains("\r\nConnection: upgrade, close\r\n"));
        assert!(offer.contains("\r\nUpgrade: websocket\r\n"));
    }

    #[test]
    fn basic_credentials_only() {
        assert_eq!(
            basic_credentials("Basic YXBwOnM6ZWNyZXQ="),
            Some(("app".into(), "s:ecret".into()))
        );
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Bearer abc.def"), None);
    }
}
