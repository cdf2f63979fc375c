//! The exact reference the bridges' tests compare laptime's figures with: the sorted values that
//! were recorded. Included with `#[path]` by `bridges/*/tests`.
#![allow(dead_code)]

use std::time::Duration;

use laptime::{CollectorHandle, Family, Stage, Window};

/// Asserts `stage`'s cumulative figures against `sorted_ns`, every value recorded into it,
/// sorted: count and min/max exact, nothing dropped, each reported percentile within the
/// series' relative precision (10^-digits) of the exact nearest-rank value.
pub fn assert_matches_reference(handle: &CollectorHandle, stage: Stage, sorted_ns: &[u64]) {
    let stats = handle.get_stats(stage, Window::Cumulative).expect("stats");
    let n = sorted_ns.len() as u64;
    assert_eq!(
        (stats.count, stats.dropped),
        (n, 0),
        "{stage}: count, dropped"
    );
    assert_eq!(
        stats.min,
        Duration::from_nanos(sorted_ns[0]),
        "{stage}: min"
    );
    assert_eq!(
        stats.max,
        Duration::from_nanos(sorted_ns[sorted_ns.len() - 1]),
        "{stage}: max"
    );
    let digits = stage.family().map_or(3, Family::significant_digits);
    let tolerance = 10f64.powi(-i32::from(digits));
    for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
        let exact = sorted_ns[(laptime::rank(q, n) - 1) as usize] as f64;
        let got = stats.quantile(q).expect("reported quantile").as_nanos() as f64;
        assert!(
            (got - exact).abs() <= exact * tolerance,
            "{stage} q{q}: {got} ns vs exact {exact} ns ({digits} digits)"
        );
    }
}

/// `n` values spread over 1 – 10 000 (an xorshift stream from `seed`, the same on every run).
pub fn spread_values(n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % 10_000
        })
        .collect()
}
