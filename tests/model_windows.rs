//! Model: sliding windows against a naive list of timestamped samples, under the mock clock.
//!
//! The reference keeps every `(t, value)` the test recorded, `t` in nanoseconds since the
//! collector's epoch (the mock time at `install`). A window of `n = length / slice` slices holds
//! the samples whose slice number `t / slice` is one of the last `n` up to the slice of "now";
//! cumulative holds them all. Time advances, records and aggregation cycles (`flush`) interleave
//! at random, so records are drained both before and after the slices they land in have moved.
#![cfg(feature = "test-util")]

mod common;

use std::time::Duration;

use common::clock;
use laptime::{Collector, StageStats, Window, WindowSpec};
use proptest::prelude::*;

/// One stage name for every case: each case's collector starts with empty statistics.
const STAGE: &str = "model_windows";

#[derive(Debug, Clone)]
enum Step {
    Advance(u64),
    Record(u64),
    /// One aggregation cycle now; the windows are compared with the model after it.
    Flush,
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    slice_ns: u64,
    slices: u64,
}

impl Spec {
    fn length_ns(self) -> u64 {
        self.slice_ns * self.slices
    }

    fn window(self) -> Window {
        Window::Last(Duration::from_nanos(self.length_ns()))
    }

    /// The naive rule, written out: `t`'s slice is one of the last `slices` up to now's.
    fn holds(self, t: u64, now: u64) -> bool {
        let (slice_t, slice_now) = (t / self.slice_ns, now / self.slice_ns);
        slice_t <= slice_now && slice_now - slice_t < self.slices
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    // Slices of at least 1 µs: the collector refuses shorter ones (`ConfigError::SliceTooShort`).
    let slice_ns = prop_oneof![
        1_000u64..=10_000,
        1_000u64..=10_000_000,
        Just(250_000_000u64),
        Just(1_000_000_000u64),
    ];
    (slice_ns, 1u64..=8).prop_map(|(slice_ns, slices)| Spec { slice_ns, slices })
}

/// Specs with distinct lengths (the collector refuses duplicates).
fn specs() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(spec(), 1..=3).prop_map(|mut specs| {
        let mut seen = Vec::new();
        specs.retain(|s| {
            let fresh = !seen.contains(&s.length_ns());
            seen.push(s.length_ns());
            fresh
        });
        specs
    })
}

/// Advances scaled to the windows: within a slice, across a few slices, past every window.
fn steps(specs: &[Spec]) -> impl Strategy<Value = Vec<Step>> + use<> {
    let min_slice = specs.iter().map(|s| s.slice_ns).min().unwrap_or(1);
    let max_len = specs.iter().map(|s| s.length_ns()).max().unwrap_or(1);
    let advance = prop_oneof![
        3 => (0..=min_slice).prop_map(Step::Advance),
        3 => (0..=max_len).prop_map(Step::Advance),
        1 => (max_len..=3 * max_len).prop_map(Step::Advance),
    ];
    // Up to the highest trackable value (1 h): saturation is model_percentiles' business.
    let value = prop_oneof![0u64..2_048, 0u64..10_000_000, 0u64..=3_600_000_000_000];
    let step = prop_oneof![
        4 => advance,
        5 => value.prop_map(Step::Record),
        1 => Just(Step::Flush),
    ];
    prop::collection::vec(step, 0..80)
}

#[derive(Debug, PartialEq)]
struct Exact {
    count: u64,
    min: u64,
    max: u64,
    mean: u64,
}

fn exact(values: &[u64]) -> Option<Exact> {
    if values.is_empty() {
        return None;
    }
    let sum: u128 = values.iter().map(|&v| u128::from(v)).sum();
    Some(Exact {
        count: values.len() as u64,
        min: *values.iter().min().unwrap(),
        max: *values.iter().max().unwrap(),
        mean: (sum / values.len() as u128) as u64,
    })
}

fn reported(s: &StageStats) -> Exact {
    Exact {
        count: s.count,
        min: s.min.as_nanos() as u64,
        max: s.max.as_nanos() as u64,
        mean: s.mean.as_nanos() as u64,
    }
}

/// The window's percentiles come from the same records as its count: each is within the
/// histogram's resolution above the exact nearest-rank value of the window's own samples (this
/// catches a summed histogram that expires on another schedule than the tallies).
fn check_percentiles(s: &StageStats, values: &[u64]) -> Result<(), TestCaseError> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    for (per_mille, got) in [
        (500, s.p50),
        (900, s.p90),
        (950, s.p95),
        (990, s.p99),
        (999, s.p999),
    ] {
        let rank = (per_mille * n).div_ceil(1000).max(1);
        let exact = sorted[rank as usize - 1];
        let tolerance = if exact < 2048 { 0 } else { exact / 1024 };
        let got = got.as_nanos() as u64;
        prop_assert!(
            exact <= got && got - exact <= tolerance,
            "{:?} p{}: reported {got}, exact {exact} (tolerance {tolerance})",
            s.window,
            per_mille as f64 / 10.0
        );
    }
    Ok(())
}

/// Compares every window and the cumulative one with the samples, `now` since the epoch.
fn compare(
    handle: &laptime::CollectorHandle,
    specs: &[Spec],
    samples: &[(u64, u64)],
    now: u64,
) -> Result<(), TestCaseError> {
    let windows = specs
        .iter()
        .map(|&spec| (spec.window(), Some(spec)))
        .chain([(Window::Cumulative, None)]);
    for (window, spec) in windows {
        let held: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| spec.is_none_or(|s| s.holds(*t, now)))
            .map(|&(_, v)| v)
            .collect();
        let stats = handle.get_stats(STAGE, window);
        prop_assert_eq!(
            stats.as_ref().map(reported),
            exact(&held),
            "{:?} at {} ns since the epoch",
            window,
            now
        );
        if let Some(stats) = stats {
            prop_assert_eq!(stats.dropped, 0);
            check_percentiles(&stats, &held)?;
        }
    }
    Ok(())
}

fn run(offset: u64, specs: &[Spec], steps: &[Step]) -> Result<(), TestCaseError> {
    let _serial = common::serial();
    let clock = clock();
    // A random epoch, so slice boundaries fall anywhere on the mock's absolute timeline.
    clock.advance(Duration::from_nanos(offset));
    let epoch = clock.now();
    let handle = common::install(
        Collector::builder()
            .with_interval(Duration::from_secs(60))
            .with_windows(specs.iter().map(|s| {
                WindowSpec::new(
                    Duration::from_nanos(s.length_ns()),
                    Duration::from_nanos(s.slice_ns),
                )
            })),
    );
    let mut samples: Vec<(u64, u64)> = Vec::new();
    for step in steps {
        match *step {
            Step::Advance(ns) => clock.advance(Duration::from_nanos(ns)),
            Step::Record(v) => {
                laptime::record(STAGE, Duration::from_nanos(v));
                samples.push((clock.now() - epoch, v));
            }
            Step::Flush => {
                prop_assert!(handle.flush());
                compare(&handle, specs, &samples, clock.now() - epoch)?;
            }
        }
    }
    prop_assert!(handle.flush());
    compare(&handle, specs, &samples, clock.now() - epoch)
}

proptest! {
    #![proptest_config(common::proptest_config("model_windows"))]

    #[test]
    fn windows_hold_exactly_the_samples_of_their_last_slices(
        offset in 0u64..10_000_000_000,
        (specs, steps) in specs().prop_flat_map(|specs| {
            let steps = steps(&specs);
            (Just(specs), steps)
        }),
    ) {
        run(offset, &specs, &steps)?;
    }
}

/// A hand-picked sequence: records at both edges of a slice, then the window slides past them
/// one slice at a time.
#[test]
fn samples_leave_a_window_one_slice_at_a_time() {
    let spec = Spec {
        slice_ns: 1_000,
        slices: 3,
    };
    let mut steps = vec![Step::Record(10), Step::Advance(999), Step::Record(20)];
    for _ in 0..5 {
        steps.extend([Step::Advance(1_000), Step::Record(30), Step::Flush]);
    }
    run(123, &[spec], &steps).unwrap();
}
