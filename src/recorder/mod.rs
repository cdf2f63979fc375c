//! The hot path: global switches, the per-thread ring, and the span APIs (guard, split timer,
//! start/end tokens, manual values).
//!
//! A span reads the clock at its start, keeps the reading on the stack, and at its end writes one
//! 32-byte record into the calling thread's ring. The ring is created (one allocation) and
//! registered with the collector on the thread's first record; after that nothing here allocates,
//! locks or blocks. A full ring hands the record back and the stage's drop counter goes up.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::ticks;
use crate::collector::{self, CollectorShared};
use crate::record::{
    CONTROL, ENABLED, GEN_SHIFT, Kind, Record, STOPPED, rate_to_threshold, threshold_to_rate,
};
use crate::ring::Producer;
use crate::stage::{FLAG_DISABLED, FLAG_SAMPLED, FLAG_WATCHED, IntoStage, Stage};
use crate::sync::Arc;

/// Turns all recording on or off, at once, for every thread. Disabled spans cost one load and a
/// branch, record nothing and count nothing.
pub fn set_enabled(enabled: bool) {
    CONTROL.set_enabled(enabled);
}

/// Whether recording is globally on.
pub fn is_enabled() -> bool {
    CONTROL.is_enabled()
}

/// Sets the global sampling rate: each span is kept with probability `rate`, decided by a random
/// draw on its own thread (never 1-in-k, which would alias with periodic work). Calls skipped by
/// sampling are still counted exactly, per stage ([`crate::StageStats::sampled_out`]).
///
/// With adaptive sampling configured, this sets the rate it restores when load falls.
pub fn set_sampling_rate(rate: f64) -> Result<(), crate::ConfigError> {
    let threshold = rate_to_threshold(rate)?;
    collector::set_base_sampling(threshold);
    Ok(())
}

/// The global sampling rate in force.
pub fn sampling_rate() -> f64 {
    threshold_to_rate(CONTROL.sampling_threshold())
}

/// Per-thread state shared with the aggregator: counters of calls skipped by sampling.
pub(crate) struct ThreadShared {
    /// Sampled-out calls per stage id; written only by the owning thread (load + store, no RMW).
    pub(crate) sampled_out: Box<[AtomicU64]>,
    /// Set when `sampled_out` changed since the aggregator last looked.
    pub(crate) touched: std::sync::atomic::AtomicBool,
    /// Set while the thread is between reading the control word and finishing a push: a stopping
    /// aggregator waits for it to clear before its final drain (see [`with_local`]). On its own
    /// cache line: the aggregator reads it only when stopping, the thread writes it twice a push.
    pub(crate) pushing: crossbeam_utils::CachePadded<std::sync::atomic::AtomicBool>,
}

impl ThreadShared {
    pub(crate) fn new(stages: usize) -> Self {
        Self {
            sampled_out: (0..stages).map(|_| AtomicU64::new(0)).collect(),
            touched: std::sync::atomic::AtomicBool::new(false),
            pushing: crossbeam_utils::CachePadded::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

struct Local {
    generation: u64,
    producer: Producer<Record>,
    shared: std::sync::Arc<ThreadShared>,
    collector: Arc<CollectorShared>,
    /// Occupancy at which the aggregator is woken early (half the ring).
    wake_at: usize,
    /// Pushes between two looks at the real occupancy (a quarter of the ring): the producer's view
    /// of the consumer's index is stale, so it re-reads it on this schedule, not on a guess.
    check_every: u32,
    since_check: u32,
    /// xorshift64* state for sampling draws.
    rng: u64,
    /// Span ids: the ring id (process-wide) in the top 32 bits, a per-thread sequence below.
    next_span: u64,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
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
        let seed = (ring_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ ticks() | 1;
        Some(Local {
            generation,
            producer,
            shared,
            collector,
            wake_at,
            check_every,
            since_check: 0,
            rng: seed,
            next_span: (ring_id & 0xFFFF_FFFF) << 32,
        })
    }

    /// Announces a push, before the control word is read.
    #[inline(always)]
    fn announce(&mut self) {
        self.shared.pushing.store(true, Ordering::Relaxed);
        // Ordered before the control-word load against the stopping aggregator's barrier.
        crate::barrier::light();
    }

    /// Ends the announced push.
    #[inline(always)]
    fn done(&mut self) {
        // Release: the push is visible to whoever sees the announcement cleared.
        self.shared.pushing.store(false, Ordering::Release);
    }

    #[inline]
    fn push(&mut self, record: Record) -> bool {
        if self.producer.push(record).is_err() {
            return false;
        }
        self.since_check += 1;
        if self.since_check >= self.check_every {
            self.check_fill();
        }
        true
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

    #[inline]
    fn draw(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Runs `f` on this thread's registered ring, registering it first if needed. `None` when there is
/// no ring to be had (thread exiting, re-entered, no collector, the collector stopping): the caller
/// counts a drop.
///
/// A stop must lose nothing: the thread announces the push (`ThreadShared::pushing`) before it
/// reads the control word, and the stopping aggregator sets "stopped", runs a process-wide barrier
/// and waits for every announcement to clear before its final drain. So a push either sees the
/// collector stopped (and is counted as a drop) or is drained by the final cycle.
#[inline(always)]
fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    LOCAL
        .try_with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if let Some(l) = slot.as_mut() {
                l.announce();
            }
            let state = CONTROL.state();
            match slot.as_mut() {
                Some(l) if state & STOPPED == 0 && l.generation == state >> GEN_SHIFT => {
                    let r = f(l);
                    l.done();
                    Some(r)
                }
                _ => with_new_local(&mut slot, state, f),
            }
        })
        .ok()
        .flatten()
}

/// [`with_local`] when the thread has no ring of the current collector: clears the old ring's
/// announcement, registers a new ring (unless the collector is stopping) and runs `f` on it,
/// announced in turn.
#[cold]
fn with_new_local<R>(
    slot: &mut Option<Local>,
    state: u64,
    f: impl FnOnce(&mut Local) -> R,
) -> Option<R> {
    if let Some(old) = slot.as_mut() {
        old.done();
    }
    if state & STOPPED != 0 {
        return None; // the collector is making its final drain: count, don't strand
    }
    // Acquire: the install that published this generation (AcqRel) stored the collector first;
    // registration must find it, not the one before.
    std::sync::atomic::fence(Ordering::Acquire);
    let local = slot.insert(Local::register()?);
    local.announce();
    // The collector may have begun stopping since it took the ring: look again, announced.
    if CONTROL.state() & STOPPED != 0 {
        local.done();
        return None;
    }
    let r = f(local);
    local.done();
    Some(r)
}

#[inline(always)]
fn push_or_count(stage: Stage, record: Record) {
    if with_local(|l| l.push(record)) != Some(true) {
        stage.0.count_drop();
    }
}

/// Whether recording is on (the user's switch) and a collector may take records. Checked before
/// a name is resolved, so a switched-off call costs one load and a branch.
/// Without the `enable` feature this is `false` at compile time, and every entry point folds to
/// an early return.
#[inline(always)]
pub(crate) fn recording() -> bool {
    crate::COMPILED_IN && CONTROL.state() & (ENABLED | STOPPED) == ENABLED
}

/// Decides whether a call of `stage` records (after [`recording`]), returning the stage's flags if so. Counts
/// sampled-out calls.
#[inline(always)]
fn admit(stage: Stage) -> Option<u32> {
    let flags = stage.0.flags();
    if flags & FLAG_DISABLED != 0 {
        return None;
    }
    let threshold = if flags & FLAG_SAMPLED != 0 {
        stage.0.sample_threshold.load(Ordering::Relaxed)
    } else {
        CONTROL.sampling_threshold()
    };
    (threshold == u64::MAX || sample(stage, threshold)).then_some(flags)
}

// Not `#[cold]`: at a low sampling rate this is the common path (3.6 ns cold, 3.0 ns inlined).
#[inline]
fn sample(stage: Stage, threshold: u64) -> bool {
    // Some(true): kept; Some(false): skipped and counted; None: no ring or no counter to count
    // it in (thread exiting, re-entered, no collector), so it is counted as dropped.
    let kept = with_local(|l| {
        if l.draw() < threshold {
            return Some(true);
        }
        let c = l.shared.sampled_out.get(stage.id() as usize)?;
        // Single writer: a plain load + store, no read-modify-write.
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // Release: an aggregator that sees the flag (Acquire) sees this count or a later one.
        l.shared.touched.store(true, Ordering::Release);
        Some(false)
    })
    .flatten();
    kept.unwrap_or_else(|| {
        stage.0.count_drop();
        false
    })
}

/// Tells the aggregator a span was abandoned: it counts a cancellation and, for a published start,
/// closes the in-flight entry. A full ring counts the cancellation as a drop instead (and a
/// published start is then given up on after the abandon horizon, in `Health::abandoned`).
#[cold]
fn record_cancel(stage: Stage, span: u64) {
    let record = Record {
        stage: stage.id(),
        kind: Kind::Cancel,
        span,
        a: 0,
        b: 0,
    };
    push_or_count_cold(stage, record);
}

/// [`push_or_count`] for the cold paths (cancellations, spans ended while unwinding): its own
/// instantiation of the thread-local access, because sharing `push_or_count`'s with a cold path
/// made the compiler stop inlining it into `end_span`, the hot path (+3.5 ns a span).
#[cold]
fn push_or_count_cold(stage: Stage, record: Record) {
    if with_local(|l| l.push(record)) != Some(true) {
        stage.0.count_drop();
    }
}

/// Publishes the start of a deadline-watched span and returns its id (0 if it could not be
/// published: the span is then judged by its duration alone when it ends).
#[cold]
fn publish_start(stage: Stage, start: u64) -> u64 {
    with_local(|l| {
        l.next_span += 1;
        let span = l.next_span;
        let published = l.push(Record {
            stage: stage.id(),
            kind: Kind::Start,
            span,
            a: start,
            b: 0,
        });
        if published { span } else { 0 }
    })
    .filter(|span| *span != 0)
    .unwrap_or_else(|| {
        UNTRACKED_STARTS.fetch_add(1, Ordering::Relaxed);
        0
    })
}

/// Deadline-watched starts that could not be published (see [`crate::Health::untracked_starts`]).
pub(crate) static UNTRACKED_STARTS: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
fn span_record(stage: Stage, span: u64, start: u64, end: u64) -> Record {
    Record {
        stage: stage.id(),
        kind: Kind::Span,
        span,
        a: start,
        b: end,
    }
}

/// An open span: records `stage` from its creation until it drops.
///
/// `Send`: a span may start on one thread and end on another (an async task moved by a
/// multi-threaded runtime); the end record goes into the ending thread's ring. If the code inside
/// panics, unwinding drops the guard and the span is still recorded, and counted in
/// [`crate::StageStats::unwound`] (spans that end while their thread unwinds).
#[must_use = "the span ends when the guard drops: binding it to `_` ends it at once (use `let _span = ...`)"]
#[derive(Debug)]
pub struct SpanGuard {
    stage: Option<Stage>,
    start: u64,
    span: u64,
}

impl SpanGuard {
    const INERT: SpanGuard = SpanGuard {
        stage: None,
        start: 0,
        span: 0,
    };

    /// Ends the span now (same as dropping it).
    pub fn finish(self) {}

    /// Abandons the span: no duration is recorded, the stage counts one cancellation
    /// ([`crate::StageStats::cancelled`]). A deadline-watched span that published its start is
    /// closed in flight, so it neither lingers nor turns into a miss.
    pub fn cancel(mut self) {
        if let Some(stage) = self.stage.take() {
            record_cancel(stage, self.span);
        }
    }

    /// Whether this span will record (enabled and sampled in).
    pub fn is_recording(&self) -> bool {
        self.stage.is_some()
    }

    /// Makes the span end as `stage` instead (the macros' `outcome`: the series is known only at
    /// the end). The admission decision already taken (enabled, sampled in) stands.
    pub(crate) fn retarget(&mut self, stage: Stage) {
        if let Some(current) = self.stage.as_mut() {
            *current = stage;
        }
    }
}

impl Drop for SpanGuard {
    // Inline only the test, so an inert (disabled, sampled-out) guard costs a branch, not a call.
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(stage) = self.stage {
            end_span(stage, self.span, self.start);
        }
    }
}

#[inline(never)]
fn end_span(stage: Stage, span: u64, start: u64) {
    let end = ticks();
    // One relaxed load of std's global panic count: a span ending while its thread unwinds
    // still records its duration, but says so.
    if std::thread::panicking() {
        let record = Record {
            kind: Kind::Unwound,
            ..span_record(stage, span, start, end)
        };
        return push_or_count_cold(stage, record);
    }
    push_or_count(stage, span_record(stage, span, start, end));
}

/// Starts a span of `stage`; it is recorded when the returned guard drops.
///
/// ```
/// fn spread() -> f64 {
///     let _span = laptime::start("stage_spread");
///     0.25 // the work being timed
/// }
/// # spread();
/// ```
#[inline]
pub fn start(stage: impl IntoStage) -> SpanGuard {
    if !recording() {
        return SpanGuard::INERT;
    }
    let Some(stage) = stage.into_stage() else {
        return SpanGuard::INERT;
    };
    let Some(flags) = admit(stage) else {
        return SpanGuard::INERT;
    };
    let start = ticks();
    let span = if flags & FLAG_WATCHED != 0 {
        publish_start(stage, start)
    } else {
        0
    };
    SpanGuard {
        stage: Some(stage),
        start,
        span,
    }
}

/// A span opened in one place and closed in another, by value: the seed's
/// `record_start(stage)` / `record_end(token)` pair.
#[must_use = "pass the token to laptime::record_end, or the span is not recorded"]
#[derive(Debug)]
pub struct SpanToken {
    stage: Option<Stage>,
    start: u64,
    span: u64,
}

/// Opens a span and returns its token; close it with [`record_end`].
pub fn record_start(stage: impl IntoStage) -> SpanToken {
    let mut guard = start(stage);
    let token = SpanToken {
        stage: guard.stage.take(),
        start: guard.start,
        span: guard.span,
    };
    drop(guard);
    token
}

/// Closes a span opened by [`record_start`] and records it.
#[inline]
pub fn record_end(mut token: SpanToken) {
    if let Some(stage) = token.stage.take() {
        end_span(stage, token.span, token.start);
    }
}

impl Drop for SpanToken {
    /// A token dropped without [`record_end`] records no duration and counts as cancelled; a
    /// deadline-watched one is closed in flight so it does not turn into a false miss.
    fn drop(&mut self) {
        if let Some(stage) = self.stage.take() {
            record_cancel(stage, self.span);
        }
    }
}

/// The stage a value of `stage` is recorded into, if recording is on, the stage resolves and this
/// call is sampled in: what every entry point without a span of its own checks first.
#[inline(always)]
fn admitted(stage: impl IntoStage) -> Option<Stage> {
    if !recording() {
        return None;
    }
    let stage = stage.into_stage()?;
    admit(stage)?;
    Some(stage)
}

/// Records a duration measured elsewhere (a value from an exchange's reply, a simulated latency).
/// Sampling and the switches apply as for spans; deadlines are judged on the value.
pub fn record(stage: impl IntoStage, duration: Duration) {
    let Some(stage) = admitted(stage) else {
        return;
    };
    let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    push_or_count(
        stage,
        Record {
            stage: stage.id(),
            kind: Kind::Value,
            span: 0,
            a: ns,
            b: ticks(),
        },
    );
}

/// Records `stage` as a span from tick `start` to tick `end`, both read on this library's clock
/// elsewhere (an async call's polls, a wake on another thread). Sampling and the switches apply
/// as for spans.
pub(crate) fn record_between(stage: impl IntoStage, start: u64, end: u64) {
    let Some(stage) = admitted(stage) else {
        return;
    };
    push_or_count(stage, span_record(stage, 0, start, end));
}

/// Most splits a [`Lap`] holds before it writes them out.
const LAP_SPLITS: usize = 7;
/// Marks a split whose stage records nothing (disabled, or a name that could not be registered).
const SKIPPED: u32 = u32::MAX;

/// The split timer: sequential stages of one tick, one clock read per boundary.
///
/// ```
/// let mut lap = laptime::lap("tick_total");
/// // fetch market data ...
/// lap.split("stage_fetch_md");
/// // compute the spread ...
/// lap.split("stage_spread");
/// // check guards, emit orders ...
/// lap.end_with("stage_emit"); // last stage and the total share one clock read
/// ```
///
/// Each split records its stage from the previous boundary (the lap's start or the last split) to
/// now. The total is recorded when the lap ends: at [`Lap::end_with`]'s boundary, or at
/// [`Lap::finish`] / drop (one more clock read). Splits are kept on the stack and written to the
/// ring together when the lap ends (or every 7 splits), so a split costs a clock read and a few
/// stores. Sampling and the switches are decided once per lap, by its total stage: a sampled-out
/// lap (or one whose total stage is disabled) records none of its stages, and counts one skipped
/// call, for the total only.
#[must_use = "the lap's total is recorded when it drops: binding it to `_` ends it at once"]
pub struct Lap {
    total: Option<Stage>,
    start: u64,
    span: u64,
    /// The boundary the first pending split starts at.
    flushed_at: u64,
    len: usize,
    /// (stage id or `SKIPPED`, boundary tick) of each split not yet written.
    splits: [(u32, u64); LAP_SPLITS],
}

impl std::fmt::Debug for Lap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lap")
            .field("total", &self.total)
            .field("pending_splits", &self.len)
            .finish()
    }
}

/// Starts a split timer whose total is recorded as `total`.
#[inline]
pub fn lap(total: impl IntoStage) -> Lap {
    // The guard only decides admission and reads the start; taking its stage leaves it inert.
    let mut guard = start(total);
    Lap {
        total: guard.stage.take(),
        start: guard.start,
        span: guard.span,
        flushed_at: guard.start,
        len: 0,
        splits: [(0, 0); LAP_SPLITS],
    }
}

impl Lap {
    /// Ends the stage `stage` here: it is recorded from the previous boundary to now.
    #[inline]
    pub fn split(&mut self, stage: impl IntoStage) {
        if self.total.is_none() {
            return;
        }
        let now = ticks();
        self.add_split(stage, now);
    }

    #[inline(always)]
    fn add_split(&mut self, stage: impl IntoStage, now: u64) {
        // A disabled or unknown stage records nothing but still ends at this boundary.
        let id = match stage.into_stage() {
            Some(s) if s.0.flags() & FLAG_DISABLED == 0 => s.id(),
            _ => SKIPPED,
        };
        self.splits[self.len] = (id, now);
        self.len += 1;
        if self.len == LAP_SPLITS {
            self.flush(None);
        }
    }

    /// Writes the pending splits, and the total if `total_end` is given, into the ring in one
    /// visit to the thread's ring, counting any record that does not fit as dropped.
    fn flush(&mut self, total_end: Option<u64>) {
        let splits = &self.splits[..self.len];
        let first = self.flushed_at;
        let total = total_end.and_then(|end| {
            let stage = self.total.take()?;
            let mut record = span_record(stage, self.span, self.start, end);
            // A lap ending while its thread unwinds says so in its total.
            if std::thread::panicking() {
                record.kind = Kind::Unwound;
            }
            Some((stage, record))
        });
        let (written, total_written) = with_local(|l| {
            let mut from = first;
            for (i, &(id, at)) in splits.iter().enumerate() {
                let record = Record {
                    stage: id,
                    kind: Kind::Span,
                    span: 0,
                    a: from,
                    b: at,
                };
                if id != SKIPPED && !l.push(record) {
                    return (i, false);
                }
                from = at;
            }
            (
                splits.len(),
                total.is_some_and(|(_, record)| l.push(record)),
            )
        })
        .unwrap_or((0, false));
        for &(id, _) in &splits[written..] {
            if let Some(stage) = crate::stage::registry().get(id) {
                stage.0.count_drop();
            }
        }
        if let Some((stage, _)) = total
            && !total_written
        {
            stage.0.count_drop();
        }
        self.flushed_at = splits.last().map_or(self.flushed_at, |&(_, at)| at);
        self.len = 0;
    }

    /// Ends the lap at the boundary of its last stage: records `stage` and the total with one
    /// clock read.
    pub fn end_with(mut self, stage: impl IntoStage) {
        if self.total.is_none() {
            return;
        }
        let now = ticks();
        self.add_split(stage, now);
        self.close(now);
    }

    /// Ends the lap now (same as dropping it).
    pub fn finish(self) {}

    fn close(&mut self, end: u64) {
        self.flush(Some(end));
    }
}

impl Drop for Lap {
    fn drop(&mut self) {
        if self.total.is_some() {
            let now = ticks();
            self.close(now);
        }
    }
}
