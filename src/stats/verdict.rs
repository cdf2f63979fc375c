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
    /// Above the critical threshold: the stage's latency guard trips.
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

/// A duration to three significant digits: `4.11ms`, `250µs`, `1.50s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    let (v, unit) = match ns {
        n if n < 1e3 => (n, "ns"),
        n if n < 1e6 => (n / 1e3, "µs"),
        n if n < 1e9 => (n / 1e6, "ms"),
        n => (n / 1e9, "s"),
    };
    let decimals = if v >= 99.95 {
        0
    } else if v >= 9.995 {
        1
    } else {
        2
    };
    format!("{v:.decimals$}{unit}")
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Latency(d) => f.write_str(&fmt_duration(*d)),
            Value::Ratio(r) => write!(f, "{:.2}%", r * 100.0),
        }
    }
}

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
    /// The threshold that was exceeded.
    pub threshold: Value,
    /// What was observed.
    pub observed: Value,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} over {}: {} > {}",
            self.severity, self.stage, self.metric, self.window, self.observed, self.threshold
        )
    }
}
