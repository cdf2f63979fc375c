//! The split timer.

use super::thread::push_batch_or_count;
use super::{span_record, start};
use crate::clock::ticks;
use crate::record::{Kind, Record};
use crate::stage::{FLAG_DISABLED, IntoStage, Stage};

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
/// ring together when the lap ends (or every 7 splits), published to the aggregator with one
/// store, so a split costs a clock read and a few stores. Sampling and the switches are decided
/// once per lap, by its total stage: a sampled-out lap (or one whose total stage is disabled)
/// records none of its stages, and counts one skipped call, for the total only.
#[must_use = "the lap's total is recorded when it drops: binding it to `_` ends it at once"]
pub struct Lap {
    total: Option<Stage>,
    start: u64,
    span: u64,
    /// Splits pending.
    len: u8,
    /// Whether a pending split's stage records nothing.
    skipping: bool,
    /// Stage id (or `SKIPPED`) of each pending split.
    ids: [u32; LAP_SPLITS],
    /// Boundaries: pending split `i` runs from `bounds[i]` to `bounds[i + 1]`.
    bounds: [u64; LAP_SPLITS + 1],
}

// Small enough that moving a lap (into `end_with`) is a few vector moves, not a `memcpy` call.
const _: () = assert!(size_of::<Lap>() <= 128);

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
    let mut bounds = [0; LAP_SPLITS + 1];
    bounds[0] = guard.start;
    Lap {
        total: guard.stage.take(),
        start: guard.start,
        span: guard.span,
        len: 0,
        skipping: false,
        ids: [0; LAP_SPLITS],
        bounds,
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
        let i = usize::from(self.len);
        self.ids[i] = id;
        self.bounds[i + 1] = now;
        self.skipping |= id == SKIPPED;
        self.len += 1;
        if i + 1 == LAP_SPLITS {
            self.flush(None);
        }
    }

    /// The record of pending split `i`.
    #[inline(always)]
    fn split_record(&self, i: usize) -> Record {
        Record::span(self.ids[i], 0, self.bounds[i], self.bounds[i + 1])
    }

    /// The total's record when the lap ends at `end` (taking the total: the lap is then over).
    #[inline(always)]
    fn take_total(&mut self, end: Option<u64>) -> Option<Record> {
        let end = end?;
        let stage = self.total.take()?;
        let mut record = span_record(stage, self.span, self.start, end);
        // A lap ending while its thread unwinds says so in its total.
        if std::thread::panicking() {
            record.kind = Kind::Unwound;
        }
        Some(record)
    }

    /// Writes the pending splits, and the total if `total_end` is given, into the ring in one
    /// visit and one publication, counting any record that does not fit as dropped.
    #[inline(never)]
    fn flush(&mut self, total_end: Option<u64>) {
        let total = self.take_total(total_end);
        let splits = usize::from(self.len);
        if self.skipping {
            self.flush_skipping(total);
        } else {
            let n = splits + usize::from(total.is_some());
            let this = &*self;
            // Record `n - 1` is the total when there is one (`last` is only read then).
            let last = total.unwrap_or_else(|| this.split_record(0));
            let record = |i: usize| {
                if i < splits {
                    this.split_record(i)
                } else {
                    last
                }
            };
            push_batch_or_count(n, record);
        }
        self.bounds[0] = self.bounds[splits];
        self.len = 0;
        self.skipping = false;
    }

    /// [`Lap::flush`] when a split's stage records nothing: the others, gathered first, in one
    /// batch.
    #[cold]
    fn flush_skipping(&self, total: Option<Record>) {
        let mut kept = [self.split_record(0); LAP_SPLITS + 1];
        let mut n = 0;
        let splits = (0..usize::from(self.len)).map(|i| self.split_record(i));
        for record in splits.filter(|r| r.stage != SKIPPED).chain(total) {
            kept[n] = record;
            n += 1;
        }
        push_batch_or_count(n, |i| kept[i]);
    }

    /// Ends the lap at the boundary of its last stage: records `stage` and the total with one
    /// clock read.
    #[inline]
    pub fn end_with(mut self, stage: impl IntoStage) {
        if self.total.is_none() {
            return;
        }
        let now = ticks();
        self.add_split(stage, now);
        self.flush(Some(now));
    }

    /// Ends the lap now (same as dropping it).
    pub fn finish(self) {}
}

impl Drop for Lap {
    #[inline]
    fn drop(&mut self) {
        if self.total.is_some() {
            let now = ticks();
            self.flush(Some(now));
        }
    }
}
