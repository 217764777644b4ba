//! A session's outbound queue: what other tasks (publishers, providers'
//! answers, revocation, shutdown) hand to a session for writing.
//!
//! Bounded in messages and in bytes: events past the bound are dropped and
//! counted (the subscriber is told with `event.lost` once it catches up),
//! routed requests past it are refused to their callers; replies to the
//! session's own routed requests are bounded by the pending cap instead and
//! never dropped. The session takes at most `DRAIN_CHUNK` messages at a time;
//! the chunk it is writing counts against the byte bound until it says the
//! chunk is written ([`Outbound::written`]), so what it holds while a slow
//! peer reads counts too.
//! A close request wins over everything queued after it. Costs nothing until
//! used (an empty `VecDeque` does not allocate).
//!
//! Each message carries a `Guard`: what must still hold when the session
//! writes it. An event needs its right at delivery time, not only when it
//! was queued; a routed request is sent only while its caller still waits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::catalog::Need;
use crate::metrics::Leg;
use crate::rpc::Close;

/// What must still hold when a queued message is written.
#[derive(Debug, Clone, Copy)]
pub enum Guard {
    /// Written whatever happens (answers, notes).
    Always,
    /// A routed provider's answer, written whatever happens; it was read
    /// from the provider at this instant (the answer leg of the time the
    /// gateway adds, `routed_added_seconds`).
    Answer(Instant),
    /// A routed request with this gateway id: sent only while still pending
    /// (not timed out, its caller not gone) and while the provider still
    /// holds what the operation needs. Its caller's frame was read at the
    /// instant (the request leg of `routed_added_seconds`).
    Routed(u64, Need, Instant),
    /// An event: sent only while the session's rights satisfy this.
    Needs(Need),
}

impl Guard {
    /// The leg this message ends and when it started, if it is timed.
    pub fn timed(&self) -> Option<(Leg, Instant)> {
        match *self {
            Guard::Routed(_, _, read) => Some((Leg::Request, read)),
            Guard::Answer(read) => Some((Leg::Answer, read)),
            Guard::Always | Guard::Needs(_) => None,
        }
    }
}

/// Messages the session takes from the queue in one go.
pub const DRAIN_CHUNK: usize = 64;

/// The bounds of one push: messages, bytes, and how long the queue may stay
/// full before the session is closed.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub messages: usize,
    pub bytes: usize,
    pub stall: Duration,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(Guard, Utf8Bytes)>,
    /// Bytes of the messages in `items`.
    bytes: usize,
    /// Bytes of the chunk the session took last and has not finished
    /// writing: held all the same, so they count against the bound.
    writing: usize,
    lost: u64,
    /// When messages started being refused without the session emptying
    /// its queue since.
    dropping_since: Option<Instant>,
    close: Option<(Close, &'static str)>,
}

/// What the session loop takes in one go.
pub struct Drained {
    pub lost: u64,
    pub close: Option<(Close, &'static str)>,
}

#[derive(Default)]
pub struct Outbound {
    queue: Mutex<Queue>,
    notify: Notify,
    /// Signalled once a close is asked for: a write blocked on a peer that
    /// reads nothing gives up then instead of at the write stall.
    closing: Notify,
}

impl Outbound {
    /// Queues an event unless the queue is at `bound`. A session that has
    /// not emptied its queue for `bound.stall` while events were being
    /// dropped is asked to close with 1008.
    pub fn push_event(&self, msg: Utf8Bytes, guard: Guard, bound: Bound) -> bool {
        self.push_bounded(msg, guard, bound, "subscriber too slow")
    }

    /// Queues a routed request for a provider unless the queue is at
    /// `bound`; a provider that stays full for `bound.stall` is closed with
    /// 1008. `need`: what the provider must still hold when it is written;
    /// `read`: when the caller's frame was read.
    pub fn push_request(
        &self,
        msg: Utf8Bytes,
        gid: u64,
        need: Need,
        read: Instant,
        bound: Bound,
    ) -> bool {
        self.push_bounded(
            msg,
            Guard::Routed(gid, need, read),
            bound,
            "provider too slow",
        )
    }

    fn push_bounded(
        &self,
        msg: Utf8Bytes,
        guard: Guard,
        bound: Bound,
        too_slow: &'static str,
    ) -> bool {
        let mut q = self.queue.lock();
        if q.close.is_some() {
            return false;
        }
        let held = q.bytes.saturating_add(q.writing);
        if q.items.len() >= bound.messages || held.saturating_add(msg.len()) > bound.bytes {
            // A refused request is answered to its caller; only events are
            // lost to this session.
            if !matches!(guard, Guard::Routed(..)) {
                q.lost += 1;
            }
            let since = *q.dropping_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= bound.stall {
                q.close = Some((Close::Policy, too_slow));
                drop(q);
                self.notify.notify_one();
                self.closing.notify_one();
            }
            return false;
        }
        let was_empty = q.items.is_empty();
        q.bytes += msg.len();
        q.items.push_back((guard, msg));
        drop(q);
        self.wake_if(was_empty);
        true
    }

    /// Wakes the session for a message pushed onto an empty queue. Onto a
    /// non-empty one there is no need: the push that made the queue
    /// non-empty woke it, and `drain` wakes it again whenever it leaves
    /// messages behind, so a wake-up is already owed until the queue is
    /// empty. (One `notify_one` per event per subscriber was the largest
    /// item of the fan-out profile.)
    fn wake_if(&self, was_empty: bool) {
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Queues an answer the session is owed (never dropped); `read`: when
    /// a routed provider's answer was read, to time the answer leg.
    pub fn push_reply(&self, msg: Utf8Bytes, read: Option<Instant>) {
        let mut q = self.queue.lock();
        if q.close.is_some() {
            return;
        }
        let was_empty = q.items.is_empty();
        q.bytes += msg.len();
        q.items
            .push_back((read.map_or(Guard::Always, Guard::Answer), msg));
        drop(q);
        self.wake_if(was_empty);
    }

    /// Asks the session to close; the first request wins.
    pub fn close(&self, code: Close, reason: &'static str) {
        let mut q = self.queue.lock();
        if q.close.is_none() {
            q.close = Some((code, reason));
        }
        drop(q);
        self.notify.notify_one();
        self.closing.notify_one();
    }

    /// The close asked for, if any.
    pub fn pending_close(&self) -> Option<(Close, &'static str)> {
        self.queue.lock().close
    }

    /// Completes once a close has been asked for (at once if one was asked
    /// for since the session last checked).
    pub async fn closing(&self) {
        self.closing.notified().await;
    }

    /// Waits until something is queued or a close is asked for.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Moves up to `DRAIN_CHUNK` queued messages into `out`; the caller
    /// checks each guard (outside this lock) before writing. When more wait,
    /// the session is woken again at once.
    pub fn drain(&self, out: &mut Vec<(Guard, Utf8Bytes)>) -> Drained {
        let mut q = self.queue.lock();
        let n = q.items.len().min(DRAIN_CHUNK);
        let before = out.len();
        out.extend(q.items.drain(..n));
        let taken: usize = out
            .get(before..)
            .map_or(0, |t| t.iter().map(|(_, m)| m.len()).sum());
        q.bytes = q.bytes.saturating_sub(taken);
        q.writing = taken;
        let more = !q.items.is_empty();
        let lost = std::mem::take(&mut q.lost);
        if !more {
            // Caught up: the stall clock starts again at the next refusal
            // (PROTOCOL §8.4: each drain that empties the queue restarts it).
            q.dropping_since = None;
            if q.items.capacity() > 64 {
                q.items.shrink_to(16);
            }
        }
        // A close wins over what is still queued.
        let close = q.close;
        drop(q);
        if more {
            self.notify.notify_one();
        }
        Drained { lost, close }
    }

    /// The session has written (and flushed) the chunk it took last: its
    /// bytes no longer count against the bound.
    pub fn written(&self) {
        self.queue.lock().writing = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: Need = Need::Authenticated;

    fn bound(messages: usize, bytes: usize) -> Bound {
        Bound {
            messages,
            bytes,
            stall: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_as_well_as_in_messages() {
        let q = Outbound::default();
        let kib = Utf8Bytes::from("x".repeat(1024));
        for gid in 0..4 {
            assert!(q.push_request(kib.clone(), gid, ANY, Instant::now(), bound(100, 4096)));
        }
        assert!(
            !q.push_request(kib.clone(), 9, ANY, Instant::now(), bound(100, 4096)),
            "past 4 KiB"
        );
        assert!(
            !q.push_event(kib.clone(), Guard::Always, bound(4, 1 << 20)),
            "past 4 messages"
        );
        let mut out = Vec::new();
        q.drain(&mut out);
        assert_eq!(out.len(), 4);
        assert!(
            !q.push_request(kib.clone(), 10, ANY, Instant::now(), bound(100, 4096)),
            "the chunk being written still counts"
        );
        q.written();
        assert!(
            q.push_request(kib, 11, ANY, Instant::now(), bound(100, 4096)),
            "room again once it is written"
        );
    }

    /// Only a push onto an empty queue wakes the session, yet no message
    /// is ever left without a wake-up owed for it.
    #[test]
    fn every_queued_message_has_a_wake_up_owed() {
        use futures_util::FutureExt;
        let q = Outbound::default();
        let b = bound(1000, 1 << 20);
        assert!(q.ready().now_or_never().is_none(), "nothing queued yet");
        assert!(q.push_event(Utf8Bytes::from("a"), Guard::Always, b));
        q.push_reply(Utf8Bytes::from("b"), None);
        assert!(q.ready().now_or_never().is_some(), "woken once for both");
        assert!(q.ready().now_or_never().is_none(), "and only once");
        let mut out = Vec::new();
        q.drain(&mut out);
        assert_eq!(out.len(), 2);
        // More than a chunk: the drain that leaves some behind wakes again.
        for _ in 0..DRAIN_CHUNK + 1 {
            assert!(q.push_event(Utf8Bytes::from("e"), Guard::Always, b));
        }
        assert!(q.ready().now_or_never().is_some());
        q.drain(&mut out);
        assert!(q.ready().now_or_never().is_some(), "one left behind");
        q.drain(&mut out);
        assert_eq!(out.len(), 2 + DRAIN_CHUNK + 1);
        assert!(q.ready().now_or_never().is_none(), "caught up");
        // Empty again: the next push wakes.
        q.push_reply(Utf8Bytes::from("c"), None);
        assert!(q.ready().now_or_never().is_some());
    }

    #[test]
    fn the_session_takes_a_chunk_at_a_time_and_the_stall_clock_runs_until_it_catches_up() {
        let q = Outbound::default();
        let b = Bound {
            messages: 1000,
            bytes: 1 << 20,
            stall: Duration::ZERO,
        };
        for _ in 0..DRAIN_CHUNK + 10 {
            assert!(q.push_event(Utf8Bytes::from("e"), Guard::Always, b));
        }
        let mut out = Vec::new();
        let first = q.drain(&mut out);
        assert_eq!(out.len(), DRAIN_CHUNK);
        assert!(first.close.is_none());
        // Still behind: a refusal now (stall zero) closes it, though it drained.
        let full = Bound { messages: 10, ..b };
        assert!(!q.push_event(Utf8Bytes::from("e"), Guard::Always, full));
        let second = q.drain(&mut out);
        assert_eq!(out.len(), DRAIN_CHUNK + 10);
        assert_eq!(second.close.map(|c| c.1), Some("subscriber too slow"));
    }
}
