//! SLA rules, violations, presets from the seeds, and trips.
//!
//! A rule puts a warning and/or critical threshold on one metric of one stage over one window:
//! a percentile, the max, the mean, or the deadline-miss rate. The aggregator evaluates every rule
//! after each cycle; violations are available as data ([`crate::check_sla_violations`]), through
//! a callback (new or changed violations only), and as latency breakers that hot code can test in
//! about a nanosecond ([`crate::Stage::latency_breaker`]).
//!
//! Trips are counters the application bumps itself (`record_trip("vol_hard")`) and that the
//! latency breakers bump when they trip; they are kept per reason, per window and cumulatively.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{ConfigError, StageError};
use crate::stage::{Labels, Stage};
pub use crate::stats::{Metric, Severity, Value, Violation};
use crate::stats::{StageStats, Window};

/// One SLA rule: thresholds on one metric of one stage over one window.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaRule {
    /// The stage's name.
    pub stage: &'static str,
    /// The stage's static labels.
    pub labels: Labels,
    /// The window the metric is read over.
    pub window: Window,
    /// What is compared.
    pub metric: Metric,
    /// Above this: a warning.
    pub warning: Option<Value>,
    /// Above this: critical (and the latency breaker trips, unless turned off).
    pub critical: Option<Value>,
    /// Whether a critical violation trips the stage's latency breaker (default true).
    pub trips_guard: bool,
    /// Spans (completed or missed) the window must hold before the rule judges it (default 1):
    /// a p99 of ten spans is their max.
    pub min_count: u64,
}

pub use crate::stats::CLEAR_BELOW;

impl SlaRule {
    /// A rule with no thresholds yet; add them with [`SlaRule::with_warning`] and
    /// [`SlaRule::with_critical`].
    pub fn new(stage: &'static str, window: Window, metric: Metric) -> Self {
        Self {
            stage,
            labels: &[],
            window,
            metric,
            warning: None,
            critical: None,
            trips_guard: true,
            min_count: 1,
        }
    }

    /// Judges the window only once it holds at least `spans` spans.
    pub fn with_min_count(mut self, spans: u64) -> Self {
        self.min_count = spans;
        self
    }

    /// Sets the warning threshold (a `Duration`, or an `f64` ratio for the miss rate).
    pub fn with_warning(mut self, threshold: impl Into<Value>) -> Self {
        self.warning = Some(threshold.into());
        self
    }

    /// Sets the critical threshold.
    pub fn with_critical(mut self, threshold: impl Into<Value>) -> Self {
        self.critical = Some(threshold.into());
        self
    }

    /// Renamed [`with_warning`](Self::with_warning): every setter of a rule is `with_*`.
    #[deprecated(since = "0.2.0", note = "renamed `with_warning`")]
    pub fn warning(self, threshold: impl Into<Value>) -> Self {
        self.with_warning(threshold)
    }

    /// Renamed [`with_critical`](Self::with_critical): every setter of a rule is `with_*`.
    #[deprecated(since = "0.2.0", note = "renamed `with_critical`")]
    pub fn critical(self, threshold: impl Into<Value>) -> Self {
        self.with_critical(threshold)
    }

    /// Applies the rule to the stage with these static labels.
    pub fn with_labels(mut self, labels: Labels) -> Self {
        self.labels = labels;
        self
    }

    /// Whether a critical violation trips the stage's latency breaker.
    pub fn with_breaker(mut self, trips_guard: bool) -> Self {
        self.trips_guard = trips_guard;
        self
    }

    /// Renamed [`with_breaker`](Self::with_breaker), after [`crate::LatencyBreaker`].
    #[deprecated(since = "0.2.0", note = "renamed `with_breaker`")]
    pub fn with_guard(self, trips_guard: bool) -> Self {
        self.with_breaker(trips_guard)
    }

    pub(crate) fn validate(&self, kept: &[Window]) -> Result<(), ConfigError> {
        let bad = |reason| {
            Err(ConfigError::Threshold {
                stage: self.stage.to_owned(),
                reason,
            })
        };
        if let Metric::Quantile(q) = self.metric
            && !(0.0..=1.0).contains(&q)
        {
            return Err(ConfigError::Quantile { quantile: q });
        }
        if let Metric::Quantile(q) = self.metric
            && !crate::stats::QUANTILES
                .iter()
                .chain(&[0.0, 1.0])
                .any(|k| (k - q).abs() < 1e-12)
        {
            return bad("only the kept quantiles can be judged: 0, 0.5, 0.9, 0.95, 0.99, 0.999, 1");
        }
        if self.warning.is_none() && self.critical.is_none() {
            return bad("the rule has no threshold: add .with_warning(..) or .with_critical(..)");
        }
        for t in [self.warning, self.critical].into_iter().flatten() {
            match (self.metric.is_latency(), t) {
                (true, Value::Ratio(_)) => {
                    return bad("a latency metric needs Duration thresholds");
                }
                (false, Value::Latency(_)) => {
                    return bad("the deadline-miss rate needs ratio thresholds in [0, 1]");
                }
                (false, Value::Ratio(r)) if !(0.0..=1.0).contains(&r) => {
                    return bad("a ratio threshold must be in [0, 1] (0.02 is 2 %)");
                }
                _ => {}
            }
        }
        if let (Some(w), Some(c)) = (self.warning, self.critical)
            && w.as_f64() > c.as_f64()
        {
            return bad("the warning threshold is above the critical one: swap them");
        }
        if self.window != Window::Cumulative && !kept.contains(&self.window) {
            return Err(ConfigError::UnknownWindow {
                stage: self.stage.to_owned(),
                window: self.window,
            });
        }
        Ok(())
    }

    /// Whether the rule's stage name and labels are ones a stage could have.
    pub(crate) fn check_names(&self) -> Result<(), StageError> {
        crate::stage::valid_name(self.stage)?;
        crate::stage::valid_labels(self.labels)
    }

    /// The stage this rule judges if it exists, without registering one: a family's total (no
    /// labels) or series, or a registered stage. The aggregator asks again each cycle until it
    /// exists, so a rule may name a family declared after the collector started (registering a
    /// plain stage of that name first would refuse the family).
    pub(crate) fn find(&self) -> Option<Stage> {
        match crate::family::named(self.stage) {
            Some(family) => family.stage_for_rule(self.labels),
            None => Stage::lookup(self.stage, self.labels),
        }
    }

    fn observe(&self, s: &StageStats) -> Option<Value> {
        if s.count.max(s.deadline_misses) < self.min_count.max(1) {
            return None;
        }
        Some(match self.metric {
            Metric::DeadlineMissRate => {
                if s.count == 0 && s.deadline_misses == 0 {
                    return None;
                }
                Value::Ratio(s.deadline_miss_rate())
            }
            _ if s.count == 0 => return None,
            Metric::Max => Value::Latency(s.max),
            Metric::Mean => Value::Latency(s.mean),
            Metric::Quantile(q) => Value::Latency(s.quantile(q)?),
        })
    }

    /// The violation `stats` makes of this rule, if any.
    pub fn judge(&self, stats: &StageStats) -> Option<Violation> {
        let observed = self.observe(stats)?;
        let (severity, threshold) = [
            (Severity::Critical, self.critical),
            (Severity::Warning, self.warning),
        ]
        .into_iter()
        .find_map(|(sev, t)| {
            t.filter(|t| observed.as_f64() > t.as_f64())
                .map(|t| (sev, t))
        })?;
        Some(self.violation(severity, threshold, observed, false))
    }

    fn violation(
        &self,
        severity: Severity,
        threshold: Value,
        observed: Value,
        cleared: bool,
    ) -> Violation {
        Violation {
            stage: self.stage,
            labels: self.labels,
            window: self.window,
            metric: self.metric,
            severity,
            threshold,
            observed,
            cleared,
        }
    }

    /// The event that a violation of `severity` ended, judged on `stats` (`None`: the window
    /// has no spans left).
    pub(crate) fn cleared(&self, severity: Severity, stats: Option<&StageStats>) -> Violation {
        let threshold = self.threshold(severity).unwrap_or(Value::Ratio(0.0));
        let zero = match threshold {
            Value::Latency(_) => Value::Latency(Duration::ZERO),
            Value::Ratio(_) => Value::Ratio(0.0),
        };
        let observed = stats.and_then(|s| self.observe(s)).unwrap_or(zero);
        self.violation(severity, threshold, observed, true)
    }

    fn threshold(&self, severity: Severity) -> Option<Value> {
        match severity {
            Severity::Warning => self.warning,
            Severity::Critical => self.critical,
        }
    }

    /// The severity in force after this evaluation, given the one in force before: a drop in
    /// severity takes effect only once the observed value is below [`CLEAR_BELOW`] of the
    /// threshold being left.
    pub(crate) fn settle(
        &self,
        stats: Option<&StageStats>,
        previous: Option<Severity>,
    ) -> Option<Severity> {
        let now = stats.and_then(|s| self.judge(s)).map(|v| v.severity);
        match previous {
            Some(prev) if now < Some(prev) => {
                let observed = stats.and_then(|s| self.observe(s));
                let holding = observed
                    .zip(self.threshold(prev))
                    .is_some_and(|(o, t)| o.as_f64() > t.as_f64() * CLEAR_BELOW);
                if holding { Some(prev) } else { now }
            }
            _ => now,
        }
    }
}

/// A set of rules and deadlines to install together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlaPreset {
    /// The rules.
    pub rules: Vec<SlaRule>,
    /// Stage deadlines.
    pub deadlines: Vec<(&'static str, Duration)>,
}

/// The seeds' SLA defaults, ready to install with [`crate::CollectorBuilder::with_sla_preset`].
pub mod presets {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The market-making canary's tick budget: `tick_total` has a 200 ms deadline; over the last
    /// minute P95 above 200 ms or P99 above 250 ms is critical (warnings at 80 %: 160 / 200 ms),
    /// and more than 2 % of ticks missing the deadline is critical (1 % a warning).
    pub fn market_maker() -> SlaPreset {
        SlaPreset {
            deadlines: vec![("tick_total", ms(200))],
            rules: vec![
                SlaRule::new("tick_total", Window::S60, Metric::P95)
                    .with_warning(ms(160))
                    .with_critical(ms(200)),
                SlaRule::new("tick_total", Window::S60, Metric::P99)
                    .with_warning(ms(200))
                    .with_critical(ms(250)),
                SlaRule::new("tick_total", Window::S60, Metric::DeadlineMissRate)
                    .with_warning(0.01)
                    .with_critical(0.02),
            ],
        }
    }

    /// The event-pipeline defaults: P95 / P99 ceilings for candle processing (50 / 100 ms), signal
    /// generation (10 / 20 ms), order placement (20 / 50 ms) and event-bus publish (5 / 10 ms),
    /// over the last minute, as critical thresholds with warnings at 80 %.
    pub fn event_pipeline() -> SlaPreset {
        let mut rules = Vec::new();
        for (stage, p95, p99) in [
            ("candle_processing", 50, 100),
            ("signal_generation", 10, 20),
            ("order_placement", 20, 50),
            ("event_bus_publish", 5, 10),
        ] {
            rules.push(
                SlaRule::new(stage, Window::S60, Metric::P95)
                    .with_warning(ms(p95 * 4 / 5))
                    .with_critical(ms(p95)),
            );
            rules.push(
                SlaRule::new(stage, Window::S60, Metric::P99)
                    .with_warning(ms(p99 * 4 / 5))
                    .with_critical(ms(p99)),
            );
        }
        SlaPreset {
            rules,
            deadlines: Vec::new(),
        }
    }
}

pub use crate::limits::MAX_TRIP_REASONS;

pub(crate) struct ReasonInfo {
    pub(crate) name: &'static str,
    pub(crate) trips: AtomicU64,
}

static REASONS: [OnceLock<&'static ReasonInfo>; MAX_TRIP_REASONS] =
    [const { OnceLock::new() }; MAX_TRIP_REASONS];
static REASON_COUNT: AtomicUsize = AtomicUsize::new(0);
static REASON_LOCK: Mutex<()> = Mutex::new(());

/// A trip reason such as `vol_hard`, resolved once.
#[derive(Clone, Copy)]
pub struct TripReason(&'static ReasonInfo);

impl fmt::Debug for TripReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TripReason({})", self.0.name)
    }
}

impl TripReason {
    /// Registers (or finds) the reason `name` (same rules as a stage name).
    pub fn new(name: &'static str) -> Result<TripReason, StageError> {
        if let Some(r) = find_reason(name) {
            return Ok(r);
        }
        crate::stage::valid_name(name)?;
        if REASON_COUNT.load(Ordering::Acquire) >= MAX_TRIP_REASONS {
            return Err(StageError::TooManyReasons); // without the lock: this may be every call
        }
        let _lock = REASON_LOCK.lock();
        if let Some(r) = find_reason(name) {
            return Ok(r);
        }
        let n = REASON_COUNT.load(Ordering::Relaxed);
        if n >= MAX_TRIP_REASONS {
            return Err(StageError::TooManyReasons);
        }
        // Bounded by MAX_TRIP_REASONS: reasons live for the process.
        let info: &'static ReasonInfo = Box::leak(Box::new(ReasonInfo {
            name,
            trips: AtomicU64::new(0),
        }));
        let _ = REASONS[n].set(info);
        // Release: a reader that sees the count finds the slot filled.
        REASON_COUNT.store(n + 1, Ordering::Release);
        Ok(TripReason(info))
    }

    /// Counts one trip. One relaxed atomic add; no lock, no allocation.
    #[inline]
    pub fn trip(self) {
        if !crate::COMPILED_IN {
            return;
        }
        self.0.trips.fetch_add(1, Ordering::Relaxed);
    }

    /// The reason's name.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Trips since the process started.
    pub fn trips(self) -> u64 {
        self.0.trips.load(Ordering::Relaxed)
    }
}

fn find_reason(name: &str) -> Option<TripReason> {
    let n = REASON_COUNT.load(Ordering::Acquire);
    REASONS[..n]
        .iter()
        .filter_map(|slot| slot.get())
        .find(|r| std::ptr::eq(r.name, name) || r.name == name)
        .map(|r| TripReason(r))
}

pub(crate) fn reasons() -> impl Iterator<Item = (usize, &'static ReasonInfo)> {
    let n = REASON_COUNT.load(Ordering::Acquire);
    REASONS[..n]
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.get().map(|r| (i, *r)))
}

/// Counts one trip for `reason` (e.g. `"vol_hard"`), registering the reason on first use.
/// Lock-free after the first call with that reason. Returns false when the reason is not a valid
/// name or [`MAX_TRIP_REASONS`] reasons exist already: the trip is then counted in
/// [`crate::Health::rejected_trips`] instead.
#[inline]
pub fn record_trip(reason: &'static str) -> bool {
    if !crate::COMPILED_IN {
        return false;
    }
    match find_reason(reason).map_or_else(|| TripReason::new(reason).ok(), Some) {
        Some(r) => {
            r.trip();
            true
        }
        None => {
            REJECTED_TRIPS.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Renamed [`record_trip`]: "guard" names the RAII values ([`crate::SpanGuard`]).
#[deprecated(since = "0.2.0", note = "renamed `record_trip`")]
#[inline]
pub fn guard_trip(reason: &'static str) -> bool {
    record_trip(reason)
}

/// Renamed [`TripReason`].
#[deprecated(since = "0.2.0", note = "renamed `TripReason`")]
pub type GuardReason = TripReason;

/// Renamed [`MAX_TRIP_REASONS`].
#[deprecated(since = "0.2.0", note = "renamed `MAX_TRIP_REASONS`")]
pub const MAX_GUARD_REASONS: usize = MAX_TRIP_REASONS;

/// Trips refused by [`record_trip`] since the process started.
pub(crate) static REJECTED_TRIPS: AtomicU64 = AtomicU64::new(0);

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;

    fn stats(count: u64, p95_ms: u64, misses: u64) -> StageStats {
        let d = Duration::from_millis(p95_ms);
        StageStats {
            stage: "tick_total",
            labels: &[],
            window: Window::S60,
            distribution: crate::Distribution {
                count,
                min: d,
                max: d,
                mean: d,
                stddev: Duration::ZERO,
                p50: d,
                p90: d,
                p95: d,
                p99: d,
                p999: d,
                saturated: 0,
            },
            dropped: 0,
            sampled_out: 0,
            calls: count,
            deadline_misses: misses,
            cancelled: 0,
            in_flight: 0,
            deadline: None,
            unwound: 0,
            in_rings: 0,
            produced: count,
            corrected: None,
        }
    }

    #[test]
    fn judges_warning_and_critical() {
        let rule = SlaRule::new("tick_total", Window::S60, Metric::P95)
            .with_warning(Duration::from_millis(160))
            .with_critical(Duration::from_millis(200));
        assert_eq!(rule.judge(&stats(10, 150, 0)), None);
        assert_eq!(
            rule.judge(&stats(10, 160, 0)),
            None,
            "at the threshold is not above it"
        );
        assert_eq!(
            rule.judge(&stats(10, 170, 0)).unwrap().severity,
            Severity::Warning
        );
        let v = rule.judge(&stats(10, 201, 0)).unwrap();
        assert_eq!(v.severity, Severity::Critical);
        assert_eq!(v.observed, Value::Latency(Duration::from_millis(201)));
        assert_eq!(v.threshold, Value::Latency(Duration::from_millis(200)));
        assert_eq!(rule.judge(&stats(0, 999, 0)), None, "no data, no verdict");
    }

    #[test]
    fn durations_display_to_three_significant_digits() {
        let d = |ns| crate::fmt::duration(Duration::from_nanos(ns));
        assert_eq!(d(4_108_371), "4.11ms");
        assert_eq!(d(250_000), "250µs");
        assert_eq!(d(1_500_000_000), "1.50s");
        assert_eq!(d(999), "999ns");
        assert_eq!(d(12_345), "12.3µs");
        let v = SlaRule::new("tick_total", Window::S60, Metric::P95)
            .with_critical(Duration::from_millis(200))
            .judge(&stats(10, 201, 0))
            .unwrap();
        assert_eq!(
            v.to_string(),
            "critical tick_total p95 over 60s: 201ms > 200ms"
        );
    }

    #[test]
    fn settled_severity_leaves_a_level_only_well_below_its_threshold() {
        let rule = SlaRule::new("tick_total", Window::S60, Metric::P95)
            .with_warning(Duration::from_millis(100))
            .with_critical(Duration::from_millis(200));
        let crit = Some(Severity::Critical);
        assert_eq!(rule.settle(Some(&stats(10, 201, 0)), None), crit);
        assert_eq!(
            rule.settle(Some(&stats(10, 190, 0)), crit),
            crit,
            "above 90 % of 200 ms: holds"
        );
        assert_eq!(
            rule.settle(Some(&stats(10, 170, 0)), crit),
            Some(Severity::Warning)
        );
        assert_eq!(
            rule.settle(Some(&stats(10, 95, 0)), Some(Severity::Warning)),
            Some(Severity::Warning)
        );
        assert_eq!(
            rule.settle(Some(&stats(10, 85, 0)), Some(Severity::Warning)),
            None
        );
        assert_eq!(rule.settle(None, crit), None, "no data clears");
        let picky = rule.clone().with_min_count(20);
        assert_eq!(
            picky.settle(Some(&stats(10, 500, 0)), None),
            None,
            "too few spans to judge"
        );
    }

    #[test]
    fn miss_rate_counts_stuck_spans() {
        let rule =
            SlaRule::new("tick_total", Window::S60, Metric::DeadlineMissRate).with_critical(0.02);
        assert_eq!(rule.judge(&stats(100, 1, 2)), None);
        assert_eq!(
            rule.judge(&stats(100, 1, 3)).unwrap().severity,
            Severity::Critical
        );
        // Nothing completed, one span stuck past its deadline: rate 100 %.
        assert_eq!(
            rule.judge(&stats(0, 0, 1)).unwrap().observed,
            Value::Ratio(1.0)
        );
    }

    #[test]
    fn bad_rules_say_what_to_change() {
        let kept = [Window::S1, Window::S60];
        let no_threshold = SlaRule::new("a", Window::S60, Metric::P99);
        assert!(matches!(
            no_threshold.validate(&kept),
            Err(ConfigError::Threshold { .. })
        ));
        let nan = SlaRule::new("a", Window::S60, Metric::Quantile(f64::NAN))
            .with_critical(Duration::from_millis(1));
        assert!(matches!(
            nan.validate(&kept),
            Err(ConfigError::Quantile { .. })
        ));
        let odd_q = SlaRule::new("a", Window::S60, Metric::Quantile(0.42))
            .with_critical(Duration::from_millis(1));
        assert!(matches!(
            odd_q.validate(&kept),
            Err(ConfigError::Threshold { .. })
        ));
        let swapped = SlaRule::new("a", Window::S60, Metric::P99)
            .with_warning(Duration::from_millis(5))
            .with_critical(Duration::from_millis(1));
        assert!(matches!(
            swapped.validate(&kept),
            Err(ConfigError::Threshold { .. })
        ));
        let wrong_unit = SlaRule::new("a", Window::S60, Metric::DeadlineMissRate)
            .with_critical(Duration::from_millis(1));
        assert!(matches!(
            wrong_unit.validate(&kept),
            Err(ConfigError::Threshold { .. })
        ));
        let big_ratio = SlaRule::new("a", Window::S60, Metric::DeadlineMissRate).with_critical(2.0);
        assert!(matches!(
            big_ratio.validate(&kept),
            Err(ConfigError::Threshold { .. })
        ));
        let window =
            SlaRule::new("a", Window::S5, Metric::Max).with_critical(Duration::from_millis(1));
        assert!(matches!(
            window.validate(&kept),
            Err(ConfigError::UnknownWindow { .. })
        ));
        for preset in [presets::market_maker(), presets::event_pipeline()] {
            for rule in &preset.rules {
                rule.validate(&kept).unwrap();
            }
        }
    }

    #[test]
    fn guard_trips_count_by_reason() {
        let before = TripReason::new("unit_vol_hard").unwrap().trips();
        assert!(record_trip("unit_vol_hard"));
        assert!(record_trip("unit_vol_hard"));
        assert_eq!(
            TripReason::new("unit_vol_hard").unwrap().trips(),
            before + 2
        );
        assert!(!record_trip("not a reason"));
    }
}
