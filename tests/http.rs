//! HTTP answers on both listeners (issue 12), read off real sockets: every
//! kind of answer carries one valid `Date` (IMF-fixdate), exactly one
//! `Connection` and a `Content-Length` equal to the body's length (none on
//! the 101); the admin listener stays bounded against idle connections.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// One answer as read off the wire.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn parse(raw: &[u8]) -> Answer {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
        let head = std::str::from_utf8(&raw[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        Answer {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        }
    }

    /// Every value of header `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of `name`; fails when it is absent or repeated.
    fn one(&self, name: &str) -> &str {
        match self.all(name).as_slice() {
            [v] => v,
            other => panic!("{name}: {other:?} in {:?}", self.headers),
        }
    }

    /// `request` got `status`, framed (see `assert_framed`).
    fn assert_answers(&self, request: &[u8], status: u16, connection: &str) {
        let request = String::from_utf8_lossy(request);
        assert_eq!(self.status, status, "{request:?}");
        self.assert_framed(connection);
    }

    /// `Date`, one `Connection` (`connection`, case aside) and, unless 101,
    /// a `Content-Length` that is the body's length.
    fn assert_framed(&self, connection: &str) {
        let date = self.one("date");
        let parsed = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("{date}: {e}"));
        // IMF-fixdate is the one form a sender may use (RFC 9110 §5.6.7).
        assert_eq!(httpdate::fmt_http_date(parsed), date);
        let skew = match SystemTime::now().duration_since(parsed) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(skew < Duration::from_secs(300), "Date {date} is not now");
        assert!(
            self.one("connection").eq_ignore_ascii_case(connection),
            "{:?}",
            self.headers
        );
        if self.status == 101 {
            assert!(self.all("content-length").is_empty(), "{:?}", self.headers);
        } else {
            let length: usize = self.one("content-length").parse().unwrap();
            assert_eq!(length, self.body.len(), "{}", self.status);
        }
    }
}

/// Writes `request` on the TLS listener, reads the answer to its end.
async fn https(gw: &TestGateway, request: &[u8]) -> Answer {
    let mut tls = tls_connect(gw.addr, &gw.ca_pem).await.unwrap();
    tls.write_all(request).await.unwrap();
    Answer::parse(&read_to_end(&mut tls).await)
}

/// Writes `request` on the admin listener, reads the answer to its end.
async fn http(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    Answer::parse(&read_to_end(&mut tcp).await)
}

async fn read_to_end(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut buf = Vec::new();
    // A reset after the answer (unread request bytes) is not our concern here.
    let _ = tokio::time::timeout(WAIT, io.read_to_end(&mut buf)).await;
    buf
}

#[tokio::test]
async fn every_answer_of_the_tls_listener_is_framed() {
    let gw = TestGateway::start().await;
    // Just over `max_header_bytes` (16384), all of it read before the 431.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(16_500)
    );
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 200, "close"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 200, "close"),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404, "close"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405, "close"),
        (b"\x01\x02 nonsense\r\n\r\n".to_vec(), 400, "close"),
        (big.into_bytes(), 431, "close"),
        (
            b"GET /portal HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            426,
            "upgrade, close",
        ),
        (
            b"GET /portal HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n".to_vec(),
            426,
            "close",
        ),
        (
            format!("GET /adjunct HTTP/1.1\r\nHost: x\r\n{UPGRADE}Authorization: Basic !!!\r\n\r\n")
                .into_bytes(),
            401,
            "close",
        ),
    ];
    for (request, status, connection) in cases {
        let answer = https(&gw, &request).await;
        answer.assert_answers(&request, status, connection);
        assert_eq!(answer.one("cache-control"), "no-store");
        if status == 426 && connection != "close" {
            assert_eq!(answer.one("upgrade"), "websocket");
        }
    }

    // The 101: its head only (the connection stays a WebSocket).
    let mut tls = tls_connect(gw.addr, &gw.ca_pem).await.unwrap();
    let request = format!("GET /portal HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tls.read(&mut byte))
            .await
            .expect("the 101 came in time")
            .unwrap();
        assert_eq!(n, 1, "closed before the end of the 101");
        head.push(byte[0]);
    }
    let answer = Answer::parse(&head);
    assert_eq!(answer.status, 101);
    answer.assert_framed("upgrade");
    assert_eq!(answer.one("upgrade"), "websocket");
    gw.shutdown().await;
}

#[tokio::test]
async fn every_answer_of_the_admin_listener_is_framed() {
    let gw = TestGateway::start().await;
    let admin = gw.admin_addr();
    let many_headers = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: b\r\n".repeat(100)
    );
    // 8 KiB of a head that has not ended: the listener reads all of it
    // (so its close is clean, no reset) and refuses.
    let mut big = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_owned();
    big.push_str(&"a".repeat(8192 - big.len()));
    let open_metrics = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n";
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 200),
        (open_metrics.as_bytes().to_vec(), 200),
        // An HTTP/1.0 client closes by default; it is still said once.
        (b"GET /metrics HTTP/1.0\r\n\r\n".to_vec(), 200),
        (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n".to_vec(),
            200,
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405),
        (b"nonsense\r\n\r\n".to_vec(), 400),
        (big.into_bytes(), 431),
        (many_headers.into_bytes(), 431),
    ];
    for (request, status) in cases {
        let answer = http(admin, &request).await;
        answer.assert_answers(&request, status, "close");
        if status == 405 {
            assert_eq!(answer.one("allow"), "GET");
        }
        if status == 200 {
            assert_eq!(answer.one("vary"), "Accept");
            assert_eq!(answer.one("cache-control"), "no-store");
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_connections_cannot_exhaust_the_admin_listener() {
    let gw = TestGateway::start().await;
    let admin = gw.admin_addr();
    // Fill every slot with a connection that never sends a request.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(admin).await.unwrap());
    }
    // Over the cap: closed at once, unanswered.
    let mut over = TcpStream::connect(admin).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, over.read(&mut buf))
        .await
        .expect("a connection over the cap is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    // The header-read timeout frees the slots: each idle one is closed unanswered.
    for mut tcp in idle {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("an idle connection is closed by the header-read timeout")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    let text = gw.scrape().await;
    assert!(text.contains("adjunct_gateway_build_info"), "{text}");
    gw.shutdown().await;
}
