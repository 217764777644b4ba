//! One connection under load: requests pipelined closed-loop (a fixed
//! number in flight) or sent open-loop at a fixed rate, answers matched by
//! id, latency into a histogram.
//!
//! The open loop has no coordinated omission: request k is due at k / rate
//! whatever the answers do, and its latency counts from when it was due if
//! it left later (a stalled server or generator cannot hide queueing). The
//! timer ticks every 1 ms and fires up to a tick late, so each tick sends
//! what falls due before the *next* tick; one that leaves early counts from
//! when it left. The load is the same 1 ms batches either way; the timer's
//! lateness is just not charged to the server. How late requests left
//! (the generator's own stalls) is recorded as the send lag.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::net::{id_of, Ws};

/// How requests are offered.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Keep this many requests in flight.
    Closed { depth: usize },
    /// Send this many requests per second on this connection.
    Open { rate: f64 },
}

/// What one or more connections measured.
pub struct Stats {
    pub answered: u64,
    pub secs: f64,
    /// Latency in microseconds.
    pub hist: Histogram<u64>,
    /// Open loop: how late each request measured was sent after it was due,
    /// in microseconds (1 when on time or early; already part of `hist`).
    pub lag: Histogram<u64>,
}

impl Stats {
    pub fn new(secs: f64) -> Stats {
        Stats {
            answered: 0,
            secs,
            hist: new_hist(),
            lag: new_hist(),
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        self.answered += other.answered;
        let _ = self.hist.add(&other.hist);
        let _ = self.lag.add(&other.lag);
    }

    pub fn rate(&self) -> f64 {
        self.answered as f64 / self.secs.max(1e-9)
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// A quantile of the open loop's send lag in milliseconds.
    pub fn lag_ms(&self, q: f64) -> f64 {
        self.lag.value_at_quantile(q) as f64 / 1000.0
    }
}

pub fn new_hist() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Drives `ws` from `start` for `warmup + measure`; only answers that arrive
/// after the warm-up count. `request(id)` makes the text of request `id`.
pub async fn drive(
    mut ws: Ws,
    request: impl Fn(u64) -> String,
    load: Load,
    warmup: Duration,
    measure: Duration,
) -> Stats {
    let start = Instant::now();
    let from = start + warmup;
    let until = from + measure;
    let mut stats = Stats::new(measure.as_secs_f64());
    // id -> when the request was due.
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let mut next_id: u64 = 1;
    const TICK: Duration = Duration::from_millis(1);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    if let Load::Closed { depth } = load {
        for _ in 0..depth {
            if ws.feed(Message::text(request(next_id))).await.is_err() {
                return stats;
            }
            pending.insert(next_id, Instant::now());
            next_id += 1;
        }
        if ws.flush().await.is_err() {
            return stats;
        }
    }

    loop {
        let now = Instant::now();
        if now >= until && (pending.is_empty() || now >= until + Duration::from_secs(2)) {
            break;
        }
        tokio::select! {
            _ = tick.tick(), if matches!(load, Load::Open { .. }) => {
                let Load::Open { rate } = load else { continue };
                let now = Instant::now();
                if now >= until {
                    continue;
                }
                // Everything due before the next tick.
                let due = ((now + TICK).duration_since(start).as_secs_f64() * rate) as u64;
                let mut sent_any = false;
                while next_id <= due {
                    // Request k falls due at k / rate.
                    let intended = start + Duration::from_secs_f64(next_id as f64 / rate);
                    let leaves = Instant::now();
                    if intended >= from && intended < until {
                        let late = leaves.saturating_duration_since(intended);
                        let _ = stats.lag.record((late.as_micros() as u64).clamp(1, 600_000_000));
                    }
                    if ws.feed(Message::text(request(next_id))).await.is_err() {
                        return stats;
                    }
                    // Late: from when it was due; early: from when it left.
                    pending.insert(next_id, intended.min(leaves));
                    next_id += 1;
                    sent_any = true;
                }
                if sent_any && ws.flush().await.is_err() {
                    return stats;
                }
            }
            msg = ws.next() => {
                let mut next = match msg {
                    Some(Ok(m)) => Some(m),
                    _ => return stats,
                };
                let mut refill = 0usize;
                while let Some(m) = next.take() {
                    if let Message::Text(t) = &m {
                        if let Some(sent) = id_of(t.as_str()).and_then(|id| pending.remove(&id)) {
                            let now = Instant::now();
                            if now >= from && now <= until {
                                stats.answered += 1;
                                let us = now.duration_since(sent).as_micros().max(1) as u64;
                                let _ = stats.hist.record(us.min(600_000_000));
                            }
                            refill += 1;
                        }
                    }
                    if let Some(Some(Ok(m))) = ws.next().now_or_never() {
                        next = Some(m);
                    }
                }
                if let Load::Closed { .. } = load {
                    if Instant::now() < until {
                        for _ in 0..refill {
                            if ws.feed(Message::text(request(next_id))).await.is_err() {
                                return stats;
                            }
                            pending.insert(next_id, Instant::now());
                            next_id += 1;
                        }
                        if refill > 0 && ws.flush().await.is_err() {
                            return stats;
                        }
                    }
                }
            }
        }
    }
    let _ = ws.close(None).await;
    stats
}
