//! Golden traces (feature `trace`): whole ticks rebuilt from the records the spans already write,
//! kept in memory, written as the seed's golden JSON, and exported as Chrome trace-event JSON that
//! Perfetto opens.
//!
//! # How
//!
//! Nothing changes on the hot path. Every span already writes one record with its start and end
//! tick into its thread's ring; records of one ring arrive in order, and a tick's root span (the
//! stage named by [`TraceConfig::new`], e.g. a [`crate::lap`]'s total) is written after every
//! span that ran inside it on that thread (a lap writes its splits, then its total, in one visit
//! to the ring). So the aggregator keeps, per ring, the span records since that ring's last root,
//! at most [`TraceConfig::with_max_spans`] of them (the oldest fall out first, and
//! [`Trace::complete`] says when a trace may have lost some so; it cannot see spans skipped by
//! sampling). When a root arrives it decides whether this tick is kept and, if so, nests the
//! buffered spans that lie inside `[root start, root end]` by containment, then forgets the
//! buffer. Spans of other threads never enter a tick's trace, and a
//! span that overlaps another without nesting in it is kept as its sibling.
//!
//! Where intervals only touch, record order decides, and a span's record always follows those
//! of the spans inside it (a guard ends after its inner guards; a lap writes its splits when it
//! ends). A zero-length span (two lap splits with no time between them, which is every time
//! under the mock clock) lies inside another only strictly between its start and end: at either
//! end it merely touches it and is its sibling, and zero-length spans starting together with
//! others come first, in record order, so consecutive splits stay siblings in the order they
//! were split. A zero-length span contains nothing. Of two spans with the same nonzero interval,
//! the earlier record nests in the later.
//!
//! # Which ticks
//!
//! Tick `n` is the `n`-th root span the collector drains (from 1; in drain order when several
//! threads run ticks; a root span skipped by sampling or dropped on a full ring is no tick). It
//! is kept, with the first reason that applies:
//!
//! 1. [`Reason::Slow`]: it took longer than the deadline ([`TraceConfig::with_deadline`], by
//!    default the root stage's own deadline, if it has one). Always, whatever the sample rate:
//!    slow ticks are what one wants to look at.
//! 2. [`Reason::Golden`]: golden export is on and `n` is a multiple of the golden interval.
//! 3. [`Reason::Sampled`]: a draw from a seeded splitmix64 generator (one draw per tick, whatever
//!    the reason) falls below the sample rate. With a fixed seed and the mock clock
//!    (`laptime::clock::MockClock`, feature `test-util`) a run keeps the same ticks and writes
//!    byte-identical files.
//!
//! The last [`TraceConfig::with_keep`] kept traces are returned by
//! [`crate::CollectorHandle::traces`], oldest first. With an output directory, every slow and
//! golden trace is also written to `<dir>/golden_trace_<n>.json` ([`golden_json`]) by a writer
//! thread the collector owns, so the aggregator never waits on a disk: the files are complete
//! once the collector's handle has been dropped (a flush does not wait for them), and writes that
//! fail or find the writer [`WRITE_QUEUE`] files behind are counted in [`crate::Health`].
//! [`crate::CollectorHandle::write_chrome_trace`] writes the kept traces as Chrome trace-event JSON
//! ([`chrome_json`]).
//!
//! ```
//! use std::time::Duration;
//! use laptime::trace::{Reason, TraceConfig};
//!
//! let handle = laptime::Collector::builder()
//!     .with_tracing(
//!         TraceConfig::new("tick_total")
//!             .with_sample_rate(0.2)                        // the seed's settings
//!             .with_deadline(Duration::from_millis(200))
//!             .with_golden_interval(2)                      // 100 in the seed
//!             .with_metadata("parallel_symbols", 10.into()),
//!     )
//!     .install()
//!     .expect("valid configuration, first collector of the process");
//! for _ in 0..4 {
//!     let mut lap = laptime::lap("tick_total");
//!     lap.split("stage_fetch_md");
//!     {
//!         let _span = laptime::start("exchange_req"); // nests inside stage_emit
//!     }
//!     lap.end_with("stage_emit");
//! }
//! handle.flush();
//! let golden: Vec<_> = handle.traces().into_iter().filter(|t| t.reason == Reason::Golden).collect();
//! assert_eq!(golden.iter().map(|t| t.tick).collect::<Vec<_>>(), [2, 4]);
//! let names: Vec<_> = golden[0].spans.iter().map(|s| (s.name, s.depth)).collect();
//! assert_eq!(names, [("stage_fetch_md", 1), ("stage_emit", 1), ("exchange_req", 2)]);
//! let json = laptime::trace::golden_json(&golden[0], &Default::default());
//! assert!(json.starts_with("{\n  \"trace_id\": \"tick_2\",\n  \"duration_ms\": "));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::stage::Labels;

mod format;
mod kept;
mod sink;
mod tracer;
mod writer;

pub use format::{chrome_json, golden_json};
// Read by the Prometheus export, which links its buckets to kept traces (exemplars).
#[cfg(feature = "prometheus")]
pub(crate) use kept::KeptValue;
pub(crate) use kept::KeptValues;
#[cfg(feature = "prometheus")]
pub(crate) use tracer::Store;

/// Why tracing cannot be set up as configured. The collector carries it inside
/// [`ConfigError::Sink`](crate::ConfigError::Sink) (a setting, found by `validate` and
/// `install`) or [`InstallErrorKind::Sink`](crate::InstallErrorKind::Sink) (the output
/// directory, found by `install`); [`SinkError::downcast_ref`](crate::SinkError::downcast_ref)
/// gives it back.
#[derive(Debug)]
#[non_exhaustive]
pub enum TraceError {
    /// A setting that cannot work.
    Setting {
        /// The setting, named as its `TraceConfig` getter: `root`, `sample_rate`, `deadline`,
        /// `golden_interval`, `keep`, `max_spans` or `metadata`.
        setting: &'static str,
        /// What is wrong with it and what to use instead.
        reason: String,
    },
    /// The output directory ([`TraceConfig::with_output_dir`]) could not be created.
    OutputDir {
        /// The directory.
        dir: PathBuf,
        /// Why it could not be created.
        error: std::io::Error,
    },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setting { setting, reason } => write!(f, "trace setting {setting}: {reason}"),
            Self::OutputDir { dir, error } => write!(
                f,
                "cannot create the trace output directory {}: {error}: create it, or pass a \
                 writable directory to TraceConfig::with_output_dir",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for TraceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::OutputDir { error, .. } => Some(error),
            Self::Setting { .. } => None,
        }
    }
}

/// Tracing's own figures ([`crate::CollectorHandle::trace_health`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceHealth {
    /// Ticks traced and kept: slow, golden and sampled.
    pub kept: u64,
    /// Kept traces that may miss spans: their thread recorded more spans between two ticks than
    /// `TraceConfig::with_max_spans` buffers.
    pub incomplete: u64,
    /// Golden and slow trace files written.
    pub files_written: u64,
    /// Trace files that could not be written.
    pub write_errors: u64,
    /// Trace files not written because the writer thread was [`WRITE_QUEUE`] files behind.
    pub writes_skipped: u64,
}

/// The generator seed used unless [`TraceConfig::with_seed`] sets another: the bytes of
/// `"laptime!"`.
pub const DEFAULT_SEED: u64 = 0x6C61_7074_696D_6521;
/// Most traces [`TraceConfig::with_keep`] may keep in memory.
pub const MAX_KEEP: usize = 1 << 16;
/// Most spans per thread [`TraceConfig::with_max_spans`] may buffer between two ticks.
pub const MAX_SPANS: usize = 1 << 16;
/// Trace files the writer thread may be behind before further ones are skipped (and counted in
/// [`TraceHealth::writes_skipped`]).
pub const WRITE_QUEUE: usize = 64;
/// Keys of a golden trace's `metadata` that the trace itself fills in; user metadata may not use
/// them.
pub const RESERVED_METADATA: [&str; 5] = ["reason", "root", "tick", "thread", "incomplete"];

/// How ticks are traced: which stage is the tick, which ticks are kept, where they are written.
///
/// A plain configuration value, like [`crate::WindowSpec`]: `with_*` setters return it changed,
/// getters read it, and nothing happens until it is handed to
/// [`CollectorBuilder::with_tracing`](crate::CollectorBuilder::with_tracing), whose `install`
/// validates it (or call [`validate`](Self::validate) first). It has no terminal verb because it
/// starts nothing itself.
///
/// Defaults follow the seed's configuration: enabled, sample rate 0.2, golden export every 100
/// ticks, the root stage's own deadline for slow ticks, seed [`DEFAULT_SEED`], 256 traces kept in
/// memory, 256 spans buffered per thread, no output directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    root: &'static str,
    enabled: bool,
    sample_rate: f64,
    deadline: Option<Duration>,
    golden: bool,
    golden_interval: u64,
    output_dir: Option<PathBuf>,
    seed: u64,
    keep: usize,
    max_spans: usize,
    metadata: BTreeMap<String, serde_json::Value>,
}

impl TraceConfig {
    /// Traces ticks whose root span is the unlabelled stage `root` (a lap's total, or a guard
    /// around the whole tick).
    pub fn new(root: &'static str) -> Self {
        Self {
            root,
            enabled: true,
            sample_rate: 0.2,
            deadline: None,
            golden: true,
            golden_interval: 100,
            output_dir: None,
            seed: DEFAULT_SEED,
            keep: 256,
            max_spans: 256,
            metadata: BTreeMap::new(),
        }
    }

    /// The feature flag (`trace.enabled`): `false` makes the collector trace nothing at all, with
    /// no per-record work and no buffer.
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The fraction of ticks kept at random, in [0, 1].
    pub fn with_sample_rate(mut self, rate: f64) -> Self {
        self.sample_rate = rate;
        self
    }

    /// Ticks longer than this are kept as slow, always (default: the root stage's own deadline,
    /// read at each tick; without one, no tick counts as slow).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Whether every [`with_golden_interval`](Self::with_golden_interval)-th tick is kept as a
    /// golden trace (`trace.export_golden`).
    pub fn with_golden(mut self, golden: bool) -> Self {
        self.golden = golden;
        self
    }

    /// Keep tick `n` as golden when `n` is a multiple of `ticks` (at least 1).
    pub fn with_golden_interval(mut self, ticks: u64) -> Self {
        self.golden_interval = ticks;
        self
    }

    /// Writes every golden and slow trace to `<dir>/golden_trace_<n>.json`. The directory is
    /// created at install if missing; install fails if it cannot be.
    pub fn with_output_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.output_dir = Some(dir.into());
        self
    }

    /// The seed of the sampling draws: the same seed keeps the same ticks.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How many of the latest kept traces [`crate::CollectorHandle::traces`] returns (0 to
    /// [`MAX_KEEP`]; 0 keeps none in memory, files are still written).
    pub fn with_keep(mut self, traces: usize) -> Self {
        self.keep = traces;
        self
    }

    /// How many span records each thread's buffer holds between two ticks (1 to [`MAX_SPANS`]):
    /// a tick with more spans than this loses its oldest ones and is marked incomplete.
    pub fn with_max_spans(mut self, spans: usize) -> Self {
        self.max_spans = spans;
        self
    }

    /// Adds `key: value` to every golden trace's `metadata` (e.g. `symbols`,
    /// `parallel_symbols`). The keys in [`RESERVED_METADATA`] are the trace's own.
    pub fn with_metadata(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// The root stage's name.
    pub fn root(&self) -> &'static str {
        self.root
    }

    /// Whether tracing is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The sample rate.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// The slow-tick deadline, if set here (else the root stage's own applies).
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Whether golden traces are kept.
    pub fn golden(&self) -> bool {
        self.golden
    }

    /// The golden interval, in ticks.
    pub fn golden_interval(&self) -> u64 {
        self.golden_interval
    }

    /// Where trace files go, if anywhere.
    pub fn output_dir(&self) -> Option<&Path> {
        self.output_dir.as_deref()
    }

    /// The sampling seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How many traces are kept in memory.
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// How many spans each thread buffers between two ticks.
    pub fn max_spans(&self) -> usize {
        self.max_spans
    }

    /// The metadata copied into each golden trace.
    pub fn metadata(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.metadata
    }

    /// Checks the settings without installing anything (also checked when the collector is:
    /// then the error comes as [`ConfigError::Sink`](crate::ConfigError::Sink), whose
    /// [`downcast_ref`](crate::SinkError::downcast_ref) gives this one back).
    pub fn validate(&self) -> Result<(), TraceError> {
        let fail = |setting, reason: String| Err(TraceError::Setting { setting, reason });
        if let Err(e) = crate::stage::valid_name(self.root) {
            return fail("root", format!("{e}"));
        }
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return fail(
                "sample_rate",
                format!(
                    "{} is not in [0, 1]: use e.g. 0.2 to keep 20 % of ticks",
                    self.sample_rate
                ),
            );
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return fail(
                "deadline",
                "is zero, so every tick would be slow: give the tick's budget, e.g. 200 ms".into(),
            );
        }
        if self.golden_interval == 0 {
            return fail(
                "golden_interval",
                "is 0: use at least 1 (100 keeps every 100th tick)".into(),
            );
        }
        if self.keep > MAX_KEEP {
            return fail(
                "keep",
                format!("{} is above {MAX_KEEP}: keep fewer traces", self.keep),
            );
        }
        if !(1..=MAX_SPANS).contains(&self.max_spans) {
            return fail(
                "max_spans",
                format!(
                    "{} is out of range: use 1..={MAX_SPANS} (more than a tick's spans per thread)",
                    self.max_spans
                ),
            );
        }
        if let Some(key) = RESERVED_METADATA
            .iter()
            .find(|k| self.metadata.contains_key(**k))
        {
            return fail(
                "metadata",
                format!("key {key:?} is the trace's own: rename yours"),
            );
        }
        Ok(())
    }
}

/// Why a tick was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// It took longer than the deadline.
    Slow,
    /// Its number is a multiple of the golden interval.
    Golden,
    /// The seeded draw kept it.
    Sampled,
}

impl Reason {
    /// `"slow"`, `"golden"` or `"sampled"`: the `reason` in a golden trace's metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Slow => "slow",
            Reason::Golden => "golden",
            Reason::Sampled => "sampled",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One kept tick: its root span and the spans its thread recorded inside it, nested.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Trace {
    /// The tick's number (the `n`-th root span drained, from 1).
    pub tick: u64,
    /// Why it was kept.
    pub reason: Reason,
    /// The root stage's name.
    pub root: &'static str,
    /// The name of the thread that ran the tick, or `ring-<id>` for an unnamed thread.
    pub thread: String,
    /// When the tick started, in nanoseconds since the collector was installed.
    pub start_ns: u64,
    /// The root span's duration, in nanoseconds.
    pub duration_ns: u64,
    /// The spans inside the root, in order of start (a parent before its children; at equal
    /// starts zero-length spans first, then the longer first; see the module docs for ties).
    pub spans: Vec<TraceSpan>,
    /// `false` when spans of this tick may have fallen out of its thread's buffer (more than
    /// [`TraceConfig::with_max_spans`] spans since the previous tick): the trace then holds the
    /// latest ones.
    ///
    /// `true` says nothing about spans that never reached the collector, which a complete
    /// trace also lacks: calls skipped by sampling (the collector's
    /// [`with_sampling_rate`](crate::CollectorBuilder::with_sampling_rate), adaptive sampling,
    /// a stage's own rate, `sample =` on `#[measure]`; a sampled-out lap records none of its
    /// splits), records dropped on a full ring, and disabled stages. Those are counted per
    /// stage ([`crate::StageStats::sampled_out`], [`crate::StageStats::dropped`]), not per tick,
    /// so they cannot be pinned to a tick; sample at rate 1 where traces must be whole.
    pub complete: bool,
}

/// One span of a [`Trace`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceSpan {
    /// The stage's name.
    pub name: &'static str,
    /// The stage's labels.
    pub labels: Labels,
    /// When it started, in nanoseconds after the root's start.
    pub start_ns: u64,
    /// Its duration, in nanoseconds.
    pub duration_ns: u64,
    /// 1 for a child of the root, 2 for a grandchild, …
    pub depth: u32,
    /// The index in [`Trace::spans`] of the span it nests in; `None` for a child of the root.
    pub parent: Option<usize>,
    /// The stage's id, which [`KeptValue`] carries to another sink.
    pub(crate) stage_id: u32,
}
