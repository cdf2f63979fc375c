//! The demo's OpenMetrics exposition scraped by a real Prometheus (Debian's 2.42) with
//! `--enable-feature=exemplar-storage`: Prometheus asks for OpenMetrics first, stores the
//! `_created` samples as series and the buckets' exemplars, and `/api/v1/query_exemplars`
//! returns golden-trace tick ids whose values lie in their buckets.
//!
//! The demo runs with `demo/trading_tick.toml`, which keeps golden traces (20 % of ticks sampled,
//! slow ones always). Both processes are started here on 127.0.0.1 and killed by their own PID
//! however the test ends. Without Prometheus the test prints SKIP, unless `CI` is set: then it
//! fails.
#![cfg(feature = "http")]

#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/live.rs"]
mod live;

use std::path::Path;
use std::time::Duration;

use http_client::{encode, get, wait_for};
use live::{Prometheus, TempDir, find_tool, query, skip_or_fail, start_demo, unix_now};
use serde_json::Value;

const JOB: &str = "laptime-openmetrics";

#[test]
fn prometheus_stores_created_and_the_trace_exemplars() {
    let Some(prometheus) = find_tool("prometheus") else {
        skip_or_fail("no prometheus binary (apt-get install prometheus)");
        return;
    };
    let work = TempDir::new("laptime-openmetrics-live");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/trading_tick.toml");
    let started = unix_now();
    let (_demo, _lines, endpoint) = start_demo(
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--seconds",
            "4",
            "--linger",
            "180",
        ],
        "demo",
    );
    let flags = ["--enable-feature=exemplar-storage"];
    let Some(prom) = Prometheus::scraping_with(&prometheus, work.path(), JOB, endpoint, &flags)
    else {
        return;
    };

    // `_created` exists only in OpenMetrics: Prometheus 2.42 stores it as a series of its own,
    // at the demo's install time.
    let created =
        format!("mm_stage_duration_seconds_created{{stage=\"tick_total\",job=\"{JOB}\"}}");
    let at = wait_for(Duration::from_secs(30), || {
        query(prom.addr, &created).ok()?.first().map(|s| s.1)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {created}: did Prometheus scrape OpenMetrics?\n{}",
            prom.log()
        )
    });
    assert!(
        (started - 1.0..=unix_now()).contains(&at),
        "{created} = {at}, the demo started at {started}"
    );

    // The exemplars of tick_total's buckets: after the run (4 s), every bucket that held a kept
    // tick names one.
    let selector =
        format!("mm_stage_duration_seconds_bucket{{stage=\"tick_total\",job=\"{JOB}\"}}");
    let path = format!(
        "/api/v1/query_exemplars?query={}&start={}&end={}",
        encode(&selector),
        started - 60.0,
        unix_now() + 600.0
    );
    let series = wait_for(Duration::from_secs(30), || {
        let body: Value = serde_json::from_str(&get(prom.addr, &path).ok()?.body).ok()?;
        assert_eq!(body["status"], "success", "{body}");
        let data = body["data"].as_array()?.clone();
        (data.len() >= 2).then_some(data)
    })
    .unwrap_or_else(|| panic!("no exemplars on two buckets of tick_total\n{}", prom.log()));
    let bounds: Vec<f64> = laptime::export::prometheus::default_buckets()
        .iter()
        .map(Duration::as_secs_f64)
        .collect();
    let mut seen = 0;
    for s in &series {
        let le = s["seriesLabels"]["le"].as_str().expect("le");
        let upper = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("le")
        };
        let lower = bounds.iter().copied().rfind(|b| *b < upper).unwrap_or(0.0);
        for e in s["exemplars"].as_array().expect("exemplars") {
            let trace_id = e["labels"]["trace_id"].as_str().expect("trace_id");
            let tick: u64 = (trace_id.strip_prefix("tick_").and_then(|t| t.parse().ok()))
                .unwrap_or_else(|| panic!("trace_id {trace_id:?} is not tick_<n>"));
            assert!(tick >= 1, "{trace_id}");
            let value: f64 = e["value"].as_str().expect("value").parse().expect("number");
            assert!(
                value > lower && value <= upper,
                "{trace_id}: {value} s outside its bucket ({lower}, {upper}]"
            );
            let ts = e["timestamp"].as_f64().expect("timestamp");
            assert!(
                (started - 1.0..=unix_now()).contains(&ts),
                "{trace_id} at {ts}"
            );
            seen += 1;
        }
    }
    println!(
        "prometheus stored {seen} exemplars on {} buckets of tick_total; _created {at}",
        series.len()
    );
}
