//! The collector's settings, as the user writes them.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::aggregator::Settings;
use crate::clock::ClockSource;
use crate::error::ConfigError;
use crate::limits::{MAX_RING_CAPACITY, MAX_SLICES_PER_WINDOW, MIN_INTERVAL, MIN_SLICE};
use crate::sink::Sink;
use crate::sla::{SlaPreset, SlaRule};
use crate::stage::registry;
use crate::stats::{Violation, Window};

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
///             .with_warning(Duration::from_millis(150))
///             .with_critical(Duration::from_millis(200)),
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
    pub(crate) max_series: usize,
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
    pub(crate) on_start: Option<crate::aggregator::AggregatorStart>,
    /// What the aggregator feeds after each cycle: exporters, profiles, traces, the user's own.
    pub(crate) sinks: Vec<Box<dyn Sink>>,
    /// Values the handle hands out by type (a sink's shared state, e.g. the kept traces).
    pub(crate) extensions: Extensions,
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
            .field("max_series", &self.max_series)
            .field("rules", &self.rules)
            .field("deadlines", &self.deadlines)
            .field("expected_intervals", &self.expected_intervals)
            .field("release_memory", &self.release_memory)
            .field("callback", &self.callback.is_some())
            .field("aggregator_start", &self.on_start.is_some())
            .field("adaptive", &self.adaptive)
            .field("sampling_rate", &self.sampling_rate)
            .field("clock", &self.clock)
            .field(
                "sinks",
                &self.sinks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            );
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
            max_series: crate::limits::DEFAULT_MAX_SERIES,
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
            on_start: None,
            sinks: Vec::new(),
            extensions: Extensions::default(),
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

    /// The cap on distinct named stages in the process (family totals included; series of
    /// families have their own cap, [`CollectorBuilder::with_max_series`]).
    pub fn with_max_stages(mut self, cap: usize) -> Self {
        self.max_stages = cap;
        self
    }

    /// The cap on series of all families together (default
    /// [`crate::limits::DEFAULT_MAX_SERIES`]); past it, new label values go to their family's
    /// overflow series (see [`crate::Family`]).
    pub fn with_max_series(mut self, cap: usize) -> Self {
        self.max_series = cap;
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
    /// `interval` (see [`crate::Stage::set_expected_interval`]): its statistics then carry corrected
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

    /// Runs `on_start` once on the aggregator thread, before its first cycle: the place to pin
    /// it to a core away from the hot threads and their SMT siblings (with the `core_affinity`
    /// crate, `libc::sched_setaffinity` or the like), raise or lower its priority, or register
    /// it with a profiler. On a 2-core machine an aggregator sharing a core with the hot thread
    /// can double what that thread's work costs.
    ///
    /// A panic in it is caught and counted in [`Health::callback_panics`](crate::Health); the
    /// aggregator runs on.
    ///
    /// ```
    /// # #[cfg(feature = "enable")] {
    /// use std::sync::mpsc;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let _collector = laptime::Collector::builder()
    ///     .with_aggregator_start(move || {
    ///         // e.g. core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
    ///         tx.send(std::thread::current().name().map(str::to_owned)).unwrap();
    ///     })
    ///     .install()
    ///     .unwrap();
    /// let name = rx.recv().unwrap().unwrap();
    /// assert!(name.starts_with("laptime-aggregator"), "{name}");
    /// # }
    /// ```
    pub fn with_aggregator_start(mut self, on_start: impl FnOnce() + Send + 'static) -> Self {
        self.on_start = Some(Box::new(on_start));
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

    /// The trip reason counted when a latency breaker trips (default `latency_hard`).
    pub fn with_breaker_trip_reason(mut self, reason: &'static str) -> Self {
        self.latency_guard_reason = reason;
        self
    }

    /// Renamed [`with_breaker_trip_reason`](Self::with_breaker_trip_reason), after
    /// [`crate::LatencyBreaker`].
    #[deprecated(since = "0.2.0", note = "renamed `with_breaker_trip_reason`")]
    pub fn with_latency_guard_reason(self, reason: &'static str) -> Self {
        self.with_breaker_trip_reason(reason)
    }

    /// Adds a sink: the aggregator hands it every cycle's figures (see [`crate::sink`]).
    /// Exporters, profiles and golden traces are sinks; so can be the user's own.
    pub fn with_sink(mut self, sink: impl Sink) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Keeps `value` for the handle to hand out by type ([`crate::CollectorHandle::extension`]):
    /// a sink's shared state that the application reads (the trace sink keeps its traces so).
    pub fn with_extension<T: Any + Send + Sync>(mut self, value: Arc<T>) -> Self {
        self.extensions.0.push(value);
        self
    }

    /// The windows a snapshot of this configuration holds: the sliding ones in order, then
    /// [`Window::Cumulative`].
    pub(crate) fn kept_windows(&self) -> Vec<Window> {
        crate::aggregator::kept_windows(&self.windows)
    }

    /// Checks the configuration without installing anything. The checks run in this order,
    /// and the first that fails is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_ring_and_interval()?;
        self.check_windows()?;
        self.check_histogram()?;
        self.check_caps()?;
        if let Some(rate) = self.sampling_rate {
            crate::record::rate_to_threshold(rate)?;
        }
        crate::stage::valid_name(self.latency_guard_reason)?;
        for sink in &self.sinks {
            sink.validate()?;
        }
        self.check_deadline_watch()?;
        self.check_adaptive()?;
        self.check_stage_settings()?;
        self.check_rules()
    }

    fn check_ring_and_interval(&self) -> Result<(), ConfigError> {
        if self.ring_capacity < 2 || self.ring_capacity > MAX_RING_CAPACITY {
            return Err(ConfigError::RingCapacity {
                capacity: self.ring_capacity,
            });
        }
        if self.interval < MIN_INTERVAL || self.interval > Duration::from_secs(60) {
            return Err(ConfigError::Interval {
                interval: self.interval,
            });
        }
        Ok(())
    }

    /// At least one window; each a whole number of slices, not too short or too finely split,
    /// and no length twice.
    fn check_windows(&self) -> Result<(), ConfigError> {
        if self.windows.is_empty() {
            return Err(ConfigError::NoWindows);
        }
        for (i, w) in self.windows.iter().enumerate() {
            if w.length.is_zero() || w.slice.is_zero() {
                return Err(ConfigError::ZeroWindow);
            }
            if w.slice < MIN_SLICE {
                return Err(ConfigError::SliceTooShort {
                    window: w.length,
                    slice: w.slice,
                });
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
        Ok(())
    }

    fn check_histogram(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The stage and series caps: in range, and not below what the process already has.
    fn check_caps(&self) -> Result<(), ConfigError> {
        let registered = registry().named_len();
        if self.max_stages == 0
            || self.max_stages > crate::stage::MAX_STAGES_LIMIT
            || self.max_stages < registered
        {
            return Err(ConfigError::MaxStages {
                cap: self.max_stages,
                registered,
            });
        }
        let existing = registry().series_len();
        if self.max_series == 0
            || self.max_series > crate::limits::MAX_SERIES_LIMIT
            || self.max_series < existing
        {
            return Err(ConfigError::MaxSeries {
                cap: self.max_series,
                existing,
            });
        }
        Ok(())
    }

    fn check_deadline_watch(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn check_adaptive(&self) -> Result<(), ConfigError> {
        if let Some(a) = self.adaptive {
            if !(a.budget_per_sec.is_finite() && a.budget_per_sec > 0.0) {
                return Err(ConfigError::AdaptiveBudget {
                    budget: a.budget_per_sec,
                });
            }
            crate::record::rate_to_threshold(a.reduced_rate)?;
        }
        Ok(())
    }

    /// Per-stage deadlines and expected intervals: valid names, durations above zero.
    fn check_stage_settings(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn check_rules(&self) -> Result<(), ConfigError> {
        let kept = self.kept_windows();
        for rule in &self.rules {
            crate::stage::valid_name(rule.stage)?;
            crate::stage::valid_labels(rule.labels)?;
            rule.validate(&kept)?;
        }
        Ok(())
    }

    /// Splits the builder into what the engine runs on and what feeds it.
    pub(crate) fn into_parts(self) -> (Settings, Vec<Box<dyn Sink>>) {
        let settings = Settings {
            interval: self.interval,
            windows: self.windows,
            digits: self.digits,
            highest: self.highest,
            ring_capacity: self.ring_capacity,
            rules: self.rules,
            release_memory: self.release_memory,
            callback: self.callback,
            adaptive: self.adaptive,
            max_in_flight: self.max_in_flight,
            abandon_after: self.abandon_after,
            latency_guard_reason: self.latency_guard_reason,
            on_start: self.on_start,
        };
        (settings, self.sinks)
    }
}

/// Values of any type, found by type: what feature modules keep for the handle to read.
#[derive(Default, Clone)]
pub(crate) struct Extensions(Vec<Arc<dyn Any + Send + Sync>>);

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.0.len())
            .finish()
    }
}

impl Extensions {
    pub(crate) fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.0.iter().find_map(|e| e.clone().downcast::<T>().ok())
    }
}
