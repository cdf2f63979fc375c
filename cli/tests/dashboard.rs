//! The generated Grafana dashboard: its queries name only series the exporter produces, its
//! threshold lines are the configuration's limits, and it is the same JSON every time.
//! (`scripts/check_dashboard.sh` type-checks it against `@grafana/schema`.)

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use laptime::config::Config;
use laptime::export::prometheus::{MetricNames, Unit};
use laptime_cli::dashboard::dashboard;
use serde_json::Value;

/// The demo's configuration with the `[prometheus]` settings its exporter uses, whatever the
/// committed example file says about them, plus a labelled SLA rule and a mean rule.
const CONFIG: &str = r#"
[deadlines]
tick_total = "2ms"
stage_emit = "500us"

[expected_intervals]
tick_total = "1ms"

[[sla]]
stage = "tick_total"
window = "1s"
metric = "p95"
warning = "1.6ms"
critical = "2ms"

[[sla]]
stage = "tick_total"
window = "1s"
metric = "p99"
warning = "2ms"
critical = "2.5ms"

[[sla]]
stage = "tick_total"
window = "1s"
metric = "deadline_miss_rate"
warning = 0.01
critical = 0.02

[[sla]]
stage = "exchange_req"
labels = { verb = "post", api = "batch-cancel" }
window = "60s"
metric = "mean"
critical = "300us"

[trace]
root = "tick_total"

[prometheus]
namespace = "mm"
unit = "UNIT"
env_label = "deployment"
job = "trading"
gauges = ["parallel_symbols"]
labelled_stages = ["exchange_req"]

[alerts]
canary_regression_pct = 12.5
guard_trip_burst = { vol_hard = 3, latency_hard = 7 }
aggregator_stalled_after = "45s"
"#;

fn config(unit: &str) -> Config {
    Config::from_toml_str(&CONFIG.replace("UNIT", unit)).expect("the test's configuration parses")
}

/// Every panel, with the panels of rows flattened in.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

fn exprs(panel: &Value) -> Vec<&str> {
    panel["targets"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t["expr"].as_str().expect("expr"))
                .collect()
        })
        .unwrap_or_default()
}

/// The metric names a PromQL expression selects: identifiers right before a `{` selector.
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut in_string = false;
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'"' && (i == 0 || bytes[i - 1] != b'\\') {
            in_string = !in_string;
        }
        if in_string {
            start = None;
            continue;
        }
        let ident = b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        match (ident, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if b == b'{' {
                    out.push(expr[s..i].to_owned());
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// The names the exporter produces for `names`, with the histogram series suffixes, the
/// labelled family of `exchange_req` and the gauge `parallel_symbols`.
fn exported(names: &MetricNames) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for hist in [
        names.stage_duration().to_owned(),
        names.stage_duration_corrected().to_owned(),
        names.labelled_stage("exchange_req"),
    ] {
        for suffix in ["_bucket", "_sum", "_count"] {
            out.insert(format!("{hist}{suffix}"));
        }
    }
    for counter in [
        names.deadline_miss(),
        names.guard_trips(),
        names.dropped(),
        names.sampled_out(),
        names.cancelled(),
        names.window_quantile(),
    ] {
        out.insert(counter.to_owned());
    }
    for suffix in MetricNames::health_suffixes() {
        out.insert(names.health(suffix).expect("a known suffix"));
    }
    out.insert(format!("{}_parallel_symbols", names.namespace()));
    out
}

/// [`exported`] when the stage histograms go out as native histograms: each family under its
/// bare name, none of its `_bucket`, `_sum` or `_count` series.
fn exported_native(names: &MetricNames) -> BTreeSet<String> {
    let families = [
        names.stage_duration().to_owned(),
        names.stage_duration_corrected().to_owned(),
        names.labelled_stage("exchange_req"),
    ];
    let mut out = exported(names);
    for f in &families {
        for suffix in ["_bucket", "_sum", "_count"] {
            assert!(out.remove(&format!("{f}{suffix}")), "{f}{suffix}");
        }
    }
    out.extend(families);
    out
}

/// Names in the dashboard's queries that the exporter does not produce.
fn unknown_names(d: &Value, names: &MetricNames) -> Vec<String> {
    unknown_in(d, &exported(names))
}

/// Every query of the dashboard: its panels' and its variables'.
fn queries(d: &Value) -> Vec<&str> {
    let mut out: Vec<&str> = panels(d).into_iter().flat_map(exprs).collect();
    for v in d["templating"]["list"].as_array().expect("variables") {
        out.extend(v["query"]["query"].as_str());
    }
    out
}

/// Names in the dashboard's queries that are not in `known`.
fn unknown_in(d: &Value, known: &BTreeSet<String>) -> Vec<String> {
    queries(d)
        .into_iter()
        .flat_map(metric_names)
        .filter(|n| !known.contains(n))
        .collect()
}

#[test]
fn every_query_names_only_exported_series() {
    for (unit, u) in [("seconds", Unit::Seconds), ("ms", Unit::Milliseconds)] {
        let d = dashboard(&config(unit));
        let names = MetricNames::new("mm", u);
        let unknown = unknown_names(&d, &names);
        assert!(unknown.is_empty(), "{unit}: not exported: {unknown:?}");
        // Every query panel has queries, and each query selects at least one series.
        for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
            let e = exprs(p);
            assert!(!e.is_empty(), "panel {} has no query", p["title"]);
            for e in e {
                assert!(!metric_names(e).is_empty(), "{e}");
                assert!(e.contains("$job") || e.contains("job=~"), "{e}");
            }
        }
    }
}

#[test]
fn the_name_check_catches_a_misspelt_series() {
    let names = MetricNames::new("mm", Unit::Seconds);
    let mut d = dashboard(&config("seconds"));
    let first = d["panels"]
        .as_array_mut()
        .expect("panels")
        .iter_mut()
        .find(|p| p["title"] == "tick_total latency")
        .expect("the tick_total panel");
    let expr = first["targets"][0]["expr"]
        .as_str()
        .expect("expr")
        .to_owned();
    first["targets"][0]["expr"] = Value::from(expr.replace(
        "mm_stage_duration_seconds_bucket",
        "mm_stage_duration_second_bucket",
    ));
    assert_eq!(
        unknown_names(&d, &names),
        ["mm_stage_duration_second_bucket"]
    );
    // And a dashboard generated for another namespace does not pass as `mm`'s.
    let other = dashboard(&Config::from_toml_str("[prometheus]\nnamespace = \"other\"\n").unwrap());
    assert!(!unknown_names(&other, &names).is_empty());
}

fn panel<'a>(d: &'a Value, title: &str) -> &'a Value {
    panels(d)
        .into_iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?}"))
}

/// The non-null threshold steps of a panel, as (value, color), and whether they are drawn.
fn lines(p: &Value) -> Vec<(f64, String)> {
    let defaults = &p["fieldConfig"]["defaults"];
    assert_eq!(
        defaults["custom"]["thresholdsStyle"]["mode"], "dashed",
        "{}: thresholds not drawn",
        p["title"]
    );
    defaults["thresholds"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| !s["value"].is_null())
        .map(|s| {
            (
                s["value"].as_f64().expect("number"),
                s["color"].as_str().expect("color").to_owned(),
            )
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

fn assert_lines(got: &[(f64, String)], want: &[(f64, &str)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for ((g, gc), (w, wc)) in got.iter().zip(want) {
        assert!(close(*g, *w) && gc == wc, "{got:?} vs {want:?}");
    }
}

#[test]
fn thresholds_are_the_configurations() {
    for (unit, scale) in [("seconds", 1.0), ("ms", 1e3)] {
        let d = dashboard(&config(unit));
        // p95 warning 1.6 ms, critical 2 ms; p99 warning 2 ms (the critical red wins), critical
        // 2.5 ms; in the exported unit.
        let tick = panel(&d, "tick_total latency");
        assert_lines(
            &lines(tick),
            &[
                (1.6e-3 * scale, "orange"),
                (2e-3 * scale, "red"),
                (2.5e-3 * scale, "red"),
            ],
        );
        assert_eq!(
            tick["fieldConfig"]["defaults"]["unit"],
            if unit == "ms" { "ms" } else { "s" }
        );
        let quantiles: Vec<&str> = tick["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["legendFormat"].as_str().unwrap())
            .collect();
        assert_eq!(quantiles, ["p50", "p95", "p99"]);

        let labelled = panel(&d, "exchange_req{verb=post,api=batch-cancel} latency");
        assert_lines(&lines(labelled), &[(300e-6 * scale, "red")]);
        let first = labelled["targets"][0]["expr"].as_str().unwrap();
        let family = if unit == "ms" {
            "mm_exchange_req_ms_bucket"
        } else {
            "mm_exchange_req_seconds_bucket"
        };
        assert!(
            first.contains(&format!(r#"{family}{{verb="post",api="batch-cancel","#)),
            "{first}"
        );
        assert!(
            labelled["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["legendFormat"] == "mean")
        );

        assert_lines(
            &lines(panel(&d, "tick_total deadline-miss ratio")),
            &[(0.01, "orange"), (0.02, "red")],
        );
        // A stage with a deadline and no miss-rate rule: the alerts' default ratio.
        assert_lines(
            &lines(panel(&d, "stage_emit deadline-miss ratio")),
            &[(0.02, "red")],
        );
        assert_lines(
            &lines(panel(
                &d,
                "Guard trips per reason (an hour, at the current rate)",
            )),
            &[(3.0, "red"), (7.0, "red")],
        );
        assert_lines(
            &lines(panel(&d, "Aggregator lag and drain age")),
            &[(45.0, "red")],
        );
        assert_lines(
            &lines(panel(&d, "Canary p95 regression against baseline (%)")),
            &[(12.5, "red")],
        );
    }
}

#[test]
fn the_issues_panels_and_variables_are_there() {
    let d = dashboard(&config("seconds"));
    let breakdown = panel(&d, "Stage breakdown (mean per stage, stacked)");
    assert_eq!(
        breakdown["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"],
        "normal"
    );
    // The trace root holds the other stages: it is not stacked on them.
    assert!(exprs(breakdown)[0].contains(r#"stage!="tick_total""#));
    assert!(
        exprs(panel(&d, "exchange_req: p50 and p95 per label set"))[1]
            .contains("mm_exchange_req_seconds_bucket")
    );
    assert_eq!(
        exprs(panel(&d, "parallel_symbols")),
        [r#"mm_parallel_symbols{job=~"$job",instance=~"$instance",deployment=~"$env"}"#]
    );
    let health = panel(&d, "Records dropped and sampled out (per second)");
    assert!(exprs(health)[0].contains("mm_records_dropped_total"));
    assert!(exprs(panel(&d, "Sampling rate"))[0].contains("mm_sampling_rate"));
    let canary = exprs(panel(&d, "Canary p95 regression against baseline (%)"))[0];
    assert!(
        canary.contains(r#"deployment="canary""#) && canary.contains(r#"deployment="baseline""#)
    );
    assert!(
        exprs(panel(&d, "p95 per env (canary vs baseline)"))[0]
            .contains("sum by (le, stage, deployment)")
    );

    let vars: Vec<(&str, &str)> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        vars,
        [
            ("datasource", "datasource"),
            ("job", "query"),
            ("instance", "query"),
            ("env", "query")
        ]
    );
    let env = &d["templating"]["list"][3];
    assert_eq!(
        env["query"]["query"],
        r#"label_values(mm_stage_duration_seconds_count{job=~"$job"}, deployment)"#
    );
    assert_eq!(d["templating"]["list"][1]["current"]["value"], "trading");
    // Instance and env start at every value: with none selected a first load was empty.
    for i in [2, 3] {
        assert_eq!(
            d["templating"]["list"][i]["current"]["value"],
            serde_json::json!(["$__all"])
        );
    }
    // A panel that needs a canary and a baseline says so when there is none.
    let regression = panel(&d, "Canary p95 regression against baseline (%)");
    assert!(
        regression["fieldConfig"]["defaults"]["noValue"]
            .as_str()
            .is_some_and(|t| t.contains("canary") && t.contains("baseline")),
        "{regression}"
    );
    // Per label set: the drops of two label sets of one stage are not added up.
    assert!(
        exprs(health)[0].contains("sum without (instance)"),
        "{health}"
    );

    // Without gauges or labelled stages configured, those panels are left out.
    let plain = dashboard(&Config::from_toml_str("").unwrap());
    assert!(
        panels(&plain)
            .iter()
            .all(|p| p["title"] != "parallel_symbols")
    );
    assert!(
        panels(&plain)
            .iter()
            .all(|p| p["title"] != "Labelled stages")
    );
}

#[test]
fn the_json_is_stable_and_laid_out() {
    let c = config("seconds");
    let a = serde_json::to_string_pretty(&dashboard(&c)).unwrap();
    let b = serde_json::to_string_pretty(&dashboard(&config("seconds"))).unwrap();
    assert_eq!(a, b);
    let d = dashboard(&c);
    let ids: Vec<u64> = panels(&d)
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    // No two panels overlap on the 24-column grid.
    let boxes: Vec<[u64; 4]> = panels(&d)
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap())
        })
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        assert!(a[0] + a[2] <= 24);
        for b in &boxes[i + 1..] {
            let apart = a[0] + a[2] <= b[0]
                || b[0] + b[2] <= a[0]
                || a[1] + a[3] <= b[1]
                || b[1] + b[3] <= a[1];
            assert!(apart, "{a:?} overlaps {b:?}");
        }
    }
}

/// The demo's committed configuration gives a dashboard whose series the demo exports.
#[test]
fn the_demos_config_names_the_demos_series() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/trading_tick.toml");
    let c = Config::from_path(&path).expect("the demo's configuration parses");
    let d = dashboard(&c);
    let names = MetricNames::new(&c.prometheus.namespace, c.prometheus.unit.into());
    assert_eq!(names.namespace(), "mm");
    assert!(unknown_names(&d, &names).is_empty());
    panel(&d, "tick_total latency");
}

/// The dashboard's own keys of `[prometheus]` name the key and the line of a bad value.
#[test]
fn bad_gauge_and_stage_names_are_refused() {
    let err = Config::from_toml_str("[prometheus]\ngauges = [\"parallel-symbols\"]\n").unwrap_err();
    assert_eq!(
        (err.key(), err.line()),
        (Some("prometheus.gauges"), Some(2))
    );
    assert!(err.to_string().contains("parallel-symbols"), "{err}");
    let err = Config::from_toml_str("[prometheus]\nlabelled_stages = [\"\"]\n").unwrap_err();
    assert_eq!(err.key(), Some("prometheus.labelled_stages"));
    let ok = Config::from_toml_str("[prometheus]\ngauges = [\"parallel_symbols\"]\n").unwrap();
    assert_eq!(ok.prometheus.gauges, ["parallel_symbols"]);
}

/// A stage of `[expected_intervals]` gets a panel overlaying its raw and corrected p99, both
/// from histograms the exporter produces; without the table there is no such panel.
#[test]
fn a_corrected_stage_gets_a_raw_vs_corrected_p99_panel() {
    let d = dashboard(&config("seconds"));
    let p = panel(&d, "tick_total: raw vs CO-corrected p99");
    let e = exprs(p);
    assert_eq!(e.len(), 2);
    assert!(
        e[0].starts_with("histogram_quantile(0.99,")
            && e[0].contains("mm_stage_duration_seconds_bucket{stage=\"tick_total\""),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("histogram_quantile(0.99,")
            && e[1].contains("mm_stage_duration_corrected_seconds_bucket{stage=\"tick_total\""),
        "{e:?}"
    );
    assert!(p["description"].as_str().unwrap().contains("1.00ms"));
    let plain = dashboard(&Config::from_toml_str("").unwrap());
    assert!(
        panels(&plain)
            .iter()
            .all(|p| p["title"] != "Coordinated omission")
    );
}

/// With `[prometheus] native = true` every query reads the stage histograms as native
/// histograms: no `_bucket`, `_sum` or `_count` of a native family in any panel or variable,
/// and every name one the exporter sends.
#[test]
fn native_queries_read_no_classic_series_of_a_native_family() {
    for (unit, u) in [("seconds", Unit::Seconds), ("ms", Unit::Milliseconds)] {
        let text = common::with_native(&CONFIG.replace("UNIT", unit));
        let native = Config::from_toml_str(&text).unwrap();
        let forbidden = common::classic_series_of_native_families(&native);
        let reads = |d: &Value| -> Vec<String> {
            queries(d)
                .into_iter()
                .flat_map(common::promql_identifiers)
                .filter(|id| forbidden.iter().any(|f| f == id))
                .map(str::to_owned)
                .collect()
        };
        let d = dashboard(&native);
        assert_eq!(reads(&d), Vec::<String>::new(), "{unit}");
        // The check can fail: the classic dashboard reads those series.
        assert!(!reads(&dashboard(&config(unit))).is_empty(), "{unit}");
        let names = MetricNames::new("mm", u);
        assert_eq!(
            unknown_in(&d, &exported_native(&names)),
            Vec::<String>::new()
        );
        let all = queries(&d).join("\n");
        for form in [
            "histogram_quantile(0.99, sum(rate(mm_stage_duration_",
            "sum by (stage) (histogram_sum(rate(",
            "sum(histogram_count(rate(",
            "histogram_quantile(0.95, sum without (instance) (rate(mm_exchange_req_",
            "histogram_quantile(0.95, sum by (stage, deployment) (rate(",
        ] {
            assert!(all.contains(form), "{unit}: no {form} in {all}");
        }
    }
}

/// A native dashboard is the classic one with other queries: the same panels, titles, places,
/// legends and threshold lines, the same variables.
#[test]
fn native_and_classic_dashboards_differ_only_in_their_queries() {
    let strip = |mut d: Value| {
        for p in d["panels"].as_array_mut().expect("panels") {
            for t in p["targets"].as_array_mut().into_iter().flatten() {
                t["expr"] = Value::Null;
            }
        }
        for v in d["templating"]["list"].as_array_mut().expect("variables") {
            if v["query"].is_object() {
                v["query"]["query"] = Value::Null;
            }
        }
        d
    };
    let classic = dashboard(&config("seconds"));
    let native = dashboard(
        &Config::from_toml_str(&common::with_native(&CONFIG.replace("UNIT", "seconds"))).unwrap(),
    );
    assert_ne!(classic, native);
    assert_eq!(strip(classic), strip(native));
}
