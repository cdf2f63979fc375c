//! The exporter's side of the seam: a [`Sink`] that counts every recorded value into the
//! exporter's buckets and hands the exporter each cycle's figures.

use std::sync::Arc;

use super::{PrometheusExporter, StageBuckets, StageFigures};
use crate::CollectorBuilder;
use crate::InstallErrorKind;
use crate::sink::{Cycle, Install, Interest, Sink, StageView, ValueBatch};
use crate::stage::Stage;
use crate::stats::Snapshot;
use crate::stats::table::SharedTable;

impl CollectorBuilder {
    /// Feeds `exporter` from the aggregator after each cycle (feature `prometheus`): bucket counts
    /// are kept as plain integers on the aggregator thread, never on the hot path. See
    /// [`crate::export::prometheus`].
    pub fn with_prometheus(self, exporter: PrometheusExporter) -> Self {
        self.with_sink(PrometheusSink {
            exporter,
            raw: Vec::new(),
            corrected: Vec::new(),
            figures: SharedTable::default(),
            primed: false,
            created: std::time::SystemTime::now(),
            #[cfg(feature = "trace")]
            traces: None,
        })
    }
}

/// Bucket counts by stage id, counted from the very values the engine records: `_count` and
/// `_sum` (the engine's exact tally) always agree with the buckets.
struct PrometheusSink {
    exporter: PrometheusExporter,
    raw: Vec<Option<StageBuckets>>,
    /// Of the coordinated-omission-corrected values, for stages with an expected interval.
    corrected: Vec<Option<StageBuckets>>,
    /// The figures last handed to the exporter, shared with its publications chunk by chunk.
    figures: SharedTable<StageFigures>,
    /// Every stage was exported once (the first cycle); since then only the changed ones.
    primed: bool,
    /// When the collector was installed: where every count starts.
    created: std::time::SystemTime,
    /// The kept golden traces' values, which become the buckets' exemplars.
    #[cfg(feature = "trace")]
    traces: Option<super::exemplars::TraceLink>,
}

impl PrometheusSink {
    fn buckets<'a>(
        exporter: &PrometheusExporter,
        by_stage: &'a mut Vec<Option<StageBuckets>>,
        stage: Stage,
    ) -> &'a mut StageBuckets {
        let id = stage.id() as usize;
        if by_stage.len() <= id {
            by_stage.resize_with(id + 1, || None);
        }
        by_stage[id].get_or_insert_with(|| exporter.stage_buckets(stage))
    }
}

impl Sink for PrometheusSink {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn start(&mut self, install: &Install) -> Result<(), InstallErrorKind> {
        self.created = std::time::SystemTime::now();
        #[cfg(feature = "trace")]
        {
            self.traces = super::exemplars::TraceLink::subscribe(install);
        }
        let _ = install;
        Ok(())
    }

    fn interest(&self) -> Interest {
        Interest::VALUES
    }

    fn values(&mut self, batch: &ValueBatch<'_>) {
        for v in batch.values() {
            Self::buckets(&self.exporter, &mut self.raw, v.stage).record(v.duration_ns);
            // A family total's buckets follow its series', as its tally does: its `_count` and
            // accounting stay exact (the histogram itself is not exported).
            if let Some(total) = v.stage.family().map(crate::Family::total)
                && total != v.stage
            {
                Self::buckets(&self.exporter, &mut self.raw, total).record(v.duration_ns);
            }
            if let Some(added) = v.corrected {
                let corrected = Self::buckets(&self.exporter, &mut self.corrected, v.stage);
                corrected.record(v.duration_ns);
                if added.count > 0 {
                    let first = v.duration_ns - added.interval_ns;
                    corrected.record_sequence(first, added.interval_ns, added.count);
                }
            }
        }
    }

    fn cycle(&mut self, cycle: &Cycle<'_>) {
        #[cfg(feature = "trace")]
        let linked = (self.traces.as_mut()).map_or_else(Vec::new, |t| t.apply(&mut self.raw));
        // Stages whose figures did not change keep last cycle's export: with thousands of
        // series, a cycle re-exports the few hundred it refreshed, not every one.
        let views: Box<dyn Iterator<Item = StageView<'_>>> = if self.primed {
            Box::new(cycle.changed_stages())
        } else {
            Box::new(cycle.stages())
        };
        for view in views {
            let stage = view.stage();
            // A name's total: its labelled stages are exported, and the backend sums those.
            if stage.0.is_name_total {
                continue;
            }
            let raw = Self::buckets(&self.exporter, &mut self.raw, stage)
                .export(stage, view.cumulative().tally);
            let corrected = view.corrected().map(|c| {
                Self::buckets(&self.exporter, &mut self.corrected, stage)
                    .export(stage, c.histogram.tally)
            });
            let exemplars = self.raw[stage.id() as usize]
                .as_ref()
                .and_then(StageBuckets::exemplars);
            self.figures.set(
                stage.id() as usize,
                StageFigures {
                    raw,
                    corrected,
                    exemplars,
                },
            );
        }
        // A kept tick's earlier spans may belong to stages this cycle did not refresh.
        #[cfg(feature = "trace")]
        for id in linked {
            let id = id as usize;
            if let Some(mut figures) = self.figures.get(id).cloned() {
                figures.exemplars = self.raw[id].as_ref().and_then(StageBuckets::exemplars);
                self.figures.set(id, figures);
            }
        }
        self.primed = true;
        self.exporter.publish(
            cycle.snapshot().clone(),
            self.figures.clone(),
            cycle.interval(),
            self.created,
        );
    }

    fn health_only(&mut self, snapshot: &Arc<Snapshot>) {
        self.exporter.republish(snapshot.clone());
    }

    fn stop(&mut self) {
        self.exporter.detach();
    }
}
