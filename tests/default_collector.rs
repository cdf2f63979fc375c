//! Zero set-up: with no collector installed, the first span starts a default one; an `install`
//! after that replaces it, carrying over what it recorded. Each test is the first collector of its
//! process (nextest runs one process per test).

use std::time::Duration;

use laptime::{Collector, Window};

#[test]
fn the_default_collector_starts_on_the_first_span_and_gives_way_to_install() {
    assert!(laptime::snapshot().is_none(), "nothing installed yet");
    {
        let _g = laptime::start("zero_setup");
    }
    laptime::record("zero_setup", Duration::from_micros(250));
    assert!(laptime::flush(), "a default collector is running");
    assert_eq!(
        laptime::get_stats("zero_setup", Window::Cumulative)
            .unwrap()
            .count,
        2
    );
    let s = laptime::snapshot().unwrap();
    assert_eq!(
        s.windows,
        vec![Window::S1, Window::S5, Window::S60, Window::Cumulative]
    );

    // The user's own collector takes over: its settings apply, and the two values recorded
    // before it are carried into its cumulative figures, exactly.
    let handle = Collector::builder()
        .with_windows([laptime::WindowSpec::new(
            Duration::from_secs(2),
            Duration::from_millis(500),
        )])
        .install()
        .expect("the default collector gives way");
    laptime::record("zero_setup", Duration::from_micros(750));
    assert!(handle.flush());
    let all = handle
        .get_stats("zero_setup", Window::Cumulative)
        .expect("carried");
    assert_eq!(all.count, 3);
    assert_eq!(all.max, Duration::from_micros(750));
    let span_and_250us = all.mean * 3 - Duration::from_micros(750);
    assert!(span_and_250us >= Duration::from_micros(250), "{all:?}");
    assert_eq!(
        handle.snapshot().windows,
        vec![Window::Last(Duration::from_secs(2)), Window::Cumulative]
    );
    // Windows cover time since the install: only the value recorded after it.
    let recent = handle
        .get_stats("zero_setup", Window::Last(Duration::from_secs(2)))
        .expect("recorded after install");
    assert_eq!(recent.count, 1);

    // A collector someone installed does not give way.
    let err = Collector::builder()
        .install()
        .expect_err("the user's collector is current");
    assert!(matches!(
        err.kind,
        laptime::InstallErrorKind::AlreadyRunning
    ));
    drop(handle);
}

/// Installs a collector exporting to Prometheus under namespace `ns`, in place of the default one.
#[cfg(feature = "prometheus")]
fn install_exporting(
    ns: &str,
) -> (
    laptime::export::prometheus::PrometheusExporter,
    laptime::CollectorHandle,
) {
    let exporter = laptime::export::prometheus::PrometheusExporter::builder()
        .with_namespace(ns)
        .build()
        .unwrap();
    let handle = Collector::builder()
        .with_prometheus(exporter.clone())
        .install()
        .expect("the default collector gives way");
    (exporter, handle)
}

/// The values carried over reach the Prometheus export too: its `_count` is the engine's count,
/// and its buckets add up to it.
#[cfg(feature = "prometheus")]
#[test]
fn values_carried_from_the_default_collector_are_exported() {
    for micros in [3, 40, 900] {
        laptime::record("zero_setup_export", Duration::from_micros(micros));
    }
    assert!(laptime::flush());
    let (exporter, handle) = install_exporting("carried");
    laptime::record("zero_setup_export", Duration::from_micros(5));
    assert!(handle.flush());
    let text = exporter.render().unwrap();
    let sample = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let stage = "{stage=\"zero_setup_export\"}";
    assert_eq!(
        sample(&format!("carried_stage_duration_seconds_count{stage}")),
        4.0
    );
    let inf = "carried_stage_duration_seconds_bucket{stage=\"zero_setup_export\",le=\"+Inf\"}";
    assert_eq!(sample(inf), 4.0);
    let below_10us =
        "carried_stage_duration_seconds_bucket{stage=\"zero_setup_export\",le=\"0.00001\"}";
    assert_eq!(sample(below_10us), 2.0, "3 µs carried, 5 µs recorded after");
}

/// A family's series carried over are exported once: the series' `_count` is the engine's, and
/// the family total (replayed through its series, not again on its own) accounts for each value
/// once.
#[cfg(feature = "prometheus")]
#[test]
fn a_family_carried_from_the_default_collector_is_counted_once() {
    let family = laptime::Family::new("carried_fills", &["venue"]).unwrap();
    let series = family.series(&["x"]).unwrap();
    for micros in [3, 40, 900] {
        laptime::record(series, Duration::from_micros(micros));
    }
    assert!(laptime::flush());
    let (exporter, handle) = install_exporting("carried");
    laptime::record(series, Duration::from_micros(5));
    assert!(handle.flush());
    let total = handle
        .get_stats(family.total(), Window::Cumulative)
        .unwrap();
    assert_eq!(total.count, 4);
    let text = exporter.render().unwrap();
    let sample = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(
        sample("carried_carried_fills_seconds_count{venue=\"x\"}"),
        4.0
    );
    assert_eq!(
        sample("carried_spans_produced_total{stage=\"carried_fills\"}"),
        4.0
    );
}
