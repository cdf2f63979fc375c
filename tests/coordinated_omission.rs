//! Coordinated-omission correction against exact references.
//!
//! 1. The corrected figures equal those of a sorted vector holding the raw values plus the values
//!    HdrHistogram's `recordValueWithExpectedInterval` loop adds (written out here, one value at a
//!    time, and checked against the `hdrhistogram` crate's own `record_correct` count), for any
//!    values and interval; the raw figures beside them are untouched.
//! 2. The demonstration: a periodic tick that skips the slots it missed, with one stall. The raw
//!    p99 hides the stall; the corrected p99 matches the latency each scheduled slot really saw,
//!    computed independently from the schedule.
#![cfg(feature = "test-util")]

mod common;

use std::time::Duration;

use common::clock;
use laptime::{Collector, CorrectedStats, Stage, StageStats, Window, WindowSpec};
use proptest::prelude::*;

const HIGHEST: u64 = 3_600_000_000_000;
const WINDOW: Duration = Duration::from_secs(1);

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

/// The figures a sorted reference gives, in the library's rules: nearest rank ⌈q·n⌉ (at least
/// 1), shown as the highest value of its HDR bucket (3 significant digits), clamped to the exact
/// min and max; mean floored.
#[derive(Debug, PartialEq)]
struct Figures {
    count: u64,
    min: u64,
    max: u64,
    mean: u64,
    percentiles: [u64; 5],
}

fn reference(values: &[u64]) -> Figures {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    let (min, max) = (sorted[0], *sorted.last().unwrap());
    let sum: u128 = sorted.iter().map(|&v| u128::from(v)).sum();
    let shape = hdrhistogram::Histogram::<u64>::new_with_bounds(1, HIGHEST, 3).unwrap();
    let percentiles = [500u64, 900, 950, 990, 999].map(|per_mille| {
        let rank = (per_mille * n).div_ceil(1000).max(1);
        let exact = sorted[rank as usize - 1].min(HIGHEST);
        shape.highest_equivalent(exact).clamp(min, max)
    });
    Figures {
        count: n,
        min,
        max,
        mean: (sum / u128::from(n)) as u64,
        percentiles,
    }
}

fn raw_figures(s: &StageStats) -> Figures {
    Figures {
        count: s.count,
        min: ns(s.min),
        max: ns(s.max),
        mean: ns(s.mean),
        percentiles: [s.p50, s.p90, s.p95, s.p99, s.p999].map(ns),
    }
}

fn corrected_figures(c: &CorrectedStats) -> Figures {
    Figures {
        count: c.count,
        min: ns(c.min),
        max: ns(c.max),
        mean: ns(c.mean),
        percentiles: [c.p50, c.p90, c.p95, c.p99, c.p999].map(ns),
    }
}

fn install() -> laptime::CollectorHandle {
    common::install(
        Collector::builder()
            .with_interval(Duration::from_secs(60))
            .with_ring_capacity(4096)
            .with_windows([WindowSpec::new(WINDOW, WINDOW / 4)]),
    )
}

fn check_values(values: &[u64], interval: u64) -> Result<(), TestCaseError> {
    let _serial = common::serial();
    clock();
    let stage = common::unique("co_model");
    Stage::new(stage)
        .unwrap()
        .set_expected_interval(Some(Duration::from_nanos(interval)))
        .unwrap();
    let handle = install();
    for &v in values {
        laptime::record(stage, Duration::from_nanos(v));
    }
    prop_assert!(handle.flush());

    let mut corrected: Vec<u64> = values.to_vec();
    let mut hdr = hdrhistogram::Histogram::<u64>::new_with_bounds(1, HIGHEST, 3).unwrap();
    for &v in values {
        let more = common::co_added(v, interval);
        corrected.extend_from_slice(&more);
        // The crate's own correction adds as many values: the loop above is HdrHistogram's.
        let before = hdr.len();
        hdr.record_correct(v.clamp(1, HIGHEST), interval).unwrap();
        if (1..=HIGHEST).contains(&v) {
            prop_assert_eq!(
                hdr.len() - before,
                1 + more.len() as u64,
                "record_correct({})",
                v
            );
        }
    }
    let synthesized = (corrected.len() - values.len()) as u64;
    for window in [Window::Cumulative, Window::Last(WINDOW)] {
        let s = handle.get_stats(stage, window).expect("statistics");
        prop_assert_eq!(raw_figures(&s), reference(values), "{:?} raw", window);
        let c = s.corrected.as_ref().expect("corrected figures");
        prop_assert_eq!(c.expected_interval, Duration::from_nanos(interval));
        prop_assert_eq!(c.synthesized, synthesized, "{:?} synthesized", window);
        prop_assert_eq!(c.truncated, 0);
        prop_assert_eq!(
            corrected_figures(c),
            reference(&corrected),
            "{:?} corrected",
            window
        );
    }
    Ok(())
}

fn values() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![
            90 => 1_000u64..20_000,
            8 => 20_000u64..2_000_000,
            2 => 2_000_000u64..200_000_000,
        ],
        1..300,
    )
}

proptest! {
    #![proptest_config(common::proptest_config("coordinated_omission"))]

    #[test]
    fn corrected_figures_equal_the_sorted_reference(
        values in values(),
        interval in 1_000u64..5_000_000,
    ) {
        check_values(&values, interval)?;
    }
}

#[test]
fn edges_of_the_correction() {
    for (values, interval) in [
        (vec![1, 2, 3], 1),         // a 1 ns interval: 2 adds 1; 3 adds 2 and 1
        (vec![200, 199, 201], 100), // exactly 2×: adds one value, equal to the interval
        (vec![5_000_000_000], 1_000_000),
        (vec![0, 10, 1_000_000], 7),
    ] {
        check_values(&values, interval).unwrap_or_else(|e| panic!("{values:?}/{interval}: {e}"));
    }
}

#[test]
fn a_stage_without_an_interval_has_no_corrected_figures_and_switching_off_stops_it() {
    let _serial = common::serial();
    clock();
    let stage = Stage::new(common::unique("co_switch")).unwrap();
    let handle = install();
    laptime::record(stage, Duration::from_millis(5));
    assert!(handle.flush());
    let s = handle.get_stats(stage, Window::Cumulative).unwrap();
    assert!(s.corrected.is_none());

    stage
        .set_expected_interval(Some(Duration::from_millis(1)))
        .unwrap();
    assert_eq!(stage.expected_interval(), Some(Duration::from_millis(1)));
    laptime::record(stage, Duration::from_millis(5)); // adds 4, 3, 2, 1 ms
    assert!(handle.flush());
    let c = handle
        .get_stats(stage, Window::Cumulative)
        .unwrap()
        .corrected
        .unwrap();
    assert_eq!((c.count, c.synthesized), (5, 4));

    stage.set_expected_interval(None).unwrap();
    laptime::record(stage, Duration::from_millis(5));
    assert!(handle.flush());
    let s = handle.get_stats(stage, Window::Cumulative).unwrap();
    assert_eq!(s.count, 3);
    // Kept, not corrected any more: the figures stop moving.
    assert_eq!(s.corrected.map(|c| (c.count, c.synthesized)), Some((5, 4)));

    let zero = stage.set_expected_interval(Some(Duration::ZERO));
    assert!(
        matches!(zero, Err(laptime::ConfigError::ZeroExpectedInterval { .. })),
        "{zero:?}"
    );
}

/// A tick loop scheduled every `PERIOD`, measured from each tick's actual start (what a span
/// measures). One tick stalls; the loop then skips the slots it missed, like a periodic timer
/// set to skip missed ticks. A scheduled slot's true latency is from its slot to when its work
/// ends: the slots skipped during the stall would have run, one after another, once it ended.
#[test]
fn correction_recovers_the_schedule_based_p99_that_the_raw_p99_hides() {
    const PERIOD: u64 = 1_000_000; // 1 ms
    const WORK: u64 = 1_000; // 1 µs per tick
    const STALL: u64 = 1_000_000_000; // one tick takes 1 s
    const SLOTS: u64 = 20_000;
    const STALLED_SLOT: u64 = 5_000;

    let _serial = common::serial();
    let clock = clock();
    let stage = Stage::new("co_demo_tick").unwrap();
    let handle = common::install(
        Collector::builder()
            .with_interval(Duration::from_secs(60))
            .with_ring_capacity(SLOTS as usize)
            .with_expected_interval("co_demo_tick", Duration::from_nanos(PERIOD)),
    );
    let t0 = clock.now();

    // The loop, on the mock clock.
    let mut slot = 0;
    let mut true_latency = Vec::with_capacity(SLOTS as usize);
    while slot < SLOTS {
        let scheduled = t0 + slot * PERIOD;
        clock.set(scheduled.max(clock.now()));
        let work = if slot == STALLED_SLOT { STALL } else { WORK };
        {
            let _span = laptime::start(stage);
            clock.advance(Duration::from_nanos(work));
        }
        let ended = clock.now();
        true_latency.push(ended - scheduled);
        // Skip the slots missed; each would have started when the one before it ended.
        let next = (ended - t0).div_ceil(PERIOD);
        let mut free_at = ended;
        for missed in slot + 1..next.min(SLOTS) {
            free_at += WORK;
            true_latency.push(free_at - (t0 + missed * PERIOD));
        }
        slot = next.max(slot + 1);
    }
    assert!(handle.flush());
    assert_eq!(true_latency.len() as u64, SLOTS);

    let s = handle.get_stats(stage, Window::Cumulative).unwrap();
    let c = s.corrected.clone().expect("corrected figures");
    let truth = reference(&true_latency);
    let skipped = STALL / PERIOD - 1;
    println!("slots {SLOTS}, one stall of {STALL} ns, {skipped} slots skipped");
    println!(
        "            {:>12} {:>12} {:>12}",
        "raw", "corrected", "schedule"
    );
    for (i, name) in ["p50", "p90", "p95", "p99", "p99.9"].iter().enumerate() {
        let raw = [s.p50, s.p90, s.p95, s.p99, s.p999][i];
        let cor = [c.p50, c.p90, c.p95, c.p99, c.p999][i];
        println!(
            "{name:>10}  {:>12?} {:>12?} {:>12?}",
            raw,
            cor,
            Duration::from_nanos(truth.percentiles[i])
        );
    }

    // The raw figures only saw the ticks that ran: one slow value among 19 001 fast ones.
    assert_eq!(s.count, SLOTS - skipped);
    assert_eq!(
        ns(s.p99),
        WORK,
        "raw p99 is the work of one tick: the stall is hidden"
    );
    // Corrected: one value per slot, like the schedule.
    assert_eq!(c.count, SLOTS);
    assert_eq!(c.synthesized, skipped);
    // The k-th skipped slot waited STALL − k·PERIOD for the stall and then k·WORK behind the
    // slots before it; the correction accounts for the first part. At any rank the two
    // therefore differ by at most skipped·WORK, plus the histogram's bucket (0.1 %).
    let p99 = ns(c.p99);
    let schedule_p99 = truth.percentiles[3];
    let bound = skipped * WORK + schedule_p99 / 1024;
    assert!(
        p99.abs_diff(schedule_p99) <= bound,
        "corrected p99 {p99} ns vs schedule-based {schedule_p99} ns (bound {bound} ns)"
    );
    assert!(
        schedule_p99 > 500 * ns(s.p99),
        "the stall dominates the true p99"
    );
}

/// The corrected figures live in the same windows as the raw ones and expire with them; the
/// cumulative ones stay.
#[test]
fn corrected_windows_expire_with_the_raw_ones() {
    let _serial = common::serial();
    let clock = clock();
    let stage = Stage::new(common::unique("co_expire")).unwrap();
    stage
        .set_expected_interval(Some(Duration::from_millis(1)))
        .unwrap();
    let handle = install();
    laptime::record(stage, Duration::from_millis(10)); // adds 9 values
    assert!(handle.flush());
    let s1 = handle.get_stats(stage, Window::Last(WINDOW)).unwrap();
    assert_eq!(s1.corrected.map(|c| c.count), Some(10));

    clock.advance(2 * WINDOW);
    laptime::record(stage, Duration::from_micros(500)); // below the interval: adds none
    assert!(handle.flush());
    let s1 = handle.get_stats(stage, Window::Last(WINDOW)).unwrap();
    assert_eq!(s1.count, 1);
    let c = s1.corrected.unwrap();
    assert_eq!((c.count, c.synthesized, ns(c.max)), (1, 0, 500_000));
    let all = handle.get_stats(stage, Window::Cumulative).unwrap();
    assert_eq!(
        all.corrected.map(|c| (c.count, c.synthesized)),
        Some((11, 9))
    );
}

/// A stall far beyond what one span may add (10 s at a 1 ns interval: ten billion values) is cut
/// at 2^22 values, the largest ones, and counted as truncated.
#[test]
fn a_huge_correction_is_truncated_and_says_so() {
    const CAP: u64 = 1 << 22;
    let _serial = common::serial();
    clock();
    let stage = Stage::new(common::unique("co_truncate")).unwrap();
    stage
        .set_expected_interval(Some(Duration::from_nanos(1)))
        .unwrap();
    let handle = install();
    let d = 10_000_000_000u64;
    laptime::record(stage, Duration::from_nanos(d));
    assert!(handle.flush());
    for window in [Window::Cumulative, Window::Last(WINDOW)] {
        let c = handle.get_stats(stage, window).unwrap().corrected.unwrap();
        assert_eq!((c.count, c.synthesized, c.truncated), (CAP + 1, CAP, 1));
        // The values kept are d − 1 … d − 2^22, and the span itself.
        assert_eq!(ns(c.min), d - CAP);
        assert_eq!(ns(c.max), d);
        let sum: u128 = (0..=CAP).map(|k| u128::from(d - k)).sum();
        assert_eq!(u128::from(ns(c.mean)), sum / u128::from(CAP + 1));
    }
}
