//! Counts over the last minute, for `admin.status` (Prometheus has the
//! totals; an operator's page wants "how many just now" without a query
//! language). Sixty one-second buckets; a bucket older than the window is
//! reset when its second comes round again.
//!
//! Must not allocate or block for long: it is on the login path.

use std::time::Instant;

use parking_lot::Mutex;

/// The window's length in seconds.
pub const SECS: u64 = 60;

/// Successes and failures in the last [`SECS`] seconds.
pub struct LastMinute {
    start: Instant,
    /// Per bucket: the second it holds (since `start`), successes, failures.
    buckets: Mutex<[(u64, u64, u64); SECS as usize]>,
}

impl Default for LastMinute {
    fn default() -> Self {
        LastMinute {
            start: Instant::now(),
            buckets: Mutex::new([(u64::MAX, 0, 0); SECS as usize]),
        }
    }
}

impl LastMinute {
    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// Counts one success (`ok`) or failure now.
    pub fn count(&self, ok: bool) {
        self.count_at(self.now(), ok);
    }

    fn count_at(&self, second: u64, ok: bool) {
        let mut b = self.buckets.lock();
        let slot = &mut b[(second % SECS) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        if ok {
            slot.1 += 1;
        } else {
            slot.2 += 1;
        }
    }

    /// (successes, failures) in the last [`SECS`] seconds, this one included.
    pub fn totals(&self) -> (u64, u64) {
        self.totals_at(self.now())
    }

    fn totals_at(&self, now: u64) -> (u64, u64) {
        let b = self.buckets.lock();
        b.iter()
            .filter(|(second, _, _)| *second <= now && now - *second < SECS)
            .fold((0, 0), |(ok, failed), (_, o, f)| (ok + o, failed + f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leave_the_window_after_a_minute() {
        let w = LastMinute::default();
        w.count_at(0, true);
        w.count_at(0, false);
        w.count_at(30, false);
        assert_eq!(w.totals_at(30), (1, 2));
        assert_eq!(w.totals_at(59), (1, 2));
        assert_eq!(w.totals_at(60), (0, 1), "second 0 has left");
        // Second 90 reuses second 30's bucket: the old count is gone.
        w.count_at(90, true);
        assert_eq!(w.totals_at(90), (1, 0));
        assert_eq!(w.totals_at(200), (0, 0));
    }
}
