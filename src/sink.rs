//! The seam between the engine and everything that reads what it measures.
//!
//! The aggregator knows one trait, [`Sink`]. After each cycle it publishes an immutable
//! [`Snapshot`] and hands every registered sink a [`Cycle`]: the snapshot and, per stage, the
//! cumulative histogram with its exact tallies (and the coordinated-omission-corrected pair). Sinks
//! that ask also get what each ring visit drained, in batches (one call per visit, never one per
//! record): the raw records ([`RecordBatch`], what golden traces are rebuilt from) or the values
//! the engine recorded into its histograms ([`ValueBatch`], what exact export buckets are counted
//! from). The Prometheus export, profiles and golden traces are sinks like any other: a feature
//! adds a sink, never a branch inside the engine.
//!
//! Every sink method runs on the aggregator thread, never on the hot path, and has a default that
//! does nothing. A sink that panics is caught, counted in [`crate::Health::sink_panics`] and kept: its
//! next call comes as usual.
//!
//! # A sink that counts records per stage
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use laptime::sink::{Interest, RecordBatch, Sink};
//!
//! #[derive(Default)]
//! struct CountPerStage(Arc<Mutex<HashMap<u32, u64>>>);
//!
//! impl Sink for CountPerStage {
//!     fn interest(&self) -> Interest {
//!         Interest::RECORDS
//!     }
//!
//!     fn records(&mut self, batch: &RecordBatch<'_>) {
//!         let mut counts = self.0.lock().unwrap();
//!         for record in batch.records() {
//!             *counts.entry(record.stage_id()).or_default() += 1;
//!         }
//!     }
//! }
//!
//! let counts = Arc::new(Mutex::new(HashMap::new()));
//! let handle = laptime::Collector::builder()
//!     .with_sink(CountPerStage(counts.clone()))
//!     .install()
//!     .unwrap();
//! let stage = laptime::Stage::new("order_send").unwrap();
//! for _ in 0..3 {
//!     let _span = laptime::start(stage);
//! }
//! handle.flush();
//! # if laptime::COMPILED_IN {
//! assert_eq!(counts.lock().unwrap()[&stage.id()], 3);
//! # }
//! ```

use std::sync::Arc;

use crate::aggregator::StageState;
use crate::clock::Calibration;
use crate::hist::{Hist, Layout, Tally};
use crate::stage::Stage;
use crate::stats::Snapshot;
use crate::{ConfigError, InstallErrorKind};

pub use crate::record::{Kind as RecordKind, Record};

/// What a sink wants to see besides the per-cycle [`Cycle`]. Asked once, when it is added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Interest {
    /// Every drained record, raw, a batch per ring visit ([`Sink::records`]). Also makes each
    /// thread's name be copied when it registers (one allocation on its first record), for
    /// [`RecordBatch::thread_name`].
    pub records: bool,
    /// Every value recorded into a stage's histograms, a batch per ring visit ([`Sink::values`]).
    pub values: bool,
}

impl Interest {
    /// Nothing but the cycle.
    pub const NONE: Interest = Interest {
        records: false,
        values: false,
    };
    /// The raw records, a batch per ring visit.
    pub const RECORDS: Interest = Interest {
        records: true,
        values: false,
    };
    /// The recorded values, a batch per ring visit.
    pub const VALUES: Interest = Interest {
        records: false,
        values: true,
    };

    /// Everything either asks for.
    pub const fn and(self, other: Interest) -> Interest {
        Interest {
            records: self.records || other.records,
            values: self.values || other.values,
        }
    }
}

/// A subscriber to what the engine publishes. Every method has a default that does nothing.
pub trait Sink: Send + 'static {
    /// A short name for errors (`"prometheus"`, `"trace"`).
    fn name(&self) -> &'static str {
        "sink"
    }

    /// Checks the sink's settings; called by `CollectorBuilder::validate` and `install`. A sink
    /// with its own error type returns it as `ConfigError::Sink(SinkError::new(self.name(), e))`
    /// ([`crate::SinkError`]), which callers match with `downcast_ref`.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Called by `install` on the installing thread, before the aggregator starts: the place to
    /// register stages, create directories or spawn threads, so that a failure is the install's
    /// typed error and not a silent loss later. A failure of the sink's own is
    /// `InstallErrorKind::Sink(SinkError::new(self.name(), e))`.
    fn start(&mut self, _install: &Install) -> Result<(), InstallErrorKind> {
        Ok(())
    }

    /// What the sink wants to see besides the cycle.
    fn interest(&self) -> Interest {
        Interest::NONE
    }

    /// The records one ring visit drained (only with [`Interest::records`]).
    fn records(&mut self, _batch: &RecordBatch<'_>) {}

    /// The values one ring visit recorded into the histograms (only with [`Interest::values`]).
    fn values(&mut self, _batch: &ValueBatch<'_>) {}

    /// After each cycle, with the snapshot about to be published.
    fn cycle(&mut self, _cycle: &Cycle<'_>) {}

    /// After a cycle that panicked: a snapshot with the previous statistics and new health figures.
    fn health_only(&mut self, _snapshot: &Arc<Snapshot>) {}

    /// Whether the sink has done its work and may be dropped (checked after each cycle).
    fn is_done(&self) -> bool {
        false
    }

    /// The collector stops: the last call, after the final drain and publish.
    fn stop(&mut self) {}
}

/// What `install` tells a starting sink.
#[derive(Debug)]
#[non_exhaustive]
pub struct Install {
    /// The collector's generation: 1 for the first collector of the process, then 2, …
    pub generation: u64,
    pub(crate) extensions: crate::collector::Extensions,
}

impl Install {
    /// A value the builder was given with
    /// [`with_extension`](crate::CollectorBuilder::with_extension), found by type: how a sink
    /// finds another sink's shared state (whichever was added first), with no name of it in the
    /// engine.
    pub fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.extensions.get::<T>()
    }
}

/// The records one ring visit drained, in the order the thread wrote them.
#[derive(Debug)]
pub struct RecordBatch<'a> {
    pub(crate) ring_id: u64,
    pub(crate) thread: Option<&'a str>,
    pub(crate) records: &'a [Record],
    pub(crate) clock: &'a Calibration,
    pub(crate) last: bool,
}

impl<'a> RecordBatch<'a> {
    /// The ring's id, unique in the process (span ids carry it in their top bits).
    pub fn ring_id(&self) -> u64 {
        self.ring_id
    }

    /// The writing thread's name, if it had one.
    pub fn thread_name(&self) -> Option<&'a str> {
        self.thread
    }

    /// The records, in the order the thread wrote them.
    pub fn records(&self) -> &'a [Record] {
        self.records
    }

    /// Nanoseconds since the collector's epoch at tick reading `ticks`.
    pub fn since_epoch_ns(&self, ticks: u64) -> u64 {
        self.clock.since_epoch_ns(ticks)
    }

    /// A tick count as nanoseconds.
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        self.clock.to_ns(ticks)
    }

    /// Whether this is the ring's last batch: its thread has exited and the ring is now freed.
    pub fn is_last(&self) -> bool {
        self.last
    }
}

/// One value the engine recorded into a stage's histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recorded {
    /// The stage.
    pub stage: Stage,
    /// When the span ended (or the value was recorded), in nanoseconds since the epoch.
    pub at_ns: u64,
    /// The value, in nanoseconds (a span read backwards is 0).
    pub duration_ns: u64,
    /// Present when the stage has an expected interval: then the value also went into the
    /// corrected histograms, with the values the correction added.
    pub corrected: Option<Synthesized>,
}

/// The values a coordinated-omission correction added for one span: `duration − interval`,
/// `duration − 2·interval`, …, `count` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Synthesized {
    /// The interval the span was corrected with, in nanoseconds.
    pub interval_ns: u64,
    /// How many values were added (0 for a span no longer than twice the interval).
    pub count: u64,
}

/// The values one ring visit recorded, in order.
#[derive(Debug)]
pub struct ValueBatch<'a> {
    pub(crate) values: &'a [Recorded],
}

impl<'a> ValueBatch<'a> {
    /// The values, in the order they were recorded.
    pub fn values(&self) -> &'a [Recorded] {
        self.values
    }
}

/// What one cycle published: the snapshot, and each stage's cumulative histograms.
pub struct Cycle<'a> {
    pub(crate) snapshot: &'a Arc<Snapshot>,
    pub(crate) stages: &'a [StageState],
    /// Ids of the stages whose figures this cycle refreshed.
    pub(crate) changed: &'a [u32],
    pub(crate) layout: &'a Layout,
    pub(crate) settings: &'a crate::aggregator::Settings,
}

impl std::fmt::Debug for Cycle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cycle")
            .field("stages", &self.stages.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Cycle<'a> {
    /// The snapshot this cycle publishes.
    pub fn snapshot(&self) -> &'a Arc<Snapshot> {
        self.snapshot
    }

    /// Every stage the collector holds state for, in stage-id order (a stage's id is its place).
    pub fn stages(&self) -> impl ExactSizeIterator<Item = StageView<'a>> + 'a {
        self.stages.iter().map(|state| StageView { state })
    }

    /// The stages whose figures this cycle refreshed. A sink that keeps per-stage state takes
    /// [`Cycle::stages`] in its first cycle (a stage that has not changed since is not among
    /// these), then only these: with thousands of series a cycle refreshes a few hundred, so the
    /// sink's work per cycle follows what moved.
    pub fn changed_stages(&self) -> impl ExactSizeIterator<Item = StageView<'a>> + 'a {
        let stages = self.stages;
        self.changed.iter().map(move |&id| StageView {
            state: &stages[id as usize],
        })
    }

    /// How often the aggregator wakes.
    pub fn interval(&self) -> std::time::Duration {
        self.settings.interval
    }

    /// The histograms' significant digits.
    pub fn significant_digits(&self) -> u8 {
        self.settings.digits
    }

    /// The histograms' highest trackable value, in nanoseconds.
    pub fn highest_trackable_ns(&self) -> u64 {
        self.layout.highest()
    }
}

/// One stage's cumulative figures as of a cycle.
#[derive(Clone, Copy)]
pub struct StageView<'a> {
    state: &'a StageState,
}

impl std::fmt::Debug for StageView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageView")
            .field("stage", &self.state.stage)
            .finish_non_exhaustive()
    }
}

impl<'a> StageView<'a> {
    /// The stage.
    pub fn stage(&self) -> Stage {
        self.state.stage
    }

    /// The cumulative histogram of every value since install.
    pub fn cumulative(&self) -> HistogramView<'a> {
        HistogramView {
            hist: &self.state.cumulative.hist,
            tally: &self.state.cumulative.tally,
            layout: &self.state.layout,
        }
    }

    /// The coordinated-omission-corrected cumulative histogram, for a stage that has one.
    pub fn corrected(&self) -> Option<CorrectedView<'a>> {
        let c = self.state.corrected.as_deref()?;
        Some(CorrectedView {
            histogram: HistogramView {
                hist: &c.cumulative.hist,
                tally: &c.cumulative.tally,
                layout: &self.state.layout,
            },
            interval_ns: c.interval_ns,
        })
    }

    /// Its histograms' significant digits: the collector's, or its family's.
    pub fn significant_digits(&self) -> u8 {
        self.state.layout.digits()
    }

    /// The stage's span outcomes still waiting in rings at this publish.
    pub fn in_rings(&self) -> u64 {
        self.state.in_rings
    }
}

/// A corrected histogram and the interval its latest span was corrected with.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CorrectedView<'a> {
    /// The histogram (raw values and the added ones).
    pub histogram: HistogramView<'a>,
    /// The interval the latest span was corrected with, in nanoseconds.
    pub interval_ns: u64,
}

/// A cumulative histogram with the exact tallies of the same values.
#[derive(Clone, Copy)]
pub struct HistogramView<'a> {
    pub(crate) hist: &'a Hist<u64>,
    pub(crate) tally: &'a Tally,
    pub(crate) layout: &'a Layout,
}

impl std::fmt::Debug for HistogramView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistogramView")
            .field("count", &self.tally.count)
            .finish_non_exhaustive()
    }
}

impl<'a> HistogramView<'a> {
    /// Values recorded (exact).
    pub fn count(&self) -> u64 {
        self.tally.count
    }

    /// Their exact sum, in nanoseconds.
    pub fn sum_ns(&self) -> u128 {
        self.tally.sum
    }

    /// The smallest and largest value recorded (exact), if any.
    pub fn min_max_ns(&self) -> Option<(u64, u64)> {
        (self.tally.count > 0).then_some((self.tally.min, self.tally.max))
    }

    /// Deadline misses, drops, sampled-out and cancelled calls counted beside the values.
    pub fn events(&self) -> Events {
        Events {
            deadline_misses: self.tally.misses,
            dropped: self.tally.dropped,
            sampled_out: self.tally.sampled_out,
            cancelled: self.tally.cancelled,
        }
    }

    /// The non-empty buckets, ascending: `(lowest, highest, count)`, every value in
    /// `lowest..=highest` nanoseconds being counted in that bucket (its width is the histogram's
    /// precision).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + 'a {
        let layout = self.layout;
        self.hist
            .iter()
            .map(move |(i, n)| (layout.lowest_equivalent(i), layout.highest_equivalent(i), n))
    }
}

/// Counted events that are not durations, cumulative since install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Events {
    /// Spans that missed their deadline.
    pub deadline_misses: u64,
    /// Records lost to a full ring.
    pub dropped: u64,
    /// Calls skipped by sampling.
    pub sampled_out: u64,
    /// Spans abandoned before their end.
    pub cancelled: u64,
}
