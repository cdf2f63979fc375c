//! A recording thread's state: its ring's producer, the counters it shares with the aggregator,
//! and [`with_ring`], the one way the hot path reaches them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use super::tls::{self, Unavailable};
use crate::collector::{self, CollectorShared};
use crate::record::{CONTROL, ENABLED, GEN_SHIFT, Record, STOPPED};
use crate::ring::Producer;
use crate::stage::Stage;
use crate::sync::Arc;

/// A thread's counts of one stage that never reach its ring: each has one writer (the thread),
/// so it is a plain load and store, never a read-modify-write on a line other threads write.
#[derive(Default)]
pub(crate) struct ThreadCounts {
    /// Calls skipped by sampling.
    pub(crate) sampled_out: AtomicU64,
    /// Records lost to this thread's full ring.
    pub(crate) dropped: AtomicU64,
}

/// Per-thread state shared with the aggregator.
pub(crate) struct ThreadShared {
    /// Per stage id, up to the collector's stage cap.
    pub(crate) counts: Box<[ThreadCounts]>,
    /// Set when `counts` changed since the aggregator last looked.
    pub(crate) touched: AtomicBool,
    /// Set while the thread is between reading the control word and finishing a push: a stopping
    /// aggregator waits for it to clear before its final drain (see [`with_ring`]). On its own
    /// cache line: the aggregator reads it only when stopping, the thread writes it twice a push.
    pub(crate) pushing: CachePadded<AtomicBool>,
}

impl ThreadShared {
    pub(crate) fn new(stages: usize) -> Self {
        Self {
            counts: (0..stages).map(|_| ThreadCounts::default()).collect(),
            touched: AtomicBool::new(false),
            pushing: CachePadded::new(AtomicBool::new(false)),
        }
    }
}

/// Adds one to a counter this thread alone writes.
#[inline(always)]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

pub(crate) struct Local {
    /// The control word's generation bits while this ring's collector is current.
    live: u64,
    producer: Producer<Record>,
    shared: std::sync::Arc<ThreadShared>,
    collector: Arc<CollectorShared>,
    /// Occupancy at which the aggregator is woken early (half the ring).
    wake_at: usize,
    /// Pushes between two looks at the real occupancy (a quarter of the ring): the producer's view
    /// of the consumer's index is stale, so it re-reads it on this schedule, not on a guess.
    check_every: u32,
    since_check: u32,
    /// Span ids: the ring id (process-wide) in the top 32 bits, a per-thread sequence below.
    next_span: u64,
}

impl Local {
    #[cold]
    fn register() -> Option<Local> {
        let (collector, generation) = collector::current_or_default()?;
        let (producer, shared, ring_id) = collector.register_thread()?;
        let wake_at = producer.capacity() / 2;
        let check_every = u32::try_from(producer.capacity() / 4)
            .unwrap_or(u32::MAX)
            .max(1);
        Some(Local {
            live: generation << GEN_SHIFT,
            producer,
            shared,
            collector,
            wake_at,
            check_every,
            since_check: 0,
            next_span: (ring_id & 0xFFFF_FFFF) << 32,
        })
    }

    /// Whether the control word `state` lets this ring take records: its collector is current and
    /// not stopping (the user's switch does not matter: a span admitted before it turned off
    /// still ends).
    #[inline(always)]
    fn accepts(&self, state: u64) -> bool {
        state & !ENABLED == self.live
    }

    /// Runs `f` announced (see [`with_ring`]) if the control word lets this ring take records;
    /// hands `f` back, not run, if it does not.
    #[inline(always)]
    fn announced<R, F: FnOnce(&mut Local) -> R>(&mut self, f: F) -> Result<R, F> {
        self.shared.pushing.store(true, Ordering::Relaxed);
        // Ordered before the control-word load against the stopping aggregator's barrier.
        crate::barrier::light();
        let r = if self.accepts(CONTROL.state()) {
            Ok(f(self))
        } else {
            Err(f)
        };
        // Release: the push is visible to whoever sees the announcement cleared.
        self.shared.pushing.store(false, Ordering::Release);
        r
    }

    /// Pushes one record; false (and nothing counted) when the ring is full.
    #[inline]
    pub(super) fn push(&mut self, record: Record) -> bool {
        if self.producer.push(record).is_err() {
            return false;
        }
        self.pushed(1);
        true
    }

    /// Pushes one record, or counts it as dropped on this thread.
    #[inline]
    pub(super) fn push_or_count(&mut self, record: Record) {
        if !self.push(record) {
            self.count_dropped(record.stage);
        }
    }

    /// Pushes `n` records made by `record(i)` with one publication, as many as fit, and returns
    /// how many did (the rest are the caller's to count).
    #[inline]
    pub(super) fn push_batch(&mut self, n: usize, record: impl FnMut(usize) -> Record) -> usize {
        let written = self.producer.push_with(n, record);
        self.pushed(written as u32);
        written
    }

    #[inline(always)]
    fn pushed(&mut self, n: u32) {
        self.since_check += n;
        if self.since_check >= self.check_every {
            self.check_fill();
        }
    }

    /// Wakes the aggregator if the ring is at least half full. Between two checks at most a
    /// quarter of the ring fills, so the aggregator is woken with a quarter still free.
    #[cold]
    fn check_fill(&mut self) {
        self.since_check = 0;
        if self.producer.refresh_len() >= self.wake_at {
            self.collector.wake();
        }
    }

    /// The next span id of this thread.
    pub(super) fn next_span(&mut self) -> u64 {
        self.next_span += 1;
        self.next_span
    }

    /// Counts a record of stage `id` lost to the full ring. A stage past the collector's cap
    /// (which this thread's counters do not cover) is counted on the stage itself.
    #[inline]
    pub(super) fn count_dropped(&mut self, id: u32) {
        match self.shared.counts.get(id as usize) {
            Some(c) => {
                bump(&c.dropped);
                // Release: an aggregator that sees the flag (Acquire) sees this count or a later one.
                self.shared.touched.store(true, Ordering::Release);
            }
            None => count_shared_drop(id),
        }
    }

    /// Counts a call of `stage` skipped by sampling. False when this thread's counters do not
    /// cover the stage (the caller counts a drop, so the call is still accounted).
    #[inline(always)]
    pub(super) fn count_sampled_out(&mut self, stage: Stage) -> bool {
        let Some(c) = self.shared.counts.get(stage.id() as usize) else {
            return false;
        };
        bump(&c.sampled_out);
        // Release: see `count_dropped`.
        self.shared.touched.store(true, Ordering::Release);
        true
    }
}

/// Counts a skipped call of `stage` on this thread's counter, if the thread has a ring of the
/// current collector and a counter for the stage; false (nothing counted) otherwise.
#[inline(always)]
pub(super) fn try_count_sampled_out(stage: Stage) -> bool {
    tls::with_local(stage, |l, stage| {
        l.announced(|l| l.count_sampled_out(stage)).unwrap_or(false)
    })
    .unwrap_or(false)
}

/// Pushes `n` records made by `record(i)` into this thread's ring with one publication. Those
/// that do not fit are counted as dropped on the thread; with no ring, all on their stages.
#[inline]
pub(super) fn push_batch_or_count(n: usize, record: impl Fn(usize) -> Record) {
    let pushed = with_ring(|l| {
        let written = l.push_batch(n, &record);
        (written..n).for_each(|i| l.count_dropped(record(i).stage));
    });
    if pushed.is_none() {
        (0..n).for_each(|i| count_shared_drop(record(i).stage));
    }
}

/// Counts a drop of stage `id` on the stage's shared counter (no ring, or a stage past the cap).
#[cold]
fn count_shared_drop(id: u32) {
    if let Some(stage) = crate::stage::registry().get(id) {
        stage.0.count_drop();
    }
}

/// Runs `f` on this thread's ring, registering one first if needed. `None` when there is no ring
/// to be had (thread exiting, re-entered, no collector, the collector stopping): the caller
/// counts a drop.
///
/// A stop must lose nothing: the thread announces the push (`ThreadShared::pushing`) before it
/// reads the control word, and the stopping aggregator sets "stopped", runs a process-wide barrier
/// and waits for every announcement to clear before its final drain. So a push either sees the
/// collector stopped (and is counted as a drop) or is drained by the final cycle.
#[inline(always)]
pub(super) fn with_ring<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    match tls::with_local(f, |l, f| l.announced(f)) {
        Ok(Ok(r)) => Some(r),
        Ok(Err(f)) | Err(Unavailable::Empty(f)) => with_new_ring(f),
        Err(Unavailable::Busy) => None,
    }
}

/// [`with_ring`] when the thread has no ring of the current collector: registers one (unless the
/// collector is stopping) and runs `f` on it.
#[cold]
fn with_new_ring<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    if CONTROL.state() & STOPPED != 0 {
        return None; // the collector is making its final drain: count, don't strand
    }
    // Acquire: the install that published this generation (AcqRel) stored the collector first;
    // registration must find it, not the one before.
    std::sync::atomic::fence(Ordering::Acquire);
    tls::install(Local::register)?;
    // The collector may have begun stopping (or been replaced) since it gave the ring: the
    // announced check decides, once.
    tls::with_local(f, |l, f| l.announced(f).ok())
        .ok()
        .flatten()
}
