//! The Prometheus export against references computed here, from the values the tests record:
//! bucket counts, `_count` and `_sum`; labels and const labels; guard-trip and deadline-miss
//! counters against the library's own; the milliseconds names; custom buckets; typed errors for
//! bad configuration; and `promtool check metrics` on the rendered text.
// Needs recording compiled in (`enable`, a default feature): with it off nothing reaches the
// exporter.
#![cfg(all(feature = "prometheus", feature = "enable"))]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{install, serial, unique};
use laptime::export::ExportError;
use laptime::export::prometheus::{PrometheusExporter, Registry, Unit, default_buckets};
use laptime::{Collector, CollectorBuilder, Stage, Window};

const US: Duration = Duration::from_micros(1);
const MS: Duration = Duration::from_millis(1);

/// A collector that runs cycles only when flushed (on the mock clock when `test-util` is on), with
/// rings large enough that nothing recorded here is dropped.
fn builder(exporter: &PrometheusExporter) -> CollectorBuilder {
    #[cfg(feature = "test-util")]
    common::clock();
    Collector::builder()
        .with_interval(Duration::from_secs(60))
        .with_ring_capacity(1 << 16)
        .with_prometheus(exporter.clone())
}

/// One sample line of the text exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the sample lines of a text exposition (comments skipped).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .expect("a sample line ends with its value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("value {v:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"))),
            None => (series, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label {name} opens its value");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        assert!(
            labels.insert(name.clone(), value).is_none(),
            "label {name} appears twice in one series"
        );
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The samples named `name` whose labels include every pair of `with`.
fn find<'a>(samples: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The one sample named `name` with labels `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, with);
    assert_eq!(found.len(), 1, "{name}{with:?}: {found:?}");
    found[0].value
}

/// [`assert_histogram`] for a stage without labels of its own, default buckets, in seconds.
fn assert_stage(samples: &[Sample], family: &str, stage: &str, values: &[u64]) {
    assert_histogram(
        samples,
        family,
        &[("stage", stage)],
        values,
        &default_buckets(),
        1e9,
    );
}

/// Deterministic durations: a lognormal-ish spread over 100 ns – 100 ms (xorshift64*).
fn spread(n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let u = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            (100.0 * 1e6f64.powf(u)) as u64
        })
        .collect()
}

/// Checks a histogram series against `values` (nanoseconds) and `bounds`, computed here: every
/// `le` bucket holds the values at or below its bound, `+Inf` and `_count` all of them, `_sum`
/// their exact sum in `unit`.
fn assert_histogram(
    samples: &[Sample],
    family: &str,
    with: &[(&str, &str)],
    values: &[u64],
    bounds: &[Duration],
    ns_per_unit: f64,
) {
    let buckets = find(samples, &format!("{family}_bucket"), with);
    assert_eq!(
        buckets.len(),
        bounds.len() + 1,
        "{family}{with:?}: one series per bound and +Inf"
    );
    for bound in bounds {
        let b = bound.as_nanos() as u64;
        let le = b as f64 / ns_per_unit;
        let expected = values.iter().filter(|v| **v <= b).count() as f64;
        let got: Vec<_> = buckets
            .iter()
            .filter(|s| s.labels["le"].parse::<f64>().unwrap() == le)
            .collect();
        assert_eq!(got.len(), 1, "{family}{with:?}: bucket le={le}");
        assert_eq!(got[0].value, expected, "{family}{with:?}: bucket le={le}");
    }
    let inf: Vec<_> = buckets
        .iter()
        .filter(|s| s.labels["le"] == "+Inf")
        .collect();
    assert_eq!(inf.len(), 1);
    assert_eq!(inf[0].value, values.len() as f64, "{family}: +Inf");
    let count = value(samples, &format!("{family}_count"), with);
    assert_eq!(count, values.len() as f64, "{family}: _count");
    let sum: u128 = values.iter().map(|v| u128::from(*v)).sum();
    let rendered = value(samples, &format!("{family}_sum"), with);
    assert_eq!(
        rendered,
        sum as f64 / ns_per_unit,
        "{family}: _sum is the exact sum"
    );
}

#[test]
fn buckets_count_and_sum_equal_a_reference_computed_from_the_recorded_values() {
    let _s = serial();
    let exporter = PrometheusExporter::builder()
        .with_namespace("mm")
        .build()
        .unwrap();
    let handle = install(builder(&exporter));
    let name = unique("prom_exact");

    let mut values: Vec<u64> = vec![
        0,
        1,
        999,
        1_000,
        1_001,
        1_999,
        2_000,
        2_001,
        5_000,
        123_456,
        1_000_000,
        9_999_999_999,
        10_000_000_000,
        10_000_000_001,
        // Above the collector's highest trackable value (1 h): saturated in the quantiles, but
        // bucketed and summed as measured.
        7_200_000_000_000,
    ];
    values.extend(spread(20_000, 7));
    for v in &values {
        laptime::record(name, Duration::from_nanos(*v));
    }
    assert!(handle.flush());

    let stats = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!(stats.dropped, 0, "the reference needs every value recorded");
    assert_eq!(stats.count, values.len() as u64);
    assert_eq!(stats.saturated, 1);

    let samples = parse(&exporter.render().unwrap());
    assert_stage(&samples, "mm_stage_duration_seconds", name, &values);
    assert_eq!(
        value(&samples, "mm_values_saturated_total", &[]),
        handle.health().saturated as f64
    );

    // A second batch: the histogram is cumulative and stays exact.
    let more = spread(5_000, 8);
    for v in &more {
        laptime::record(name, Duration::from_nanos(*v));
    }
    assert!(handle.flush());
    values.extend(more);
    let samples = parse(&exporter.render().unwrap());
    assert_stage(&samples, "mm_stage_duration_seconds", name, &values);
    assert_eq!(
        value(
            &samples,
            "mm_stage_duration_seconds_count",
            &[("stage", name)]
        ),
        handle.get_stats(name, Window::Cumulative).unwrap().count as f64,
        "_count is the library's cumulative count"
    );
}

#[cfg(feature = "test-util")]
#[test]
fn spans_timed_on_the_mock_clock_land_in_their_buckets() {
    let _s = serial();
    let clock = common::clock();
    let exporter = PrometheusExporter::builder().build().unwrap();
    let handle = install(builder(&exporter));
    let name = unique("prom_spans");
    let durations: Vec<u64> = vec![500, 1_000, 1_500, 2_000, 50_000, 3_000_000, 20_000_000_000];
    for d in &durations {
        let span = laptime::start(name);
        clock.advance(Duration::from_nanos(*d));
        drop(span);
    }
    // A lap's splits are spans too.
    let (a, b) = (unique("prom_lap_a"), unique("prom_lap_total"));
    let mut lap = laptime::lap(b);
    clock.advance(Duration::from_nanos(7_000));
    lap.split(a);
    clock.advance(Duration::from_nanos(3_000));
    lap.finish();
    assert!(handle.flush());

    let samples = parse(&exporter.render().unwrap());
    let family = "laptime_stage_duration_seconds";
    assert_stage(&samples, family, name, &durations);
    assert_stage(&samples, family, a, &[7_000]);
    assert_stage(&samples, family, b, &[10_000]);
}

#[test]
fn a_family_name_two_stages_map_to_keeps_its_owner_between_scrapes() {
    let _s = serial();
    let exporter = PrometheusExporter::builder().build().unwrap();
    let handle = install(builder(&exporter));
    // Both map to the family `laptime_owner_N_a_b_seconds`; the first registered owns it, busy
    // or idle.
    let n = unique("owner");
    let first = Stage::with_labels(format!("{n}_a_b").leak(), &[("k", "v")]).unwrap();
    let dotted = Stage::with_labels(format!("{n}.a.b").leak(), &[("k", "v")]).unwrap();
    let own = format!("laptime_{}_seconds_count", first.name());
    let shared = "laptime_stage_duration_seconds_count";

    laptime::record(dotted, US); // only the later stage is busy
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    assert_eq!(
        value(&samples, &own, &[("k", "v")]),
        0.0,
        "owned by the idle first stage, exported at zero"
    );
    assert_eq!(value(&samples, shared, &[("stage", dotted.name())]), 1.0);

    laptime::record(first, US);
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    assert_eq!(value(&samples, &own, &[("k", "v")]), 1.0);
    assert_eq!(
        value(&samples, shared, &[("stage", dotted.name())]),
        1.0,
        "the later stage stays where it was"
    );
}

#[test]
fn a_labelled_stage_follows_its_family_name_to_the_stage_family_when_a_gauge_takes_it() {
    let _s = serial();
    let exporter = PrometheusExporter::builder().build().unwrap();
    let handle = install(builder(&exporter));
    let name = unique("prom_moved");
    let stage = Stage::with_labels(name, &[("k", "v")]).unwrap();
    laptime::record(stage, US);
    assert!(handle.flush());
    let own = format!("laptime_{name}_seconds");
    let samples = parse(&exporter.render().unwrap());
    assert_eq!(value(&samples, &format!("{own}_count"), &[("k", "v")]), 1.0);

    // The exporter keeps each series' labels between scrapes: they must follow the series into
    // `stage_duration`, with the `stage` label that family needs.
    let gauge = exporter
        .gauge(&format!("{name}_seconds"), "Taken.")
        .unwrap();
    gauge.set(2.0);
    let samples = parse(&exporter.render().unwrap());
    let shared = "laptime_stage_duration_seconds_count";
    assert_eq!(value(&samples, shared, &[("stage", name), ("k", "v")]), 1.0);
    assert_eq!(value(&samples, &own, &[]), 2.0);
    assert!(find(&samples, &format!("{own}_count"), &[]).is_empty());
}

#[test]
fn labelled_stages_get_their_own_family_and_every_series_the_const_labels() {
    let _s = serial();
    let exporter = PrometheusExporter::builder()
        .with_namespace("mm")
        .with_unit(Unit::Milliseconds)
        .with_const_label("env", "canary")
        .with_const_label("instance", "mm-1")
        .with_const_label("version", "1.2.3")
        .with_window_quantiles(true)
        .build()
        .unwrap();
    let handle = install(builder(&exporter));
    let plain = unique("prom_plain");
    let req_name = unique("exchange.req");
    let req = Stage::with_labels(req_name, &[("verb", "post"), ("api", "batch-cancel")]).unwrap();
    let cancel = Stage::with_labels(req_name, &[("verb", "delete"), ("api", "order")]).unwrap();
    // Also a label the const labels already use: exported as `exported_env`.
    let clash = Stage::with_labels(unique("prom_clash"), &[("env", "inner")]).unwrap();
    // Same family name as `req` once sanitised: goes under the stage family instead.
    let twin_name: &'static str = Box::leak(req_name.replace('.', "_").into_boxed_str());
    let twin = Stage::with_labels(twin_name, &[("verb", "get")]).unwrap();

    laptime::record(plain, 3 * MS);
    laptime::record(req, 250 * US);
    laptime::record(req, 7 * MS);
    laptime::record(cancel, 40 * US);
    laptime::record(clash, 1 * MS);
    laptime::record(twin, 2 * MS);
    assert!(handle.flush());

    let text = exporter.render().unwrap();
    let samples = parse(&text);
    let consts = [
        ("env", "canary"),
        ("instance", "mm-1"),
        ("version", "1.2.3"),
    ];
    for s in &samples {
        if s.name.starts_with("mm_") {
            for (k, v) in consts {
                assert_eq!(s.labels.get(k).map(String::as_str), Some(v), "{s:?}");
            }
        }
    }

    let own = format!("mm_{}_ms", req_name.replace('.', "_"));
    let bounds = default_buckets();
    assert_histogram(
        &samples,
        &own,
        &[("verb", "post"), ("api", "batch-cancel")],
        &[250_000, 7_000_000],
        &bounds,
        1e6,
    );
    assert_histogram(
        &samples,
        &own,
        &[("verb", "delete"), ("api", "order")],
        &[40_000],
        &bounds,
        1e6,
    );
    for s in find(&samples, &format!("{own}_count"), &[]) {
        let names: Vec<_> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["api", "env", "instance", "verb", "version"],
            "{s:?}"
        );
    }
    assert_histogram(
        &samples,
        "mm_stage_duration_ms",
        &[("stage", plain)],
        &[3_000_000],
        &bounds,
        1e6,
    );
    assert_histogram(
        &samples,
        "mm_stage_duration_ms",
        &[("stage", twin_name), ("verb", "get")],
        &[2_000_000],
        &bounds,
        1e6,
    );
    // The name's total (its stage without labels, what `get_stats(req_name)` reads) is not
    // exported: every series of the name carries its labels, and the backend sums them.
    for s in samples.iter().filter(|s| s.name.starts_with("mm_")) {
        if [req_name, twin_name].contains(&s.labels.get("stage").map_or("", String::as_str)) {
            assert!(s.labels.contains_key("verb"), "{s:?}");
        }
    }
    assert!(laptime::get_stats(req_name, Window::Cumulative).is_some_and(|t| t.count == 3));
    let clash_family = format!("mm_{}_ms", clash.name());
    assert_eq!(
        value(
            &samples,
            &format!("{clash_family}_count"),
            &[("exported_env", "inner"), ("env", "canary")]
        ),
        1.0
    );
    // Milliseconds: `le` in ms.
    assert!(text.contains(r#"le="0.001""#), "1 µs as ms");
    assert!(text.contains(r#"le="10000""#), "10 s as ms");
    // Windowed quantiles are gauges, named as such, in the unit.
    let p99 = value(
        &samples,
        "mm_stage_window_quantile_ms",
        &[("stage", plain), ("window", "60s"), ("percentile", "99")],
    );
    assert_eq!(p99, 3.0);
    assert!(text.contains("# TYPE mm_stage_window_quantile_ms gauge"));
    assert!(text.contains(&format!("# TYPE {own} histogram")));
}

#[test]
fn windowed_quantiles_are_what_get_stats_reports() {
    let _s = serial();
    let exporter = PrometheusExporter::builder()
        .with_window_quantiles(true)
        .build()
        .unwrap();
    let handle = install(builder(&exporter));
    let name = unique("prom_quantiles");
    for v in spread(3_000, 3) {
        laptime::record(name, Duration::from_nanos(v));
    }
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    let snapshot = handle.snapshot();
    let mut checked = 0;
    for w in &snapshot.windows {
        if *w == Window::Cumulative {
            assert!(
                find(
                    &samples,
                    "laptime_stage_window_quantile_seconds",
                    &[("window", "cumulative")]
                )
                .is_empty(),
                "cumulative quantiles are the histogram's job"
            );
            continue;
        }
        let stats = handle.get_stats(name, *w).unwrap();
        let label = w.to_string();
        for (q, l) in [(0.5, "50"), (0.95, "95"), (0.99, "99"), (0.999, "99.9")] {
            let got = value(
                &samples,
                "laptime_stage_window_quantile_seconds",
                &[("stage", name), ("window", &label), ("percentile", l)],
            );
            let want = stats.quantile(q).unwrap().as_nanos() as f64 / 1e9;
            assert_eq!(got, want, "{label} p{q}");
            checked += 1;
        }
    }
    assert_eq!(checked, 12, "3 windows × 4 quantiles");
}

/// The 1 s window's exported percentiles of `stage` in `metric`, as (quantile, value).
fn window_gauges(samples: &[Sample], metric: &str, stage: &str) -> Vec<(f64, f64)> {
    [(0.5, "50"), (0.95, "95"), (0.99, "99"), (0.999, "99.9")]
        .into_iter()
        .map(|(q, l)| {
            let with = [("stage", stage), ("window", "1s"), ("percentile", l)];
            (q, value(samples, metric, &with))
        })
        .collect()
}

/// A saturated percentile is exported as +Inf; any other as get_stats reports it.
fn assert_gauge(got: f64, saturated: bool, reported: Option<Duration>, q: f64) {
    let want = if saturated {
        f64::INFINITY
    } else {
        reported.unwrap().as_nanos() as f64 / 1e9
    };
    assert_eq!(got, want, "p{q}");
}

/// A collector whose histograms end at 1 ms, exporting window quantiles.
fn exporting_quantiles_up_to_1ms() -> (PrometheusExporter, laptime::CollectorHandle) {
    let exporter = PrometheusExporter::builder()
        .with_window_quantiles(true)
        .build()
        .unwrap();
    let handle = install(builder(&exporter).with_histogram(3, Duration::from_millis(1)));
    (exporter, handle)
}

/// A window percentile whose rank falls among values past the histogram's range is exported as
/// +Inf, not as the range's top; the others keep their value.
#[test]
fn saturated_window_quantiles_are_exported_as_infinity() {
    let _s = serial();
    let (exporter, handle) = exporting_quantiles_up_to_1ms();
    let name = unique("prom_saturated");
    // 97 values inside the range, 3 past it: ranks 98–100 are saturated, so p99 (rank 99) and
    // p99.9 (rank 100) are, p50 and p95 (rank 95) are not.
    for _ in 0..97 {
        laptime::record(name, Duration::from_micros(100));
    }
    for _ in 0..3 {
        laptime::record(name, Duration::from_millis(5));
    }
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    let stats = handle.get_stats(name, Window::S1).unwrap();
    assert_eq!((stats.count, stats.saturated), (100, 3));
    let gauges = window_gauges(&samples, "laptime_stage_window_quantile_seconds", name);
    for (q, got) in gauges {
        assert_eq!(stats.is_saturated(q), q >= 0.99, "p{q}");
        assert_gauge(got, stats.is_saturated(q), stats.quantile(q), q);
        if !stats.is_saturated(q) {
            // The bucket of 100 µs, as get_stats reports it.
            assert!((100e-6..100.1e-6).contains(&got), "p{q}: {got}");
        }
    }
}

#[test]
fn guard_trips_and_deadline_misses_equal_the_library_counts() {
    let _s = serial();
    let exporter = PrometheusExporter::builder()
        .with_namespace("mm")
        .build()
        .unwrap();
    let tick = unique("prom_tick");
    let handle = install(builder(&exporter).with_deadline(tick, 200 * MS));
    let (vol, pos) = (unique("vol_hard"), unique("pos_limit"));
    for _ in 0..3 {
        laptime::record_trip(vol);
    }
    laptime::record_trip(pos);
    for d in [100 * MS, 250 * MS, 199 * MS, 201 * MS, 1000 * MS] {
        laptime::record(tick, d);
    }
    let quiet = unique("prom_quiet");
    laptime::Stage::new(quiet)
        .unwrap()
        .set_deadline(Some(5 * MS))
        .unwrap();
    assert!(handle.flush());

    let samples = parse(&exporter.render().unwrap());
    let trips = laptime::trip_counts(Window::Cumulative);
    for reason in [vol, pos] {
        let library = trips.iter().find(|(r, _)| *r == reason).unwrap().1;
        assert_eq!(
            value(&samples, "mm_guard_trips_total", &[("reason", reason)]),
            library as f64
        );
    }
    assert_eq!(
        value(&samples, "mm_guard_trips_total", &[("reason", vol)]),
        3.0
    );
    let misses = handle
        .get_stats(tick, Window::Cumulative)
        .unwrap()
        .deadline_misses;
    assert_eq!(misses, 3);
    assert_eq!(
        value(&samples, "mm_deadline_miss_total", &[("stage", tick)]),
        misses as f64
    );
    // A stage with a deadline and no span yet is exported at 0, so rate() works from the start.
    assert_eq!(
        value(&samples, "mm_deadline_miss_total", &[("stage", quiet)]),
        0.0
    );
}

#[test]
fn custom_buckets_default_and_per_stage() {
    let _s = serial();
    let coarse = [10 * US, 100 * US, MS, 10 * MS];
    let fine = [
        Duration::from_nanos(100),
        Duration::from_nanos(200),
        Duration::from_nanos(400),
    ];
    let special = unique("prom_fine");
    let exporter = PrometheusExporter::builder()
        .with_buckets(coarse)
        .with_stage_buckets(special, fine)
        .build()
        .unwrap();
    let handle = install(builder(&exporter));
    let other = unique("prom_coarse");
    let values = spread(1_000, 11);
    for v in &values {
        laptime::record(special, Duration::from_nanos(*v));
        laptime::record(other, Duration::from_nanos(*v));
    }
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    let family = "laptime_stage_duration_seconds";
    assert_histogram(&samples, family, &[("stage", special)], &values, &fine, 1e9);
    assert_histogram(&samples, family, &[("stage", other)], &values, &coarse, 1e9);
}

#[test]
fn drops_health_and_restarts_are_exported() {
    let _s = serial();
    let exporter = PrometheusExporter::builder().build().unwrap();
    // Two-record rings: most of a burst is dropped, and counted.
    let handle = install(builder(&exporter).with_ring_capacity(2));
    let name = unique("prom_drops");
    std::thread::spawn(move || {
        for _ in 0..500 {
            laptime::record(name, US);
        }
    })
    .join()
    .unwrap();
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    let stats = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!(stats.count + stats.dropped, 500);
    assert!(stats.dropped > 0);
    assert_eq!(
        value(
            &samples,
            "laptime_records_dropped_total",
            &[("stage", name)]
        ),
        stats.dropped as f64
    );
    let cancelled = unique("prom_cancelled");
    laptime::start(cancelled).cancel();
    drop(laptime::record_start(cancelled));
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    assert_eq!(
        value(
            &samples,
            "laptime_spans_cancelled_total",
            &[("stage", cancelled)]
        ),
        2.0
    );
    // The exposition and `health()` must come from the same cycle: the tiny rings may wake the
    // aggregator for another one in between, so take the pair again until no cycle ran (the
    // exporter's picture is handed over just before the snapshot is stored: check its cycle too).
    let (samples, h) = (0..100)
        .find_map(|_| {
            let before = handle.health();
            let samples = parse(&exporter.render().unwrap());
            let h = handle.health();
            let exported = value(&samples, "laptime_aggregator_cycles_total", &[]);
            (h.cycles == before.cycles && exported == h.cycles as f64).then_some((samples, h))
        })
        .expect("a render between two cycles");
    for (metric, want) in [
        ("laptime_records_aggregated_total", h.records as f64),
        ("laptime_records_produced_total", h.produced as f64),
        ("laptime_aggregator_cycles_total", h.cycles as f64),
        ("laptime_aggregator_restarts_total", 0.0),
        ("laptime_sampling_rate", h.sampling_rate),
        ("laptime_enabled", 1.0),
        ("laptime_ring_capacity_records", 2.0),
        ("laptime_ring_high_water_records", h.ring_high_water as f64),
        ("laptime_aggregator_lag_seconds", h.lag.as_secs_f64()),
    ] {
        assert_eq!(value(&samples, metric, &[]), want, "{metric}");
    }
    assert!(value(&samples, "laptime_aggregator_last_drain_age_seconds", &[]) >= 0.0);

    #[cfg(feature = "test-util")]
    {
        handle.inject_aggregator_panic();
        assert!(handle.flush());
        let samples = parse(&exporter.render().unwrap());
        assert_eq!(
            value(&samples, "laptime_aggregator_restarts_total", &[]),
            handle.health().aggregator_restarts as f64
        );
        assert!(handle.health().aggregator_restarts >= 1);
    }
}

#[test]
fn application_gauges_through_a_small_api() {
    let _s = serial();
    let exporter = PrometheusExporter::builder()
        .with_namespace("mm")
        .with_const_label("env", "baseline")
        .build()
        .unwrap();
    let gauge = exporter
        .gauge("parallel_symbols", "Symbols quoted in parallel.")
        .unwrap();
    gauge.set(4.0);
    let again = exporter.gauge("parallel_symbols", "other help").unwrap();
    again.inc();
    let samples = parse(&exporter.render().unwrap());
    assert_eq!(
        value(&samples, "mm_parallel_symbols", &[("env", "baseline")]),
        5.0,
        "the same gauge both times"
    );
    for bad in ["", "1x", "a-b", "a:b", "a b", "é"] {
        assert!(
            matches!(
                exporter.gauge(bad, "help"),
                Err(ExportError::InvalidMetricName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        exporter.gauge("empty_help", ""),
        Err(ExportError::EmptyHelp { .. })
    ));
    assert!(matches!(
        exporter.gauge("records_aggregated_total", "mine"),
        Err(ExportError::AlreadyRegistered { .. })
    ));
}

#[test]
fn bad_configuration_is_a_typed_error_never_a_panic() {
    let b = PrometheusExporter::builder;
    let err = |r: Result<PrometheusExporter, ExportError>| r.expect_err("must be refused");

    for ns in ["", "1mm", "m-m", "a:b", "m m"] {
        assert!(
            matches!(
                err(b().with_namespace(ns).build()),
                ExportError::InvalidNamespace { .. }
            ),
            "{ns:?}"
        );
    }
    for label in [
        "1x",
        "__x",
        "a-b",
        "",
        "stage",
        "le",
        "quantile",
        "window",
        "reason",
        "percentile",
    ] {
        assert!(
            matches!(
                err(b().with_const_label(label, "v").build()),
                ExportError::InvalidLabelName { .. }
            ),
            "{label:?}"
        );
    }
    assert!(matches!(
        err(b().with_const_label("env", "").build()),
        ExportError::EmptyLabelValue { .. }
    ));
    assert!(matches!(
        err(b()
            .with_const_label("env", "a")
            .with_const_label("env", "b")
            .build()),
        ExportError::DuplicateLabel { .. }
    ));
    assert!(matches!(
        err(b().with_buckets([]).build()),
        ExportError::EmptyBuckets { stage: None }
    ));
    assert_eq!(
        err(b().with_buckets([MS, US]).build()),
        ExportError::UnsortedBuckets {
            stage: None,
            bound: US
        }
    );
    assert!(matches!(
        err(b().with_buckets([US, MS, MS]).build()),
        ExportError::UnsortedBuckets { .. }
    ));
    assert!(matches!(
        err(b().with_stage_buckets("x", [MS, US]).build()),
        ExportError::UnsortedBuckets { stage: Some(_), .. }
    ));
    assert_eq!(
        err(b()
            .with_stage_buckets("x", [US])
            .with_stage_buckets("x", [MS])
            .build()),
        ExportError::DuplicateStageBuckets {
            stage: "x".to_owned()
        }
    );
    assert!(matches!(
        err(b().with_stage_buckets("x", []).build()),
        ExportError::EmptyBuckets { stage: Some(_) }
    ));
    assert!(matches!(
        err(b().with_stage_buckets("bad name", [US]).build()),
        ExportError::InvalidStageName { .. }
    ));
    let many: Vec<Duration> = (1..=300).map(Duration::from_nanos).collect();
    assert!(matches!(
        err(b().with_buckets(many).build()),
        ExportError::TooManyBuckets { count: 300, .. }
    ));

    // The same namespace and const labels twice in one registry: refused, typed.
    let registry = Registry::new();
    let first = b()
        .with_registry(registry.clone())
        .with_namespace("mm")
        .with_const_label("env", "canary")
        .build()
        .unwrap();
    let again = err(b()
        .with_registry(registry.clone())
        .with_namespace("mm")
        .with_const_label("env", "canary")
        .build());
    assert!(
        matches!(again, ExportError::AlreadyRegistered { .. }),
        "{again:?}"
    );
    // Other const label values are another series set: fine in the same registry.
    let baseline = b()
        .with_registry(registry.clone())
        .with_namespace("mm")
        .with_const_label("env", "baseline")
        .build()
        .unwrap();
    // The same names with other label names: the registry refuses, typed.
    let other = err(b()
        .with_registry(registry.clone())
        .with_namespace("mm")
        .build());
    assert!(matches!(other, ExportError::Registry { .. }), "{other:?}");
    // Dropping the last clone of an exporter frees its names.
    drop(first);
    b().with_registry(registry.clone())
        .with_namespace("mm")
        .with_const_label("env", "canary")
        .build()
        .expect("the dropped exporter's metrics were unregistered");
    drop(baseline);

    // Every message says something to act on.
    for e in [
        ExportError::InvalidNamespace {
            namespace: "1".into(),
        },
        ExportError::UnsortedBuckets {
            stage: Some("s".into()),
            bound: US,
        },
        again,
        other,
    ] {
        let msg = e.to_string();
        assert!(msg.contains(':'), "{msg}");
    }
}

#[test]
fn health_follows_the_collector_and_rendering_needs_none() {
    let _s = serial();
    let exporter = PrometheusExporter::builder().build().unwrap();
    assert!(exporter.health().is_err(), "nothing feeds it yet");
    let text = exporter.render().unwrap();
    assert!(
        parse(&text).is_empty(),
        "no figures before a collector: {text}"
    );
    let handle = install(builder(&exporter));
    let name = unique("prom_health");
    laptime::record(name, US);
    assert!(handle.flush());
    let ok = exporter.health().expect("fed a moment ago");
    assert!(ok.starts_with("ok"), "{ok}");
    drop(handle);
    let stopped = exporter.health().expect_err("its collector stopped");
    assert!(stopped.contains("stopped"), "{stopped}");
    // The last figures stay readable.
    let samples = parse(&exporter.render().unwrap());
    assert_eq!(
        value(
            &samples,
            "laptime_stage_duration_seconds_count",
            &[("stage", name)]
        ),
        1.0
    );
}

#[cfg(feature = "prometheus-process")]
#[test]
fn process_metrics_carry_the_const_labels() {
    let exporter = PrometheusExporter::builder()
        .with_const_label("env", "canary")
        .with_process_metrics(true)
        .build()
        .unwrap();
    let samples = parse(&exporter.render().unwrap());
    if cfg!(target_os = "linux") {
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_threads",
            "process_open_fds",
        ] {
            assert!(value(&samples, name, &[("env", "canary")]) >= 0.0, "{name}");
        }
        assert!(value(&samples, "process_threads", &[]) >= 1.0);
    }
}

/// `promtool check metrics` on `text`: `None` when promtool is not installed (which fails the
/// test under CI or `LAPTIME_REQUIRE_PROMTOOL=1`), else its exit code and output.
fn promtool(text: &str) -> Option<(i32, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var("LAPTIME_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "promtool is required here (CI or LAPTIME_REQUIRE_PROMTOOL=1) but not installed: \
                 apt-get install --no-install-recommends prometheus"
            );
            println!("SKIP: promtool not installed (apt-get install prometheus to run this check)");
            return None;
        }
        Err(e) => panic!("could not run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    Some((out.status.code().unwrap_or(-1), said))
}

/// Everything the export can emit, in one registry.
fn everything(unit: Unit) -> (PrometheusExporter, laptime::CollectorHandle) {
    let builder = PrometheusExporter::builder()
        .with_namespace("mm")
        .with_unit(unit)
        .with_const_label("env", "canary")
        .with_const_label("instance", "mm-1")
        .with_window_quantiles(true);
    #[cfg(feature = "prometheus-process")]
    let builder = builder.with_process_metrics(true);
    let exporter = builder.build().unwrap();
    let tick = unique("prom_lint_tick");
    let handle = install(builder_with_deadline(&exporter, tick));
    exporter
        .gauge("parallel_symbols", "Symbols quoted in parallel.")
        .unwrap()
        .set(4.0);
    let req = Stage::with_labels(
        unique("exchange_req"),
        &[("verb", "post"), ("api", "batch-cancel")],
    )
    .unwrap();
    for v in spread(2_000, 5) {
        laptime::record(tick, Duration::from_nanos(v));
        laptime::record(req, Duration::from_nanos(v / 3));
    }
    laptime::record(tick, 2 * Duration::from_secs(1));
    laptime::record_trip(unique("vol_hard"));
    assert!(handle.flush());
    (exporter, handle)
}

fn builder_with_deadline(exporter: &PrometheusExporter, tick: &'static str) -> CollectorBuilder {
    // Corrected too, so the lint sees the coordinated-omission families.
    builder(exporter)
        .with_deadline(tick, 200 * MS)
        .with_expected_interval(tick, MS)
}

#[test]
fn promtool_accepts_the_exposition() {
    let _s = serial();
    let (exporter, _handle) = everything(Unit::Seconds);
    let text = exporter.render().unwrap();
    assert!(text.contains("mm_guard_trips_total"));
    assert!(text.contains("mm_deadline_miss_total"));
    assert!(text.contains("mm_stage_window_quantile_seconds"));
    for family in [
        "mm_stage_duration_corrected_seconds",
        "mm_stage_window_quantile_corrected_seconds",
        "mm_stage_expected_interval_seconds",
        "mm_stage_values_synthesized_total",
        "mm_spans_produced_total",
        "mm_spans_in_rings",
        "mm_spans_unwound_total",
        "mm_spans_clock_backwards_total",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
    let Some((code, said)) = promtool(&text) else {
        return;
    };
    assert_eq!(code, 0, "promtool check metrics:\n{said}\n---\n{text}");
}

#[test]
fn promtool_flags_only_the_abbreviated_unit_of_the_ms_names() {
    let _s = serial();
    let (exporter, _handle) = everything(Unit::Milliseconds);
    let text = exporter.render().unwrap();
    assert!(text.contains("mm_stage_duration_ms_bucket"));
    let Some((code, said)) = promtool(&text) else {
        return;
    };
    // 3 = lint problems (1 would be a parse error): the `_ms` names and nothing else.
    assert_eq!(code, 3, "promtool check metrics:\n{said}");
    let problems: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!problems.is_empty());
    for p in problems {
        assert!(
            p.contains("_ms ") && p.contains("abbreviated units"),
            "unexpected promtool problem: {p}"
        );
    }
}

/// A corrected stage exports a second histogram whose buckets, `_count` and `_sum` are those of
/// the raw values plus the values HdrHistogram's loop adds (computed here), beside the raw one,
/// which is unchanged; its expected interval and synthesized count; and corrected windowed
/// quantiles equal to `get_stats(..).corrected`. A stage without an interval has none of them.
#[test]
fn a_corrected_stage_exports_its_corrected_histogram_beside_the_raw_one() {
    let _s = serial();
    let exporter = PrometheusExporter::builder()
        .with_namespace("mm")
        .with_window_quantiles(true)
        .build()
        .unwrap();
    let tick = unique("prom_co_tick");
    let plain = unique("prom_co_plain");
    let interval = 250 * US;
    let handle = install(builder(&exporter).with_expected_interval(tick, interval));

    let mut raw = spread(4_000, 21);
    // Stalls across the buckets: exactly at 2× (adds the interval itself), around bucket
    // bounds, past the last bound (10 s).
    raw.extend([
        500_000,
        500_001,
        2_000_000,
        5_000_000,
        1_000_000_000,
        12_000_000_000,
    ]);
    for v in &raw {
        laptime::record(tick, Duration::from_nanos(*v));
        laptime::record(plain, Duration::from_nanos(*v));
    }
    assert!(handle.flush());

    let i = u64::try_from(interval.as_nanos()).unwrap();
    let synthesized: Vec<u64> = raw.iter().flat_map(|&v| common::co_added(v, i)).collect();
    let mut corrected = raw.clone();
    corrected.extend(&synthesized);
    assert!(
        synthesized.len() > 48_000,
        "the 12 s stall alone adds 47 999"
    );

    let samples = parse(&exporter.render().unwrap());
    assert_stage(&samples, "mm_stage_duration_seconds", tick, &raw);
    assert_stage(
        &samples,
        "mm_stage_duration_corrected_seconds",
        tick,
        &corrected,
    );
    assert_eq!(
        value(
            &samples,
            "mm_stage_duration_corrected_seconds_count",
            &[("stage", tick)]
        ),
        value(
            &samples,
            "mm_stage_duration_seconds_count",
            &[("stage", tick)]
        ) + value(
            &samples,
            "mm_stage_values_synthesized_total",
            &[("stage", tick)]
        ),
        "corrected _count = raw _count + synthesized"
    );
    assert_eq!(
        value(
            &samples,
            "mm_stage_values_synthesized_total",
            &[("stage", tick)]
        ),
        synthesized.len() as f64
    );
    assert_eq!(
        value(
            &samples,
            "mm_stage_expected_interval_seconds",
            &[("stage", tick)]
        ),
        250e-6
    );

    // Windowed: what get_stats reports, per window and percentile.
    let mut checked = 0;
    for w in handle
        .snapshot()
        .windows
        .iter()
        .filter(|w| **w != Window::Cumulative)
    {
        let c = handle.get_stats(tick, *w).unwrap().corrected.unwrap();
        let label = w.to_string();
        for (q, l) in [(0.5, "50"), (0.95, "95"), (0.99, "99"), (0.999, "99.9")] {
            let got = value(
                &samples,
                "mm_stage_window_quantile_corrected_seconds",
                &[("stage", tick), ("window", &label), ("percentile", l)],
            );
            assert_eq!(
                got,
                c.quantile(q).unwrap().as_nanos() as f64 / 1e9,
                "{label} p{l}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12, "3 windows × 4 quantiles");

    // The uncorrected stage: raw histogram only.
    assert_stage(&samples, "mm_stage_duration_seconds", plain, &raw);
    for family in [
        "mm_stage_duration_corrected_seconds_count",
        "mm_stage_window_quantile_corrected_seconds",
        "mm_stage_expected_interval_seconds",
        "mm_stage_values_synthesized_total",
    ] {
        assert!(
            find(&samples, family, &[("stage", plain)]).is_empty(),
            "{family}"
        );
    }
}

/// No corrected stage at all: the corrected families are absent from the exposition (no empty
/// HELP/TYPE lines either), not zero.
#[test]
fn without_a_corrected_stage_the_corrected_families_are_absent() {
    let _s = serial();
    let exporter = PrometheusExporter::builder()
        .with_window_quantiles(true)
        .build()
        .unwrap();
    let handle = install(builder(&exporter));
    laptime::record(unique("prom_no_co"), 3 * MS);
    assert!(handle.flush());
    let text = exporter.render().unwrap();
    assert!(text.contains("laptime_stage_duration_seconds_count"));
    for family in [
        "stage_duration_corrected",
        "window_quantile_corrected",
        "expected_interval",
        "values_synthesized",
    ] {
        assert!(!text.contains(family), "{family} in\n{text}");
    }
}

/// The names the export uses are the ones `MetricNames` gives (which `laptime rules` and the
/// dashboard generator query).
#[test]
fn metric_names_name_the_new_families() {
    let n = laptime::export::prometheus::MetricNames::new("mm", Unit::Milliseconds);
    assert_eq!(
        n.stage_duration_corrected(),
        "mm_stage_duration_corrected_ms"
    );
    assert_eq!(
        n.window_quantile_corrected(),
        "mm_stage_window_quantile_corrected_ms"
    );
    assert_eq!(n.expected_interval(), "mm_stage_expected_interval_ms");
    assert_eq!(n.synthesized(), "mm_stage_values_synthesized_total");
    assert_eq!(n.produced(), "mm_spans_produced_total");
    assert_eq!(n.in_rings(), "mm_spans_in_rings");
    assert_eq!(n.unwound(), "mm_spans_unwound_total");
    assert_eq!(
        n.health("spans_clock_backwards_total").as_deref(),
        Some("mm_spans_clock_backwards_total")
    );
}

/// Per stage, in the exposition: produced = histogram _count + dropped + cancelled + in rings,
/// and produced is what the test made (spans, values, cancellations, panics), whatever was lost
/// to a two-record ring. Labelled stages are checked in their own family.
#[test]
fn the_accounting_identity_holds_per_stage_in_the_exposition() {
    let _s = serial();
    let exporter = PrometheusExporter::builder().build().unwrap();
    let handle = install(builder(&exporter).with_ring_capacity(2));
    let flood = unique("prom_acct_flood");
    let cancelled = unique("prom_acct_cancelled");
    let labelled = Stage::with_labels(unique("prom_acct_req"), &[("verb", "post")]).unwrap();
    let made = std::thread::spawn(move || {
        for i in 0..500u64 {
            laptime::record(flood, Duration::from_nanos(i));
            if i % 5 == 0 {
                laptime::record(labelled, US);
            }
        }
    });
    made.join().unwrap();
    laptime::start(cancelled).cancel();
    laptime::record(cancelled, US);
    let unwinding = std::thread::spawn(move || {
        let _span = laptime::start(cancelled);
        panic!("planted: a panic through a span");
    });
    assert!(unwinding.join().is_err());
    assert!(handle.flush());

    let samples = parse(&exporter.render().unwrap());
    let stats = |s: Stage| handle.get_stats(s, Window::Cumulative).unwrap();
    assert!(
        stats(Stage::new(flood).unwrap()).dropped > 0,
        "the ring overflowed"
    );
    let mut checked = 0;
    for (stage, count_family, count_labels, made) in [
        (
            Stage::new(flood).unwrap(),
            "laptime_stage_duration_seconds_count".to_owned(),
            vec![("stage", flood)],
            500,
        ),
        (
            Stage::new(cancelled).unwrap(),
            "laptime_stage_duration_seconds_count".to_owned(),
            vec![("stage", cancelled)],
            3,
        ),
        (
            labelled,
            format!("laptime_{}_seconds_count", labelled.name()),
            vec![("verb", "post")],
            100,
        ),
    ] {
        let with = [("stage", stage.name())];
        let produced = value(&samples, "laptime_spans_produced_total", &with);
        let count = value(&samples, &count_family, &count_labels);
        let dropped = value(&samples, "laptime_records_dropped_total", &with);
        let cancels = value(&samples, "laptime_spans_cancelled_total", &with);
        let in_rings = value(&samples, "laptime_spans_in_rings", &with);
        assert_eq!(
            produced,
            count + dropped + cancels + in_rings,
            "{}: produced {produced} = count {count} + dropped {dropped} + cancelled {cancels} + \
             in rings {in_rings}",
            stage.name()
        );
        assert_eq!(
            produced,
            made as f64,
            "{}: every call accounted for",
            stage.name()
        );
        assert_eq!(produced, stats(stage).produced as f64);
        checked += 1;
    }
    assert_eq!(checked, 3);
    let with = [("stage", cancelled)];
    assert_eq!(value(&samples, "laptime_spans_unwound_total", &with), 1.0);
    assert_eq!(value(&samples, "laptime_spans_cancelled_total", &with), 1.0);
    assert_eq!(
        value(&samples, "laptime_spans_clock_backwards_total", &[]),
        handle.health().backwards_spans as f64
    );
}

/// A family is one metric family with its label names: every series' histogram equals its own
/// values (computed here); the family total has no histogram (a backend sums the series) but
/// carries the accounting, which adds up over the series; the overflow series and the cap show.
#[test]
fn a_family_is_one_metric_family_with_its_series_its_overflow_and_its_cap() {
    let _s = serial();
    let exporter = PrometheusExporter::builder()
        .with_namespace("mm")
        .build()
        .unwrap();
    let handle = install(builder(&exporter));
    let name = unique("prom_order_exec");
    let options = laptime::FamilyOptions::new().with_max_series(3);
    let family = laptime::Family::with_options(name, &["pair", "side"], options).unwrap();
    let pairs = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"];
    let mut recorded: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (i, pair) in pairs.iter().enumerate() {
        let values = spread(200 + 50 * i, i as u64 + 1);
        // The fourth pair is past the cap: its values go to the overflow series, counted.
        let series = family.series_or_overflow(&[*pair, "buy"]);
        for v in &values {
            laptime::record(series, Duration::from_nanos(*v));
        }
        let key = if i < 3 {
            *pair
        } else {
            laptime::limits::OVERFLOW_VALUE
        };
        recorded.entry(key).or_default().extend(values);
    }
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    let own = format!("mm_{name}_seconds");
    for (pair, values) in &recorded {
        let side = if *pair == laptime::limits::OVERFLOW_VALUE {
            laptime::limits::OVERFLOW_VALUE
        } else {
            "buy"
        };
        let with = [("pair", *pair), ("side", side)];
        assert_histogram(&samples, &own, &with, values, &default_buckets(), 1e9);
    }
    // Series only: no sample of the family's histogram lacks the labels.
    let series_count = find(&samples, &format!("{own}_count"), &[]).len();
    assert_eq!(series_count, recorded.len(), "one histogram per series");
    let total = [("stage", name)];
    assert!(find(&samples, "mm_stage_duration_seconds_count", &total).is_empty());
    // The family's accounting, once for the family: every call is in a series' _count.
    let all: usize = recorded.values().map(Vec::len).sum();
    assert_eq!(
        value(&samples, "mm_spans_produced_total", &total),
        all as f64
    );
    assert_eq!(value(&samples, "mm_records_dropped_total", &total), 0.0);
    assert!(find(&samples, "mm_spans_produced_total", &[("pair", "BTC-USD")]).is_empty());
    let by_family = [("family", name)];
    assert_eq!(value(&samples, "mm_family_series", &by_family), 3.0);
    assert_eq!(value(&samples, "mm_family_series_max", &by_family), 3.0);
    let overflowed = recorded[laptime::limits::OVERFLOW_VALUE].len();
    assert_eq!(
        family.overflowed(),
        1,
        "one lookup went to the overflow series"
    );
    assert_eq!(
        value(&samples, "mm_family_overflowed_total", &by_family),
        1.0,
        "{overflowed} values through one overflowed lookup"
    );
}

/// The corrected window percentiles follow the raw ones' rule: a rank among the values past the
/// range (raw or added by the correction) is +Inf in the export and flagged in get_stats.
#[test]
fn saturated_corrected_quantiles_are_exported_as_infinity() {
    let _s = serial();
    let (exporter, handle) = exporting_quantiles_up_to_1ms();
    let name = unique("prom_corrected_saturated");
    let interval = Duration::from_micros(100);
    Stage::new(name)
        .unwrap()
        .set_expected_interval(Some(interval))
        .unwrap();
    for _ in 0..97 {
        laptime::record(name, interval);
    }
    // A 5 ms stall: HdrHistogram's rule adds 4.9 ms, 4.8 ms, … 0.1 ms (49 values), of which the
    // 39 above 1 ms are past the range, as is the 5 ms itself.
    laptime::record(name, Duration::from_millis(5));
    assert!(handle.flush());
    let stats = handle.get_stats(name, Window::S1).unwrap();
    let co = stats.corrected.clone().expect("a corrected stage");
    assert_eq!((co.count, co.synthesized, co.saturated), (147, 49, 40));
    let samples = parse(&exporter.render().unwrap());
    // 147 values, ranks 108–147 saturated: p50 (rank 74) is a value, p95 (140) and up are not.
    let metric = "laptime_stage_window_quantile_corrected_seconds";
    for (q, got) in window_gauges(&samples, metric, name) {
        assert_eq!(co.is_saturated(q), q >= 0.95, "p{q}");
        assert_gauge(got, co.is_saturated(q), co.quantile(q), q);
    }
}

/// The exposition's blocks (`# HELP` … up to the next family), by family name, in order.
fn family_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            blocks.push((name, String::new()));
        }
        let block = &mut blocks.last_mut().expect("text starts with # HELP").1;
        block.push_str(line);
        block.push('\n');
    }
    blocks
}

/// The exporter writes its histograms as text itself (at 20 000 series the prometheus crate's
/// path took ~200 ms a scrape); what it writes must be what the crate's encoder writes from the
/// same figures: every histogram family byte for byte, every family in the same place. Label
/// values with quotes, backslashes and non-ASCII letters, a family with many series (ordered by
/// label values), a labelled static stage, a corrected stage, const labels and an application
/// gauge are all in the picture.
#[test]
fn the_text_writer_writes_what_the_prometheus_encoder_writes() {
    use prometheus::Encoder;
    let _s = serial();
    let (exporter, handle) = everything(Unit::Seconds);
    let family = laptime::Family::new(unique("order_exec"), &["pair", "side"]).unwrap();
    let pairs = ["ZEC-USD", "a\"b", "back\\slash", "é-EUR", "AAA", "BTC-USD"];
    for (i, pair) in pairs.iter().enumerate() {
        for side in ["sell", "buy"] {
            let series = family.series(&[*pair, side]).unwrap();
            for v in spread(50 + i, i as u64) {
                laptime::record(series, Duration::from_nanos(v * 10));
            }
        }
    }
    assert!(handle.flush());
    // Once the collector stops, the published figures stay: both renders see the same ones.
    drop(handle);
    let written = exporter.render().unwrap();
    let mut encoded = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&Registry::gather(exporter.registry()), &mut encoded)
        .unwrap();
    let encoded = String::from_utf8(encoded).unwrap();
    let (written, encoded) = (family_blocks(&written), family_blocks(&encoded));
    let names = |b: &[(String, String)]| b.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&written),
        names(&encoded),
        "the same families, in the same order"
    );
    let mut histograms = 0;
    for ((name, w), (_, e)) in written.iter().zip(&encoded) {
        if w.contains(" histogram\n") {
            histograms += 1;
            assert_eq!(w, e, "{name}");
        }
    }
    assert!(histograms >= 3, "{histograms} histogram families compared");
    let ours = written
        .iter()
        .find(|(_, b)| b.contains("pair=\"a\\\"b\""))
        .expect("the family's series are exported, its quote escaped");
    assert!(ours.1.contains("pair=\"back\\\\slash\""), "{}", ours.1);
}

/// Two exporters in one registry (the second given the first's), one in seconds and one in
/// milliseconds: the text render writes each one's histograms in its own unit, as the crate's
/// encoder does.
#[test]
fn two_exporters_in_one_registry_keep_their_units() {
    use prometheus::Encoder;
    let _s = serial();
    let seconds = PrometheusExporter::builder().build().unwrap();
    let ms = PrometheusExporter::builder()
        .with_namespace("mm")
        .with_unit(Unit::Milliseconds)
        .with_registry(seconds.registry().clone())
        .build()
        .unwrap();
    let handle = install(builder(&seconds).with_prometheus(ms.clone()));
    let stage = unique("two_units");
    for v in spread(200, 3) {
        laptime::record(stage, Duration::from_nanos(v));
    }
    assert!(handle.flush());
    drop(handle);
    let written = seconds.render().unwrap();
    let mut encoded = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&seconds.registry().gather(), &mut encoded)
        .unwrap();
    let encoded = String::from_utf8(encoded).unwrap();
    let histograms = |text: &str| -> Vec<(String, String)> {
        family_blocks(text)
            .into_iter()
            .filter(|(_, b)| b.contains(" histogram\n"))
            .collect()
    };
    let (written, encoded) = (histograms(&written), histograms(&encoded));
    assert_eq!(written, encoded);
    let names: Vec<&str> = written.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"mm_stage_duration_ms"), "{names:?}");
    assert!(
        names.contains(&"laptime_stage_duration_seconds"),
        "{names:?}"
    );
}

#[laptime::measure(name = "zero_outcome", outcome)]
fn parse_qty(text: &str) -> Result<u32, std::num::ParseIntError> {
    text.parse()
}

/// Series exist at zero before their first record, so `rate()` counts that record: a registered
/// stage, and the `err` series of an `outcome` function from its first call. A family's overflow
/// series (registered with the family, seldom used) appears only once something goes to it.
#[test]
fn series_appear_at_zero_before_their_first_record_but_overflow_only_once_used() {
    let _s = serial();
    let exporter = PrometheusExporter::builder().build().unwrap();
    let handle = install(builder(&exporter));
    let registered = Stage::new(unique("zero_registered")).unwrap();
    let family = laptime::Family::new(unique("zero_family"), &["pair"]).unwrap();
    laptime::record(family.series(&["BTC"]).unwrap(), US);
    assert_eq!(parse_qty("7"), Ok(7));
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    let shared = "laptime_stage_duration_seconds_count";
    assert_eq!(
        value(&samples, shared, &[("stage", registered.name())]),
        0.0
    );
    let own = |name: &str| format!("laptime_{name}_seconds_count");
    assert_eq!(
        value(&samples, &own("zero_outcome"), &[("outcome", "ok")]),
        1.0
    );
    assert_eq!(
        value(&samples, &own("zero_outcome"), &[("outcome", "err")]),
        0.0
    );
    let family_count = own(family.name());
    assert_eq!(value(&samples, &family_count, &[("pair", "BTC")]), 1.0);
    assert!(
        find(&samples, &family_count, &[("pair", "__overflow__")]).is_empty(),
        "no overflow series before anything overflowed"
    );
    laptime::record(family.series_or_overflow(&[""]), US);
    assert!(handle.flush());
    let samples = parse(&exporter.render().unwrap());
    assert_eq!(
        value(&samples, &family_count, &[("pair", "__overflow__")]),
        1.0
    );
}
