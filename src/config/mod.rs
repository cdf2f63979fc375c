//! One TOML file for a collector's settings, stage deadlines and expected intervals, SLA rules,
//! sampling and tracing
//! (feature `config`), read into plain data and turned into a [`CollectorBuilder`]; every mistake
//! in it is an error that names the key and the line, and says what to change.
//!
//! ```
//! use laptime::config::{Config, ConfigFileError};
//!
//! let config = Config::from_toml_str(
//!     r#"
//! [deadlines]
//! tick_total = "200ms"
//!
//! [[sla]]
//! stage = "tick_total"
//! window = "60s"
//! metric = "p99"
//! warning = "200ms"
//! critical = "250ms"
//! "#,
//! )?;
//! assert_eq!(config.sla[0].stage, "tick_total");
//! config.builder()?.validate().expect("checked when the file was read");
//!
//! let err = Config::from_toml_str("[[sla]]\nstage = \"tick_total\"\nwindow = \"2s\"\nmetric = \"p99\"\ncritical = \"1ms\"\n")
//!     .unwrap_err();
//! assert_eq!((err.key(), err.line()), (Some("sla[0].window"), Some(3)));
//! assert!(err.to_string().contains("add it to [collector].windows"), "{err}");
//! # Ok::<(), ConfigFileError>(())
//! ```
//!
//! # Why TOML
//!
//! The seeds write their configuration in YAML. This module reads TOML instead, with the `toml`
//! crate: its parser reports a byte span for every error, including the ones raised while a value
//! is converted, which is what lets each error here name its line; it is maintained
//! (`serde_yaml` is archived); comments are part of the format; and there is one way to write a
//! value, so a file cannot mean something else through indentation or YAML's implicit types
//! (`no` as `false`, `1:30` as a number).
//!
//! The seed's YAML maps onto TOML one to one: a mapping under a name becomes a `[name]` table, a
//! list of mappings a `[[name]]` array of tables, `key: value` becomes `key = value`, and strings
//! take quotes. The seed's `trace` block keeps its keys and values:
//!
//! ```text
//! # the seed (YAML)              # laptime (TOML)
//! trace:                         [trace]
//!   enabled: true                enabled = true
//!                                root = "tick_total"     # new: the stage whose spans make a trace
//!   sample_rate: 0.2             sample_rate = 0.2
//!   deadline_ms: 200.0           deadline_ms = 200.0     # or deadline = "200ms", not both
//!   export_golden: true          export_golden = true
//!   golden_trace_interval: 100   golden_trace_interval = 100
//! ```
//!
//! # The file
//!
//! Every section and every key is optional, except the ones marked *required*; a key left out
//! keeps the library's default ([`CollectorBuilder::default`], [`AdaptiveSampling::default`],
//! [`TraceConfig`](crate::trace::TraceConfig)'s defaults). Durations are strings with a unit and
//! no space: `ns`, `us` or `µs`, `ms`, `s`, `m`, `h` (`"250us"`, `"1.5ms"`, `"10m"`), exact to
//! the nanosecond. Rates and ratios are fractions in [0, 1] (`0.02` is 2 %), never percentages.
//! Any key not listed here is an error (except in the tables whose keys are yours: `[deadlines]`,
//! `[expected_intervals]`, `labels`, `tags`, `metadata`), so a misspelt key never leaves a default in force silently.
//! `[prometheus]` and `[alerts]` are read by the rule generator (`laptime rules`), not by
//! [`Config::builder`].
//!
//! ```toml
//! [collector]                       # CollectorBuilder::with_* (defaults shown)
//! ring_capacity = 8192              # records per thread ring
//! interval = "10ms"                 # how often the aggregator wakes
//! windows = [                       # the sliding windows, each { length, slice }
//!   { length = "1s", slice = "250ms" },
//!   { length = "5s", slice = "1s" },
//!   { length = "60s", slice = "5s" },
//! ]
//! significant_digits = 3            # histogram precision, 1..=5
//! highest = "1h"                    # highest trackable value
//! max_stages = 1024
//! max_series = 65536                # series of all families together
//! max_in_flight = 65536
//! abandon_after = "10m"
//! latency_guard_reason = "latency_hard"
//! clock = "auto"                    # auto | tsc | monotonic
//!
//! [sampling]
//! rate = 1.0                        # the initial global sampling rate; left out: unchanged
//! adaptive = { budget_per_sec = 1000.0, reduced_rate = 0.1 }   # AdaptiveSampling; on if given
//!
//! [deadlines]                       # stage = deadline
//! tick_total = "200ms"
//! "svc.exchange_req" = "50ms"       # names with `.`, `:` or `/` take quotes
//!
//! [expected_intervals]              # stage = the period its spans should start at: turns on
//! tick_total = "100us"              # coordinated-omission correction for it (corrected figures
//!                                   # beside the raw ones; Stage::set_expected_interval)
//!
//! [[sla]]                           # one SlaRule per [[sla]]
//! stage = "tick_total"              # required
//! labels = { verb = "post" }        # the stage's labels, in the order the code gives them
//! window = "60s"                    # required: a length from [collector].windows, or "cumulative"
//! metric = "p95"                    # required: p50 p90 p95 p99 p999 (or "p99.9") max mean
//!                                   #           deadline_miss_rate
//! warning = "160ms"                 # at least one of warning and critical: durations for the
//! critical = "200ms"                # latency metrics, fractions in [0, 1] for the miss rate
//! min_count = 20                    # spans the window must hold before it is judged (default 1)
//! guard = true                      # a critical violation trips the latency breaker (default)
//!
//! [trace]                           # TraceConfig, through CollectorBuilder::with_tracing
//! enabled = true
//! root = "tick_total"               # required
//! sample_rate = 0.2
//! deadline_ms = 200.0               # the seed's key; or deadline = "200ms", not both
//! export_golden = true
//! golden_trace_interval = 100
//! output_dir = "artifacts/traces"
//! seed = 42
//! keep = 256
//! max_spans = 256
//! metadata = { symbols = ["BTCUSDT", "ETHUSDT"], parallel_symbols = 10 }   # any TOML, as JSON
//!
//! [profile]                         # plain data for whoever writes the run's perf profile
//! name = "trading_tick"
//! output = "artifacts/perf_profile.json"
//! tags = { env = "canary" }
//!
//! [prometheus]                      # how the process exports (for `laptime rules`; defaults shown)
//! namespace = "laptime"             # PrometheusBuilder::with_namespace
//! unit = "seconds"                  # seconds | ms (PrometheusBuilder::with_unit)
//! env_label = "env"                 # the const label telling canary from baseline
//! job = "laptime"                   # the scrape job, for dashboards
//! gauges = []                       # application gauges the dashboard draws, e.g. ["parallel_symbols"]
//! labelled_stages = []              # labelled stages drawn per label set, e.g. ["exchange_req"]
//! native = false                    # stage histograms exported as native histograms: rules and
//!                                   # dashboard query them so (`laptime rules --native`)
//! native_schema = 6                 # their schema, -4..=8: buckets grow by 2^(2^-schema)
//! native_max_buckets = 2048         # buckets one histogram may hold before its schema is lowered
//!
//! [alerts]                          # how the generated alerts judge (defaults shown)
//! rate_window = "5m"                # the range of rate()/histogram_quantile in every rule
//! for = "2m"                        # how long a condition holds before an alert fires
//! no_data_after = "5m"              # a stage with no span for this long alerts
//! deadline_miss_ratio = 0.02        # miss ratio alerting for deadline stages without a miss-rate rule
//! canary_regression_pct = 15.0      # canary p95 this many percent above baseline alerts
//! guard_trip_burst = { vol_hard = 5, latency_hard = 5 }   # reason = trips an hour (rate) that alert
//! drop_rate = 0.0                   # records dropped per second above this alert ...
//! drop_for = "1m"                   # ... once it has held this long
//! aggregator_stalled_after = "30s"  # aggregator lag or last drain age above this alerts
//! ```
//!
//! # Errors
//!
//! [`ConfigFileError::Parse`] is a file that is wrong on its own terms: TOML syntax, an unknown
//! key (the message lists the allowed ones), a wrong type, a missing required key, a malformed
//! duration, zero where a positive duration is needed, a rate outside [0, 1], an unknown metric,
//! an SLA window the collector does not keep, a threshold of the wrong kind for its metric, a
//! warning above its critical, the trace deadline given twice.
//! [`ConfigFileError::Invalid`] is a well-formed value the library refuses, carrying the library's
//! [`ConfigError`] (ring capacity, histogram range, window that its slice does not divide, stage
//! cap, stage names and labels, a zero expected interval, …) and the key that set it. Both give
//! the key (dotted: `sla[1].critical`, `collector.windows[0].slice`, `deadlines."svc.tick"`,
//! `expected_intervals."svc.tick"`), the 1-based line and
//! column, and a message that says what to change. [`Config::from_toml_str`] runs every check it
//! can without a collector; [`Config::builder`] runs the library's
//! [`CollectorBuilder::validate`] once more, as install will.
//!
//! # Stage names live for the process
//!
//! The library names stages with `&'static str`. The names a file brings (stages, labels, the
//! latency-breaker reason, the trace root) are interned by [`Config::builder`] in one process-wide
//! set, so building from the same file (or another file naming the same stages) any number of
//! times keeps one copy of each name; the set only grows by names never seen before, as the stage
//! registry does. Reading a file allocates nothing that outlives the [`Config`].
//!
//! # For generators
//!
//! [`Config`] is plain data with public fields: a tool that writes Prometheus rules or dashboards
//! from the same file the process loads reads the stages, windows, metrics, thresholds and
//! deadlines from it without building a collector.

mod parse;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::ClockSource;
use crate::collector::{AdaptiveSampling, CollectorBuilder, WindowSpec};
use crate::error::ConfigError;
use crate::sla::{Metric, SlaPreset, SlaRule, Value};
use crate::stage::Labels;
use crate::stats::Window;

/// The largest file [`Config::from_path`] reads: 16 MiB, far more than any configuration needs;
/// a larger file is likely not one.
/// [`Config::from_path_with_limit`] takes another limit.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;

/// A configuration file, read and checked. Two configurations are equal when their settings are,
/// however the files were laid out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `[collector]`, with the library's defaults for what the file leaves out.
    pub collector: CollectorSection,
    /// `[sampling]`.
    pub sampling: SamplingSection,
    /// `[deadlines]`: stage name and deadline, in the file's order.
    pub deadlines: Vec<(String, Duration)>,
    /// `[expected_intervals]`: stage name and the interval its spans should start at, in the
    /// file's order ([`CollectorBuilder::with_expected_interval`]).
    pub expected_intervals: Vec<(String, Duration)>,
    /// `[[sla]]`, in the file's order.
    pub sla: Vec<SlaRuleConfig>,
    /// `[trace]`, if the file has one.
    pub trace: Option<TraceSection>,
    /// `[profile]`, if the file has one. Not applied by [`Config::builder`]: it is for whoever
    /// writes the run's perf profile.
    pub profile: Option<ProfileSection>,
    /// `[prometheus]`, with its defaults when the file has none. Not applied by
    /// [`Config::builder`]: it says how the process exports, for the rule generator.
    pub prometheus: PrometheusSection,
    /// `[alerts]`, with its defaults when the file has none: how generated alerts judge.
    pub alerts: AlertsSection,
    positions: parse::Positions,
}

/// `[collector]`: the settings of [`CollectorBuilder`]'s `with_*` setters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CollectorSection {
    /// Records per thread ring ([`CollectorBuilder::with_ring_capacity`]).
    pub ring_capacity: usize,
    /// The aggregator's interval ([`CollectorBuilder::with_interval`]).
    pub interval: Duration,
    /// The sliding windows ([`CollectorBuilder::with_windows`]).
    pub windows: Vec<WindowSpec>,
    /// Histogram significant digits ([`CollectorBuilder::with_histogram`]).
    pub significant_digits: u8,
    /// Highest trackable value ([`CollectorBuilder::with_histogram`]).
    pub highest: Duration,
    /// The stage cap ([`CollectorBuilder::with_max_stages`]).
    pub max_stages: usize,
    /// The series cap, all families together ([`CollectorBuilder::with_max_series`]).
    pub max_series: usize,
    /// Deadline-watched spans tracked at once ([`CollectorBuilder::with_max_in_flight`]).
    pub max_in_flight: usize,
    /// When an in-flight span is given up ([`CollectorBuilder::with_abandon_after`]).
    pub abandon_after: Duration,
    /// The trip reason of latency breakers ([`CollectorBuilder::with_breaker_trip_reason`]).
    pub latency_guard_reason: String,
    /// Where ticks come from ([`CollectorBuilder::with_clock`]).
    pub clock: ClockSource,
}

impl Default for CollectorSection {
    /// [`CollectorBuilder::default`]'s settings.
    fn default() -> Self {
        let b = CollectorBuilder::default();
        Self {
            ring_capacity: b.ring_capacity,
            interval: b.interval,
            windows: b.windows.clone(),
            significant_digits: b.digits,
            highest: b.highest,
            max_stages: b.max_stages,
            max_series: b.max_series,
            max_in_flight: b.max_in_flight,
            abandon_after: b.abandon_after,
            latency_guard_reason: b.latency_guard_reason.to_owned(),
            clock: b.clock,
        }
    }
}

impl CollectorSection {
    /// The windows a snapshot keeps with these settings: the sliding ones in order, then
    /// [`Window::Cumulative`]. SLA rules may name only these.
    pub fn kept_windows(&self) -> Vec<Window> {
        let sliding = self.windows.iter().map(|w| Window::Last(w.length));
        sliding.chain([Window::Cumulative]).collect()
    }
}

/// `[sampling]`.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SamplingSection {
    /// The initial global sampling rate in [0, 1]; `None` leaves the rate in force.
    pub rate: Option<f64>,
    /// Adaptive sampling, on when given.
    pub adaptive: Option<AdaptiveSampling>,
}

/// One `[[sla]]` entry: what [`SlaRule`] holds, with owned names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SlaRuleConfig {
    /// The stage's name.
    pub stage: String,
    /// The stage's labels, in the file's order (the order is part of a stage's identity).
    pub labels: Vec<(String, String)>,
    /// The window the metric is read over; one the collector keeps.
    pub window: Window,
    /// What is compared.
    pub metric: Metric,
    /// Warning threshold: [`Value::Latency`] for latency metrics, [`Value::Ratio`] for
    /// [`Metric::DeadlineMissRate`].
    pub warning: Option<Value>,
    /// Critical threshold, of the same kind.
    pub critical: Option<Value>,
    /// Spans the window must hold before the rule judges it.
    pub min_count: u64,
    /// Whether a critical violation trips the stage's latency breaker.
    pub guard: bool,
}

/// `[trace]`: the seed's keys plus what [`TraceConfig`](crate::trace::TraceConfig) takes. `None`
/// keeps `TraceConfig`'s default.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TraceSection {
    /// Whether tracing runs (`false`: the seed's rollback switch).
    pub enabled: Option<bool>,
    /// The stage whose spans make a trace, e.g. `tick_total`.
    pub root: String,
    /// Fraction of root spans traced, in [0, 1].
    pub sample_rate: Option<f64>,
    /// The trace deadline (`deadline_ms` or `deadline` in the file).
    pub deadline: Option<Duration>,
    /// Whether golden traces are written.
    pub export_golden: Option<bool>,
    /// A golden trace every this many traced ticks.
    pub golden_trace_interval: Option<u64>,
    /// Where traces are written.
    pub output_dir: Option<PathBuf>,
    /// Seed of the sampling draw, for reproducible runs.
    pub seed: Option<u64>,
    /// How many traces are kept in memory.
    pub keep: Option<usize>,
    /// How many spans each thread buffers between two ticks.
    pub max_spans: Option<usize>,
    /// Metadata written into every trace, in the file's order.
    pub metadata: Vec<(String, serde_json::Value)>,
}

/// `[profile]`: how the run's perf profile is named and tagged, and where it goes.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ProfileSection {
    /// The run's name ([`crate::profile::ProfileMeta`]'s `name` with feature `profile`).
    pub name: Option<String>,
    /// Where the profile is written.
    pub output: Option<PathBuf>,
    /// Free-form tags, e.g. `env = "canary"`.
    pub tags: BTreeMap<String, String>,
}

/// The unit stage durations are exported in (`[prometheus].unit`): `"seconds"` or `"ms"`, as
/// the exporter's `Unit` (feature `prometheus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExportUnit {
    /// Seconds (`<ns>_stage_duration_seconds`).
    #[default]
    Seconds,
    /// Milliseconds (`<ns>_stage_duration_ms`).
    Milliseconds,
}

#[cfg(feature = "prometheus")]
impl From<ExportUnit> for crate::export::prometheus::Unit {
    fn from(u: ExportUnit) -> Self {
        match u {
            ExportUnit::Seconds => crate::export::prometheus::Unit::Seconds,
            ExportUnit::Milliseconds => crate::export::prometheus::Unit::Milliseconds,
        }
    }
}

/// `[prometheus]`: how the process's exporter is set up, so generated rules and dashboards name
/// the same series.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PrometheusSection {
    /// The metric namespace (default `laptime`).
    pub namespace: String,
    /// The unit of stage durations (default seconds).
    pub unit: ExportUnit,
    /// The const label telling deployments apart, canary from baseline (default `env`).
    pub env_label: String,
    /// The scrape job's name (default `laptime`).
    pub job: String,
    /// Application gauges the dashboard draws, by the name given to the exporter's `gauge`
    /// (e.g. `parallel_symbols` for `<ns>_parallel_symbols`; default none).
    pub gauges: Vec<String>,
    /// Stages with static labels, exported under a family of their own, whose label sets the
    /// dashboard draws side by side (e.g. `exchange_req`, batch beside single; default none).
    pub labelled_stages: Vec<String>,
    /// Whether every stage histogram of the exporter (the shared stage family, each labelled
    /// stage's own family, the coordinated-omission corrected one) is exported with native
    /// buckets (default false). Prometheus 2.42 stores such a family as a native histogram
    /// only, under its bare name with no `_bucket`, `_count` or `_sum` series, so the rules and
    /// dashboard must query it with `histogram_quantile`, `histogram_count` and
    /// `histogram_sum` over the family itself (`laptime rules` does when this is on).
    pub native: bool,
    /// The native buckets' schema, −4 to 8 (default 6): bucket boundaries grow by
    /// 2^(2^−schema), so schema 6 buckets are about 1.1 % wide and schema 8 about 0.27 %.
    pub native_schema: i8,
    /// How many native buckets one histogram may hold before its schema is lowered (default
    /// 2048; at least 8): the run of bucket indexes from its fastest to its slowest value, empty
    /// ones between counted. Lowering the schema by one merges neighbouring buckets in pairs, so
    /// counts stay exact and only the resolution halves; at schema 6, 2 048 buckets span a
    /// factor of 2^32 between the fastest and slowest span (10 ns to 43 s).
    pub native_max_buckets: usize,
}

/// The native schema when the file gives none: buckets about 1.1 % wide, so a quantile a
/// fleet's merged histogram gives is within 2 % of the exact one.
pub const DEFAULT_NATIVE_SCHEMA: i8 = 6;
/// The schemas Prometheus defines for exponential native buckets.
pub const NATIVE_SCHEMAS: std::ops::RangeInclusive<i8> = -4..=8;
/// The bucket budget of one native histogram when the file gives none.
pub const DEFAULT_NATIVE_MAX_BUCKETS: usize = 2048;
/// The smallest bucket budget: every `u64` nanosecond value fits in 5 buckets at schema −4 (the
/// exporter's `NativeHistograms::MIN_MAX_BUCKETS`).
pub const MIN_NATIVE_MAX_BUCKETS: usize = 8;

#[cfg(feature = "prometheus-native")]
impl PrometheusSection {
    /// What to give [`PrometheusBuilder::with_native_histograms`](crate::export::prometheus::PrometheusBuilder::with_native_histograms)
    /// so the process exports what `laptime rules` generated rules for: `None` while `native`
    /// is false, else the file's schema and budget.
    pub fn native_histograms(&self) -> Option<crate::export::prometheus::NativeHistograms> {
        self.native.then(|| {
            crate::export::prometheus::NativeHistograms::default()
                .with_schema(self.native_schema)
                .with_max_buckets(self.native_max_buckets)
        })
    }
}

impl Default for PrometheusSection {
    fn default() -> Self {
        Self {
            namespace: "laptime".to_owned(),
            unit: ExportUnit::Seconds,
            env_label: "env".to_owned(),
            job: "laptime".to_owned(),
            gauges: Vec::new(),
            labelled_stages: Vec::new(),
            native: false,
            native_schema: DEFAULT_NATIVE_SCHEMA,
            native_max_buckets: DEFAULT_NATIVE_MAX_BUCKETS,
        }
    }
}

/// `[alerts]`: the settings of the generated alert and recording rules that the SLA rules do not
/// decide.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AlertsSection {
    /// The range of every `rate()` in the rules (default 5 min).
    pub rate_window: Duration,
    /// How long a condition must hold before its alert fires (`for`, default 2 min).
    pub pending_for: Duration,
    /// A stage that recorded nothing for this long alerts (default 5 min).
    pub no_data_after: Duration,
    /// Deadline-miss ratio, a fraction in [0, 1], that alerts for a stage with a deadline and no
    /// `deadline_miss_rate` SLA rule (default 0.02).
    pub deadline_miss_ratio: f64,
    /// Canary p95 more than this many percent above the baseline's alerts (default 15).
    pub canary_regression_pct: f64,
    /// Trip reason and the trips per hour (their rate over `rate_window`) above which it
    /// alerts, in the file's order (default `vol_hard = 5`, `latency_hard = 5`).
    pub guard_trip_burst: Vec<(String, u64)>,
    /// Records dropped per second above which the drop alert fires (default 0: any drop).
    pub drop_rate: f64,
    /// How long drops must last before that alert fires (default 1 min).
    pub drop_for: Duration,
    /// Aggregator lag or last-drain age above which the aggregator counts as stalled
    /// (default 30 s).
    pub aggregator_stalled_after: Duration,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            rate_window: Duration::from_secs(300),
            pending_for: Duration::from_secs(120),
            no_data_after: Duration::from_secs(300),
            deadline_miss_ratio: 0.02,
            canary_regression_pct: 15.0,
            guard_trip_burst: vec![("vol_hard".to_owned(), 5), ("latency_hard".to_owned(), 5)],
            drop_rate: 0.0,
            drop_for: Duration::from_secs(60),
            aggregator_stalled_after: Duration::from_secs(30),
        }
    }
}

/// Why a configuration file could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file holds more than the read limit ([`DEFAULT_MAX_BYTES`], or the one given to
    /// [`Config::from_path_with_limit`]): likely not a configuration (`/dev/zero`, a log).
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is wrong on its own terms: syntax, unknown key, wrong type, bad value.
    Parse {
        /// The file, when read with [`Config::from_path`].
        path: Option<PathBuf>,
        /// The dotted key, e.g. `sla[1].critical` or `trace.sample_rate`; empty for a syntax
        /// error.
        key: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong and what to change.
        message: String,
    },
    /// A well-formed value the library refuses.
    Invalid {
        /// The file, when read with [`Config::from_path`].
        path: Option<PathBuf>,
        /// The dotted key that set the refused value (or its section, for a default).
        key: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong and what to change.
        message: String,
        /// The library's error (boxed: it keeps this error small to pass around).
        source: Box<ConfigError>,
    },
}

impl ConfigFileError {
    /// The dotted key the error is about (`None` for I/O errors).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Io { .. } | Self::TooLarge { .. } => None,
            Self::Parse { key, .. } | Self::Invalid { key, .. } => Some(key),
        }
    }

    /// The 1-based line the error is about (`None` for I/O errors).
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Io { .. } | Self::TooLarge { .. } => None,
            Self::Parse { line, .. } | Self::Invalid { line, .. } => Some(*line),
        }
    }

    fn with_path(mut self, file: &Path) -> Self {
        if let Self::Parse { path, .. } | Self::Invalid { path, .. } = &mut self {
            *path = Some(file.to_owned());
        }
        self
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, key, line, column, message) = match self {
            Self::TooLarge { path, limit } => {
                return write!(
                    f,
                    "{} is larger than {limit} bytes; is this a laptime configuration file? (raise \
                     the limit with --max-input-bytes, or Config::from_path_with_limit)",
                    path.display()
                );
            }
            Self::Io { path, source } => {
                return write!(
                    f,
                    "cannot read configuration file {}: {source}{}",
                    path.display(),
                    crate::fs::io_hint(source)
                );
            }
            Self::Parse {
                path,
                key,
                line,
                column,
                message,
            }
            | Self::Invalid {
                path,
                key,
                line,
                column,
                message,
                ..
            } => (path, key, line, column, message),
        };
        match path {
            Some(p) => write!(f, "{}:{line}:{column}: ", p.display())?,
            None => write!(f, "line {line}, column {column}: ")?,
        }
        if !key.is_empty() {
            write!(f, "{key}: ")?;
        }
        f.write_str(message)
    }
}

impl std::error::Error for ConfigFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Invalid { source, .. } => Some(&**source),
            Self::Parse { .. } | Self::TooLarge { .. } => None,
        }
    }
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        // Not `positions`: where a setting was written is not part of it.
        let Self {
            collector,
            sampling,
            deadlines,
            expected_intervals,
            sla,
            trace,
            profile,
            prometheus,
            alerts,
            positions: _,
        } = self;
        (collector, sampling, deadlines, sla, trace, profile)
            == (
                &other.collector,
                &other.sampling,
                &other.deadlines,
                &other.sla,
                &other.trace,
                &other.profile,
            )
            && (expected_intervals, prometheus, alerts)
                == (&other.expected_intervals, &other.prometheus, &other.alerts)
    }
}

impl Default for Config {
    /// An empty file: the library's defaults, no deadline, rule, trace or profile.
    fn default() -> Self {
        Self {
            collector: CollectorSection::default(),
            sampling: SamplingSection::default(),
            deadlines: Vec::new(),
            expected_intervals: Vec::new(),
            sla: Vec::new(),
            trace: None,
            profile: None,
            prometheus: PrometheusSection::default(),
            alerts: AlertsSection::default(),
            positions: parse::Positions::default(),
        }
    }
}

impl Config {
    /// Reads a configuration from TOML text and checks it: everything the file decides, then the
    /// library's own validation of the collector settings and of every stage name and label. Like
    /// install, that validation refuses a `max_stages` below the number of stages this process
    /// has already registered.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigFileError> {
        let config = parse::parse(text)?;
        config.check_names()?;
        config.check_expected_intervals()?;
        // Everything but the names (vetted just above, and interned only by `builder`): a stand-in
        // name lets the library's own validation run without keeping anything for the process.
        let builder = config.assemble(|_| "config_check", |_| &[]);
        builder.validate().map_err(|e| config.invalid(e))?;
        Ok(config)
    }

    /// Reads a configuration file, refusing one larger than [`DEFAULT_MAX_BYTES`] with
    /// [`ConfigFileError::TooLarge`]; errors carry its path.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Config, ConfigFileError> {
        Self::from_path_with_limit(path, DEFAULT_MAX_BYTES)
    }

    /// Reads a configuration file, refusing one larger than `max_bytes` with
    /// [`ConfigFileError::TooLarge`]; a file that never ends (`/dev/zero`, a FIFO) stops there.
    pub fn from_path_with_limit(
        path: impl AsRef<Path>,
        max_bytes: u64,
    ) -> Result<Config, ConfigFileError> {
        let path = path.as_ref();
        let io = |source| ConfigFileError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = crate::fs::read_limited(path, max_bytes).map_err(|e| match e {
            crate::fs::ReadError::TooLarge => ConfigFileError::TooLarge {
                path: path.to_owned(),
                limit: max_bytes,
            },
            crate::fs::ReadError::Io(source) => io(source),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.utf8_error(),
            ))
        })?;
        Self::from_toml_str(&text).map_err(|e| e.with_path(path))
    }

    /// A collector builder with everything the file sets: the `[collector]` settings, sampling,
    /// deadlines, expected intervals, SLA rules and tracing. Add what a file cannot hold (an SLA
    /// callback, an exporter) and install it. Interns the file's names (see the module docs) and
    /// validates the result as [`CollectorBuilder::install`] will.
    pub fn builder(&self) -> Result<CollectorBuilder, ConfigFileError> {
        self.check_names()?;
        self.check_expected_intervals()?;
        let b = self.assemble(intern, intern_labels);
        b.validate().map_err(|e| self.invalid(e))?;
        Ok(b)
    }

    /// The file's deadlines and SLA rules as the library's [`SlaPreset`], e.g. to print them or
    /// to judge a snapshot with [`SlaRule::judge`]. Interns the file's names (see the module
    /// docs); [`Config::builder`] installs the same rules.
    pub fn sla_preset(&self) -> Result<SlaPreset, ConfigFileError> {
        self.check_names()?;
        Ok(self.preset(&intern, intern_labels))
    }

    fn preset(
        &self,
        name: &impl Fn(&str) -> &'static str,
        labels: impl Fn(&[(String, String)]) -> Labels,
    ) -> SlaPreset {
        let deadlines = self.deadlines.iter().map(|(s, d)| (name(s), *d)).collect();
        let rules = self
            .sla
            .iter()
            .map(|rule| {
                let mut r = SlaRule::new(name(&rule.stage), rule.window, rule.metric)
                    .with_labels(labels(&rule.labels))
                    .with_min_count(rule.min_count)
                    .with_breaker(rule.guard);
                r.warning = rule.warning;
                r.critical = rule.critical;
                r
            })
            .collect();
        SlaPreset { rules, deadlines }
    }

    /// Everything the file sets, on a builder; `name` and `labels` give the file's names their
    /// `'static` lifetime.
    fn assemble(
        &self,
        name: impl Fn(&str) -> &'static str,
        labels: impl Fn(&[(String, String)]) -> Labels,
    ) -> CollectorBuilder {
        let c = &self.collector;
        let mut b = CollectorBuilder::default()
            .with_ring_capacity(c.ring_capacity)
            .with_interval(c.interval)
            .with_windows(c.windows.iter().copied())
            .with_histogram(c.significant_digits, c.highest)
            .with_max_stages(c.max_stages)
            .with_max_series(c.max_series)
            .with_max_in_flight(c.max_in_flight)
            .with_abandon_after(c.abandon_after)
            .with_breaker_trip_reason(name(&c.latency_guard_reason))
            .with_clock(c.clock);
        if let Some(rate) = self.sampling.rate {
            b = b.with_sampling_rate(rate);
        }
        if let Some(policy) = self.sampling.adaptive {
            b = b.with_adaptive_sampling(policy);
        }
        b = b.with_sla_preset(self.preset(&name, labels));
        for (stage, interval) in &self.expected_intervals {
            b = b.with_expected_interval(name(stage), *interval);
        }
        if let Some(t) = &self.trace {
            b = b.with_tracing(t.config(name(&t.root)));
        }
        b
    }

    /// Every name the file brings, checked by the library's rules, in file order.
    fn check_names(&self) -> Result<(), ConfigFileError> {
        let name = |key: String, name: &str| {
            crate::stage::valid_name(name).map_err(|e| self.invalid_at(key, e.into()))
        };
        name(
            "collector.latency_guard_reason".into(),
            &self.collector.latency_guard_reason,
        )?;
        for (stage, _) in &self.deadlines {
            name(format!("deadlines.{}", parse::key_segment(stage)), stage)?;
        }
        for (stage, _) in &self.expected_intervals {
            name(
                format!("expected_intervals.{}", parse::key_segment(stage)),
                stage,
            )?;
        }
        for (i, rule) in self.sla.iter().enumerate() {
            name(format!("sla[{i}].stage"), &rule.stage)?;
            let labels: Vec<(&str, &str)> = rule
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            crate::stage::valid_labels(&labels).map_err(|e| {
                let label = match &e {
                    crate::StageError::InvalidLabelName { label }
                    | crate::StageError::InvalidLabelValue { label }
                    | crate::StageError::DuplicateLabel { label } => {
                        format!(".{}", parse::key_segment(label))
                    }
                    _ => String::new(),
                };
                self.invalid_at(format!("sla[{i}].labels{label}"), e.into())
            })?;
        }
        if let Some(t) = &self.trace {
            name("trace.root".into(), &t.root)?;
        }
        Ok(())
    }

    /// A zero expected interval, as the library's own error at its key. Checked here, with the
    /// file's stage names: [`Config::from_toml_str`] validates the builder with stand-in names.
    fn check_expected_intervals(&self) -> Result<(), ConfigFileError> {
        match self.expected_intervals.iter().find(|(_, i)| i.is_zero()) {
            Some((stage, _)) => Err(self.invalid(ConfigError::ZeroExpectedInterval {
                stage: stage.clone(),
            })),
            None => Ok(()),
        }
    }

    /// The library refused the builder: point at the key that set the refused value.
    fn invalid(&self, e: ConfigError) -> ConfigFileError {
        let c = &self.collector;
        let window = |length: Duration| {
            c.windows
                .iter()
                .position(|w| w.length == length)
                .map_or("collector.windows".to_owned(), |i| {
                    format!("collector.windows[{i}]")
                })
        };
        let rule = |stage: &str| {
            self.sla
                .iter()
                .position(|r| r.stage == stage)
                .map_or("sla".to_owned(), |i| format!("sla[{i}]"))
        };
        let key = match &e {
            ConfigError::RingCapacity { .. } => "collector.ring_capacity".to_owned(),
            ConfigError::Interval { .. } => "collector.interval".to_owned(),
            ConfigError::NoWindows | ConfigError::ZeroWindow => "collector.windows".to_owned(),
            ConfigError::WindowNotMultipleOfSlice { window: w, .. }
            | ConfigError::SliceTooShort { window: w, .. }
            | ConfigError::TooManySlices { window: w, .. } => window(*w),
            ConfigError::DuplicateWindow { window: w } => c
                .windows
                .iter()
                .enumerate()
                .filter(|(_, s)| s.length == *w)
                .nth(1)
                .map_or("collector.windows".to_owned(), |(i, _)| {
                    format!("collector.windows[{i}]")
                }),
            ConfigError::SignificantDigits { .. } => "collector.significant_digits".to_owned(),
            ConfigError::HighestValue { .. } => "collector.highest".to_owned(),
            ConfigError::MaxStages { .. } => "collector.max_stages".to_owned(),
            ConfigError::MaxSeries { .. } => "collector.max_series".to_owned(),
            ConfigError::SamplingRate { rate }
                if self
                    .sampling
                    .rate
                    .is_none_or(|r| r.to_bits() != rate.to_bits()) =>
            {
                "sampling.adaptive.reduced_rate".to_owned()
            }
            ConfigError::SamplingRate { .. } => "sampling.rate".to_owned(),
            ConfigError::AdaptiveBudget { .. } => "sampling.adaptive.budget_per_sec".to_owned(),
            ConfigError::DeadlineWatch { .. } if c.max_in_flight == 0 => {
                "collector.max_in_flight".to_owned()
            }
            ConfigError::DeadlineWatch { .. } => "collector.abandon_after".to_owned(),
            ConfigError::ZeroDeadline { stage } => {
                format!("deadlines.{}", parse::key_segment(stage))
            }
            ConfigError::ZeroExpectedInterval { stage } => {
                format!("expected_intervals.{}", parse::key_segment(stage))
            }
            ConfigError::Threshold { stage, .. } | ConfigError::UnknownWindow { stage, .. } => {
                rule(stage)
            }
            ConfigError::Quantile { .. } => "sla".to_owned(),
            ConfigError::Stage(_) => "collector.latency_guard_reason".to_owned(),
            ConfigError::Sink(e) => match e.downcast_ref::<crate::trace::TraceError>() {
                Some(crate::trace::TraceError::Setting { setting, .. }) => self.trace_key(setting),
                _ => e.sink().to_owned(),
            },
        };
        self.invalid_at(key, e)
    }

    /// The `[trace]` key of a [`TraceConfig`](crate::trace::TraceConfig) setting.
    fn trace_key(&self, setting: &str) -> String {
        let trace = self.trace.as_ref();
        let key = match setting {
            "golden_interval" => "golden_trace_interval",
            "deadline" if self.positions.has("trace.deadline_ms") => "deadline_ms",
            "metadata" => {
                let reserved = trace.and_then(|t| {
                    t.metadata
                        .iter()
                        .find(|(k, _)| crate::trace::RESERVED_METADATA.contains(&k.as_str()))
                });
                return match reserved {
                    Some((k, _)) => format!("trace.metadata.{}", parse::key_segment(k)),
                    None => "trace.metadata".to_owned(),
                };
            }
            other => other,
        };
        format!("trace.{key}")
    }

    fn invalid_at(&self, key: String, e: ConfigError) -> ConfigFileError {
        let (line, column) = self.positions.locate(&key);
        ConfigFileError::Invalid {
            path: None,
            message: e.to_string(),
            key,
            line,
            column,
            source: Box::new(e),
        }
    }
}

impl TraceSection {
    /// The [`TraceConfig`](crate::trace::TraceConfig) these settings describe, for `root` (the
    /// section's `root`, given a `'static` lifetime by the caller).
    fn config(&self, root: &'static str) -> crate::trace::TraceConfig {
        let mut t = crate::trace::TraceConfig::new(root);
        if let Some(v) = self.enabled {
            t = t.with_enabled(v);
        }
        if let Some(v) = self.sample_rate {
            t = t.with_sample_rate(v);
        }
        if let Some(v) = self.deadline {
            t = t.with_deadline(v);
        }
        if let Some(v) = self.export_golden {
            t = t.with_golden(v);
        }
        if let Some(v) = self.golden_trace_interval {
            t = t.with_golden_interval(v);
        }
        if let Some(v) = &self.output_dir {
            t = t.with_output_dir(v.clone());
        }
        if let Some(v) = self.seed {
            t = t.with_seed(v);
        }
        if let Some(v) = self.keep {
            t = t.with_keep(v);
        }
        if let Some(v) = self.max_spans {
            t = t.with_max_spans(v);
        }
        for (k, v) in &self.metadata {
            t = t.with_metadata(k.clone(), v.clone());
        }
        t
    }
}

/// Names read from files, kept for the life of the process (the library's stages hold
/// `&'static str`); one copy per distinct name however often files are loaded.
static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
/// Label lists, likewise: one leaked slice per distinct list.
static LABEL_SETS: Mutex<BTreeSet<Labels>> = Mutex::new(BTreeSet::new());

fn intern(name: &str) -> &'static str {
    let mut names = NAMES.lock();
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into());
    names.insert(leaked);
    leaked
}

fn intern_labels(labels: &[(String, String)]) -> Labels {
    if labels.is_empty() {
        return &[];
    }
    let list: Vec<(&'static str, &'static str)> =
        labels.iter().map(|(k, v)| (intern(k), intern(v))).collect();
    let mut sets = LABEL_SETS.lock();
    if let Some(known) = sets.get(list.as_slice()) {
        return known;
    }
    let leaked: Labels = Box::leak(list.into_boxed_slice());
    sets.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_keeps_one_copy_per_name_and_label_list() {
        let a = intern("unit_config_stage");
        let b = intern(&String::from("unit_config_stage"));
        assert!(std::ptr::eq(a, b));
        let labels = vec![("verb".to_owned(), "post".to_owned())];
        let x = intern_labels(&labels);
        let y = intern_labels(&labels.clone());
        assert!(std::ptr::eq(x, y));
        assert_eq!(x, &[("verb", "post")]);
        let swapped = intern_labels(&[
            ("api".to_owned(), "batch".to_owned()),
            ("verb".to_owned(), "post".to_owned()),
        ]);
        assert_ne!(swapped, x);
    }

    #[test]
    fn an_empty_file_is_the_builder_default() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config, Config::default());
        let built = format!("{:?}", config.builder().unwrap());
        let default = format!("{:?}", CollectorBuilder::default());
        assert_eq!(built, default);
    }

    #[test]
    fn equality_is_about_settings_not_layout() {
        let a = Config::from_toml_str("[deadlines]\ntick_total = \"2ms\"\n").unwrap();
        let b = Config::from_toml_str("# the tick\n\n[deadlines]\n  tick_total   =  \"2000us\"\n")
            .unwrap();
        let c = Config::from_toml_str("[deadlines]\ntick_total = \"3ms\"\n").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
