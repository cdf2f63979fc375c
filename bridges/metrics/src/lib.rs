//! A [`metrics::Recorder`] that sends the `metrics` facade's time histograms to laptime, so
//! `metrics::histogram!("order_latency_seconds", "pair" => pair).record(d)` shows up in
//! `laptime::get_stats`, SLA rules and the Prometheus export.
//!
//! # Guarantees
//!
//! * **No allocation, no lock on the record path** once a key has been seen: a key's laptime
//!   series is resolved once, when `metrics` registers it, and its handle is cached (metrics-util's
//!   sharded registry; a hit takes a shard's read lock and allocates nothing). A record is one
//!   multiplication and `laptime::record`.
//! * **Never a panic, never a silent drop**: a negative, NaN or infinite value, a key laptime
//!   cannot carry, a metric with nowhere to go: each is counted in [`BridgeCounts`]. A label value
//!   laptime refuses, or one past a family's series cap, goes to the family's overflow series and
//!   is counted there ([`laptime::Family::overflowed`]).
//!
//! # Quickstart
//!
//! ```
//! use laptime_metrics::LaptimeRecorder;
//! use metrics::Unit;
//!
//! let recorder = LaptimeRecorder::builder().build().unwrap();
//! metrics::with_local_recorder(&recorder, || {
//!     metrics::describe_histogram!("doc_order_latency", Unit::Microseconds, "order round trip");
//!     for pair in ["BTC-USD", "ETH-USD"] {
//!         metrics::histogram!("doc_order_latency", "pair" => pair).record(250.0);
//!     }
//!     // Matched by the default `_seconds` suffix: no description needed.
//!     metrics::histogram!("doc_fill_latency_seconds").record(0.000_5);
//! });
//! laptime::flush();
//! // A name with labels is a laptime family: its total answers for every series.
//! let all = laptime::get_stats("doc_order_latency", laptime::Window::Cumulative).unwrap();
//! assert_eq!(all.count, 2);
//! ```
//!
//! # What maps to what
//!
//! | `metrics` | laptime |
//! |---|---|
//! | histogram described with a time [`Unit`], or whose name a [time filter](LaptimeRecorderBuilder::with_time_suffix) matches | a stage of the key's name (or without its time suffix: [`with_time_suffix_stripped`](LaptimeRecorderBuilder::with_time_suffix_stripped)); with labels, a [`laptime::Family`] of the key's label names (in the first key's order), a series per label-value set |
//! | its `f64` value, in the unit | a `Duration` (rounded to the nanosecond) given to `laptime::record` |
//! | a counter named by [`LaptimeRecorderBuilder::with_trip_counter`] | trips of a laptime trip reason |
//! | every other counter, gauge and histogram, and every description | the [fallback](LaptimeRecorderBuilder::with_fallback) recorder, or counted in [`BridgeCounts::unrouted`] |
//!
//! A histogram's route is decided when its key is first registered: describe a time histogram
//! (`describe_histogram!`) before recording it, or name it with a matching suffix.
//!
//! # Caveats
//!
//! * Keys are cached for the process, as every `metrics` exporter caches them: a label whose
//!   values never repeat (a request id) grows the cache, though laptime's own memory stays
//!   bounded by its caps (such keys go to the overflow series).
//! * Metric names become laptime stage names: at most [`laptime::MAX_NAME_LEN`] bytes of
//!   `[A-Za-z0-9_.:/-]`; up to [`MAX_NAMES`] distinct time-histogram names are kept. One name,
//!   one label set: the first key of a name decides ([`laptime::Destination::declare`]). Once a
//!   name has labels, a key with other label names (or none) goes to its family's overflow
//!   series; once a name is a plain stage, its labelled keys are refused. Refused records (that,
//!   a name or label name laptime refuses) are counted in [`BridgeCounts::refused`].
//! * This crate depends on laptime without its `enable` feature: the final binary turns it on.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use laptime::{Destination, LabelValues, Stage, StageError, TripReason};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SetRecorderError, SharedString, Unit,
};
use metrics_util::registry::{Registry, Storage};

/// Most distinct time-histogram names the recorder resolves; past it a new name is refused
/// (counted), so names made up at run time cannot grow the stage registry or leak without bound.
pub const MAX_NAMES: usize = 4096;

/// Most trips one `increment` call counts: a counter bumped by a huge value must not spin the
/// caller; the rest is counted in [`BridgeCounts::invalid_values`].
pub const MAX_TRIPS_PER_CALL: u64 = 1 << 16;

/// What the recorder counted instead of recording: plain data, read with [`Tally::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeCounts {
    /// Values dropped because they cannot be a duration: negative, NaN or infinite (and trip
    /// increments past [`MAX_TRIPS_PER_CALL`], or an `absolute` set of a trip counter).
    pub invalid_values: u64,
    /// Time-histogram records dropped because laptime refused the key's name or label names
    /// (or [`MAX_NAMES`] was reached).
    pub refused: u64,
    /// Counter, gauge and non-time histogram operations dropped for want of a fallback recorder.
    pub unrouted: u64,
}

/// A reader of the recorder's [`BridgeCounts`], usable after the recorder is installed.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<Atomics>);

#[derive(Debug, Default)]
struct Atomics {
    invalid_values: AtomicU64,
    refused: AtomicU64,
    unrouted: AtomicU64,
}

impl Tally {
    /// The counts so far.
    pub fn counts(&self) -> BridgeCounts {
        BridgeCounts {
            invalid_values: self.0.invalid_values.load(Ordering::Relaxed),
            refused: self.0.refused.load(Ordering::Relaxed),
            unrouted: self.0.unrouted.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Why the recorder could not be built or installed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BridgeError {
    /// A trip reason given to [`LaptimeRecorderBuilder::with_trip_counter`] is not a valid laptime
    /// name, or there are too many reasons.
    TripReason(StageError),
    /// A global `metrics` recorder is already installed: install this one first, or use
    /// [`LaptimeRecorderBuilder::build`] and `metrics::with_local_recorder`.
    RecorderInstalled,
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TripReason(e) => write!(f, "trip counter: {e}"),
            Self::RecorderInstalled => f.write_str(
                "a global metrics recorder is already installed: install laptime's first",
            ),
        }
    }
}

impl std::error::Error for BridgeError {}

/// Settings of a [`LaptimeRecorder`]: `with_*` setters, then [`build`](Self::build) or
/// [`install`](Self::install).
pub struct LaptimeRecorderBuilder {
    suffixes: Vec<(String, Unit)>,
    strip_suffix: bool,
    trips: Vec<(String, &'static str)>,
    fallback: Option<Box<dyn Recorder + Send + Sync>>,
}

impl fmt::Debug for LaptimeRecorderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaptimeRecorderBuilder")
            .field("suffixes", &self.suffixes)
            .field("trips", &self.trips)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl LaptimeRecorderBuilder {
    /// Histograms whose name ends with `suffix` are time histograms in `unit` (unless described
    /// with another unit). The default is `_seconds` in seconds; [`without_time_suffixes`]
    /// removes it.
    ///
    /// [`without_time_suffixes`]: Self::without_time_suffixes
    pub fn with_time_suffix(mut self, suffix: impl Into<String>, unit: Unit) -> Self {
        self.suffixes.push((suffix.into(), unit));
        self
    }

    /// No name filter: only histograms described with a time unit go to laptime.
    pub fn without_time_suffixes(mut self) -> Self {
        self.suffixes.clear();
        self
    }

    /// Stage names without the time suffix the metric's name ends with (`order_latency_seconds`
    /// is the stage `order_latency`): laptime's Prometheus export adds its own unit suffix, so
    /// without this the exported name says `_seconds_seconds`. Off by default: the stage is then
    /// the metric's name, as written.
    pub fn with_time_suffix_stripped(mut self, on: bool) -> Self {
        self.strip_suffix = on;
        self
    }

    /// Each increment of the counter `counter_name` (any labels) trips laptime's `reason`, so it
    /// shows in `laptime::trip_counts` and the export's trip counter.
    pub fn with_trip_counter(
        mut self,
        counter_name: impl Into<String>,
        reason: &'static str,
    ) -> Self {
        self.trips.push((counter_name.into(), reason));
        self
    }

    /// Where counters, gauges, non-time histograms and descriptions go (a metrics-util layer
    /// stack, an exporter's recorder, …). Without one they are dropped and counted.
    pub fn with_fallback(mut self, recorder: impl Recorder + Send + Sync + 'static) -> Self {
        self.fallback = Some(Box::new(recorder));
        self
    }

    /// The recorder, for `metrics::set_global_recorder` or `metrics::with_local_recorder`.
    pub fn build(self) -> Result<LaptimeRecorder, BridgeError> {
        let tally = Tally::default();
        let trips = self
            .trips
            .into_iter()
            .map(|(name, reason)| {
                let reason = TripReason::new(reason).map_err(BridgeError::TripReason)?;
                let counter = Arc::new(TripCounter {
                    reason,
                    tally: tally.clone(),
                });
                Ok((name, counter))
            })
            .collect::<Result<_, _>>()?;
        let shared = Arc::new(Shared {
            described: RwLock::new(HashMap::new()),
            suffixes: self.suffixes,
            strip_suffix: self.strip_suffix,
            names: Mutex::new(HashMap::new()),
            tally: tally.clone(),
        });
        Ok(LaptimeRecorder {
            histograms: Registry::new(Resolver(shared.clone())),
            shared,
            trips,
            fallback: self.fallback,
            unrouted: Arc::new(Unrouted(tally)),
        })
    }

    /// Builds the recorder and installs it as the process's global `metrics` recorder; returns
    /// the reader of its counts.
    pub fn install(self) -> Result<Tally, BridgeError> {
        let recorder = self.build()?;
        let tally = recorder.tally();
        metrics::set_global_recorder(recorder)
            .map_err(|_: SetRecorderError<LaptimeRecorder>| BridgeError::RecorderInstalled)?;
        Ok(tally)
    }
}

/// The recorder: see the [crate docs](crate).
pub struct LaptimeRecorder {
    shared: Arc<Shared>,
    histograms: Registry<Key, Resolver>,
    trips: Vec<(String, Arc<TripCounter>)>,
    fallback: Option<Box<dyn Recorder + Send + Sync>>,
    /// The one handle every unrouted metric gets: registering one allocates nothing.
    unrouted: Arc<Unrouted>,
}

impl fmt::Debug for LaptimeRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaptimeRecorder")
            .field("counts", &self.tally().counts())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl LaptimeRecorder {
    /// The defaults: `_seconds` histograms and those described with a time unit go to laptime;
    /// everything else is dropped and counted.
    pub fn builder() -> LaptimeRecorderBuilder {
        LaptimeRecorderBuilder {
            suffixes: vec![("_seconds".to_owned(), Unit::Seconds)],
            strip_suffix: false,
            trips: Vec::new(),
            fallback: None,
        }
    }

    /// The reader of this recorder's counts.
    pub fn tally(&self) -> Tally {
        self.shared.tally.clone()
    }
}

impl Recorder for LaptimeRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(fallback) = &self.fallback {
            fallback.describe_counter(key, unit, description);
        }
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(fallback) = &self.fallback {
            fallback.describe_gauge(key, unit, description);
        }
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(unit) = unit {
            let mut described = self
                .shared
                .described
                .write()
                .unwrap_or_else(|e| e.into_inner());
            // Bounded like the names: descriptions come from code, not from data.
            if described.len() < MAX_NAMES || described.contains_key(key.as_str()) {
                described.insert(key.as_str().to_owned(), unit);
            }
        }
        if let Some(fallback) = &self.fallback {
            fallback.describe_histogram(key, unit, description);
        }
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if let Some((_, trip)) = self.trips.iter().find(|(name, _)| name == key.name()) {
            return Counter::from_arc(trip.clone());
        }
        match &self.fallback {
            Some(fallback) => fallback.register_counter(key, metadata),
            None => Counter::from_arc(self.unrouted.clone()),
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        match &self.fallback {
            Some(fallback) => fallback.register_gauge(key, metadata),
            None => Gauge::from_arc(self.unrouted.clone()),
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        // A key seen before: one lookup (`histogram!` registers on every call).
        if let Some(cached) = self.histograms.get_histogram(key) {
            return Histogram::from_arc(cached);
        }
        if self.shared.nanos_per_unit(key.name()).is_some() {
            return self
                .histograms
                .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()));
        }
        match &self.fallback {
            Some(fallback) => fallback.register_histogram(key, metadata),
            None => Histogram::from_arc(self.unrouted.clone()),
        }
    }
}

struct Shared {
    /// Histogram names described with a unit.
    described: RwLock<HashMap<String, Unit>>,
    suffixes: Vec<(String, Unit)>,
    strip_suffix: bool,
    /// Each time-histogram name's destination in laptime, resolved once (`None`: refused).
    names: Mutex<HashMap<String, Option<Destination>>>,
    tally: Tally,
}

impl Shared {
    /// Nanoseconds per unit of `name`'s values, if it is a time histogram: its description's unit
    /// first (a name described with a unit that is not time is not one), then the suffixes.
    fn nanos_per_unit(&self, name: &str) -> Option<f64> {
        let described = self
            .described
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied();
        let unit = match described {
            Some(unit) => unit,
            None => {
                self.suffixes
                    .iter()
                    .find(|(suffix, _)| name.ends_with(suffix.as_str()))?
                    .1
            }
        };
        match unit {
            Unit::Seconds => Some(1e9),
            Unit::Milliseconds => Some(1e6),
            Unit::Microseconds => Some(1e3),
            Unit::Nanoseconds => Some(1.0),
            _ => None,
        }
    }

    /// The laptime target of `key`'s name, resolved on the name's first key.
    fn destination(&self, key: &Key) -> Option<Destination> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(target) = names.get(key.name()) {
            return *target;
        }
        if names.len() >= MAX_NAMES {
            return None;
        }
        let target = resolve(key, self.stage_name(key.name()));
        names.insert(key.name().to_owned(), target);
        target
    }

    /// The stage name of the metric `name`: itself, or without its time suffix when asked (and
    /// something is left).
    fn stage_name<'a>(&self, name: &'a str) -> &'a str {
        if !self.strip_suffix {
            return name;
        }
        self.suffixes
            .iter()
            .filter_map(|(suffix, _)| name.strip_suffix(suffix.as_str()))
            .find(|stem| !stem.is_empty())
            .unwrap_or(name)
    }
}

/// Declares `key`'s name (as `stage_name`) in laptime: a stage without labels, a family with them (a name labelled
/// elsewhere is its family, whose overflow series takes keys with other label names). The name
/// and label names are kept for the process (laptime's names are `&'static`); each name is
/// resolved once and at most [`MAX_NAMES`] of them, so this is bounded.
fn resolve(key: &Key, stage_name: &str) -> Option<Destination> {
    let name: &'static str = Box::leak(stage_name.to_owned().into_boxed_str());
    let label_names: Vec<&'static str> = key
        .labels()
        .map(|l| &*Box::leak(l.key().to_owned().into_boxed_str()))
        .collect();
    Destination::declare(name, label_names.leak()).ok()
}

/// The metrics-util registry's storage: creates a key's histogram handle, resolving its series.
struct Resolver(Arc<Shared>);

impl Storage<Key> for Resolver {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<TimeHistogram>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::default() // never used: the registry holds time histograms only
    }

    fn gauge(&self, _: &Key) -> Self::Gauge {
        Arc::default()
    }

    fn histogram(&self, key: &Key) -> Self::Histogram {
        let shared = &self.0;
        let stage = match shared.destination(key) {
            Some(Destination::Family(family)) => Some(family.series_or_overflow(&KeyValues {
                key,
                names: family.label_names(),
            })),
            // A plain stage's name with labels: refused, not recorded with its labels dropped.
            Some(Destination::Stage(stage)) if key.labels().next().is_none() => Some(stage),
            _ => None,
        };
        Arc::new(TimeHistogram {
            stage,
            nanos_per_unit: shared.nanos_per_unit(key.name()).unwrap_or(1.0),
            tally: shared.tally.clone(),
        })
    }
}

/// A key's label values in its family's label order; a key whose label names differ from the
/// family's reports a count no family has, so laptime sends it to the overflow series.
struct KeyValues<'a> {
    key: &'a Key,
    names: &'static [&'static str],
}

impl KeyValues<'_> {
    fn value(&self, name: &str) -> Option<&str> {
        self.key
            .labels()
            .find(|l| l.key() == name)
            .map(|l| l.value())
    }
}

impl LabelValues for KeyValues<'_> {
    fn count(&self) -> usize {
        let same_names = self.key.labels().len() == self.names.len()
            && self.names.iter().all(|n| self.value(n).is_some());
        if same_names {
            self.names.len()
        } else {
            usize::MAX
        }
    }

    fn each(&self, f: &mut dyn FnMut(&str)) {
        for name in self.names {
            f(self.value(name).unwrap_or(""));
        }
    }
}

/// A time histogram's handle: its series and the unit's scale, fixed at registration.
#[derive(Debug)]
struct TimeHistogram {
    stage: Option<Stage>,
    nanos_per_unit: f64,
    tally: Tally,
}

impl HistogramFn for TimeHistogram {
    #[inline]
    fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    fn record_many(&self, value: f64, count: usize) {
        let count = count as u64;
        let Some(stage) = self.stage else {
            return Tally::add(&self.tally.0.refused, count);
        };
        let ns = value * self.nanos_per_unit;
        // NaN fails both comparisons; infinities fail the first.
        if !(ns.is_finite() && ns >= 0.0) {
            return Tally::add(&self.tally.0.invalid_values, count);
        }
        // `as` saturates: a value past u64::MAX ns (584 years) is recorded as that.
        let duration = Duration::from_nanos(ns.round() as u64);
        for _ in 0..count {
            laptime::record(stage, duration);
        }
    }
}

/// A counter whose increments trip a laptime reason.
#[derive(Debug)]
struct TripCounter {
    reason: TripReason,
    tally: Tally,
}

impl CounterFn for TripCounter {
    fn increment(&self, value: u64) {
        for _ in 0..value.min(MAX_TRIPS_PER_CALL) {
            self.reason.trip();
        }
        Tally::add(
            &self.tally.0.invalid_values,
            value.saturating_sub(MAX_TRIPS_PER_CALL),
        );
    }

    fn absolute(&self, _: u64) {
        // Trips only ever add up; a counter set to a value has no trip meaning.
        Tally::add(&self.tally.0.invalid_values, 1);
    }
}

/// The handle of every metric with nowhere to go: each operation is counted.
#[derive(Debug)]
struct Unrouted(Tally);

impl Unrouted {
    fn count(&self) {
        Tally::add(&self.0.0.unrouted, 1);
    }
}

impl CounterFn for Unrouted {
    fn increment(&self, _: u64) {
        self.count();
    }
    fn absolute(&self, _: u64) {
        self.count();
    }
}

impl GaugeFn for Unrouted {
    fn increment(&self, _: f64) {
        self.count();
    }
    fn decrement(&self, _: f64) {
        self.count();
    }
    fn set(&self, _: f64) {
        self.count();
    }
}

impl HistogramFn for Unrouted {
    fn record(&self, _: f64) {
        self.count();
    }
}

/// docs/bridges.md's examples, run as doc tests so the guide cannot drift from any bridge.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/bridges.md")]
pub struct BridgesGuide;
