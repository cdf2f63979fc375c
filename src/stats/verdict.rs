//! Verdicts on statistics: the metric a rule looks at, a threshold or observed value, a
//! severity, and the violation that names them: plain data beside the stats they describe
//! (`crate::sla` judges; it depends on this, never the other way round).

use std::fmt;
use std::time::Duration;

use super::Window;
use crate::stage::Labels;

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A percentile, as a quantile in [0, 1] (one of 0.5, 0.9, 0.95, 0.99, 0.999).
    Quantile(f64),
    /// The longest span.
    Max,
    /// The mean span.
    Mean,
    /// Deadline misses per completed span, in [0, 1].
    DeadlineMissRate,
}

impl Metric {
    /// The median.
    pub const P50: Metric = Metric::Quantile(0.5);
    /// The 90th percentile.
    pub const P90: Metric = Metric::Quantile(0.9);
    /// The 95th percentile.
    pub const P95: Metric = Metric::Quantile(0.95);
    /// The 99th percentile.
    pub const P99: Metric = Metric::Quantile(0.99);
    /// The 99.9th percentile.
    pub const P999: Metric = Metric::Quantile(0.999);

    pub(crate) fn is_latency(self) -> bool {
        !matches!(self, Metric::DeadlineMissRate)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Quantile(q) => write!(f, "p{}", q * 100.0),
            Metric::Max => f.write_str("max"),
            Metric::Mean => f.write_str("mean"),
            Metric::DeadlineMissRate => f.write_str("deadline_miss_rate"),
        }
    }
}

/// How bad a violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Above the warning threshold.
    Warning,
    /// Above the critical threshold: the stage's latency breaker trips.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// A threshold or an observed value.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub enum Value {
    /// A duration (percentiles, max, mean).
    Latency(Duration),
    /// A fraction in [0, 1] (deadline-miss rate).
    Ratio(f64),
}

impl Value {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Value::Latency(d) => d.as_nanos() as f64,
            Value::Ratio(r) => r,
        }
    }
}

impl From<Duration> for Value {
    fn from(d: Duration) -> Self {
        Value::Latency(d)
    }
}

impl From<f64> for Value {
    fn from(r: f64) -> Self {
        Value::Ratio(r)
    }
}

impl Value {
    /// `self` and `other` as text that tells them apart: three significant digits
    /// ([`crate::fmt::duration`]) unless they would read the same, then in the unit of the larger with
    /// as many decimals as it takes (down to the nanosecond, or 10⁻⁶ of a percent).
    pub(crate) fn fmt_apart(self, other: Value) -> (String, String) {
        let (a, b) = (self.to_string(), other.to_string());
        if a != b || self == other {
            return (a, b);
        }
        match (self, other) {
            (Value::Latency(x), Value::Latency(y)) => {
                let (_, unit, most) = crate::fmt::scaled(x.max(y).as_nanos() as f64);
                let scale = 10f64.powi(most as i32);
                let (x, y) = (x.as_nanos() as f64 / scale, y.as_nanos() as f64 / scale);
                (3..=most)
                    .map(|d| (format!("{x:.d$}{unit}"), format!("{y:.d$}{unit}")))
                    .find(|(a, b)| a != b)
                    .unwrap_or((a, b))
            }
            (Value::Ratio(x), Value::Ratio(y)) => (3..=6)
                .map(|d| (format!("{:.d$}%", x * 100.0), format!("{:.d$}%", y * 100.0)))
                .find(|(a, b)| a != b)
                .unwrap_or((a, b)),
            _ => (a, b),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Latency(d) => f.write_str(&crate::fmt::duration(*d)),
            Value::Ratio(r) => write!(f, "{:.2}%", r * 100.0),
        }
    }
}

/// A violation in force is left (for callbacks and latency breakers) only once the observed value
/// falls below this fraction of the threshold, so a metric hovering at its threshold does not
/// announce or trip again at every cycle.
pub const CLEAR_BELOW: f64 = 0.9;

/// A rule broken by the latest snapshot.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Violation {
    /// The stage.
    pub stage: &'static str,
    /// The stage's labels.
    pub labels: Labels,
    /// The window.
    pub window: Window,
    /// The metric.
    pub metric: Metric,
    /// Warning or critical.
    pub severity: Severity,
    /// The threshold that was exceeded (for a cleared violation: the one that had been).
    pub threshold: Value,
    /// What was observed: for a percentile, the top of the histogram bucket holding it (the
    /// figure `get_stats` reports, within the histogram's precision above the exact value). For
    /// a cleared violation, the value that cleared it, or zero when the window has no spans left.
    pub observed: Value,
    /// Set on the event that a violation ended: its settled severity fell to none (the observed
    /// value went below [`crate::CLEAR_BELOW`] of the threshold, or the window emptied). Only
    /// the SLA callback receives cleared violations; the snapshot lists the active ones.
    pub cleared: bool,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (observed, threshold) = self.observed.fmt_apart(self.threshold);
        let (stage, metric, window) = (self.stage, self.metric, self.window);
        if self.cleared {
            return write!(
                f,
                "{} cleared: {stage} {metric} over {window}: {observed}, below {}% of {threshold}",
                self.severity,
                CLEAR_BELOW * 100.0,
            );
        }
        write!(
            f,
            "{} {stage} {metric} over {window}: {observed} > {threshold}",
            self.severity
        )?;
        if matches!(self.metric, Metric::Quantile(_)) && observed.len() > 6 {
            // The precise digits above are the only sign the two differ: say why.
            f.write_str(" (a percentile reads as the top of its histogram bucket)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(observed: Value, threshold: Value, metric: Metric) -> Violation {
        Violation {
            stage: "send",
            labels: &[],
            window: Window::S1,
            metric,
            severity: Severity::Warning,
            threshold,
            observed,
            cleared: false,
        }
    }

    #[test]
    fn a_percentile_just_above_its_threshold_shows_the_digits_that_differ() {
        let ms = Duration::from_millis(1);
        let v = violation(
            Value::Latency(Duration::from_nanos(1_000_499)),
            Value::Latency(ms),
            Metric::P95,
        );
        assert_eq!(
            v.to_string(),
            "warning send p95 over 1s: 1.0005ms > 1.0000ms (a percentile reads as the top \
             of its histogram bucket)"
        );
        let far = violation(
            Value::Latency(Duration::from_micros(1500)),
            Value::Latency(ms),
            Metric::P95,
        );
        assert_eq!(far.to_string(), "warning send p95 over 1s: 1.50ms > 1.00ms");
        let ratio = violation(
            Value::Ratio(0.020001),
            Value::Ratio(0.02),
            Metric::DeadlineMissRate,
        );
        assert_eq!(
            ratio.to_string(),
            "warning send deadline_miss_rate over 1s: 2.0001% > 2.0000%"
        );
    }

    #[test]
    fn a_cleared_violation_says_so() {
        let mut v = violation(
            Value::Latency(Duration::from_micros(800)),
            Value::Latency(Duration::from_millis(1)),
            Metric::P95,
        );
        v.cleared = true;
        assert_eq!(
            v.to_string(),
            "warning cleared: send p95 over 1s: 800µs, below 90% of 1.00ms"
        );
    }
}
