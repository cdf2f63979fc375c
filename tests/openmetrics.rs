//! The OpenMetrics exposition against exact references:
//!
//! * parsed by a real OpenMetrics parser (`prometheus_client.openmetrics.parser` of Python's
//!   `prometheus_client`), every sample of the text exposition is in it with the same value (`le`
//!   compared as numbers), the only samples it adds are `_created` ones, and they carry the
//!   collector's install time;
//! * every stage histogram bucket's exemplar is the latest value of a kept golden trace that
//!   falls in it: tick id, value and bucket worked out here from `traces()`, the written files,
//!   and the protobuf exposition's classic buckets carrying the same.
//!
//! Without Python's `prometheus_client` the parser test prints SKIP, unless `CI` is set
//! (`.ci/run` installs it): then it fails.
#![cfg(all(feature = "http", feature = "trace", feature = "test-util"))]

mod common;
#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/live.rs"]
mod live;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{clock, install, serial};
use laptime::export::http::Exposition as _;
use laptime::export::prometheus::{PrometheusExporter, default_buckets};
use laptime::trace::{Reason, Trace, TraceConfig};
use laptime::{Collector, CollectorBuilder, Stage};
use live::unix_now;

const US: Duration = Duration::from_micros(1);
const REQ: &[(&str, &str)] = &[("verb", "post")];

fn builder(exporter: &PrometheusExporter) -> CollectorBuilder {
    clock();
    // A long interval: cycles run on flush and at stop.
    Collector::builder()
        .with_interval(Duration::from_secs(30))
        .with_ring_capacity(1 << 16)
        .with_prometheus(exporter.clone())
}

fn exporter(namespace: &str) -> PrometheusExporter {
    PrometheusExporter::builder()
        .with_namespace(namespace)
        .build()
        .expect("valid namespace")
}

/// Tick `i` on the mock clock: `om_a` (1–90 µs), then `om_b` (0–699 µs) holding a labelled
/// `om_req{verb="post"}` span (1–20 µs), all inside the root `om_tick`.
fn tick(i: u64) {
    let clock = clock();
    let mut lap = laptime::lap("om_tick");
    clock.advance(us(1 + i * 37 % 90));
    lap.split("om_a");
    {
        let _req = laptime::start(Stage::with_labels("om_req", REQ).expect("valid stage"));
        clock.advance(us(1 + i % 20));
    }
    clock.advance(us(i * 13 % 680));
    lap.end_with("om_b");
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// A stage histogram series: its family and labels (without `le`).
type Series = (String, BTreeMap<String, String>);

/// One exemplar as the exposition shows it.
#[derive(Debug, Clone, PartialEq)]
struct Shown {
    tick: u64,
    value: f64,
    at: f64,
}

/// Every bucket exemplar of `text`, by series and `le`.
fn exemplars(text: &str) -> BTreeMap<(Series, String), Shown> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((sample, exemplar)) = line.split_once(" # ") else {
            continue;
        };
        let (name, rest) = sample.split_once('{').expect("a bucket has labels");
        let family = name
            .strip_suffix("_bucket")
            .expect("only buckets")
            .to_owned();
        let mut labels = labels_of(rest.rsplit_once('}').expect("labels end").0);
        let le = labels.remove("le").expect("a bucket has le");
        let (ex_labels, rest) = exemplar
            .strip_prefix('{')
            .and_then(|e| e.split_once("} "))
            .expect("exemplar labels");
        let tick = ex_labels
            .strip_prefix("trace_id=\"tick_")
            .and_then(|t| t.strip_suffix('"'))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("trace_id=\"tick_<n>\": {line}"));
        let (value, at) = rest.split_once(' ').expect("value and timestamp");
        let shown = Shown {
            tick,
            value: value.parse().expect("value"),
            at: at.parse().expect("timestamp"),
        };
        assert!(
            out.insert(((family, labels), le), shown).is_none(),
            "{line}"
        );
    }
    out
}

/// `a="x",b="y"` (values without quotes or commas, as in these tests).
fn labels_of(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("name=value");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

/// The exemplars the exposition must show: for each value of each trace (oldest first), the
/// bucket it falls in takes it; the latest stays. `le` as the exposition writes it is compared
/// as a number by the caller.
fn expected(namespace: &str, traces: &[Trace]) -> BTreeMap<(Series, u64), (u64, u64)> {
    let bounds: Vec<u64> = default_buckets()
        .iter()
        .map(|d| d.as_nanos() as u64)
        .collect();
    let mut out = BTreeMap::new();
    for t in traces {
        let spans = t.spans.iter().map(|s| (s.name, s.labels, s.duration_ns));
        for (name, labels, ns) in std::iter::once((t.root, &[][..], t.duration_ns)).chain(spans) {
            let series = if labels.is_empty() {
                let stage = BTreeMap::from([("stage".to_owned(), name.to_owned())]);
                (format!("{namespace}_stage_duration_seconds"), stage)
            } else {
                let own = labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
                (format!("{namespace}_{name}_seconds"), own.collect())
            };
            // The bucket's bound (u64::MAX for +Inf): the first at or above the value.
            let bound = bounds
                .iter()
                .copied()
                .find(|b| *b >= ns)
                .unwrap_or(u64::MAX);
            out.insert((series, bound), (t.tick, ns));
        }
    }
    out
}

/// The exposition's exemplars checked against [`expected`]: the same buckets, each naming the
/// latest kept tick whose value falls in it, with that value, kept between `from` and `to`.
fn check_exemplars(text: &str, namespace: &str, traces: &[Trace], from: f64, to: f64) -> usize {
    let shown = exemplars(text);
    let want = expected(namespace, traces);
    let mut got = BTreeMap::new();
    for (((family, labels), le), s) in &shown {
        let bound = match le.as_str() {
            "+Inf" => u64::MAX,
            le => (le.parse::<f64>().expect("le") * 1e9).round() as u64,
        };
        assert!(
            (from..=to).contains(&s.at),
            "{family}{labels:?} le={le}: kept at {} outside [{from}, {to}]",
            s.at
        );
        let value_ns = (s.value * 1e9).round() as u64;
        assert_eq!(
            s.value,
            value_ns as f64 / 1e9,
            "the value is the trace's, in seconds"
        );
        got.insert(
            ((family.clone(), labels.clone()), bound),
            (s.tick, value_ns),
        );
    }
    assert_eq!(got, want, "exemplars by (series, bucket): (tick, value ns)");
    shown.len()
}

/// An exporter under namespace `ns` and a collector tracing as `config` says, half the ticks
/// sampled and every kept trace held in memory; and the time just before the install.
fn traced(ns: &str, config: TraceConfig) -> (PrometheusExporter, laptime::CollectorHandle, f64) {
    let exporter = exporter(ns);
    let from = unix_now();
    let config = config
        .with_sample_rate(0.5)
        .with_keep(laptime::trace::MAX_KEEP);
    let handle = install(builder(&exporter).with_tracing(config));
    (exporter, handle, from)
}

#[test]
fn exemplars_are_the_latest_kept_value_of_each_bucket() {
    let _serial = serial();
    let ns = "om_ex";
    let (exporter, handle, from) = traced(ns, TraceConfig::new("om_tick").with_golden(false));
    for i in 0..400 {
        tick(i);
        if i % 100 == 99 {
            // Exemplars follow across cycles; a stage the cycle did not refresh keeps its own.
            handle.flush();
        }
    }
    handle.flush();
    let to = unix_now();
    let traces = handle.traces();
    assert!(
        (100..300).contains(&traces.len()),
        "about half the ticks kept: {}",
        traces.len()
    );
    let text = exporter.render_openmetrics().expect("renders");
    let shown = check_exemplars(&text, ns, &traces, from, to);
    assert!(
        shown >= 10,
        "exemplars on several buckets of every stage: {shown}"
    );
    // The text format has no exemplars.
    assert!(!exporter.render().expect("renders").contains(" # {"));

    // The protobuf exposition's classic buckets carry the same ones.
    #[cfg(feature = "prometheus-native")]
    {
        use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;
        use prost::Message;
        let bytes = exporter.render_protobuf().expect("renders");
        let mut buf = bytes.as_slice();
        let om = exemplars(&text);
        let mut seen = 0;
        while !buf.is_empty() {
            let f = pb::MetricFamily::decode_length_delimited(&mut buf).expect("decodes");
            for m in &f.metric {
                let Some(h) = &m.histogram else { continue };
                let labels: BTreeMap<_, _> = m
                    .label
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                for b in &h.bucket {
                    let key = (
                        (f.name.clone(), labels.clone()),
                        format_le(b.upper_bound, &om),
                    );
                    let Some(shown) = om.get(&key) else {
                        assert!(
                            b.exemplar.is_none(),
                            "{key:?}: an exemplar OpenMetrics lacks"
                        );
                        continue;
                    };
                    let e = b.exemplar.as_ref().expect("the exemplar OpenMetrics shows");
                    assert_eq!(e.label[0].value, format!("tick_{}", shown.tick));
                    assert_eq!(e.value, shown.value);
                    let ts = e.timestamp.as_ref().expect("timestamp");
                    let at = ts.seconds as f64 + f64::from(ts.nanos) * 1e-9;
                    assert!((at - shown.at).abs() < 1e-6, "{at} vs {}", shown.at);
                    seen += 1;
                }
            }
        }
        let finite = om.keys().filter(|(_, le)| le != "+Inf").count();
        assert_eq!(
            seen, finite,
            "every finite bucket's exemplar is in the protobuf"
        );
    }
}

/// The `le` of `bound` as the OpenMetrics exposition wrote it (found among its keys).
#[cfg(feature = "prometheus-native")]
fn format_le(bound: f64, om: &BTreeMap<(Series, String), Shown>) -> String {
    om.keys()
        .map(|(_, le)| le)
        .find(|le| le.parse::<f64>().ok() == Some(bound))
        .cloned()
        .unwrap_or_else(|| bound.to_string())
}

#[test]
fn with_an_output_directory_exemplars_name_only_written_traces() {
    let _serial = serial();
    let ns = "om_files";
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openmetrics-traces");
    let _ = std::fs::remove_dir_all(&dir);
    let config = TraceConfig::new("om_tick")
        .with_golden_interval(25)
        .with_deadline(600 * US)
        .with_output_dir(&dir);
    let (exporter, handle, from) = traced(ns, config);
    for i in 0..300 {
        tick(i);
    }
    handle.flush();
    let to = unix_now();
    let traces = handle.traces();
    let written: Vec<Trace> = (traces.iter())
        .filter(|t| matches!(t.reason, Reason::Slow | Reason::Golden))
        .cloned()
        .collect();
    assert!(
        written.len() >= 12 && written.len() < traces.len(),
        "slow and golden ticks, and sampled ones besides: {} of {}",
        written.len(),
        traces.len()
    );
    let text = exporter.render_openmetrics().expect("renders");
    check_exemplars(&text, ns, &written, from, to);
    drop(handle);
    for (_, shown) in exemplars(&text) {
        let file = dir.join(format!("golden_trace_{}.json", shown.tick));
        let json = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        assert!(json.contains(&format!("\"trace_id\": \"tick_{}\"", shown.tick)));
    }
}

/// Reads an OpenMetrics exposition (stdin) with `prometheus_client`'s OpenMetrics parser and the
/// text exposition (argv[1]) with its text parser; prints, as JSON, the text samples the
/// OpenMetrics one lacks or shows with another value, the samples it adds, and the exemplars.
const COMPARE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

def key(s):
    labels = {k: (repr(float(v)) if k in ('le', 'quantile') else v) for k, v in s.labels.items()}
    return (s.name, tuple(sorted(labels.items())))

om = {}
types = {}
for f in om_parse(sys.stdin.read()):
    for s in f.samples:
        om[key(s)] = s
        types[s.name] = f.type
text = {}
for f in text_parse(open(sys.argv[1]).read()):
    for s in f.samples:
        text[key(s)] = s
missing = [[k[0], dict(k[1]), s.value] for k, s in text.items() if k not in om or om[k].value != s.value]
added = [[k[0], dict(k[1]), s.value, types[k[0]]] for k, s in om.items() if k not in text]
print(json.dumps({"missing": missing, "added": added, "samples": len(om)}))
"#;

#[test]
fn a_real_openmetrics_parser_reads_the_text_exposition_plus_created() {
    let _serial = serial();
    let Some(python) = live::find_tool("python3") else {
        live::skip_or_fail("no python3");
        return;
    };
    let has_parser = Command::new(&python)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_parser {
        live::skip_or_fail("no prometheus_client for python3 (pip install prometheus_client)");
        return;
    }
    let exporter = PrometheusExporter::builder()
        .with_namespace("om_parse")
        .with_const_label("env", "a \"quoted\\ value\nwith a newline")
        .with_window_quantiles(true)
        .build()
        .expect("valid");
    exporter
        .gauge("symbols", "Symbols \"quoted\" in parallel \\ help.")
        .expect("gauge")
        .set(4.0);
    let before = unix_now();
    let handle = install(
        builder(&exporter)
            .with_deadline("om_tick", 500 * US)
            .with_tracing(TraceConfig::new("om_tick").with_sample_rate(1.0)),
    );
    let after = unix_now();
    Stage::new("om_b")
        .expect("valid")
        .set_expected_interval(Some(200 * US))
        .expect("valid interval");
    for i in 0..200 {
        tick(i);
    }
    laptime::record("om_big", Duration::from_secs(20));
    handle.flush();
    // Both renders from one publication: a cycle between them changes the health figures.
    let (text, om) = (0..20)
        .find_map(|_| {
            let generation = exporter.generation();
            let text = exporter.render().expect("renders");
            let om = exporter.render_openmetrics().expect("renders");
            (exporter.generation() == generation).then_some((text, om))
        })
        .expect("a quiet moment between two cycles");
    assert!(om.ends_with("\n# EOF\n"), "ends in # EOF");
    assert!(om.contains(" # {trace_id=\"tick_"), "with exemplars");

    let text_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openmetrics-text.prom");
    std::fs::write(&text_file, &text).expect("write");
    let mut child = Command::new(&python)
        .args(["-c", COMPARE])
        .arg(&text_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(om.as_bytes())
        .expect("feed");
    let out = child.wait_with_output().expect("python3 ends");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition: {}\n{om}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    // The drain age is measured at scrape time: two renders, two values.
    let missing: Vec<_> = (report["missing"].as_array().expect("missing").iter())
        .filter(|m| m[0] != "om_parse_aggregator_last_drain_age_seconds")
        .collect();
    assert!(
        missing.is_empty(),
        "text samples missing or changed: {missing:?}"
    );
    let added = report["added"].as_array().expect("added");
    let mut created = std::collections::BTreeSet::new();
    for a in added {
        let name = a[0].as_str().expect("name");
        let family = name
            .strip_suffix("_created")
            .unwrap_or_else(|| panic!("only _created: {a}"));
        let at = a[2].as_f64().expect("value");
        assert!(
            (before - 1e-3..=after + 1e-3).contains(&at),
            "{a}: install time"
        );
        assert!(
            matches!(a[3].as_str(), Some("counter" | "histogram")),
            "{a}"
        );
        created.insert(family.to_owned());
    }
    // Every histogram of the export, and its counters but those the process keeps.
    for family in [
        "om_parse_stage_duration_seconds",
        "om_parse_stage_duration_corrected_seconds",
        "om_parse_om_req_seconds",
        "om_parse_deadline_miss",
        "om_parse_records_dropped",
        "om_parse_spans_produced",
        "om_parse_aggregator_cycles",
        "om_parse_stage_values_synthesized",
    ] {
        assert!(created.contains(family), "{family}_created: {created:?}");
    }
    for family in ["om_parse_rejected_calls", "om_parse_family_overflowed"] {
        assert!(
            !created.contains(family),
            "{family} counts across collectors"
        );
    }
    assert!(report["samples"].as_u64().expect("count") > 300);
}

/// What Prometheus 2.42 sends, without and with `--enable-feature=native-histograms`.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const NATIVE_ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[test]
fn metrics_answers_in_the_format_the_scraper_weighs_highest() {
    let _serial = serial();
    let exporter = exporter("om_http");
    let handle = install(builder(&exporter));
    tick(1);
    handle.flush();
    let server = laptime::export::http::MetricsServer::builder()
        .with_addr("127.0.0.1:0".parse().expect("address"))
        .start(exporter.clone())
        .expect("server starts");
    let addr = server.local_addr();
    let ask = |accept: Option<&str>| {
        let header = accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"));
        let raw = format!("GET /metrics HTTP/1.1\r\nHost: t\r\n{header}Connection: close\r\n\r\n");
        let r = http_client::send(addr, raw.as_bytes()).expect("GET /metrics");
        assert_eq!(r.status, 200, "{accept:?}");
        (r.header("content-type").map(str::to_owned), r.body)
    };
    let (ty, body) = ask(Some(PROMETHEUS_ACCEPT));
    assert_eq!(
        ty.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(body.ends_with("# EOF\n") && body.contains("om_http_stage_duration_seconds_created"));
    for plain in [None, Some("text/plain"), Some("*/*")] {
        let (ty, body) = ask(plain);
        assert_eq!(
            ty.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(!body.contains("# EOF") && body.contains("om_http_stage_duration_seconds_count"));
    }
    #[cfg(feature = "prometheus-native")]
    assert_eq!(
        ask(Some(NATIVE_ACCEPT)).0.as_deref(),
        Some(laptime::export::prometheus::PROTOBUF_CONTENT_TYPE)
    );
    #[cfg(not(feature = "prometheus-native"))]
    let _ = NATIVE_ACCEPT;
}
