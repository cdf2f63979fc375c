//! The aggregator's side: a [`Sink`] that counts every recorded value into its stage's
//! exponential buckets and, each export period, hands the export thread a copy of every stage's
//! cumulative figures.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use laptime::exponential::{ExponentialBuckets, ExponentialCounts, ExponentialIndex};
use laptime::sink::{Cycle, Install, Interest, Sink, StageView, ValueBatch};
use laptime::{InstallErrorKind, Stage};

use crate::Shared;
use crate::queue::Pushed;

/// One stage's cumulative figures as of a cycle: the engine's exact tallies and the buckets
/// counted from the same values.
#[derive(Debug, Clone)]
pub(crate) struct StagePoint {
    pub(crate) stage: Stage,
    pub(crate) count: u64,
    pub(crate) sum_ns: u128,
    pub(crate) min_max_ns: Option<(u64, u64)>,
    pub(crate) deadline_misses: u64,
    pub(crate) dropped: u64,
    pub(crate) buckets: ExponentialCounts,
}

/// What one export sends: every stage that has a figure, cumulative since `start`.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) start: SystemTime,
    pub(crate) time: SystemTime,
    pub(crate) points: Vec<StagePoint>,
}

/// A stage's tallies as the last cycle that refreshed it left them.
#[derive(Clone, Copy)]
struct Tallies {
    count: u64,
    sum_ns: u128,
    min_max_ns: Option<(u64, u64)>,
    deadline_misses: u64,
    dropped: u64,
}

/// Installed with `CollectorBuilder::with_sink(exporter.sink())`; see [`crate::OtlpExporter`].
pub struct OtlpSink {
    shared: Arc<Shared>,
    index: Arc<ExponentialIndex>,
    max_size: usize,
    period: Duration,
    /// By stage id: buckets of the values seen since install.
    buckets: Vec<Option<ExponentialBuckets>>,
    /// By stage id: the stage and its tallies, for stages that have any.
    tallies: Vec<Option<(Stage, Tallies)>>,
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
        Self {
            shared,
            index,
            max_size,
            period,
            buckets: Vec::new(),
            tallies: Vec::new(),
            primed: false,
            start: SystemTime::now(),
            last_export: Instant::now(),
        }
    }

    fn buckets_of(&mut self, stage: Stage) -> &mut ExponentialBuckets {
        let id = stage.id() as usize;
        if self.buckets.len() <= id {
            self.buckets.resize_with(id + 1, || None);
        }
        let (index, max_size) = (&self.index, self.max_size);
        self.buckets[id].get_or_insert_with(|| ExponentialBuckets::new(index.clone(), max_size))
    }

    fn read(&mut self, view: StageView<'_>) {
        let stage = view.stage();
        // A total's values reach it through the stages it adds up, which are exported; the
        // backend sums those.
        if stage.is_total() {
            return;
        }
        let h = view.cumulative();
        let events = h.events();
        let tallies = Tallies {
            count: h.count(),
            sum_ns: h.sum_ns(),
            min_max_ns: h.min_max_ns(),
            deadline_misses: events.deadline_misses,
            dropped: events.dropped,
        };
        if tallies.count == 0 && tallies.deadline_misses == 0 && tallies.dropped == 0 {
            return;
        }
        let id = stage.id() as usize;
        if self.tallies.len() <= id {
            self.tallies.resize(id + 1, None);
        }
        self.tallies[id] = Some((stage, tallies));
    }

    fn batch(&self) -> Batch {
        let points = self
            .tallies
            .iter()
            .enumerate()
            .filter_map(|(id, t)| {
                let (stage, t) = (*t)?;
                let buckets = match self.buckets.get(id) {
                    Some(Some(b)) => b.export(),
                    // Misses or drops but no value yet: an empty histogram at the start scale.
                    _ => ExponentialBuckets::new(self.index.clone(), self.max_size).export(),
                };
                Some(StagePoint {
                    stage,
                    count: t.count,
                    sum_ns: t.sum_ns,
                    min_max_ns: t.min_max_ns,
                    deadline_misses: t.deadline_misses,
                    dropped: t.dropped,
                    buckets,
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
        for v in batch.values() {
            if !v.stage.is_total() {
                self.buckets_of(v.stage).record_n(v.duration_ns, 1);
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
