//! Perf profiles (feature `profile`): one versioned JSON file per run with each stage's figures and
//! its HDR histogram, so runs can be gated against each other, merged across processes and hosts,
//! and drawn.
//!
//! A running collector writes one with [`CollectorHandle::profile`](crate::CollectorHandle::profile)
//! and [`Profile::write`]; [`Profile::from_path`] reads it back, checking every figure
//! ([`Profile::validate`]); [`Profile::merge`] adds runs up (histograms added, counters summed, the
//! figures recomputed from the sum).
//!
//! ```
//! use std::collections::BTreeMap;
//! use laptime::profile::{Histogram, Profile, ProfileConfig, ProfileMeta, StageCounts, StageProfile};
//!
//! let mut hist = Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?;
//! let mut counts = StageCounts { min_ns: u64::MAX, ..StageCounts::default() };
//! for ns in [120_000, 125_000, 250_000, 900_000] {
//!     hist.record(ns)?;
//!     counts.min_ns = counts.min_ns.min(ns);
//!     counts.max_ns = counts.max_ns.max(ns);
//!     counts.sum_ns += ns;
//! }
//! let stage = StageProfile::from_histogram("tick_total", BTreeMap::new(), &hist, counts)?;
//! assert_eq!((stage.count, stage.p50_ns, stage.max_ns), (4, 125_055, 900_000));
//!
//! let meta = ProfileMeta::new("nightly", ProfileConfig::new(3, 3_600_000_000_000));
//! let profile = Profile::new(meta, vec![stage]);
//! let again = Profile::from_json(profile.to_json().as_bytes())?;
//! assert_eq!(again, profile);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The format
//!
//! `{"format": "laptime-profile", "version": 1, "meta": {..}, "stages": [..]}`, for example:
//!
//! ```json
//! {
//!   "format": "laptime-profile",
//!   "version": 1,
//!   "meta": {
//!     "name": "trading_tick",
//!     "started_unix_ms": 1767225600000,
//!     "ended_unix_ms": 1767225610250,
//!     "host": "bench-1",
//!     "git_revision": "a0c8129",
//!     "tags": { "env": "canary" },
//!     "config": {
//!       "significant_digits": 3,
//!       "highest_ns": 3600000000000,
//!       "sampling_rate": 1.0,
//!       "interval_ns": 10000000,
//!       "ring_capacity": 8192
//!     }
//!   },
//!   "stages": [
//!     {
//!       "name": "exchange_req",
//!       "labels": { "api": "batch-cancel", "verb": "post" },
//!       "count": 4,
//!       "calls": 5,
//!       "min_ns": 120000,
//!       "max_ns": 2900000,
//!       "sum_ns": 3395000,
//!       "mean_ns": 848750.0,
//!       "p50_ns": 125055,
//!       "p90_ns": 2900000,
//!       "p95_ns": 2900000,
//!       "p99_ns": 2900000,
//!       "p999_ns": 2900000,
//!       "deadline_ns": 2000000,
//!       "deadline_misses": 1,
//!       "deadline_miss_pct": 25.0,
//!       "dropped": 0,
//!       "sampled_out": 1,
//!       "cancelled": 0,
//!       "saturated": 0,
//!       "histogram": "HISTFAAAAD94nAE0AMv/HISTEwAAAAwAAAAAAAAAAwAAAAAAAAABAAADRjC4oAA/8AAAAAAAAKV9ApkBAv0PAss3Ap+RCCk="
//!     }
//!   ]
//! }
//! ```
//!
//! Durations are whole nanoseconds. `labels`, `deadline_ns`, `histogram`, `git_revision`, `tags`
//! and `merged_from` may be left out, and so may the fields below that are written only when
//! they say something. `count` spans were recorded into the histogram; `calls` adds the calls
//! skipped by sampling, lost to full rings, cancelled and still in the rings (`in_rings`). Percentiles follow the
//! library's nearest-rank definition ([`crate::rank`]): the highest value of the histogram bucket
//! holding that rank, clamped to the exact `min_ns`/`max_ns`, so a collector's profile reports the
//! same percentiles as `get_stats(stage, Window::Cumulative)`. The histogram is HdrHistogram's V2
//! deflate serialization in standard base64 (the `HISTFAAA…` text HdrHistogram's own log tools
//! read), lowest value 1 ns, with the `significant_digits` and `highest_ns` of `meta.config`; a
//! profile can therefore be merged and compared without trusting its summary figures. A stage's
//! percentile fields must be the ones its histogram gives (a hand-edited `p99_ns` is refused);
//! a hand-written stage leaves the histogram out.
//!
//! Parsing ([`Profile::from_json`]) reads `format` and `version` first, so another format or a
//! newer version is reported as such; then it rejects unknown fields, missing fields and wrong
//! types naming the field (`stages[2].p95_ns`); then [`Profile::validate`] rejects figures that
//! contradict each other. A malformed file is an error, never a panic.
//!
//! ## Coordinated omission and accounting
//!
//! A stage with an expected interval ([`crate::Stage::set_expected_interval`]) also carries
//! `corrected` ([`CorrectedProfile`]): the coordinated-omission-corrected figures beside the raw
//! ones, with their own histogram (encoded like the raw one) and the same rules (the percentiles
//! must be the ones that histogram gives; errors name `stages[i].corrected.p99_ns`). The demo's
//! `tick_total` (3 477 ticks expected every 900 µs; its raw p99 3.63 ms):
//!
//! ```json
//! "corrected": {
//!   "expected_interval_ns": 900000,
//!   "count": 3629, "synthesized": 152, "truncated": 0,
//!   "min_ns": 185006, "max_ns": 6315888, "sum_ns": 2068518833, "mean_ns": 569996.9228437586,
//!   "p50_ns": 429311, "p90_ns": 580607, "p95_ns": 1166335, "p99_ns": 4171775, "p999_ns": 5951487,
//!   "histogram": "HISTFAAAA5d4nFWVsY4c…"
//! }
//! ```
//!
//! A stage without `corrected` was not corrected. `unwound` (spans ended by a panic, also in
//! `count`) and `in_rings` (outcomes not yet aggregated, part of `calls`) per stage, and
//! `meta.backwards_spans` (spans whose clock read went backwards), are written only when not 0.
//! The format version stays 1 because every one of these fields may be left out, so files
//! written before them still parse; laptime versions older than these fields reject a file that
//! has one (as an unknown field), so read such files with this version or newer.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) mod collect;
mod histogram;
mod merge;
mod wire;

/// The `hdrhistogram` crate this module builds on, so callers use the same version.
pub use hdrhistogram;

/// A stage's histogram: HdrHistogram with `u64` counters, values in nanoseconds.
pub type Histogram = hdrhistogram::Histogram<u64>;

/// The `format` value of every profile.
pub const FORMAT: &str = "laptime-profile";
/// The profile version this build writes and reads.
pub const VERSION: u32 = 1;
/// The largest file [`Profile::from_path`] reads: 256 MiB. A profile of 20 000 stages with wide
/// histograms (20 000 values each over six decades) is 147 MB; anything much larger is likely
/// not a profile. [`Profile::from_path_with_limit`] takes another limit.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// One run's perf profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Profile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for profiles this build wrote.
    pub version: u32,
    /// Where and when the run happened, and how the collector was set up.
    pub meta: ProfileMeta,
    /// One entry per stage (name plus labels), in the collector's stage order; after a merge, in
    /// order of first appearance.
    pub stages: Vec<StageProfile>,
}

/// Where and when a profile was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProfileMeta {
    /// The run's name (e.g. the service or benchmark).
    pub name: String,
    /// When the collector was installed, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// When the profile was taken, in milliseconds since the Unix epoch.
    pub ended_unix_ms: u64,
    /// The host the run happened on (for a merge: the hosts joined by `,`).
    pub host: String,
    /// The source revision the run was built from, when the caller knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_revision: Option<String>,
    /// Free-form tags (e.g. `env = canary`, `mode = async_batch`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The collector settings the figures were taken with.
    pub config: ProfileConfig,
    /// For a merged profile: the names of the profiles it was merged from, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// Spans whose end read earlier than their start, recorded as 0 ns
    /// ([`crate::Health::backwards_spans`]); summed by a merge. Left out when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backwards_spans: u64,
}

/// The collector settings that shape a profile's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProfileConfig {
    /// The histograms' significant digits (1–5).
    pub significant_digits: u8,
    /// The histograms' highest trackable value, in ns; larger values are counted as saturated.
    pub highest_ns: u64,
    /// The sampling rate in force when the profile was taken, in [0, 1]; for a merged profile,
    /// the lowest of its inputs'.
    pub sampling_rate: f64,
    /// The aggregator's interval, in ns; for a merged profile, its first input's.
    pub interval_ns: u64,
    /// Records per thread ring; for a merged profile, its first input's.
    pub ring_capacity: u64,
}

/// One stage's figures over the whole run (the collector's cumulative window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "wire::StageWire")]
#[non_exhaustive]
pub struct StageProfile {
    /// The stage's name.
    pub name: String,
    /// The stage's static labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Spans recorded into the histogram.
    pub count: u64,
    /// Every call: `count + sampled_out + dropped + cancelled + in_rings`.
    pub calls: u64,
    /// The recorded spans' range, sum, mean and percentiles; `stage.p99_ns` reads
    /// `stage.distribution.p99_ns`. In the file its fields sit inline, between `calls` and
    /// `deadline_ns`.
    #[serde(flatten)]
    pub distribution: DistributionProfile,
    /// The stage's deadline, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ns: Option<u64>,
    /// Spans that ran past the deadline.
    pub deadline_misses: u64,
    /// `100 × deadline_misses / max(count, deadline_misses)` (0 when both are 0).
    pub deadline_miss_pct: f64,
    /// Records lost to full rings.
    pub dropped: u64,
    /// Calls skipped by sampling.
    pub sampled_out: u64,
    /// Spans abandoned before their end.
    pub cancelled: u64,
    /// Values above the histogram's highest trackable value.
    pub saturated: u64,
    /// The histogram of the recorded spans (ns), HdrHistogram V2 deflate serialization in base64;
    /// absent only in hand-written profiles (then the gate falls back to plain thresholds and a
    /// merge refuses the stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
    /// Spans that ended while their thread unwound from a panic (also in `count`). Left out when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unwound: u64,
    /// Span outcomes still in the rings when the profile was taken (part of `calls`). Left out
    /// when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_rings: u64,
    /// The coordinated-omission-corrected figures, for a stage with an expected interval
    /// ([`crate::Stage::set_expected_interval`]); absent when the stage was not corrected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected: Option<CorrectedProfile>,
}

/// A stage's figures with coordinated-omission correction ([`crate::CorrectedStats`]): its spans
/// (since the correction was turned on) plus, for each span at least twice the expected
/// interval, the latencies of the spans it held back. Same rules as the raw figures beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "wire::CorrectedWire")]
#[non_exhaustive]
pub struct CorrectedProfile {
    /// The interval the stage's spans were expected to start at, in ns.
    pub expected_interval_ns: u64,
    /// Values in the corrected histogram: spans recorded since the correction was on, plus
    /// `synthesized`.
    pub count: u64,
    /// Values added for spans held back by a slower one.
    pub synthesized: u64,
    /// Spans whose correction was cut short (one span adds at most 4 194 304 values).
    pub truncated: u64,
    /// Values (raw or added) above the histograms' highest trackable value (absent in profiles
    /// written before it was kept: read as 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub saturated: u64,
    /// The corrected values' range, sum, mean and percentiles, by the raw figures' rules;
    /// `corrected.p99_ns` reads `corrected.distribution.p99_ns`. In the file its fields sit
    /// inline, between `saturated` and `histogram`.
    #[serde(flatten)]
    pub distribution: DistributionProfile,
    /// The corrected histogram (ns), encoded like [`StageProfile::histogram`]; absent only in
    /// hand-written profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
}

/// The figures of one distribution as a profile writes them, in whole nanoseconds: the exact
/// range and sum, the mean, and the nearest-rank percentiles of its histogram. A stage's raw
/// figures ([`StageProfile`]) and its corrected ones ([`CorrectedProfile`]) each carry one, and
/// dereference to it; its fields are written inline, so the file format is the one described
/// above.
///
/// Every percentile is the highest value of the histogram bucket holding its rank
/// ([`crate::rank`]), clamped to `[min_ns, max_ns]`; with nothing recorded every figure is 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DistributionProfile {
    /// Smallest value, exact.
    pub min_ns: u64,
    /// Largest value, exact.
    pub max_ns: u64,
    /// Sum of the values, exact (saturating at `u64::MAX`).
    pub sum_ns: u64,
    /// `sum_ns / count` (0 when `count` is 0).
    pub mean_ns: f64,
    /// Median (nearest rank, the bucket's highest equivalent value clamped to [min, max]).
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 95th percentile.
    pub p95_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
}

impl std::ops::Deref for StageProfile {
    type Target = DistributionProfile;

    fn deref(&self) -> &DistributionProfile {
        &self.distribution
    }
}

impl std::ops::DerefMut for StageProfile {
    fn deref_mut(&mut self) -> &mut DistributionProfile {
        &mut self.distribution
    }
}

impl std::ops::Deref for CorrectedProfile {
    type Target = DistributionProfile;

    fn deref(&self) -> &DistributionProfile {
        &self.distribution
    }
}

impl std::ops::DerefMut for CorrectedProfile {
    fn deref_mut(&mut self) -> &mut DistributionProfile {
        &mut self.distribution
    }
}

/// The exact figures of a corrected histogram that it does not hold, for
/// [`CorrectedProfile::from_histogram`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CorrectedCounts {
    /// The expected interval, in ns (more than 0).
    pub expected_interval_ns: u64,
    /// Smallest value, exact (0 when nothing was recorded).
    pub min_ns: u64,
    /// Largest value, exact (0 when nothing was recorded).
    pub max_ns: u64,
    /// Sum of the values, exact, saturating at `u64::MAX`.
    pub sum_ns: u64,
    /// Values the correction added (also in the histogram).
    pub synthesized: u64,
    /// Spans whose correction was cut short.
    pub truncated: u64,
    /// Values above the histogram's highest trackable value.
    pub saturated: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The exact figures of a stage that a histogram does not hold, for
/// [`StageProfile::from_histogram`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageCounts {
    /// Shortest span, exact (0 when nothing was recorded).
    pub min_ns: u64,
    /// Longest span, exact (0 when nothing was recorded).
    pub max_ns: u64,
    /// Sum of the recorded spans, exact, saturating at `u64::MAX`.
    pub sum_ns: u64,
    /// The stage's deadline, if it has one.
    pub deadline_ns: Option<u64>,
    /// Spans that ran past the deadline.
    pub deadline_misses: u64,
    /// Records lost to full rings.
    pub dropped: u64,
    /// Calls skipped by sampling.
    pub sampled_out: u64,
    /// Spans abandoned before their end.
    pub cancelled: u64,
    /// Recorded values above the histogram's highest trackable value.
    pub saturated: u64,
    /// Spans that ended while their thread unwound from a panic (also recorded).
    pub unwound: u64,
    /// Span outcomes still in the rings.
    pub in_rings: u64,
}

/// Why a profile could not be read, checked, written, merged or taken.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file holds more than the read limit ([`DEFAULT_MAX_BYTES`], or the one given to
    /// [`Profile::from_path_with_limit`]): likely not a profile (`/dev/zero`, a log).
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// Reading or writing the file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text is not JSON, or ends too early.
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the JSON parser found.
        message: String,
    },
    /// A field is missing, unknown or of the wrong type.
    Field {
        /// Where, e.g. `stages[2].p95_ns` or `meta.config` (empty for the whole document).
        path: String,
        /// What the parser expected.
        message: String,
    },
    /// The `format` field is not [`FORMAT`]: another kind of file.
    Format {
        /// The `format` value found, as JSON (`(absent)` when there is none).
        found: String,
    },
    /// The `version` is not one this build reads.
    Version {
        /// The version found.
        found: u64,
        /// The version this build reads.
        supported: u32,
    },
    /// Figures that contradict each other (found by [`Profile::validate`]).
    Invalid {
        /// The field at fault, e.g. `stages[1].p95_ns`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A histogram that cannot be decoded or encoded.
    Histogram {
        /// The field, e.g. `stages[0].histogram`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Profiles that cannot be merged.
    Merge {
        /// Why.
        message: String,
    },
    /// A stage was corrected for coordinated omission with different expected intervals in two
    /// inputs of a merge: their corrected histograms describe different schedules.
    IntervalMismatch {
        /// The stage's key.
        stage: String,
        /// The first input that has corrected figures for it, and its interval in ns.
        first: (usize, u64),
        /// The input whose interval differs, and that interval in ns.
        other: (usize, u64),
    },
    /// The collector could not give its figures.
    Collector {
        /// Why.
        message: String,
    },
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { path, limit } => write!(
                f,
                "{} is larger than {limit} bytes; is this a profile? (raise the limit with \
                 --max-input-bytes, or Profile::from_path_with_limit)",
                path.display()
            ),
            Self::Io { path, source } => write!(
                f,
                "profile file {}: {source}{}",
                path.display(),
                crate::fs::io_hint(source)
            ),
            Self::Syntax {
                line,
                column,
                message,
            } => write!(
                f,
                "profile is not valid JSON at line {line}, column {column}: {message}: the file \
                 must be a complete laptime profile (was it cut short or edited by hand?)"
            ),
            Self::Field { path, message } if path.is_empty() => write!(
                f,
                "profile: {message}: the document must be a JSON object with `format`, `version`, \
                 `meta` and `stages`"
            ),
            Self::Field { path, message } => write!(
                f,
                "profile field `{path}`: {message}: fix or remove the field (the format is \
                 described in the laptime::profile docs)"
            ),
            Self::Format { found } => write!(
                f,
                "not a laptime profile: `format` is {found}, expected \"{FORMAT}\": pass a file \
                 written by laptime's profile export"
            ),
            Self::Version { found, supported } => write!(
                f,
                "profile version {found} is not supported: this build reads version {supported}; \
                 read it with the laptime version that wrote it, or write it again with this one"
            ),
            Self::Invalid { path, message } => write!(
                f,
                "profile field `{path}`: {message} (fix the file, or take the profile again)"
            ),
            Self::Histogram { path, message } => write!(
                f,
                "profile field `{path}`: {message}: it must be HdrHistogram's V2 deflate \
                 serialization in standard base64, as laptime writes it (or leave the field out)"
            ),
            Self::Merge { message } => write!(f, "cannot merge profiles: {message}"),
            Self::IntervalMismatch {
                stage,
                first,
                other,
            } => write!(
                f,
                "cannot merge profiles: stage {stage} was corrected for coordinated omission with \
                 an expected interval of {} ns in input {} but {} ns in input {}: merge runs taken \
                 with the same expected interval, or take them again with one",
                first.1, first.0, other.1, other.0
            ),
            Self::Collector { message } => write!(f, "cannot take a profile: {message}"),
        }
    }
}

impl std::error::Error for ProfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// `format` and `version` read on their own, leniently, before anything else: a file of another
/// version is reported as such, not as an unknown field of this one.
#[derive(Deserialize)]
struct Probe {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// A `serde_json` error as a [`ProfileError`]: syntax (or a premature end) with its position,
/// anything else as a field error at `path`.
fn json_error(path: String, e: &serde_json::Error) -> ProfileError {
    use serde_json::error::Category;
    let mut message = e.to_string();
    // serde_json appends the position to its message; the variants carry it as fields.
    let position = format!(" at line {} column {}", e.line(), e.column());
    if let Some(stripped) = message.strip_suffix(&position) {
        message.truncate(stripped.len());
    }
    // An unknown key is quoted in both the path and the message: a 1 MiB key made a 2 MiB error.
    let (path, message) = (clipped(path), clipped(message));
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ProfileError::Syntax {
            line: e.line(),
            column: e.column(),
            message,
        },
        Category::Data => {
            // serde names a missing field in its message and points the path at the struct that
            // lacks it; name the field itself, as for every other field error.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
                .map(str::to_owned);
            let path = match missing {
                Some(field) if path.is_empty() => field,
                Some(field) => format!("{path}.{field}"),
                None => path,
            };
            ProfileError::Field { path, message }
        }
    }
}

/// `text` cut to [`MAX_PROFILE_ERROR_TEXT`](crate::limits::MAX_PROFILE_ERROR_TEXT) bytes (at a
/// character boundary), saying how long it was.
fn clipped(mut text: String) -> String {
    let max = crate::limits::MAX_PROFILE_ERROR_TEXT;
    if text.len() <= max {
        return text;
    }
    let len = text.len();
    let cut = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text.truncate(cut);
    text.push_str(&format!("… ({len} bytes in all)"));
    text
}

/// Refuses metadata past the bounds of [`crate::limits`]: texts longer than anyone writes, more
/// tags or merged inputs than a profile carries. The error names the field and quotes none of it.
fn check_meta(meta: &ProfileMeta) -> Result<(), ProfileError> {
    use crate::limits::{
        MAX_PROFILE_HOST_LEN, MAX_PROFILE_MERGED_FROM, MAX_PROFILE_TAGS, MAX_PROFILE_TEXT_LEN,
    };
    let text = |field: &str, value: &str, max: usize| {
        if value.len() <= max {
            return Ok(());
        }
        Err(invalid(
            field,
            format!(
                "is {} bytes, more than the {max} a profile may carry: shorten it",
                value.len()
            ),
        ))
    };
    let count = |field: &str, n: usize, max: usize| {
        if n <= max {
            return Ok(());
        }
        Err(invalid(
            field,
            format!("has {n} entries, more than the {max} a profile may carry: keep fewer"),
        ))
    };
    text("meta.name", &meta.name, MAX_PROFILE_TEXT_LEN)?;
    text("meta.host", &meta.host, MAX_PROFILE_HOST_LEN)?;
    text(
        "meta.git_revision",
        meta.git_revision.as_deref().unwrap_or(""),
        MAX_PROFILE_TEXT_LEN,
    )?;
    count("meta.tags", meta.tags.len(), MAX_PROFILE_TAGS)?;
    for (k, v) in &meta.tags {
        text("meta.tags (a key)", k, MAX_PROFILE_TEXT_LEN)?;
        text("meta.tags (a value)", v, MAX_PROFILE_TEXT_LEN)?;
    }
    count(
        "meta.merged_from",
        meta.merged_from.len(),
        MAX_PROFILE_MERGED_FROM,
    )?;
    for (i, name) in meta.merged_from.iter().enumerate() {
        text(
            &format!("meta.merged_from[{i}]"),
            name,
            MAX_PROFILE_TEXT_LEN,
        )?;
    }
    Ok(())
}

impl Profile {
    /// A profile of `stages` with `format` and `version` filled in.
    pub fn new(meta: ProfileMeta, stages: Vec<StageProfile>) -> Profile {
        Profile {
            format: FORMAT.to_owned(),
            version: VERSION,
            meta,
            stages,
        }
    }

    /// Parses and validates a profile. Errors name the line (for JSON syntax) or the field.
    pub fn from_json(bytes: &[u8]) -> Result<Profile, ProfileError> {
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| json_error(String::new(), &e))?;
        // serde also reads a struct from an array of its fields; a profile is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ProfileError::Field {
                path: String::new(),
                message: "expected a JSON object, found another JSON value".to_owned(),
            });
        }
        match &probe.format {
            Some(serde_json::Value::String(s)) if s == FORMAT => {}
            Some(other) => {
                return Err(ProfileError::Format {
                    found: other.to_string(),
                });
            }
            None => {
                return Err(ProfileError::Format {
                    found: "(absent)".to_owned(),
                });
            }
        }
        if let Some(version) = &probe.version {
            match version.as_u64() {
                Some(v) if v == u64::from(VERSION) => {}
                Some(found) => {
                    return Err(ProfileError::Version {
                        found,
                        supported: VERSION,
                    });
                }
                None => {
                    return Err(ProfileError::Field {
                        path: "version".to_owned(),
                        message: format!("expected the whole number {VERSION}, found {version}"),
                    });
                }
            }
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let profile: Profile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            json_error(path, e.inner())
        })?;
        profile.validate()?;
        Ok(profile)
    }

    /// Reads and validates the profile at `path`, refusing a file larger than
    /// [`DEFAULT_MAX_BYTES`] with [`ProfileError::TooLarge`].
    pub fn from_path(path: impl AsRef<Path>) -> Result<Profile, ProfileError> {
        Self::from_path_with_limit(path, DEFAULT_MAX_BYTES)
    }

    /// Reads and validates the profile at `path`, refusing one larger than `max_bytes` with
    /// [`ProfileError::TooLarge`]; a file that never ends (`/dev/zero`, a FIFO) stops there.
    ///
    /// A regular file is parsed as it is read, so memory holds the profile but not its text as
    /// well (a 181 MB profile of 20 000 stages: 357 MB resident read whole, 180 MB streamed);
    /// when it does not parse, it is read again whole to report the error as
    /// [`Profile::from_json`] does. Anything else is read whole (up to the limit), then parsed.
    pub fn from_path_with_limit(
        path: impl AsRef<Path>,
        max_bytes: u64,
    ) -> Result<Profile, ProfileError> {
        let path = path.as_ref();
        let read_error = |e| match e {
            crate::fs::ReadError::TooLarge => ProfileError::TooLarge {
                path: path.to_owned(),
                limit: max_bytes,
            },
            crate::fs::ReadError::Io(source) => ProfileError::Io {
                path: path.to_owned(),
                source,
            },
        };
        let file = crate::fs::open_limited(path, max_bytes).map_err(read_error)?;
        if file.len.is_none() {
            return Self::from_json(&file.read_all().map_err(read_error)?);
        }
        let mut reader = std::io::BufReader::with_capacity(1 << 16, file.reader);
        if let Some(profile) = parse_streaming(&mut reader) {
            if reader.get_ref().limit() == 0 {
                // The file grew past the limit while it was read.
                return Err(read_error(crate::fs::ReadError::TooLarge));
            }
            profile.validate()?;
            return Ok(profile);
        }
        let bytes = crate::fs::read_limited(path, max_bytes).map_err(read_error)?;
        Self::from_json(&bytes)
    }

    /// The profile as pretty-printed JSON, ending with a newline. Floats are written so that
    /// they read back exactly.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self)
            .expect("a profile always serializes: plain structs, string map keys");
        text.push('\n');
        text
    }

    /// Validates the profile and writes it to `path`, creating missing parent directories: a
    /// file that [`Profile::from_path`] would refuse is never written. Written by the rule of
    /// [`crate::fs::write_file`]: a regular file gets the text in a temporary file beside it
    /// first, renamed over it once complete, so a reader never sees half a profile; a symlink is
    /// followed; a device or FIFO is written through, never replaced.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), ProfileError> {
        self.validate()?;
        let path = path.as_ref();
        crate::fs::write_atomic(path, self.to_json().as_bytes()).map_err(|source| {
            ProfileError::Io {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// Checks that the figures agree with each other and with the histograms: the format and
    /// version, the metadata's sizes (texts, tags and merged inputs within the bounds of
    /// [`crate::limits`]), the collector settings (significant digits 1–5, highest value
    /// 2048 ns – 2^62 ns, sampling rate in [0, 1]), non-empty and distinct stages, and for each stage the order of
    /// min, percentiles and max, `calls`, `mean_ns`, `deadline_miss_pct` and the sum against the
    /// count, and that its histogram decodes with the profile's settings, holds `count` values
    /// and gives `p50_ns` … `p999_ns` as [`StageProfile::from_histogram`] computes them; the
    /// same for a stage's `corrected` figures and their histogram, whose expected interval must
    /// be positive and whose spans (`count − synthesized`) must not outnumber the stage's.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.format != FORMAT {
            return Err(ProfileError::Format {
                found: serde_json::Value::String(self.format.clone()).to_string(),
            });
        }
        if self.version != VERSION {
            return Err(ProfileError::Version {
                found: self.version.into(),
                supported: VERSION,
            });
        }
        check_meta(&self.meta)?;
        let config = &self.meta.config;
        histogram::check_settings(config.significant_digits, config.highest_ns)
            .map_err(|(field, message)| invalid(format!("meta.config.{field}"), message))?;
        let rate = config.sampling_rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(invalid(
                "meta.config.sampling_rate",
                format!("{rate:?} is not in [0, 1]"),
            ));
        }
        let mut keys: BTreeMap<String, usize> = BTreeMap::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let at = format!("stages[{i}]");
            stage.check_figures(&at)?;
            if let Some(first) = keys.insert(stage.key(), i) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!(
                        "stage {} appears twice (also stages[{first}]): keep one entry per name \
                         and labels",
                        stage.key()
                    ),
                ));
            }
            // One stage's histogram at a time: decoded, checked, dropped.
            if let Some(hist) = stage.decode(&at, Some(config))? {
                stage.check_histogram(&at, &hist)?;
            }
            if let Some(c) = &stage.corrected {
                let at = format!("{at}.corrected");
                if let Some(hist) = c.decode(&at, Some(config))? {
                    c.check_histogram(&at, &hist)?;
                }
            }
        }
        Ok(())
    }

    /// The stage whose [`StageProfile::key`] is `key`.
    pub fn stage(&self, key: &str) -> Option<&StageProfile> {
        self.stages.iter().find(|s| s.key() == key)
    }

    /// Merges runs into one profile named `name`: stages matched by [`StageProfile::key`] in
    /// order of first appearance, their histograms added, counters summed (saturating), `min_ns`
    /// the least and `max_ns` the greatest over the inputs that recorded anything, and every
    /// other figure recomputed from the sum with [`StageProfile::from_histogram`]. The meta data:
    /// `started` the earliest, `ended` the latest, the distinct hosts joined by `,`, the tags
    /// every input has with the same value, the git revision if all inputs share it, the lowest
    /// sampling rate, the first input's interval and ring capacity, and `merged_from` the
    /// inputs' names. Stages are added up one at a time: memory holds two dense histograms at
    /// most, however many stages there are.
    ///
    /// A stage's `corrected` figures are merged the same way over the inputs that have them (an
    /// input that did not correct the stage adds nothing to them); `backwards_spans`, `unwound`
    /// and `in_rings` are summed.
    ///
    /// Fails when `profiles` is empty, when an input does not validate, when the inputs'
    /// significant digits or highest values differ, when a stage has no histogram (or corrected
    /// figures without one), when a stage's deadline differs between inputs (its misses were
    /// counted against different deadlines, so they cannot be added up), or with
    /// [`ProfileError::IntervalMismatch`] when a stage was corrected with different expected
    /// intervals.
    pub fn merge(name: &str, profiles: &[Profile]) -> Result<Profile, ProfileError> {
        merge::merge(name, profiles)
    }
}

/// A profile parsed from `reader` without its text held in memory, or `None` when it does not
/// parse (or is not a JSON object, which serde would also read from an array): the caller reads
/// the file again for [`Profile::from_json`]'s error, which checks `format` and `version` first.
fn parse_streaming(reader: &mut impl std::io::BufRead) -> Option<Profile> {
    loop {
        let buf = reader.fill_buf().ok()?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) if buf[i] == b'{' => break,
            Some(_) => return None,
            None if buf.is_empty() => return None,
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
    serde_json::from_reader(reader).ok()
}

impl ProfileMeta {
    /// Meta data for a profile taken now on this host: `started` and `ended` both now (set
    /// `started_unix_ms` to when the run began), no git revision, tags or merge sources. The host
    /// is read from `/proc/sys/kernel/hostname`, then `$HOSTNAME`, else `unknown`.
    pub fn new(name: impl Into<String>, config: ProfileConfig) -> ProfileMeta {
        let now = unix_ms(std::time::SystemTime::now());
        ProfileMeta {
            name: name.into(),
            started_unix_ms: now,
            ended_unix_ms: now,
            host: host(),
            git_revision: None,
            tags: BTreeMap::new(),
            config,
            merged_from: Vec::new(),
            backwards_spans: 0,
        }
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub(crate) fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn host() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned());
    from_proc
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

impl ProfileConfig {
    /// Settings for histograms of `significant_digits` (1–5) up to `highest_ns`; sampling rate
    /// 1, interval and ring capacity 0 (unknown: set them when they mean something).
    pub fn new(significant_digits: u8, highest_ns: u64) -> ProfileConfig {
        ProfileConfig {
            significant_digits,
            highest_ns,
            sampling_rate: 1.0,
            interval_ns: 0,
            ring_capacity: 0,
        }
    }
}

impl CorrectedProfile {
    /// Whether the corrected figure for quantile `q` is saturated, by the rule of
    /// [`StageProfile::is_saturated`].
    pub fn is_saturated(&self, q: f64) -> bool {
        crate::hist::quantile_saturated(q, self.count, self.saturated)
    }
}

impl StageProfile {
    /// Whether the stage's figure for quantile `q` (`p99_ns` for 0.99) is saturated: its rank
    /// falls among the `saturated` values, those past the histograms' highest trackable value
    /// ([`ProfileConfig::highest_ns`]). Such a figure is a floor of the true percentile, not its
    /// value, by the rule of [`crate::Distribution::is_saturated`].
    pub fn is_saturated(&self, q: f64) -> bool {
        crate::hist::quantile_saturated(q, self.count, self.saturated)
    }

    /// The stage's identity, used to match stages across profiles: `name`, or
    /// `name{k="v",k2="v2"}` with the labels sorted by key (`\`, `"` and newlines in values
    /// escaped as in Prometheus).
    pub fn key(&self) -> String {
        Self::key_of(&self.name, &self.labels)
    }

    fn key_of(name: &str, labels: &BTreeMap<String, String>) -> String {
        let mut key = name.to_owned();
        if labels.is_empty() {
            return key;
        }
        key.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(k);
            key.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => key.push_str("\\\\"),
                    '"' => key.push_str("\\\""),
                    '\n' => key.push_str("\\n"),
                    c => key.push(c),
                }
            }
            key.push('"');
        }
        key.push('}');
        key
    }
}
