//! Durations as people read them: the one formatter behind every figure laptime prints for a
//! person (SLA violations and [`Value`](crate::Value)'s `Display`, reports, the gate's tables,
//! the demo).
//!
//! Other duration grammars are not this one on purpose: the configuration file's and
//! `#[measure(deadline = …)]`'s durations are exact input (`1500us`), and `laptime rules` writes
//! PromQL durations (`5m`), rule-name tokens (`1600us`) and thresholds exactly as configured.

use std::time::Duration;

/// `d` to three significant digits, in the largest unit (ns, µs, ms, s) that keeps the number at
/// or above 1.
///
/// ```
/// use std::time::Duration;
/// use laptime::fmt::duration;
///
/// assert_eq!(duration(Duration::from_nanos(4_108_371)), "4.11ms");
/// assert_eq!(duration(Duration::from_micros(250)), "250µs");
/// assert_eq!(duration(Duration::from_millis(1_500)), "1.50s");
/// assert_eq!(duration(Duration::from_nanos(50)), "50.0ns");
/// ```
pub fn duration(d: Duration) -> String {
    let (v, unit, _) = scaled(d.as_nanos() as f64);
    // The thresholds are where rounding to this many decimals would carry into a fourth digit.
    let decimals = if v >= 99.95 {
        0
    } else if v >= 9.995 {
        1
    } else {
        2
    };
    format!("{v:.decimals$}{unit}")
}

/// `ns` in the largest unit that keeps it at or above 1, and how many decimals of that unit reach
/// the nanosecond.
pub(crate) fn scaled(ns: f64) -> (f64, &'static str, usize) {
    match ns {
        n if n < 1e3 => (n, "ns", 0),
        n if n < 1e6 => (n / 1e3, "µs", 3),
        n if n < 1e9 => (n / 1e6, "ms", 6),
        n => (n / 1e9, "s", 9),
    }
}
