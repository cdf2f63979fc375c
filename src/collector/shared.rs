//! What the handle, the aggregator thread and registering producer threads share.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

use super::builder::Extensions;
use super::globals::NEXT_RING_ID;
use crate::aggregator::{Handover, ThreadRing};
use crate::handoff::Handoff;
use crate::record::Record;
use crate::recorder::ThreadShared;
use crate::ring::{Producer, ring};
use crate::sink::Sink;
use crate::stats::Snapshot;

/// State shared by the handle, the aggregator thread and registering producer threads.
pub(crate) struct CollectorShared {
    pub(crate) generation: u64,
    pub(super) ring_capacity: usize,
    pub(super) stage_cap: usize,
    /// New rings on their way to the aggregator; closed before its final drain.
    pub(crate) pending: Handoff<ThreadRing>,
    /// Sinks added to the running collector, taken by the aggregator at its next cycle.
    pub(crate) added_sinks: Mutex<Vec<Box<dyn Sink>>>,
    /// Whether a registering thread's name is copied (a sink reads records).
    pub(super) thread_names: bool,
    pub(super) extensions: Extensions,
    /// When it was installed (a profile's start).
    pub(super) installed_at: std::time::SystemTime,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(super) thread: OnceLock<Thread>,
    pub(crate) stop: AtomicBool,
    pub(crate) flush_requested: AtomicU64,
    pub(crate) flush_done: Mutex<u64>,
    pub(crate) flush_cv: Condvar,
    /// Set by an install replacing this collector: its aggregator leaves its figures in
    /// `handover` as it stops.
    pub(crate) hand_over: AtomicBool,
    pub(crate) handover: Mutex<Option<Handover>>,
    #[cfg(feature = "test-util")]
    pub(crate) inject_panic: AtomicBool,
}

impl CollectorShared {
    /// Creates this thread's ring and sampling counters and hands the consumer to the aggregator:
    /// the allocations of a thread's first record, none after.
    pub(crate) fn register_thread(
        &self,
    ) -> Option<(Producer<Record>, std::sync::Arc<ThreadShared>, u64)> {
        let (producer, consumer) = ring::<Record>(self.ring_capacity);
        let shared = std::sync::Arc::new(ThreadShared::new(self.stage_cap));
        // Process-wide, so span ids stay unique across collectors (a guard may outlive one).
        let ring_id = NEXT_RING_ID.fetch_add(1, Ordering::Relaxed) + 1;
        let ring = ThreadRing::new(
            consumer,
            shared.clone(),
            self.stage_cap,
            ring_id,
            self.thread_names,
        );
        // Refused once the aggregator has made its final drain: no ring may join after that.
        self.pending.register(ring).ok()?;
        Some((producer, shared, ring_id))
    }

    /// Wakes the aggregator early.
    pub(crate) fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        if !crate::COMPILED_IN {
            return false; // no aggregator to run a cycle
        }
        if self
            .thread
            .get()
            .is_some_and(|t| t.id() == std::thread::current().id())
        {
            return false; // called from an SLA callback: the aggregator cannot wait for itself
        }
        let ticket = self.flush_requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake();
        let deadline = std::time::Instant::now() + timeout;
        let mut done = self.flush_done.lock();
        while *done < ticket {
            if self.flush_cv.wait_until(&mut done, deadline).timed_out() {
                return *done >= ticket;
            }
        }
        true
    }
}

impl CollectorShared {
    /// A collector's shared state before its aggregator starts.
    pub(super) fn new(
        generation: u64,
        ring_capacity: usize,
        stage_cap: usize,
        thread_names: bool,
        extensions: Extensions,
        windows: Vec<crate::stats::Window>,
    ) -> Self {
        Self {
            generation,
            ring_capacity,
            stage_cap,
            pending: Handoff::new(),
            added_sinks: Mutex::new(Vec::new()),
            thread_names,
            extensions,
            installed_at: std::time::SystemTime::now(),
            snapshot: ArcSwap::from_pointee(Snapshot::empty(windows)),
            thread: OnceLock::new(),
            stop: AtomicBool::new(false),
            flush_requested: AtomicU64::new(0),
            flush_done: Mutex::new(0),
            flush_cv: Condvar::new(),
            hand_over: AtomicBool::new(false),
            handover: Mutex::new(None),
            #[cfg(feature = "test-util")]
            inject_panic: AtomicBool::new(false),
        }
    }

    /// Shared state for an aggregator driven by hand in a test: nothing installed, no thread.
    #[cfg(test)]
    pub(crate) fn detached(windows: Vec<crate::stats::Window>) -> Self {
        let stages = crate::limits::DEFAULT_MAX_STAGES;
        Self::new(0, 64, stages, false, Extensions::default(), windows)
    }
}
