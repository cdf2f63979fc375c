//! The recorder against an exact reference: values recorded with `metrics`' own macros come out
//! of `laptime::get_stats` with the same count, min and max, and percentiles within the series'
//! precision of the sorted values; every other route is checked with metrics-util's
//! `DebuggingRecorder` or the recorder's counts.

#[path = "../../../tests/common/reference.rs"]
mod reference;

use std::sync::Mutex;
use std::time::Duration;

use laptime::{Collector, CollectorHandle, Family, FamilyOptions, Metric, SlaRule, Stage, Window};
use laptime_metrics::{BridgeCounts, LaptimeRecorder};
use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use reference::{assert_matches_reference, spread_values};

/// `cargo test` runs a file's tests as threads of one process, and the collector is process-wide.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn install(builder: laptime::CollectorBuilder) -> CollectorHandle {
    builder.install().unwrap_or_else(|e| panic!("install: {e}"))
}

#[test]
fn labelled_time_histograms_match_the_sorted_reference() {
    let _s = serial();
    // Room for every record: the reference holds all of them, so none may be dropped.
    let handle = install(Collector::builder().with_ring_capacity(1 << 15));
    let recorder = LaptimeRecorder::builder().build().unwrap();
    let pairs = ["BTC-USD", "ETH-USD", "SOL-USD"];
    let mut reference: Vec<Vec<u64>> = vec![Vec::new(); pairs.len()];
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_histogram!("mb_order_latency", Unit::Microseconds, "order latency");
        for (i, pair) in pairs.iter().enumerate() {
            // Whole microseconds: exact in f64 and in nanoseconds.
            for us in spread_values(3_000, 7 + i as u64) {
                metrics::histogram!("mb_order_latency", "pair" => *pair).record(us as f64);
                reference[i].push(us * 1_000);
            }
        }
    });
    assert!(handle.flush());
    let family = Family::all()
        .into_iter()
        .find(|f| f.name() == "mb_order_latency")
        .expect("the key's name became a family");
    assert_eq!(family.label_names(), &["pair"]);
    for (pair, sorted) in pairs.iter().zip(&mut reference) {
        sorted.sort_unstable();
        assert_matches_reference(&handle, family.series(&[*pair]).unwrap(), sorted);
    }
    let mut all: Vec<u64> = reference.concat();
    all.sort_unstable();
    assert_matches_reference(&handle, family.total(), &all);
    assert_eq!(recorder.tally().counts(), BridgeCounts::default());
}

#[test]
fn every_time_unit_converts_and_suffixes_choose_without_a_description() {
    let _s = serial();
    let handle = install(Collector::builder());
    let recorder = LaptimeRecorder::builder()
        .with_time_suffix("_ms", Unit::Milliseconds)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_histogram!("mb_unit_ns", Unit::Nanoseconds, "");
        metrics::describe_histogram!("mb_unit_us", Unit::Microseconds, "");
        metrics::histogram!("mb_unit_ns").record(1_500.0);
        metrics::histogram!("mb_unit_us").record(1.5);
        metrics::histogram!("mb_unit_ms").record(0.0015);
        metrics::histogram!("mb_unit_seconds").record(0.000_001_5);
        // Half a nanosecond rounds to the nearest.
        metrics::histogram!("mb_unit_ns").record(0.6);
    });
    assert!(handle.flush());
    for name in ["mb_unit_us", "mb_unit_ms", "mb_unit_seconds"] {
        let s = handle.get_stats(name, Window::Cumulative).unwrap();
        assert_eq!((s.count, s.max), (1, Duration::from_nanos(1_500)), "{name}");
    }
    let ns = handle.get_stats("mb_unit_ns", Window::Cumulative).unwrap();
    assert_eq!(
        (ns.count, ns.min, ns.max),
        (2, Duration::from_nanos(1), Duration::from_nanos(1_500))
    );
}

#[test]
fn other_metrics_go_to_the_fallback_and_trip_counters_to_laptime() {
    let _s = serial();
    let handle = install(Collector::builder());
    let debugging = DebuggingRecorder::new();
    let snapshotter = debugging.snapshotter();
    let recorder = LaptimeRecorder::builder()
        .with_trip_counter("mb_breaker_trips_total", "mb_vol_hard")
        .with_fallback(debugging)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_histogram!("mb_fill_size", Unit::Count, "not a time");
        // Described as bytes: the suffix does not make it a time.
        metrics::describe_histogram!("mb_payload_seconds", Unit::Bytes, "");
        metrics::histogram!("mb_fill_size").record(3.0);
        metrics::histogram!("mb_payload_seconds").record(512.0);
        metrics::counter!("mb_orders_total", "venue" => "x").increment(5);
        metrics::gauge!("mb_open_orders").set(7.0);
        metrics::counter!("mb_breaker_trips_total", "why" => "vol").increment(2);
        metrics::counter!("mb_breaker_trips_total").increment(1);
    });
    assert!(handle.flush());
    let routed = snapshotter.snapshot().into_vec();
    let value = |name: &str| {
        routed
            .iter()
            .find(|(k, ..)| k.key().name() == name)
            .map(|(.., v)| v)
    };
    assert_eq!(
        value("mb_fill_size"),
        Some(&DebugValue::Histogram(vec![3.0.into()]))
    );
    assert_eq!(
        value("mb_payload_seconds"),
        Some(&DebugValue::Histogram(vec![512.0.into()]))
    );
    assert_eq!(value("mb_orders_total"), Some(&DebugValue::Counter(5)));
    assert_eq!(
        value("mb_open_orders"),
        Some(&DebugValue::Gauge(7.0.into()))
    );
    assert_eq!(
        value("mb_breaker_trips_total"),
        None,
        "trip counters stay in laptime"
    );
    assert!(Stage::lookup("mb_fill_size", &[]).is_none());
    let trips = laptime::trip_counts(Window::Cumulative);
    assert!(trips.contains(&("mb_vol_hard", 3)), "{trips:?}");
}

#[test]
fn bad_values_and_keys_are_counted_never_recorded_never_a_panic() {
    let _s = serial();
    let handle = install(Collector::builder());
    // Declared first with a cap of 2: the bridge's keys find this family.
    let family = Family::with_options(
        "mb_capped_seconds",
        &["pair"],
        FamilyOptions::new().with_max_series(2),
    )
    .unwrap();
    let recorder = LaptimeRecorder::builder().build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let h = metrics::histogram!("mb_bad_values_seconds");
        for v in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e-9] {
            h.record(v);
        }
        for pair in ["a", "b", "c", "d"] {
            metrics::histogram!("mb_capped_seconds", "pair" => pair).record(1e-6);
        }
        // A value laptime cannot carry, and label names other than the family's.
        metrics::histogram!("mb_capped_seconds", "pair" => "").record(1e-6);
        metrics::histogram!("mb_capped_seconds", "venue" => "x").record(1e-6);
        metrics::histogram!("mb_capped_seconds").record(1e-6);
        // Names laptime refuses: a label name reserved by the export, a name with a space.
        metrics::histogram!("mb_refused_seconds", "le" => "1").record(1.0);
        metrics::histogram!("mb refused_seconds").record(1.0);
        // A plain stage first: its labelled keys have nowhere to go.
        metrics::histogram!("mb_plain_first_seconds").record(1e-6);
        metrics::histogram!("mb_plain_first_seconds", "pair" => "a").record(1e-6);
        // Counters and gauges with no fallback.
        metrics::counter!("mb_unrouted_total").increment(1);
        metrics::gauge!("mb_unrouted").increment(1.0);
    });
    assert!(handle.flush());
    let counts = recorder.tally().counts();
    assert_eq!(counts.invalid_values, 4, "NaN, -1, +inf, -inf");
    assert_eq!(
        counts.refused, 3,
        "le=, the space, the plain stage's labelled key"
    );
    assert_eq!(counts.unrouted, 2);
    let s = handle
        .get_stats("mb_bad_values_seconds", Window::Cumulative)
        .unwrap();
    assert_eq!(
        (s.count, s.min, s.max),
        (2, Duration::ZERO, Duration::from_nanos(1))
    );
    assert_eq!(family.len(), 2);
    assert_eq!(
        family.overflowed(),
        5,
        "c, d, the empty value, venue=, no labels"
    );
    let overflow = handle
        .get_stats(family.overflow(), Window::Cumulative)
        .unwrap();
    assert_eq!(overflow.count, 5);
    assert_eq!(family.stats(Window::Cumulative).map(|s| s.count), Some(7));
}

#[test]
fn sla_rules_judge_series_fed_through_the_bridge() {
    let _s = serial();
    let handle = install(
        Collector::builder().with_sla_rule(
            SlaRule::new("mb_sla_latency_seconds", Window::Cumulative, Metric::P99)
                .with_labels(&[("pair", "BTC-USD")])
                .with_critical(Duration::from_micros(100)),
        ),
    );
    let recorder = LaptimeRecorder::builder().build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..100 {
            metrics::histogram!("mb_sla_latency_seconds", "pair" => "BTC-USD").record(0.001);
            metrics::histogram!("mb_sla_latency_seconds", "pair" => "ETH-USD").record(0.000_001);
        }
    });
    assert!(handle.flush());
    let violations = handle.check_sla_violations(Window::Cumulative);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].labels, &[("pair", "BTC-USD")]);
}

#[test]
fn series_fed_through_the_bridge_reach_the_prometheus_export() {
    let _s = serial();
    let exporter = laptime::export::prometheus::PrometheusExporter::builder()
        .with_namespace("mb")
        .build()
        .unwrap();
    let handle = install(Collector::builder().with_prometheus(exporter.clone()));
    let recorder = LaptimeRecorder::builder()
        .with_trip_counter("mb_prom_trips_total", "mb_prom_trip")
        .build()
        .unwrap();
    let stripped = LaptimeRecorder::builder()
        .with_time_suffix_stripped(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..3 {
            metrics::histogram!("mb_prom_latency_seconds", "pair" => "BTC-USD").record(2e-6);
        }
        metrics::counter!("mb_prom_trips_total").increment(1);
    });
    metrics::with_local_recorder(&stripped, || {
        metrics::histogram!("mb_prom_stripped_seconds", "pair" => "BTC-USD").record(2e-6);
    });
    assert!(handle.flush());
    let text = exporter.render().unwrap();
    let count = text
        .lines()
        .find(|l| l.contains("_count{") && l.contains(r#"pair="BTC-USD""#))
        .unwrap_or_else(|| panic!("no count line for the series:\n{text}"));
    // The stage keeps the metric's name, and the export adds its unit.
    assert!(
        count.starts_with("mb_mb_prom_latency_seconds_seconds_count"),
        "{count}"
    );
    assert!(count.ends_with(" 3"), "{count}");
    assert!(
        text.lines()
            .any(|l| l.contains(r#"reason="mb_prom_trip""#) && l.ends_with(" 1")),
        "the trip counter:\n{text}"
    );
    // Stripped: the stage is `mb_prom_stripped`, exported once with the unit.
    assert!(
        text.lines()
            .any(|l| l.starts_with("mb_mb_prom_stripped_seconds_count{") && l.ends_with(" 1")),
        "the stripped name:\n{text}"
    );
    assert!(Stage::lookup("mb_prom_stripped", &[("pair", "BTC-USD")]).is_some());
}
