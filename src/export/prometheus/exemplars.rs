//! Where golden traces meet the Prometheus export (features `prometheus` and `trace`): the trace
//! sink offers the values of the ticks it keeps, and the exporter's sink, on the same aggregator
//! thread, makes each the exemplar of the bucket it falls in. Neither sink names the other: the
//! trace sink shares its store through the builder's extensions, and this module finds it there.

use std::sync::Arc;

use super::buckets::{Exemplar, StageBuckets};
use crate::sink::Install;
use crate::trace::{KeptValue, Store};

/// The exporter's subscription to the kept ticks' values.
pub(super) struct TraceLink {
    store: Arc<Store>,
    taken: Vec<KeptValue>,
}

impl TraceLink {
    /// Subscribes to the collector's golden traces, if it keeps any.
    pub(super) fn subscribe(install: &Install) -> Option<Self> {
        let store = install.extension::<Store>()?;
        store.kept.subscribe();
        Some(Self {
            store,
            taken: Vec::new(),
        })
    }

    /// Makes every value kept since the last call the exemplar of its bucket, in `raw` (bucket
    /// counts by stage id), and returns the ids of the stages that got one. A stage with no
    /// bucket counts yet (none of its values drained) gets none.
    pub(super) fn apply(&mut self, raw: &mut [Option<StageBuckets>]) -> Vec<u32> {
        self.taken.clear();
        self.store.kept.take(&mut self.taken);
        let mut changed = Vec::new();
        for v in &self.taken {
            let Some(buckets) = raw.get_mut(v.stage as usize).and_then(Option::as_mut) else {
                continue;
            };
            buckets.set_exemplar(Exemplar {
                tick: v.tick,
                value_ns: v.duration_ns,
                at: v.at,
            });
            if changed.last() != Some(&v.stage) {
                changed.push(v.stage);
            }
        }
        changed.sort_unstable();
        changed.dedup();
        changed
    }
}
