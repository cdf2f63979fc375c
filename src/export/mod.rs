//! Getting the figures out of the process: the Prometheus export (feature `prometheus`).
//!
//! [`prometheus::PrometheusExporter`] turns what the aggregator publishes into Prometheus metric
//! families (stage histograms, guard-trip and deadline-miss counters, gauges, the library's own
//! health) and renders them as Prometheus text, OpenMetrics (with golden-trace exemplars) or
//! protobuf. The aggregator feeds it in batches after each drain; nothing here runs on the hot
//! path.
//!
//! With `http`, [`http::MetricsServer`] serves that exposition on `/metrics`, in the format the
//! scraper's `Accept` header asks for, and
//! [`stats_json`] one window of the published snapshot as JSON on `/stats` (what `laptime top`
//! reads).

use std::fmt;

#[cfg(feature = "prometheus")]
pub use format::Format;

#[cfg(feature = "prometheus")]
mod format;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "prometheus")]
pub mod prometheus;
#[cfg(feature = "http")]
pub mod stats_json;

/// Why an export could not be configured or rendered. Every message says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportError {
    /// The namespace is not a Prometheus metric name prefix (`[a-zA-Z_][a-zA-Z0-9_]*`).
    InvalidNamespace {
        /// The rejected namespace.
        namespace: String,
    },
    /// A metric name (e.g. of a gauge) is not `[a-zA-Z_][a-zA-Z0-9_]*`.
    InvalidMetricName {
        /// The rejected name.
        name: String,
    },
    /// A metric was given an empty help text.
    EmptyHelp {
        /// The metric.
        name: String,
    },
    /// A label name is not a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with
    /// `__`), or is one the export itself uses (`stage`, `le`, `quantile`, `window`, `reason`,
    /// `percentile`).
    InvalidLabelName {
        /// The rejected label name.
        label: String,
    },
    /// A const label has an empty value.
    EmptyLabelValue {
        /// The label.
        label: String,
    },
    /// The same const label is given twice.
    DuplicateLabel {
        /// The repeated label name.
        label: String,
    },
    /// Buckets are given twice for the same stage.
    DuplicateStageBuckets {
        /// The stage.
        stage: String,
    },
    /// A bucket list is empty.
    EmptyBuckets {
        /// The stage the list is for; `None` for the default list.
        stage: Option<String>,
    },
    /// A bucket list is not strictly increasing.
    UnsortedBuckets {
        /// The stage the list is for; `None` for the default list.
        stage: Option<String>,
        /// The first bound that is not above the one before it.
        bound: std::time::Duration,
    },
    /// A bucket list is longer than the export allows.
    TooManyBuckets {
        /// The stage the list is for; `None` for the default list.
        stage: Option<String>,
        /// How many bounds were given.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// A native histogram schema outside Prometheus' −4 to 8.
    InvalidNativeSchema {
        /// The rejected schema.
        schema: i8,
    },
    /// A native histogram bucket budget too small to hold every value at the lowest schema.
    TooFewNativeBuckets {
        /// The rejected budget.
        max_buckets: usize,
        /// The smallest budget allowed.
        min: usize,
    },
    /// Native histograms were asked of an exporter given the application's registry: they are
    /// written by the exporter's own protobuf render, which a registry it does not own bypasses.
    NativeNeedsOwnRegistry,
    /// A stage name given to the export is not a valid stage name.
    InvalidStageName {
        /// The rejected name.
        name: String,
    },
    /// The registry already holds a metric of this name with the same const labels (another
    /// exporter with the same namespace and const labels, or a gauge registered twice elsewhere).
    AlreadyRegistered {
        /// The metric, or the first of the export's metrics, that clashed.
        name: String,
    },
    /// The registry refused a registration for another reason (e.g. a metric of the same name
    /// with other label names or help text).
    Registry {
        /// What the registry said.
        message: String,
    },
    /// The exposition could not be produced.
    Encode {
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = |stage: &Option<String>| match stage {
            Some(s) => format!("bucket list of stage {s:?}"),
            None => "default bucket list".to_owned(),
        };
        match self {
            Self::InvalidNamespace { namespace } => write!(
                f,
                "namespace {namespace:?} is not a metric name prefix: use [a-zA-Z_][a-zA-Z0-9_]*, e.g. \"mm\""
            ),
            Self::InvalidMetricName { name } => write!(
                f,
                "metric name {name:?} is invalid: use [a-zA-Z_][a-zA-Z0-9_]* (the namespace is added for you)"
            ),
            Self::EmptyHelp { name } => {
                write!(f, "metric {name:?} has no help text: say what it measures")
            }
            Self::InvalidLabelName { label } => write!(
                f,
                "label name {label:?} is invalid or reserved (stage, le, quantile, window, reason, percentile): use [a-zA-Z_][a-zA-Z0-9_]* not starting with __"
            ),
            Self::EmptyLabelValue { label } => {
                write!(
                    f,
                    "const label {label:?} has an empty value: give it one or leave it out"
                )
            }
            Self::DuplicateLabel { label } => {
                write!(f, "const label {label:?} is given twice: keep one")
            }
            Self::DuplicateStageBuckets { stage } => write!(
                f,
                "buckets for stage {stage:?} are given twice: keep one with_stage_buckets call"
            ),
            Self::EmptyBuckets { stage } => {
                write!(
                    f,
                    "{} is empty: give at least one upper bound",
                    which(stage)
                )
            }
            Self::UnsortedBuckets { stage, bound } => write!(
                f,
                "{} is not strictly increasing at {bound:?}: sort the bounds and remove duplicates",
                which(stage)
            ),
            Self::TooManyBuckets { stage, count, max } => write!(
                f,
                "{} has {count} bounds, more than {max}: use fewer (a 1-2-5 ladder over 1 µs - 10 s is 22)",
                which(stage)
            ),
            Self::InvalidNativeSchema { schema } => write!(
                f,
                "native histogram schema {schema} is outside Prometheus' range: use -4 to 8 (6 keeps bounds 1.09 % apart)"
            ),
            Self::TooFewNativeBuckets { max_buckets, min } => write!(
                f,
                "a native histogram budget of {max_buckets} buckets cannot hold every value even at schema -4: use {min} or more"
            ),
            Self::NativeNeedsOwnRegistry => f.write_str(
                "native histograms need a registry the exporter owns: drop with_registry, or serve the application's registry beside the exporter's",
            ),
            Self::InvalidStageName { name } => write!(
                f,
                "{name:?} is not a stage name: use [A-Za-z0-9_.:/-], at most {} bytes",
                crate::MAX_NAME_LEN
            ),
            Self::AlreadyRegistered { name } => write!(
                f,
                "the registry already holds {name:?} with the same const labels: give this exporter another namespace or other const labels, or reuse the existing one"
            ),
            Self::Registry { message } => write!(f, "the Prometheus registry refused: {message}"),
            Self::Encode { message } => {
                write!(f, "could not produce the exposition: {message}")
            }
        }
    }
}

impl std::error::Error for ExportError {}
