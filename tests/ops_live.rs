//! The generated operations files (`ops/` and `ops/native/`, written by `laptime rules --config
//! demo/trading_tick.toml --out ops`) against a real Prometheus server scraping the demo.
//!
//! Two demos run on loopback with `--config demo/trading_tick.toml`: `--env baseline`, and
//! `--env canary` with a planted slowdown (`--slow stage_fetch_md=10`, which puts the canary's
//! tick_total p95 near 3 ms, above the 2 ms critical p95 threshold of the configuration's SLA
//! rule; the baseline's is about 0.6 ms). Prometheus scrapes both every second under the job the
//! configuration names (`[prometheus] job`) and evaluates `ops/prometheus/rules.yml` every second.
//! Once both targets are up and every rate() has a few points, the test checks:
//!
//! * every recording rule's `expr`, run through `/api/v1/query`, returns a non-empty vector;
//! * every alert's `expr` runs (status success), and so does its *bool form*: each comparison
//!   operator of the expression given the `bool` modifier (`a > 0.002` becomes
//!   `a > bool 0.002`). A bool comparison keeps every series of its left side with 0 or 1 as
//!   its value, so the bool form is empty exactly when the alert's inputs have no data, whether
//!   or not the alert's condition holds in this run (the plain form is empty whenever the
//!   condition is false, which says nothing about its inputs). The bool form must be non-empty;
//! * every dashboard panel's query (`ops/grafana/dashboard.json`), with the template variables
//!   replaced by what Grafana would send (see [`substitute`]), returns a non-empty vector; the
//!   dashboard's variable queries (`label_values(...)`) find the job, both instances and both
//!   envs;
//! * the critical p95 SLO alert of tick_total goes pending (its `for` is 2 minutes, so it cannot
//!   fire during the test) or firing for env="canary" within a bounded wait, and is not active
//!   for env="baseline" at that moment.
//!
//! Every panel has data in this setup: the drop and sampled-out counters are exported at 0 per
//! stage, which is data, and the canary panels have both envs.
//!
//! All processes are bound to 127.0.0.1, have bounded lifetimes and are killed by their own PID
//! when the test ends. Without Prometheus the test prints SKIP, unless `CI` is set: then it fails.
#![cfg(feature = "http")]

#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/live.rs"]
mod live;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_client::{encode, get, wait_for};
use live::{FIRST_SCRAPE, Prometheus, TempDir, find_tool, query, skip_or_fail, start_demo};
use serde_json::Value;

/// How long each demo ticks: longer than the test, which kills them when done. Within the
/// test's first 30 s or so the demo's market stays calm (it turns volatile in the run's middle
/// third), so the baseline's p95 stays well under the threshold.
const RUN_SECONDS: &str = "120";
/// How long a demo would go on serving afterwards, at most.
const LINGER_SECONDS: &str = "30";
/// The planted regression of the canary (the demo accepts factors up to 10).
const CANARY_SLOWDOWN: &str = "stage_fetch_md=10";
/// The alert that the canary's slowdown must raise, and the baseline must not.
const P95_CRITICAL: &str = "MmTickTotalP95SloCritical";
/// The dashboard's `$__rate_interval`: what Grafana would pick for a 1 s scrape interval is
/// shorter, but the rules read 5 minutes; 1 minute covers every sample of this short run.
const RATE_INTERVAL: &str = "1m";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Which of the generated sets is checked: `ops/` over classic buckets, or `ops/native/` (`laptime
/// rules --native`) over the native histograms the demos export with `--native` to a Prometheus
/// started with `--enable-feature=native-histograms`.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Classic,
    Native,
}

#[test]
fn generated_rules_and_dashboard_have_data_and_the_planted_slowdown_alerts() {
    check_ops(Mode::Classic);
}

#[test]
fn generated_native_rules_and_dashboard_have_data_and_the_planted_slowdown_alerts() {
    check_ops(Mode::Native);
}

fn check_ops(mode: Mode) {
    let Some(prometheus) = find_tool("prometheus") else {
        skip_or_fail("no prometheus binary (apt-get install prometheus)");
        return;
    };
    let ops = root().join(match mode {
        Mode::Classic => "ops",
        Mode::Native => "ops/native",
    });
    let config_file = root().join("demo/trading_tick.toml");
    let rules_file = ops.join("prometheus/rules.yml");
    let dashboard_file = ops.join("grafana/dashboard.json");
    let job = prometheus_job(&config_file);
    let rules = Rule::parse_file(&rules_file);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_file).unwrap()).unwrap();
    let work = TempDir::new("laptime-ops-live");

    let config = config_file.to_str().unwrap();
    let mut common = vec![
        "--config",
        config,
        "--seconds",
        RUN_SECONDS,
        "--linger",
        LINGER_SECONDS,
    ];
    if mode == Mode::Native {
        common.push("--native");
    }
    let (_baseline, _baseline_lines, baseline) = start_demo(
        &[&common[..], &["--env", "baseline"]].concat(),
        "baseline demo",
    );
    let (_canary, _canary_lines, canary) = start_demo(
        &[&common[..], &["--env", "canary", "--slow", CANARY_SLOWDOWN]].concat(),
        "canary demo",
    );

    let flags: &[&str] = match mode {
        Mode::Classic => &[],
        Mode::Native => &["--enable-feature=native-histograms"],
    };
    let mut prom = Prometheus::start_with(
        &prometheus,
        work.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: {job}\n    static_configs:\n      \
             - targets: ['{baseline}', '{canary}']\n",
            serde_json::to_string(rules_file.to_str().unwrap()).unwrap()
        ),
        flags,
    );
    if !prom.wait_up(&job, 2) {
        skip_or_fail(&format!(
            "prometheus did not scrape both demos within {FIRST_SCRAPE:?}:\n{}",
            prom.log()
        ));
        return;
    }
    let addr = prom.addr;

    // rate() needs two samples in its range; wait for three scrapes of both demos, and for the
    // rules to have recorded the p95 of both envs (the canary alert reads those series).
    let count = match mode {
        Mode::Classic => {
            format!("mm_stage_duration_seconds_count{{stage=\"tick_total\",job=\"{job}\"}}[1m]")
        }
        Mode::Native => format!(
            "histogram_count(mm_stage_duration_seconds{{stage=\"tick_total\",job=\"{job}\"}})[1m:1s]"
        ),
    };
    let ready = wait_for(Duration::from_secs(30), || {
        let scraped = query(addr, &format!("count_over_time({count}) >= 3")).ok()?;
        let recorded = query(addr, "mm:stage_latency_seconds:p95{stage=\"tick_total\"}").ok()?;
        (scraped.len() == 2 && recorded.len() == 2).then_some(())
    });
    assert!(
        ready.is_some(),
        "no three scrapes of both demos, or no recorded p95 of both envs, within 30 s:\n{}",
        prom.log()
    );

    let mut empty = Vec::new();
    for rule in &rules {
        let result = query(addr, &rule.expr).unwrap_or_else(|e| panic!("{}: {e}", rule.name));
        match rule.kind {
            Kind::Record if result.is_empty() => empty.push(format!("record {}", rule.name)),
            Kind::Record => {}
            Kind::Alert => {
                let bool_form = with_bool(&rule.expr);
                let inputs =
                    query(addr, &bool_form).unwrap_or_else(|e| panic!("{}: {e}", rule.name));
                if inputs.is_empty() {
                    empty.push(format!("alert {} ({bool_form})", rule.name));
                }
            }
        }
    }
    assert!(empty.is_empty(), "rules without data: {empty:#?}");
    let records = rules.iter().filter(|r| r.kind == Kind::Record).count();
    println!("{} rules ({records} recording) ran with data", rules.len());

    let vars = variables(&dashboard, &job);
    check_variable_queries(addr, &dashboard, &vars, &job);
    let mut panels = 0;
    // The names the legend gives each panel's lines: two alike and a reader cannot tell which
    // is which (the labelled stage's panel named its six lines "p50" and "p95").
    let mut legends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (title, expr, legend) in panel_queries(&dashboard) {
        let promql = substitute(&expr, &vars);
        let result = query(addr, &promql).unwrap_or_else(|e| panic!("panel {title:?}: {e}"));
        if result.is_empty() {
            empty.push(format!("panel {title:?}: {promql}"));
        }
        let names = legends.entry(title).or_default();
        names.extend(
            result
                .iter()
                .map(|(labels, _)| legend_name(&legend, labels)),
        );
        panels += 1;
    }
    assert!(empty.is_empty(), "panel queries without data: {empty:#?}");
    for (title, names) in &legends {
        let distinct: BTreeSet<&String> = names.iter().collect();
        assert_eq!(
            distinct.len(),
            names.len(),
            "panel {title:?} names two of its lines alike: {names:?}"
        );
    }
    assert!(panels >= 10, "only {panels} panel queries in the dashboard");
    println!("{panels} panel queries ran with data");

    // The planted slowdown: the canary's critical p95 alert goes pending (or firing).
    assert!(
        rules.iter().any(|r| r.name == P95_CRITICAL),
        "no alert {P95_CRITICAL} in {}",
        rules_file.display()
    );
    let active = wait_for(Duration::from_secs(60), || {
        let alerts = active_alerts(addr, P95_CRITICAL);
        alerts.contains_key("canary").then_some(alerts)
    })
    .unwrap_or_else(|| {
        panic!(
            "{P95_CRITICAL} never went pending for env=canary within 60 s; alerts: {}",
            get(addr, "/api/v1/alerts")
                .map(|r| r.body)
                .unwrap_or_default()
        )
    });
    assert!(
        !active.contains_key("baseline"),
        "{P95_CRITICAL} is active for the baseline too: {active:?}"
    );
    println!("{P95_CRITICAL}: {active:?}");
}

/// `[prometheus] job` of the configuration file: the job the rules and dashboard expect.
fn prometheus_job(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[prometheus]"
            && let Some(value) = line.strip_prefix("job").map(str::trim_start)
            && let Some(value) = value.strip_prefix('=')
        {
            let value = value.split('#').next().unwrap().trim();
            return serde_json::from_str(value)
                .unwrap_or_else(|e| panic!("[prometheus] job = {value}: {e}"));
        }
    }
    panic!("no [prometheus] job in {}", config.display())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Record,
    Alert,
}

/// A rule of the generated rules file.
#[derive(Debug)]
struct Rule {
    kind: Kind,
    name: String,
    expr: String,
}

impl Rule {
    /// The rules of a file `laptime rules` wrote: its format is fixed, one `- record: "name"` or
    /// `- alert: "name"` line per rule with the rule's `expr: "..."` on the next line, every
    /// value a JSON string (which YAML reads the same).
    fn parse_file(path: &Path) -> Vec<Rule> {
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let string = |value: &str, at: usize| -> String {
            serde_json::from_str(value.trim()).unwrap_or_else(|e| {
                panic!(
                    "{}:{}: not a JSON string: {value} ({e})",
                    path.display(),
                    at + 1
                )
            })
        };
        let mut rules = Vec::new();
        for (at, line) in lines.iter().enumerate() {
            let (kind, name) = if let Some(name) = line.strip_prefix("- record:") {
                (Kind::Record, name)
            } else if let Some(name) = line.strip_prefix("- alert:") {
                (Kind::Alert, name)
            } else {
                continue;
            };
            let expr = lines
                .get(at + 1)
                .and_then(|l| l.strip_prefix("expr:"))
                .unwrap_or_else(|| panic!("{}:{}: no expr after it", path.display(), at + 2));
            rules.push(Rule {
                kind,
                name: string(name, at),
                expr: string(expr, at + 1),
            });
        }
        // Every rule was found: as many as the file has `expr:` lines.
        let exprs = lines.iter().filter(|l| l.starts_with("expr:")).count();
        assert_eq!(
            rules.len(),
            exprs,
            "{}: rules vs expr lines",
            path.display()
        );
        assert!(
            rules.iter().any(|r| r.kind == Kind::Record)
                && rules.iter().any(|r| r.kind == Kind::Alert),
            "{}: {rules:?}",
            path.display()
        );
        rules
    }
}

/// `expr` with the `bool` modifier on each comparison that lacks it. The generator writes binary
/// operators between spaces, and no label value of its matchers holds one.
fn with_bool(expr: &str) -> String {
    let tokens: Vec<&str> = expr.split(' ').collect();
    let mut out = Vec::with_capacity(tokens.len() + 2);
    for (i, token) in tokens.iter().enumerate() {
        out.push(*token);
        let comparison = matches!(*token, "==" | "!=" | ">" | "<" | ">=" | "<=");
        if comparison && tokens.get(i + 1) != Some(&"bool") {
            out.push("bool");
        }
    }
    out.join(" ")
}

/// The name Grafana gives a series in the legend: the format with `{{label}}` replaced, or for
/// the automatic legend (`__auto`) the series' labels.
fn legend_name(format: &str, labels: &serde_json::Map<String, Value>) -> String {
    let value = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    if format == "__auto" {
        let pairs: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", value(v)))
            .collect();
        return pairs.join(",");
    }
    let mut name = format.to_owned();
    for (k, v) in labels {
        name = name.replace(&format!("{{{{{k}}}}}"), &value(v));
    }
    name
}

/// Each dashboard variable's value as Grafana would send it: the one selected in the file
/// (`current`; the job, which must be the configuration's), else the "All" value (`allValue`,
/// `.*`), plus the interval built-ins.
fn variables(dashboard: &Value, job: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::from([
        ("__rate_interval".to_owned(), RATE_INTERVAL.to_owned()),
        ("__interval".to_owned(), "1s".to_owned()),
        ("__range".to_owned(), "5m".to_owned()),
    ]);
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap().to_owned();
        let value = var["current"]["value"]
            .as_str()
            .or_else(|| var["allValue"].as_str())
            .unwrap_or_else(|| panic!("variable {name}: no current value and no allValue"));
        vars.insert(name, value.to_owned());
    }
    assert_eq!(
        vars.get("job").map(String::as_str),
        Some(job),
        "the dashboard's job variable vs [prometheus] job"
    );
    vars
}

/// `expr` with `$name` and `${name}` replaced by `vars`; panics on a variable left over.
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = expr.to_owned();
    // Longest names first, so `$__rate_interval` is not read as `$__r...` of a shorter one.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &vars[name])
            .replace(&format!("${name}"), &vars[name]);
    }
    assert!(
        !out.contains('$'),
        "a variable the test does not know: {out}"
    );
    out
}

/// The dashboard's variable queries, `label_values(selector, label)`, asked of Prometheus'
/// label-values API: the job variable must find the job, instance and env both demos.
fn check_variable_queries(
    addr: SocketAddr,
    dashboard: &Value,
    vars: &BTreeMap<String, String>,
    job: &str,
) {
    let mut found = BTreeMap::new();
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap();
        let q = var["query"]["query"].as_str().unwrap();
        let (selector, label) = q
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(", "))
            .unwrap_or_else(|| panic!("variable {name}: not label_values(selector, label): {q}"));
        // The "All" value for the variables a selector reads, as Grafana sends while loading.
        let all: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.clone(), if k == "job" { v.clone() } else { ".*".into() }))
            .collect();
        let selector = substitute(selector, &all);
        let r = get(
            addr,
            &format!("/api/v1/label/{label}/values?match[]={}", encode(&selector)),
        )
        .unwrap();
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["status"], "success", "variable {name}: {}", r.body);
        let values: BTreeSet<String> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        found.insert(name.to_owned(), values);
    }
    assert_eq!(found["job"], BTreeSet::from([job.to_owned()]), "job values");
    assert_eq!(found["instance"].len(), 2, "instance values: {found:?}");
    assert_eq!(
        found["env"],
        BTreeSet::from(["baseline".to_owned(), "canary".to_owned()]),
        "env values"
    );
}

/// Every panel target's `expr` (rows' nested panels included), with its panel's title.
fn panel_queries(dashboard: &Value) -> Vec<(String, String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let legend = target["legendFormat"].as_str().unwrap_or("__auto");
                    out.push((title.to_owned(), expr.to_owned(), legend.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The pending or firing alerts named `name`, by env, with their state.
fn active_alerts(addr: SocketAddr, name: &str) -> BTreeMap<String, String> {
    let Ok(r) = get(addr, "/api/v1/alerts") else {
        return BTreeMap::new();
    };
    let body: Value = serde_json::from_str(&r.body).unwrap_or_default();
    body["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == name)
        .filter(|a| a["state"] == "pending" || a["state"] == "firing")
        .map(|a| {
            (
                a["labels"]["env"].as_str().unwrap_or_default().to_owned(),
                a["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn bool_form_marks_every_comparison() {
    assert_eq!(
        with_bool("a > 0.002"),
        "a > bool 0.002",
        "a plain comparison"
    );
    assert_eq!(with_bool("x == 0 or absent(y)"), "x == bool 0 or absent(y)");
    assert_eq!(
        with_bool("a{e=\"c\"} > ignoring(env) 1.15 * b"),
        "a{e=\"c\"} > bool ignoring(env) 1.15 * b"
    );
    assert_eq!(with_bool("a < bool 2"), "a < bool 2", "already bool");
}
