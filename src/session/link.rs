//! A session's WebSocket over TLS, and giving its buffers back while the
//! session is idle.
//!
//! tungstenite keeps the buffers it grows for the life of the connection:
//! the read buffer (4 KiB, or as large as the largest message the peer has
//! sent, up to `max_message_bytes`) and the write buffer (as large as the
//! largest batch written). An application server that sent one large
//! request and then went quiet would hold both for hours. So the link is in
//! one of two states:
//!
//! - **awake**: tungstenite with its read buffer (`READ_BUFFER`), as
//!   everywhere before;
//! - **dozing**: tungstenite rebuilt over the same TLS stream with no read
//!   buffer and an empty write buffer. Nothing reads while dozing: the
//!   session waits until the TCP socket is readable ([`incoming`]) and then
//!   wakes the link (rebuilt with its read buffer) before reading.
//!
//! A link starts dozing when the upgrade left no bytes to read, and dozes
//! again ([`doze_if_drained`]) at a heartbeat tick, after a wake-up that
//! read only control frames (the peer's pong to that heartbeat), and after
//! a wake-up that read or wrote a message larger than `READ_BUFFER` (the
//! buffers grew for it). Rebuilding drops tungstenite's state, so it is
//! done only when that state is provably empty: the write side is flushed
//! (every branch of the session loop ends with a flush), no close is under
//! way (nor has the peer sent one), the bytes tungstenite has read from TLS
//! end where a frame ends, outside a fragmented message, and it has handed
//! over every message they complete, and rustls holds no plaintext (which
//! no socket readiness would announce). [`Transport`] follows the frame
//! headers in the bytes read ([`Frames`]: only headers are looked at,
//! payloads are skipped by length); the session counts the messages it
//! receives ([`Transport::received`]).
//!
//! rustls stays as it is (its 4 KiB record buffer cannot be given back
//! without its unbuffered API). This module must not read from the socket
//! itself: only tungstenite reads, or data would be lost.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The WebSocket of a session.
pub type Ws = WebSocketStream<Transport>;

/// tungstenite's read buffer while awake: one read takes a burst of small
/// requests (BENCHMARKS.md, "Memory per idle session").
pub const READ_BUFFER: usize = 4096;

/// The TLS stream under a session's WebSocket, following the frames in the
/// plaintext tungstenite reads from it and counting the messages the
/// session has received. Empty only while [`rebuild`] moves it.
pub struct Transport {
    tls: Option<TlsStream<TcpStream>>,
    /// The frames of the plaintext handed to tungstenite.
    frames: Frames,
    /// Messages tungstenite handed over.
    received: u64,
}

impl Transport {
    /// The TLS stream, with the bytes of it already read (and given to
    /// tungstenite as the partially read part).
    fn new(tls: TlsStream<TcpStream>, already_read: &[u8]) -> Transport {
        let mut frames = Frames::default();
        frames.feed(already_read);
        Transport {
            tls: Some(tls),
            frames,
            received: 0,
        }
    }

    /// Counts a message the session received from tungstenite.
    pub fn received(&mut self, msg: &Message) {
        // Never read (a write-side variant): leave the count short, so the
        // link does not doze.
        if !matches!(msg, Message::Frame(_)) {
            self.received += 1;
        }
    }

    /// True when tungstenite holds no byte of a frame it has not handed
    /// over, nor part of a fragmented message, and rustls no plaintext
    /// tungstenite has not read (a burst cut short at its bound leaves some;
    /// the socket's readiness would never announce it).
    fn drained(&mut self) -> bool {
        self.frames.between_messages()
            && self.frames.messages == self.received
            && self.tls.as_mut().is_some_and(|t| buffered(t) == 0)
    }

    /// The TCP socket, to wait for readiness or to read after the close.
    pub fn tcp(&mut self) -> Option<&mut TcpStream> {
        self.tls.as_mut().map(|t| t.get_mut().0)
    }

    /// Runs one poll on the TLS stream; an error once it has moved.
    fn on_tls<T>(
        &mut self,
        poll: impl FnOnce(Pin<&mut TlsStream<TcpStream>>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.tls.as_mut() {
            Some(tls) => poll(Pin::new(tls)),
            None => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "transport moved",
            ))),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.on_tls(|tls| tls.poll_read(cx, buf));
        if let Some(new) = buf.filled().get(before..) {
            self.frames.feed(new);
        }
        polled
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.on_tls(|tls| tls.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.on_tls(|tls| tls.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.on_tls(|tls| tls.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.on_tls(|tls| tls.poll_shutdown(cx))
    }
}

/// Plaintext rustls holds, after decrypting every whole record it has read.
/// An error counts as bytes: rustls keeps it, and a read (awake) reports it.
fn buffered(tls: &mut TlsStream<TcpStream>) -> usize {
    tls.get_mut()
        .1
        .process_new_packets()
        .map_or(1, |io| io.plaintext_bytes_to_read())
}

/// The WebSocket over a TLS stream just upgraded; `rest` is what was read
/// past the upgrade request. Dozing unless bytes came after the request:
/// read already (`rest`), or still in rustls, which the socket's readiness
/// would never announce (the request is read in pieces, and one may end
/// exactly where the request does).
pub async fn open(mut tls: TlsStream<TcpStream>, rest: Vec<u8>, config: WebSocketConfig) -> Ws {
    let read_buffer = if rest.is_empty() && buffered(&mut tls) == 0 {
        0
    } else {
        READ_BUFFER
    };
    let transport = Transport::new(tls, &rest);
    WebSocketStream::from_partially_read(
        transport,
        rest,
        Role::Server,
        Some(config.read_buffer_size(read_buffer)),
    )
    .await
}

/// While a fragmented message is in progress, which one it is (the same
/// value for as long as the same message stays unfinished).
pub fn unfinished(ws: &Ws) -> Option<u64> {
    let frames = &ws.get_ref().frames;
    frames.fragmented.then_some(frames.data_messages)
}

/// True while the link holds no read buffer (and must not be read).
pub fn dozing(ws: &Ws) -> bool {
    ws.get_config().read_buffer_size == 0
}

/// What a wait for input ended with.
pub enum Incoming {
    /// The next message (awake).
    Frame(Option<Result<Message, WsError>>),
    /// The socket has bytes, or an error, for a dozing link: wake it.
    Readable,
}

/// Waits for the next message, or, while dozing, until the socket can be
/// read. Cancel-safe, as both waits are.
pub async fn incoming(ws: &mut Ws) -> Incoming {
    if !dozing(ws) {
        return Incoming::Frame(ws.next().await);
    }
    if let Some(tcp) = ws.get_mut().tcp() {
        // An error wakes the link too: the read then reports it.
        let _ = tcp.readable().await;
    }
    Incoming::Readable
}

/// Gives a dozing link its read buffer back. False if the link is lost.
pub async fn wake(ws: &mut Ws) -> bool {
    !dozing(ws) || rebuild(ws, READ_BUFFER).await
}

/// Makes the link doze if tungstenite holds nothing of the peer's (see the
/// module comment). Call only with everything written flushed and no close
/// sent. False if the link is lost.
pub async fn doze_if_drained(ws: &mut Ws) -> bool {
    if !ws.get_mut().drained() {
        return true;
    }
    rebuild(ws, 0).await
}

/// Builds tungstenite anew over the same TLS stream, with this read buffer.
async fn rebuild(ws: &mut Ws, read_buffer: usize) -> bool {
    // Built and polled inside one poll: the new stream does not take room in
    // the session's future.
    std::future::poll_fn(|cx| Poll::Ready(rebuild_now(ws, read_buffer, cx))).await
}

fn rebuild_now(ws: &mut Ws, read_buffer: usize, cx: &mut Context<'_>) -> bool {
    let config = ws.get_config().read_buffer_size(read_buffer);
    let Some(tls) = ws.get_mut().tls.take() else {
        return false;
    };
    let built = pin!(WebSocketStream::from_raw_socket(
        Transport::new(tls, &[]),
        Role::Server,
        Some(config),
    ))
    .poll(cx);
    match built {
        Poll::Ready(new) => {
            *ws = new;
            true
        }
        // tokio-tungstenite builds without a handshake in one poll; were that
        // to change, the stream is gone and the session ends.
        Poll::Pending => false,
    }
}

/// Where a stream of client frames (RFC 6455 §5.2) stands: which header or
/// payload the next byte belongs to, and how many messages the frames so
/// far complete. Looks at headers only; what tungstenite rejects (reserved
/// bits, bad opcodes, sizes) ends the session anyway, so this need not.
#[derive(Default, Debug)]
struct Frames {
    /// Payload bytes of the current frame still to come.
    payload: u64,
    /// The header being read: it is at most 14 bytes.
    head: [u8; 14],
    head_len: usize,
    /// A data frame without FIN came and the continuation with FIN has not.
    fragmented: bool,
    /// Messages completed: control frames, and data frames with FIN.
    messages: u64,
    /// Data messages completed: which one a fragmented message in progress
    /// is (the next).
    data_messages: u64,
    /// A close frame came: the link never dozes after it (tungstenite's
    /// closing state would be lost with it, and the session ends anyway).
    closed: bool,
}

impl Frames {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.payload).unwrap_or(usize::MAX));
                self.payload -= n as u64;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            // The header's bytes in one copy: the first two, then the rest
            // once they say how long it is.
            let need = self.header_len().unwrap_or(2);
            let n = need.saturating_sub(self.head_len).min(bytes.len());
            let (taken, rest) = bytes.split_at(n);
            if let Some(slot) = self.head.get_mut(self.head_len..self.head_len + n) {
                slot.copy_from_slice(taken);
            }
            self.head_len += n;
            bytes = rest;
            if self.header_len() == Some(self.head_len) {
                self.header_done();
            }
        }
    }

    /// The header's length, once its first two bytes are here.
    fn header_len(&self) -> Option<usize> {
        let b1 = *self.head.get(1).filter(|_| self.head_len >= 2)?;
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        Some(2 + extended_len(b1) + mask)
    }

    /// Ends a header that is all here.
    fn header_done(&mut self) {
        let [b0, b1, ..] = self.head;
        let length = match self.head.get(2..2 + extended_len(b1)) {
            Some(field) if !field.is_empty() => {
                field.iter().fold(0u64, |n, &b| n << 8 | u64::from(b))
            }
            _ => u64::from(b1 & 0x7F),
        };
        let fin = b0 & 0x80 != 0;
        match b0 & 0x0F {
            // A control frame is a message of its own, even between the
            // fragments of another.
            0x8..=0xF => {
                self.messages += 1;
                self.closed |= b0 & 0x0F == 0x8;
            }
            // The first frame of a message (text, binary or reserved: the
            // latter ends the session) and its continuations.
            _ => {
                self.fragmented = !fin;
                if fin {
                    self.messages += 1;
                    self.data_messages += 1;
                }
            }
        }
        self.payload = length;
        self.head_len = 0;
    }

    /// Between two frames, not inside a fragmented message, and no close
    /// received.
    fn between_messages(&self) -> bool {
        self.payload == 0 && self.head_len == 0 && !self.fragmented && !self.closed
    }
}

/// Bytes of the extended payload length a header's second byte announces.
fn extended_len(b1: u8) -> usize {
    match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    /// A masked client frame with `payload_len` bytes of payload, its
    /// length in the field of `field` bytes (0, 2 or 8).
    fn frame(b0: u8, payload_len: usize, field: usize) -> Vec<u8> {
        let mut f = vec![b0];
        match field {
            0 => f.push(0x80 | payload_len as u8),
            2 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', payload_len));
        f
    }

    /// Every split of a stream of frames ends between messages exactly
    /// where the whole frames of whole messages end, and counts them.
    #[test]
    fn frames_are_followed_whatever_the_reads_cut() {
        const FIN: u8 = 0x80;
        let parts: Vec<(Vec<u8>, u64, bool)> = vec![
            // (frame, messages it completes, between messages after it)
            (frame(FIN | 0x1, 5, 0), 1, true),
            (frame(FIN | 0x1, 300, 2), 1, true),
            // Longer length fields than needed.
            (frame(FIN | 0x1, 5, 2), 1, true),
            (frame(FIN | 0x2, 70_000, 8), 1, true),
            (frame(FIN | 0x9, 0, 0), 1, true),
            // A fragmented message with a ping between its fragments.
            (frame(0x1, 10, 0), 0, false),
            (frame(FIN | 0x9, 3, 0), 1, false),
            (frame(0x0, 10, 0), 0, false),
            (frame(FIN, 10, 0), 1, true), // the last continuation
            (frame(FIN | 0xA, 125, 0), 1, true),
            // Nothing dozes after a close.
            (frame(FIN | 0x8, 2, 0), 1, false),
            (frame(FIN | 0x1, 5, 0), 1, false),
        ];
        let stream: Vec<u8> = parts.iter().flat_map(|p| p.0.clone()).collect();
        let mut ends = Vec::new();
        let mut at = 0;
        let mut messages = 0;
        for (f, m, between) in &parts {
            at += f.len();
            messages += m;
            ends.push((at, messages, *between));
        }
        for step in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut frames = Frames::default();
            let mut fed = 0;
            for chunk in stream.chunks(step) {
                frames.feed(chunk);
                fed += chunk.len();
                let here = ends.iter().find(|e| e.0 == fed);
                match here {
                    Some(&(_, m, between)) => {
                        assert_eq!(frames.between_messages(), between, "at {fed}, step {step}");
                        assert_eq!(frames.messages, m, "at {fed}, step {step}");
                    }
                    None => assert!(
                        !frames.between_messages(),
                        "inside a frame at {fed}, step {step}"
                    ),
                }
            }
            assert_eq!(fed, stream.len());
        }
    }
}
