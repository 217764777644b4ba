//! One WebSocket session: its loop, its heartbeat and authentication
//! deadline, the outbound queue other tasks write to, and how it closes
//! (close frame, half-close, a bounded read of what the peer still sends).
//!
//! The loop reads every frame already received, answers each (through
//! `dispatch`), then flushes once; it never blocks on another session. It
//! must not decide rights itself: `dispatch` asks the catalog's gate.

pub use crate::{outbound, rate};
pub use link::{Transport, Ws};

pub mod link;

use outbound::Guard;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::Instrument;

use crate::catalog;
use crate::dispatch::{self, Ctx};
use crate::gateway::{Gateway, Ticket};
use crate::hub::SessionHandle;
use crate::rpc::Close;

/// Frames answered before one flush; bounds the work one wake-up can do.
const MAX_BURST: usize = 64;
/// The most a close takes: writing the close frame, then reading what the
/// peer still sends (PROTOCOL.md §10). Shutdown waits no longer than this.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// The most a closing session reads (and discards) from a peer still sending.
pub const LINGER_BYTES: usize = 4 << 20;

/// Runs a session to its end and removes it from the hub.
/// `ws` comes boxed: moved by value through `run` and `drive`, the stream
/// (1.5 KiB) would take room in the task once per move.
pub async fn run(gw: Arc<Gateway>, ws: Box<Ws>, handle: Arc<SessionHandle>, ticket: Ticket) {
    let span = tracing::info_span!(
        "session",
        id = %handle.id_string(),
        peer = %handle.peer,
        endpoint = handle.endpoint.name(),
        user = tracing::field::Empty,
    );
    if let Some(user) = handle.user() {
        span.record("user", &**user);
    }
    let _open = gw.metrics.session_opened(handle.endpoint);
    let (burst, write_stall) = {
        let snap = gw.snapshot();
        let l = &snap.config.limits;
        (l.request_burst, Duration::from_secs(l.write_stall_secs))
    };
    let mut session = Session {
        gw: gw.clone(),
        handle: handle.clone(),
        ticket,
        out: Vec::new(),
        rate: rate::RateLimit::new(burst, std::time::Instant::now()),
        write_stall,
        read_at: std::time::Instant::now(),
        woken: false,
        grown: false,
        dozing: None,
        unfinished: None,
    };
    // Ends the session everywhere even if its task unwinds: a leaked hub
    // entry would hold the user's session count forever.
    struct Ending(Arc<Gateway>, Arc<SessionHandle>);
    impl Drop for Ending {
        fn drop(&mut self) {
            self.0.end_session(&self.1);
        }
    }
    let _ending = Ending(gw, handle);
    session.drive(ws).instrument(span).await;
}

struct Session {
    gw: Arc<Gateway>,
    handle: Arc<SessionHandle>,
    ticket: Ticket,
    /// The reply being built: reused for every frame of a wake-up, freed
    /// when the wake-up's frames are answered (an idle session holds no
    /// reply buffer).
    out: Vec<u8>,
    rate: rate::RateLimit,
    /// How long a write may wait on a peer that reads nothing.
    write_stall: Duration,
    /// When the frames being answered were read (this wake-up).
    read_at: std::time::Instant,
    /// The link woke from dozing and has read only control frames since (a
    /// pong to the heartbeat is not activity): it dozes again at once.
    woken: bool,
    /// A message larger than the link's read buffer went through this
    /// wake-up, so tungstenite's buffers grew: they are given back as soon
    /// as the wake-up is done, not at the next heartbeat tick.
    grown: bool,
    /// Counts the session in `sessions_dozing` while its link dozes.
    dozing: Option<crate::metrics::Dozing>,
    /// The fragmented message in progress at the last heartbeat, if any.
    unfinished: Option<u64>,
}

/// Why the loop ended.
enum End {
    /// Send this close frame.
    Close(Close, &'static str),
    /// The transport is gone or unusable; just drop it.
    Drop,
}

impl Session {
    async fn drive(&mut self, mut ws: Box<Ws>) {
        self.count_dozing(&ws);
        let end = self.serve(&mut ws).await;
        if let End::Close(code, reason) = end {
            if code == Close::ShuttingDown {
                // Answer what the peer already sent before saying goodbye.
                self.read_at = std::time::Instant::now();
                if self.wake(&mut ws).await {
                    let _ = self.burst(&mut ws, None).await;
                }
            }
            let frame = CloseFrame {
                code: CloseCode::from(code.code()),
                reason: Utf8Bytes::from_static(reason),
            };
            let closing = async {
                ws.as_mut().close(Some(frame)).await.ok()?;
                linger(ws.get_mut()).await;
                Some(())
            };
            let _ = tokio::time::timeout(CLOSE_LINGER, closing).await;
            // A policy close (too slow, revoked, rate limited) is worth an
            // operator's attention; the routine ones are not.
            if code == Close::Policy {
                tracing::info!(code = code.code(), reason, "session closed");
            } else {
                tracing::debug!(code = code.code(), reason, "session closed");
            }
        }
    }

    async fn serve(&mut self, ws: &mut Ws) -> End {
        let (heartbeat, auth_timeout) = {
            let snap = self.gw.snapshot();
            (
                Duration::from_secs(snap.config.heartbeat_secs),
                Duration::from_secs(snap.config.auth_timeout_secs),
            )
        };
        let started = Instant::now();
        let auth_deadline = started + auth_timeout;
        let mut last_seen = started;
        let mut next_ping = started + heartbeat;
        let timer = tokio::time::sleep_until(self.next_wake(next_ping, auth_deadline));
        tokio::pin!(timer);
        let mut queued = Vec::new();
        let mut timed = Vec::new();
        let handle = self.handle.clone();
        loop {
            tokio::select! {
                biased;
                () = handle.outbound.ready() => {
                    let drained = self.handle.outbound.drain(&mut queued);
                    self.gw.metrics.outbound_drained(queued.len());
                    for (guard, msg) in queued.drain(..) {
                        // Checked as each is written: a write may wait on the
                        // peer, and a revocation may land meanwhile.
                        let still = match guard {
                            Guard::Always | Guard::Answer(_) => true,
                            // Timed out or its caller gone: not worth sending.
                            // And the provider must still hold what it needs.
                            Guard::Routed(gid, need, _) => {
                                self.gw.router.is_pending(gid)
                                    && self
                                        .handle
                                        .rights()
                                        .is_some_and(|r| catalog::satisfies(r, need))
                            }
                            Guard::Needs(need) => self
                                .handle
                                .rights()
                                .is_some_and(|r| catalog::satisfies(r, need)),
                        };
                        if !still {
                            continue;
                        }
                        if let Some(t) = guard.timed() {
                            timed.push(t);
                        }
                        self.grown |= msg.len() > link::READ_BUFFER;
                        // A close asked for while the peer reads nothing cannot
                        // get through either: give up on the write then.
                        if !unless_closing(write(ws, Message::Text(msg), self.write_stall), &handle).await {
                            return End::Drop;
                        }
                    }
                    if drained.lost > 0 {
                        let note = crate::rpc::notification("event.lost", &serde_json::json!({ "count": drained.lost }));
                        if !write(ws, Message::text(note), self.write_stall).await {
                            return End::Drop;
                        }
                    }
                    if let Some((code, reason)) = drained.close {
                        return End::Close(code, reason);
                    }
                    if !unless_closing(flush(ws, self.write_stall), &handle).await {
                        return End::Drop;
                    }
                    self.handle.outbound.written();
                    // Written means flushed to the socket: one clock read
                    // for the chunk.
                    if !timed.is_empty() {
                        let now = std::time::Instant::now();
                        for (leg, read) in timed.drain(..) {
                            self.gw.metrics.routed_added(leg, now.saturating_duration_since(read).as_secs_f64());
                        }
                    }
                    // Not when the link has just woken to read what came:
                    // it would doze again before reading it.
                    if !self.woken && std::mem::take(&mut self.grown) && !self.doze(ws).await {
                        return End::Drop;
                    }
                }
                incoming = link::incoming(ws) => {
                    let first = match incoming {
                        link::Incoming::Frame(Some(first)) => first,
                        link::Incoming::Frame(None) => return End::Drop,
                        // Bytes for a dozing link: read them awake.
                        link::Incoming::Readable => {
                            if !self.wake(ws).await {
                                return End::Drop;
                            }
                            self.woken = true;
                            continue;
                        }
                    };
                    last_seen = Instant::now();
                    self.read_at = last_seen.into_std();
                    // The request budget refills once per wake-up, on the
                    // clock already read: not once per frame.
                    // And the write stall follows reloads, on the same read.
                    {
                        let snap = self.gw.snapshot();
                        let l = &snap.config.limits;
                        self.rate.refill(last_seen.into_std(), l.requests_per_sec, l.request_burst);
                        self.write_stall = Duration::from_secs(l.write_stall_secs);
                    }
                    let was_authenticated = self.handle.rights().is_some();
                    if let Some(end) = self.burst(ws, Some(first)).await {
                        return end;
                    }
                    if !flush(ws, self.write_stall).await {
                        return End::Drop;
                    }
                    let doze = std::mem::take(&mut self.woken) | std::mem::take(&mut self.grown);
                    if doze && !self.doze(ws).await {
                        return End::Drop;
                    }
                    // Only the login moves the timer (off the auth deadline):
                    // resetting it per message would cost a timer-wheel update each.
                    if !was_authenticated && self.handle.rights().is_some() {
                        timer.as_mut().reset(self.next_wake(next_ping, auth_deadline));
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    self.write_stall = Duration::from_secs(self.gw.snapshot().config.limits.write_stall_secs);
                    if self.handle.rights().is_none() && now >= auth_deadline {
                        return End::Close(Close::Policy, "authentication timeout");
                    }
                    if now >= next_ping {
                        if now.duration_since(last_seen) >= heartbeat * 2 {
                            tracing::info!("peer silent for two heartbeats; dropping");
                            return End::Drop;
                        }
                        // The same fragmented message still unfinished a
                        // heartbeat later, the peer answering pings between
                        // its fragments: what it sent so far is held for
                        // nothing (up to max_message_bytes), so it goes.
                        let unfinished = link::unfinished(ws);
                        if unfinished.is_some() && unfinished == self.unfinished {
                            return End::Close(Close::Policy, "message left unfinished");
                        }
                        self.unfinished = unfinished;
                        if !write(ws, Message::Ping(Default::default()), self.write_stall).await || !flush(ws, self.write_stall).await {
                            return End::Drop;
                        }
                        next_ping = now + heartbeat;
                    }
                    // Quiet or not, a tick is a cheap moment to give back
                    // what tungstenite's buffers grew to: everything
                    // written is flushed here.
                    if !self.doze(ws).await {
                        return End::Drop;
                    }
                    timer.as_mut().reset(self.next_wake(next_ping, auth_deadline));
                }
            }
        }
    }

    /// `link::wake`, counted in `sessions_dozing`.
    async fn wake(&mut self, ws: &mut Ws) -> bool {
        let ok = link::wake(ws).await;
        self.count_dozing(ws);
        ok
    }

    /// `link::doze_if_drained`, counted in `sessions_dozing`.
    async fn doze(&mut self, ws: &mut Ws) -> bool {
        let ok = link::doze_if_drained(ws).await;
        self.count_dozing(ws);
        // Dozing again (at a tick, say), the link is no longer one that
        // has just woken: a large write from the queue may doze it.
        if link::dozing(ws) {
            self.woken = false;
        }
        ok
    }

    /// Keeps `sessions_dozing` in step with the link.
    fn count_dozing(&mut self, ws: &Ws) {
        match (link::dozing(ws), self.dozing.is_some()) {
            (true, false) => self.dozing = Some(self.gw.metrics.dozing()),
            (false, true) => self.dozing = None,
            _ => {}
        }
    }

    fn next_wake(&self, next_ping: Instant, auth_deadline: Instant) -> Instant {
        if self.handle.rights().is_none() {
            next_ping.min(auth_deadline)
        } else {
            next_ping
        }
    }

    /// Handles `next` (if any) and every further frame already received, up
    /// to `MAX_BURST`, feeding answers without flushing. The reply buffer
    /// lives for the wake-up only (an idle session holds none). One
    /// function, and only a frame's text kept across the await: the
    /// session's future has room for every value alive there, idle or not.
    async fn burst(
        &mut self,
        ws: &mut Ws,
        mut next: Option<Result<Message, WsError>>,
    ) -> Option<End> {
        self.out = Vec::with_capacity(256);
        let end = 'frames: {
            for _ in 0..MAX_BURST {
                let text = {
                    let item = match next.take() {
                        Some(item) => item,
                        None => match ws.next().now_or_never() {
                            Some(Some(item)) => item,
                            Some(None) => break 'frames Some(End::Drop),
                            None => break 'frames None,
                        },
                    };
                    let msg = match item {
                        Ok(msg) => msg,
                        Err(e) => break 'frames Some(close_for(&e)),
                    };
                    ws.get_mut().received(&msg);
                    match self.text_of(msg) {
                        Ok(text) => text,
                        Err(None) => continue,
                        Err(Some(end)) => break 'frames Some(end),
                    }
                };
                if let Some(end) = self.on_text(ws, text).await {
                    break 'frames Some(end);
                }
            }
            None
        };
        self.out = Vec::new();
        end
    }

    /// A data frame's text; `Err(None)` for a control frame (tungstenite
    /// answers pings and closes itself; the stream then ends after a close).
    fn text_of(&mut self, msg: Message) -> Result<Utf8Bytes, Option<End>> {
        match msg {
            Message::Text(text) => {
                self.woken = false;
                self.grown |= text.len() > link::READ_BUFFER;
                Ok(text)
            }
            Message::Binary(_) => Err(Some(End::Close(
                Close::BinaryFrame,
                "binary frames are not supported",
            ))),
            Message::Close(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                Err(None)
            }
        }
    }

    async fn on_text(&mut self, ws: &mut Ws, text: Utf8Bytes) -> Option<End> {
        let was_authenticated = self.handle.rights().is_some();
        self.out.clear();
        let mut ctx = Ctx::new(&self.gw, &self.handle, &mut self.rate);
        ctx.read_at = Some(self.read_at);
        dispatch::frame(&mut ctx, text.as_str(), &mut self.out).await;
        let close = ctx.close;
        if !was_authenticated && self.handle.rights().is_some() {
            self.ticket.authenticated();
            if let Some(user) = self.handle.user() {
                tracing::Span::current().record("user", &**user);
            }
        }
        self.grown |= self.out.len() > link::READ_BUFFER;
        if !self.out.is_empty() {
            // An exactly sized copy: the message then owns its bytes without
            // the extra shared header a partly filled buffer would need.
            let reply = String::from_utf8(self.out.as_slice().to_vec()).unwrap_or_default();
            if !write(ws, Message::text(reply), self.write_stall).await {
                return Some(End::Drop);
            }
        }
        close.map(|(code, reason)| End::Close(code, reason))
    }
}

/// After the close frame: half-close (TLS close_notify, then TCP FIN) and
/// read and discard what the peer still sends until it closes too or
/// `LINGER_BYTES` have come (the caller bounds the time). Dropping a socket
/// with unread bytes makes the kernel send a reset, and a peer still sending
/// (the rest of a message too big, a flood) may then never read the close
/// frame: RFC 6455 §7.1.1, nginx's lingering close. The bytes are read
/// from the TCP socket below TLS: nothing in them is used, so nothing is
/// decrypted.
async fn linger(tls: &mut Transport) {
    if tls.shutdown().await.is_err() {
        return;
    }
    let Some(tcp) = tls.tcp() else { return };
    let mut buf = vec![0u8; 16 * 1024];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Runs a write or flush (`io`), giving up as soon as a close is asked for
/// while it waits: a peer that reads nothing would never take the close
/// frame either. Ready writes never see the close (biased).
async fn unless_closing(io: impl Future<Output = bool>, handle: &SessionHandle) -> bool {
    tokio::select! {
        biased;
        ok = io => ok,
        () = handle.outbound.closing() => {
            let reason = handle.outbound.pending_close().map_or("", |c| c.1);
            tracing::info!(reason, "closed while the peer reads nothing; connection dropped");
            false
        }
    }
}

/// Queues a message (writing out when the buffer is full), giving up on a
/// peer that reads nothing for `stall` (`[limits] write_stall_secs`).
fn write(ws: &mut Ws, msg: Message, stall: Duration) -> impl Future<Output = bool> + '_ {
    within(ws.feed(msg), stall)
}

/// Flushes, giving up on a peer that reads nothing for `stall`.
fn flush(ws: &mut Ws, stall: Duration) -> impl Future<Output = bool> + '_ {
    within(ws.flush(), stall)
}

/// Runs a write or a flush to success within `stall`. Nearly always done
/// on the first poll (a feed only buffers, the socket takes a flush): then
/// no deadline is set, so no clock is read. The deadline's timer is boxed:
/// the session's future keeps room for every state it can be in, idle or
/// not, and a timer it rarely needs would be part of it.
async fn within<F>(mut io: F, stall: Duration) -> bool
where
    F: Future<Output = Result<(), WsError>> + Unpin,
{
    if let Some(done) = (&mut io).now_or_never() {
        return done.is_ok();
    }
    matches!(Box::pin(tokio::time::timeout(stall, io)).await, Ok(Ok(())))
}

/// The close a read error calls for.
fn close_for(e: &WsError) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            End::Close(Close::TooBig, "message too big")
        }
        WsError::Capacity(_) => End::Close(Close::TooBig, "frame too big"),
        WsError::Utf8(_) => End::Close(Close::InvalidUtf8, "invalid UTF-8 in text frame"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Drop,
        WsError::Protocol(_) => End::Close(Close::Protocol, "protocol error"),
        _ => End::Drop,
    }
}
