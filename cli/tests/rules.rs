//! `laptime rules`: the generated Prometheus rules for the demo's configuration pass
//! `promtool check rules` and their generated unit tests (`promtool test rules`), a broken rule
//! fails those tests, and the configuration's thresholds are what the expressions compare with.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{dir, laptime, stderr, stdout};
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

#[test]
fn committed_ops_rules_are_up_to_date() {
    let text = std::fs::read_to_string(demo_config()).unwrap();
    let plan_config = Config::from_toml_str(&text).unwrap();
    let plan = Plan::new(&plan_config);
    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/prometheus");
    for (file, fresh) in [
        ("rules.yml", plan.rules_yaml()),
        ("rules_test.yml", plan.tests_yaml("rules.yml")),
    ] {
        let committed = std::fs::read_to_string(ops.join(file)).unwrap_or_default();
        assert!(
            committed == fresh,
            "ops/prometheus/{file} is stale: run scripts/gen_ops.sh"
        );
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
    let config = r#"
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
    let y = Plan::new(&Config::from_toml_str(config).unwrap()).rules_yaml();
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
    let failed = promtool_verdict("rules_many", config);
    assert!(failed.is_empty(), "{failed}");
}

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
    let config = r#"
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
    let y = Plan::new(&Config::from_toml_str(config).unwrap()).rules_yaml();
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
    let failed = promtool_verdict("rules_name_total", config);
    assert!(failed.is_empty(), "{failed}");
}
