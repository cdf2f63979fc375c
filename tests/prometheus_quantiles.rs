//! How far Prometheus' `histogram_quantile` lands from the exact quantile, on this library's
//! export, for the default 1-2-5 ladder and for a geometric ladder of 8 bounds a doubling.
//!
//! The test records 60 000 known values (log-normal, median 80 µs) into two stages with the same
//! values, one on each ladder, serves them on 127.0.0.1, and lets Debian's Prometheus scrape them
//! every second. Once a scrape holds every value, it asks Prometheus for `histogram_quantile(q,
//! …)` over the cumulative buckets (no `rate()`: the counts are final) and compares each answer
//! with the exact nearest-rank quantile of the values. The geometric ladder must keep every
//! answer within its documented bound (`geometric_buckets`: −8.3 % to +9.1 %); the 1-2-5 ladder
//! within its own (−60 % to +150 %). The errors are printed (`--nocapture`) as the figures the
//! docs quote.
//!
//! Prometheus is started here on a free loopback port with a bounded lifetime and stopped by its
//! own PID. Without it the test prints SKIP, unless `CI` is set: then it fails.
#![cfg(feature = "http")]

#[path = "common/exponential_reference.rs"]
mod exponential_reference;
#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/live.rs"]
mod live;

use std::time::Duration;

use http_client::wait_for;
use laptime::export::http::MetricsServer;
use laptime::export::prometheus::{PrometheusExporter, geometric_buckets};
use laptime::{Collector, Stage};
use live::{Prometheus, TempDir, find_tool, single, skip_or_fail};

const VALUES: usize = 60_000;
const PER_DOUBLING: u32 = 8;
const QUANTILES: [f64; 5] = [0.5, 0.9, 0.95, 0.99, 0.999];

/// The values, in nanoseconds: log-normal with median 80 µs and shape 0.8 (most between 10 µs
/// and 1 ms).
fn values() -> Vec<u64> {
    (exponential_reference::log_normal_ns(VALUES, 0.8).into_iter())
        .map(|v| v.max(1))
        .collect()
}

#[test]
fn histogram_quantile_stays_within_the_ladders_bound() {
    let Some(prometheus) = find_tool("prometheus") else {
        skip_or_fail("no prometheus binary (apt-get install prometheus)");
        return;
    };
    let ladder = geometric_buckets(
        Duration::from_micros(1),
        Duration::from_secs(10),
        PER_DOUBLING,
    );
    let exporter = PrometheusExporter::builder()
        .with_namespace("qe")
        .with_stage_buckets("geometric", ladder)
        .build()
        .expect("valid exporter");
    let _collector = Collector::builder()
        .with_ring_capacity(1 << 17)
        .with_prometheus(exporter.clone())
        .install()
        .expect("the test's only collector");
    let (classic, geometric) = (
        Stage::new("classic").unwrap(),
        Stage::new("geometric").unwrap(),
    );
    let mut values = values();
    for &v in &values {
        laptime::record(classic, Duration::from_nanos(v));
        laptime::record(geometric, Duration::from_nanos(v));
    }
    assert!(laptime::flush());
    let health = laptime::health().unwrap();
    assert_eq!((health.records, health.dropped), (2 * VALUES as u64, 0));
    let server = MetricsServer::builder()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .start(exporter)
        .expect("a free loopback port");

    let work = TempDir::new("laptime-prometheus-quantiles");
    let Some(prom) =
        Prometheus::scraping(&prometheus, work.path(), "quantiles", server.local_addr())
    else {
        return;
    };
    let count = |stage: &str| format!(r#"qe_stage_duration_seconds_count{{stage="{stage}"}}"#);
    let all_seen = wait_for(Duration::from_secs(30), || {
        let n = live::query(prom.addr, &count("geometric")).ok()?;
        (n.first()?.1 == VALUES as f64).then_some(())
    });
    assert!(
        all_seen.is_some(),
        "Prometheus never held all {VALUES} values"
    );

    values.sort_unstable();
    let r = 2f64.powf(1.0 / f64::from(PER_DOUBLING));
    for (stage, low, high) in [
        ("geometric", -(1.0 - 1.0 / r), r - 1.0),
        ("classic", -0.6, 1.5),
    ] {
        let mut errors = Vec::new();
        for q in QUANTILES {
            let exact = values[laptime::rank(q, VALUES as u64) as usize - 1] as f64 / 1e9;
            let promql = format!(
                r#"histogram_quantile({q}, sum by (le) (qe_stage_duration_seconds_bucket{{stage="{stage}"}}))"#
            );
            let estimate = single(prom.addr, &promql);
            let error = estimate / exact - 1.0;
            // Prometheus ranks at q·n, the library at ⌈q·n⌉: one order statistic apart, which a
            // bucket edge between them could add to the error; 0.1 % covers it here.
            assert!(
                (low - 1e-3..=high + 1e-3).contains(&error),
                "{stage} ladder, q {q}: Prometheus {estimate} s, exact {exact} s, error {:+.2} % \
                 outside [{:+.1} %, {:+.1} %]",
                100.0 * error,
                100.0 * low,
                100.0 * high
            );
            errors.push(format!("p{}: {:+.2} %", 100.0 * q, 100.0 * error));
        }
        println!(
            "{stage} ladder, histogram_quantile against exact: {}",
            errors.join(", ")
        );
    }
}
