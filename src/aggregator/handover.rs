//! Replacing a running collector without losing what it recorded: the lazily started default
//! collector (started by a span before any `install`) hands its cumulative figures to the
//! collector installed in its place.
//!
//! The old aggregator makes its final drain, then copies each stage's cumulative histogram and
//! exact tally, and the drop and trip counts it had already taken in. The new aggregator starts
//! its cumulative histograms from those, and counts drops and trips from where the old one left
//! off: nothing is lost, nothing counted twice. Its sliding windows start empty (they cover time
//! since the install), and sinks that read values get the carried ones as values.

use std::sync::atomic::Ordering;

use super::{Aggregator, Baseline};
use crate::hist::{Layout, Tally};
use crate::sink::Recorded;
use crate::stage::Stage;

/// A stopped collector's cumulative figures, for the one installed in its place.
pub(crate) struct Handover {
    /// By stage id.
    stages: Vec<CarriedStage>,
    /// By guard reason index: trips already counted.
    trips_seen: Vec<u64>,
}

struct CarriedStage {
    stage: Stage,
    layout: Layout,
    /// The cumulative histogram's non-zero counters, (index, count).
    counts: Vec<(usize, u64)>,
    tally: Tally,
    dropped_seen: u64,
}

/// Carried values handed to value sinks per batch: the batch buffer stays small however many
/// spans came before the install.
const REPLAY_BATCH: usize = 4096;

impl Aggregator {
    /// On the stopping aggregator, after its final cycle: its figures, if the install that
    /// stops it asked for them.
    pub(super) fn hand_over(&self) {
        if !self.shared.hand_over.load(Ordering::Acquire) {
            return;
        }
        let stages = self
            .stages
            .iter()
            .map(|s| CarriedStage {
                stage: s.stage,
                layout: s.layout,
                counts: s.cumulative.hist.iter().collect(),
                tally: s.cumulative.tally,
                dropped_seen: s.dropped_seen,
            })
            .collect();
        let trips_seen = self.reasons.iter().map(|r| r.seen).collect();
        *self.shared.handover.lock() = Some(Handover { stages, trips_seen });
    }

    /// On the new aggregator, before its first cycle: starts every carried stage's cumulative
    /// figures from the old collector's.
    pub(crate) fn carry(&mut self, handover: Handover) {
        self.ensure_stage_states();
        for carried in handover.stages {
            let old = &carried.layout;
            let Some(state) = self.stages.get_mut(carried.stage.id() as usize) else {
                continue;
            };
            for &(index, n) in &carried.counts {
                // The same layout keeps the counter; another one takes the bucket's reported
                // value (its highest equivalent), within the coarser of the two precisions.
                let new_index = if *old == state.layout {
                    index
                } else {
                    state.layout.index(old.highest_equivalent(index))
                };
                state.cumulative.hist.record(new_index, n);
            }
            state.cumulative.tally.merge(&carried.tally);
            state.dirty = true;
            // A total is replayed through the stages it adds up (sinks add them up themselves).
            if self.interest.values && !carried.stage.is_total() {
                self.replay(carried.stage, old, &carried.counts);
            }
        }
    }

    /// Hands value sinks the carried histogram as values (each bucket's reported value, as many
    /// times as it counted), so their counts agree with the engine's.
    fn replay(&mut self, stage: Stage, layout: &Layout, counts: &[(usize, u64)]) {
        for &(index, n) in counts {
            let value = Recorded {
                stage,
                at_ns: 0,
                duration_ns: layout.highest_equivalent(index),
                corrected: None,
            };
            for _ in 0..n {
                self.visit_values.push(value);
                if self.visit_values.len() >= REPLAY_BATCH {
                    self.hand_over_values();
                }
            }
        }
        self.hand_over_values();
    }
}

impl Baseline {
    /// Counters as they stood for `handover`'s collector: drops and trips it already counted are
    /// not counted again, and those since (while no collector ran) are not lost.
    pub(crate) fn carried(handover: &Handover) -> Self {
        let mut baseline = Self::now();
        for carried in &handover.stages {
            if let Some(seen) = baseline.drops.get_mut(carried.stage.id() as usize) {
                *seen = carried.dropped_seen;
            }
        }
        for (seen, carried) in baseline.trips.iter_mut().zip(&handover.trips_seen) {
            *seen = *carried;
        }
        baseline
    }
}
