//! `GET /stats`: the document is the served snapshot, window by window (every figure compared
//! with the snapshot's own `StageStats`, the SLA state and guard trips with what the scenario
//! recorded, a family's slowest series with the order its values were chosen in); a bad query is
//! answered 400 with the reason; no snapshot is 503; a document is built once per snapshot and
//! window.
#![cfg(feature = "http")]

mod common;
#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/stats_scenario.rs"]
mod stats_scenario;

use std::sync::Arc;

use http_client::{get, request, send};
use laptime::export::http::{MetricsServer, MetricsServerHandle};
use laptime::{Snapshot, StageStats, Window};
use serde_json::Value;
use stats_scenario::{Served, record};

fn serve() -> (MetricsServerHandle, Arc<Served>) {
    let served = Arc::new(Served::default());
    let server = MetricsServer::builder()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .start(Arc::clone(&served))
        .unwrap_or_else(|e| panic!("server failed to start: {e}"));
    (server, served)
}

fn stats_json(server: &MetricsServerHandle, query: &str) -> Value {
    let r = get(server.local_addr(), &format!("/stats{query}")).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

/// Every figure of one entry equals the snapshot's.
fn assert_entry(json: &Value, s: &StageStats) {
    assert_eq!(json["name"], s.stage);
    // (serde_json's map sorts by key: the order on the wire is checked on the raw text.)
    let mut labels: Vec<(String, String)> = json["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let mut expected: Vec<(String, String)> = s
        .labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    expected.sort();
    assert_eq!(labels, expected);
    let figures = [
        ("count", s.count),
        ("calls", s.calls),
        ("min_ns", ns(s.min)),
        ("max_ns", ns(s.max)),
        ("mean_ns", ns(s.mean)),
        ("p50_ns", ns(s.p50)),
        ("p90_ns", ns(s.p90)),
        ("p95_ns", ns(s.p95)),
        ("p99_ns", ns(s.p99)),
        ("p999_ns", ns(s.p999)),
        ("deadline_misses", s.deadline_misses),
        ("dropped", s.dropped),
    ];
    for (field, value) in figures {
        assert_eq!(json[field], value, "{} {field}", s.stage);
    }
}

fn assert_window(server: &MetricsServerHandle, snapshot: &Snapshot, window: Window) {
    let doc = stats_json(server, &format!("?window={window}"));
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["window"], window.to_string());
    assert_eq!(doc["health"]["records"], snapshot.health.records);
    let reference: Vec<&StageStats> = snapshot.all(window).collect();
    let stages = doc["stages"].as_array().unwrap();
    assert_eq!(stages.len(), reference.len(), "{window}");
    for (json, s) in stages.iter().zip(&reference) {
        assert_entry(json, s);
        // The 1 s rule's violation colours the stage in every window the document shows.
        let state = if s.stage == stats_scenario::SLOW {
            "critical"
        } else {
            "ok"
        };
        assert_eq!(json["sla"]["state"], state, "{} in {window}", s.stage);
        let family_total = s.stage == stats_scenario::FAMILY && s.labels.is_empty();
        assert_eq!(json["family_total"], family_total, "{}", s.stage);
        // REQ is only used with labels: its bare name is their total.
        let name_total = s.stage == stats_scenario::REQ && s.labels.is_empty();
        assert_eq!(json["total"], family_total || name_total, "{}", s.stage);
        let family = (s.stage == stats_scenario::FAMILY).then_some(stats_scenario::FAMILY);
        assert_eq!(json["family"], serde_json::json!(family), "{}", s.stage);
    }
    let trips: Vec<Value> = snapshot
        .trip_counts(window)
        .into_iter()
        .map(|(reason, count)| serde_json::json!({"reason": reason, "count": count}))
        .collect();
    assert_eq!(doc["guard_trips"], Value::Array(trips), "{window}");
    let ours =
        serde_json::json!({"reason": stats_scenario::REASON, "count": stats_scenario::TRIPS});
    assert!(
        doc["guard_trips"].as_array().unwrap().contains(&ours),
        "{window}: {doc}"
    );
}

#[test]
fn the_document_is_the_served_snapshot_window_by_window() {
    let _serial = common::serial();
    let scenario = record();
    let snapshot = scenario.handle.snapshot();
    let (server, served) = serve();
    served.set(Arc::clone(&snapshot));
    assert_eq!(snapshot.windows.len(), 4, "{:?}", snapshot.windows);
    for window in snapshot.windows.clone() {
        assert_window(&server, &snapshot, window);
    }
    // The rule that set the critical state: the 1 s max over 1 ms, observed 2 ms.
    let doc = stats_json(&server, "?window=cumulative");
    let slow = doc["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stats_scenario::SLOW)
        .unwrap();
    let rule = &slow["sla"]["rule"];
    assert_eq!(rule["window"], "1s");
    assert_eq!(rule["metric"], "max");
    assert_eq!(rule["threshold"], ns(stats_scenario::THRESHOLD));
    assert_eq!(
        rule["observed"],
        ns(snapshot
            .stats(Stage(stats_scenario::SLOW), Window::S1)
            .unwrap()
            .max)
    );
    // Labels on the wire are in the stage's order.
    let raw = get(server.local_addr(), "/stats?window=5s").unwrap().body;
    assert!(
        raw.contains(r#""labels":{"verb":"post","api":"batch"}"#),
        "{raw}"
    );
    // The name total of the labelled stage is an entry of its own, marked as a total.
    let name_total = doc["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stats_scenario::REQ && s["labels"] == serde_json::json!({}))
        .expect("the name total of the labelled stage");
    assert_eq!(
        (&name_total["total"], &name_total["family_total"]),
        (&Value::Bool(true), &Value::Bool(false))
    );
    // Without a window: the first kept one.
    assert_eq!(stats_json(&server, "")["window"], "1s");
}

#[allow(non_snake_case)]
fn Stage(name: &'static str) -> laptime::Stage {
    laptime::Stage::new(name).unwrap()
}

#[test]
fn a_family_lists_its_slowest_series_slowest_first() {
    let _serial = common::serial();
    let scenario = record();
    let snapshot = scenario.handle.snapshot();
    let (server, served) = serve();
    served.set(Arc::clone(&snapshot));
    let doc = stats_json(&server, "?window=5s");
    let families = doc["families"].as_array().unwrap();
    assert_eq!(families.len(), 1, "{families:?}");
    let family = &families[0];
    assert_eq!(family["name"], stats_scenario::FAMILY);
    assert_eq!(family["label_names"], serde_json::json!(["pair"]));
    assert_eq!(family["series"], 3);
    // Series i records only (i + 1) * 10 µs: the last pair is the slowest.
    let slowest: Vec<(&str, u64)> = family["slowest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["labels"]["pair"].as_str().unwrap(),
                s["p99_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(&str, u64)> = (0..3)
        .rev()
        .map(|i| {
            let p99 = snapshot.stats(scenario.series[i], Window::S5).unwrap().p99;
            (stats_scenario::PAIRS[i], ns(p99))
        })
        .collect();
    assert_eq!(slowest, expected);
    assert!(
        expected[0].1 >= 30_000 && expected[2].1 < 11_000,
        "{expected:?}"
    );
}

#[test]
fn bad_queries_get_400_with_the_reason_and_no_snapshot_is_503() {
    let _serial = common::serial();
    let (server, served) = serve();
    let addr = server.local_addr();
    let r = get(addr, "/stats").unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("no snapshot published yet"), "{r:?}");

    let scenario = record();
    served.set(scenario.handle.snapshot());
    for (query, reason) in [
        (
            "?window=2s",
            "window 2s is not kept by this process: use one of 1s, 5s, 60s, cumulative",
        ),
        ("?window=abc", "\"abc\" is not a window"),
        ("?window=0s", "has no length"),
        ("?window=1s&window=5s", "window is given twice"),
        ("?sort=p99", "unknown parameter \"sort\""),
        ("?window=%ZZ", "bad %-escape"),
    ] {
        let r = get(addr, &format!("/stats{query}")).unwrap();
        assert_eq!(r.status, 400, "{query}: {r:?}");
        assert!(r.body.starts_with("bad /stats query: "), "{query}: {r:?}");
        assert!(r.body.contains(reason), "{query}: {r:?}");
    }
    let s = server.stats();
    assert_eq!(s.bad_request, 6);
}

#[test]
fn a_document_is_built_once_per_snapshot_and_window_and_head_has_no_body() {
    let _serial = common::serial();
    let scenario = record();
    let (server, served) = serve();
    served.set(scenario.handle.snapshot());
    let first = get(server.local_addr(), "/stats?window=5s").unwrap();
    let again = get(server.local_addr(), "/stats?window=5s").unwrap();
    assert_eq!(first.body, again.body);
    let head = send(
        server.local_addr(),
        request("HEAD", "/stats?window=5s").as_bytes(),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(&*first.body.len().to_string())
    );
    let s = server.stats();
    assert_eq!((s.stats_renders, s.stats_cached), (1, 2), "{s:?}");
    // Another snapshot (the flush waits for a cycle, which publishes one): built again.
    let before = scenario.handle.snapshot();
    assert!(scenario.handle.flush());
    let after = scenario.handle.snapshot();
    assert!(!Arc::ptr_eq(&before, &after));
    served.set(after);
    let _ = get(server.local_addr(), "/stats?window=5s").unwrap();
    let _ = get(server.local_addr(), "/stats?window=1s").unwrap();
    assert_eq!(server.stats().stats_renders, 3);
}
