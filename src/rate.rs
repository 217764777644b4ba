//! A session's request budget: a token bucket refilled at
//! `[limits] requests_per_sec` up to `request_burst`, and the count of
//! refusals in a row after which the session is closed.
//!
//! Owned by one session and touched only by its own task: no atomics, and
//! the clock is read once per frame, not per request.

use std::time::Instant;

#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    last: Instant,
    refused_in_row: u32,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(burst: u32, now: Instant) -> RateLimit {
        RateLimit {
            tokens: f64::from(burst),
            last: now,
            refused_in_row: 0,
        }
    }

    /// Adds what `rate` per second earned since the last refill.
    pub fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * f64::from(rate);
        self.tokens = (self.tokens + earned).min(f64::from(burst));
        self.last = now;
    }

    /// Spends one request; false when the budget is gone.
    pub fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_row = 0;
            true
        } else {
            self.refused_in_row = self.refused_in_row.saturating_add(1);
            false
        }
    }

    /// Requests refused since the last one let through.
    pub fn refused_in_row(&self) -> u32 {
        self.refused_in_row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let t = Instant::now();
        let mut r = RateLimit::new(3, t);
        assert!(r.take() && r.take() && r.take());
        assert!(!r.take());
        assert!(!r.take());
        assert_eq!(r.refused_in_row(), 2);
        // 10 per second: 100 ms earns one.
        r.refill(t + Duration::from_millis(100), 10, 3);
        assert!(r.take());
        assert_eq!(r.refused_in_row(), 0);
        assert!(!r.take());
        // Never more than the burst.
        r.refill(t + Duration::from_secs(100), 10, 3);
        assert!(r.take() && r.take() && r.take());
        assert!(!r.take());
    }
}
