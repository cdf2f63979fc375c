//! The aggregator's side: a [`Sink`] that counts every recorded value into its stage's
//! exponential buckets and, each export period, hands the export thread a copy of every stage's
//! cumulative figures.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use laptime::exponential::{ExponentialBuckets, ExponentialCounts, ExponentialIndex};
use laptime::sink::{Cycle, HistogramView, Install, Interest, Sink, StageView, ValueBatch};
use laptime::{InstallErrorKind, Stage};

use crate::Shared;
use crate::queue::Pushed;

/// One histogram's cumulative figures: the engine's exact tallies and the buckets counted from
/// the same values.
#[derive(Debug, Clone)]
pub(crate) struct HistogramPoint {
    pub(crate) count: u64,
    pub(crate) sum_ns: u128,
    pub(crate) min_max_ns: Option<(u64, u64)>,
    pub(crate) buckets: ExponentialCounts,
}

/// One stage's cumulative figures as of a cycle.
#[derive(Debug, Clone)]
pub(crate) struct StagePoint {
    pub(crate) stage: Stage,
    pub(crate) raw: HistogramPoint,
    /// Of the coordinated-omission-corrected values, for a stage with an expected interval.
    pub(crate) corrected: Option<HistogramPoint>,
    pub(crate) deadline_misses: u64,
    pub(crate) dropped: u64,
}

/// What one export sends: every stage that has a figure, cumulative since `start`.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) start: SystemTime,
    pub(crate) time: SystemTime,
    pub(crate) points: Vec<StagePoint>,
}

/// A histogram's exact tallies as the last cycle that refreshed its stage left them.
#[derive(Clone, Copy)]
struct Tally {
    count: u64,
    sum_ns: u128,
    min_max_ns: Option<(u64, u64)>,
}

impl Tally {
    fn of(h: HistogramView<'_>) -> Self {
        Self {
            count: h.count(),
            sum_ns: h.sum_ns(),
            min_max_ns: h.min_max_ns(),
        }
    }
}

/// A stage's tallies as the last cycle that refreshed it left them.
#[derive(Clone, Copy)]
struct Tallies {
    stage: Stage,
    raw: Tally,
    corrected: Option<Tally>,
    deadline_misses: u64,
    dropped: u64,
}

/// Buckets by stage id, created on a stage's first value.
struct BucketsById {
    index: Arc<ExponentialIndex>,
    max_size: usize,
    by_id: Vec<Option<ExponentialBuckets>>,
}

impl BucketsById {
    fn of(&mut self, stage: Stage) -> &mut ExponentialBuckets {
        let id = stage.id() as usize;
        if self.by_id.len() <= id {
            self.by_id.resize_with(id + 1, || None);
        }
        let (index, max_size) = (&self.index, self.max_size);
        self.by_id[id].get_or_insert_with(|| ExponentialBuckets::new(index.clone(), max_size))
    }

    /// `tally` with the stage's buckets (empty, at the start scale, before its first value).
    fn point(&self, id: usize, tally: Tally) -> HistogramPoint {
        let buckets = match self.by_id.get(id) {
            Some(Some(b)) => b.export(),
            _ => ExponentialBuckets::new(self.index.clone(), self.max_size).export(),
        };
        HistogramPoint {
            count: tally.count,
            sum_ns: tally.sum_ns,
            min_max_ns: tally.min_max_ns,
            buckets,
        }
    }
}

/// Installed with `CollectorBuilder::with_sink(exporter.sink())`; see [`crate::OtlpExporter`].
pub struct OtlpSink {
    shared: Arc<Shared>,
    period: Duration,
    /// Of the values seen since install.
    raw: BucketsById,
    /// Of the coordinated-omission-corrected values (a stage with an expected interval).
    corrected: BucketsById,
    /// By stage id: the tallies of stages that have any.
    tallies: Vec<Option<Tallies>>,
    /// Every stage was read once (the first cycle); since then only the changed ones.
    primed: bool,
    /// When the collector was installed: where every cumulative count starts.
    start: SystemTime,
    /// When the last batch was handed over (at install: the first goes a period later).
    last_export: Instant,
}

impl OtlpSink {
    pub(crate) fn new(
        shared: Arc<Shared>,
        index: Arc<ExponentialIndex>,
        max_size: usize,
        period: Duration,
    ) -> Self {
        let buckets = |index| BucketsById {
            index,
            max_size,
            by_id: Vec::new(),
        };
        Self {
            shared,
            period,
            raw: buckets(index.clone()),
            corrected: buckets(index),
            tallies: Vec::new(),
            primed: false,
            start: SystemTime::now(),
            last_export: Instant::now(),
        }
    }

    fn read(&mut self, view: StageView<'_>) {
        let stage = view.stage();
        // A total's values reach it through the stages it adds up, which are exported; the
        // backend sums those.
        if stage.is_total() {
            return;
        }
        let events = view.cumulative().events();
        let tallies = Tallies {
            stage,
            raw: Tally::of(view.cumulative()),
            corrected: view.corrected().map(|c| Tally::of(c.histogram)),
            deadline_misses: events.deadline_misses,
            dropped: events.dropped,
        };
        if tallies.raw.count == 0 && tallies.deadline_misses == 0 && tallies.dropped == 0 {
            return;
        }
        let id = stage.id() as usize;
        if self.tallies.len() <= id {
            self.tallies.resize(id + 1, None);
        }
        self.tallies[id] = Some(tallies);
    }

    fn batch(&self) -> Batch {
        let points = (self.tallies.iter().enumerate())
            .filter_map(|(id, t)| {
                let t = (*t)?;
                Some(StagePoint {
                    stage: t.stage,
                    raw: self.raw.point(id, t.raw),
                    corrected: t.corrected.map(|c| self.corrected.point(id, c)),
                    deadline_misses: t.deadline_misses,
                    dropped: t.dropped,
                })
            })
            .collect();
        Batch {
            start: self.start,
            time: SystemTime::now(),
            points,
        }
    }

    fn hand_over(&mut self) {
        self.last_export = Instant::now();
        let batch = self.batch();
        let counters = &self.shared.counters;
        match self.shared.queue.push(batch) {
            Pushed::Queued => counters.add_queued(),
            Pushed::DroppedOldest => {
                counters.add_queued();
                counters.add_dropped();
            }
            // The exporter's handle was dropped: exporting has stopped on purpose.
            Pushed::Closed => {}
        }
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn start(&mut self, _install: &Install) -> Result<(), InstallErrorKind> {
        self.start = SystemTime::now();
        self.last_export = Instant::now();
        Ok(())
    }

    fn interest(&self) -> Interest {
        Interest::VALUES
    }

    fn values(&mut self, batch: &ValueBatch<'_>) {
        // A total's values reach it through the stages it adds up: not counted twice.
        for v in batch.values().iter().filter(|v| !v.stage.is_total()) {
            self.raw.of(v.stage).record_n(v.duration_ns, 1);
            if let Some(added) = v.corrected {
                let corrected = self.corrected.of(v.stage);
                corrected.record_n(v.duration_ns, 1);
                if added.count > 0 {
                    let first = v.duration_ns - added.interval_ns;
                    corrected.record_sequence(first, added.interval_ns, added.count);
                }
            }
        }
    }

    fn cycle(&mut self, cycle: &Cycle<'_>) {
        if self.primed {
            cycle.changed_stages().for_each(|view| self.read(view));
        } else {
            cycle.stages().for_each(|view| self.read(view));
            self.primed = true;
        }
        if self.last_export.elapsed() >= self.period {
            self.hand_over();
        }
    }

    fn stop(&mut self) {
        // The final figures, after the collector's last drain; the export thread sends them
        // when the exporter's handle is dropped, or at once if it is idle.
        self.hand_over();
    }
}
