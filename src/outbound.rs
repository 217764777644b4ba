//! A session's outbound queue: what other tasks (publishers, providers'
//! answers, revocation, shutdown) hand to a session for writing.
//!
//! Bounded: events past the bound are dropped and counted (the subscriber is
//! told with `event.lost` once it catches up); replies to the session's own
//! routed requests are bounded by the pending cap instead and never dropped.
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
use crate::rpc::Close;

/// What must still hold when a queued message is written.
#[derive(Debug, Clone, Copy)]
pub enum Guard {
    /// Written whatever happens (answers, notes).
    Always,
    /// A routed request with this gateway id: sent only while still pending
    /// (not timed out, its caller not gone).
    Routed(u64),
    /// An event: sent only while the session's rights satisfy this.
    Needs(Need),
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(Guard, Utf8Bytes)>,
    lost: u64,
    /// When events started being dropped without the session catching up.
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
}

impl Outbound {
    /// Queues an event unless `cap` messages already wait. A session that has
    /// not caught up for `stall` while events were being dropped is asked to
    /// close with 1008.
    pub fn push_event(&self, msg: Utf8Bytes, guard: Guard, cap: usize, stall: Duration) -> bool {
        self.push_bounded(msg, guard, cap, stall, "subscriber too slow")
    }

    /// Queues a routed request for a provider unless `cap` messages already
    /// wait; a provider that stays full for `stall` is closed with 1008.
    pub fn push_request(&self, msg: Utf8Bytes, gid: u64, cap: usize, stall: Duration) -> bool {
        self.push_bounded(msg, Guard::Routed(gid), cap, stall, "provider too slow")
    }

    fn push_bounded(
        &self,
        msg: Utf8Bytes,
        guard: Guard,
        cap: usize,
        stall: Duration,
        too_slow: &'static str,
    ) -> bool {
        let mut q = self.queue.lock();
        if q.close.is_some() {
            return false;
        }
        if q.items.len() >= cap {
            // A refused request is answered to its caller; only events are
            // lost to this session.
            if !matches!(guard, Guard::Routed(_)) {
                q.lost += 1;
            }
            let since = *q.dropping_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= stall {
                q.close = Some((Close::Policy, too_slow));
                drop(q);
                self.notify.notify_one();
            }
            return false;
        }
        q.items.push_back((guard, msg));
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Queues an answer the session is owed (never dropped).
    pub fn push_reply(&self, msg: Utf8Bytes) {
        let mut q = self.queue.lock();
        if q.close.is_some() {
            return;
        }
        q.items.push_back((Guard::Always, msg));
        drop(q);
        self.notify.notify_one();
    }

    /// Asks the session to close; the first request wins.
    pub fn close(&self, code: Close, reason: &'static str) {
        let mut q = self.queue.lock();
        if q.close.is_none() {
            q.close = Some((code, reason));
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Waits until something is queued or a close is asked for.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Moves everything queued into `out`; the caller checks each guard
    /// (outside this lock) before writing.
    pub fn drain(&self, out: &mut Vec<(Guard, Utf8Bytes)>) -> Drained {
        let mut q = self.queue.lock();
        out.extend(q.items.drain(..));
        let lost = std::mem::take(&mut q.lost);
        // Draining is catching up: the stall clock starts again at the next drop.
        q.dropping_since = None;
        if q.items.capacity() > 64 {
            q.items.shrink_to(16);
        }
        Drained {
            lost,
            close: q.close,
        }
    }
}
