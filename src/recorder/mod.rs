//! The hot path: global switches, the per-thread ring, and the span APIs (guard, split timer,
//! start/end tokens, manual values).
//!
//! A span reads the clock at its start, keeps the reading on the stack, and at its end writes one
//! 32-byte record into the calling thread's ring. The ring is created (one allocation) and
//! registered with the collector on the thread's first record; after that nothing here allocates,
//! locks or blocks. A full ring hands the record back and the thread's drop counter for the stage
//! goes up.
//!
//! `thread` holds a thread's ring and counters and the one way to reach them (`with_ring`), `tls`
//! the thread-locals behind it, `sampling` the per-call sampling decision, `lap` the split timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::ticks;
use crate::collector;
use crate::record::{
    CONTROL, ENABLED, Kind, Record, STOPPED, rate_to_threshold, threshold_to_rate,
};
use crate::stage::{FLAG_DISABLED, FLAG_SAMPLED, FLAG_WATCHED, IntoStage, Stage};

mod lap;
pub(crate) mod sampling;
mod thread;
mod tls;

pub use lap::{Lap, lap};
use thread::with_ring;
pub(crate) use thread::{ThreadCounts, ThreadShared};

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

/// Pushes `record` into this thread's ring. A full ring counts the drop on this thread; no ring
/// at all (thread exiting, re-entered, collector stopping) counts it on the stage.
#[inline(always)]
fn push_or_count(stage: Stage, record: Record) {
    if with_ring(|l| l.push_or_count(record)).is_none() {
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
    let rate = if flags & FLAG_SAMPLED != 0 {
        &stage.0.sampling
    } else {
        CONTROL.sampling()
    };
    let threshold = rate.threshold();
    (threshold == u64::MAX || sample(stage, threshold, rate.hazard())).then_some(flags)
}

/// Decides a sampled call (see [`sampling`]), counting it on this thread if it is skipped.
// Out of line but not `#[cold]`: at a low sampling rate this is the common path, and keeping it
// out of `start` keeps `start` small enough to inline (a disabled call is then a load and a
// branch in the caller).
#[inline(never)]
fn sample(stage: Stage, threshold: u64, hazard: u64) -> bool {
    // The uncommon cases go out of line, keeping this path short.
    // No sampler (the thread's storage is gone): kept, and counted as dropped for want of a ring.
    match tls::with_sampler(|s| s.decide(threshold, hazard)).unwrap_or(Some(true)) {
        Some(true) => true,
        Some(false) => {
            if !thread::try_count_sampled_out(stage) {
                return count_sampled_out_slow(stage);
            }
            false
        }
        None => sampler_spent(stage, threshold, hazard),
    }
}

/// The sampler's budget is spent or was never drawn: settles the call, counting it if skipped.
#[cold]
fn sampler_spent(stage: Stage, threshold: u64, hazard: u64) -> bool {
    let kept = tls::with_sampler(|s| s.spent(threshold, hazard)).unwrap_or(true);
    if !kept && !thread::try_count_sampled_out(stage) {
        count_sampled_out_slow(stage);
    }
    kept
}

/// Counts a skipped call when the fast path could not: registers a ring first if needed; without
/// a ring or a counter for it (thread exiting, re-entered, no collector, a stage past the cap) it
/// is counted as dropped, so the call is still accounted. Always false (the call is skipped).
#[cold]
fn count_sampled_out_slow(stage: Stage) -> bool {
    if with_ring(|l| l.count_sampled_out(stage)) != Some(true) {
        stage.0.count_drop();
    }
    false
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
    if with_ring(|l| l.push_or_count(record)).is_none() {
        stage.0.count_drop();
    }
}

/// Publishes the start of a deadline-watched span and returns its id (0 if it could not be
/// published: the span is then judged by its duration alone when it ends).
#[cold]
fn publish_start(stage: Stage, start: u64) -> u64 {
    with_ring(|l| {
        let span = l.next_span();
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
    Record::span(stage.id(), span, start, end)
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
