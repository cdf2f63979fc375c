//! Model: every reported figure against a sorted vector of the values recorded.
//!
//! Percentiles follow the nearest-rank definition: the value of rank ⌈q·n⌉ (at least 1) in sorted
//! order, computed here in integers from per-mille quantiles. A reported percentile is the
//! highest value of the exact value's histogram bucket, so it lies in `[exact, exact + width)`;
//! with 3 significant digits a bucket is 1 ns wide below 2048 ns and at most `exact / 1024` wide
//! above. Values above the highest trackable value (1 h) are recorded as it and counted as
//! saturated. Min, max, mean (floored) and the saturated count are exact; the population standard
//! deviation is within 1 ns (it is rounded to whole nanoseconds).
#![cfg(feature = "test-util")]

mod common;

use std::time::Duration;

use common::clock;
use laptime::{Collector, StageStats, Window, WindowSpec};
use proptest::prelude::*;

/// The collector's default highest trackable value, 1 h.
const HIGHEST: u64 = 3_600_000_000_000;
/// The largest value generated, about 9.8 h: far enough above `HIGHEST` to saturate, small enough
/// that the reference's integer variance cannot overflow (see `exact_stddev`).
const LARGEST: u64 = 1 << 45;
const MAX_VALUES: usize = 2_000;
/// The sliding window checked beside the cumulative one; the mock clock stands still, so it holds
/// every value too.
const WINDOW: Duration = Duration::from_secs(1);
const STAGE: &str = "model_percentiles";

/// Log-uniform over `[1, 2^max_log2)`: every bucket magnitude equally likely.
fn log_uniform(max_log2: u32) -> impl Strategy<Value = u64> {
    (0..max_log2, any::<u64>()).prop_map(|(e, bits)| (1u64 << e) | (bits & ((1u64 << e) - 1)))
}

fn values() -> impl Strategy<Value = Vec<u64>> {
    let n = 1..=MAX_VALUES;
    prop_oneof![
        // One value, anywhere.
        log_uniform(46).prop_map(|v| vec![v]),
        // Below 2048 ns, where buckets are 1 ns wide and percentiles exact.
        prop::collection::vec(0u64..2_048, n.clone()),
        // Heavy duplicates: a few distinct values repeated.
        (
            prop::collection::vec(log_uniform(42), 1..=4),
            prop::collection::vec(any::<prop::sample::Index>(), n.clone())
        )
            .prop_map(|(distinct, picks)| picks.iter().map(|i| *i.get(&distinct)).collect()),
        // Microseconds to hours, every magnitude.
        prop::collection::vec(log_uniform(42), n.clone()),
        // A body plus a rare long tail: where p99 and p99.9 differ.
        prop::collection::vec(
            prop_oneof![98 => 10_000u64..20_000, 2 => 1_000_000u64..100_000_000],
            n.clone()
        ),
        // Around the highest trackable value, some saturated.
        prop::collection::vec(
            prop_oneof![HIGHEST - 5_000_000..=HIGHEST + 5_000_000, HIGHEST..=LARGEST],
            n.clone()
        ),
        // Anything up to ~9.8 h, saturated ones included.
        prop::collection::vec(0..=LARGEST, n),
    ]
}

/// ⌈per_mille · n / 1000⌉, at least 1: nearest rank in integers, no floating point.
fn nearest_rank(per_mille: u64, n: u64) -> u64 {
    (per_mille * n).div_ceil(1000).max(1)
}

/// The population standard deviation from `Σ (n·x − Σx)² / n³`, in exact integers until the last
/// division. With `n ≤ 2000` and `x ≤ 2^45`, `|n·x − Σx| ≤ 2^56` and the sum stays below 2^123.
fn exact_stddev(values: &[u64]) -> f64 {
    let n = values.len() as i128;
    let sum: i128 = values.iter().map(|&v| i128::from(v)).sum();
    let q: u128 = values
        .iter()
        .map(|&v| (n * i128::from(v) - sum).unsigned_abs().pow(2))
        .sum();
    (q as f64 / (n as f64).powi(3)).sqrt()
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

fn check(stats: &StageStats, values: &[u64]) -> Result<(), TestCaseError> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let sum: u128 = sorted.iter().map(|&v| u128::from(v)).sum();
    let window = stats.window;

    prop_assert_eq!(stats.count, n, "{:?} count", window);
    prop_assert_eq!(ns(stats.min), min, "{:?} min", window);
    prop_assert_eq!(ns(stats.max), max, "{:?} max", window);
    prop_assert_eq!(
        ns(stats.mean),
        (sum / u128::from(n)) as u64,
        "{:?} mean",
        window
    );
    let stddev = exact_stddev(&sorted);
    prop_assert!(
        (ns(stats.stddev) as f64 - stddev).abs() <= 1.0,
        "{:?} stddev: reported {:?}, exact {} ns",
        window,
        stats.stddev,
        stddev
    );
    let saturated = sorted.iter().filter(|&&v| v > HIGHEST).count() as u64;
    prop_assert_eq!(stats.saturated, saturated, "{:?} saturated", window);
    prop_assert_eq!((stats.dropped, stats.sampled_out, stats.calls), (0, 0, n));

    let reported = [
        (500, stats.p50),
        (900, stats.p90),
        (950, stats.p95),
        (990, stats.p99),
        (999, stats.p999),
    ];
    for (per_mille, got) in reported {
        let rank = nearest_rank(per_mille, n);
        let q = per_mille as f64 / 1000.0;
        prop_assert_eq!(laptime::rank(q, n), rank, "laptime::rank({}, {})", q, n);
        let exact = sorted[rank as usize - 1];
        // A saturated value is recorded as the highest trackable one, and no percentile leaves
        // [min, max]: the value the histogram can show.
        let expected = exact.min(HIGHEST).clamp(min, max);
        let tolerance = if expected < 2048 { 0 } else { expected / 1024 };
        let got = ns(got);
        prop_assert!(
            got.abs_diff(expected) <= tolerance,
            "{:?} p{}: reported {} ns, exact {} ns (shown as {} ± {})",
            window,
            q * 100.0,
            got,
            exact,
            expected,
            tolerance
        );
        // The bucket's highest equivalent value: never below the exact value.
        prop_assert!(
            got >= expected,
            "{:?} p{}: reported {} ns below the exact {} ns",
            window,
            q * 100.0,
            got,
            expected
        );
        // Flagged exactly when the exact value is past the range: the figure is then a floor.
        prop_assert_eq!(
            stats.is_saturated(q),
            exact > HIGHEST,
            "{:?} p{}: exact {} ns, highest {} ns",
            window,
            q * 100.0,
            exact,
            HIGHEST
        );
    }
    prop_assert!(
        !stats.is_saturated(0.0) && !stats.is_saturated(1.0),
        "min and max are exact"
    );
    Ok(())
}

fn run(values: &[u64]) -> Result<(), TestCaseError> {
    let _serial = common::serial();
    clock();
    let handle = common::install(
        Collector::builder()
            .with_interval(Duration::from_secs(60))
            .with_ring_capacity(MAX_VALUES)
            .with_windows([WindowSpec::new(WINDOW, WINDOW / 4)]),
    );
    for &v in values {
        laptime::record(STAGE, Duration::from_nanos(v));
    }
    prop_assert!(handle.flush());
    for window in [Window::Cumulative, Window::Last(WINDOW)] {
        let stats = handle.get_stats(STAGE, window);
        prop_assert!(stats.is_some(), "{:?}: no statistics", window);
        check(&stats.unwrap(), values)?;
    }
    let saturated = values.iter().filter(|&&v| v > HIGHEST).count() as u64;
    prop_assert_eq!(handle.health().saturated, saturated, "health().saturated");
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config("model_percentiles"))]

    #[test]
    fn percentiles_are_within_a_bucket_of_the_exact_nearest_rank(values in values()) {
        run(&values)?;
    }
}

#[test]
fn edges_of_the_range() {
    for values in [
        vec![0],
        vec![1],
        vec![2_047, 2_048, 2_049],
        vec![HIGHEST],
        vec![HIGHEST + 1],
        vec![HIGHEST + 1, HIGHEST + 1],
        vec![0, LARGEST],
        (1..=1000).collect(),
    ] {
        run(&values).unwrap_or_else(|e| panic!("{values:?}: {e}"));
    }
}

/// Regression: the exact tallies used to overflow `u128` once `n·Σx² ≥ 2^128` (two values of
/// `Duration::MAX`); in a debug build the aggregator then panicked in every cycle and published
/// nothing for any stage, in release the standard deviation wrapped.
#[test]
fn huge_values_leave_the_collector_publishing_and_the_stddev_right() {
    let _serial = common::serial();
    clock();
    let handle = common::install(Collector::builder().with_interval(Duration::from_secs(60)));
    let huge = u64::MAX;
    laptime::record(STAGE, Duration::MAX);
    laptime::record(STAGE, Duration::MAX);
    laptime::record(STAGE, Duration::from_nanos(5));
    laptime::record("model_percentiles_bystander", Duration::from_nanos(7));
    assert!(handle.flush());
    assert!(
        handle
            .get_stats("model_percentiles_bystander", Window::Cumulative)
            .is_some(),
        "another stage's statistics were never published (aggregator restarts: {})",
        handle.health().aggregator_restarts
    );
    let stats = handle
        .get_stats(STAGE, Window::Cumulative)
        .expect("statistics");
    assert_eq!((stats.count, stats.saturated), (3, 2));
    assert_eq!((ns(stats.min), ns(stats.max)), (5, huge));
    let sum = 2 * u128::from(huge) + 5;
    assert_eq!(u128::from(ns(stats.mean)), sum / 3);
    // Two-pass in f64: good to ~1e-15 relative, far tighter than the wrapped result.
    let mean = sum as f64 / 3.0;
    let var = (2.0 * (huge as f64 - mean).powi(2) + (5.0 - mean).powi(2)) / 3.0;
    let (got, want) = (stats.stddev.as_nanos() as f64, var.sqrt());
    assert!(
        (got / want - 1.0).abs() < 1e-9,
        "stddev {got} ns, exact {want} ns"
    );
}
