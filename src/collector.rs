//! The collector: its configuration, the handle that owns its aggregator thread, and the process's
//! current collector.
//!
//! One collector is current per process. It starts by itself, with [`CollectorBuilder::default`],
//! on the first span when nobody installed one, and then runs for the life of the process; or it is
//! installed explicitly with [`CollectorBuilder::install`], which returns a [`CollectorHandle`]
//! whose drop runs a final drain, stops the aggregator thread and joins it. After that, spans
//! record nothing until another collector is installed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::{Condvar, Mutex};

use crate::aggregator::{Aggregator, Baseline, ThreadRing};
use crate::clock::ClockSource;
use crate::error::{ConfigError, InstallError, InstallErrorKind};
use crate::handoff::Handoff;
use crate::recorder::{CONTROL, Record, ThreadShared};
use crate::ring::{Producer, ring};
use crate::sla::{SlaPreset, SlaRule, Violation};
use crate::stage::{Stage, registry};
use crate::stats::Snapshot;
use crate::stats::{Health, StageStats, Window};
use crate::sync::Arc;

/// Largest per-thread ring, in records (32 bytes each).
pub const MAX_RING_CAPACITY: usize = 1 << 24;
/// Most slices one window may be split into.
pub const MAX_SLICES_PER_WINDOW: u64 = 1000;

/// A sliding window: its length and the slice it moves by. The window always holds the last
/// `length / slice` slices, the newest still filling, so it covers between `length - slice` and
/// `length` of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// How much history the window covers.
    pub length: Duration,
    /// How far it moves at a time; must divide `length`.
    pub slice: Duration,
}

impl WindowSpec {
    /// A window of `length` moving by `slice`.
    pub const fn new(length: Duration, slice: Duration) -> Self {
        Self { length, slice }
    }
}

/// Lowers the global sampling rate while the event rate is above a budget, and restores it when
/// the rate falls below half the budget (the seed's policy: above 1000 events/s, keep 10 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveSampling {
    /// Calls per second (all stages, recorded or not) above which sampling engages.
    pub budget_per_sec: f64,
    /// The rate used while engaged.
    pub reduced_rate: f64,
}

impl Default for AdaptiveSampling {
    fn default() -> Self {
        Self {
            budget_per_sec: 1000.0,
            reduced_rate: 0.1,
        }
    }
}

/// Callback receiving SLA violations as they start or change severity. Runs on the aggregator
/// thread, never on the hot path; a panic inside it is caught and counted.
pub type SlaCallback = Box<dyn Fn(&[Violation]) + Send + Sync + 'static>;

/// Configures and installs a collector. Every setter has a sane default.
///
/// ```
/// use std::time::Duration;
/// use laptime::{Collector, SlaRule, Metric, Window};
///
/// let handle = Collector::builder()
///     .with_ring_capacity(16 * 1024)
///     .with_interval(Duration::from_millis(10))
///     .with_deadline("tick_total", Duration::from_millis(200))
///     .with_sla_rule(
///         SlaRule::new("tick_total", Window::S60, Metric::P95)
///             .warning(Duration::from_millis(150))
///             .critical(Duration::from_millis(200)),
///     )
///     .install()
///     .expect("valid configuration, first collector of the process");
/// {
///     let _span = laptime::start("tick_total");
/// }
/// handle.flush();
/// assert_eq!(handle.get_stats("tick_total", Window::Cumulative).unwrap().count, 1);
/// ```
pub struct CollectorBuilder {
    pub(crate) ring_capacity: usize,
    pub(crate) interval: Duration,
    pub(crate) windows: Vec<WindowSpec>,
    pub(crate) digits: u8,
    pub(crate) highest: Duration,
    pub(crate) max_stages: usize,
    pub(crate) rules: Vec<SlaRule>,
    pub(crate) deadlines: Vec<(&'static str, Duration)>,
    pub(crate) expected_intervals: Vec<(&'static str, Duration)>,
    pub(crate) release_memory: bool,
    pub(crate) callback: Option<SlaCallback>,
    pub(crate) adaptive: Option<AdaptiveSampling>,
    /// `None` keeps the rate in force (what `set_sampling_rate` set, or 1).
    pub(crate) sampling_rate: Option<f64>,
    pub(crate) clock: ClockSource,
    pub(crate) max_in_flight: usize,
    pub(crate) abandon_after: Duration,
    pub(crate) latency_guard_reason: &'static str,
    /// Fed by the aggregator after each cycle (feature `prometheus`).
    #[cfg(feature = "prometheus")]
    pub(crate) prometheus: Option<crate::export::prometheus::PrometheusExporter>,
    /// Which ticks are traced (feature `trace`).
    #[cfg(feature = "trace")]
    pub(crate) tracing: Option<crate::trace::TraceConfig>,
}

impl std::fmt::Debug for CollectorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("CollectorBuilder");
        d.field("ring_capacity", &self.ring_capacity)
            .field("interval", &self.interval)
            .field("windows", &self.windows)
            .field("digits", &self.digits)
            .field("highest", &self.highest)
            .field("max_stages", &self.max_stages)
            .field("rules", &self.rules)
            .field("deadlines", &self.deadlines)
            .field("expected_intervals", &self.expected_intervals)
            .field("release_memory", &self.release_memory)
            .field("callback", &self.callback.is_some())
            .field("adaptive", &self.adaptive)
            .field("sampling_rate", &self.sampling_rate)
            .field("clock", &self.clock);
        #[cfg(feature = "trace")]
        d.field("tracing", &self.tracing);
        d.finish_non_exhaustive()
    }
}

impl Default for CollectorBuilder {
    fn default() -> Self {
        Self {
            ring_capacity: 8192,
            interval: Duration::from_millis(10),
            windows: vec![
                WindowSpec::new(Duration::from_secs(1), Duration::from_millis(250)),
                WindowSpec::new(Duration::from_secs(5), Duration::from_secs(1)),
                WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5)),
            ],
            digits: 3,
            highest: Duration::from_secs(3600),
            max_stages: crate::stage::DEFAULT_MAX_STAGES,
            rules: Vec::new(),
            deadlines: Vec::new(),
            expected_intervals: Vec::new(),
            release_memory: true,
            callback: None,
            adaptive: None,
            sampling_rate: None,
            clock: ClockSource::Auto,
            max_in_flight: 65_536,
            abandon_after: Duration::from_secs(600),
            latency_guard_reason: "latency_hard",
            #[cfg(feature = "prometheus")]
            prometheus: None,
            #[cfg(feature = "trace")]
            tracing: None,
        }
    }
}

/// Namespace for [`Collector::builder`].
#[derive(Debug)]
pub struct Collector(());

impl Collector {
    /// A builder with the defaults: 8 192-record rings, 10 ms interval, windows of 1 s (250 ms
    /// slices), 5 s (1 s) and 60 s (5 s), 1 ns – 1 h at 3 significant digits, 1 024 stages.
    pub fn builder() -> CollectorBuilder {
        CollectorBuilder::default()
    }
}

impl CollectorBuilder {
    /// Records each thread's ring holds (rounded up to a power of two). A thread producing faster
    /// than the aggregator drains for longer than the ring lasts loses records, counted.
    pub fn with_ring_capacity(mut self, records: usize) -> Self {
        self.ring_capacity = records;
        self
    }

    /// How often the aggregator wakes (it also wakes when a ring passes half full).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Replaces the sliding windows.
    pub fn with_windows(mut self, windows: impl IntoIterator<Item = WindowSpec>) -> Self {
        self.windows = windows.into_iter().collect();
        self
    }

    /// Adds one sliding window.
    pub fn with_window(mut self, length: Duration, slice: Duration) -> Self {
        self.windows.push(WindowSpec::new(length, slice));
        self
    }

    /// Histogram precision (1..=5 significant digits; 3 = 0.1 %) and highest trackable value
    /// (larger values are recorded as it and counted as saturated).
    pub fn with_histogram(mut self, significant_digits: u8, highest: Duration) -> Self {
        self.digits = significant_digits;
        self.highest = highest;
        self
    }

    /// The cap on distinct stages in the process.
    pub fn with_max_stages(mut self, cap: usize) -> Self {
        self.max_stages = cap;
        self
    }

    /// Adds an SLA rule.
    pub fn with_sla_rule(mut self, rule: SlaRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Adds a preset's rules and deadlines.
    pub fn with_sla_preset(mut self, preset: SlaPreset) -> Self {
        self.rules.extend(preset.rules);
        self.deadlines.extend(preset.deadlines);
        self
    }

    /// Gives stage `stage` a deadline (turns on its deadline watch).
    pub fn with_deadline(mut self, stage: &'static str, deadline: Duration) -> Self {
        self.deadlines.push((stage, deadline));
        self
    }

    /// Turns on coordinated-omission correction for stage `stage`, whose spans should start every
    /// `interval` (see [`Stage::set_expected_interval`]): its statistics then carry corrected
    /// figures beside the raw ones.
    pub fn with_expected_interval(mut self, stage: &'static str, interval: Duration) -> Self {
        self.expected_intervals.push((stage, interval));
        self
    }

    /// Whether the aggregator asks the C allocator to return freed memory to the OS after it
    /// has freed the rings of exited threads (on by default; glibc only, at most once a second).
    /// Without it, a process that keeps starting short-lived threads keeps their freed rings
    /// resident. Turn it off if the application pre-faults its heap and wants the free pages kept:
    /// `malloc_trim` gives back free pages of every arena, and holds each arena's lock while it
    /// does (threads that allocate meanwhile wait; the hot path does not allocate).
    pub fn with_memory_release(mut self, on: bool) -> Self {
        self.release_memory = on;
        self
    }

    /// Calls `callback` from the aggregator with violations that are new or changed severity.
    pub fn with_sla_callback(
        mut self,
        callback: impl Fn(&[Violation]) + Send + Sync + 'static,
    ) -> Self {
        self.callback = Some(Box::new(callback));
        self
    }

    /// Turns on adaptive sampling.
    pub fn with_adaptive_sampling(mut self, policy: AdaptiveSampling) -> Self {
        self.adaptive = Some(policy);
        self
    }

    /// The initial global sampling rate, in [0, 1].
    pub fn with_sampling_rate(mut self, rate: f64) -> Self {
        self.sampling_rate = Some(rate);
        self
    }

    /// Where ticks come from. Takes effect only if no clock has been read yet in the process.
    pub fn with_clock(mut self, clock: ClockSource) -> Self {
        self.clock = clock;
        self
    }

    /// Most deadline-watched spans tracked in flight at once; starts beyond it are judged by their
    /// duration only.
    pub fn with_max_in_flight(mut self, spans: usize) -> Self {
        self.max_in_flight = spans;
        self
    }

    /// How long an in-flight span is tracked before it is given up on (counted as abandoned).
    pub fn with_abandon_after(mut self, after: Duration) -> Self {
        self.abandon_after = after;
        self
    }

    /// The guard-trip reason counted when a latency guard trips (default `latency_hard`).
    pub fn with_latency_guard_reason(mut self, reason: &'static str) -> Self {
        self.latency_guard_reason = reason;
        self
    }

    /// Feeds `exporter` from the aggregator after each cycle (feature `prometheus`): bucket counts
    /// are kept as plain integers on the aggregator thread, never on the hot path. See
    /// [`crate::export::prometheus`].
    #[cfg(feature = "prometheus")]
    pub fn with_prometheus(
        mut self,
        exporter: crate::export::prometheus::PrometheusExporter,
    ) -> Self {
        self.prometheus = Some(exporter);
        self
    }

    /// Traces ticks as `config` says (feature `trace`): the aggregator rebuilds kept ticks' nested
    /// spans from the records it drains (nothing changes on the hot path), keeps the latest for
    /// [`CollectorHandle::traces`] and writes golden and slow ones to the output directory. See
    /// [`crate::trace`].
    #[cfg(feature = "trace")]
    pub fn with_tracing(mut self, config: crate::trace::TraceConfig) -> Self {
        self.tracing = Some(config);
        self
    }

    /// The windows a snapshot of this configuration holds: the sliding ones in order, then
    /// [`Window::Cumulative`].
    pub(crate) fn kept_windows(&self) -> Vec<Window> {
        let sliding = self.windows.iter().map(|w| Window::Last(w.length));
        sliding.chain([Window::Cumulative]).collect()
    }

    /// Checks the configuration without installing anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ring_capacity < 2 || self.ring_capacity > MAX_RING_CAPACITY {
            return Err(ConfigError::RingCapacity {
                capacity: self.ring_capacity,
            });
        }
        if self.interval.is_zero() || self.interval > Duration::from_secs(60) {
            return Err(ConfigError::Interval {
                interval: self.interval,
            });
        }
        if self.windows.is_empty() {
            return Err(ConfigError::NoWindows);
        }
        for (i, w) in self.windows.iter().enumerate() {
            if w.length.is_zero() || w.slice.is_zero() {
                return Err(ConfigError::ZeroWindow);
            }
            if w.length.as_nanos() % w.slice.as_nanos() != 0 {
                return Err(ConfigError::WindowNotMultipleOfSlice {
                    window: w.length,
                    slice: w.slice,
                });
            }
            let slices = (w.length.as_nanos() / w.slice.as_nanos()) as u64;
            if slices > MAX_SLICES_PER_WINDOW {
                return Err(ConfigError::TooManySlices {
                    window: w.length,
                    slices,
                });
            }
            if self.windows[..i].iter().any(|o| o.length == w.length) {
                return Err(ConfigError::DuplicateWindow { window: w.length });
            }
        }
        if !(1..=5).contains(&self.digits) {
            return Err(ConfigError::SignificantDigits {
                digits: self.digits,
            });
        }
        if self.highest < Duration::from_nanos(2048) || self.highest.as_nanos() > 1u128 << 62 {
            return Err(ConfigError::HighestValue {
                highest: self.highest,
            });
        }
        let registered = registry().len();
        if self.max_stages == 0
            || self.max_stages > crate::stage::MAX_STAGES_LIMIT
            || self.max_stages < registered
        {
            return Err(ConfigError::MaxStages {
                cap: self.max_stages,
                registered,
            });
        }
        if let Some(rate) = self.sampling_rate {
            crate::recorder::rate_to_threshold(rate)?;
        }
        crate::stage::valid_name(self.latency_guard_reason)?;
        #[cfg(feature = "trace")]
        if let Some(tracing) = &self.tracing {
            tracing.validate()?;
        }
        if self.abandon_after.is_zero() {
            return Err(ConfigError::DeadlineWatch {
                reason: "abandon_after is zero: in-flight spans would be given up at once",
            });
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::DeadlineWatch {
                reason: "max_in_flight is zero: no deadline-watched span could be tracked",
            });
        }
        if let Some(a) = self.adaptive {
            if !(a.budget_per_sec.is_finite() && a.budget_per_sec > 0.0) {
                return Err(ConfigError::AdaptiveBudget {
                    budget: a.budget_per_sec,
                });
            }
            crate::recorder::rate_to_threshold(a.reduced_rate)?;
        }
        for (stage, deadline) in &self.deadlines {
            crate::stage::valid_name(stage)?;
            if deadline.is_zero() {
                return Err(ConfigError::ZeroDeadline {
                    stage: (*stage).to_owned(),
                });
            }
        }
        for (stage, interval) in &self.expected_intervals {
            crate::stage::valid_name(stage)?;
            if interval.is_zero() {
                return Err(ConfigError::ZeroExpectedInterval {
                    stage: (*stage).to_owned(),
                });
            }
        }
        let kept = self.kept_windows();
        for rule in &self.rules {
            crate::stage::valid_name(rule.stage)?;
            crate::stage::valid_labels(rule.labels)?;
            rule.validate(&kept)?;
        }
        Ok(())
    }

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

    fn install_locked(self) -> Result<CollectorHandle, InstallError> {
        let fail = |kind, builder| {
            Err(InstallError {
                kind,
                builder: Box::new(builder),
            })
        };
        if let Err(e) = self.validate() {
            return fail(InstallErrorKind::Config(e), self);
        }
        if CURRENT.load().is_some() {
            return fail(InstallErrorKind::AlreadyRunning, self);
        }
        if let Err(e) = self.apply_to_stages() {
            return fail(InstallErrorKind::Config(e), self);
        }
        crate::clock::choose(self.clock);
        // Adaptive sampling engaged by a previous collector does not carry over.
        ADAPTIVE_REDUCED.store(u64::MAX, Ordering::Relaxed);
        match self.sampling_rate.map(crate::recorder::rate_to_threshold) {
            Some(Ok(base)) => set_base_sampling(base),
            _ => set_base_sampling(BASE_SAMPLING.load(Ordering::Relaxed)),
        }

        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
        let shared = Arc::new(CollectorShared {
            generation,
            ring_capacity: self.ring_capacity,
            stage_cap: self.max_stages,
            pending: Handoff::new(),
            snapshot: ArcSwap::from_pointee(Snapshot::empty(&self)),
            #[cfg(feature = "trace")]
            traces: self
                .tracing
                .as_ref()
                .filter(|t| t.enabled())
                .map(|t| std::sync::Arc::new(crate::trace::Store::new(t.keep()))),
            thread: OnceLock::new(),
            stop: AtomicBool::new(false),
            flush_requested: AtomicU64::new(0),
            flush_done: Mutex::new(0),
            flush_cv: Condvar::new(),
            #[cfg(feature = "test-util")]
            inject_panic: AtomicBool::new(false),
            #[cfg(feature = "profile")]
            profile: crate::profile::collect::Exchange::new(),
        });
        if !crate::COMPILED_IN {
            // Instrumentation is compiled out: a handle with no aggregator behind it. Nothing
            // becomes current, so spans (already inert) never look for it.
            return Ok(CollectorHandle { shared, join: None });
        }
        // Before the aggregator, so a directory that cannot be created or a writer that cannot
        // be spawned fails the install (dropped with the closure if the aggregator's spawn fails).
        #[cfg(feature = "trace")]
        let tracer = match (&self.tracing, &shared.traces) {
            (Some(config), Some(store)) => {
                match crate::trace::Tracer::start(config, store.clone(), generation) {
                    Ok(tracer) => Some(tracer),
                    Err(kind) => return fail(kind, self),
                }
            }
            _ => None,
        };
        let aggregator_shared = shared.clone();
        let baseline = Baseline::now();
        // Shared with the thread's closure, so a failed spawn can still hand the builder back.
        let builder = std::sync::Arc::new(Mutex::new(Some(self)));
        let for_thread = builder.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("laptime-aggregator-{generation}"))
            .spawn(move || {
                if let Some(builder) = for_thread.lock().take() {
                    let aggregator = Aggregator::new(aggregator_shared, builder, baseline);
                    #[cfg(feature = "trace")]
                    let aggregator = aggregator.with_tracer(tracer);
                    aggregator.run();
                }
            });
        let join = match spawned {
            Ok(join) => join,
            Err(e) => {
                let builder = builder.lock().take().unwrap_or_default();
                return fail(InstallErrorKind::Spawn(e), builder);
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

    /// Registers the stages named by deadlines and rules and applies their deadlines.
    fn apply_to_stages(&self) -> Result<(), ConfigError> {
        registry().set_cap(self.max_stages)?;
        for (name, deadline) in &self.deadlines {
            Stage::new(name)?.set_deadline(Some(*deadline))?;
        }
        for (name, interval) in &self.expected_intervals {
            Stage::new(name)?.set_expected_interval(Some(*interval))?;
        }
        for rule in &self.rules {
            rule.resolve()?;
        }
        #[cfg(feature = "trace")]
        if let Some(tracing) = self.tracing.as_ref().filter(|t| t.enabled()) {
            Stage::new(tracing.root())?;
        }
        Ok(())
    }
}

/// Serialises installs and the lazy start of the default collector.
static INSTALL: Mutex<()> = Mutex::new(());
/// The current collector, for registration (slow path) and queries (lock-free loads).
static CURRENT: ArcSwapOption<CollectorShared> = ArcSwapOption::const_empty();
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(0);
static NEXT_RING_ID: AtomicU64 = AtomicU64::new(0);
/// Set once a collector was installed, or the default one failed to start: from then on the first
/// span of a thread no longer starts a default collector.
static NO_LAZY_DEFAULT: AtomicBool = AtomicBool::new(false);
/// The lazily started default collector's handle: never dropped, it runs for the process.
static DEFAULT: Mutex<Option<CollectorHandle>> = Mutex::new(None);
/// The sampling threshold the user asked for; adaptive sampling lowers the live one below it.
static BASE_SAMPLING: AtomicU64 = AtomicU64::new(u64::MAX);
/// The threshold adaptive sampling holds the rate to while engaged; `u64::MAX` when not.
static ADAPTIVE_REDUCED: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets the rate the user asked for; the live rate is it, or lower while adaptive sampling holds.
pub(crate) fn set_base_sampling(threshold: u64) {
    BASE_SAMPLING.store(threshold, Ordering::Relaxed);
    apply_sampling();
}

/// Sets adaptive sampling's ceiling (`u64::MAX` = not engaged).
pub(crate) fn set_adaptive_ceiling(threshold: u64) {
    ADAPTIVE_REDUCED.store(threshold, Ordering::Relaxed);
    apply_sampling();
}

fn apply_sampling() {
    let base = BASE_SAMPLING.load(Ordering::Relaxed);
    let ceiling = ADAPTIVE_REDUCED.load(Ordering::Relaxed);
    CONTROL.set_sampling_threshold(base.min(ceiling));
}

/// The current collector, starting the default one if none was ever installed.
#[cold]
pub(crate) fn current_or_default() -> Option<(Arc<CollectorShared>, u64)> {
    if let Some(c) = CURRENT.load_full() {
        return Some((c.clone(), c.generation));
    }
    if NO_LAZY_DEFAULT.load(Ordering::Relaxed) {
        // A collector was installed (and stopped), or the default one could not start: stay
        // quiet until the next install, without taking the lock on every call.
        return None;
    }
    let _lock = INSTALL.lock();
    if let Some(c) = CURRENT.load_full() {
        return Some((c.clone(), c.generation));
    }
    if NO_LAZY_DEFAULT.load(Ordering::Relaxed) {
        return None;
    }
    let Ok(handle) = CollectorBuilder::default().install_locked() else {
        NO_LAZY_DEFAULT.store(true, Ordering::Relaxed);
        return None;
    };
    let shared = handle.shared.clone();
    *DEFAULT.lock() = Some(handle);
    Some((shared.clone(), shared.generation))
}

/// State shared by the handle, the aggregator thread and registering producer threads.
pub(crate) struct CollectorShared {
    pub(crate) generation: u64,
    ring_capacity: usize,
    stage_cap: usize,
    /// New rings on their way to the aggregator; closed before its final drain.
    pub(crate) pending: Handoff<ThreadRing>,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    thread: OnceLock<Thread>,
    pub(crate) stop: AtomicBool,
    pub(crate) flush_requested: AtomicU64,
    pub(crate) flush_done: Mutex<u64>,
    pub(crate) flush_cv: Condvar,
    #[cfg(feature = "test-util")]
    pub(crate) inject_panic: AtomicBool,
    /// Profile requests to the aggregator and its replies, and when this collector was installed
    /// (feature `profile`).
    #[cfg(feature = "profile")]
    pub(crate) profile: crate::profile::collect::Exchange,
    /// The latest kept traces, when tracing is on (feature `trace`).
    #[cfg(feature = "trace")]
    pub(crate) traces: Option<std::sync::Arc<crate::trace::Store>>,
}

impl CollectorShared {
    /// Creates this thread's ring and sampling counters and hands the consumer to the aggregator:
    /// the allocations of a thread's first record, none after.
    pub(crate) fn register_thread(
        &self,
    ) -> Option<(Producer<Record>, std::sync::Arc<ThreadShared>, u64)> {
        let (producer, consumer) = ring::<Record>(self.ring_capacity);
        let shared = std::sync::Arc::new(ThreadShared {
            sampled_out: (0..self.stage_cap).map(|_| AtomicU64::new(0)).collect(),
            touched: AtomicBool::new(false),
        });
        // Process-wide, so span ids stay unique across collectors (a guard may outlive one).
        let ring_id = NEXT_RING_ID.fetch_add(1, Ordering::Relaxed) + 1;
        let ring = ThreadRing::new(
            consumer,
            shared.clone(),
            self.stage_cap,
            ring_id,
            self.traced(),
        );
        // Refused once the aggregator has made its final drain: no ring may join after that.
        self.pending.register(ring).ok()?;
        Some((producer, shared, ring_id))
    }

    /// Whether a tracer runs: `traces` exists exactly when tracing is configured and enabled.
    #[cfg(feature = "trace")]
    fn traced(&self) -> bool {
        self.traces.is_some()
    }

    /// Without feature `trace`, never.
    #[cfg(not(feature = "trace"))]
    fn traced(&self) -> bool {
        false
    }

    /// Wakes the aggregator early.
    pub(crate) fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        if !crate::COMPILED_IN {
            return false; // no aggregator to run a cycle
        }
        if self
            .thread
            .get()
            .is_some_and(|t| t.id() == std::thread::current().id())
        {
            return false; // called from an SLA callback: the aggregator cannot wait for itself
        }
        let ticket = self.flush_requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake();
        let deadline = std::time::Instant::now() + timeout;
        let mut done = self.flush_done.lock();
        while *done < ticket {
            if self.flush_cv.wait_until(&mut done, deadline).timed_out() {
                return *done >= ticket;
            }
        }
        true
    }
}

/// Owns a running collector. Dropping it drains every ring one last time, stops the aggregator
/// thread and joins it; spans then record nothing until another collector is installed.
#[must_use = "dropping the handle stops the collector at once"]
pub struct CollectorHandle {
    shared: Arc<CollectorShared>,
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

    /// The run so far as a perf profile named `name` (feature `profile`): every stage with any
    /// activity since install, in stage order, with its cumulative histogram and exact figures
    /// (the same percentiles as `get_stats(stage, Window::Cumulative)`), the collector's
    /// histogram settings, sampling rate, interval and ring capacity, and the install time as
    /// its start. Flushes first, so every span that ended before the call is in it.
    ///
    /// Fails when instrumentation is compiled out, or when the aggregator does not answer
    /// within 5 s in all (or is asked from an SLA callback, which runs on the aggregator thread).
    ///
    /// ```
    /// let handle = laptime::Collector::builder().install().unwrap();
    /// laptime::record("order_send", std::time::Duration::from_micros(40));
    /// let profile = handle.profile("nightly").unwrap();
    /// assert_eq!(profile.stage("order_send").unwrap().count, 1);
    /// # let dir = std::env::temp_dir().join(format!("laptime-doc-{}", std::process::id()));
    /// profile.write(dir.join("nightly.json")).unwrap();
    /// # std::fs::remove_dir_all(dir).unwrap();
    /// ```
    #[cfg(feature = "profile")]
    pub fn profile(
        &self,
        name: &str,
    ) -> Result<crate::profile::Profile, crate::profile::ProfileError> {
        crate::profile::collect::take(&self.shared.profile, name, |deadline| {
            self.shared
                .flush(deadline.saturating_duration_since(std::time::Instant::now()))
        })
    }

    /// The latest kept traces, oldest first (feature `trace`; at most `TraceConfig::with_keep`);
    /// empty when tracing is off. Traces are kept as the aggregator drains: call
    /// [`flush`](Self::flush) first to include ticks that just ended.
    #[cfg(feature = "trace")]
    pub fn traces(&self) -> Vec<crate::trace::Trace> {
        self.shared
            .traces
            .as_ref()
            .map_or_else(Vec::new, |store| store.traces())
    }

    /// Writes [`traces`](Self::traces) to `path` as Chrome trace-event JSON (feature `trace`; see
    /// [`crate::trace::chrome_json`]): open it in <https://ui.perfetto.dev> or `chrome://tracing`.
    /// Missing parent directories are created; the file is written whole (a temporary file
    /// renamed into place).
    #[cfg(feature = "trace")]
    pub fn write_chrome_trace(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        crate::fs::write_atomic(
            path.as_ref(),
            crate::trace::chrome_json(&self.traces()).as_bytes(),
        )
    }

    /// Makes the aggregator panic at its next cycle (feature `test-util`), to show the panic is
    /// caught, counted and the aggregator carries on.
    #[cfg(feature = "test-util")]
    pub fn inject_aggregator_panic(&self) {
        self.shared.inject_panic.store(true, Ordering::Relaxed);
        self.shared.wake();
    }
}

impl Drop for CollectorHandle {
    fn drop(&mut self) {
        let _lock = INSTALL.lock();
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

/// What the query functions accept: a [`Stage`], or the name of an unlabelled stage (looked up in
/// the snapshot's own index: no lock, never registers).
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
    fn get_stats(&self, stage: impl IntoStageQuery, window: Window) -> Option<StageStats> {
        let snapshot = self.snapshot.load();
        let stage = stage.find_in(&snapshot)?;
        snapshot.stats(stage, window).cloned()
    }

    fn get_all_stats(&self, window: Window) -> Vec<StageStats> {
        self.snapshot.load().all(window).cloned().collect()
    }

    fn check_sla_violations(&self, window: Window) -> Vec<Violation> {
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

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;
    use crate::Window;

    /// The publication protocol end to end, small enough for Miri with many seeds
    /// (`scripts/miri.sh --wide`): install (the generation published after the collector),
    /// two threads registering their rings and recording while a reader loads snapshots, the
    /// aggregator draining and storing them, and the stop's last drain. Every snapshot the reader
    /// sees is internally consistent, and the last one holds every span.
    #[test]
    fn publication_with_two_producers_and_a_reader() {
        const SPANS: u64 = if cfg!(miri) { 20 } else { 2_000 };
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
        assert!(handle.flush());
        let s = handle.get_stats(stage, Window::Cumulative).unwrap();
        assert_eq!((s.produced, s.in_rings), (2 * SPANS, 0));
        assert_eq!(s.count + s.dropped, 2 * SPANS);
        drop(handle);
    }
}
