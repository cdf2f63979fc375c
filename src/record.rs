//! The vocabulary the hot path and the engine share: the record a span writes into its thread's
//! ring, the global control word every span reads first, and the sampling-rate conversions.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::recorder::sampling::SamplingRate;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum Kind {
    /// A finished span: `a` = start tick, `b` = end tick, `span` = id if its start was published.
    Span = 0,
    /// A deadline-watched span started: `a` = start tick, `span` = id.
    Start = 1,
    /// A manual value: `a` = nanoseconds, `b` = tick at which it was recorded.
    Value = 2,
    /// A span abandoned before its end (`SpanGuard::cancel`, a `SpanToken` dropped unended, an
    /// async span whose future was dropped): counted as cancelled; `span` = id if its start was
    /// published (then it also closes the in-flight entry), else 0.
    Cancel = 3,
    /// A finished span that ended while its thread was unwinding from a panic (its guard, or a
    /// lap, dropped by the unwind — or a span run inside a destructor the unwind called):
    /// recorded like `Span` (same fields) and counted in `StageStats::unwound`.
    Unwound = 4,
}

/// One ring entry. 32 bytes: two per cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Record {
    pub(crate) stage: u32,
    pub(crate) kind: Kind,
    pub(crate) span: u64,
    pub(crate) a: u64,
    pub(crate) b: u64,
}

impl Record {
    /// A finished span of stage `stage` (its id) from tick `start` to tick `end`.
    #[inline(always)]
    pub(crate) const fn span(stage: u32, span: u64, start: u64, end: u64) -> Record {
        Record {
            stage,
            kind: Kind::Span,
            span,
            a: start,
            b: end,
        }
    }

    /// The stage's id ([`crate::Stage::id`]).
    pub fn stage_id(&self) -> u32 {
        self.stage
    }

    /// What the record says.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The span's id when its start was published (deadline-watched stages), else 0.
    pub fn span_id(&self) -> u64 {
        self.span
    }

    /// The start tick of a span (`Span`, `Unwound`, `Start`).
    pub fn start_ticks(&self) -> Option<u64> {
        matches!(self.kind, Kind::Span | Kind::Unwound | Kind::Start).then_some(self.a)
    }

    /// The end tick of a span (`Span`, `Unwound`), or the tick a `Value` was recorded at.
    pub fn end_ticks(&self) -> Option<u64> {
        matches!(self.kind, Kind::Span | Kind::Unwound | Kind::Value).then_some(self.b)
    }

    /// A manual value's duration in nanoseconds (`Value`).
    pub fn value_ns(&self) -> Option<u64> {
        (self.kind == Kind::Value).then_some(self.a)
    }
}

const _: () = assert!(size_of::<Record>() == 32);

/// Global switches, on their own cache line: read once per span.
pub(crate) struct Control {
    /// `ENABLED` (the user's switch) | `STOPPED` (a collector was stopped and none replaced it) |
    /// generation << 2 (which collector threads should be registered with; 0 = none yet).
    state: AtomicU64,
    /// The global sampling rate (`u64::MAX` threshold keeps all).
    sampling: SamplingRate,
}

pub(crate) const ENABLED: u64 = 1;
pub(crate) const STOPPED: u64 = 2;
pub(crate) const GEN_SHIFT: u32 = 2;

pub(crate) static CONTROL: CachePadded<Control> = CachePadded::new(Control {
    state: AtomicU64::new(ENABLED),
    sampling: SamplingRate::keep_all(),
});

impl Control {
    #[inline(always)]
    pub(crate) fn state(&self) -> u64 {
        self.state.load(Ordering::Relaxed)
    }

    /// A new collector is current: threads re-register with it on their next record.
    pub(crate) fn set_generation(&self, generation: u64) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |s| {
                Some((s & ENABLED) | (generation << GEN_SHIFT))
            });
    }

    /// The current collector stopped: spans record nothing until another is installed.
    pub(crate) fn set_stopped(&self, generation: u64) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |s| {
                (s >> GEN_SHIFT == generation)
                    .then_some((s & ENABLED) | STOPPED | (generation << GEN_SHIFT))
            });
    }

    /// The user's switch (`set_enabled`).
    pub(crate) fn set_enabled(&self, enabled: bool) {
        if enabled {
            self.state.fetch_or(ENABLED, Ordering::Relaxed);
        } else {
            self.state.fetch_and(!ENABLED, Ordering::Relaxed);
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.state() & ENABLED != 0
    }

    #[inline(always)]
    pub(crate) fn sampling(&self) -> &SamplingRate {
        &self.sampling
    }

    pub(crate) fn sampling_threshold(&self) -> u64 {
        self.sampling.threshold()
    }

    pub(crate) fn set_sampling_threshold(&self, threshold: u64) {
        self.sampling.set(threshold);
    }
}

/// Converts a rate in [0, 1] to a sampling threshold.
pub(crate) fn rate_to_threshold(rate: f64) -> Result<u64, crate::ConfigError> {
    if !(0.0..=1.0).contains(&rate) {
        return Err(crate::ConfigError::SamplingRate { rate });
    }
    Ok(if rate >= 1.0 {
        u64::MAX
    } else {
        (rate * 2f64.powi(64)) as u64
    })
}

pub(crate) fn threshold_to_rate(threshold: u64) -> f64 {
    if threshold == u64::MAX {
        1.0
    } else {
        threshold as f64 / 2f64.powi(64)
    }
}
