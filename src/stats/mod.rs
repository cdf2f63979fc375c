//! Statistics as plain data: what `get_stats` returns and what the snapshot holds.

pub(crate) mod table;
mod verdict;

pub(crate) use table::StageTable;

pub use verdict::{CLEAR_BELOW, Metric, Severity, Value, Violation};

use std::fmt;
use std::time::Duration;

/// Which slice of time a statistic covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The sliding window of this length (one of those the collector keeps).
    Last(Duration),
    /// Everything since the collector started; never resets.
    Cumulative,
}

impl Window {
    /// The last second.
    pub const S1: Window = Window::Last(Duration::from_secs(1));
    /// The last five seconds.
    pub const S5: Window = Window::Last(Duration::from_secs(5));
    /// The last minute.
    pub const S60: Window = Window::Last(Duration::from_secs(60));
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Last(d) if d.subsec_nanos() == 0 => write!(f, "{}s", d.as_secs()),
            Window::Last(d) if d.subsec_nanos() % 1_000_000 == 0 => {
                write!(f, "{}ms", d.as_millis())
            }
            Window::Last(d) if d.subsec_nanos() % 1_000 == 0 => write!(f, "{}µs", d.as_micros()),
            Window::Last(d) => write!(f, "{}ns", d.as_nanos()),
            Window::Cumulative => f.write_str("cumulative"),
        }
    }
}

/// The figures of one distribution of durations: how many values, their exact range and
/// moments, the percentiles every snapshot keeps, and how many fell past the histogram's range.
/// [`StageStats`] carries one for its spans and [`CorrectedStats`] one for the
/// coordinated-omission-corrected values; both dereference to it, so `stats.p99` reads
/// `stats.distribution.p99`.
///
/// Durations are nanosecond-exact where they come from exact sums (mean, min, max); percentiles
/// are within the histogram's resolution (0.1 % with 3 significant digits) of the exact
/// nearest-rank value, and never outside `[min, max]`. When `count` is 0 every duration is zero.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Distribution {
    /// Values in the histogram.
    pub count: u64,
    /// Smallest value.
    pub min: Duration,
    /// Largest value.
    pub max: Duration,
    /// Arithmetic mean (exact).
    pub mean: Duration,
    /// Population standard deviation (exact).
    pub stddev: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    ///
    /// Any percentile may be saturated (a value past the histogram's range):
    /// [`Distribution::is_saturated`] says so.
    pub p999: Duration,
    /// Values above the histogram's highest trackable value, recorded as that value.
    pub saturated: u64,
}

impl Distribution {
    /// The percentile for quantile `q` among the ones kept (0.5, 0.9, 0.95, 0.99, 0.999), the
    /// minimum for 0 and the maximum for 1.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        const EPS: f64 = 1e-12;
        let figures = [
            self.min, self.p50, self.p90, self.p95, self.p99, self.p999, self.max,
        ];
        [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
            .into_iter()
            .zip(figures)
            .find(|(k, _)| (k - q).abs() < EPS)
            .map(|(_, v)| v)
    }

    /// Whether the figure for quantile `q` (`p99` for 0.99) is saturated: its rank falls among
    /// the `saturated` values, those above the histogram's highest trackable value. Such a
    /// figure reads about the highest trackable value while the true percentile is larger, by
    /// any amount; treat it as a lower bound and raise the bound
    /// ([`crate::CollectorBuilder::with_histogram`]). Min and max are exact, never saturated.
    pub fn is_saturated(&self, q: f64) -> bool {
        crate::hist::quantile_saturated(q, self.count, self.saturated)
    }
}

/// One stage's statistics over one window: the distribution of its span durations
/// ([`Distribution`], whose fields read through this struct: `stats.p99`) and what happened to
/// the calls that are not in it.
///
/// When `count` is 0 (nothing completed in the window, but something was dropped, sampled out or
/// missed its deadline) every duration is zero.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StageStats {
    /// The stage's name.
    pub stage: &'static str,
    /// The stage's static labels.
    pub labels: &'static [(&'static str, &'static str)],
    /// The window these figures cover.
    pub window: Window,
    /// The spans recorded into the histogram (the sampled-in ones that reached the aggregator):
    /// their count, range, mean, percentiles and saturated values. `stats.p99` reads
    /// `stats.distribution.p99`.
    pub distribution: Distribution,
    /// Records lost to full rings.
    pub dropped: u64,
    /// Calls skipped by sampling (counted exactly, per thread).
    pub sampled_out: u64,
    /// Every call that reached the stage: `produced + sampled_out`, i.e.
    /// `count + sampled_out + dropped + cancelled + in_rings`. With
    /// sampling on this is the true call count (the "estimated total" is exact because skipped
    /// calls are counted).
    /// One exception: a [`crate::Lap`] is sampled as a whole, and a sampled-out lap counts one
    /// skipped call for its total stage only, not for the splits it never reached.
    pub calls: u64,
    /// Spans that ran past the stage's deadline: counted once each, as soon as the aggregator sees
    /// them overdue (even while still running) or when they end late.
    pub deadline_misses: u64,
    /// Spans abandoned before they ended: [`crate::SpanGuard::cancel`], a [`crate::SpanToken`]
    /// dropped without [`crate::record_end`], an async `#[measure]` future dropped before it
    /// completed. Recorded nowhere else: a cancelled span is not a duration.
    pub cancelled: u64,
    /// Spans of the stage started but not yet ended, as of the snapshot (cumulative window only;
    /// 0 elsewhere). Only stages with a deadline publish their starts.
    pub in_flight: u64,
    /// The stage's deadline when the snapshot was taken, if it has one.
    pub deadline: Option<Duration>,
    /// Spans that ended while their thread was unwinding from a panic: almost always a guard
    /// dropped by the panic (also a span run inside a destructor the unwind called). They are
    /// recorded as durations too (the time spent until the panic), so they are also in `count`.
    pub unwound: u64,
    /// This stage's span outcomes (ends, values, cancellations) pushed into rings but not yet
    /// drained when the snapshot was taken (cumulative window only; 0 elsewhere).
    pub in_rings: u64,
    /// Every call that passed sampling and produced a record: `count + dropped + cancelled +
    /// in_rings`. Nothing else happens to a record (one exception: a record the aggregator
    /// panicked on while processing it is counted in [`Health::records`] only), so this is the
    /// stage's side of the accounting identity [`Health::produced`] checks in total.
    pub produced: u64,
    /// Coordinated-omission-corrected figures, beside the raw ones, for a stage with an expected
    /// interval ([`crate::Stage::set_expected_interval`]); `None` otherwise. Boxed: most stages
    /// have no correction, and a snapshot holds one `StageStats` per stage and window, so the
    /// corrected figures cost those stages one pointer, not their whole size.
    pub corrected: Option<Box<CorrectedStats>>,
}

/// A stage's figures with coordinated-omission correction (HdrHistogram's
/// `recordValueWithExpectedInterval`): every span of `d` at least twice the expected interval
/// `i` also adds `d − i`, `d − 2i`, … down to `i`, the latencies the spans it held back would
/// have measured from their scheduled starts. Same window as the raw figures they sit beside.
///
/// The added values are all shorter than the span that added them, so `max` is the raw one (for
/// spans since the correction was turned on). Percentiles follow the raw figures' rules; the
/// distribution's fields read through this struct (`corrected.p99`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CorrectedStats {
    /// The expected interval the latest span was corrected with.
    pub expected_interval: Duration,
    /// Values added for spans held back by a slower one.
    pub synthesized: u64,
    /// Spans whose correction was cut short: one span adds at most 4 194 304 values (a 4 s stall
    /// of a 1 µs loop); the smallest ones beyond that are left out.
    pub truncated: u64,
    /// The corrected values: the spans recorded since the correction was turned on, plus
    /// `synthesized`. `saturated` counts values (raw or added) above the histogram's highest
    /// trackable value: see [`Distribution::is_saturated`].
    pub distribution: Distribution,
}

impl std::ops::Deref for StageStats {
    type Target = Distribution;

    fn deref(&self) -> &Distribution {
        &self.distribution
    }
}

impl std::ops::DerefMut for StageStats {
    fn deref_mut(&mut self) -> &mut Distribution {
        &mut self.distribution
    }
}

impl std::ops::Deref for CorrectedStats {
    type Target = Distribution;

    fn deref(&self) -> &Distribution {
        &self.distribution
    }
}

impl std::ops::DerefMut for CorrectedStats {
    fn deref_mut(&mut self) -> &mut Distribution {
        &mut self.distribution
    }
}

impl StageStats {
    /// Deadline misses per completed span (`misses / max(count, misses)`), 0 with no data.
    pub fn deadline_miss_rate(&self) -> f64 {
        miss_share(self.count, self.deadline_misses, 1.0)
    }

    /// The fraction of calls that were recorded: `count / calls` (1.0 when nothing was sampled
    /// out, dropped, cancelled or is still waiting in a ring).
    pub fn sampled_fraction(&self) -> f64 {
        if self.calls == 0 {
            1.0
        } else {
            self.count as f64 / self.calls as f64
        }
    }
}

/// `whole × misses / max(count, misses)`, 0 when both are 0: the deadline-miss share of
/// [`StageStats::deadline_miss_rate`] (`whole` 1) and of a profile's `deadline_miss_pct` (100).
/// A span can be counted as missed while still running, so misses may exceed count.
pub(crate) fn miss_share(count: u64, misses: u64, whole: f64) -> f64 {
    match count.max(misses) {
        0 => 0.0,
        n => whole * misses as f64 / n as f64,
    }
}

/// The quantiles every [`StageStats`] carries, in field order.
pub(crate) const QUANTILES: [f64; 5] = [0.5, 0.9, 0.95, 0.99, 0.999];

/// How the library itself is doing: the accounting that shows nothing was lost unseen.
///
/// `produced` is read from the rings' own indices (every record ever pushed, including into rings
/// already reclaimed) plus the drops; `records` is what the aggregator counted as it drained. At
/// any snapshot `produced == records + dropped + in_rings` (rings registered during the cycle are
/// counted from the next snapshot).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// Records the aggregator has taken out of rings (span ends, values, and the starts of
    /// deadline-watched spans).
    pub records: u64,
    /// Records lost to full rings, over all stages.
    pub dropped: u64,
    /// Records still waiting in rings when the snapshot was taken.
    pub in_rings: u64,
    /// Every record pushed into a ring (from the rings' indices) plus every record dropped.
    pub produced: u64,
    /// Calls skipped by sampling, over all stages.
    pub sampled_out: u64,
    /// Values above the highest trackable value.
    pub saturated: u64,
    /// Spans whose end tick read earlier than their start (a clock stepped back, or TSCs not
    /// synchronised across cores), recorded as 0 ns.
    pub backwards_spans: u64,
    /// Calls naming a stage that could not be registered (invalid name, cap reached).
    pub rejected: u64,
    /// Rings of live threads.
    pub rings: usize,
    /// Rings of exited threads that were drained and freed.
    pub rings_reclaimed: u64,
    /// The fullest any ring was seen, in records, since start.
    pub ring_high_water: usize,
    /// Capacity of each ring, in records.
    pub ring_capacity: usize,
    /// Aggregator cycles run.
    pub cycles: u64,
    /// Time the cycle before this snapshot's took (a cycle's own time is known only after it
    /// has published).
    pub last_cycle: Duration,
    /// Age of the oldest record drained in the last cycle: how far the aggregator lags the hot path.
    pub lag: Duration,
    /// Panics caught inside the aggregator (it carries on after each).
    pub aggregator_restarts: u64,
    /// Panics caught inside SLA callbacks and the aggregator-start hook.
    pub callback_panics: u64,
    /// The global sampling rate in force.
    pub sampling_rate: f64,
    /// Whether adaptive sampling is holding the rate down right now.
    pub adaptive_engaged: bool,
    /// Whether recording is globally enabled.
    pub enabled: bool,
    /// Deadline-watched spans in flight.
    pub in_flight: usize,
    /// Deadline-watched spans whose start record did not fit in the ring, since the process
    /// started: they are judged by their duration alone when they end, and cannot count as a miss
    /// while stuck.
    pub untracked_starts: u64,
    /// In-flight spans given up on (their end never arrived within the abandon horizon, e.g.
    /// because the end record was dropped).
    pub abandoned: u64,
    /// Heap bytes held by the aggregator's histograms.
    pub histogram_bytes: usize,
    /// Trips refused since the process started: [`crate::record_trip`] named a reason that
    /// is not a valid name, or one past [`crate::MAX_TRIP_REASONS`].
    pub rejected_trips: u64,
    /// Panics caught in sinks (exporters, profile and trace collection, the user's own); the
    /// sink is kept and called again at the next cycle. Sinks run on the snapshot being
    /// published, so a cycle's panics show in the next one.
    pub sink_panics: u64,
    /// Series of all families together (overflow series aside; see [`crate::Family`]).
    pub series: usize,
    /// Calls sent to a family's overflow series, since the process started: past a cap, or with
    /// label values laptime cannot carry (per family: [`crate::Family::overflowed`]).
    pub series_overflowed: u64,
    /// How long the last pass over every series took: a series' figures in a snapshot are at
    /// most this much (and one interval) older than its records. A cycle refreshes series in
    /// turn for at most a quarter of its interval, so that thousands of busy series cannot
    /// stretch it; with a few hundred, a pass is one cycle. `flush` refreshes every one; stages
    /// without labels are always current.
    pub series_sweep: Duration,
}

/// Renamed [`TripCounts`].
#[deprecated(since = "0.2.0", note = "renamed `TripCounts`")]
pub type GuardTrips = TripCounts;

/// Trips of one reason in every kept window.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TripCounts {
    /// The reason, e.g. `vol_hard`.
    pub reason: &'static str,
    /// Trips per window, in the order of [`Snapshot::windows`].
    pub counts: Vec<u64>,
}

/// One stage's statistics in every window, shared between snapshots while the stage is idle: one
/// entry per window, in the order of [`Snapshot::windows`], `None` where the stage had no activity
/// in that window. Behind an `Arc<[_]>`, one allocation: a reader walking 20 000 series follows
/// one pointer per stage, not two.
pub(crate) type StageSnapshot = [Option<StageStats>];

/// An immutable picture of every statistic, published by the aggregator after each cycle. Readers
/// load it with one atomic operation and never wait on producers or the aggregator.
#[derive(Debug)]
pub struct Snapshot {
    /// When it was taken, on the windows' clock: time since the collector's epoch (its install),
    /// the same timeline the records are placed on.
    pub taken_at: Duration,
    /// The windows kept: the sliding ones in configuration order, then [`Window::Cumulative`].
    pub windows: Vec<Window>,
    pub(crate) stages: StageTable,
    pub(crate) violations: Vec<Violation>,
    pub(crate) guard_trips: Vec<TripCounts>,
    /// Unlabelled stages (totals of labelled ones among them) by name, for lock-free queries.
    pub(crate) names: std::sync::Arc<std::collections::HashMap<&'static str, u32>>,
    /// The library's own health and accounting.
    pub health: Health,
}

/// Iterator over the stages active in one window of a snapshot.
pub type StageSnapshotIter<'a> = Box<dyn Iterator<Item = &'a StageStats> + 'a>;

impl Snapshot {
    pub(crate) fn empty(windows: Vec<Window>) -> Self {
        Self {
            taken_at: Duration::ZERO,
            windows,
            stages: StageTable::default(),
            violations: Vec::new(),
            guard_trips: Vec::new(),
            names: std::sync::Arc::default(),
            health: Health::default(),
        }
    }

    /// The unlabelled stage called `name`, if the snapshot knows it.
    pub(crate) fn stage_named(&self, name: &str) -> Option<crate::Stage> {
        crate::stage::registry().get(*self.names.get(name)?)
    }

    fn window_index(&self, window: Window) -> Option<usize> {
        self.windows.iter().position(|w| *w == window)
    }

    /// One stage's statistics over `window`, if the window is kept and the stage had activity in it.
    pub fn stats(&self, stage: crate::Stage, window: Window) -> Option<&StageStats> {
        let w = self.window_index(window)?;
        self.stages.get(stage.id() as usize)?.get(w)?.as_ref()
    }

    /// Every stage with activity in `window`, in stage-id order.
    pub fn all(&self, window: Window) -> StageSnapshotIter<'_> {
        match self.window_index(window) {
            Some(w) => Box::new(
                self.stages
                    .iter()
                    .filter_map(move |s| s.get(w).and_then(Option::as_ref)),
            ),
            None => Box::new(std::iter::empty()),
        }
    }

    /// The SLA violations of this snapshot, over every window.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Trips per reason over `window` (reasons with no trips in it are left out).
    pub fn trip_counts(&self, window: Window) -> Vec<(&'static str, u64)> {
        let Some(w) = self.window_index(window) else {
            return Vec::new();
        };
        self.guard_trips
            .iter()
            .filter_map(|g| g.counts.get(w).filter(|c| **c > 0).map(|c| (g.reason, *c)))
            .collect()
    }

    /// Renamed [`trip_counts`](Self::trip_counts).
    #[deprecated(since = "0.2.0", note = "renamed `trip_counts`")]
    pub fn guard_trips(&self, window: Window) -> Vec<(&'static str, u64)> {
        self.trip_counts(window)
    }
}
