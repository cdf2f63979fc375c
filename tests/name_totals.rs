//! A name's static labelled stages and their total: `get_stats(name)` answers for the name as a
//! whole, exactly. The reference is a stage of its own that saw the very same spans (same layout,
//! same clock): the total must equal it field by field in every window, so its histogram is the
//! sum of the labelled ones, not an average of their percentiles. Under the mock clock, every
//! duration is known.
#![cfg(feature = "test-util")]

mod common;

use std::time::Duration;

use common::{clock, install, serial, unique};
use laptime::{Collector, Metric, Severity, SlaRule, Stage, StageError, StageStats, Window};

const US: Duration = Duration::from_micros(1);
const SPANS: u64 = 3_000;

/// Span `k`'s duration: spread over 1 µs .. 700 µs, so some pass the 400 µs deadline.
fn duration(k: u64) -> Duration {
    Duration::from_nanos(1_000 + (k * 7_919) % 699_000)
}

/// The figures of `reference` as the total would read them: its name and no deadline of its own.
fn as_total(mut reference: StageStats, name: &'static str) -> StageStats {
    reference.stage = name;
    reference.labels = &[];
    reference.deadline = None;
    reference
}

#[test]
fn a_names_unlabelled_stats_are_the_exact_sum_of_its_labelled_stages() {
    let _s = serial();
    let clock = clock();
    let name = unique("exchange_req");
    let reference = unique("exchange_req_reference");
    // The SLA rule names the total: a median above 100 µs is critical once 100 spans are in.
    let rule = SlaRule::new(name, Window::S1, Metric::P50)
        .with_critical(100 * US)
        .with_min_count(100)
        .with_breaker(false);
    let handle = install(
        Collector::builder()
            .with_interval(Duration::from_secs(30))
            .with_ring_capacity(1 << 16)
            .with_sla_rule(rule),
    );
    let venues = [
        Stage::with_labels(name, &[("venue", "xnas")]).unwrap(),
        Stage::with_labels(name, &[("venue", "bats")]).unwrap(),
        Stage::with_labels(name, &[("venue", "arca")]).unwrap(),
    ];
    let reference = Stage::new(reference).unwrap();
    for stage in venues.into_iter().chain([reference]) {
        stage.set_deadline(Some(400 * US)).unwrap();
    }
    let total = Stage::lookup(name, &[]).expect("registered with the first labelled stage");
    assert!(total.is_total());
    // Nothing records into the total directly: it is read, as a family's is.
    assert_eq!(
        Stage::new(name).unwrap_err(),
        StageError::MixedLabels {
            name: name.to_owned()
        }
    );

    let mut values = Vec::new();
    for k in 0..SPANS {
        // Venues in an uneven rotation, so their own figures differ from each other's.
        let venue = venues[(k % 7 % 3) as usize];
        // Both spans end at the same instant: the same slice of every window.
        let (spans, reference_span) = (laptime::start(venue), laptime::start(reference));
        clock.advance(duration(k));
        if k % 101 == 0 {
            reference_span.cancel();
            spans.cancel();
        } else {
            drop(reference_span);
            drop(spans);
            values.push(duration(k).as_nanos() as u64);
        }
    }
    assert!(handle.flush());

    for window in [Window::S1, Window::S5, Window::S60, Window::Cumulative] {
        let reference = handle
            .get_stats(reference, window)
            .expect("reference stats");
        let by_name = laptime::get_stats(name, window).expect("the name answers");
        assert_eq!(by_name, as_total(reference, name), "{window}");
        assert_eq!(handle.get_stats(total, window).as_ref(), Some(&by_name));
        // Each venue is its own series still; together they make the total.
        let venues: Vec<StageStats> = (venues.iter())
            .map(|v| handle.get_stats(*v, window).unwrap())
            .collect();
        assert_eq!(venues.iter().map(|s| s.count).sum::<u64>(), by_name.count);
        let misses = venues.iter().map(|s| s.deadline_misses).sum::<u64>();
        assert_eq!(misses, by_name.deadline_misses);
        assert_eq!(
            venues.iter().map(|s| s.cancelled).sum::<u64>(),
            by_name.cancelled
        );
    }

    // Against the values themselves: count, extremes, mean and misses are exact.
    let s = laptime::get_stats(name, Window::Cumulative).unwrap();
    values.sort_unstable();
    assert_eq!(s.count, values.len() as u64);
    assert_eq!(s.min.as_nanos() as u64, values[0]);
    assert_eq!(s.max.as_nanos() as u64, *values.last().unwrap());
    let mean = values.iter().sum::<u64>() / values.len() as u64;
    assert_eq!(s.mean.as_nanos() as u64, mean);
    let late = values.iter().filter(|v| **v > 400_000).count() as u64;
    assert_eq!(s.deadline_misses, late);
    assert_eq!(s.cancelled, SPANS.div_ceil(101));
    // The nearest-rank median, within its 3-digit bucket (1/1024).
    let exact = values[(values.len() as u64).div_ceil(2) as usize - 1];
    let p50 = s.p50.as_nanos() as u64;
    assert!(
        p50 >= exact && p50 <= exact + exact / 1024,
        "{p50} vs {exact}"
    );

    // The total is listed once among every stage, beside its venues.
    let listed = laptime::get_all_stats(Window::Cumulative);
    let named: Vec<&StageStats> = listed.iter().filter(|s| s.stage == name).collect();
    assert_eq!(named.len(), 4, "{named:?}");
    assert_eq!(named.iter().filter(|s| s.labels.is_empty()).count(), 1);

    // The rule on the name judged the total.
    let violations = laptime::check_sla_violations(Window::S1);
    let v = violations
        .iter()
        .find(|v| v.stage == name)
        .expect("the total's median is above 100 µs");
    assert_eq!(v.labels, &[] as &[(&str, &str)]);
    assert_eq!(v.severity, Severity::Critical);
    drop(handle);
}

#[test]
fn a_stage_of_its_own_keeps_its_name_from_labelled_stages() {
    let _s = serial();
    let name = unique("own_stage");
    let own = Stage::new(name).unwrap();
    assert!(!own.is_total());
    assert_eq!(
        Stage::with_labels(name, &[("venue", "xnas")]).unwrap_err(),
        StageError::MixedLabels {
            name: name.to_owned()
        }
    );
    // A family's name is no static stage's either.
    let family = laptime::Family::new(unique("family_name"), &["pair"]).unwrap();
    assert!(matches!(
        Stage::with_labels(family.name(), &[("pair", "BTC")]),
        Err(StageError::NameIsAFamily { .. })
    ));
    assert!(family.total().is_total());
}
