//! Families of runtime-labelled series against exact references: every series' count, min, max
//! and mean equal what its producers recorded; the family total equals the sorted union of all
//! of them (percentiles within the 3-digit bucket of the nearest-rank value); top-k follows the
//! reference's order; past the cap and for bad values, calls land in the overflow series and are
//! counted, in `Health` too.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use laptime::{Collector, Family, FamilyOptions, Rank, Stage, StageError, Window};

const SERIES: u64 = 40;
const PER_SERIES: u64 = 250;

/// Series `i`'s `k`-th value: series scale apart (so the ranking is unambiguous), spread within.
fn value(i: u64, k: u64) -> u64 {
    (i + 1) * 10_000 + (k * 7_919) % 5_000
}

/// The nearest-rank value of quantile `per_mille` / 1000 among `sorted`.
fn nearest_rank(sorted: &[u64], per_mille: u64) -> u64 {
    let n = sorted.len() as u64;
    let rank = (per_mille * n).div_ceil(1000).max(1);
    sorted[rank as usize - 1]
}

/// A reported percentile is the top of the exact value's bucket: at most one bucket width above
/// it, `1 / per_octave` of its value (HdrHistogram's sub-buckets per half octave: 128 at 2
/// significant digits, 1024 at 3).
fn assert_within_bucket(reported: Duration, exact: u64, per_octave: u64, what: &str) {
    let r = reported.as_nanos() as u64;
    assert!(
        r >= exact && r <= exact + exact / per_octave,
        "{what}: reported {r} ns, exact {exact} ns, bucket 1/{per_octave}"
    );
}

#[test]
fn every_series_and_the_family_total_equal_an_exact_reference_at_the_default_precision() {
    // The default: 2 significant digits, every percentile within 1/128 (under 1 %).
    every_series_and_the_family_total_equal_an_exact_reference(FamilyOptions::new(), 128);
}

#[test]
fn every_series_and_the_family_total_equal_an_exact_reference_at_3_digits() {
    let options = FamilyOptions::new().with_significant_digits(3);
    every_series_and_the_family_total_equal_an_exact_reference(options, 1024);
}

#[test]
fn a_family_refuses_a_precision_it_cannot_keep() {
    for digits in [0, 6] {
        let options = FamilyOptions::new().with_significant_digits(digits);
        let err = Family::with_options(common::unique("families_digits"), &["k"], options);
        assert!(
            matches!(err, Err(StageError::FamilyDigits { digits: d, .. }) if d == digits),
            "{err:?}"
        );
    }
}

fn every_series_and_the_family_total_equal_an_exact_reference(
    options: FamilyOptions,
    per_octave: u64,
) {
    let _s = common::serial();
    let handle = common::install(Collector::builder());
    let name = common::unique("families_exact");
    let family = Family::with_options(name, &["pair", "side"], options).unwrap();
    // Two producer threads, each owning half the series, resolving each value uncached.
    std::thread::scope(|scope| {
        for side in ["buy", "sell"] {
            scope.spawn(move || {
                for k in 0..PER_SERIES {
                    for i in 0..SERIES / 2 {
                        let pair = format!("P{i:03}");
                        let series = family.series_or_overflow(&(pair.as_str(), side));
                        let i = i + if side == "buy" { 0 } else { SERIES / 2 };
                        laptime::record(series, Duration::from_nanos(value(i, k)));
                    }
                }
            });
        }
    });
    assert!(handle.flush());
    assert_eq!(family.len() as u64, SERIES);
    assert_eq!(family.overflowed(), 0);

    let mut all = Vec::new();
    for i in 0..SERIES {
        let (pair, side) = if i < SERIES / 2 {
            (format!("P{i:03}"), "buy")
        } else {
            (format!("P{:03}", i - SERIES / 2), "sell")
        };
        let series = family.series(&[pair.as_str(), side]).unwrap();
        let mut mine: Vec<u64> = (0..PER_SERIES).map(|k| value(i, k)).collect();
        mine.sort_unstable();
        let s = handle.get_stats(series, Window::Cumulative).unwrap();
        assert_eq!(s.count, PER_SERIES, "{series}");
        assert_eq!(s.min.as_nanos() as u64, mine[0]);
        assert_eq!(s.max.as_nanos() as u64, *mine.last().unwrap());
        assert_eq!(
            s.mean.as_nanos() as u64,
            mine.iter().sum::<u64>() / PER_SERIES
        );
        let p99 = nearest_rank(&mine, 990);
        assert_within_bucket(s.p99, p99, per_octave, &format!("{series} p99"));
        all.extend(mine);
    }

    // The family total: by handle, by `Family::stats` and by name, one histogram of every value.
    all.sort_unstable();
    let total = handle
        .get_stats(family.total(), Window::Cumulative)
        .unwrap();
    assert_eq!(
        laptime::get_stats(name, Window::Cumulative).as_ref(),
        Some(&total)
    );
    assert_eq!(family.stats(Window::Cumulative).as_ref(), Some(&total));
    assert_eq!(total.count, SERIES * PER_SERIES);
    assert_eq!(total.labels, &[] as &[(&str, &str)]);
    assert_eq!(total.min.as_nanos() as u64, all[0]);
    assert_eq!(total.max.as_nanos() as u64, *all.last().unwrap());
    for (reported, per_mille) in [
        (total.p50, 500),
        (total.p90, 900),
        (total.p95, 950),
        (total.p99, 990),
        (total.p999, 999),
    ] {
        let exact = nearest_rank(&all, per_mille);
        assert_within_bucket(reported, exact, per_octave, "family total");
    }
    // The sliding windows hold the same records (all recorded within the last second).
    let last_second = handle
        .get_stats(family.total(), Window::Last(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(last_second.count, total.count);

    // Top-k by p99: the reference ranks series by their scale, the last created highest.
    let snapshot = handle.snapshot();
    let top = family.top(&snapshot, Window::Cumulative, Rank::Quantile(0.99), 3);
    let expected: Vec<String> = [39u64, 38, 37]
        .iter()
        .map(|i| format!("P{:03}", i - SERIES / 2))
        .collect();
    let got: Vec<&str> = top.iter().map(|s| s.labels[0].1).collect();
    assert_eq!(got, expected);
    assert!(top.iter().all(|s| s.labels[1].1 == "sell"));
    assert!(top.windows(2).all(|w| w[0].p99 >= w[1].p99));
    assert_eq!(
        family
            .top(&snapshot, Window::Cumulative, Rank::Count, 100)
            .len() as u64,
        SERIES,
        "every series with records, and no more"
    );
    assert!(
        family
            .top(&snapshot, Window::Cumulative, Rank::Mean, 0)
            .is_empty()
    );
    // The exports see one series per label set; the total is marked so they leave it out.
    assert!(family.total().is_family_total());
    assert!(!family.series(&["P000", "buy"]).unwrap().is_family_total());
}

#[test]
fn past_the_cap_and_for_bad_values_calls_land_in_the_overflow_series_counted() {
    let _s = common::serial();
    let handle = common::install(Collector::builder());
    let name = common::unique("families_overflow");
    let family =
        Family::with_options(name, &["venue"], FamilyOptions::new().with_max_series(3)).unwrap();
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let before = handle.health().series_overflowed;
    for (venue, n) in [("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1), ("", 6)] {
        for k in 0..n {
            let series = family.series_or_overflow(&[venue]);
            laptime::record(series, Duration::from_micros(10 + k));
        }
        let key = if ["a", "b", "c"].contains(&venue) {
            venue
        } else {
            laptime::limits::OVERFLOW_VALUE
        };
        *expected.entry(key).or_default() += n;
    }
    assert!(handle.flush());
    assert_eq!(family.len(), 3);
    let overflowed = expected[laptime::limits::OVERFLOW_VALUE];
    assert_eq!(family.overflowed(), overflowed);
    assert_eq!(
        handle.health().series_overflowed - before,
        overflowed,
        "Health counts the overflowed calls"
    );
    for (venue, count) in &expected {
        let stage = Stage::lookup(name, &[("venue", venue)]).unwrap();
        let s = handle.get_stats(stage, Window::Cumulative).unwrap();
        assert_eq!(s.count, *count, "{venue}");
    }
    assert_eq!(
        family.stats(Window::Cumulative).unwrap().count,
        expected.values().sum::<u64>(),
        "the total holds the overflow series too"
    );
}

#[test]
fn a_family_name_is_not_a_stage_and_a_stage_name_is_not_a_family() {
    let _s = common::serial();
    let handle = common::install(Collector::builder());
    let name = common::unique("families_names");
    let family = Family::new(name, &["pair"]).unwrap();
    assert!(matches!(
        Stage::new(name),
        Err(StageError::NameIsAFamily { .. })
    ));
    // The hot path's literal lookup refuses it and counts the call.
    let rejected = handle.health().rejected;
    laptime::record(name, Duration::from_micros(1));
    assert!(handle.flush());
    assert_eq!(handle.health().rejected, rejected + 1);
    assert_eq!(
        family.stats(Window::Cumulative),
        None,
        "nothing reached the total"
    );
    let plain = common::unique("families_plain");
    Stage::new(plain).unwrap();
    assert!(matches!(
        Family::new(plain, &["pair"]),
        Err(StageError::NameIsAStage { .. })
    ));
}

#[test]
fn the_series_cap_is_a_collector_setting_checked_at_install() {
    let _s = common::serial();
    let err = Collector::builder()
        .with_max_series(0)
        .install()
        .unwrap_err();
    assert!(err.to_string().contains("series cap 0"), "{err}");
    let err = Collector::builder()
        .with_max_series(laptime::limits::MAX_SERIES_LIMIT + 1)
        .install()
        .unwrap_err();
    assert!(err.to_string().contains("series cap"), "{err}");
    // A process cap below a family's own: the process cap wins, typed and counted.
    let existing = {
        let handle = common::install(Collector::builder());
        assert!(handle.flush());
        handle.health().series
    };
    let handle = common::install(Collector::builder().with_max_series(existing + 2));
    let family = Family::new(common::unique("families_process_cap"), &["k"]).unwrap();
    family.series(&[1u8]).unwrap();
    family.series(&[2u8]).unwrap();
    assert!(matches!(
        family.series(&[3u8]),
        Err(laptime::SeriesError::ProcessFull { .. })
    ));
    assert_eq!(family.series_or_overflow(&[3u8]), family.overflow());
    drop(handle);
    // Later installs are not held to this cap.
    let _handle = common::install(Collector::builder());
    family.series(&[3u8]).unwrap();
}

/// An SLA rule may name a family (its total) or one of its series, also when the family is
/// declared after the collector started; a rule whose labels are not the family's is refused at
/// install.
#[test]
fn sla_rules_judge_a_family_total_and_a_series() {
    use laptime::{Metric, SlaRule};
    let _s = common::serial();
    let name = common::unique("families_sla");
    let slow = Duration::from_millis(5);
    let handle = common::install(
        Collector::builder()
            .with_sla_rule(SlaRule::new(name, Window::S1, Metric::Max).with_critical(MS_1))
            .with_sla_rule(
                SlaRule::new(name, Window::S1, Metric::Max)
                    .with_labels(&[("pair", "SOL-USD")])
                    .with_critical(MS_1),
            ),
    );
    // Declared after install: the rules find it when it appears.
    let family = Family::new(name, &["pair"]).unwrap();
    laptime::record(family.series(&["BTC-USD"]).unwrap(), slow);
    laptime::record(
        family.series(&["SOL-USD"]).unwrap(),
        Duration::from_micros(10),
    );
    assert!(handle.flush());
    let violations = handle.check_sla_violations(Window::S1);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].stage, name);
    assert!(
        violations[0].labels.is_empty(),
        "the family total broke, not SOL-USD"
    );
    laptime::record(family.series(&["SOL-USD"]).unwrap(), slow);
    assert!(handle.flush());
    assert_eq!(handle.check_sla_violations(Window::S1).len(), 2);
    drop(handle);

    // Declared before install with other label names: a typed error at install.
    let err = Collector::builder()
        .with_sla_rule(
            SlaRule::new(name, Window::S1, Metric::Max)
                .with_labels(&[("venue", "x")])
                .with_critical(MS_1),
        )
        .install()
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("label names"), "{err}");
}

const MS_1: Duration = Duration::from_millis(1);
