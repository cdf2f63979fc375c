//! Stages: a static name plus optional static labels, resolved once to a dense id.
//!
//! The registry is process-wide and append-only: a [`Stage`] is a `&'static` handle that stays valid
//! for the life of the process, whichever collector is running. Registration takes a lock and may
//! allocate; it happens once per stage. The hot path never hashes a name:
//!
//! * a [`Stage`] handle (from [`Stage::new`], [`crate::stage!`] or the macros) carries its id;
//! * a `&'static str` is looked up by its *address* in a lock-free, insert-only table, so
//!   `laptime::start("stage_emit")` costs a multiply and one or two loads after the first call
//!   from that call site.
//!
//! A name is used either without labels (one stage) or with static labels (a stage per label
//! set, [`Stage::with_labels`]); in the second case its stage without labels is their *total*,
//! which the aggregator fills with each of their values and events, so a query by name answers
//! for the name as a whole (as a family's total does for its series).
//!
//! The number of stages is capped (default [`DEFAULT_MAX_STAGES`]); past the cap registration fails
//! with [`StageError::TooManyStages`] and hot-path calls with a new name record nothing and are
//! counted in [`crate::Health::rejected`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};

use parking_lot::Mutex;

use crate::error::StageError;
use crate::prom_name::is_label_name;
use crate::recorder::sampling::SamplingRate;

use crate::limits::{DEFAULT_MAX_SERIES, MAX_FAMILIES, MAX_SERIES_LIMIT};
pub use crate::limits::{DEFAULT_MAX_STAGES, MAX_NAME_LEN, MAX_STAGES_LIMIT};

/// Stage ids per registry segment; the id space is a whole number of segments.
const SEGMENT: usize = 1024;
/// Every id the registry can hand out: named stages (and family totals), series, and one
/// overflow series per family (outside the caps, so a family always has one).
const MAX_IDS: usize = MAX_STAGES_LIMIT + MAX_SERIES_LIMIT + MAX_FAMILIES;
const _: () = assert!(MAX_IDS.is_multiple_of(SEGMENT));
const SEGMENTS: usize = MAX_IDS / SEGMENT;
/// Slots in the first address-keyed table; each table is kept at most half full (probes stay
/// short) and replaced by one twice its size when it would fill past that.
const FIRST_LITERAL_SLOTS: usize = 4096;

/// Static labels of a stage, e.g. `&[("verb", "post"), ("api", "batch-cancel")]`.
pub type Labels = &'static [(&'static str, &'static str)];

/// Per-stage state shared by the hot path and the aggregator.
pub(crate) struct StageInfo {
    pub(crate) id: u32,
    pub(crate) name: &'static str,
    pub(crate) labels: Labels,
    /// `FLAG_*` bits, read once per span on the hot path.
    flags: AtomicU32,
    /// The stage's own sampling rate, used when `FLAG_SAMPLED` is set.
    pub(crate) sampling: SamplingRate,
    /// Deadline in nanoseconds; 0 = none. Read by the aggregator.
    pub(crate) deadline_ns: AtomicU64,
    /// Expected interval between spans for coordinated-omission correction, in nanoseconds;
    /// 0 = no correction. Read by the aggregator only: the hot path never looks at it.
    pub(crate) expected_interval_ns: AtomicU64,
    /// Records lost to a full ring (or a thread with no ring any more), since process start.
    pub(crate) dropped: AtomicU64,
    /// The latency breaker: set by the aggregator while a critical SLA violation holds.
    pub(crate) tripped: AtomicBool,
    /// The family this stage is a series (or the total) of.
    pub(crate) family: OnceLock<&'static crate::family::FamilyInfo>,
    /// A family total: values reach it through its series only.
    pub(crate) is_family_total: bool,
    /// The stage without labels of a name that has static labelled stages: their total, which
    /// values reach through them only (see [`Stage::is_total`]).
    pub(crate) is_name_total: bool,
    /// For a static labelled stage, its name's total: every value and event recorded here is
    /// recorded there too.
    pub(crate) name_total: Option<Stage>,
    /// Its histograms' significant digits when not the collector's (a family's series and total).
    pub(crate) digits: Option<u8>,
}

/// What a new stage is besides its name and labels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) is_family_total: bool,
    pub(crate) is_name_total: bool,
    pub(crate) name_total: Option<Stage>,
    pub(crate) digits: Option<u8>,
}

impl Shape {
    /// A stage of its own, at the collector's precision.
    const PLAIN: Shape = Shape {
        is_family_total: false,
        is_name_total: false,
        name_total: None,
        digits: None,
    };
}

/// Records lost to full rings over every stage, since process start: the aggregator scans the
/// stages' own counts only when this moved.
pub(crate) static DROPS: AtomicU64 = AtomicU64::new(0);

impl StageInfo {
    /// Counts one record lost to a full ring (or a thread with no ring any more).
    #[inline]
    pub(crate) fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        // Release: whoever sees the total move (Acquire) sees this stage's count moved too.
        DROPS.fetch_add(1, Ordering::Release);
    }

    fn leak(id: usize, name: &'static str, labels: Labels, shape: Shape) -> Stage {
        // Stage infos live for the process: the registry is append-only and bounded by its caps,
        // so this leak is at most that many small structs.
        Stage(Box::leak(Box::new(StageInfo {
            id: id as u32,
            name,
            labels,
            flags: AtomicU32::new(0),
            sampling: SamplingRate::keep_all(),
            deadline_ns: AtomicU64::new(0),
            expected_interval_ns: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            family: OnceLock::new(),
            is_family_total: shape.is_family_total,
            is_name_total: shape.is_name_total,
            name_total: shape.name_total,
            digits: shape.digits,
        })))
    }
}

pub(crate) const FLAG_DISABLED: u32 = 1;
pub(crate) const FLAG_WATCHED: u32 = 2;
pub(crate) const FLAG_SAMPLED: u32 = 4;

impl StageInfo {
    #[inline]
    pub(crate) fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    fn set_flag(&self, flag: u32, on: bool) {
        if on {
            self.flags.fetch_or(flag, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!flag, Ordering::Relaxed);
        }
    }
}

/// A resolved stage: a copyable handle, as cheap to pass as a pointer.
#[derive(Clone, Copy)]
pub struct Stage(pub(crate) &'static StageInfo);

impl Stage {
    /// Registers (or finds) the stage `name` with no labels. A name that has stages with labels
    /// is refused ([`StageError::MixedLabels`]): its stage without labels is their total.
    pub fn new(name: &'static str) -> Result<Stage, StageError> {
        registry().resolve(name, &[])
    }

    /// Registers (or finds) the stage `name` with static labels, e.g. an exchange request stage
    /// labelled by `verb` and `api`. The same name with other label values is another stage.
    ///
    /// The name's stage without labels is then their total (see [`Stage::is_total`]): every
    /// value and event recorded into any of them is recorded there too, so `get_stats(name)`
    /// answers for the name as a whole, exactly (the histograms summed, not percentiles
    /// averaged). The first labelled stage of a name registers the total as well, so it needs
    /// room for two stages under the cap. A name already registered without labels, as a stage
    /// of its own, is refused ([`StageError::MixedLabels`]), as is a family's name.
    ///
    /// ```
    /// use laptime::Stage;
    /// let post = Stage::with_labels("doc_exchange_req", &[("verb", "post")]).unwrap();
    /// let delete = Stage::with_labels("doc_exchange_req", &[("verb", "delete")]).unwrap();
    /// let total = Stage::lookup("doc_exchange_req", &[]).unwrap();
    /// assert!(total.is_total() && !post.is_total() && !delete.is_total());
    /// // The total is read, never recorded into.
    /// assert!(Stage::new("doc_exchange_req").is_err());
    /// ```
    pub fn with_labels(name: &'static str, labels: Labels) -> Result<Stage, StageError> {
        registry().resolve(name, labels)
    }

    /// Whether this stage is a total of others: a family's total ([`Stage::is_family_total`]) or
    /// the stage without labels of a name that has static labelled stages
    /// ([`Stage::with_labels`]). Values reach it only through the stages it adds up, so a sink
    /// that sums those itself (an exporter) leaves it out.
    pub fn is_total(self) -> bool {
        self.0.is_name_total || self.0.is_family_total
    }

    /// The total this stage's values are also recorded into: its family's, or its name's.
    #[inline]
    pub(crate) fn sums_into(self) -> Option<Stage> {
        if let Some(total) = self.0.name_total {
            return Some(total);
        }
        let family = self.family()?;
        (!self.0.is_family_total).then(|| family.total())
    }

    /// Finds an already registered stage without registering it.
    pub fn lookup(name: &str, labels: &[(&str, &str)]) -> Option<Stage> {
        registry().find(name, labels)
    }

    /// The dense id: 0, 1, 2, … in registration order.
    pub fn id(self) -> u32 {
        self.0.id
    }

    /// The stage's name.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// The stage's static labels.
    pub fn labels(self) -> Labels {
        self.0.labels
    }

    /// Turns recording of this stage on or off at run time (one relaxed atomic update; takes
    /// effect for spans that start afterwards).
    pub fn set_enabled(self, enabled: bool) {
        self.0.set_flag(FLAG_DISABLED, !enabled);
    }

    /// Whether this stage records (ignoring the global switch).
    pub fn is_enabled(self) -> bool {
        self.0.flags() & FLAG_DISABLED == 0
    }

    /// Gives this stage its own sampling rate, or `None` to follow the global one.
    pub fn set_sampling_rate(self, rate: Option<f64>) -> Result<(), crate::ConfigError> {
        match rate {
            Some(r) => {
                let t = crate::record::rate_to_threshold(r)?;
                self.0.sampling.set(t);
                self.0.set_flag(FLAG_SAMPLED, true);
            }
            None => self.0.set_flag(FLAG_SAMPLED, false),
        }
        Ok(())
    }

    /// Sets or clears the stage's deadline. With a deadline, each span also publishes its start,
    /// so the aggregator counts a miss as soon as a span is overdue, while it is still running.
    pub fn set_deadline(
        self,
        deadline: Option<std::time::Duration>,
    ) -> Result<(), crate::ConfigError> {
        let ns = match deadline {
            Some(d) if d.is_zero() => {
                return Err(crate::ConfigError::ZeroDeadline {
                    stage: self.name().to_owned(),
                });
            }
            Some(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            None => 0,
        };
        self.0.deadline_ns.store(ns, Ordering::Relaxed);
        self.0.set_flag(FLAG_WATCHED, ns != 0);
        Ok(())
    }

    /// The stage's deadline, if it has one.
    pub fn deadline(self) -> Option<std::time::Duration> {
        match self.0.deadline_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(std::time::Duration::from_nanos(ns)),
        }
    }

    /// Turns on (or off, with `None`) coordinated-omission correction for this stage: its spans are
    /// expected to start every `interval` (a tick loop's period). When one takes longer than that,
    /// the spans that should have started while it ran, and were held back by it, are accounted
    /// for as HdrHistogram does: a span of `d` adds the values `d − interval`, `d − 2·interval`, …
    /// down to `interval`. The corrected figures are reported beside the raw ones
    /// ([`crate::StageStats::corrected`]), never instead of them.
    ///
    /// Costs nothing on the hot path (the aggregator applies it). It applies to spans drained
    /// after the call; figures already recorded are not corrected retroactively.
    pub fn set_expected_interval(
        self,
        interval: Option<std::time::Duration>,
    ) -> Result<(), crate::ConfigError> {
        let ns = match interval {
            Some(d) if d.is_zero() => {
                return Err(crate::ConfigError::ZeroExpectedInterval {
                    stage: self.name().to_owned(),
                });
            }
            Some(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            None => 0,
        };
        self.0.expected_interval_ns.store(ns, Ordering::Relaxed);
        Ok(())
    }

    /// The stage's expected interval for coordinated-omission correction, if it has one.
    pub fn expected_interval(self) -> Option<std::time::Duration> {
        match self.0.expected_interval_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(std::time::Duration::from_nanos(ns)),
        }
    }

    /// Records lost to full rings for this stage since the process started. A thread counts its
    /// own ring's drops, and the aggregator adds them here each cycle: a drop shows here after its
    /// next cycle (or a [`crate::flush`]), as it does in the stats.
    pub fn dropped(self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// The stage's latency breaker, which trips while a critical SLA violation holds.
    pub fn latency_breaker(self) -> LatencyBreaker {
        LatencyBreaker(self.0)
    }

    /// Renamed [`latency_breaker`](Self::latency_breaker): "guard" names the RAII values
    /// ([`crate::SpanGuard`]); this is a flag hot code reads.
    #[deprecated(since = "0.2.0", note = "renamed `latency_breaker`")]
    pub fn latency_guard(self) -> LatencyBreaker {
        self.latency_breaker()
    }
}

impl PartialEq for Stage {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Stage {}

impl std::hash::Hash for Stage {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl fmt::Debug for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stage({}", self.0.name)?;
        for (k, v) in self.0.labels {
            write!(f, ", {k}={v}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)?;
        if !self.0.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.0.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// A stage's latency breaker: tripped by the aggregator while the stage is in critical violation
/// of an SLA rule ([`crate::SlaRule::with_breaker`]), reset when the violation clears. Hot code asks
/// [`LatencyBreaker::is_tripped`] (one relaxed load) and sheds work or widens quotes while it is.
/// Each time it trips, one trip is counted under the collector's breaker reason
/// ([`crate::CollectorBuilder::with_breaker_trip_reason`]).
#[derive(Clone, Copy)]
pub struct LatencyBreaker(&'static StageInfo);

impl LatencyBreaker {
    /// Whether the stage is in critical violation right now.
    #[inline]
    pub fn is_tripped(self) -> bool {
        self.0.tripped.load(Ordering::Relaxed)
    }
}

/// Renamed [`LatencyBreaker`]: "guard" names the RAII values ([`crate::SpanGuard`]); this is a
/// flag hot code reads.
#[deprecated(since = "0.2.0", note = "renamed `LatencyBreaker`")]
pub type LatencyGuard = LatencyBreaker;

impl fmt::Debug for LatencyBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyBreaker")
            .field("stage", &self.0.name)
            .field("tripped", &self.is_tripped())
            .finish()
    }
}

/// Anything the hot-path API accepts as a stage: a [`Stage`] handle, or a `&'static str` name
/// (resolved by address, see the module docs).
pub trait IntoStage {
    /// Resolves to a stage, or `None` when the name is invalid, is the total of labelled stages
    /// ([`StageError::MixedLabels`]) or the cap is reached (counted in
    /// [`crate::Health::rejected`]).
    fn into_stage(self) -> Option<Stage>;
}

impl IntoStage for Stage {
    #[inline(always)]
    fn into_stage(self) -> Option<Stage> {
        Some(self)
    }
}

/// A stage that may not exist: a family call site whose family could not be declared.
impl IntoStage for Option<Stage> {
    #[inline(always)]
    fn into_stage(self) -> Option<Stage> {
        self
    }
}

impl IntoStage for &'static str {
    #[inline(always)]
    fn into_stage(self) -> Option<Stage> {
        registry().by_literal(self)
    }
}

/// Resolves a stage name once per call site and keeps the handle in a call-site static.
///
/// ```
/// let stage = laptime::stage!("stage_spread");
/// let labelled = laptime::stage!("exchange_req", verb = "post", api = "batch-cancel");
/// assert_eq!(stage.name(), "stage_spread");
/// assert_eq!(labelled.labels(), &[("verb", "post"), ("api", "batch-cancel")]);
/// ```
///
/// # Panics
/// When the name or a label is invalid, or the stage cap is reached: call [`Stage::new`] to get the
/// error as a value instead.
#[macro_export]
macro_rules! stage {
    ($name:expr $(, $k:ident = $v:expr)* $(,)?) => {{
        static STAGE: ::std::sync::OnceLock<$crate::Stage> = ::std::sync::OnceLock::new();
        *STAGE.get_or_init(|| {
            $crate::Stage::with_labels($name, &[$((::core::stringify!($k), $v)),*])
                .unwrap_or_else(|e| ::core::panic!("laptime::stage!: {e}"))
        })
    }};
}

struct LiteralTable {
    mask: usize,
    slots: Box<[LiteralSlot]>,
}

impl LiteralTable {
    fn with_slots(slots: usize) -> LiteralTable {
        LiteralTable {
            mask: slots - 1,
            slots: (0..slots)
                .map(|_| LiteralSlot {
                    ptr: AtomicUsize::new(0),
                    len: AtomicUsize::new(0),
                    stage: OnceLock::new(),
                    name: OnceLock::new(),
                })
                .collect(),
        }
    }
}

/// Enough doublings from [`FIRST_LITERAL_SLOTS`] for every id at half load.
const LITERAL_GENERATIONS: usize = 10;
const _: () = assert!(FIRST_LITERAL_SLOTS << LITERAL_GENERATIONS >= 2 * MAX_IDS);

struct LiteralSlot {
    /// Address of the `&'static str`; 0 = empty. Written once, last (Release).
    ptr: AtomicUsize,
    len: AtomicUsize,
    /// The stage itself, so a hit costs no lookup by id; `None` for a name that was refused
    /// (invalid, or past the cap), so calls naming it never take the registry lock again.
    stage: OnceLock<Option<Stage>>,
    /// The name itself, to move it into a bigger table.
    name: OnceLock<&'static str>,
}

pub(crate) struct Registry {
    /// Cap on named stages (family totals included).
    cap: AtomicUsize,
    /// Cap on series, all families together (overflow series aside).
    series_cap: AtomicUsize,
    /// Ids handed out.
    count: AtomicUsize,
    /// Named stages registered (what `cap` bounds).
    named: AtomicUsize,
    /// Series created (what `series_cap` bounds).
    series: AtomicUsize,
    rejected: AtomicU64,
    by_key: Mutex<HashMap<(&'static str, Labels), Stage>>,
    segments: [OnceLock<Box<[OnceLock<Stage>]>>; SEGMENTS],
    /// The address-keyed table of `&'static str` names until it fills past half, then
    /// `literals_grown[literals_current - 1]`, each twice the one before. Replaced tables are
    /// kept (a reader may still probe one): all together at most twice the last.
    literals: LiteralTable,
    literals_grown: [OnceLock<LiteralTable>; LITERAL_GENERATIONS],
    literals_current: AtomicUsize,
    literals_used: AtomicUsize,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    cap: AtomicUsize::new(DEFAULT_MAX_STAGES),
    series_cap: AtomicUsize::new(DEFAULT_MAX_SERIES),
    count: AtomicUsize::new(0),
    named: AtomicUsize::new(0),
    series: AtomicUsize::new(0),
    rejected: AtomicU64::new(0),
    by_key: Mutex::new(HashMap::new()),
    segments: [const { OnceLock::new() }; SEGMENTS],
    literals: LiteralTable::with_slots(FIRST_LITERAL_SLOTS),
    literals_grown: [const { OnceLock::new() }; LITERAL_GENERATIONS],
    literals_current: AtomicUsize::new(0),
    literals_used: AtomicUsize::new(0),
});

#[inline(always)]
pub(crate) fn registry() -> &'static Registry {
    &REGISTRY
}

/// Why a stage name or label set is refused. Decided by `const fn`s, so the instrumentation macros
/// check their call sites at compile time with the very rules registration applies at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameProblem {
    EmptyName,
    NameTooLong,
    InvalidName,
    /// The label at this index.
    InvalidLabelName(usize),
    InvalidLabelValue(usize),
    DuplicateLabel(usize),
}

impl NameProblem {
    /// The compile-time message (a `const` panic cannot format the offending name).
    pub(crate) const fn message(self) -> &'static str {
        match self {
            Self::EmptyName => "laptime: the stage name is empty",
            Self::NameTooLong => "laptime: the stage name is longer than 128 bytes",
            Self::InvalidName => {
                "laptime: the stage name has a character outside [A-Za-z0-9_.:/-]: use only those"
            }
            Self::InvalidLabelName(_) => {
                "laptime: a label name is not [a-zA-Z_][a-zA-Z0-9_]*, starts with __, or is reserved (stage, le, quantile, window)"
            }
            Self::InvalidLabelValue(_) => {
                "laptime: a label value is empty or longer than 128 bytes"
            }
            Self::DuplicateLabel(_) => "laptime: a label is given twice: keep one",
        }
    }
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The rules for a stage name: 1–[`MAX_NAME_LEN`] bytes of `[A-Za-z0-9_.:/-]`.
pub(crate) const fn check_name(name: &str) -> Result<(), NameProblem> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(NameProblem::EmptyName);
    }
    if bytes.len() > MAX_NAME_LEN {
        return Err(NameProblem::NameTooLong);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-')) {
            return Err(NameProblem::InvalidName);
        }
        i += 1;
    }
    Ok(())
}

/// The rules for static labels: Prometheus label names (not `__*`, not the names the exports use
/// themselves), non-empty values of at most [`MAX_NAME_LEN`] bytes, no label twice.
pub(crate) const fn check_labels(labels: &[(&str, &str)]) -> Result<(), NameProblem> {
    let mut i = 0;
    while i < labels.len() {
        let (k, v) = labels[i];
        if !label_name_ok(k) {
            return Err(NameProblem::InvalidLabelName(i));
        }
        if v.is_empty() || v.len() > MAX_NAME_LEN {
            return Err(NameProblem::InvalidLabelValue(i));
        }
        let mut p = 0;
        while p < i {
            if str_eq(labels[p].0, k) {
                return Err(NameProblem::DuplicateLabel(i));
            }
            p += 1;
        }
        i += 1;
    }
    Ok(())
}

/// A label name laptime accepts: a Prometheus label name, not `__*`, not one the exports use.
const fn label_name_ok(k: &str) -> bool {
    let mut ok = is_label_name(k) && k.len() <= MAX_NAME_LEN;
    let reserved = ["stage", "le", "quantile", "window"];
    let mut r = 0;
    while r < reserved.len() {
        ok &= !str_eq(k, reserved[r]);
        r += 1;
    }
    ok
}

/// [`check_labels`]' rules for label names alone (a family's, whose values come later).
pub(crate) const fn check_label_names(names: &[&str]) -> Result<(), NameProblem> {
    let mut i = 0;
    while i < names.len() {
        if !label_name_ok(names[i]) {
            return Err(NameProblem::InvalidLabelName(i));
        }
        let mut p = 0;
        while p < i {
            if str_eq(names[p], names[i]) {
                return Err(NameProblem::DuplicateLabel(i));
            }
            p += 1;
        }
        i += 1;
    }
    Ok(())
}

pub(crate) fn valid_name(name: &str) -> Result<(), StageError> {
    check_name(name).map_err(|problem| match problem {
        NameProblem::EmptyName => StageError::EmptyName,
        NameProblem::NameTooLong => StageError::NameTooLong {
            name: name.to_owned(),
        },
        _ => StageError::InvalidName {
            name: name.to_owned(),
        },
    })
}

pub(crate) fn valid_labels(labels: &[(&str, &str)]) -> Result<(), StageError> {
    let label = |i: usize| labels.get(i).map_or("", |l| l.0).to_owned();
    check_labels(labels).map_err(|problem| match problem {
        NameProblem::InvalidLabelValue(i) => StageError::InvalidLabelValue { label: label(i) },
        NameProblem::DuplicateLabel(i) => StageError::DuplicateLabel { label: label(i) },
        NameProblem::InvalidLabelName(i) => StageError::InvalidLabelName { label: label(i) },
        // `check_labels` reports label problems only.
        _ => StageError::InvalidLabelName {
            label: String::new(),
        },
    })
}

impl Registry {
    fn resolve(&self, name: &'static str, labels: Labels) -> Result<Stage, StageError> {
        let mut by_key = self.by_key.lock();
        if let Some(stage) = by_key.get(&(name, labels)) {
            if stage.0.is_family_total {
                return Err(StageError::NameIsAFamily {
                    name: name.to_owned(),
                });
            }
            if stage.0.is_name_total {
                return Err(StageError::MixedLabels {
                    name: name.to_owned(),
                });
            }
            return Ok(*stage);
        }
        valid_name(name)?;
        valid_labels(labels)?;
        if labels.is_empty() {
            return self.add_named(&mut by_key, name, labels, Shape::PLAIN);
        }
        let name_total = self.name_total(&mut by_key, name)?;
        let shape = Shape {
            name_total: Some(name_total),
            ..Shape::PLAIN
        };
        self.add_named(&mut by_key, name, labels, shape)
    }

    /// The total of `name`'s static labelled stages, registered with the first of them (which
    /// then needs room for two stages under the cap). A name whose stage without labels is a
    /// stage of its own, or a family's total, has no such total: labelled stages are refused.
    fn name_total(
        &self,
        by_key: &mut HashMap<(&'static str, Labels), Stage>,
        name: &'static str,
    ) -> Result<Stage, StageError> {
        match by_key.get(&(name, &[][..])) {
            Some(total) if total.0.is_name_total => Ok(*total),
            Some(family) if family.0.is_family_total => Err(StageError::NameIsAFamily {
                name: name.to_owned(),
            }),
            Some(_) => Err(StageError::MixedLabels {
                name: name.to_owned(),
            }),
            None => {
                let cap = self.cap.load(Ordering::Relaxed);
                if self.named.load(Ordering::Relaxed) + 2 > cap {
                    return Err(StageError::TooManyStages { cap });
                }
                let shape = Shape {
                    is_name_total: true,
                    ..Shape::PLAIN
                };
                self.add_named(by_key, name, &[], shape)
            }
        }
    }

    /// A named stage: counted against the stage cap.
    fn add_named(
        &self,
        by_key: &mut HashMap<(&'static str, Labels), Stage>,
        name: &'static str,
        labels: Labels,
        shape: Shape,
    ) -> Result<Stage, StageError> {
        let cap = self.cap.load(Ordering::Relaxed);
        if self.named.load(Ordering::Relaxed) >= cap {
            return Err(StageError::TooManyStages { cap });
        }
        self.named.fetch_add(1, Ordering::Relaxed);
        Ok(self.add(by_key, name, labels, shape))
    }

    /// Hands out the next id (the caller holds `by_key` and checked its cap).
    fn add(
        &self,
        by_key: &mut HashMap<(&'static str, Labels), Stage>,
        name: &'static str,
        labels: Labels,
        shape: Shape,
    ) -> Stage {
        let id = self.count.load(Ordering::Relaxed);
        let stage = StageInfo::leak(id, name, labels, shape);
        let segment = self.segments[id / SEGMENT]
            .get_or_init(|| (0..SEGMENT).map(|_| OnceLock::new()).collect());
        let _ = segment[id % SEGMENT].set(stage);
        by_key.insert((name, labels), stage);
        // Release: a reader that sees the new count (Acquire) finds the stage in its segment.
        self.count.store(id + 1, Ordering::Release);
        stage
    }

    /// A family's total: the stage of its name with no labels (checked by the family).
    pub(crate) fn register_total(
        &self,
        name: &'static str,
        digits: u8,
    ) -> Result<Stage, StageError> {
        let mut by_key = self.by_key.lock();
        if let Some(stage) = by_key.get(&(name, &[][..])) {
            return Err(if stage.0.is_family_total {
                StageError::NameIsAFamily {
                    name: name.to_owned(),
                }
            } else {
                StageError::NameIsAStage {
                    name: name.to_owned(),
                }
            });
        }
        let shape = Shape {
            is_family_total: true,
            digits: Some(digits),
            ..Shape::PLAIN
        };
        self.add_named(&mut by_key, name, &[], shape)
    }

    /// A family's series (`family` given: counted against the series cap) or its overflow series
    /// (`None`: outside the caps). The family checked the name, labels and uniqueness.
    pub(crate) fn register_series(
        &self,
        name: &'static str,
        labels: Labels,
        family: Option<&'static crate::family::FamilyInfo>,
        digits: u8,
    ) -> Result<Stage, StageError> {
        let mut by_key = self.by_key.lock();
        if family.is_some() {
            let cap = self.series_cap.load(Ordering::Relaxed);
            if self.series.load(Ordering::Relaxed) >= cap {
                return Err(StageError::TooManyStages { cap });
            }
            self.series.fetch_add(1, Ordering::Relaxed);
        }
        let shape = Shape {
            digits: Some(digits),
            ..Shape::PLAIN
        };
        let stage = self.add(&mut by_key, name, labels, shape);
        if let Some(f) = family {
            let _ = stage.0.family.set(f);
        }
        Ok(stage)
    }

    /// Ties a family's total or overflow series, made before the family, to it.
    pub(crate) fn adopt(&self, stage: Stage, family: &'static crate::family::FamilyInfo) {
        let _ = stage.0.family.set(family);
    }

    /// The cap on series in force.
    pub(crate) fn series_cap(&self) -> usize {
        self.series_cap.load(Ordering::Relaxed)
    }

    pub(crate) fn set_series_cap(&self, cap: usize) -> Result<(), crate::ConfigError> {
        let _by_key = self.by_key.lock();
        let existing = self.series.load(Ordering::Relaxed);
        if cap == 0 || cap > MAX_SERIES_LIMIT || cap < existing {
            return Err(crate::ConfigError::MaxSeries { cap, existing });
        }
        self.series_cap.store(cap, Ordering::Relaxed);
        Ok(())
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<Stage> {
        let by_key = self.by_key.lock();
        by_key
            .iter()
            .find(|((n, l), _)| {
                *n == name && l.len() == labels.len() && l.iter().zip(labels).all(|(a, b)| a == b)
            })
            .map(|(_, s)| *s)
    }

    /// The stage with dense id `id`, if registered.
    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<Stage> {
        let id = id as usize;
        self.segments.get(id / SEGMENT)?.get()?[id % SEGMENT]
            .get()
            .copied()
    }

    /// Named stages registered so far (what the stage cap bounds).
    pub(crate) fn named_len(&self) -> usize {
        self.named.load(Ordering::Relaxed)
    }

    /// Series created so far (what the series cap bounds).
    pub(crate) fn series_len(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// Ids handed out so far: named stages, series and overflow series.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Counts a call that could not be given a stage (see [`crate::Health::rejected`]).
    pub(crate) fn count_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_cap(&self, cap: usize) -> Result<(), crate::ConfigError> {
        let _by_key = self.by_key.lock();
        let registered = self.named.load(Ordering::Relaxed);
        if cap == 0 || cap > MAX_STAGES_LIMIT || cap < registered {
            return Err(crate::ConfigError::MaxStages { cap, registered });
        }
        self.cap.store(cap, Ordering::Relaxed);
        Ok(())
    }

    #[inline(always)]
    fn by_literal(&'static self, name: &'static str) -> Option<Stage> {
        let ptr = name.as_ptr() as usize;
        let table = self.literal_table();
        let mut slot = literal_hash(ptr, table.mask);
        loop {
            let entry = &table.slots[slot];
            // Acquire: pairs with the Release in `insert_literal`; `len` and `stage` are set.
            let p = entry.ptr.load(Ordering::Acquire);
            if p == ptr && entry.len.load(Ordering::Relaxed) == name.len() {
                return match entry.stage.get() {
                    Some(Some(stage)) => Some(*stage),
                    _ => {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                };
            }
            if p == 0 {
                break;
            }
            slot = (slot + 1) & table.mask;
        }
        self.by_literal_slow(name)
    }

    #[cold]
    fn by_literal_slow(&'static self, name: &'static str) -> Option<Stage> {
        let stage = self.resolve(name, &[]).ok();
        self.remember_literal(name, stage);
        if stage.is_none() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        stage
    }

    fn remember_literal(&self, name: &'static str, stage: Option<Stage>) {
        // One writer at a time: inserts happen under the registry lock.
        let _by_key = self.by_key.lock();
        // Every distinct address is remembered once; bounded by the names a program has (a
        // refused name is remembered too, so it is refused without the lock next time).
        let table = self.literal_table();
        if find_literal(table, name).is_some() {
            return;
        }
        let table = self.literal_table_with_room(table);
        insert_literal(table, name, stage);
        self.literals_used.fetch_add(1, Ordering::Relaxed);
    }

    /// `table`, or a copy twice its size when one more name would fill it past half.
    fn literal_table_with_room<'a>(&'a self, table: &'a LiteralTable) -> &'a LiteralTable {
        if (self.literals_used.load(Ordering::Relaxed) + 1) * 2 <= table.slots.len() {
            return table;
        }
        let next = self.literals_current.load(Ordering::Relaxed) + 1;
        let Some(slot) = self.literals_grown.get(next - 1) else {
            return table; // unreachable: the caps keep the names within the last table
        };
        let bigger = LiteralTable::with_slots(table.slots.len() * 2);
        for entry in table.slots.iter() {
            if let Some(&name) = entry.name.get() {
                insert_literal(&bigger, name, entry.stage.get().copied().flatten());
            }
        }
        let _ = slot.set(bigger);
        // Release: readers that load the new index see the table set and filled.
        self.literals_current.store(next, Ordering::Release);
        slot.get().unwrap_or(table)
    }

    fn literal_table(&self) -> &LiteralTable {
        // Acquire: pairs with the Release in `literal_table_with_room`.
        match self.literals_current.load(Ordering::Acquire) {
            0 => &self.literals,
            n => self.literals_grown[n - 1].get().unwrap_or(&self.literals),
        }
    }
}

fn find_literal(table: &LiteralTable, name: &'static str) -> Option<usize> {
    let ptr = name.as_ptr() as usize;
    let mut slot = literal_hash(ptr, table.mask);
    loop {
        let entry = &table.slots[slot];
        let p = entry.ptr.load(Ordering::Relaxed);
        if p == ptr && entry.len.load(Ordering::Relaxed) == name.len() {
            return Some(slot);
        }
        if p == 0 {
            return None;
        }
        slot = (slot + 1) & table.mask;
    }
}

/// Puts `name` in its first free slot (the caller holds the registry lock and looked first).
fn insert_literal(table: &LiteralTable, name: &'static str, stage: Option<Stage>) {
    let mut slot = literal_hash(name.as_ptr() as usize, table.mask);
    while table.slots[slot].ptr.load(Ordering::Relaxed) != 0 {
        slot = (slot + 1) & table.mask;
    }
    let entry = &table.slots[slot];
    entry.len.store(name.len(), Ordering::Relaxed);
    let _ = entry.stage.set(stage);
    let _ = entry.name.set(name);
    // Release: publishes `len` and `stage` to readers that see this pointer.
    entry.ptr.store(name.as_ptr() as usize, Ordering::Release);
}

#[inline(always)]
fn literal_hash(ptr: usize, mask: usize) -> usize {
    // The multiply's high bits, so addresses a few bytes apart spread over the table.
    ((ptr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_stage_and_dense_ids() {
        let a = Stage::new("unit_stage_a").unwrap();
        let b = Stage::new("unit_stage_a").unwrap();
        assert_eq!(a, b);
        let c = Stage::with_labels("unit_stage_b", &[("verb", "post")]).unwrap();
        assert_ne!(a, c);
        assert_eq!(registry().get(c.id()), Some(c));
        assert_eq!("unit_stage_a".into_stage(), Some(a));
    }

    #[test]
    fn a_name_is_used_with_labels_or_without_never_both() {
        let post = Stage::with_labels("unit_mixed_a", &[("verb", "post")]).unwrap();
        let get = Stage::with_labels("unit_mixed_a", &[("verb", "get")]).unwrap();
        let total = Stage::lookup("unit_mixed_a", &[]).expect("registered with the first");
        assert!(total.is_total() && !total.is_family_total());
        assert_eq!(post.sums_into(), Some(total));
        assert_eq!(get.sums_into(), Some(total));
        assert_eq!(total.sums_into(), None);
        let mixed = StageError::MixedLabels {
            name: "unit_mixed_a".to_owned(),
        };
        assert_eq!(Stage::new("unit_mixed_a").unwrap_err(), mixed);
        assert_eq!("unit_mixed_a".into_stage(), None);
        // The other way round: a stage of its own keeps its name to itself.
        let own = Stage::new("unit_mixed_b").unwrap();
        assert!(!own.is_total() && own.sums_into().is_none());
        assert_eq!(
            Stage::with_labels("unit_mixed_b", &[("verb", "post")]).unwrap_err(),
            StageError::MixedLabels {
                name: "unit_mixed_b".to_owned(),
            }
        );
        assert!(
            mixed.to_string().contains("get_stats(\"unit_mixed_a\")"),
            "{mixed}"
        );
    }

    #[test]
    fn literal_lookup_finds_the_registered_stage() {
        let name: &'static str = "unit_literal_stage";
        let first = name.into_stage().unwrap();
        let again = name.into_stage().unwrap();
        assert_eq!(first, again);
        assert_eq!(first.name(), name);
        // A different allocation with the same text resolves to the same stage.
        let leaked: &'static str = Box::leak(String::from("unit_literal_stage").into_boxed_str());
        assert_eq!(leaked.into_stage(), Some(first));
    }

    #[test]
    fn bad_names_and_labels_are_typed_errors() {
        assert_eq!(Stage::new("").unwrap_err(), StageError::EmptyName);
        assert!(matches!(
            Stage::new("has space"),
            Err(StageError::InvalidName { .. })
        ));
        assert!(matches!(
            Stage::with_labels("ok_name", &[("le", "x")]),
            Err(StageError::InvalidLabelName { .. })
        ));
        assert!(matches!(
            Stage::with_labels("ok_name", &[("verb", "")]),
            Err(StageError::InvalidLabelValue { .. })
        ));
        assert!(matches!(
            Stage::with_labels("ok_name", &[("verb", "a"), ("verb", "b")]),
            Err(StageError::DuplicateLabel { .. })
        ));
        let long: &'static str = Box::leak("x".repeat(MAX_NAME_LEN + 1).into_boxed_str());
        assert!(matches!(
            Stage::new(long),
            Err(StageError::NameTooLong { .. })
        ));
        assert!("bad name".into_stage().is_none());
        assert!(registry().rejected() >= 1);
    }

    /// The label-name rule as stages have always applied it: Prometheus label names, none
    /// reserved by the export, at most [`MAX_NAME_LEN`] bytes.
    #[test]
    fn label_names_follow_the_prometheus_rule() {
        let long: &'static str = Box::leak("x".repeat(MAX_NAME_LEN + 1).into_boxed_str());
        let at_most: &'static str = &long[1..];
        let table = [
            ("verb", true),
            ("_x1", true),
            ("Api9", true),
            (at_most, true),
            (long, false),
            ("", false),
            ("1x", false),
            ("a:b", false),
            ("a-b", false),
            ("__x", false),
            ("é", false),
            ("stage", false),
            ("le", false),
            ("quantile", false),
            ("window", false),
        ];
        for (name, ok) in table {
            let labels = [(name, "v")];
            assert_eq!(check_labels(&labels).is_ok(), ok, "{name:?}");
        }
    }

    #[test]
    fn deadline_and_sampling_set_the_hot_path_flags() {
        let s = Stage::new("unit_flags").unwrap();
        assert_eq!(s.0.flags() & FLAG_WATCHED, 0);
        s.set_deadline(Some(std::time::Duration::from_millis(5)))
            .unwrap();
        assert_ne!(s.0.flags() & FLAG_WATCHED, 0);
        assert!(s.set_deadline(Some(std::time::Duration::ZERO)).is_err());
        s.set_deadline(None).unwrap();
        assert_eq!(s.0.flags() & FLAG_WATCHED, 0);
        assert!(s.set_sampling_rate(Some(1.5)).is_err());
        assert!(s.set_sampling_rate(Some(f64::NAN)).is_err());
        s.set_sampling_rate(Some(0.5)).unwrap();
        assert_ne!(s.0.flags() & FLAG_SAMPLED, 0);
        s.set_enabled(false);
        assert!(!s.is_enabled());
        s.set_enabled(true);
        assert!(s.is_enabled());
    }
}
