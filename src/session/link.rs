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
//! again ([`doze_if_drained`]) at a heartbeat tick and after a wake-up that
//! read only control frames (the peer's pong to that heartbeat). Rebuilding drops
//! tungstenite's state, so it is done only when that state is provably
//! empty: the write side is flushed (every branch of the session loop ends
//! with a flush), no close is under way, every byte tungstenite has read
//! from TLS belongs to a frame it has handed over, and rustls holds no
//! plaintext (which no socket readiness would announce). [`Transport`]
//! counts the bytes read; the session adds up each message's wire length
//! ([`Transport::received`]). A message that was fragmented, or framed with
//! a longer length field than needed, counts short, and then the link never
//! dozes again: safe, and only the memory a link held before it could doze.
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

/// The TLS stream under a session's WebSocket, counting the plaintext bytes
/// tungstenite has read from it and the wire bytes of the messages the
/// session has received. Empty only while [`rebuild`] moves it.
pub struct Transport {
    tls: Option<TlsStream<TcpStream>>,
    /// Plaintext bytes handed to tungstenite.
    read: u64,
    /// Wire bytes of the messages tungstenite handed over.
    framed: u64,
}

impl Transport {
    /// The TLS stream, with the bytes of it already read (and given to
    /// tungstenite as the partially read part).
    fn new(tls: TlsStream<TcpStream>, already_read: usize) -> Transport {
        Transport {
            tls: Some(tls),
            read: already_read as u64,
            framed: 0,
        }
    }

    /// Counts a message the session received from tungstenite, at its wire
    /// length as one frame with the shortest length field (as RFC 6455
    /// §5.2 asks), masked (as every client frame is).
    pub fn received(&mut self, msg: &Message) {
        let payload = match msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Close(c) => c.as_ref().map_or(0, |c| 2 + c.reason.len()),
            // Never read: leave the count short (no dozing).
            Message::Frame(_) => return,
        };
        let length_field = match payload {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        self.framed += (2 + length_field + 4 + payload) as u64;
    }

    /// True when tungstenite holds no byte of a frame it has not handed
    /// over, and rustls no plaintext tungstenite has not read (a burst cut
    /// short at its bound leaves some; the socket's readiness would never
    /// announce it).
    fn drained(&mut self) -> bool {
        self.read == self.framed && self.tls.as_mut().is_some_and(|t| buffered(t) == 0)
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
        self.read += buf.filled().len().saturating_sub(before) as u64;
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
    let transport = Transport::new(tls, rest.len());
    WebSocketStream::from_partially_read(
        transport,
        rest,
        Role::Server,
        Some(config.read_buffer_size(read_buffer)),
    )
    .await
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
        Transport::new(tls, 0),
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
