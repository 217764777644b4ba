//! Bad input (issue 5): one table, one row per input, each with its
//! documented answer (docs/PROTOCOL.md): an HTTP status, a close code, a
//! JSON-RPC error code, or "connection dropped". All rows run against ONE
//! real gateway over real TLS; WebSocket frames are built by hand here, so
//! rows can send what no WebSocket library would (invalid UTF-8, bad
//! fragments, oversized control frames, unmasked frames).
//!
//! After every row a bystander session, logged in before the first row,
//! must still answer `session.ping`: the server keeps serving everyone else.
//! The gateway's log is captured for the whole table and no line may carry a
//! control character: peer-chosen names never forge or split log lines.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adjunct_gateway::catalog::{self, Catalog, Entry, Method, Need, Reach};
use adjunct_gateway::rights::Right;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ------------------------------------------------------------------ frames

const FIN: u8 = 0x80;
const CONT: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// One client frame: `head` is FIN/RSV bits | opcode; masked unless `unmasked`.
fn frame_with(head: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![head];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

fn frame(head: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(head, payload, true)
}

fn text(s: &str) -> Vec<u8> {
    frame(FIN | TEXT, s.as_bytes())
}

fn request(id: u64, method: &str, params: &Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

// -------------------------------------------------------------- raw client

/// What the server sent next on a raw WebSocket.
#[derive(Debug, PartialEq)]
enum Event {
    Text(String),
    /// A close frame and its code (None: a close frame without one).
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Dropped,
    /// Nothing within the wait.
    Silent,
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A WebSocket over TLS spoken by hand: any bytes out, frames decoded in.
/// The halves are separate so a row can write and read at the same time.
struct RawWs {
    rd: Reader,
    w: tokio::io::WriteHalf<Tls>,
}

struct Reader {
    r: tokio::io::ReadHalf<Tls>,
    buf: Vec<u8>,
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

impl RawWs {
    async fn open(gw: &TestGateway, path: &str) -> RawWs {
        let tls = tls_connect(gw.addr, &gw.ca_pem).await.unwrap();
        let (r, mut w) = tokio::io::split(tls);
        let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{UPGRADE}\r\n");
        w.write_all(head.as_bytes()).await.unwrap();
        let mut rd = Reader { r, buf: Vec::new() };
        let end = loop {
            if let Some(i) = rd.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if let Err(e) = rd.fill(WAIT).await {
                panic!("no upgrade answer: {e:?}");
            }
        };
        let answer = String::from_utf8_lossy(&rd.buf[..end]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        rd.buf.drain(..end);
        RawWs { rd, w }
    }

    /// Opens `who`'s session: anonymous, or logged in with `session.login`.
    async fn session(gw: &TestGateway, who: Who) -> RawWs {
        let mut ws = RawWs::open(gw, who.path()).await;
        if let Some((user, pw)) = who.credentials() {
            let login = request(0, "session.login", &json!({"user": user, "password": pw}));
            ws.send(&text(&login)).await;
            match ws.rd.next(WAIT).await {
                Event::Text(t) if t.contains("\"result\"") => {}
                other => panic!("login as {user} failed: {other:?}"),
            }
        }
        ws
    }

    async fn send(&mut self, bytes: &[u8]) {
        send(&mut self.w, bytes).await;
    }
}

/// Writes `bytes`; a server that closed on bad input makes this fail, which
/// is expected, so errors are ignored (the answer tells what happened).
async fn send(w: &mut tokio::io::WriteHalf<Tls>, bytes: &[u8]) {
    let _ = tokio::time::timeout(WAIT, async {
        w.write_all(bytes).await?;
        w.flush().await
    })
    .await;
}

impl Reader {
    async fn fill(&mut self, within: Duration) -> Result<(), Event> {
        let mut chunk = vec![0u8; 16 * 1024];
        match tokio::time::timeout(within, self.r.read(&mut chunk)).await {
            Err(_) => Err(Event::Silent),
            Ok(Ok(0) | Err(_)) => Err(Event::Dropped),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// The next text or close frame (pings and pongs are skipped).
    async fn next(&mut self, within: Duration) -> Event {
        let deadline = Instant::now() + within;
        loop {
            if let Some((head, payload, used)) = decode(&self.buf) {
                self.buf.drain(..used);
                match head & 0x0F {
                    TEXT => return Event::Text(String::from_utf8(payload).unwrap()),
                    CLOSE => {
                        return Event::Close(
                            payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])),
                        )
                    }
                    _ => continue,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(end) = self.fill(left).await {
                return end;
            }
        }
    }

    /// The next text message; `row` names the row if there is none.
    async fn text(&mut self, row: &str) -> String {
        match self.next(WAIT).await {
            Event::Text(t) => t,
            other => panic!("{row}: expected an answer, got {other:?}"),
        }
    }

    /// The next message as JSON.
    async fn answer(&mut self) -> Value {
        serde_json::from_str(&self.text("").await).unwrap()
    }
}

/// One server frame from the front of `buf`: (first byte, payload, bytes used).
fn decode(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&head, rest) = buf.split_first()?;
    let (&len7, rest) = rest.split_first()?;
    assert_eq!(len7 & 0x80, 0, "the server masked a frame");
    let (len, at) = match len7 {
        126 => (
            u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((head, payload, at + len))
}

// ------------------------------------------------------------------- table

/// Who sends a row's frames.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// Not logged in, on /portal.
    Anonymous,
    /// portal1 on /portal (TURN Server Connection, one-X CTI API).
    Portal,
    /// app1 on /adjunct (Adjunct Server Connection, one-X CTI API).
    Adjunct,
    /// turn1 on /portal (only TURN Server Connection).
    TurnOnly,
    /// The built-in administrator on /portal (every right).
    Admin,
}

impl Who {
    fn path(self) -> &'static str {
        match self {
            Who::Adjunct => "/adjunct",
            _ => "/portal",
        }
    }

    fn credentials(self) -> Option<(&'static str, &'static str)> {
        match self {
            Who::Anonymous => None,
            Who::Portal => Some(("portal1", PORTAL_PW)),
            Who::Adjunct => Some(("app1", APP_PW)),
            Who::TurnOnly => Some(("turn1", TURN_PW)),
            Who::Admin => Some(("admin", ADMIN_PW)),
        }
    }
}

enum Input {
    /// Bytes on the TCP port, without TLS.
    Tcp(Vec<u8>),
    /// A TLS connection, then these bytes (an HTTP request, or not).
    Tls(Vec<u8>),
    /// Raw bytes (frames) on an upgraded session of `Who`.
    Ws(Who, Vec<u8>),
}

/// One expected JSON-RPC answer.
#[derive(Clone, Debug)]
enum Ans {
    /// A result.
    Ok,
    /// An error with this code.
    Err(i64),
    /// An answer whose `"id":` is exactly this JSON text, verbatim.
    Id(&'static str, Box<Ans>),
    /// -32602 whose message contains this text (it names the member and
    /// what it must be) and none of the decoder's own wording.
    Params(String),
}

/// The documented answer.
enum Expect {
    /// An HTTP answer with this status, then the connection closes.
    Http(u16),
    /// No HTTP answer: the connection is closed (TLS alerts aside).
    Dropped,
    /// A WebSocket close frame with this code.
    Close(u16),
    /// These answers, one message each, in order; then the session still works.
    Answers(Vec<Ans>),
    /// One message: a batch answer array with these elements.
    Batch(Vec<Ans>),
    /// No message at all, and the session still works.
    Silence,
}

struct Row {
    name: String,
    input: Input,
    expect: Expect,
    /// The answer must come within this long (None: the default wait).
    within: Option<Duration>,
}

fn row(name: impl Into<String>, input: Input, expect: Expect) -> Row {
    Row {
        name: name.into(),
        input,
        expect,
        within: None,
    }
}

/// One request on `who`'s session, answered with `ans`.
fn rpc(name: impl Into<String>, who: Who, frame_text: &str, ans: Ans) -> Row {
    row(
        name,
        Input::Ws(who, text(frame_text)),
        Expect::Answers(vec![ans]),
    )
}

/// A session.ping whose params are `depth` nested arrays.
fn nested_params(depth: usize) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"session.ping","params":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

fn http_get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").into_bytes()
}

/// An upgrade request authenticating with Basic `user:password`.
fn basic_upgrade(path: &str, user: &str, password: &str) -> Input {
    let auth = basic(user, password);
    Input::Tls(http_get(
        path,
        &format!("{UPGRADE}Authorization: {auth}\r\n"),
    ))
}

/// A user name built to forge a log line if it were ever written raw.
const EVIL_USER: &str =
    "ghost\nINFO FORGED login ok user=admin\r\u{1b}]0;t\u{7}\u{1b}[2J\u{0}\u{85}\u{2028}end";

fn rows() -> Vec<Row> {
    use Ans::{Err, Ok};
    use Who::*;
    let ping = |id: u64| request(id, "session.ping", &json!({}));
    let mut t = vec![
        // --- Not TLS at all.
        row(
            "plain bytes on the TLS port",
            Input::Tcp(b"hello gateway\r\n\r\n".to_vec()),
            Expect::Dropped,
        ),
        row(
            "a plain HTTP request on the TLS port",
            Input::Tcp(http_get("/healthz", "")),
            Expect::Dropped,
        ),
        row(
            "a TLS record header followed by garbage",
            Input::Tcp(b"\x16\x03\x01\x00\x05garbagegarbage".to_vec()),
            Expect::Dropped,
        ),
        // --- TLS, then not HTTP or not an upgrade.
        row(
            "TLS then garbage",
            Input::Tls(b"\x00\x01\x02\xff garbage \x7f\r\n\r\n".to_vec()),
            Expect::Http(400),
        ),
        row(
            "TLS then a request line without a version",
            Input::Tls(b"GET /portal\r\n\r\n".to_vec()),
            Expect::Http(400),
        ),
        row(
            "HTTP without upgrade on /portal",
            Input::Tls(http_get("/portal", "")),
            Expect::Http(426),
        ),
        row(
            "HTTP without upgrade on /adjunct",
            Input::Tls(http_get("/adjunct", "")),
            Expect::Http(426),
        ),
        row(
            "POST on /portal",
            Input::Tls(b"POST /portal HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec()),
            Expect::Http(405),
        ),
        row(
            "an unknown path",
            Input::Tls(http_get("/portal/", UPGRADE)),
            Expect::Http(404),
        ),
        row(
            "a wrong Sec-WebSocket-Version",
            Input::Tls(http_get(
                "/portal",
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
            )),
            Expect::Http(426),
        ),
        row(
            "no Sec-WebSocket-Version",
            Input::Tls(http_get(
                "/portal",
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            )),
            Expect::Http(426),
        ),
        row(
            "a Sec-WebSocket-Key of the wrong length",
            Input::Tls(http_get(
                "/portal",
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n",
            )),
            Expect::Http(400),
        ),
        row(
            "1 MB of headers (one header)",
            Input::Tls(http_get(
                "/portal",
                &format!("{UPGRADE}X-Big: {}\r\n", "a".repeat(1 << 20)),
            )),
            Expect::Http(431),
        ),
        row(
            "1 MB of headers (many headers)",
            Input::Tls(http_get(
                "/portal",
                &"X-Many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(20_000),
            )),
            Expect::Http(431),
        ),
        row(
            "Basic auth with a 1 MB password",
            basic_upgrade("/portal", "portal1", &"p".repeat(1 << 20)),
            Expect::Http(431),
        ),
        row(
            "Basic auth with an 8 KB password",
            basic_upgrade("/portal", "portal1", &"p".repeat(8 << 10)),
            Expect::Http(401),
        ),
        row(
            "Basic auth with a user name holding newlines and control characters",
            basic_upgrade("/adjunct", EVIL_USER, "x"),
            Expect::Http(401),
        ),
        row(
            "Basic auth that is not base64",
            Input::Tls(http_get(
                "/adjunct",
                &format!("{UPGRADE}Authorization: Basic !!!not-base64\r\n"),
            )),
            Expect::Http(401),
        ),
        // --- WebSocket frames the protocol forbids.
        row(
            "a text frame with invalid UTF-8",
            Input::Ws(Portal, frame(FIN | TEXT, b"{\"jsonrpc\":\"2.0\",\xff\xfe}")),
            Expect::Close(1007),
        ),
        row(
            "invalid UTF-8 split across fragments",
            Input::Ws(
                Portal,
                [frame(TEXT, b"abc\xe2\x82"), frame(FIN | CONT, b"\xff")].concat(),
            ),
            Expect::Close(1007),
        ),
        row(
            "a binary frame",
            Input::Ws(Portal, frame(FIN | BINARY, b"\x01\x02\x03")),
            Expect::Close(1003),
        ),
        row(
            "a binary frame before login",
            Input::Ws(Anonymous, frame(FIN | BINARY, b"{}")),
            Expect::Close(1003),
        ),
        row(
            "a fragmented message past the limit",
            Input::Ws(
                Portal,
                [
                    frame(TEXT, &[b' '; 40_000]),
                    frame(CONT, &[b' '; 40_000]),
                    frame(FIN | CONT, b"{}"),
                ]
                .concat(),
            ),
            Expect::Close(1009),
        ),
        row(
            "one message past the limit",
            Input::Ws(Portal, frame(FIN | TEXT, &[b' '; 70_000])),
            Expect::Close(1009),
        ),
        row(
            "a frame header announcing 1 GB",
            Input::Ws(Portal, {
                let mut f = vec![FIN | TEXT, 0x80 | 127];
                f.extend_from_slice(&(1u64 << 30).to_be_bytes());
                f.extend_from_slice(&[1, 2, 3, 4]);
                f
            }),
            Expect::Close(1009),
        ),
        row(
            "a ping with a 126-byte payload (oversized control frame)",
            Input::Ws(Portal, frame(FIN | PING, &[b'p'; 126])),
            Expect::Close(1002),
        ),
        row(
            "a close frame with a 200-byte reason (oversized control frame)",
            Input::Ws(Portal, frame(FIN | CLOSE, &[b'c'; 200])),
            Expect::Close(1002),
        ),
        row(
            "a fragmented ping",
            Input::Ws(Portal, frame(PING, b"half")),
            Expect::Close(1002),
        ),
        row(
            "an unmasked frame",
            Input::Ws(Portal, frame_with(FIN | TEXT, ping(1).as_bytes(), false)),
            Expect::Close(1002),
        ),
        row(
            "a reserved opcode",
            Input::Ws(Portal, frame(FIN | 0x3, b"x")),
            Expect::Close(1002),
        ),
        row(
            "RSV1 set without an extension",
            Input::Ws(Portal, frame(FIN | 0x40 | TEXT, ping(1).as_bytes())),
            Expect::Close(1002),
        ),
        row(
            "a continuation frame with nothing to continue",
            Input::Ws(Portal, frame(FIN | CONT, ping(1).as_bytes())),
            Expect::Close(1002),
        ),
        row(
            "a new text frame inside a fragmented message",
            Input::Ws(
                Portal,
                [frame(TEXT, b"{\"a\":"), frame(FIN | TEXT, b"1}")].concat(),
            ),
            Expect::Close(1002),
        ),
        row(
            "a client close with a code not allowed on the wire",
            Input::Ws(Portal, frame(FIN | CLOSE, &1005u16.to_be_bytes())),
            Expect::Close(1002),
        ),
        row(
            "a client close with a normal code is echoed",
            Input::Ws(Portal, frame(FIN | CLOSE, &1000u16.to_be_bytes())),
            Expect::Close(1000),
        ),
        row(
            "a fragmented request inside the limit is answered",
            Input::Ws(
                Portal,
                [
                    frame(TEXT, br#"{"jsonrpc":"2.0","id":5,"#),
                    frame(FIN | PING, b"between"),
                    frame(FIN | CONT, br#""method":"session.ping"}"#),
                ]
                .concat(),
            ),
            Expect::Answers(vec![Ans::Id("5", Box::new(Ok))]),
        ),
        // --- Malformed JSON: -32700 with id null.
        rpc("an empty text frame", Portal, "", Ans::Id("null", Box::new(Err(-32700)))),
        rpc("only whitespace", Portal, " \t\r\n ", Ans::Id("null", Box::new(Err(-32700)))),
        rpc(
            "truncated JSON",
            Portal,
            r#"{"jsonrpc":"2.0","id":1,"method":"#,
            Ans::Id("null", Box::new(Err(-32700))),
        ),
        rpc(
            "trailing garbage after an object",
            Portal,
            r#"{"jsonrpc":"2.0","id":1,"method":"session.ping"} x"#,
            Ans::Id("null", Box::new(Err(-32700))),
        ),
        rpc("single quotes", Portal, "{'jsonrpc':'2.0'}", Ans::Id("null", Box::new(Err(-32700)))),
        rpc("a bare word", Portal, "nul", Ans::Id("null", Box::new(Err(-32700)))),
        rpc(
            "an unterminated batch",
            Portal,
            r#"[{"jsonrpc":"2.0","id":1,"method":"session.ping"}"#,
            Ans::Id("null", Box::new(Err(-32700))),
        ),
        rpc(
            "a lone surrogate escape in the id is echoed",
            Portal,
            r#"{"jsonrpc":"2.0","id":"\ud800","method":"session.ping"}"#,
            Ans::Id(r#""\ud800""#, Box::new(Ok)),
        ),
        rpc(
            "a number with a leading zero as id",
            Portal,
            r#"{"jsonrpc":"2.0","id":01,"method":"session.ping"}"#,
            Ans::Id("null", Box::new(Err(-32700))),
        ),
        // --- Valid JSON that is not a request.
        rpc("a number", Portal, "42", Ans::Id("null", Box::new(Err(-32600)))),
        rpc("a string", Portal, r#""session.ping""#, Ans::Id("null", Box::new(Err(-32600)))),
        rpc("null", Portal, "null", Ans::Id("null", Box::new(Err(-32600)))),
        rpc(
            "jsonrpc 1.0",
            Portal,
            r#"{"jsonrpc":"1.0","id":"a","method":"session.ping"}"#,
            Ans::Id("\"a\"", Box::new(Err(-32600))),
        ),
        rpc(
            "jsonrpc as a number",
            Portal,
            r#"{"jsonrpc":2.0,"id":"a","method":"session.ping"}"#,
            Ans::Id("\"a\"", Box::new(Err(-32600))),
        ),
        rpc(
            "no method",
            Portal,
            r#"{"jsonrpc":"2.0","id":3}"#,
            Ans::Id("3", Box::new(Err(-32600))),
        ),
        rpc(
            "method as a number",
            Portal,
            r#"{"jsonrpc":"2.0","id":3,"method":5}"#,
            Ans::Id("3", Box::new(Err(-32600))),
        ),
        rpc(
            "a duplicated member",
            Portal,
            r#"{"jsonrpc":"2.0","id":3,"method":"session.ping","method":"session.info"}"#,
            Ans::Id("null", Box::new(Err(-32600))),
        ),
        rpc(
            "an answer with both result and error",
            Portal,
            r#"{"jsonrpc":"2.0","id":3,"result":1,"error":{}}"#,
            Ans::Id("3", Box::new(Err(-32600))),
        ),
        rpc(
            "an unknown method",
            Portal,
            &request(3, "session.nope", &json!({})),
            Err(-32601),
        ),
        rpc(
            "a method name with a newline and control characters",
            Portal,
            &request(3, "session.ping\n\u{1b}[2J", &json!({})),
            Err(-32601),
        ),
        rpc(
            "a routed method name with a newline, without the right",
            TurnOnly,
            &request(3, "cti.x\nINFO FORGED forbidden\u{1b}[2J", &json!({})),
            Err(-32601),
        ),
        // --- Routed method names must be canonical (PROTOCOL.md §5.2):
        // another spelling never reaches a rule's wider parent, even for a
        // caller who holds the namespace's right.
        rpc(
            "a routed method with capitals",
            Portal,
            &request(3, "cti.Make_call", &json!({})),
            Err(-32601),
        ),
        rpc(
            "a routed method with an empty last segment",
            Portal,
            &request(3, "cti.call.", &json!({})),
            Err(-32601),
        ),
        rpc(
            "a routed method with an empty middle segment",
            Portal,
            &request(3, "cti..call", &json!({})),
            Err(-32601),
        ),
        rpc(
            "a routed method with a space",
            Portal,
            &request(3, "cti.make call", &json!({})),
            Err(-32601),
        ),
        rpc(
            "a routed method with a non-ASCII letter",
            Portal,
            &request(3, "cti.m\u{e9}thode", &json!({})),
            Err(-32601),
        ),
        rpc(
            "a routed method of 129 bytes",
            Portal,
            &request(3, &format!("cti.{}", "m".repeat(125)), &json!({})),
            Err(-32601),
        ),
        rpc(
            "a topic with capitals",
            Adjunct,
            &request(3, "adjunct.publish", &json!({"topic": "cti.Call.1"})),
            Err(-32602),
        ),
        rpc(
            "a topic of one segment",
            Portal,
            &request(3, "events.subscribe", &json!({"topics": ["cti"]})),
            Err(-32602),
        ),
        rpc(
            "a topic of 129 bytes",
            Portal,
            &request(3, "events.subscribe", &json!({"topics": [format!("cti.{}", "c".repeat(125))]})),
            Err(-32602),
        ),
        rpc(
            "a 60 KB method name",
            Portal,
            &request(3, &"m".repeat(60_000), &json!({})),
            Err(-32601),
        ),
        // --- Nesting: `[limits] max_json_depth` (32, the envelope counts),
        // checked before parsing, so depth costs no recursion.
        rpc(
            "10,000 nested brackets, unclosed",
            Portal,
            &"[".repeat(10_000),
            Ans::Id("null", Box::new(Err(-32600))),
        ),
        rpc(
            "10,000 nested brackets, closed",
            Portal,
            &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            Ans::Id("null", Box::new(Err(-32600))),
        ),
        rpc(
            "10,000 nested objects in params",
            Portal,
            &format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"session.ping","params":{}1{}}}"#,
                r#"{"a":"#.repeat(10_000),
                "}".repeat(10_000)
            ),
            Ans::Id("null", Box::new(Err(-32600))),
        ),
        rpc(
            "10,000 nested arrays as published event data",
            Adjunct,
            &format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"adjunct.publish","params":{{"topic":"cti.x","data":{}{}}}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
            Ans::Id("null", Box::new(Err(-32600))),
        ),
        rpc(
            "brackets inside strings do not count as nesting",
            Portal,
            &format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"session.ping","params":["{}\"{}"]}}"#,
                "[".repeat(1000),
                "{".repeat(1000)
            ),
            Ok,
        ),
        rpc(
            "params nested to the limit (32 with the envelope)",
            Portal,
            &nested_params(31),
            Ok,
        ),
        rpc(
            "params nested one past the limit",
            Portal,
            &nested_params(32),
            Ans::Id("null", Box::new(Err(-32600))),
        ),
        // --- Huge numbers.
        rpc(
            "a ttl past u64",
            Portal,
            &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"turn.credentials","params":{{"ttl":{}}}}}"#, "9".repeat(30)),
            Err(-32602),
        ),
        rpc(
            "a ttl of 1e400",
            Portal,
            r#"{"jsonrpc":"2.0","id":1,"method":"turn.credentials","params":{"ttl":1e400}}"#,
            Err(-32602),
        ),
        rpc(
            "a ttl of u64::MAX is clamped",
            Portal,
            &request(1, "turn.credentials", &json!({"ttl": u64::MAX})),
            Ok,
        ),
        rpc(
            "a ttl of 0 is clamped",
            Portal,
            &request(1, "turn.credentials", &json!({"ttl": 0})),
            Ok,
        ),
        rpc(
            "a 10,000-digit id is echoed",
            Portal,
            &format!(r#"{{"jsonrpc":"2.0","id":{},"method":"session.ping"}}"#, "7".repeat(10_000)),
            Ok,
        ),
        // --- Batches.
        rpc("an empty batch", Portal, "[]", Ans::Id("null", Box::new(Err(-32600)))),
        rpc(
            "a batch of 33",
            Portal,
            &format!("[{}]", vec![ping(1); 33].join(",")),
            Ans::Id("null", Box::new(Err(-32600))),
        ),
        rpc(
            "a batch of 10,000 numbers",
            Portal,
            &format!("[{}]", vec!["1"; 10_000].join(",")),
            Ans::Id("null", Box::new(Err(-32600))),
        ),
        row(
            "a batch of 32",
            Input::Ws(Portal, text(&format!("[{}]", vec![ping(1); 32].join(",")))),
            Expect::Batch(vec![Ok; 32]),
        ),
        row(
            "a batch of non-requests",
            Input::Ws(Portal, text(r#"[1,"x",null,[],{},true]"#)),
            Expect::Batch(vec![Err(-32600); 6]),
        ),
        row(
            "a batch of notifications only",
            Input::Ws(Portal, text(&format!("[{}]", vec![r#"{"jsonrpc":"2.0","method":"session.ping"}"#; 32].join(",")))),
            Expect::Silence,
        ),
        row(
            "a batch of 32 failed logins",
            Input::Ws(
                Anonymous,
                text(&format!(
                    "[{}]",
                    vec![request(1, "session.login", &json!({"user": "portal1", "password": "wrong"})); 32].join(",")
                )),
            ),
            Expect::Batch(vec![Err(-32002); 32]),
        ),
        // --- Before login.
        row(
            "1,000 requests flooding in before login, then a login",
            Input::Ws(Anonymous, {
                let mut bytes: Vec<u8> = (0..1000).flat_map(|i| text(&ping(i))).collect();
                bytes.extend(text(&request(
                    1000,
                    "session.login",
                    &json!({"user": "portal1", "password": PORTAL_PW}),
                )));
                bytes
            }),
            Expect::Answers([vec![Err(-32001); 1000], vec![Ok]].concat()),
        ),
        rpc(
            "an unknown method before login",
            Anonymous,
            &request(1, "nope.nope", &json!({})),
            Err(-32601),
        ),
        rpc(
            "a routed method before login",
            Anonymous,
            &request(1, "cti.make_call", &json!({})),
            Err(-32001),
        ),
        // --- Passwords and user names.
        row(
            "session.login with a 1 MB password",
            Input::Ws(
                Anonymous,
                text(&request(1, "session.login", &json!({"user": "portal1", "password": "p".repeat(1 << 20)}))),
            ),
            Expect::Close(1009),
        ),
        Row {
            within: Some(Duration::from_secs(2)),
            ..rpc(
                "session.login with a 60 KB password",
                Anonymous,
                &request(1, "session.login", &json!({"user": "portal1", "password": "p".repeat(60_000)})),
                Err(-32002),
            )
        },
        rpc(
            "session.login with a user name holding newlines and control characters",
            Anonymous,
            &request(1, "session.login", &json!({"user": EVIL_USER, "password": "x"})),
            Err(-32002),
        ),
        rpc(
            "session.login with a 60 KB user name",
            Anonymous,
            &request(1, "session.login", &json!({"user": "u".repeat(60_000), "password": "x"})),
            Err(-32002),
        ),
        rpc(
            "session.login with a NUL in the password",
            Anonymous,
            &request(1, "session.login", &json!({"user": "portal1", "password": format!("{PORTAL_PW}\u{0}")})),
            Err(-32002),
        ),
        rpc(
            "a second session.login",
            Portal,
            &request(1, "session.login", &json!({"user": "portal1", "password": PORTAL_PW})),
            Err(-32600),
        ),
    ];
    t.extend(id_rows());
    t.extend(wrong_type_rows());
    t
}

/// Ids of every JSON type: valid ones echoed verbatim, others -32600 with id null.
fn id_rows() -> Vec<Row> {
    let valid = [
        r#""x""#,
        r#""""#,
        r#""\n\u0000\"""#,
        "7",
        "0",
        "-0",
        "-1",
        "-1.5e3",
        "0.25",
        "1e400",
        "123456789012345678901234567890",
        "null",
    ];
    let invalid = ["{}", r#"{"a":1}"#, "[]", "[1]", "true", "false"];
    let frame_with_id =
        |id: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"session.ping"}}"#);
    let mut rows: Vec<Row> = valid
        .into_iter()
        .map(|id| {
            rpc(
                format!("id {id} is echoed"),
                Who::Portal,
                &frame_with_id(id),
                Ans::Id(id, Box::new(Ans::Ok)),
            )
        })
        .collect();
    rows.extend(invalid.into_iter().map(|id| {
        rpc(
            format!("id {id} is refused"),
            Who::Portal,
            &frame_with_id(id),
            Ans::Id("null", Box::new(Ans::Err(-32600))),
        )
    }));
    rows.push(row(
        "no id: a notification, never answered",
        Input::Ws(
            Who::Portal,
            text(r#"{"jsonrpc":"2.0","method":"session.ping"}"#),
        ),
        Expect::Silence,
    ));
    rows.push(row(
        "no id and an unknown method: still never answered",
        Input::Ws(Who::Portal, text(r#"{"jsonrpc":"2.0","method":"nope"}"#)),
        Expect::Silence,
    ));
    rows
}

/// What a param of a local method accepts (PROTOCOL.md §6, ADMIN.md).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    /// A string, or null (optional).
    OptStr,
    /// A non-negative integer, or null (optional).
    OptUint,
    /// true or false, or null (optional).
    OptBool,
    StrList,
    /// A list of strings, or null (optional).
    OptStrList,
    Any,
}

fn kind(method: &str, param: &str) -> Kind {
    match (method, param) {
        ("admin.sessions.list", "user") => Kind::OptStr,
        ("admin.users.create" | "admin.users.update", "groups") => Kind::OptStrList,
        (_, "user" | "password" | "topic" | "token" | "revision" | "name" | "sessionId") => {
            Kind::Str
        }
        (_, "endpoint" | "reason") => Kind::OptStr,
        (_, "ttl" | "limit") => Kind::OptUint,
        (_, "enabled") => Kind::OptBool,
        (_, "namespaces" | "topics" | "rights" | "groups") => Kind::StrList,
        (_, "stun_urls" | "turn_urls") => Kind::OptStrList,
        (_, "data") => Kind::Any,
        (m, p) => panic!("{m} param {p:?} is new: give it a kind in tests/bad_input.rs"),
    }
}

/// A value of the right type for `param` (the base every wrong value replaces).
fn fitting(method: &str, param: &str) -> Value {
    match (param, kind(method, param)) {
        ("topic", _) => json!("cti.call.1"),
        ("endpoint", _) => json!("portal"),
        ("revision" | "sessionId", _) => json!("0000000000000001"),
        ("namespaces", _) => json!(["cti"]),
        ("topics", _) => json!(["cti.call.*"]),
        ("rights", _) => json!(["one-X CTI API"]),
        (_, Kind::Str | Kind::OptStr) => json!("ghost"),
        (_, Kind::OptUint) => json!(60),
        (_, Kind::OptBool) => json!(true),
        (_, Kind::StrList | Kind::OptStrList) => json!([]),
        (_, Kind::Any) => json!({"k": 1}),
    }
}

/// Values of every JSON type, and whether each fits `kind`.
fn candidates(kind: Kind) -> Vec<(Value, bool)> {
    let all = [
        json!(5),
        json!(-1),
        json!(1.5),
        json!("s"),
        json!([]),
        json!([5]),
        json!({}),
        json!(null),
        json!(true),
    ];
    all.into_iter()
        .map(|v| {
            let str_list = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
            let fits = match kind {
                Kind::Any => true,
                Kind::Str => v.is_string(),
                Kind::OptStr => v.is_string() || v.is_null(),
                Kind::OptUint => v.is_u64() || v.is_null(),
                Kind::OptBool => v.is_boolean() || v.is_null(),
                Kind::StrList => str_list,
                Kind::OptStrList => str_list || v.is_null(),
            };
            (v, fits)
        })
        .collect()
}

/// The gateway's own methods with their catalog entries.
fn local_methods() -> impl Iterator<Item = (&'static str, Method, Entry<'static>)> {
    let catalog = Catalog::default();
    catalog::local_methods().map(move |(name, method)| {
        let entry = catalog
            .lookup(name)
            .expect("a listed method is in the catalog");
        (name, method, entry)
    })
}

/// The session a method is tried on: one that passes its gate.
fn caller(need: Need, reach: Reach) -> Who {
    match (need, reach) {
        (Need::Anonymous, _) => Who::Anonymous,
        (_, Reach::AdjunctOnly) => Who::Adjunct,
        (Need::Authenticated, _) => Who::Portal,
        (Need::Right(Right::TurnServerConnection | Right::OneXCtiApi), _) => Who::Portal,
        _ => Who::Admin,
    }
}

/// Wrong JSON types for every param of every method, unknown members, too
/// many positional members and missing required ones, generated from the
/// catalog's member names: each gets -32602 naming the member and what it
/// must be (in this file's own words, `kind`), never the decoder's text (or
/// -32600 when `params` itself is not a container), never a dropped
/// connection. That the catalog's descriptions match the decoders is a unit
/// test beside them (src/methods/params.rs).
fn wrong_type_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, method, entry) in local_methods() {
        let who = caller(entry.need, entry.reach);
        let params = method.params();
        let names: Vec<&str> = params.iter().map(|p| p.name).collect();
        for bad in [json!(5), json!("s"), json!(null), json!(true)] {
            rows.push(rpc(
                format!("{name} with params {bad}"),
                who,
                &request(1, name, &bad),
                Ans::Err(-32600),
            ));
        }
        if params.is_empty() {
            // Not read at all: anything is accepted.
            rows.push(rpc(
                format!("{name} with params it does not read"),
                who,
                &request(1, name, &json!({"x": [1, {"y": null}]})),
                Ans::Ok,
            ));
            continue;
        }
        let base: serde_json::Map<String, Value> = names
            .iter()
            .map(|p| (p.to_string(), fitting(name, p)))
            .collect();
        for (n, param) in names.iter().enumerate() {
            let must = match kind(name, param) {
                Kind::Str | Kind::OptStr => "a string",
                Kind::OptUint => "a non-negative integer",
                Kind::OptBool => "true or false",
                Kind::StrList | Kind::OptStrList => "an array of strings",
                Kind::Any => "",
            };
            for (value, fits) in candidates(kind(name, param)) {
                if fits {
                    continue;
                }
                // `[5]` for a list: the element is what is wrong.
                let list = matches!(kind(name, param), Kind::StrList | Kind::OptStrList);
                let (at, what) = match value.as_array() {
                    Some(_) if list => ("[0]", "a string"),
                    _ => ("", must),
                };
                let mut p = base.clone();
                p.insert(param.to_string(), value.clone());
                rows.push(rpc(
                    format!("{name} with {param} = {value}"),
                    who,
                    &request(1, name, &Value::Object(p.clone())),
                    Ans::Params(format!("params.{param}{at} must be {what}")),
                ));
                // Positional: the same values in documented order.
                let positional: Vec<Value> = names.iter().map(|n| p[*n].clone()).collect();
                rows.push(rpc(
                    format!("{name} with {param} = {value}, positional"),
                    who,
                    &request(1, name, &Value::Array(positional)),
                    Ans::Params(format!("params[{n}] ({param}){at} must be {what}")),
                ));
            }
        }
        let mut extra = base.clone();
        extra.insert("zz_unknown".into(), json!(1));
        rows.push(rpc(
            format!("{name} with an unknown member"),
            who,
            &request(1, name, &Value::Object(extra)),
            Ans::Params(format!(
                "params.zz_unknown is not a parameter of {name} (it takes {})",
                names.join(", ")
            )),
        ));
        let too_many: Vec<Value> = names
            .iter()
            .map(|n| base[*n].clone())
            .chain([json!(1)])
            .collect();
        rows.push(rpc(
            format!("{name} with one positional param too many"),
            who,
            &request(1, name, &Value::Array(too_many)),
            Ans::Params(format!(
                "params has {} members; {name} takes {}",
                names.len() + 1,
                names.len()
            )),
        ));
        for param in params.iter().filter(|p| !p.optional) {
            let mut without = base.clone();
            without.remove(param.name);
            rows.push(rpc(
                format!("{name} without {}", param.name),
                who,
                &request(1, name, &Value::Object(without)),
                Ans::Params(format!("params.{} is required and must be", param.name)),
            ));
        }
    }
    rows.push(rpc(
        "a routed method with params 5",
        Who::Portal,
        &request(1, "cti.make_call", &json!(5)),
        Ans::Err(-32600),
    ));
    rows
}

// ------------------------------------------------------------------ runner

/// Reads until the peer closes; returns everything it sent.
async fn read_all<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, r.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            Ok(_) => return got,
            Err(_) => panic!("the connection stayed open"),
        }
    }
}

/// Writes `bytes` and reads the whole answer at the same time.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(io: S, bytes: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(io);
    let write = async {
        let _ = w.write_all(bytes).await;
        let _ = w.flush().await;
    };
    let (_, got) = tokio::join!(write, read_all(&mut r));
    got
}

fn status(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// An answer read loosely: `id` stays raw (ids are echoed byte for byte,
/// including escapes a strict decoder refuses, such as a lone surrogate).
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    result: Option<&'a serde_json::value::RawValue>,
    error: Option<ErrorObject>,
}

#[derive(serde::Deserialize)]
struct ErrorObject {
    code: i64,
    #[serde(default)]
    message: String,
}

fn check_answer(row: &str, text: &str, ans: &Ans) {
    let a: Answer = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{row}: not an answer ({e}): {text:.300}"));
    match ans {
        Ans::Ok => assert!(
            a.result.is_some(),
            "{row}: expected a result, got {text:.300}"
        ),
        Ans::Err(c) => assert_eq!(a.error.map(|e| e.code), Some(*c), "{row}: got {text:.300}"),
        Ans::Id(id, inner) => {
            assert!(
                text.contains(&format!("\"id\":{id},")),
                "{row}: id {id} not echoed verbatim in {text:.300}"
            );
            check_answer(row, text, inner);
        }
        Ans::Params(says) => {
            let e = a.error.as_ref();
            assert_eq!(e.map(|e| e.code), Some(-32602), "{row}: got {text:.300}");
            let msg = e.map_or("", |e| e.message.as_str());
            assert!(msg.contains(says.as_str()), "{row}: {msg:?} lacks {says:?}");
            assert_no_decoder_text(row, msg);
        }
    }
}

/// The decoder's wording names Rust types and serde's grammar, not the
/// protocol: none of it may reach a -32602 message.
fn assert_no_decoder_text(row: &str, msg: &str) {
    for serde_text in [
        "invalid type",
        "invalid length",
        "invalid value",
        "expected u64",
        "expected a",
        "expected struct",
        "unknown field",
        "missing field",
        "duplicate field",
        "trailing",
        "`",
        " at line ",
    ] {
        assert!(
            !msg.contains(serde_text),
            "{row}: decoder text {serde_text:?} in {msg:?}"
        );
    }
}

/// The row's session still answers (it was not dropped by the bad input).
async fn still_serves(row: &str, ws: &mut RawWs) {
    ws.send(&text(&request(77, "session.ping", &json!({}))))
        .await;
    let v = ws.rd.answer().await;
    assert!(
        v.get("result").is_some() || code(&v) == -32001,
        "{row}: the session no longer answers: {v}"
    );
}

/// Reads what the server answers a row's frames and checks it.
async fn expect_on(rd: &mut Reader, r: &Row, expect: &Expect) {
    match expect {
        Expect::Close(want) => {
            let got = rd.next(WAIT).await;
            assert_eq!(got, Event::Close(Some(*want)), "{}", r.name);
        }
        Expect::Answers(answers) => {
            for ans in answers {
                check_answer(&r.name, &rd.text(&r.name).await, ans);
            }
        }
        Expect::Batch(answers) => {
            let t = rd.text(&r.name).await;
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(&t)
                .unwrap_or_else(|e| panic!("{}: not an array ({e}): {t:.300}", r.name));
            assert_eq!(items.len(), answers.len(), "{}: {t:.300}", r.name);
            for (item, ans) in items.iter().zip(answers) {
                check_answer(&r.name, item.get(), ans);
            }
        }
        Expect::Silence => {
            let got = rd.next(Duration::from_millis(300)).await;
            assert_eq!(got, Event::Silent, "{}", r.name);
        }
        Expect::Http(_) | Expect::Dropped => {
            unreachable!("{}: not a WebSocket answer", r.name)
        }
    }
}

async fn run(gw: &TestGateway, r: &Row) {
    let started = Instant::now();
    match (&r.input, &r.expect) {
        (Input::Tcp(bytes), Expect::Dropped) => {
            let tcp = TcpStream::connect(gw.addr).await.unwrap();
            let got = exchange(tcp, bytes).await;
            assert!(
                !String::from_utf8_lossy(&got).contains("HTTP/"),
                "{}: answered over plain TCP",
                r.name
            );
        }
        (Input::Tls(bytes), Expect::Http(want)) => {
            let tls = tls_connect(gw.addr, &gw.ca_pem).await.unwrap();
            let got = exchange(tls, bytes).await;
            assert_eq!(
                status(&got),
                Some(*want),
                "{}: {:.200}",
                r.name,
                String::from_utf8_lossy(&got)
            );
        }
        (Input::Ws(who, bytes), expect) => {
            let mut ws = RawWs::session(gw, *who).await;
            let RawWs { rd, w } = &mut ws;
            tokio::join!(send(w, bytes), expect_on(rd, r, expect));
            if let Some(limit) = r.within {
                assert!(started.elapsed() < limit, "{}: too slow", r.name);
            }
            if matches!(
                expect,
                Expect::Answers(_) | Expect::Batch(_) | Expect::Silence
            ) {
                still_serves(&r.name, &mut ws).await;
            }
        }
        _ => panic!("{}: this input cannot have that answer", r.name),
    }
}

// ------------------------------------------------------------- log capture

/// Everything the gateway logged while the table ran (the text format,
/// without colours, as `--log-format text` writes it).
fn captured() -> Arc<Mutex<Vec<u8>>> {
    capture_logs("debug")
}

/// No log line carries a control character, and the forged text in
/// `EVIL_USER` appears only inside a quoted, escaped field.
fn assert_no_log_injection(log: &str) {
    for line in log.split('\n') {
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "a log line carries a control character: {line:?}"
        );
        if let Some(at) = line.find("FORGED") {
            assert!(
                ["user=\"", "method=\"", "reason=\""]
                    .iter()
                    .any(|field| line[..at].contains(field)),
                "forged text outside a quoted field: {line:?}"
            );
        }
    }
}

// -------------------------------------------------------------------- test

/// The table logs in with wrong passwords on purpose, many times, from one
/// address: account lockout and the per-address block (`[security]`) must
/// not turn its later rows into 429s, refused or delayed logins. They have
/// their own tests; here every other limit stays at its default.
const NO_LOCKOUT: &str =
    "[security]\nreject_limit = 1000000\nip_reject_limit = 1000000\naccount_delay_max_ms = 0\n";

const ADMIN_PW: &str = "admin-Pass-0x";

/// The built-in administrator (`[security] administrator`, every right), for
/// the Management API rows; plus `NO_LOCKOUT`.
fn table_config() -> String {
    format!(
        "[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n\n{NO_LOCKOUT}",
        cheap_hash(ADMIN_PW)
    )
}

#[tokio::test]
async fn every_bad_input_gets_its_documented_answer_and_everyone_else_is_served() {
    let log = captured();
    let gw = TestGateway::start_with("", &table_config()).await;
    let mut bystander = gw.login("/portal", "portal1", PORTAL_PW).await;
    let rows = rows();
    let mut names = std::collections::HashSet::new();
    for r in &rows {
        assert!(names.insert(r.name.as_str()), "two rows named {:?}", r.name);
        run(&gw, r).await;
        let pong = tokio::time::timeout(WAIT, bystander.ok("session.ping", json!(null)))
            .await
            .unwrap_or_else(|_| panic!("after {:?}: the bystander got no answer", r.name));
        assert_eq!(pong, json!({}), "after {:?}", r.name);
    }
    // New connections are still accepted and served.
    let mut fresh = gw.login("/adjunct", "app1", APP_PW).await;
    assert_eq!(fresh.ok("session.ping", json!(null)).await, json!({}));
    eprintln!("{} rows passed", rows.len());
    // A method name can no longer carry control characters to the audit
    // log (routed names are canonical); a close reason still can, and
    // must reach it escaped.
    let mut admin = gw.login("/portal", "admin", ADMIN_PW).await;
    let victim = admin
        .ok("admin.sessions.list", json!({"user": "app1"}))
        .await;
    let id = victim["sessions"][0]["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    admin
        .ok(
            "admin.sessions.close",
            json!({"sessionId": id, "reason": EVIL_USER}),
        )
        .await;
    gw.shutdown().await;

    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("FORGED"),
        "the evil user name never reached the log: the log-injection rows proved nothing"
    );
    assert_no_log_injection(&log);
}

// ------------------------------------------------------- close handshake

/// How a connection ended after the server's close frame.
#[derive(Debug, PartialEq)]
enum After {
    /// TLS close_notify, then end of stream: the server half-closed.
    CleanEnd,
    /// More bytes after the close frame (nothing may follow it).
    Bytes(usize),
    /// A reset or a TLS end without close_notify: what a peer that is still
    /// sending may get instead of the close frame.
    Broken(std::io::ErrorKind),
}

/// Opens `who`'s session, sends `first`, then writes `chunk` over and over,
/// as fast as the connection takes it, from a task of its own, while this
/// task reads: what a peer that is still sending sees of a close.
async fn keep_sending_until_closed(
    gw: &TestGateway,
    who: Who,
    first: &[u8],
    chunk: Vec<u8>,
) -> (Event, After) {
    let RawWs { mut rd, mut w } = RawWs::session(gw, who).await;
    let first = first.to_vec();
    let writer = tokio::spawn(async move {
        if w.write_all(&first).await.is_err() {
            return;
        }
        while w.write_all(&chunk).await.is_ok() {}
    });
    let got = rd.next(WAIT).await;
    let after = if rd.buf.is_empty() {
        let mut more = [0u8; 1024];
        match tokio::time::timeout(WAIT, rd.r.read(&mut more)).await {
            Ok(Ok(0)) => After::CleanEnd,
            Ok(Ok(n)) => After::Bytes(n),
            Ok(Err(e)) => After::Broken(e.kind()),
            Err(_) => panic!("the server neither ended nor reset the connection"),
        }
    } else {
        After::Bytes(rd.buf.len())
    };
    writer.abort();
    (got, after)
}

/// RFC 6455 §7.1.1: after its close frame the gateway half-closes (TLS
/// close_notify, TCP FIN) and reads what the peer still sends, so a peer
/// that is still writing reads the close code and a clean end, not a reset.
/// Twenty times each, for the two ways a peer that keeps writing is closed.
/// Shutdown then waits for such a peer no longer than the linger bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_still_sending_reads_the_close_code_and_a_clean_end() {
    let gw = TestGateway::start_with(
        "max_message_bytes = 4096",
        &format!(
            "{NO_LOCKOUT}\n[limits]\nrequests_per_sec = 1\nrequest_burst = 1\nrate_limited_close_after = 50\n"
        ),
    )
    .await;
    // A fragmented message that never ends: 64 continuation frames a write.
    let start = frame(TEXT, &[b' '; 1000]);
    let more: Vec<u8> = (0..64).flat_map(|_| frame(CONT, &[b' '; 1000])).collect();
    // Notifications past the request budget: refused without an answer.
    let ping = text(r#"{"jsonrpc":"2.0","method":"session.ping"}"#);
    let flood: Vec<u8> = (0..64).flat_map(|_| ping.clone()).collect();
    for round in 0..20 {
        let got = keep_sending_until_closed(&gw, Who::Portal, &start, more.clone()).await;
        assert_eq!(
            got,
            (Event::Close(Some(1009)), After::CleanEnd),
            "round {round}: too big"
        );
        let got = keep_sending_until_closed(&gw, Who::Portal, &[], flood.clone()).await;
        assert_eq!(
            got,
            (Event::Close(Some(1008)), After::CleanEnd),
            "round {round}: rate limit"
        );
    }

    // Shutdown: 1001 to a peer that goes on sending, slowly enough never to
    // reach the byte bound, and the gateway stops within the time bound
    // (2 s), not the 8 s shutdown grace. Pings spend no request budget.
    let RawWs { mut rd, mut w } = RawWs::session(&gw, Who::Portal).await;
    let writer = tokio::spawn(async move {
        let ping = frame(FIN | PING, b"x");
        while w.write_all(&ping).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let stop = tokio::spawn(gw.shutdown());
    assert_eq!(rd.next(WAIT).await, Event::Close(Some(1001)));
    assert!(rd.buf.is_empty(), "bytes after the close frame");
    let mut end = [0u8; 64];
    let clean = tokio::time::timeout(WAIT, rd.r.read(&mut end)).await;
    assert!(matches!(clean, Ok(Ok(0))), "after 1001: {clean:?}");
    tokio::time::timeout(Duration::from_secs(6), stop)
        .await
        .expect("shutdown waited past the linger bound")
        .unwrap();
    eprintln!("shutdown took {:?}", started.elapsed());
    writer.abort();
}

// ------------------------------------------------------- the dozing link

const PONG: u8 = 0xA;

impl Reader {
    /// Waits for the server's next heartbeat Ping (a text or close frame
    /// first is a failure); answers it with a Pong when `answer`, as a
    /// browser or a WebSocket library does.
    async fn heartbeat(&mut self, w: &mut tokio::io::WriteHalf<Tls>, answer: bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((head, payload, used)) = decode(&self.buf) {
                self.buf.drain(..used);
                assert_eq!(
                    head & 0x0F,
                    PING,
                    "expected a heartbeat, got {:?}",
                    String::from_utf8_lossy(&payload)
                );
                if answer {
                    send(w, &frame(FIN | PONG, &payload)).await;
                }
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(end) = self.fill(left).await {
                panic!("no heartbeat: {end:?}");
            }
        }
    }
}

/// A fragmented message begun and left unfinished while the peer answers
/// every heartbeat: closed with 1008 `message left unfinished` once the
/// same message is still unfinished a heartbeat later (its fragments would
/// otherwise be held, up to `max_message_bytes`, for as long as it likes).
#[tokio::test]
async fn a_message_left_unfinished_for_a_heartbeat_is_closed() {
    let gw = TestGateway::start_with("heartbeat_secs = 1", NO_LOCKOUT).await;
    let mut ws = dozing_then_logged_in(&gw).await;
    let body = request(2, "session.ping", &json!({})).into_bytes();
    ws.send(&frame(TEXT, &body[..20])).await;
    let mut pongs = 0;
    let closed = loop {
        if let Some((head, payload, used)) = decode(&ws.rd.buf) {
            ws.rd.buf.drain(..used);
            match head & 0x0F {
                PING => {
                    // Two heartbeats are enough; more means it stays open.
                    assert!(pongs < 5, "still open after {pongs} heartbeats");
                    send(&mut ws.w, &frame(FIN | PONG, &payload)).await;
                    pongs += 1;
                    continue;
                }
                CLOSE => break payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])),
                other => panic!("unexpected frame {other:#x}"),
            }
        }
        if let Err(end) = ws.rd.fill(WAIT).await {
            panic!("no close after {pongs} pongs: {end:?}");
        }
    };
    assert_eq!(closed, Some(1008), "after {pongs} pongs");
    assert!(pongs >= 1, "a heartbeat passed first");
}

/// Waits until `adjunct_gateway_sessions_dozing` is `want`.
async fn until_dozing(gw: &TestGateway, want: f64, step: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = sample(&gw.scrape().await, "adjunct_gateway_sessions_dozing");
        if now == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: sessions_dozing {now:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session's answer to `session.ping` with this id.
async fn pinged(ws: &mut RawWs, id: u64, step: &str) {
    let v = ws.rd.answer().await;
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "id": id, "result": {}}),
        "{step}"
    );
}

/// An idle session's link gives tungstenite's buffers back ("dozes") at a
/// heartbeat tick and after the peer's pong, and is rebuilt when bytes come
/// (`session::link`, BENCHMARKS.md "Memory per idle session"). Rebuilding
/// drops what tungstenite holds, so whatever the peer has in flight at a
/// tick must survive it: half a frame, a fragmented message, the bytes after
/// a large message, a frame sent with the upgrade request.
#[tokio::test]
async fn an_idle_link_dozes_and_wakes_without_losing_a_byte() {
    let gw = TestGateway::start_with("heartbeat_secs = 1", NO_LOCKOUT).await;
    let ping = |id: u64| text(&request(id, "session.ping", &json!({})));

    let mut ws = dozing_then_logged_in(&gw).await;

    // A tick, the pong: dozing again, and the next request wakes it.
    ws.rd.heartbeat(&mut ws.w, true).await;
    until_dozing(&gw, 1.0, "after a heartbeat and its pong").await;
    ws.send(&ping(2)).await;
    pinged(&mut ws, 2, "a request to a dozing link").await;

    // More frames than one wake-up handles (64), ending exactly where
    // tungstenite's first 4 KiB read does: the rest waits in rustls, and a
    // link dozing now would never hear of it.
    ws.rd.heartbeat(&mut ws.w, true).await;
    until_dozing(&gw, 1.0, "before a long burst").await;
    let mut burst: Vec<u8> = (0..64)
        .flat_map(|_| frame(FIN | PING, &[b'p'; 58]))
        .collect();
    assert_eq!(burst.len(), 4096);
    burst.extend_from_slice(&ping(20));
    ws.send(&burst).await;
    pinged(&mut ws, 20, "a request behind 64 pings").await;

    // Half a frame at the tick: the link must not doze under it.
    let whole = ping(3);
    ws.send(&whole[..9]).await;
    ws.rd.heartbeat(&mut ws.w, false).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.send(&whole[9..]).await;
    pinged(&mut ws, 3, "a frame split across a tick").await;

    // A message of 30 KB (answered in kind: the id is echoed), then the
    // tick: the grown buffers go, the next request is served.
    large_ping(&mut ws).await;
    ws.rd.heartbeat(&mut ws.w, true).await;
    until_dozing(&gw, 1.0, "after a large message and a heartbeat").await;
    ws.send(&ping(4)).await;
    pinged(&mut ws, 4, "after the large message").await;

    // A fragmented message across the tick.
    let body = request(5, "session.ping", &json!({})).into_bytes();
    ws.send(&frame(TEXT, &body[..20])).await;
    ws.rd.heartbeat(&mut ws.w, false).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.send(&frame(FIN | CONT, &body[20..])).await;
    pinged(&mut ws, 5, "a message fragmented across a tick").await;
    ws.rd.heartbeat(&mut ws.w, true).await;
    until_dozing(&gw, 1.0, "after a fragmented message").await;
    ws.send(&ping(6)).await;
    pinged(&mut ws, 6, "after the fragmented message").await;

    // A frame with a longer length field than it needs (16 bits for 60
    // bytes: allowed on the wire), then the tick: dozing again.
    let body = request(9, "session.ping", &json!({})).into_bytes();
    let mut long = vec![FIN | TEXT, 0x80 | 126];
    long.extend_from_slice(&(body.len() as u16).to_be_bytes());
    long.extend_from_slice(&[0, 0, 0, 0]);
    long.extend_from_slice(&body);
    ws.send(&long).await;
    pinged(&mut ws, 9, "a frame with a 16-bit length field").await;
    ws.rd.heartbeat(&mut ws.w, true).await;
    until_dozing(&gw, 1.0, "after a frame with a long length field").await;
    ws.send(&ping(10)).await;
    pinged(&mut ws, 10, "after the long length field").await;
    drop(ws);

    // A login in the same write as the upgrade request: read awake. Then
    // the same behind a request head of exactly 1,024 bytes, which the
    // gateway's first read takes whole, leaving the frame in rustls.
    let bare = format!("GET /portal HTTP/1.1\r\nHost: localhost\r\n{UPGRADE}X-Pad: \r\n\r\n");
    for (id, pad) in [(7, 0), (8, 1024 - bare.len())] {
        let pad = "p".repeat(pad);
        let head =
            format!("GET /portal HTTP/1.1\r\nHost: localhost\r\n{UPGRADE}X-Pad: {pad}\r\n\r\n");
        let login = request(
            id,
            "session.login",
            &json!({"user": "portal1", "password": PORTAL_PW}),
        );
        let v = login_with_upgrade(&gw, &head, &login).await;
        assert!(
            v["id"] == json!(id) && v.get("result").is_some(),
            "a login behind a {}-byte request head: {v}",
            head.len()
        );
    }
}

/// A message larger than the read buffer (and its answer) grow
/// tungstenite's buffers: they go back as soon as it is answered, not at
/// the next heartbeat (a minute away here).
#[tokio::test]
async fn a_large_message_gives_its_buffers_back_at_once() {
    let gw = TestGateway::start_with("heartbeat_secs = 60", NO_LOCKOUT).await;
    let mut ws = dozing_then_logged_in(&gw).await;
    until_dozing(&gw, 0.0, "awake after a small request").await;
    large_ping(&mut ws).await;
    until_dozing(&gw, 1.0, "right after a large message").await;
    ws.send(&text(&request(2, "session.ping", &json!({}))))
        .await;
    pinged(&mut ws, 2, "after the large message").await;

    // The same for a large message written from the session's queue: a
    // provider's large answer, relayed to the caller.
    let mut provider = gw.cti_provider().await;
    until_dozing(&gw, 0.0, "both awake").await;
    ws.send(&text(&request(3, "cti.make_call", &json!({}))))
        .await;
    let routed = provider.recv().await;
    assert_eq!(routed["method"], "cti.make_call");
    let pad = "y".repeat(30_000);
    provider
        .send_text(
            json!({"jsonrpc": "2.0", "id": routed["id"], "result": {"pad": pad}}).to_string(),
        )
        .await;
    let v = ws.rd.answer().await;
    assert_eq!(v["result"]["pad"], json!(pad), "the relayed answer");
    until_dozing(&gw, 2.0, "caller and provider right after a large answer").await;
}

/// A close as the last frame a wake-up handles (the 64th), behind a large
/// message: the link must not doze (a rebuilt tungstenite would forget the
/// close and serve on); the session ends, and what the peer sends after its
/// own close is not answered.
#[tokio::test]
async fn a_close_at_the_end_of_a_full_burst_ends_the_session() {
    let gw = TestGateway::start_with("heartbeat_secs = 60", NO_LOCKOUT).await;
    let mut ws = dozing_then_logged_in(&gw).await;
    let big = "x".repeat(30_000);
    let mut burst =
        text(&json!({"jsonrpc": "2.0", "id": big, "method": "session.ping"}).to_string());
    for _ in 0..62 {
        burst.extend_from_slice(&frame(FIN | PING, b"p"));
    }
    burst.extend_from_slice(&frame(FIN | CLOSE, &1000u16.to_be_bytes()));
    ws.send(&burst).await;
    let v = ws.rd.answer().await;
    assert_eq!(v["id"], json!(big), "the large message's answer");
    assert!(
        matches!(ws.rd.next(WAIT).await, Event::Close(Some(1000))),
        "the close is answered"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.send(&text(&request(99, "session.ping", &json!({}))))
        .await;
    let after = ws.rd.next(WAIT).await;
    assert!(
        matches!(after, Event::Dropped),
        "nothing served after the close: {after:?}"
    );
}

/// A /portal link, dozing from the start (nothing to read after the
/// upgrade), then logged in as portal1 (id 1).
async fn dozing_then_logged_in(gw: &TestGateway) -> RawWs {
    let mut ws = RawWs::open(gw, "/portal").await;
    until_dozing(gw, 1.0, "after the upgrade").await;
    let login = request(
        1,
        "session.login",
        &json!({"user": "portal1", "password": PORTAL_PW}),
    );
    ws.send(&text(&login)).await;
    assert!(ws.rd.answer().await.get("result").is_some(), "login");
    ws
}

/// A `session.ping` of 30 KB (its id), answered in kind.
async fn large_ping(ws: &mut RawWs) {
    let big = "x".repeat(30_000);
    ws.send(&text(
        &json!({"jsonrpc": "2.0", "id": big, "method": "session.ping"}).to_string(),
    ))
    .await;
    let v = ws.rd.answer().await;
    assert_eq!(v["id"], json!(big), "the large message's answer");
}

/// Sends `head` (an upgrade request) and `request` in one write; returns the
/// answer to `request`.
async fn login_with_upgrade(gw: &TestGateway, head: &str, request: &str) -> Value {
    let tls = tls_connect(gw.addr, &gw.ca_pem).await.unwrap();
    let (r, mut w) = tokio::io::split(tls);
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(&text(request));
    send(&mut w, &bytes).await;
    let mut rd = Reader { r, buf: Vec::new() };
    let end = loop {
        if let Some(i) = rd.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        rd.fill(WAIT).await.expect("an upgrade answer");
    };
    assert!(rd.buf.starts_with(b"HTTP/1.1 101"));
    rd.buf.drain(..end);
    rd.answer().await
}
