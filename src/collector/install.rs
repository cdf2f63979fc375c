//! Installing a collector, and the handle that owns it.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::globals::{
    ADAPTIVE_REDUCED, BASE_SAMPLING, CURRENT, DEFAULT, INSTALL, NEXT_GENERATION, NO_LAZY_DEFAULT,
    set_base_sampling,
};
use super::query::IntoStageQuery;
use super::{CollectorBuilder, CollectorShared};
use crate::aggregator::{Aggregator, Baseline, Handover};
use crate::error::{ConfigError, InstallError, InstallErrorKind};
use crate::record::CONTROL;
use crate::sink::{Install, Sink};

use crate::stage::{Stage, registry};
use crate::stats::{Health, Snapshot, StageStats, Violation, Window};
use crate::sync::Arc;

impl CollectorBuilder {
    /// Validates, makes this the process's collector and starts its aggregator thread.
    ///
    /// Fails, handing the builder back, when the configuration is invalid, when a collector is
    /// already running (perhaps the default one, started by the first span), or when the thread
    /// cannot be spawned.
    ///
    /// Without the `enable` feature it validates the configuration the same way and returns a
    /// handle with nothing behind it: no thread is started and its snapshot stays empty.
    pub fn install(self) -> Result<CollectorHandle, InstallError> {
        let _lock = INSTALL.lock();
        self.install_locked()
    }

    pub(super) fn install_locked(mut self) -> Result<CollectorHandle, InstallError> {
        let fail = |kind, builder| {
            Err(InstallError {
                kind,
                builder: Box::new(builder),
            })
        };
        if let Err(e) = self.validate() {
            return fail(InstallErrorKind::Config(e), self);
        }
        // A default collector started by a span before this install gives way, handing over
        // what it recorded; a collector someone installed does not.
        let handover = match CURRENT.load().is_some() {
            false => None,
            true => match retire_default() {
                Some(handover) => Some(handover),
                None => return fail(InstallErrorKind::AlreadyRunning, self),
            },
        };
        if let Err(e) = self.apply_to_stages() {
            return fail(InstallErrorKind::Config(e), self);
        }
        self.apply_process_settings();

        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
        let shared = Arc::new(CollectorShared::new(
            generation,
            self.ring_capacity,
            self.max_stages,
            self.sinks.iter().any(|s| s.interest().records),
            self.extensions.clone(),
            self.kept_windows(),
        ));
        if !crate::COMPILED_IN {
            // Instrumentation is compiled out: a handle with no aggregator behind it. Nothing
            // becomes current, so spans (already inert) never look for it.
            return Ok(CollectorHandle { shared, join: None });
        }
        // Before the aggregator, so a directory that cannot be created or a thread that cannot
        // be spawned fails the install (dropped with the closure if the aggregator's spawn fails).
        let install = Install {
            generation,
            extensions: self.extensions.clone(),
        };
        for i in 0..self.sinks.len() {
            if let Err(kind) = self.sinks[i].start(&install) {
                return fail(kind, self);
            }
        }
        let join = match self.spawn_aggregator(shared.clone(), handover) {
            Ok(join) => join,
            Err((e, builder)) => {
                return Err(InstallError {
                    kind: InstallErrorKind::Spawn(e),
                    builder,
                });
            }
        };
        NO_LAZY_DEFAULT.store(true, Ordering::Relaxed);
        let _ = shared.thread.set(join.thread().clone());
        CURRENT.store(Some(shared.clone()));
        // After CURRENT (Release, and an Acquire fence on the registering side): a thread that
        // sees the new generation and registers finds the new collector.
        CONTROL.set_generation(generation);
        Ok(CollectorHandle {
            shared,
            join: Some(join),
        })
    }

    /// The process-wide settings this collector brings: the clock, and the sampling rate (its
    /// own, or the one set before install), with no adaptive reduction carried over from a
    /// previous collector.
    fn apply_process_settings(&self) {
        crate::clock::choose(self.clock);
        ADAPTIVE_REDUCED.store(u64::MAX, Ordering::Relaxed);
        match self.sampling_rate.map(crate::record::rate_to_threshold) {
            Some(Ok(base)) => set_base_sampling(base),
            _ => set_base_sampling(BASE_SAMPLING.load(Ordering::Relaxed)),
        }
    }

    /// Starts the aggregator thread on this builder's settings and sinks, carrying `handover`'s
    /// figures from a default collector that gave way. When the thread cannot be spawned, the
    /// builder comes back with the error.
    fn spawn_aggregator(
        self,
        shared: Arc<CollectorShared>,
        handover: Option<Handover>,
    ) -> Result<JoinHandle<()>, (std::io::Error, Box<CollectorBuilder>)> {
        let generation = shared.generation;
        let baseline = handover
            .as_ref()
            .map_or_else(Baseline::now, Baseline::carried);
        // Shared with the thread's closure, so a failed spawn can still hand the builder back.
        let builder = std::sync::Arc::new(Mutex::new(Some(self)));
        let for_thread = builder.clone();
        std::thread::Builder::new()
            .name(format!("laptime-aggregator-{generation}"))
            .spawn(move || {
                if let Some(builder) = for_thread.lock().take() {
                    let (settings, sinks) = builder.into_parts();
                    let mut aggregator = Aggregator::new(shared, settings, sinks, baseline);
                    if let Some(handover) = handover {
                        aggregator.carry(handover);
                    }
                    aggregator.run();
                }
            })
            .map_err(|e| (e, Box::new(builder.lock().take().unwrap_or_default())))
    }

    /// Registers the stages named by deadlines, applies their deadlines, and checks the names
    /// the rules give.
    fn apply_to_stages(&self) -> Result<(), ConfigError> {
        registry().set_cap(self.max_stages)?;
        registry().set_series_cap(self.max_series)?;
        for (name, deadline) in &self.deadlines {
            Stage::new(name)?.set_deadline(Some(*deadline))?;
        }
        for (name, interval) in &self.expected_intervals {
            Stage::new(name)?.set_expected_interval(Some(*interval))?;
        }
        for rule in &self.rules {
            // A rule on a family judges its total or one of its series: nothing to register.
            match crate::family::named(rule.stage) {
                Some(family) => {
                    family.stage_for_rule(rule.labels).ok_or_else(|| {
                        crate::StageError::FamilyRedeclared {
                            name: rule.stage.to_owned(),
                            label_names: family
                                .label_names()
                                .iter()
                                .map(|l| l.to_string())
                                .collect(),
                        }
                    })?;
                }
                // Checked, not registered: the stage may be a family declared later (a plain
                // stage of its name would refuse it); the aggregator finds it when it exists.
                None => rule.check_names()?,
            }
        }
        Ok(())
    }
}

/// Owns a running collector. Dropping it drains every ring one last time, stops the aggregator
/// thread and joins it; spans then record nothing until another collector is installed.
#[must_use = "dropping the handle stops the collector at once"]
pub struct CollectorHandle {
    pub(super) shared: Arc<CollectorShared>,
    join: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CollectorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorHandle")
            .field("generation", &self.shared.generation)
            .finish_non_exhaustive()
    }
}

impl CollectorHandle {
    /// Runs an aggregation cycle now and waits (at most 5 s) until its snapshot is published.
    /// Returns false if the aggregator did not answer in time.
    pub fn flush(&self) -> bool {
        self.shared.flush(Duration::from_secs(5))
    }

    /// The latest published snapshot.
    pub fn snapshot(&self) -> std::sync::Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// One stage's statistics over `window`; `None` if the stage is unknown, the window is not
    /// kept, or nothing happened for the stage in it.
    pub fn get_stats(&self, stage: impl IntoStageQuery, window: Window) -> Option<StageStats> {
        self.shared.get_stats(stage, window)
    }

    /// Every stage with activity in `window`, in stage-id order.
    pub fn get_all_stats(&self, window: Window) -> Vec<StageStats> {
        self.shared.get_all_stats(window)
    }

    /// The SLA rules for `window` that the latest snapshot violates.
    pub fn check_sla_violations(&self, window: Window) -> Vec<Violation> {
        self.shared.check_sla_violations(window)
    }

    /// The library's own health and accounting.
    pub fn health(&self) -> Health {
        self.shared.snapshot.load().health.clone()
    }

    /// Adds `sink` to the running collector: the aggregator takes it at its next cycle (see
    /// [`crate::sink`]; [`CollectorBuilder::with_sink`] adds one at install). Returns false,
    /// dropping the sink, when instrumentation is compiled out or the collector is stopping.
    pub fn add_sink(&self, sink: Box<dyn Sink>) -> bool {
        if self.join.is_none() || self.shared.stop.load(Ordering::Acquire) {
            return false;
        }
        self.shared.added_sinks.lock().push(sink);
        true
    }

    /// [`flush`](Self::flush) with its own time limit.
    pub fn flush_within(&self, timeout: Duration) -> bool {
        self.shared.flush(timeout)
    }

    /// When the collector was installed (wall clock).
    pub fn installed_at(&self) -> std::time::SystemTime {
        self.shared.installed_at
    }

    /// The value of type `T` kept with [`CollectorBuilder::with_extension`], if any: a sink's
    /// shared state that the application reads.
    pub fn extension<T: Any + Send + Sync>(&self) -> Option<std::sync::Arc<T>> {
        self.shared.extensions.get::<T>()
    }

    /// Makes the aggregator panic at its next cycle (feature `test-util`), to show the panic is
    /// caught, counted and the aggregator carries on.
    #[cfg(feature = "test-util")]
    pub fn inject_aggregator_panic(&self) {
        self.shared.inject_panic.store(true, Ordering::Relaxed);
        self.shared.wake();
    }
}

/// Stops the lazily started default collector, if it is the current one, and returns what it
/// recorded. Called with the install lock held.
fn retire_default() -> Option<Handover> {
    let mut default = DEFAULT.lock().take()?;
    let current = CURRENT.load();
    if current.as_ref().map(|c| c.generation) != Some(default.shared.generation) {
        *DEFAULT.lock() = Some(default);
        return None;
    }
    default.shared.hand_over.store(true, Ordering::Release);
    default.stop_locked();
    default.shared.handover.lock().take()
}

impl Drop for CollectorHandle {
    fn drop(&mut self) {
        if self.join.is_none() && self.shared.stop.load(Ordering::Acquire) {
            return; // stopped already, by the install that replaced it (which holds the lock)
        }
        let _lock = INSTALL.lock();
        self.stop_locked();
    }
}

impl CollectorHandle {
    /// Stops the collector: the final drain, the thread joined, no longer current. Called with
    /// the install lock held.
    fn stop_locked(&mut self) {
        CONTROL.set_stopped(self.shared.generation);
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
        let current = CURRENT.load();
        if current
            .as_ref()
            .is_some_and(|c| c.generation == self.shared.generation)
        {
            CURRENT.store(None);
        }
    }
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;
    use crate::Collector;

    /// The publication protocol end to end, small enough for Miri with many seeds
    /// (`scripts/miri.sh --wide`): install (the generation published after the collector),
    /// two threads registering their rings and recording while a reader loads snapshots, the
    /// aggregator draining and storing them, and the stop's last drain. Every snapshot the reader
    /// sees is internally consistent, and the last one holds every span.
    #[test]
    fn publication_with_two_producers_and_a_reader() {
        const SPANS: u64 = if cfg!(miri) { 20 } else { 2_000 };
        // An interpreted aggregation cycle takes seconds of real time.
        const FLUSH_WITHIN: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 5 });
        let handle = Collector::builder()
            .with_interval(Duration::from_millis(1))
            .with_ring_capacity(8)
            .install()
            .expect("install");
        let stage = Stage::new("publication_test").unwrap();
        let producers: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    for i in 0..SPANS {
                        crate::record(stage, Duration::from_nanos(i + 1));
                    }
                })
            })
            .collect();
        let reader = {
            let shared = handle.shared.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..SPANS {
                    let snapshot = shared.snapshot.load_full();
                    let h = &snapshot.health;
                    assert_eq!(h.produced, h.records + h.dropped + h.in_rings);
                    if let Some(s) = snapshot.stats(stage, Window::Cumulative) {
                        assert_eq!(s.produced, s.count + s.dropped + s.cancelled + s.in_rings);
                        assert!(s.produced >= last, "produced went backwards");
                        last = s.produced;
                    }
                    std::thread::yield_now();
                }
            })
        };
        for p in producers {
            p.join().unwrap();
        }
        reader.join().unwrap();
        assert!(handle.flush_within(FLUSH_WITHIN));
        let s = handle.get_stats(stage, Window::Cumulative).unwrap();
        assert_eq!((s.produced, s.in_rings), (2 * SPANS, 0));
        assert_eq!(s.count + s.dropped, 2 * SPANS);
        drop(handle);
    }
}
