//! Queries: lock-free reads of the current collector's latest snapshot.

use std::time::Duration;

use super::CollectorShared;
use super::globals::CURRENT;

use crate::stage::Stage;
use crate::stats::{Health, Snapshot, StageStats, Violation, Window};

/// What the query functions accept: a [`Stage`], or a name, which reads the name's stage without
/// labels (looked up in the snapshot's own index: no lock, never registers). For a name that has
/// stages with labels ([`Stage::with_labels`]), or a family's, that stage is their total: the
/// exact figures of the name as a whole.
pub trait IntoStageQuery {
    /// The stage, if `snapshot` knows it.
    fn find_in(self, snapshot: &Snapshot) -> Option<Stage>;
}

impl IntoStageQuery for Stage {
    fn find_in(self, _: &Snapshot) -> Option<Stage> {
        Some(self)
    }
}

impl IntoStageQuery for &str {
    fn find_in(self, snapshot: &Snapshot) -> Option<Stage> {
        snapshot.stage_named(self)
    }
}

impl CollectorShared {
    pub(super) fn get_stats(
        &self,
        stage: impl IntoStageQuery,
        window: Window,
    ) -> Option<StageStats> {
        let snapshot = self.snapshot.load();
        let stage = stage.find_in(&snapshot)?;
        snapshot.stats(stage, window).cloned()
    }

    pub(super) fn get_all_stats(&self, window: Window) -> Vec<StageStats> {
        let snapshot = self.snapshot.load();
        // Sized once: with 20 000 series, growing by doubling copied the figures several times.
        let mut all = Vec::with_capacity(snapshot.stages.slots());
        all.extend(snapshot.all(window).cloned());
        all
    }

    pub(super) fn check_sla_violations(&self, window: Window) -> Vec<Violation> {
        let snapshot = self.snapshot.load();
        let in_window = snapshot.violations().iter().filter(|v| v.window == window);
        in_window.cloned().collect()
    }
}

fn with_current<R>(f: impl FnOnce(&CollectorShared) -> R) -> Option<R> {
    CURRENT.load().as_deref().map(f)
}

/// One stage's statistics over `window` from the current collector's latest snapshot. `None` if
/// there is no collector, the stage is unknown, the window is not kept, or nothing happened for the
/// stage in it. Lock-free: never waits on producers or the aggregator.
pub fn get_stats(stage: impl IntoStageQuery, window: Window) -> Option<StageStats> {
    with_current(|c| c.get_stats(stage, window)).flatten()
}

/// Every stage with activity in `window`, in stage-id order.
pub fn get_all_stats(window: Window) -> Vec<StageStats> {
    with_current(|c| c.get_all_stats(window)).unwrap_or_default()
}

/// The SLA violations for `window` in the latest snapshot.
pub fn check_sla_violations(window: Window) -> Vec<Violation> {
    with_current(|c| c.check_sla_violations(window)).unwrap_or_default()
}

/// The current collector's latest snapshot.
pub fn snapshot() -> Option<std::sync::Arc<Snapshot>> {
    with_current(|c| c.snapshot.load_full())
}

/// Runs an aggregation cycle of the current collector now and waits (at most 5 s) for its
/// snapshot. Returns false without a collector or if it did not answer in time.
pub fn flush() -> bool {
    with_current(|c| c.flush(Duration::from_secs(5))).unwrap_or(false)
}

/// The current collector's health and accounting.
pub fn health() -> Option<Health> {
    with_current(|c| c.snapshot.load().health.clone())
}
