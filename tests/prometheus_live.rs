//! The demo's endpoint scraped by a real Prometheus server (Debian's `/usr/bin/prometheus`).
//!
//! The demo (`demo/`, the `trading_tick` binary) runs a few seconds of ticks with `--listen 127.0.0.1:0`,
//! prints its whole-run figures as one JSON line, and keeps serving those final figures
//! (`--linger`). Prometheus scrapes it every second. Once a scrape has seen the final state (its
//! `_count` equals the library's count), the test asks Prometheus' HTTP API for:
//!
//! * `histogram_quantile(0.95, <bucket counters>)` of each stage, with no `rate()`: at a fixed
//!   state the cumulative buckets *are* the run's distribution, so the estimate and the library's
//!   own cumulative p95 must fall in the same bucket (the rank ⌈0.95·n⌉ the library uses and the
//!   rank 0.95·n Prometheus uses pick the same bucket; the library may report up to HDR's 0.1 %
//!   above a bucket's bound, as its value is the top of its HDR counter);
//! * every stage's `_count`, every guard-trip counter and every deadline-miss counter, which must
//!   equal the library's.
//!
//! It also runs `promtool check metrics` on what the endpoint serves.
//!
//! Both processes are started here, bound to 127.0.0.1, given bounded lifetimes, and killed by
//! their own PID when the test ends, however it ends. Without Prometheus the test prints SKIP,
//! unless `CI` is set (`.ci/run` sets it and installs Prometheus): then it fails.
#![cfg(feature = "http")]

#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/live.rs"]
mod live;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http_client::{get, wait_for};
use live::{FIRST_SCRAPE, Prometheus, TempDir, find_tool, query, single, skip_or_fail, start_demo};
use serde_json::Value;

/// How long the demo ticks.
const RUN_SECONDS: u64 = 4;
/// How long it serves its final figures afterwards, at most (the test kills it sooner).
const LINGER_SECONDS: u64 = 180;
const NAMESPACE: &str = "mm";
const ENV: &str = "live-test";

#[test]
fn prometheus_sees_what_the_library_counts() {
    let Some(prometheus) = find_tool("prometheus") else {
        skip_or_fail("no prometheus binary (apt-get install prometheus)");
        return;
    };
    let work = TempDir::new("laptime-prometheus-live");

    // The demo, on any free loopback port; it prints the address it got.
    let (_demo, lines, endpoint) = start_demo(
        &[
            "--seconds",
            &RUN_SECONDS.to_string(),
            "--env",
            ENV,
            "--linger",
            &LINGER_SECONDS.to_string(),
            "--summary-json",
        ],
        "demo",
    );

    // Prometheus, scraping the demo every second.
    let mut prom = Prometheus::start(
        &prometheus,
        work.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: laptime-demo\n    static_configs:\n      \
             - targets: ['{endpoint}']\n"
        ),
    );
    if !prom.wait_up("laptime-demo", 1) {
        skip_or_fail(&format!(
            "prometheus did not scrape the demo within {FIRST_SCRAPE:?}:\n{}",
            prom.log()
        ));
        return;
    }
    let prom_addr = prom.addr;

    // The library's own figures, after the run's final aggregation.
    let summary: Value = lines
        .wait_for_line(Duration::from_secs(RUN_SECONDS + 60), |l| {
            serde_json::from_str::<Value>(l)
                .ok()?
                .get("summary")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no summary line from the demo: {:?}", lines.seen()));
    let stages = summary["stages"].as_array().expect("stages");
    let tick = stages
        .iter()
        .find(|s| s["stage"] == "tick_total")
        .expect("tick_total in the summary");

    // Wait until a scrape has seen the final state: the demo no longer records, so every
    // later scrape returns the same figures.
    let tick_count = tick["count"].as_f64().unwrap();
    let final_seen = wait_for(Duration::from_secs(30), || {
        let n = query(prom_addr, &series(tick, "_count")).ok()?;
        (n.first()?.1 == tick_count).then_some(())
    });
    assert!(
        final_seen.is_some(),
        "prometheus never saw tick_total's final count {tick_count}: {:?}",
        query(prom_addr, &series(tick, "_count"))
    );

    let mut compared = 0;
    for stage in stages {
        let name = describe(stage);
        let count = stage["count"].as_f64().unwrap();
        let exported = single(prom_addr, &series(stage, "_count"));
        assert_eq!(
            exported, count,
            "{name}: _count in Prometheus vs the library"
        );

        // The bucket that holds the 0.95 rank, from the bucket counters Prometheus stored.
        let buckets = buckets(prom_addr, &series(stage, "_bucket"));
        assert_eq!(
            buckets.last().map(|b| b.1),
            Some(count),
            "{name}: +Inf bucket"
        );
        let rank = 0.95 * count;
        let at = buckets.iter().position(|b| b.1 >= rank).unwrap();
        let lower = if at == 0 { 0.0 } else { buckets[at - 1].0 };
        let upper = buckets[at].0;

        let estimate = single(
            prom_addr,
            &format!("histogram_quantile(0.95, {})", series(stage, "_bucket")),
        );
        let library = stage["p95_ns"].as_f64().unwrap() / 1e9;
        assert!(
            (lower..=upper).contains(&estimate),
            "{name}: Prometheus' p95 {estimate} s outside the bucket ({lower}, {upper}]"
        );
        assert!(
            library > lower && library <= upper * 1.001 + 1e-9,
            "{name}: the library's p95 {library} s is not in Prometheus' bucket ({lower}, {upper}] \
             (estimate {estimate} s)"
        );
        println!(
            "{name}: n={count} p95 library {library:.6} s, Prometheus {estimate:.6} s, \
             bucket ({lower}, {upper}]"
        );
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} stages compared");

    // Guard trips, reason by reason, both ways.
    let trips = summary["guard_trips"].as_object().expect("guard_trips");
    let exported: BTreeMap<String, f64> = query(
        prom_addr,
        &format!("{NAMESPACE}_guard_trips_total{{env=\"{ENV}\"}}"),
    )
    .unwrap()
    .into_iter()
    .map(|(labels, v)| (labels["reason"].as_str().unwrap().to_owned(), v))
    .collect();
    let library: BTreeMap<String, f64> = trips
        .iter()
        .map(|(r, n)| (r.clone(), n.as_f64().unwrap()))
        .collect();
    assert_eq!(exported, library, "guard trips: Prometheus vs the library");
    assert!(
        library.get("vol_soft").is_some_and(|&n| n > 0.0),
        "{library:?}"
    );

    // Deadline misses: every exported series equals the library's count for its stage, and
    // every stage with a deadline (tick_total) is exported.
    let misses = query(
        prom_addr,
        &format!("{NAMESPACE}_deadline_miss_total{{env=\"{ENV}\"}}"),
    )
    .unwrap();
    assert!(
        misses.iter().any(|(l, _)| l["stage"] == "tick_total"),
        "no tick_total deadline-miss series: {misses:?}"
    );
    for (labels, value) in &misses {
        let stage = stages
            .iter()
            .find(|s| {
                s["stage"] == labels["stage"]
                    && s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v))
            })
            .unwrap_or_else(|| panic!("a miss series for a stage the library lacks: {labels:?}"));
        assert_eq!(
            *value,
            stage["deadline_misses"].as_f64().unwrap(),
            "deadline misses of {}",
            describe(stage)
        );
    }

    // What the endpoint serves is clean by promtool's lint, and the endpoint says it is healthy.
    let metrics = get(endpoint, "/metrics").expect("GET /metrics");
    assert_eq!(metrics.status, 200);
    match find_tool("promtool") {
        Some(promtool) => promtool_check(&promtool, &metrics.body),
        None => skip_or_fail("no promtool to lint the exposition with"),
    }
    assert_eq!(get(endpoint, "/health").expect("GET /health").status, 200);
    println!(
        "prometheus agreed with the library on {compared} stages, {} guard reasons, {} miss series",
        library.len(),
        misses.len()
    );
}

/// `mm_stage_duration_seconds<suffix>{stage="x",env=".."}` for an unlabelled stage,
/// `mm_<name>_seconds<suffix>{k="v",..,env=".."}` for a labelled one. A name's total (its stage
/// without labels, which is not exported) is the sum of its labelled series, `by (le)` for the
/// buckets: Prometheus must add them up to the library's figures.
fn series(stage: &Value, suffix: &str) -> String {
    let name = stage["stage"].as_str().unwrap();
    if stage["total"] == true {
        let all = format!("{NAMESPACE}_{name}_seconds{suffix}{{env=\"{ENV}\"}}");
        return match suffix {
            "_bucket" => format!("sum by (le) ({all})"),
            _ => format!("sum({all})"),
        };
    }
    let labels = stage["labels"].as_object().unwrap();
    let mut matchers: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}")) // a JSON string is a valid PromQL string here
        .collect();
    matchers.push(format!("env=\"{ENV}\""));
    if labels.is_empty() {
        matchers.insert(0, format!("stage=\"{name}\""));
        format!(
            "{NAMESPACE}_stage_duration_seconds{suffix}{{{}}}",
            matchers.join(",")
        )
    } else {
        format!(
            "{NAMESPACE}_{name}_seconds{suffix}{{{}}}",
            matchers.join(",")
        )
    }
}

fn describe(stage: &Value) -> String {
    format!("{}{}", stage["stage"].as_str().unwrap(), stage["labels"])
}

/// A histogram's cumulative buckets as Prometheus stored them: (upper bound, count), by bound.
fn buckets(prom: SocketAddr, bucket_series: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = query(prom, bucket_series)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(labels, count)| {
            let le = labels["le"].as_str().unwrap();
            (le.parse::<f64>().unwrap(), count)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 1, "{bucket_series}: {buckets:?}");
    buckets
}

fn promtool_check(promtool: &Path, exposition: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
