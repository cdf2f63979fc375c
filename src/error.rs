//! Small per-operation error types whose messages say what to change.

use std::fmt;
use std::time::Duration;

/// Why a stage could not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StageError {
    /// The name is empty.
    EmptyName,
    /// The name is longer than [`crate::stage::MAX_NAME_LEN`] bytes.
    NameTooLong {
        /// The rejected name.
        name: String,
    },
    /// The name has a character outside `[A-Za-z0-9_.:/-]`.
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A label name is not a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with
    /// `__`), or is reserved (`stage`, `le`, `quantile`, `window`).
    InvalidLabelName {
        /// The rejected label name.
        label: String,
    },
    /// A label value is empty or longer than [`crate::stage::MAX_NAME_LEN`] bytes.
    InvalidLabelValue {
        /// The label whose value was rejected.
        label: String,
    },
    /// The same label name appears twice.
    DuplicateLabel {
        /// The repeated label name.
        label: String,
    },
    /// The process already has as many stages as its cap allows.
    TooManyStages {
        /// The cap in force.
        cap: usize,
    },
    /// The process already has [`crate::MAX_TRIP_REASONS`] trip reasons.
    TooManyReasons,
    /// The name is a family's (see [`crate::Family::total`]): record into its series.
    NameIsAFamily {
        /// The family's name.
        name: String,
    },
    /// A family cannot take the name of a stage already registered.
    NameIsAStage {
        /// The stage's name.
        name: String,
    },
    /// The name is used both without labels and with them. A name's stage without labels is the
    /// total of its stages with labels (see [`crate::Stage::is_total`]), so it cannot also be a
    /// stage of its own.
    MixedLabels {
        /// The name.
        name: String,
    },
    /// The family was declared before with other label names.
    FamilyRedeclared {
        /// The family's name.
        name: String,
        /// The label names it was declared with.
        label_names: Vec<String>,
    },
    /// A family needs 1 to [`crate::limits::MAX_FAMILY_LABELS`] label names.
    FamilyLabelCount {
        /// The family's name.
        name: String,
        /// The number of label names given.
        count: usize,
    },
    /// A family's series cap is zero or above [`crate::limits::MAX_SERIES_LIMIT`].
    FamilyCap {
        /// The family's name.
        name: String,
        /// The rejected cap.
        cap: usize,
    },
    /// A family's significant digits are outside 1..=5.
    FamilyDigits {
        /// The family's name.
        name: String,
        /// The rejected precision.
        digits: u8,
    },
    /// The process already has [`crate::limits::MAX_FAMILIES`] families.
    TooManyFamilies,
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyName => {
                f.write_str("stage name is empty: give the stage a name such as \"tick_total\"")
            }
            Self::NameTooLong { name } => write!(
                f,
                "stage name {name:?} is longer than {} bytes: shorten it",
                crate::stage::MAX_NAME_LEN
            ),
            Self::InvalidName { name } => write!(
                f,
                "stage name {name:?} has a character outside [A-Za-z0-9_.:/-]: use only those"
            ),
            Self::InvalidLabelName { label } => write!(
                f,
                "label name {label:?} is not a Prometheus label name or is reserved (stage, le, quantile, window): use [a-zA-Z_][a-zA-Z0-9_]* not starting with __"
            ),
            Self::InvalidLabelValue { label } => write!(
                f,
                "label {label:?} has an empty value or one longer than {} bytes",
                crate::stage::MAX_NAME_LEN
            ),
            Self::DuplicateLabel { label } => write!(f, "label {label:?} is given twice: keep one"),
            Self::TooManyReasons => write!(
                f,
                "the process already has {} trip reasons, the most it keeps: reuse reason names",
                crate::MAX_TRIP_REASONS
            ),
            Self::NameIsAFamily { name } => write!(
                f,
                "{name:?} is a family's name: record into one of its series (Family::series), not into the family itself"
            ),
            Self::NameIsAStage { name } => write!(
                f,
                "{name:?} is already a stage: give the family another name"
            ),
            Self::MixedLabels { name } => write!(
                f,
                "{name:?} is used both with labels and without: the stage without labels is the total of those with labels (get_stats({name:?}) reads it), so record under one form only, or give one of them another name"
            ),
            Self::FamilyRedeclared { name, label_names } => write!(
                f,
                "family {name:?} was declared with the label names {label_names:?}: declare it with those, or give this one another name"
            ),
            Self::FamilyLabelCount { name, count } => write!(
                f,
                "family {name:?} has {count} label names: give 1 to {} (a stage without labels needs no family)",
                crate::limits::MAX_FAMILY_LABELS
            ),
            Self::FamilyCap { name, cap } => write!(
                f,
                "family {name:?}: series cap {cap} is out of range: use 1..={}",
                crate::limits::MAX_SERIES_LIMIT
            ),
            Self::FamilyDigits { name, digits } => write!(
                f,
                "family {name:?}: {digits} significant digits is out of range: use 1..=5 (2 gives 1 %, 3 gives 0.1 %)"
            ),
            Self::TooManyFamilies => write!(
                f,
                "the process already has {} families, the most it keeps: label one family instead of declaring many",
                crate::limits::MAX_FAMILIES
            ),
            Self::TooManyStages { cap } => write!(
                f,
                "the process already has {cap} stages, the cap: raise it with CollectorBuilder::with_max_stages, or reuse stage names (labels with unbounded values are a common cause)"
            ),
        }
    }
}

impl std::error::Error for StageError {}

/// Why a family could not give a series for some label values. The hot path never sees it:
/// [`crate::Family::series_or_overflow`] sends such calls to the overflow series and counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeriesError {
    /// Not one value per label name.
    WrongLabelCount {
        /// The family.
        family: &'static str,
        /// Its number of label names.
        expected: usize,
        /// The number of values given.
        got: usize,
    },
    /// A value laptime cannot carry.
    InvalidLabelValue {
        /// The family.
        family: &'static str,
        /// The label whose value was refused.
        label: &'static str,
        /// The value (its first 40 characters).
        value: String,
        /// What is wrong with it.
        problem: crate::family::ValueProblem,
    },
    /// The family holds its cap of series.
    FamilyFull {
        /// The family.
        family: &'static str,
        /// Its cap.
        cap: usize,
    },
    /// The process holds its cap of series, all families together.
    ProcessFull {
        /// The cap in force.
        cap: usize,
    },
}

impl fmt::Display for SeriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongLabelCount {
                family,
                expected,
                got,
            } => write!(
                f,
                "family {family:?} has {expected} label names but {got} values were given: give one value per label name, in order"
            ),
            Self::InvalidLabelValue {
                family,
                label,
                value,
                problem,
            } => write!(
                f,
                "family {family:?}: the value {value:?} of label {label:?} {problem}"
            ),
            Self::FamilyFull { family, cap } => write!(
                f,
                "family {family:?} holds its cap of {cap} series: raise it (family!(…, max_series = N) or FamilyOptions) or use fewer label values; past the cap, series_or_overflow records into the overflow series"
            ),
            Self::ProcessFull { cap } => write!(
                f,
                "the process holds its cap of {cap} series: raise it with CollectorBuilder::with_max_series"
            ),
        }
    }
}

impl std::error::Error for SeriesError {}

/// A collector configuration that cannot work, with what to change.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Ring capacity is below 2 or above [`crate::limits::MAX_RING_CAPACITY`].
    RingCapacity {
        /// The rejected capacity.
        capacity: usize,
    },
    /// The aggregator interval is shorter than [`crate::limits::MIN_INTERVAL`] or longer than a
    /// minute.
    Interval {
        /// The rejected interval.
        interval: Duration,
    },
    /// No sliding window was configured.
    NoWindows,
    /// A window or its slice is zero.
    ZeroWindow,
    /// A window's length is not a whole multiple of its slice.
    WindowNotMultipleOfSlice {
        /// The window length.
        window: Duration,
        /// Its slice.
        slice: Duration,
    },
    /// A window's slice is shorter than [`crate::limits::MIN_SLICE`].
    SliceTooShort {
        /// The window length.
        window: Duration,
        /// The slice asked for.
        slice: Duration,
    },
    /// A window is split into more slices than [`crate::limits::MAX_SLICES_PER_WINDOW`].
    TooManySlices {
        /// The window length.
        window: Duration,
        /// The number of slices asked for.
        slices: u64,
    },
    /// The same window length appears twice.
    DuplicateWindow {
        /// The repeated length.
        window: Duration,
    },
    /// Significant digits outside 1..=5.
    SignificantDigits {
        /// The rejected value.
        digits: u8,
    },
    /// The highest trackable value is below 2 048 ns (or above 2^62 ns).
    HighestValue {
        /// The rejected value.
        highest: Duration,
    },
    /// The stage cap is zero or above [`crate::stage::MAX_STAGES_LIMIT`], or below the number of
    /// stages the process already has.
    MaxStages {
        /// The rejected cap.
        cap: usize,
        /// Stages already registered.
        registered: usize,
    },
    /// The series cap is zero or above [`crate::limits::MAX_SERIES_LIMIT`], or below the number
    /// of series the process already has.
    MaxSeries {
        /// The rejected cap.
        cap: usize,
        /// Series already created.
        existing: usize,
    },
    /// A sampling rate outside [0, 1] or NaN.
    SamplingRate {
        /// The rejected rate.
        rate: f64,
    },
    /// A quantile outside [0, 1] or NaN.
    Quantile {
        /// The rejected quantile.
        quantile: f64,
    },
    /// An SLA threshold that is negative, NaN, a ratio above 1, or a warning above its critical.
    Threshold {
        /// The stage the rule is for.
        stage: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An SLA rule names a window the collector does not keep.
    UnknownWindow {
        /// The stage the rule is for.
        stage: String,
        /// The window it names.
        window: crate::Window,
    },
    /// A deadline of zero.
    ZeroDeadline {
        /// The stage.
        stage: String,
    },
    /// A coordinated-omission expected interval of zero.
    ZeroExpectedInterval {
        /// The stage.
        stage: String,
    },
    /// An adaptive sampling budget that is not a positive finite number.
    AdaptiveBudget {
        /// The rejected budget, in events per second.
        budget: f64,
    },
    /// A deadline-watch setting that cannot work.
    DeadlineWatch {
        /// What is wrong.
        reason: &'static str,
    },
    /// A stage named in the configuration could not be registered.
    Stage(StageError),
    /// A sink's settings cannot work ([`crate::sink::Sink::validate`]); the sink's own error
    /// says which and what to change (for tracing: `laptime::trace::TraceError`).
    Sink(SinkError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::limits::{MAX_RING_CAPACITY, MAX_SLICES_PER_WINDOW};
        match self {
            Self::RingCapacity { capacity } => write!(
                f,
                "ring capacity {capacity} is out of range: use 2..={MAX_RING_CAPACITY} records per thread"
            ),
            Self::Interval { interval } => write!(
                f,
                "aggregator interval {interval:?} is out of range: use at least 1 ms (a shorter one only spins the aggregator: a half-full ring wakes it early anyway) and at most 60 s (10 ms is the default)"
            ),
            Self::NoWindows => f.write_str("no sliding window configured: give at least one, e.g. 1 s split into 250 ms slices"),
            Self::ZeroWindow => f.write_str("a window or slice of zero length: both must be positive"),
            Self::WindowNotMultipleOfSlice { window, slice } => write!(
                f,
                "window {window:?} is not a whole multiple of its slice {slice:?}: pick a slice that divides the window"
            ),
            Self::SliceTooShort { window, slice } => write!(
                f,
                "window {window:?} moves by {slice:?}, shorter than 1 µs: records could never land in so short a slice; use a slice of at least 1 µs (a window of 1 s usually moves by 250 ms)"
            ),
            Self::TooManySlices { window, slices } => write!(
                f,
                "window {window:?} would need {slices} slices, more than {MAX_SLICES_PER_WINDOW}: use a longer slice"
            ),
            Self::DuplicateWindow { window } => write!(f, "window {window:?} is configured twice: keep one"),
            Self::SignificantDigits { digits } => write!(
                f,
                "{digits} significant digits is out of range: use 1..=5 (3 gives 0.1 % resolution)"
            ),
            Self::HighestValue { highest } => write!(
                f,
                "highest trackable value {highest:?} is out of range: use at least 2048 ns and at most 2^62 ns"
            ),
            Self::MaxStages { cap, registered } => write!(
                f,
                "stage cap {cap} is out of range: use 1..={} and at least the {registered} stages already registered",
                crate::stage::MAX_STAGES_LIMIT
            ),
            Self::MaxSeries { cap, existing } => write!(
                f,
                "series cap {cap} is out of range: use 1..={} and at least the {existing} series already created",
                crate::limits::MAX_SERIES_LIMIT
            ),
            Self::SamplingRate { rate } => write!(f, "sampling rate {rate:?} is not in [0, 1]: use e.g. 0.1 for 10 %"),
            Self::Quantile { quantile } => write!(f, "quantile {quantile:?} is not in [0, 1]: use e.g. 0.99 for p99"),
            Self::Threshold { stage, reason } => write!(f, "SLA rule for stage {stage:?}: {reason}"),
            Self::UnknownWindow { stage, window } => write!(
                f,
                "SLA rule for stage {stage:?} names window {window}, which the collector does not keep: add it with with_window or use a kept one"
            ),
            Self::ZeroDeadline { stage } => write!(f, "deadline of stage {stage:?} is zero: give a positive duration"),
            Self::ZeroExpectedInterval { stage } => write!(
                f,
                "expected interval of stage {stage:?} is zero: give the period its spans should start at (e.g. 100us), or leave the correction off"
            ),
            Self::AdaptiveBudget { budget } => write!(
                f,
                "adaptive sampling budget {budget:?} events/s is not a positive number: use e.g. 1000.0"
            ),
            Self::DeadlineWatch { reason } => write!(f, "deadline watch: {reason}"),
            Self::Stage(e) => write!(f, "{e}"),
            Self::Sink(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Stage(e) => Some(e),
            Self::Sink(e) => e.error.source(),
            _ => None,
        }
    }
}

/// A sink's own error, as the core's errors carry it ([`ConfigError::Sink`],
/// [`InstallErrorKind::Sink`]): the engine names no sink's types, so the error is held as a
/// trait object. Its message is the sink's; [`SinkError::downcast_ref`] recovers the sink's own
/// type (e.g. `laptime::trace::TraceError`) to match on.
#[derive(Clone)]
pub struct SinkError {
    sink: &'static str,
    error: std::sync::Arc<dyn std::error::Error + Send + Sync>,
}

impl SinkError {
    /// The error `error` of the sink named `sink` ([`crate::sink::Sink::name`]).
    pub fn new(sink: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            sink,
            error: std::sync::Arc::new(error),
        }
    }

    /// The name of the sink that failed.
    pub fn sink(&self) -> &'static str {
        self.sink
    }

    /// The sink's own error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref()
    }
}

/// Two sink errors are equal when the same sink says the same thing: the sink's error type need
/// not be comparable (an I/O error is not), and [`ConfigError`] is.
impl PartialEq for SinkError {
    fn eq(&self, other: &Self) -> bool {
        self.sink == other.sink && self.error.to_string() == other.error.to_string()
    }
}

impl fmt::Debug for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkError")
            .field("sink", &self.sink)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

impl From<StageError> for ConfigError {
    fn from(e: StageError) -> Self {
        Self::Stage(e)
    }
}

/// Why [`crate::CollectorBuilder::install`] failed. Carries the builder back so nothing is lost.
#[non_exhaustive]
pub struct InstallError {
    /// What went wrong.
    pub kind: InstallErrorKind,
    /// The builder that could not be installed.
    pub builder: Box<crate::CollectorBuilder>,
}

/// The reason inside an [`InstallError`].
#[derive(Debug)]
#[non_exhaustive]
pub enum InstallErrorKind {
    /// The configuration is invalid.
    Config(ConfigError),
    /// A collector installed earlier in this process is still running: drop its handle first.
    /// (The default collector, started by a span before any install, gives way by itself.)
    AlreadyRunning,
    /// The aggregator thread (or the trace-file writer) could not be spawned.
    Spawn(std::io::Error),
    /// A sink could not start ([`crate::sink::Sink::start`]): for tracing, an output directory
    /// that cannot be created (`laptime::trace::TraceError::OutputDir`).
    Sink(SinkError),
}

impl fmt::Debug for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            InstallErrorKind::Config(e) => write!(f, "invalid collector configuration: {e}"),
            InstallErrorKind::AlreadyRunning => f.write_str(
                "a collector installed earlier in this process is still running: drop its handle first (the default collector, started by a span before any install, gives way by itself)",
            ),
            InstallErrorKind::Spawn(e) => write!(f, "could not spawn the aggregator thread: {e}"),
            InstallErrorKind::Sink(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            InstallErrorKind::Config(e) => Some(e),
            InstallErrorKind::Spawn(e) => Some(e),
            InstallErrorKind::Sink(e) => std::error::Error::source(e),
            InstallErrorKind::AlreadyRunning => None,
        }
    }
}
