//! The bounded hand-off between the aggregator (which pushes a batch each export period) and the
//! export thread. A push never waits: a full queue drops its oldest batch and counts it.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::stats::Counters;

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
}

struct State<T> {
    /// Oldest first; never longer than the capacity.
    items: VecDeque<T>,
    closed: bool,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Queued in place of the oldest batch (the queue was full).
    DroppedOldest,
    /// The export thread has stopped: nothing was queued.
    Closed,
}

impl<T> Queue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        debug_assert!(capacity > 0, "the builder refuses a zero capacity");
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    /// The lock is held for a few pointer moves only (no I/O, no encoding under it), by this
    /// pusher and the export thread: the aggregator waits for nothing longer.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding it cannot leave the deque half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`; a full queue loses its oldest item instead (every batch is cumulative, so
    /// the newest one carries everything the dropped one did).
    pub(crate) fn push(&self, item: T) -> Pushed {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Closed;
        }
        let pushed = if state.items.len() == self.capacity {
            state.items.pop_front();
            Pushed::DroppedOldest
        } else {
            Pushed::Queued
        };
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        pushed
    }

    /// Waits for an item and takes the newest, counting the older ones as superseded; `None`
    /// once the queue is closed and empty.
    pub(crate) fn take_newest(&self, counters: &Counters) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(newest) = state.items.pop_back() {
                let older = state.items.len() as u64;
                state.items.clear();
                counters.add_superseded(older);
                return Some(newest);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sleeps for `pause` unless the queue is closed first; whether it was closed.
    pub(crate) fn pause_unless_closed(&self, pause: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .ready
            .wait_timeout_while(state, pause, |s| !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        state.closed
    }

    /// No more pushes; the export thread sends what is queued (the newest) and stops.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_its_oldest_and_the_newest_is_taken() {
        let counters = Counters::default();
        let q = Queue::new(2);
        assert_eq!(q.push(1), Pushed::Queued);
        assert_eq!(q.push(2), Pushed::Queued);
        assert_eq!(q.push(3), Pushed::DroppedOldest);
        assert_eq!(q.take_newest(&counters), Some(3));
        assert_eq!(counters.snapshot().batches_superseded, 1);
        q.close();
        assert_eq!(q.push(4), Pushed::Closed);
        assert_eq!(q.take_newest(&counters), None);
        assert!(q.pause_unless_closed(Duration::from_secs(60)));
    }
}
