//! Families: one static name and static label names, series resolved from runtime label values.
//!
//! A desk asks per symbol. A [`Family`] is declared once (`laptime::family!("order_exec", ["pair",
//! "side"])`); each distinct set of label values is a *series*, resolved to an ordinary [`Stage`]
//! the first time it is seen. A series handle is `Copy` and as cheap on the hot path as a static
//! stage: cache it per symbol. The uncached lookup ([`Family::series`]) hashes the values and
//! probes a lock-free table: no lock and no allocation once the series exists. Creating a series
//! takes the family's lock and allocates its stage once (its label values are kept for the life
//! of the process, bounded by the caps).
//!
//! # Bounded cardinality
//! A family holds at most its cap of series ([`FamilyOptions::max_series`], default
//! [`DEFAULT_MAX_SERIES_PER_FAMILY`]) and the process at most
//! [`crate::CollectorBuilder::with_max_series`] (default [`DEFAULT_MAX_SERIES`]). Past either
//! cap, or for label values laptime cannot carry, [`Family::series`] returns a typed
//! [`SeriesError`] and [`Family::series_or_overflow`] (what hot code and the macros use) returns
//! the family's *overflow series*, whose every label value is [`OVERFLOW_VALUE`]. Each such call
//! is counted ([`Family::overflowed`], [`crate::Health::series_overflowed`]): never a panic,
//! never a silent no-op, never unbounded memory.
//!
//! # The family total
//! Every family also has a stage of its own name with no labels: the *family total*. Each value
//! and event recorded in any of its series is also recorded there (the histograms summed, not
//! an average of percentiles), so `get_stats("order_exec")` answers for the family as a whole.
//! Exports leave it out (their backends sum the series themselves). Record into the series, never
//! into the total: [`Stage::new`] with a family's name is refused.
//!
//! ```
//! let family = laptime::family!("doc_order_exec", ["pair", "side"]);
//! let btc_buy = family.series(&["BTC-USD", "buy"]).unwrap();
//! assert_eq!(btc_buy.labels(), &[("pair", "BTC-USD"), ("side", "buy")]);
//! // The same values give the same series; integers are label values too.
//! assert_eq!(family.series(&["BTC-USD", "buy"]).unwrap(), btc_buy);
//! let venue = laptime::family!("doc_venue_rtt", ["venue"]);
//! assert_eq!(venue.series(&[7u32]).unwrap().labels(), &[("venue", "7")]);
//! // Bad values are errors from the fallible call and the overflow series from the other one.
//! assert!(family.series(&["BTC-USD"]).is_err());
//! assert_eq!(family.series_or_overflow(&["BTC-USD", ""]), family.overflow());
//! assert_eq!(family.overflowed(), 1);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};

use parking_lot::Mutex;

use crate::error::{SeriesError, StageError};
use crate::stage::{Stage, registry};
use crate::stats::{Snapshot, StageStats, Window};

pub use crate::limits::{
    DEFAULT_FAMILY_DIGITS, DEFAULT_MAX_SERIES, DEFAULT_MAX_SERIES_PER_FAMILY, MAX_FAMILIES,
    MAX_FAMILY_LABELS, MAX_SERIES_LIMIT, OVERFLOW_VALUE,
};

/// Settings of one family, given when it is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FamilyOptions {
    /// Most series the family holds besides its overflow series.
    pub max_series: usize,
    /// Significant digits of its series' histograms, 1..=5: every percentile of a series (and of
    /// the family total) is within 10^-(digits) of the exact value, relative, bounded above by
    /// HdrHistogram's bucket width at that precision (2 digits: 1/128, 3 digits: 1/1024).
    pub significant_digits: u8,
}

impl Default for FamilyOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl FamilyOptions {
    /// The defaults: [`DEFAULT_MAX_SERIES_PER_FAMILY`] series at [`DEFAULT_FAMILY_DIGITS`]
    /// significant digits.
    pub const fn new() -> Self {
        Self {
            max_series: DEFAULT_MAX_SERIES_PER_FAMILY,
            significant_digits: DEFAULT_FAMILY_DIGITS,
        }
    }

    /// These options with another per-family cap.
    pub const fn with_max_series(mut self, max_series: usize) -> Self {
        self.max_series = max_series;
        self
    }

    /// These options with another precision (1..=5 significant digits).
    pub const fn with_significant_digits(mut self, digits: u8) -> Self {
        self.significant_digits = digits;
        self
    }
}

/// A family of series: see the [module docs](self).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Family(&'static FamilyInfo);

pub(crate) struct FamilyInfo {
    name: &'static str,
    label_names: &'static [&'static str],
    cap: usize,
    digits: u8,
    total: Stage,
    overflow: Stage,
    /// The table series are looked up in until it fills past half; then `grown[current - 1]`,
    /// each twice the one before.
    first: Table,
    grown: [OnceLock<Table>; TABLE_GENERATIONS],
    current: AtomicUsize,
    /// Serialises the creation of series (and the table's growth).
    create: Mutex<()>,
    len: AtomicUsize,
    overflowed: AtomicU64,
}

impl PartialEq for FamilyInfo {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for FamilyInfo {}

impl std::hash::Hash for FamilyInfo {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// Open addressing, linear probing, at most half full; grown by copying into a table twice the
/// size. Replaced tables are kept: a reader may still be probing one, and all of them together
/// are at most twice the last.
struct Table {
    mask: usize,
    slots: Box<[Slot]>,
}

#[derive(Default)]
struct Slot {
    /// The values' hash, never 0; 0 = empty. Written last (Release), after `stage`.
    hash: AtomicU64,
    stage: OnceLock<Stage>,
}

const FIRST_TABLE_SLOTS: usize = 64;
/// Enough doublings from [`FIRST_TABLE_SLOTS`] for [`MAX_SERIES_LIMIT`] series at half load.
const TABLE_GENERATIONS: usize = 17;
const _: () = assert!(FIRST_TABLE_SLOTS << TABLE_GENERATIONS >= 2 * MAX_SERIES_LIMIT);

impl Table {
    fn with_slots(slots: usize) -> Table {
        Table {
            mask: slots - 1,
            slots: (0..slots).map(|_| Slot::default()).collect(),
        }
    }

    /// The series whose hash is `hash` and whose values `same` accepts, if present.
    #[inline]
    fn find(&self, hash: u64, same: impl Fn(Stage) -> bool) -> Option<Stage> {
        let mut i = hash as usize & self.mask;
        loop {
            let slot = &self.slots[i];
            // Acquire: pairs with the Release in `insert`; the stage pointer is set.
            match slot.hash.load(Ordering::Acquire) {
                0 => return None,
                h if h == hash => {
                    if let Some(&stage) = slot.stage.get()
                        && same(stage)
                    {
                        return Some(stage);
                    }
                }
                _ => {}
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Inserts without checking for a duplicate (the caller holds the family's lock and looked).
    fn insert(&self, hash: u64, stage: Stage) {
        let mut i = hash as usize & self.mask;
        while self.slots[i].hash.load(Ordering::Relaxed) != 0 {
            i = (i + 1) & self.mask;
        }
        let _ = self.slots[i].stage.set(stage);
        self.slots[i].hash.store(hash, Ordering::Release);
    }

    fn stages(&self) -> impl Iterator<Item = (u64, Stage)> + '_ {
        self.slots.iter().filter_map(|s| {
            let hash = s.hash.load(Ordering::Acquire);
            (hash != 0).then(|| s.stage.get().map(|&stage| (hash, stage)))?
        })
    }
}

/// Families by name, for redeclaration and for the health figures.
static FAMILIES: LazyLock<Mutex<Vec<Family>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// The family called `name`, if one was declared.
pub(crate) fn named(name: &str) -> Option<Family> {
    FAMILIES.lock().iter().find(|f| f.0.name == name).copied()
}

impl Family {
    /// Every family declared so far in the process, in declaration order.
    pub fn all() -> Vec<Family> {
        FAMILIES.lock().clone()
    }

    /// Declares (or finds) the family `name` with `label_names` and the default options.
    pub fn new(
        name: &'static str,
        label_names: &'static [&'static str],
    ) -> Result<Family, StageError> {
        Self::with_options(name, label_names, FamilyOptions::default())
    }

    /// Declares (or finds) a family with its own options. Declaring a name again with the same
    /// label names returns the same family (its first options stand); other label names are an
    /// error.
    pub fn with_options(
        name: &'static str,
        label_names: &'static [&'static str],
        options: FamilyOptions,
    ) -> Result<Family, StageError> {
        let mut families = FAMILIES.lock();
        if let Some(f) = families.iter().find(|f| f.0.name == name) {
            return if f.0.label_names == label_names {
                Ok(*f)
            } else {
                Err(StageError::FamilyRedeclared {
                    name: name.to_owned(),
                    label_names: f.0.label_names.iter().map(|l| l.to_string()).collect(),
                })
            };
        }
        check_declaration(name, label_names, options)?;
        if families.len() >= MAX_FAMILIES {
            return Err(StageError::TooManyFamilies);
        }
        let digits = options.significant_digits;
        let total = registry().register_total(name, digits)?;
        let overflow_labels: Vec<(&'static str, &'static str)> =
            label_names.iter().map(|l| (*l, OVERFLOW_VALUE)).collect();
        let overflow = registry().register_series(name, overflow_labels.leak(), None, digits)?;
        let info: &'static FamilyInfo = Box::leak(Box::new(FamilyInfo {
            name,
            label_names,
            cap: options.max_series,
            digits,
            total,
            overflow,
            first: Table::with_slots(FIRST_TABLE_SLOTS),
            grown: [const { OnceLock::new() }; TABLE_GENERATIONS],
            current: AtomicUsize::new(0),
            create: Mutex::new(()),
            len: AtomicUsize::new(0),
            overflowed: AtomicU64::new(0),
        }));
        registry().adopt(total, info);
        registry().adopt(overflow, info);
        let family = Family(info);
        families.push(family);
        Ok(family)
    }

    /// The family's name.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// The family's label names, in the order values are given.
    pub fn label_names(self) -> &'static [&'static str] {
        self.0.label_names
    }

    /// The family's cap on series (its overflow series aside).
    pub fn max_series(self) -> usize {
        self.0.cap
    }

    /// What an SLA rule on `(name, labels)` judges: the total for no labels, else the series
    /// of those labels (given in any order, every label name of the family once).
    pub(crate) fn stage_for_rule(self, labels: &[(&str, &str)]) -> Option<Stage> {
        if labels.is_empty() {
            return Some(self.total());
        }
        let values: Vec<&str> = self
            .0
            .label_names
            .iter()
            .map(|name| labels.iter().find(|(k, _)| k == name).map(|(_, v)| *v))
            .collect::<Option<_>>()?;
        (values.len() == labels.len())
            .then(|| self.series(&values[..]).ok())
            .flatten()
    }

    /// Significant digits of its series' histograms (see [`FamilyOptions::significant_digits`]).
    pub fn significant_digits(self) -> u8 {
        self.0.digits
    }

    /// Series created so far (the overflow series aside).
    pub fn len(self) -> usize {
        self.0.len.load(Ordering::Relaxed)
    }

    /// Whether no series was created yet.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Calls that went to the overflow series: past a cap, or with values laptime cannot carry.
    pub fn overflowed(self) -> u64 {
        self.0.overflowed.load(Ordering::Relaxed)
    }

    /// The overflow series: every label value is [`OVERFLOW_VALUE`].
    pub fn overflow(self) -> Stage {
        self.0.overflow
    }

    /// The family total: a stage of the family's name with no labels, holding every series' values
    /// (see the [module docs](self#the-family-total)).
    pub fn total(self) -> Stage {
        self.0.total
    }

    /// Every series created so far (the overflow series aside), in no particular order.
    pub fn series_list(self) -> Vec<Stage> {
        self.table().stages().map(|(_, s)| s).collect()
    }

    /// The series for `values` (one per label name, in order), created on first use.
    ///
    /// Takes no lock and allocates nothing once the series exists.
    pub fn series<V: LabelValues + ?Sized>(self, values: &V) -> Result<Stage, SeriesError> {
        self.lookup(values)
            .map_err(|refusal| self.error(refusal, values))
    }

    /// [`Family::series`] for hot code: on any error, the overflow series, and the call is
    /// counted in [`Family::overflowed`]. Allocates nothing but a new series' own labels, and
    /// takes no lock but to create a series (never once a cap is reached).
    #[inline]
    pub fn series_or_overflow<V: LabelValues + ?Sized>(self, values: &V) -> Stage {
        self.lookup(values)
            .unwrap_or_else(|_| self.overflowed_call())
    }

    #[cold]
    fn overflowed_call(self) -> Stage {
        self.0.overflowed.fetch_add(1, Ordering::Relaxed);
        self.0.overflow
    }

    fn table(self) -> &'static Table {
        // Acquire: pairs with the Release in `table_with_room`; the table is set and filled.
        match self.0.current.load(Ordering::Acquire) {
            0 => &self.0.first,
            n => self.0.grown[n - 1].get().unwrap_or(&self.0.first),
        }
    }

    #[inline]
    fn lookup<V: LabelValues + ?Sized>(self, values: &V) -> Result<Stage, Refusal> {
        let hash = self.check_and_hash(values)?;
        if let Some(stage) = self.table().find(hash, |s| same_values(s, values)) {
            return Ok(stage);
        }
        self.create(hash, values)
    }

    /// Checks the values against the family's label names and hashes them.
    #[inline]
    fn check_and_hash<V: LabelValues + ?Sized>(self, values: &V) -> Result<u64, Refusal> {
        if values.count() != self.0.label_names.len() {
            return Err(Refusal::WrongLabelCount);
        }
        let mut hash = SEED;
        let mut bad = None;
        let mut i = 0;
        values.each(&mut |v| {
            if bad.is_none()
                && let Err(problem) = check_value(v)
            {
                bad = Some(Refusal::InvalidLabelValue { index: i, problem });
            }
            hash = hash_value(hash, v);
            i += 1;
        });
        match bad {
            Some(refusal) => Err(refusal),
            None => Ok(hash | 1),
        }
    }

    /// The error for a refusal, naming the value (allocates: off the hot path).
    #[cold]
    fn error<V: LabelValues + ?Sized>(self, refusal: Refusal, values: &V) -> SeriesError {
        let family = self.0.name;
        match refusal {
            Refusal::WrongLabelCount => SeriesError::WrongLabelCount {
                family,
                expected: self.0.label_names.len(),
                got: values.count(),
            },
            Refusal::InvalidLabelValue { index, problem } => {
                let mut value = String::new();
                let mut i = 0;
                values.each(&mut |v| {
                    if i == index {
                        value = v.chars().take(40).collect();
                    }
                    i += 1;
                });
                SeriesError::InvalidLabelValue {
                    family,
                    label: self.0.label_names[index],
                    value,
                    problem,
                }
            }
            Refusal::FamilyFull => SeriesError::FamilyFull {
                family,
                cap: self.0.cap,
            },
            Refusal::ProcessFull => SeriesError::ProcessFull {
                cap: registry().series_cap(),
            },
        }
    }

    #[cold]
    fn create<V: LabelValues + ?Sized>(self, hash: u64, values: &V) -> Result<Stage, Refusal> {
        // Checked before the lock too: past a cap, unknown values never wait for it.
        self.check_room()?;
        let _create = self.0.create.lock();
        // Another thread may have created it while this one waited.
        let table = self.table();
        if let Some(stage) = table.find(hash, |s| same_values(s, values)) {
            return Ok(stage);
        }
        self.check_room()?;
        let labels = self.owned_labels(values);
        let stage = registry()
            .register_series(self.0.name, labels, Some(self.0), self.0.digits)
            .map_err(|_| Refusal::ProcessFull)?;
        let table = self.table_with_room(table);
        table.insert(hash, stage);
        self.0.len.fetch_add(1, Ordering::Relaxed);
        Ok(stage)
    }

    fn check_room(self) -> Result<(), Refusal> {
        if self.len() >= self.0.cap {
            Err(Refusal::FamilyFull)
        } else if registry().series_len() >= registry().series_cap() {
            Err(Refusal::ProcessFull)
        } else {
            Ok(())
        }
    }

    /// `table`, or a copy twice its size when one more series would fill it past half.
    fn table_with_room(self, table: &'static Table) -> &'static Table {
        if (self.len() + 1) * 2 <= table.slots.len() {
            return table;
        }
        let next = self.0.current.load(Ordering::Relaxed) + 1;
        let Some(slot) = self.0.grown.get(next - 1) else {
            return table; // unreachable: the caps keep a family within the last table
        };
        let bigger = Table::with_slots(table.slots.len() * 2);
        for (hash, stage) in table.stages() {
            bigger.insert(hash, stage);
        }
        let _ = slot.set(bigger);
        // Release: readers that load the new index see the table set and filled.
        self.0.current.store(next, Ordering::Release);
        slot.get().unwrap_or(table)
    }

    /// The label pairs of a new series, kept for the process (bounded by the caps): one
    /// allocation for the values' text, one for the pairs.
    fn owned_labels<V: LabelValues + ?Sized>(
        self,
        values: &V,
    ) -> &'static [(&'static str, &'static str)] {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(self.0.label_names.len());
        values.each(&mut |v| {
            text.push_str(v);
            ends.push(text.len());
        });
        let text: &'static str = text.leak();
        let mut start = 0;
        let pairs: Vec<(&'static str, &'static str)> = self
            .0
            .label_names
            .iter()
            .zip(ends)
            .map(|(name, end)| {
                let value = &text[start..end];
                start = end;
                (*name, value)
            })
            .collect();
        pairs.leak()
    }
}

/// Where the values of one name go when its label values are known only at run time, as for the
/// bridges (a `metrics` key, a `tracing` callsite): the name's stage, or a series of its family.
///
/// ```
/// use laptime::family::Destination;
/// let venue = Destination::declare("doc_dest_rtt", &["venue"]).unwrap();
/// let xnas = venue.stage(&["XNAS"]);
/// assert_eq!(xnas.labels(), &[("venue", "XNAS")]);
/// // The name is a family now: declaring it without labels finds the family, whose overflow
/// // series takes values that do not match its labels (counted in `Family::overflowed`).
/// let plain = Destination::declare("doc_dest_rtt", &[]).unwrap();
/// assert_eq!(plain, venue);
/// let Destination::Family(family) = plain else { unreachable!() };
/// assert_eq!(plain.stage(&[] as &[&str]), family.overflow());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// A name used without labels.
    Stage(Stage),
    /// A name with runtime labels.
    Family(Family),
}

impl Destination {
    /// Declares `name` (or finds it): a stage when `label_names` is empty, else a family of
    /// those label names. A name that is a family already is that family, whatever label names
    /// are given here: values that do not match its labels go to its overflow series. Other
    /// refusals (an invalid name, a name that is a stage of its own and is now given labels, a
    /// cap) are the errors of [`Stage::new`] and [`Family::new`].
    pub fn declare(
        name: &'static str,
        label_names: &'static [&'static str],
    ) -> Result<Destination, StageError> {
        let declared = if label_names.is_empty() {
            Stage::new(name).map(Destination::Stage)
        } else {
            Family::new(name, label_names).map(Destination::Family)
        };
        match declared {
            Err(e @ (StageError::NameIsAFamily { .. } | StageError::FamilyRedeclared { .. })) => {
                named(name).map(Destination::Family).ok_or(e)
            }
            other => other,
        }
    }

    /// The stage values labelled `values` go to: the name's stage (the values unused), or its
    /// family's series for them ([`Family::series_or_overflow`]: no lock and no allocation once
    /// the series exists).
    #[inline]
    pub fn stage<V: LabelValues + ?Sized>(self, values: &V) -> Stage {
        match self {
            Destination::Stage(stage) => stage,
            Destination::Family(family) => family.series_or_overflow(values),
        }
    }
}

/// What [`Family::top`] ranks series by, slowest first.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Rank {
    /// A reported percentile: 0.5, 0.9, 0.95, 0.99 or 0.999 (0 is the minimum, 1 the maximum).
    Quantile(f64),
    /// The mean.
    Mean,
    /// Deadline misses per completed span ([`StageStats::deadline_miss_rate`]).
    MissRate,
    /// Records in the window: the busiest series.
    Count,
}

impl Rank {
    /// The figure ranked by, comparable across series; `None` when it is not reported.
    fn key(self, s: &StageStats) -> Option<f64> {
        match self {
            Rank::Quantile(q) => s.quantile(q).map(|d| d.as_nanos() as f64),
            Rank::Mean => Some(s.mean.as_nanos() as f64),
            Rank::MissRate => Some(s.deadline_miss_rate()),
            Rank::Count => Some(s.count as f64),
        }
    }
}

impl Family {
    /// The family as a whole over `window`: the figures of its total (every series' values in
    /// one histogram, exact, not an average of percentiles), from the current collector.
    pub fn stats(self, window: Window) -> Option<StageStats> {
        crate::get_stats(self.total(), window)
    }

    /// The `k` series of this family ranked highest by `by` over `window` in `snapshot` (its
    /// overflow series included: a slow overflow says which calls have no series of their own),
    /// highest first, ties in creation order. Series with nothing in the window, or without the
    /// figure asked for (a percentile that is not reported), are left out.
    pub fn top(self, snapshot: &Snapshot, window: Window, by: Rank, k: usize) -> Vec<StageStats> {
        let mut ranked: Vec<(f64, u32, &StageStats)> = self
            .table()
            .stages()
            .map(|(_, s)| s)
            .chain([self.overflow()])
            .filter_map(|stage| {
                let stats = snapshot.stats(stage, window)?;
                Some((by.key(stats)?, stage.id(), stats))
            })
            .collect();
        let by_rank = |a: &(f64, u32, &StageStats), b: &(f64, u32, &StageStats)| {
            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
        };
        if k == 0 {
            return Vec::new();
        }
        if ranked.len() > k {
            // Only the first k need sorting: a 5 000-series family ranks in one pass.
            ranked.select_nth_unstable_by(k - 1, by_rank);
            ranked.truncate(k);
        }
        ranked.sort_unstable_by(by_rank);
        ranked.into_iter().map(|(_, _, s)| s.clone()).collect()
    }
}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.0.name)
            .field("label_names", &self.0.label_names)
            .field("series", &self.len())
            .field("max_series", &self.0.cap)
            .field("overflowed", &self.overflowed())
            .finish()
    }
}

/// (series created, calls sent to overflow) over every family.
pub(crate) fn series_figures() -> (usize, u64) {
    FAMILIES
        .lock()
        .iter()
        .fold((0, 0), |(n, o), f| (n + f.len(), o + f.overflowed()))
}

impl Stage {
    /// The family this stage is a series (or the total) of, if any.
    pub fn family(self) -> Option<Family> {
        self.0.family.get().map(|f| Family(f))
    }

    /// Whether this stage is a family total (see [`Family::total`]): exports leave it out.
    pub fn is_family_total(self) -> bool {
        self.family().is_some_and(|f| f.total() == self)
    }
}

fn check_declaration(
    name: &'static str,
    label_names: &'static [&'static str],
    options: FamilyOptions,
) -> Result<(), StageError> {
    crate::stage::valid_name(name)?;
    if label_names.is_empty() || label_names.len() > MAX_FAMILY_LABELS {
        return Err(StageError::FamilyLabelCount {
            name: name.to_owned(),
            count: label_names.len(),
        });
    }
    let as_pairs: Vec<(&str, &str)> = label_names.iter().map(|l| (*l, "v")).collect();
    crate::stage::valid_labels(&as_pairs)?;
    if options.max_series == 0 || options.max_series > MAX_SERIES_LIMIT {
        return Err(StageError::FamilyCap {
            name: name.to_owned(),
            cap: options.max_series,
        });
    }
    if !(1..=5).contains(&options.significant_digits) {
        return Err(StageError::FamilyDigits {
            name: name.to_owned(),
            digits: options.significant_digits,
        });
    }
    Ok(())
}

/// Whether `stage`'s label values are `values`.
fn same_values<V: LabelValues + ?Sized>(stage: Stage, values: &V) -> bool {
    let labels = stage.labels();
    let mut i = 0;
    let mut same = true;
    values.each(&mut |v| {
        same &= labels.get(i).is_some_and(|(_, have)| *have == v);
        i += 1;
    });
    same
}

/// Why a lookup gave no series: [`SeriesError`] without the text, so the hot path's overflow
/// route allocates nothing.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    WrongLabelCount,
    InvalidLabelValue { index: usize, problem: ValueProblem },
    FamilyFull,
    ProcessFull,
}

/// Why a runtime label value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueProblem {
    /// The value is empty.
    Empty,
    /// The value is longer than [`crate::limits::MAX_NAME_LEN`] bytes.
    TooLong,
    /// The value has a control character (a newline, a tab, NUL, …).
    ControlCharacter,
    /// The value is [`OVERFLOW_VALUE`], kept for the overflow series.
    Reserved,
}

impl fmt::Display for ValueProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty: give a non-empty value"),
            Self::TooLong => write!(
                f,
                "is longer than {} bytes: shorten it (an id, not a description)",
                crate::limits::MAX_NAME_LEN
            ),
            Self::ControlCharacter => {
                f.write_str("has a control character (newline, tab, NUL…): remove it")
            }
            Self::Reserved => write!(f, "is {OVERFLOW_VALUE:?}, kept for the overflow series"),
        }
    }
}

fn check_value(v: &str) -> Result<(), ValueProblem> {
    if v.is_empty() {
        Err(ValueProblem::Empty)
    } else if v.len() > crate::limits::MAX_NAME_LEN {
        Err(ValueProblem::TooLong)
    } else if v.chars().any(char::is_control) {
        Err(ValueProblem::ControlCharacter)
    } else if v == OVERFLOW_VALUE {
        Err(ValueProblem::Reserved)
    } else {
        Ok(())
    }
}

const SEED: u64 = 0x243F_6A88_85A3_08D3;
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Folds one value into the hash: 8 bytes at a time, then its length, so ("ab", "c") and
/// ("a", "bc") differ. Not DoS-resistant (a full probe is still bounded by the cap).
#[inline]
fn hash_value(mut h: u64, v: &str) -> u64 {
    let bytes = v.as_bytes();
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(26) ^ word).wrapping_mul(MULTIPLIER);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(26) ^ u64::from_le_bytes(tail)).wrapping_mul(MULTIPLIER);
    h = (h ^ bytes.len() as u64).wrapping_mul(MULTIPLIER);
    h ^ (h >> 29)
}

/// One runtime label value: text, or a number written in decimal (without allocating).
pub trait LabelValue {
    /// Calls `f` with the value as text.
    fn with_str(&self, f: &mut dyn FnMut(&str));
}

impl LabelValue for str {
    #[inline]
    fn with_str(&self, f: &mut dyn FnMut(&str)) {
        f(self)
    }
}

impl LabelValue for String {
    #[inline]
    fn with_str(&self, f: &mut dyn FnMut(&str)) {
        f(self)
    }
}

impl<T: LabelValue + ?Sized> LabelValue for &T {
    #[inline]
    fn with_str(&self, f: &mut dyn FnMut(&str)) {
        (**self).with_str(f)
    }
}

macro_rules! integer_label_value {
    ($($t:ty),*) => {$(
        impl LabelValue for $t {
            #[inline]
            fn with_str(&self, f: &mut dyn FnMut(&str)) {
                let mut buf = [0u8; 40];
                f(decimal(i128::from(*self), &mut buf))
            }
        }
    )*};
}

integer_label_value!(u8, u16, u32, u64, i8, i16, i32, i64);

impl LabelValue for usize {
    #[inline]
    fn with_str(&self, f: &mut dyn FnMut(&str)) {
        (*self as u64).with_str(f)
    }
}

/// `n` in decimal, written into the end of `buf`.
fn decimal(n: i128, buf: &mut [u8; 40]) -> &str {
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    // Only ASCII digits and '-' were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// A series' label values, one per label name of its family, in order: an array or slice of
/// one type (`&["BTC-USD", "buy"]`, `&[7u32]`), or a tuple of mixed ones (`&(pair, 3u16)`).
pub trait LabelValues {
    /// How many values.
    fn count(&self) -> usize;
    /// Calls `f` with each value's text, in order.
    fn each(&self, f: &mut dyn FnMut(&str));
}

impl<V: LabelValue> LabelValues for [V] {
    #[inline]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn each(&self, f: &mut dyn FnMut(&str)) {
        for v in self {
            v.with_str(f);
        }
    }
}

impl<V: LabelValue, const N: usize> LabelValues for [V; N] {
    #[inline]
    fn count(&self) -> usize {
        N
    }
    #[inline]
    fn each(&self, f: &mut dyn FnMut(&str)) {
        self.as_slice().each(f)
    }
}

macro_rules! tuple_label_values {
    ($n:expr; $($t:ident . $i:tt),*) => {
        impl<$($t: LabelValue),*> LabelValues for ($($t,)*) {
            #[inline]
            fn count(&self) -> usize {
                $n
            }
            #[inline]
            fn each(&self, f: &mut dyn FnMut(&str)) {
                $(self.$i.with_str(f);)*
            }
        }
    };
}

tuple_label_values!(1; A.0);
tuple_label_values!(2; A.0, B.1);
tuple_label_values!(3; A.0, B.1, C.2);
tuple_label_values!(4; A.0, B.1, C.2, D.3);

/// Declares a family once per call site and keeps it in a call-site static.
///
/// ```
/// let family = laptime::family!("doc_quote_latency", ["pair"]);
/// let capped = laptime::family!("doc_fill_latency", ["pair"], max_series = 100);
/// assert_eq!(capped.max_series(), 100);
/// let fine = laptime::family!("doc_ack_latency", ["venue"], significant_digits = 3);
/// assert_eq!(fine.significant_digits(), 3);
/// let s = family.series_or_overflow(&["ETH-USD"]);
/// assert_eq!(s.family(), Some(family));
/// ```
///
/// # Panics
/// When the name or a label name is invalid, the name is already a stage's, or it was declared
/// with other label names: call [`Family::new`] to get the error as a value instead.
#[macro_export]
macro_rules! family {
    ($name:expr, [$($label:expr),+ $(,)?] $(, max_series = $cap:expr)?
        $(, significant_digits = $digits:expr)? $(,)?) => {{
        static FAMILY: ::std::sync::OnceLock<$crate::Family> = ::std::sync::OnceLock::new();
        *FAMILY.get_or_init(|| {
            #[allow(unused_mut)]
            let mut options = $crate::FamilyOptions::default();
            $(options = options.with_max_series($cap);)?
            $(options = options.with_significant_digits($digits);)?
            $crate::Family::with_options($name, &[$($label),+], options)
                .unwrap_or_else(|e| ::core::panic!("laptime::family!: {e}"))
        })
    }};
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;

    #[test]
    fn decimal_writes_every_integer() {
        let mut buf = [0u8; 40];
        for n in [
            0i128,
            7,
            -7,
            10,
            4_294_967_295,
            i128::from(i64::MIN),
            i128::from(u64::MAX),
        ] {
            assert_eq!(decimal(n, &mut buf), n.to_string());
        }
    }

    #[test]
    fn hash_separates_the_values_boundaries() {
        let h = |vs: &[&str]| vs.iter().fold(SEED, |h, v| hash_value(h, v));
        assert_ne!(h(&["ab", "c"]), h(&["a", "bc"]));
        assert_ne!(h(&["", "x"]), h(&["x", ""]));
        assert_ne!(h(&["12345678", "9"]), h(&["1234567", "89"]));
        assert_eq!(h(&["BTC", "buy"]), h(&["BTC", "buy"]));
    }

    #[test]
    fn a_growing_table_keeps_every_series() {
        let family = Family::with_options(
            "unit_family_growth",
            &["sym"],
            FamilyOptions::new().with_max_series(5_000),
        )
        .unwrap();
        let made: Vec<Stage> = (0..3_000u32)
            .map(|i| family.series(&[i]).unwrap())
            .collect();
        assert_eq!(family.len(), 3_000);
        for (i, stage) in made.iter().enumerate() {
            assert_eq!(family.series(&[i as u32]).unwrap(), *stage);
            assert_eq!(stage.labels(), &[("sym", &*i.to_string())]);
        }
        assert_eq!(family.series_list().len(), 3_000);
    }

    #[test]
    fn past_the_cap_calls_go_to_overflow_and_are_counted() {
        let family = Family::with_options(
            "unit_family_cap",
            &["sym"],
            FamilyOptions::new().with_max_series(2),
        )
        .unwrap();
        let a = family.series(&["a"]).unwrap();
        family.series(&["b"]).unwrap();
        assert_eq!(
            family.series(&["c"]),
            Err(SeriesError::FamilyFull {
                family: "unit_family_cap",
                cap: 2
            })
        );
        assert_eq!(family.series_or_overflow(&["c"]), family.overflow());
        assert_eq!(family.series_or_overflow(&["a"]), a);
        assert_eq!(family.overflowed(), 1);
        assert_eq!(
            family.overflow().labels(),
            &[("sym", OVERFLOW_VALUE)],
            "the overflow series carries the reserved value"
        );
    }

    #[test]
    fn bad_values_are_typed_errors_naming_the_label() {
        let family = Family::new("unit_family_values", &["pair", "side"]).unwrap();
        let long = "x".repeat(crate::limits::MAX_NAME_LEN + 1);
        let cases: [(&[&str], ValueProblem); 4] = [
            (&["", "buy"], ValueProblem::Empty),
            (&["BTC", &long], ValueProblem::TooLong),
            (&["BTC\n", "buy"], ValueProblem::ControlCharacter),
            (&[OVERFLOW_VALUE, "buy"], ValueProblem::Reserved),
        ];
        for (values, want) in cases {
            match family.series(values) {
                Err(SeriesError::InvalidLabelValue { problem, label, .. }) => {
                    assert_eq!(problem, want);
                    let expected_label = if want == ValueProblem::TooLong {
                        "side"
                    } else {
                        "pair"
                    };
                    assert_eq!(label, expected_label);
                }
                other => panic!("{values:?}: {other:?}"),
            }
        }
        assert!(matches!(
            family.series(&["BTC"]),
            Err(SeriesError::WrongLabelCount {
                expected: 2,
                got: 1,
                ..
            })
        ));
        assert_eq!(family.len(), 0);
    }

    #[test]
    fn declarations_are_checked_and_idempotent() {
        let a = Family::new("unit_family_decl", &["venue"]).unwrap();
        assert_eq!(Family::new("unit_family_decl", &["venue"]).unwrap(), a);
        assert!(matches!(
            Family::new("unit_family_decl", &["pair"]),
            Err(StageError::FamilyRedeclared { .. })
        ));
        assert!(matches!(
            Family::new("unit_family_nolabels", &[]),
            Err(StageError::FamilyLabelCount { count: 0, .. })
        ));
        assert!(matches!(
            Family::new("unit_family_badlabel", &["le"]),
            Err(StageError::InvalidLabelName { .. })
        ));
        assert!(matches!(
            Family::with_options(
                "unit_family_zero",
                &["x"],
                FamilyOptions::new().with_max_series(0)
            ),
            Err(StageError::FamilyCap { cap: 0, .. })
        ));
        // A family's name is not a stage of its own.
        assert!(matches!(
            Stage::new("unit_family_decl"),
            Err(StageError::NameIsAFamily { .. })
        ));
        Stage::new("unit_plain_stage_taken").unwrap();
        assert!(matches!(
            Family::new("unit_plain_stage_taken", &["x"]),
            Err(StageError::NameIsAStage { .. })
        ));
    }

    #[test]
    fn mixed_tuples_and_owned_strings_find_the_same_series() {
        let family = Family::new("unit_family_tuple", &["pair", "level"]).unwrap();
        let s = family.series(&("BTC", 3u16)).unwrap();
        assert_eq!(
            family
                .series(&[String::from("BTC"), String::from("3")])
                .unwrap(),
            s
        );
        assert_eq!(family.series(&["BTC", "3"][..]).unwrap(), s);
        assert_eq!(s.family(), Some(family));
        assert!(!s.is_family_total());
        assert!(family.total().is_family_total());
    }
}
