//! `laptime rules`: the generated Prometheus rules for the demo's configuration pass
//! `promtool check rules` and their generated unit tests (`promtool test rules`), a broken rule
//! fails those tests, and the configuration's thresholds are what the expressions compare with.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{dir, laptime, stderr, stdout, with_native};
use laptime::config::Config;
use laptime_cli::rules::Plan;

fn demo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/trading_tick.toml")
}

/// `promtool`, or `None` (with a message) when it is not installed; under CI its absence fails.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "promtool is not installed and CI is set: install prometheus (Debian: apt-get install prometheus)"
    );
    eprintln!("skipped: promtool is not installed (set CI to make this a failure)");
    None
}

fn promtool_run(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("promtool runs")
}

fn generate(test: &str) -> PathBuf {
    let out = dir(test);
    let o = laptime([
        "rules".as_ref(),
        "--config".as_ref(),
        demo_config().as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "laptime rules failed: {}", stderr(&o));
    for f in [
        "prometheus/rules.yml",
        "prometheus/rules_test.yml",
        "grafana/dashboard.json",
    ] {
        assert!(
            out.join(f).is_file(),
            "{f} not written; stdout: {}",
            stdout(&o)
        );
    }
    out
}

#[test]
fn demo_rules_pass_promtool_check_and_their_unit_tests() {
    let out = generate("rules_promtool");
    let Some(_) = promtool() else { return };
    let prom = out.join("prometheus");
    let check = promtool_run(&["check", "rules", "--lint-fatal", "rules.yml"], &prom);
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        stdout(&check),
        stderr(&check)
    );
    let test = promtool_run(&["test", "rules", "rules_test.yml"], &prom);
    assert!(
        test.status.success(),
        "promtool test rules: {}{}",
        stdout(&test),
        stderr(&test)
    );
    // Every alert has a test that fires and one that stays quiet.
    let rules = std::fs::read_to_string(prom.join("rules.yml")).unwrap();
    let tests = std::fs::read_to_string(prom.join("rules_test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in alerts {
        let a = a.trim_matches('"');
        assert!(
            tests.contains(&format!("{a} fires")),
            "no firing test for {a}"
        );
        assert!(
            tests.contains(&format!("{a} stays quiet")),
            "no quiet test for {a}"
        );
    }
}

#[test]
fn a_rule_that_disagrees_with_the_config_fails_the_generated_tests() {
    let out = generate("rules_mutated");
    let Some(_) = promtool() else { return };
    let prom = out.join("prometheus");
    let rules = std::fs::read_to_string(prom.join("rules.yml")).unwrap();
    // The p95 warning threshold is 160 µs; a rule file saying 990 µs must fail its tests.
    assert!(rules.contains("> 0.00016\""), "{rules}");
    std::fs::write(
        prom.join("rules.yml"),
        rules.replace("> 0.00016\"", "> 0.00099\""),
    )
    .unwrap();
    let test = promtool_run(&["test", "rules", "rules_test.yml"], &prom);
    assert!(
        !test.status.success(),
        "the mutated rules passed: {}",
        stdout(&test)
    );
    let said = format!("{}{}", stdout(&test), stderr(&test));
    assert!(said.contains("MmTickTotalP95SloWarning fires"), "{said}");
}

#[test]
fn a_threshold_change_in_the_config_moves_the_expression() {
    let text = std::fs::read_to_string(demo_config()).unwrap();
    let before = Config::from_toml_str(&text).unwrap();
    let changed = text.replacen("warning = \"160us\"", "warning = \"170us\"", 1);
    assert_ne!(
        text, changed,
        "the demo config no longer has the 160us warning"
    );
    let after = Config::from_toml_str(&changed).unwrap();
    let (a, b) = (
        Plan::new(&before).rules_yaml(),
        Plan::new(&after).rules_yaml(),
    );
    assert!(a.contains("> 0.00016\"") && !a.contains("> 0.00017\""));
    assert!(b.contains("> 0.00017\"") && !b.contains("> 0.00016\""));
    // The deadline moves the SLO series' name and bound only through the p95 critical threshold.
    let crit = text.replacen("critical = \"200us\"", "critical = \"300us\"", 1);
    let c = Plan::new(&Config::from_toml_str(&crit).unwrap()).rules_yaml();
    assert!(a.contains("slo:tick_total:p95_under_200us"), "{a}");
    assert!(
        c.contains("slo:tick_total:p95_under_300us") && c.contains("< bool 0.0003"),
        "{c}"
    );
    // The [alerts] settings reach the rules too.
    let pct = text.replacen(
        "canary_regression_pct = 15.0",
        "canary_regression_pct = 30.0",
        1,
    );
    let p = Plan::new(&Config::from_toml_str(&pct).unwrap()).rules_yaml();
    assert!(
        a.contains("> ignoring(env) 1.15 *") && p.contains("> ignoring(env) 1.3 *"),
        "{p}"
    );
}

#[test]
fn milliseconds_and_labelled_stages_name_the_exported_series() {
    let config = Config::from_toml_str(
        r#"
[prometheus]
namespace = "svc"
unit = "ms"

[[sla]]
stage = "exchange_req"
labels = { verb = "post", api = "batch" }
window = "60s"
metric = "p99"
critical = "25ms"
"#,
    )
    .unwrap();
    let plan = Plan::new(&config);
    let y = plan.rules_yaml();
    assert!(
        y.contains(r#"rate(svc_exchange_req_ms_bucket{verb=\"post\",api=\"batch\"}[5m])"#),
        "{y}"
    );
    assert!(y.contains("sum by (le, verb, api, env)"), "{y}");
    assert!(y.contains("> 25\""), "25 ms in milliseconds: {y}");
    if promtool().is_some() {
        let out = dir("rules_labelled");
        laptime_cli::rules::write_rules(&config, &out).unwrap();
        let prom = out.join("prometheus");
        let test = promtool_run(&["test", "rules", "rules_test.yml"], &prom);
        assert!(test.status.success(), "{}{}", stdout(&test), stderr(&test));
    }
}

#[test]
fn alerts_and_prometheus_sections_name_the_key_and_line_of_a_mistake() {
    let err = Config::from_toml_str("[alerts]\nrate_window = \"5m\"\nfor = \"0s\"\n").unwrap_err();
    assert_eq!(
        (err.key(), err.line()),
        (Some("alerts.for"), Some(3)),
        "{err}"
    );
    let err = Config::from_toml_str("[alerts]\ncanary_regresion_pct = 15\n").unwrap_err();
    assert_eq!(err.key(), Some("alerts.canary_regresion_pct"), "{err}");
    assert!(err.to_string().contains("canary_regression_pct"), "{err}");
    let err = Config::from_toml_str("[prometheus]\nunit = \"minutes\"\n").unwrap_err();
    assert_eq!(
        (err.key(), err.line()),
        (Some("prometheus.unit"), Some(2)),
        "{err}"
    );
    let err = Config::from_toml_str("[prometheus]\nnamespace = \"my-app\"\n").unwrap_err();
    assert_eq!(err.key(), Some("prometheus.namespace"), "{err}");
    let err = Config::from_toml_str("[alerts]\nrate_window = \"1500us\"\n").unwrap_err();
    assert_eq!(err.key(), Some("alerts.rate_window"), "{err}");
    let c = Config::from_toml_str("").unwrap();
    assert_eq!(c.prometheus.namespace, "laptime");
    assert_eq!(c.alerts.guard_trip_burst.len(), 2);
}

/// `ops/prometheus/` is what `laptime rules` writes for the demo's configuration, and
/// `ops/native/prometheus/` what `laptime rules --native` writes.
#[test]
fn committed_ops_rules_are_up_to_date() {
    let text = std::fs::read_to_string(demo_config()).unwrap();
    for (dir, text) in [
        ("prometheus", text.clone()),
        ("native/prometheus", with_native(&text)),
    ] {
        let plan_config = Config::from_toml_str(&text).unwrap();
        let plan = Plan::new(&plan_config);
        let ops = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../ops")
            .join(dir);
        for (file, fresh) in [
            ("rules.yml", plan.rules_yaml()),
            ("rules_test.yml", plan.tests_yaml("rules.yml")),
        ] {
            let committed = std::fs::read_to_string(ops.join(file)).unwrap_or_default();
            assert!(
                committed == fresh,
                "ops/{dir}/{file} is stale: run scripts/gen_ops.sh"
            );
        }
    }
}

/// A stage of `[expected_intervals]` gets a recording rule of its corrected p99, from the
/// exporter's corrected histogram, with a unit test that a wrong quantile fails.
#[test]
fn a_corrected_stage_gets_a_corrected_p99_record_tested_by_promtool() {
    let config = Config::from_toml_str(
        "[prometheus]\nnamespace = \"svc\"\n\n[expected_intervals]\ntick = \"2ms\"\n",
    )
    .unwrap();
    let plan = Plan::new(&config);
    assert_eq!(
        plan.corrected_quantile_record("p99"),
        "svc:stage_latency_corrected_seconds:p99"
    );
    let y = plan.rules_yaml();
    assert!(
        y.contains(r#"histogram_quantile(0.99, sum by (le, stage, env) (rate(svc_stage_duration_corrected_seconds_bucket{stage=\"tick\"}[5m])))"#),
        "{y}"
    );
    let Some(_) = promtool() else { return };
    let out = dir("rules_corrected");
    laptime_cli::rules::write_rules(&config, &out).unwrap();
    let prom = out.join("prometheus");
    let test = promtool_run(&["test", "rules", "rules_test.yml"], &prom);
    assert!(test.status.success(), "{}{}", stdout(&test), stderr(&test));
    let rules = std::fs::read_to_string(prom.join("rules.yml")).unwrap();
    std::fs::write(
        prom.join("rules.yml"),
        rules.replace(
            "histogram_quantile(0.99, sum by (le, stage, env) (rate(svc_stage_duration_corrected",
            "histogram_quantile(0.5, sum by (le, stage, env) (rate(svc_stage_duration_corrected",
        ),
    )
    .unwrap();
    let test = promtool_run(&["test", "rules", "rules_test.yml"], &prom);
    assert!(!test.status.success(), "the mutated rule passed");
    let said = format!("{}{}", stdout(&test), stderr(&test));
    assert!(
        said.contains(r#"abs(svc:stage_latency_corrected_seconds:p99{stage=\"tick\"} - 0.00398)"#),
        "{said}"
    );
}

/// Writes the rules of `config` under a fresh directory and runs `promtool check rules
/// --lint-fatal` and `promtool test rules` on them; returns what failed, empty when both pass.
fn promtool_verdict(test: &str, config: &str) -> String {
    let out = dir(test);
    laptime_cli::rules::write_rules(&Config::from_toml_str(config).unwrap(), &out).unwrap();
    let prom = out.join("prometheus");
    let mut failed = String::new();
    for args in [
        &["check", "rules", "--lint-fatal", "rules.yml"][..],
        &["test", "rules", "rules_test.yml"][..],
    ] {
        let o = promtool_run(args, &prom);
        if !o.status.success() {
            failed += &format!(
                "promtool {}: {}{}\n",
                args.join(" "),
                stdout(&o),
                stderr(&o)
            );
        }
    }
    failed
}

/// Windows shorter than the minute the tests used to sample at: every test that reads a rate
/// found nothing at 30 s (9 alert tests and 5 record checks failed). The tests now sample at
/// least four times per window. (A 4 s window passes too, but its 1 s samples make promtool take
/// 20 s: left out here.)
#[test]
fn short_rate_windows_get_tests_that_pass() {
    let Some(_) = promtool() else { return };
    let demo = std::fs::read_to_string(demo_config()).unwrap();
    for window in ["30s", "1m", "2m", "10s"] {
        let config = demo.replace(
            "rate_window = \"5m\"",
            &format!("rate_window = \"{window}\""),
        );
        assert_ne!(config, demo);
        let failed = promtool_verdict(&format!("rules_window_{window}"), &config);
        assert!(failed.is_empty(), "rate_window {window}: {failed}");
    }
    // The no-data alert rates over no_data_after: a short one needs short samples too.
    let config = demo.replace("no_data_after = \"5m\"", "no_data_after = \"30s\"");
    assert_ne!(config, demo);
    let failed = promtool_verdict("rules_no_data_30s", &config);
    assert!(failed.is_empty(), "no_data_after 30s: {failed}");
    // Under 4 s no scrape interval gives rate() enough samples: refused, naming the key.
    for key in ["rate_window", "no_data_after"] {
        let err = Config::from_toml_str(&format!("[alerts]\n{key} = \"2s\"\n")).unwrap_err();
        assert_eq!(err.key(), Some(format!("alerts.{key}").as_str()), "{err}");
        assert!(err.to_string().contains("at least \"4s\""), "{err}");
    }
}

/// SLA rules on two stages, on two label sets of one stage, and on one metric over two windows:
/// each record and alert is its own to Prometheus' linter, and every generated test passes (the
/// records of two stages were lint duplicates; the no-data alerts of two label sets shared a
/// name, so each fired for the other's series).
#[test]
fn many_stages_label_sets_and_windows_lint_clean_and_pass_their_tests() {
    let y = Plan::new(&Config::from_toml_str(MANY).unwrap()).rules_yaml();
    for name in [
        "MmExchangeReqVerbPostApiBatchP99SloCritical",
        "MmExchangeReqVerbDeleteApiCancelNoData",
        "MmTickTotalP99Over60sSloCritical",
        "MmTickTotalP99Over5sSloWarning",
        "MmStageSpreadP95SloCritical",
    ] {
        assert!(y.contains(&format!("alert: \"{name}\"")), "no {name}: {y}");
    }
    let Some(_) = promtool() else { return };
    let failed = promtool_verdict("rules_many", MANY);
    assert!(failed.is_empty(), "{failed}");
}

/// SLA rules on two stages, on two label sets of one stage (own family), on one metric over two
/// windows, and two corrected stages.
const MANY: &str = r#"
[prometheus]
namespace = "mm"
labelled_stages = ["exchange_req"]

[deadlines]
tick_total = "1ms"
stage_spread = "1ms"

[expected_intervals]
tick_total = "1ms"
stage_spread = "1ms"

[[sla]]
stage = "exchange_req"
labels = { verb = "post", api = "batch" }
window = "60s"
metric = "p99"
critical = "25ms"

[[sla]]
stage = "exchange_req"
labels = { verb = "delete", api = "cancel" }
window = "60s"
metric = "p99"
critical = "20ms"

[[sla]]
stage = "tick_total"
window = "60s"
metric = "p99"
critical = "250ms"

[[sla]]
stage = "tick_total"
window = "5s"
metric = "p99"
warning = "200ms"
critical = "300ms"

[[sla]]
stage = "stage_spread"
window = "60s"
metric = "p95"
critical = "30ms"
"#;

/// Two `[[sla]]` rules on one stage, window and metric: refused, naming both lines.
#[test]
fn a_repeated_sla_rule_is_refused() {
    let rule = "[[sla]]\nstage = \"tick_total\"\nwindow = \"60s\"\nmetric = \"p99\"\ncritical = \"250ms\"\n";
    let err = Config::from_toml_str(&format!("{rule}\n{rule}")).unwrap_err();
    assert_eq!((err.key(), err.line()), (Some("sla[1]"), Some(7)), "{err}");
    assert!(
        err.to_string().contains("repeats the [[sla]] at line 1"),
        "{err}"
    );
    // Another window, or other labels, is another rule.
    let other = rule.replace("60s", "5s");
    Config::from_toml_str(&format!("{rule}\n{other}")).unwrap();
}

/// An SLA rule on a labelled stage's bare name judges the total of its label sets: the
/// exporter has no `stage="…"` series for it, so the rules read its own family whole, and its
/// records carry `total="true"` beside those of its label sets (they share the stage label).
#[test]
fn a_rule_on_a_labelled_stages_name_judges_its_label_sets_together() {
    let y = Plan::new(&Config::from_toml_str(NAME_TOTAL).unwrap()).rules_yaml();
    assert!(
        y.contains(r#"sum by (le, env) (rate(mm_exchange_req_seconds_bucket{}[5m]))"#),
        "{y}"
    );
    assert!(
        !y.contains(r#"mm_stage_duration_seconds_bucket{stage=\"exchange_req\"}"#),
        "{y}"
    );
    assert!(y.contains(r#"total: "true""#), "{y}");
    let Some(_) = promtool() else { return };
    let failed = promtool_verdict("rules_name_total", NAME_TOTAL);
    assert!(failed.is_empty(), "{failed}");
}

/// A rule on a labelled stage's bare name (its label sets' total) beside one on a label set.
const NAME_TOTAL: &str = r#"
[prometheus]
namespace = "mm"
labelled_stages = ["exchange_req"]

[deadlines]
exchange_req = "1ms"

[[sla]]
stage = "exchange_req"
window = "60s"
metric = "p99"
warning = "20ms"
critical = "25ms"

[[sla]]
stage = "exchange_req"
labels = { verb = "post", api = "batch" }
window = "60s"
metric = "p95"
critical = "25ms"
"#;

/// Every metric an SLA rule can name, on one deadline stage, in milliseconds.
const EVERY_METRIC: &str = r#"
[prometheus]
namespace = "svc"
unit = "ms"

[deadlines]
tick = "2ms"

[[sla]]
stage = "tick"
window = "60s"
metric = "p95"
critical = "2ms"

[[sla]]
stage = "tick"
window = "60s"
metric = "p999"
critical = "4ms"

[[sla]]
stage = "tick"
window = "60s"
metric = "max"
critical = "5ms"

[[sla]]
stage = "tick"
window = "60s"
metric = "mean"
warning = "800us"
critical = "1ms"

[[sla]]
stage = "tick"
window = "60s"
metric = "deadline_miss_rate"
critical = 0.02
"#;

/// The configurations the native tests run on: the demo's, and the shapes it lacks.
fn native_cases() -> Vec<(&'static str, String)> {
    let demo = std::fs::read_to_string(demo_config()).unwrap();
    vec![
        ("demo", demo),
        ("many", MANY.to_owned()),
        ("name_total", NAME_TOTAL.to_owned()),
        ("every_metric", EVERY_METRIC.to_owned()),
    ]
}

/// `(kind, name, expr)` of every rule of a generated rules.yml, `kind` being `record` or
/// `alert`.
fn rules_of(yaml: &str) -> Vec<(String, String, String)> {
    let unquote = |v: &str| serde_json::from_str::<String>(v).expect("a quoted YAML string");
    let mut out: Vec<(String, String, String)> = Vec::new();
    for line in yaml.lines().map(str::trim) {
        for kind in ["record", "alert"] {
            if let Some(name) = line.strip_prefix(&format!("- {kind}: ")) {
                out.push((kind.to_owned(), unquote(name), String::new()));
            }
        }
        if let Some(expr) = line.strip_prefix("expr: ") {
            out.last_mut().expect("an expr follows its rule").2 = unquote(expr);
        }
    }
    out
}

/// Native rules read every stage histogram as a native histogram: no `_bucket`, `_count` or
/// `_sum` of a native family anywhere, and each kind of figure in its native form.
#[test]
fn native_rules_read_no_classic_series_of_a_native_family() {
    for (case, text) in native_cases() {
        let config = Config::from_toml_str(&with_native(&text)).unwrap();
        let forbidden = common::classic_series_of_native_families(&config);
        let rules = rules_of(&Plan::new(&config).rules_yaml());
        assert!(!rules.is_empty(), "{case}");
        for (kind, name, expr) in &rules {
            let classic: Vec<&str> = common::promql_identifiers(expr)
                .into_iter()
                .filter(|id| forbidden.iter().any(|f| f == id))
                .collect();
            assert!(
                classic.is_empty(),
                "{case}: {kind} {name} reads {classic:?}: {expr}"
            );
        }
        // The check can fail: the same file's classic rules read those series.
        let classic = Config::from_toml_str(&text).unwrap();
        let classic_reads = rules_of(&Plan::new(&classic).rules_yaml())
            .iter()
            .flat_map(|r| {
                common::promql_identifiers(&r.2)
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .any(|id| forbidden.contains(&id));
        assert!(
            classic_reads,
            "{case}: the classic rules read no classic series?"
        );
        let all: String = rules.iter().map(|r| r.2.as_str()).collect();
        assert!(all.contains("histogram_quantile(0.99, sum by ("), "{case}");
        assert!(all.contains("(histogram_count(rate("), "{case}");
    }
    let config = Config::from_toml_str(&with_native(EVERY_METRIC)).unwrap();
    let y = Plan::new(&config).rules_yaml();
    for form in [
        // mean
        r#"sum by (stage, env) (histogram_sum(rate(svc_stage_duration_ms{stage=\"tick\"}[5m]))) / sum by (stage, env) (histogram_count(rate(svc_stage_duration_ms{stage=\"tick\"}[5m]))) > 1"#,
        // max, p99.9
        r#"histogram_quantile(1, sum by (stage, env) (rate(svc_stage_duration_ms{stage=\"tick\"}[5m]))) > 5"#,
        r#"histogram_quantile(0.999, sum by (stage, env) (rate(svc_stage_duration_ms{stage=\"tick\"}[5m]))) > 4"#,
        // deadline misses: the counter over the histogram's count
        r#"sum by (stage, env) (rate(svc_deadline_miss_total{stage=\"tick\"}[5m])) / sum by (stage, env) (histogram_count(rate(svc_stage_duration_ms{stage=\"tick\"}[5m]))) > 0.02"#,
        // no data
        r#"== 0 or absent(svc_stage_duration_ms{stage=\"tick\"})"#,
    ] {
        assert!(y.contains(form), "no {form} in {y}");
    }
}

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// Native and classic rules are the same rules: the same records with the same static labels,
/// the same alerts with the same labels, in the same order; only the expressions differ.
#[test]
fn native_and_classic_rules_have_the_same_names() {
    for (case, text) in native_cases() {
        let classic = Config::from_toml_str(&text).unwrap();
        let native = Config::from_toml_str(&with_native(&text)).unwrap();
        let (c, n) = (Plan::new(&classic), Plan::new(&native));
        let records = |p: &Plan<'_>| -> Vec<(String, Labels)> {
            p.records()
                .into_iter()
                .map(|r| (r.name, r.labels))
                .collect()
        };
        let alerts = |p: &Plan<'_>| -> Vec<(String, &'static str, Labels)> {
            p.alerts()
                .into_iter()
                .map(|a| (a.name, a.severity, a.extra))
                .collect()
        };
        assert_eq!(records(&c), records(&n), "{case}");
        assert_eq!(alerts(&c), alerts(&n), "{case}");
        let names = |y: String| -> Vec<(String, String)> {
            rules_of(&y).into_iter().map(|(k, n, _)| (k, n)).collect()
        };
        assert_eq!(names(c.rules_yaml()), names(n.rules_yaml()), "{case}");
        assert_ne!(c.rules_yaml(), n.rules_yaml(), "{case}");
    }
}

/// Native rules lint clean, and their generated tests pass; the tests' head names every alert
/// and record promtool 2.42 cannot test (it has no native samples), and every other alert has a
/// test that fires and one that stays quiet.
#[test]
fn native_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(_) = promtool() else { return };
    for (case, text) in native_cases() {
        let text = with_native(&text);
        let failed = promtool_verdict(&format!("rules_native_{case}"), &text);
        assert!(failed.is_empty(), "{case}: {failed}");
        let config = Config::from_toml_str(&text).unwrap();
        let plan = Plan::new(&config);
        let tests = plan.tests_yaml("rules.yml");
        assert!(
            tests.contains(laptime_cli::rules::NATIVE_TESTS_NOTE),
            "{case}"
        );
        for al in plan.alerts() {
            let listed = tests.contains(&format!("#   alert {}\n", al.name));
            let fires = tests.contains(&format!("\"{} fires", al.name));
            let quiet = tests.contains(&format!("\"{} stays quiet", al.name));
            assert_eq!(
                (listed, fires, quiet),
                if al.test.reads_histograms() {
                    (true, false, false)
                } else {
                    (false, true, true)
                },
                "{case}: {}",
                al.name
            );
        }
        for r in plan.records() {
            let listed = tests.contains(&format!("#   record {}\n", r.name));
            assert_eq!(listed, r.reads_histograms, "{case}: {}", r.name);
        }
    }
}

/// The canary rollback is tested under native histograms too (from p95 records given as
/// input, a canary +30 % and +7.5 % above its baseline): a rule file that rolls back only at
/// +100 %, or at any regression, fails those tests.
#[test]
fn a_wrong_native_canary_threshold_fails_its_test() {
    let Some(_) = promtool() else { return };
    let text = with_native(&std::fs::read_to_string(demo_config()).unwrap());
    let out = dir("rules_native_canary");
    laptime_cli::rules::write_rules(&Config::from_toml_str(&text).unwrap(), &out).unwrap();
    let prom = out.join("prometheus");
    let rules = std::fs::read_to_string(prom.join("rules.yml")).unwrap();
    assert!(rules.contains("> ignoring(env) 1.15 *"), "{rules}");
    for (factor, failing) in [("2", "fires"), ("1", "stays quiet")] {
        std::fs::write(
            prom.join("rules.yml"),
            rules.replace(
                "> ignoring(env) 1.15 *",
                &format!("> ignoring(env) {factor} *"),
            ),
        )
        .unwrap();
        let test = promtool_run(&["test", "rules", "rules_test.yml"], &prom);
        assert!(!test.status.success(), "the rules at {factor}x passed");
        let said = format!("{}{}", stdout(&test), stderr(&test));
        let name = format!("MmTickTotalCanaryRegression {failing}");
        assert!(said.contains(&name), "{factor}x: {said}");
    }
}

/// Why the native tests leave rules out: promtool cannot read a native histogram sample in a
/// test's input series. When a promtool that can is installed this fails, and the native tests
/// should feed the histogram rules native samples as the classic tests feed them buckets.
#[test]
fn promtool_reads_no_native_histogram_sample() {
    let Some(_) = promtool() else { return };
    let out = dir("rules_native_notation");
    std::fs::write(
        out.join("rules.yml"),
        "groups:\n  - name: t\n    rules:\n      - record: job:x:count\n        expr: histogram_count(sum by (job) (rate(x[5m])))\n",
    )
    .unwrap();
    std::fs::write(
        out.join("test.yml"),
        "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n      - series: 'x{job=\"a\"}'\n        values: '{{schema:0 sum:5 count:4 buckets:[1 2 1]}}x10'\n    promql_expr_test:\n      - expr: job:x:count\n        eval_time: 5m\n        exp_samples:\n          - labels: 'job:x:count{job=\"a\"}'\n            value: 0\n",
    )
    .unwrap();
    let test = promtool_run(&["test", "rules", "test.yml"], &out);
    let said = format!("{}{}", stdout(&test), stderr(&test));
    assert!(
        !test.status.success() && said.contains("unexpected character in series sequence: '{'"),
        "this promtool reads native histogram samples: generate native tests for the rules \
         NATIVE_TESTS_NOTE lists. It said: {said}"
    );
}

/// `--native` makes the rules and dashboard of a classic file what `native = true` in the file
/// makes them; the flag never turns a file's `native = true` off.
#[test]
fn the_native_flag_is_the_native_key() {
    let demo = std::fs::read_to_string(demo_config()).unwrap();
    let run = |test: &str, config: &Path, flag: bool| -> PathBuf {
        let out = dir(test);
        let mut args = vec![
            "rules".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ];
        if flag {
            args.push("--native".as_ref());
        }
        let o = laptime(args);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let keyed = dir("rules_native_key_config").join("native.toml");
    std::fs::write(&keyed, with_native(&demo)).unwrap();
    let flagged = run("rules_native_flag", &demo_config(), true);
    let both = run("rules_native_flag_and_key", &keyed, true);
    let key = run("rules_native_key", &keyed, false);
    let classic = run("rules_native_none", &demo_config(), false);
    for f in [
        "prometheus/rules.yml",
        "prometheus/rules_test.yml",
        "grafana/dashboard.json",
    ] {
        let read = |d: &Path| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read(&flagged), read(&key), "{f}");
        assert_eq!(read(&both), read(&key), "{f}");
        assert_ne!(read(&classic), read(&key), "{f}");
    }
}
