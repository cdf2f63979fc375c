//! The exact references a run checks the library against: call counters the producers keep
//! themselves, and a value recorder (an `hdrhistogram` with the same bucket layout plus exact
//! min, max, sum) whose figures the library's must equal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use laptime::StageStats;

use crate::report::{Report, ns};

/// The library's default histogram: 1 ns to 1 h at 3 significant digits.
pub const HIGHEST_NS: u64 = 3_600_000_000_000;
/// Significant digits of the library's default histogram.
pub const DIGITS: u8 = 3;

/// The quantiles every `StageStats` carries, in per-mille, with their field names.
pub const QUANTILES: [(u64, &str); 5] = [
    (500, "p50"),
    (900, "p90"),
    (950, "p95"),
    (990, "p99"),
    (999, "p999"),
];

/// ⌈per_mille · n / 1000⌉, at least 1: the nearest rank, in integers (no float noise).
pub fn nearest_rank(per_mille: u64, n: u64) -> u64 {
    (per_mille * n).div_ceil(1000).max(1)
}

/// Every call the library saw for a stage, by its cumulative statistics: recorded, dropped,
/// sampled out, cancelled, or still waiting in a ring.
pub fn library_calls(s: &StageStats) -> u64 {
    s.count + s.dropped + s.sampled_out + s.cancelled + s.in_rings
}

/// The per-stage accounting identities the library must keep on its own: `produced` is the sum
/// of what can happen to a record, `calls` adds the sampled-out calls.
pub fn stage_identity(s: &StageStats) -> Result<(), String> {
    let parts = s.count + s.dropped + s.cancelled + s.in_rings;
    if s.produced != parts {
        return Err(format!(
            "{}: produced {} != count {} + dropped {} + cancelled {} + in_rings {} = {parts}",
            s.stage, s.produced, s.count, s.dropped, s.cancelled, s.in_rings
        ));
    }
    if s.calls != s.produced + s.sampled_out {
        return Err(format!(
            "{}: calls {} != produced {} + sampled_out {}",
            s.stage, s.calls, s.produced, s.sampled_out
        ));
    }
    Ok(())
}

/// A producer's own count of its calls to one stage. `begun` is bumped before the call, `done`
/// after it returns: a reader that loads `done` before a flush and `begun` after it brackets what
/// the flushed snapshot can hold.
#[derive(Debug, Default)]
pub struct CallCounter {
    begun: AtomicU64,
    done: AtomicU64,
}

impl CallCounter {
    /// Runs `call`, counting it.
    #[inline]
    pub fn count<R>(&self, call: impl FnOnce() -> R) -> R {
        // Single writer: a load and a store, not a read-modify-write. Release so a reader that
        // acquires the new value also sees the ring push made before it (for `done`).
        let begun = self.begun.load(Ordering::Relaxed);
        self.begun.store(begun + 1, Ordering::Release);
        let r = call();
        let done = self.done.load(Ordering::Relaxed);
        self.done.store(done + 1, Ordering::Release);
        r
    }

    /// Calls that have returned.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    /// Calls that have started.
    pub fn begun(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }
}

/// Every value recorded, as the library should have seen it.
#[derive(Debug, Clone)]
pub struct Values {
    hist: Histogram<u64>,
    min: u64,
    max: u64,
    sum: u128,
    sum_sq: u128,
}

impl Default for Values {
    fn default() -> Self {
        Self::new()
    }
}

impl Values {
    /// An empty recorder with the library's default layout.
    pub fn new() -> Self {
        Self {
            // Bounds are constants the crate validates: 1 ≤ 1 h/2, 3 digits.
            hist: Histogram::new_with_bounds(1, HIGHEST_NS, DIGITS)
                .expect("1 ns to 1 h at 3 digits is a valid layout"),
            min: u64::MAX,
            max: 0,
            sum: 0,
            sum_sq: 0,
        }
    }

    /// Records one value (at most [`HIGHEST_NS`]: the soak's values are far below it).
    pub fn record(&mut self, d: Duration) {
        let v = ns(d).clamp(1, HIGHEST_NS);
        self.hist.record(v).expect("value within the bounds");
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
        self.sum_sq += u128::from(v) * u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Values) {
        self.hist.add(&other.hist).expect("same layout");
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The integer floor of the exact mean.
    pub fn mean(&self) -> u64 {
        u64::try_from(self.sum / u128::from(self.count().max(1))).unwrap_or(u64::MAX)
    }

    /// The exact population standard deviation, `sqrt(n·Σx² − (Σx)²) / n`.
    pub fn stddev(&self) -> f64 {
        let n = u128::from(self.count());
        if n == 0 {
            return 0.0;
        }
        let spread = (n * self.sum_sq).saturating_sub(self.sum * self.sum);
        (spread as f64).sqrt() / n as f64
    }

    /// The percentile the library must report for `per_mille`: the highest value equivalent to
    /// the value of nearest rank ⌈q·n⌉ (its bucket's top), clamped to the exact `[min, max]`.
    pub fn expected(&self, per_mille: u64) -> Option<u64> {
        let rank = nearest_rank(per_mille, self.count());
        let mut seen = 0;
        for v in self.hist.iter_recorded() {
            seen += v.count_at_value();
            if seen >= rank {
                let top = self.hist.highest_equivalent(v.value_iterated_to());
                return Some(top.clamp(self.min, self.max));
            }
        }
        None
    }

    /// Checks the library's statistics of `stage` against this reference, one check per figure:
    /// count, min, max and mean exactly, stddev within 1 ns, each percentile exactly.
    pub fn check(&self, report: &mut Report, stage: &str, got: Option<&StageStats>) {
        let Some(s) = got else {
            report.check(
                format!("{stage}.present"),
                false,
                "no cumulative statistics",
                format!("{} values recorded", self.count()),
                None,
            );
            return;
        };
        report.equal(&format!("{stage}.count"), s.count, self.count());
        if self.count() == 0 {
            return;
        }
        report.equal(&format!("{stage}.min_ns"), ns(s.min), self.min);
        report.equal(&format!("{stage}.max_ns"), ns(s.max), self.max);
        report.equal(&format!("{stage}.mean_ns"), ns(s.mean), self.mean());
        let stddev = self.stddev();
        report.check(
            format!("{stage}.stddev_ns"),
            (ns(s.stddev) as f64 - stddev).abs() <= 1.0,
            ns(s.stddev),
            format!("{stddev:.1} ± 1"),
            None,
        );
        for (per_mille, name) in QUANTILES {
            let got = s.quantile(per_mille as f64 / 1000.0).map(ns);
            let expected = self.expected(per_mille);
            report.check(
                format!("{stage}.{name}_ns"),
                got.is_some() && got == expected,
                got,
                format!("== {}", expected.map_or("none".into(), |e| e.to_string())),
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed, spread-out series: squares modulo a prime, 1 ns to ~50 ms, with duplicates.
    fn series(n: u64) -> Vec<u64> {
        (1..=n).map(|i| (i * i * 7919) % 49_999_991 + 1).collect()
    }

    #[test]
    fn expected_percentile_is_the_bucket_top_of_the_sorted_value_at_nearest_rank() {
        for n in [1u64, 2, 3, 10, 999, 1000, 1001, 4096] {
            let mut values = Values::new();
            let mut sorted = series(n);
            for &v in &sorted {
                values.record(Duration::from_nanos(v));
            }
            sorted.sort_unstable();
            let (min, max) = (sorted[0], *sorted.last().unwrap());
            // A second, independent histogram only to name the bucket of the sorted value.
            let h = Histogram::<u64>::new_with_bounds(1, HIGHEST_NS, DIGITS).unwrap();
            for (per_mille, name) in QUANTILES {
                let rank = nearest_rank(per_mille, n);
                let exact = sorted[rank as usize - 1];
                let want = h.highest_equivalent(exact).clamp(min, max);
                assert_eq!(values.expected(per_mille), Some(want), "n={n} {name}");
                // Never below the exact value, and within the bucket width (0.1 %).
                assert!(want >= exact && want - exact <= exact / 1000 + 1);
            }
            assert_eq!(values.count(), n);
            let sum: u128 = sorted.iter().map(|&v| u128::from(v)).sum();
            assert_eq!(u128::from(values.mean()), sum / u128::from(n));
        }
    }

    #[test]
    fn nearest_rank_is_integer_exact() {
        assert_eq!(nearest_rank(999, 1000), 999);
        assert_eq!(nearest_rank(500, 3), 2);
        assert_eq!(nearest_rank(900, 11), 10);
        assert_eq!(nearest_rank(950, 1), 1);
        assert_eq!(nearest_rank(500, 0), 1);
    }

    #[test]
    fn merged_values_equal_one_recorder_of_all() {
        let all = series(3000);
        let (mut one, mut a, mut b) = (Values::new(), Values::new(), Values::new());
        for (i, &v) in all.iter().enumerate() {
            let d = Duration::from_nanos(v);
            one.record(d);
            if i % 3 == 0 { &mut a } else { &mut b }.record(d);
        }
        a.merge(&b);
        for (per_mille, _) in QUANTILES {
            assert_eq!(a.expected(per_mille), one.expected(per_mille));
        }
        assert_eq!((a.min, a.max, a.sum), (one.min, one.max, one.sum));
        // stddev from the exact sums against a direct two-pass computation.
        let n = all.len() as f64;
        let mean = all.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = all.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!((a.stddev() - var.sqrt()).abs() < 1e-3 * var.sqrt());
    }
}
