//! A bounded line in front of a scarce resource: at most `workers` holders
//! at once and at most `max_waiting` callers waiting for a turn; the one
//! after that is refused at once instead of queued. Used where one peer's
//! requests would otherwise pile up without bound (password hashing for
//! admin writes, the configuration writer).
//!
//! Owns only counts and a semaphore; must not know what the turn is for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Line {
    permits: Arc<Semaphore>,
    /// Waiting or holding a turn; bounded by `capacity`.
    entered: Arc<AtomicUsize>,
    capacity: usize,
}

/// A turn at the resource; the next caller's turn comes when it drops. It
/// owns what it holds, so it can move into a blocking task.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
    _entered: Entered,
}

/// Counted out on drop, so a caller that goes away while waiting is too.
struct Entered(Arc<AtomicUsize>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Line {
    /// `workers` turns at once, `max_waiting` callers waiting.
    pub fn new(workers: usize, max_waiting: usize) -> Line {
        let workers = workers.max(1);
        Line {
            permits: Arc::new(Semaphore::new(workers)),
            entered: Arc::new(AtomicUsize::new(0)),
            capacity: workers + max_waiting,
        }
    }

    /// A line of its own in front of workers other lines share: at most
    /// `max_waiting` of this line's callers wait or hold a turn.
    pub fn sharing(workers: Arc<Semaphore>, max_waiting: usize) -> Line {
        Line {
            permits: workers,
            entered: Arc::new(AtomicUsize::new(0)),
            capacity: max_waiting,
        }
    }

    /// Waits for a turn, or `None` at once when the line is full.
    pub async fn enter(&self) -> Option<Turn> {
        if self.entered.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.entered.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let entered = Entered(self.entered.clone());
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(Turn {
            _permit: permit,
            _entered: entered,
        })
    }

    /// Callers waiting or holding a turn now.
    pub fn len(&self) -> usize {
        self.entered.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_line_refuses_past_its_bound_and_frees_on_drop() {
        let line = Line::new(1, 1);
        let first = line.enter().await.unwrap();
        // The second waits for the first: poll it once so it stands in line.
        let mut second = Box::pin(line.enter());
        tokio::select! {
            biased;
            _ = &mut second => panic!("the second must wait"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(line.len(), 2);
        assert!(line.enter().await.is_none(), "the third is refused");
        drop(first);
        let second = second.await.unwrap();
        assert_eq!(line.len(), 1);
        drop(second);
        assert!(line.is_empty());
    }
}
