//! The Grafana dashboard of `laptime rules`: one JSON document built from the same configuration
//! file the process loads, so the lines a panel draws are the thresholds the process enforces.
//!
//! Every query names only families that [`MetricNames`] produces for the file's `[prometheus]`
//! namespace and unit (plus the application gauges the file lists), and selects on the template
//! variables `$job`, `$instance` and `$env` (the `[prometheus] env_label` label). With
//! `[prometheus] native = true` (or `laptime rules --native`) the same panels read the stage
//! histograms as native histograms, the family itself rather than its `_bucket`, `_count` and
//! `_sum` series ([`crate::promql`]). The panels, in order:
//!
//! * **per SLA'd stage**: p50/p95/p99 (and any other quantile or the mean a rule names) from the
//!   histogram's buckets, with each latency rule's warning (orange) and critical (red) drawn as
//!   threshold lines;
//! * **stage breakdown**: the mean time of every stage but the trace root, stacked;
//! * **deadline-miss ratio** per stage with a deadline or a miss-rate rule, that rule's limits (or
//!   `[alerts] deadline_miss_ratio`) as lines;
//! * **labelled stages** (`[prometheus] labelled_stages`, e.g. the demo's `exchange_req{verb,api}`):
//!   p50 and p95 of each label set side by side, so a batch request is read beside a single one;
//! * **coordinated omission** per stage of `[expected_intervals]`: its raw p99 and its
//!   coordinated-omission-corrected p99 overlaid, so a stall the raw figure hides shows as the gap;
//! * **guard trips** per reason, in trips an hour at the current rate, with the `[alerts]
//!   guard_trip_burst` limits;
//! * **application gauges** (`[prometheus] gauges`);
//! * **the library's health**: dropped and sampled-out records, aggregator lag and drain age
//!   (stall limit as a line), sampling rate;
//! * **canary vs baseline**: p95 of the SLA'd stages per `env`, and the canary's regression in
//!   percent with `[alerts] canary_regression_pct` as a line.
//!
//! The output is deterministic: panels come in a fixed order with ids counted from 1, stages are
//! sorted by name, and `serde_json`'s maps keep keys sorted.

use std::collections::BTreeMap;

use laptime::config::Config;
use laptime::export::prometheus::{MetricNames, Unit};
use laptime::{Metric, Value};
use serde_json::{Value as Json, json};

use crate::promql::{Agg, Histograms, Part};

/// The `env` values the canary comparison reads (the seeds' canary rollout).
const CANARY_ENV: &str = "canary";
const BASELINE_ENV: &str = "baseline";

/// The range of every panel's `rate()`.
const RATE_RANGE: &str = "$__rate_interval";

/// Grafana's dashboard schema version the JSON is written for.
const SCHEMA_VERSION: u32 = 39;

/// Width of the grid (Grafana's is 24 columns); every panel here takes half.
const HALF: u32 = 12;
const PANEL_HEIGHT: u32 = 8;

/// The quantiles every per-stage latency panel draws, beside the ones the rules name.
const BASE_QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// The dashboard for `config`, as Grafana's JSON model (schema version 39).
pub fn dashboard(config: &Config) -> Json {
    let prom = &config.prometheus;
    let names = MetricNames::new(&prom.namespace, prom.unit.into());
    let q = Queries {
        names: &names,
        sel: format!(
            r#"job=~"$job",instance=~"$instance",{}=~"$env""#,
            prom.env_label
        ),
        env_label: &prom.env_label,
        labelled: &prom.labelled_stages,
        hist: Histograms::of(prom),
    };
    let mut grid = Grid::default();

    let sla_stages = sla_stages(config);
    grid.row("Latency per SLA'd stage");
    for (stage, rules) in &sla_stages {
        grid.panel(latency_panel(&q, stage, rules));
    }

    grid.row("Stages and deadlines");
    grid.panel(breakdown_panel(&q, config));
    for (stage, limits) in deadline_stages(config) {
        grid.panel(deadline_panel(&q, &stage, &limits));
    }

    if !prom.labelled_stages.is_empty() {
        grid.row("Labelled stages");
        let mut labelled = prom.labelled_stages.clone();
        labelled.sort();
        labelled.dedup();
        for stage in &labelled {
            grid.panel(labelled_panel(&q, stage));
        }
    }

    if !config.expected_intervals.is_empty() {
        grid.row("Coordinated omission");
        let mut corrected: Vec<&(String, std::time::Duration)> =
            config.expected_intervals.iter().collect();
        corrected.sort();
        for (stage, interval) in corrected {
            grid.panel(corrected_panel(&q, stage, *interval));
        }
    }

    grid.row("Guards and application");
    grid.panel(guard_panel(&q, config));
    let mut gauges = prom.gauges.clone();
    gauges.sort();
    gauges.dedup();
    for gauge in &gauges {
        grid.panel(gauge_panel(&q, gauge));
    }

    grid.row("laptime health");
    for panel in health_panels(&q, config) {
        grid.panel(panel);
    }

    grid.row("Canary vs baseline");
    let unlabelled: Vec<&str> = sla_stages
        .keys()
        .filter(|s| s.labels.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    if !unlabelled.is_empty() {
        grid.panel(canary_p95_panel(&q, &unlabelled));
        grid.panel(canary_regression_panel(&q, config, &unlabelled));
    }

    json!({
        "uid": format!("laptime-{}", prom.namespace),
        "title": format!("{} latency SLOs ({})", prom.job, prom.namespace),
        "description": "Generated by `laptime rules` from the laptime configuration file; edit the file, not this JSON.",
        "tags": ["laptime", "slo"],
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "time": { "from": "now-1h", "to": "now" },
        "refresh": "10s",
        "timezone": "browser",
        "templating": { "list": variables(&q, prom) },
        "annotations": { "list": [] },
        "panels": grid.panels,
    })
}

/// A stage as the SLA rules name it: its name and static labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StageKey {
    name: String,
    labels: Vec<(String, String)>,
}

impl StageKey {
    fn title(&self) -> String {
        crate::stage_title(
            &self.name,
            self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }
}

/// One latency rule's thresholds, in the exported unit.
struct LatencyRule {
    metric: Metric,
    warning: Option<f64>,
    critical: Option<f64>,
}

/// The stages latency rules watch, sorted, with those rules.
fn sla_stages(config: &Config) -> BTreeMap<StageKey, Vec<LatencyRule>> {
    let names = MetricNames::new(&config.prometheus.namespace, config.prometheus.unit.into());
    let mut out: BTreeMap<StageKey, Vec<LatencyRule>> = BTreeMap::new();
    for rule in &config.sla {
        if rule.metric == Metric::DeadlineMissRate {
            continue;
        }
        let latency = |v: Option<Value>| match v {
            Some(Value::Latency(d)) => Some(names.in_unit(d)),
            _ => None,
        };
        let key = StageKey {
            name: rule.stage.clone(),
            labels: rule.labels.clone(),
        };
        out.entry(key).or_default().push(LatencyRule {
            metric: rule.metric,
            warning: latency(rule.warning),
            critical: latency(rule.critical),
        });
    }
    out
}

/// A deadline-miss-rate rule's warning and critical limits, fractions in [0, 1].
type RatioLimits = (Option<f64>, Option<f64>);

/// The stages with a deadline or a deadline-miss-rate rule, sorted, with the rules' limits
/// (warning, critical) as fractions, or `[alerts] deadline_miss_ratio` as the critical one.
fn deadline_stages(config: &Config) -> BTreeMap<String, Vec<RatioLimits>> {
    let mut out: BTreeMap<String, Vec<RatioLimits>> = BTreeMap::new();
    for (stage, _) in &config.deadlines {
        out.entry(stage.clone()).or_default();
    }
    for rule in &config.sla {
        if rule.metric != Metric::DeadlineMissRate {
            continue;
        }
        let ratio = |v: Option<Value>| match v {
            Some(Value::Ratio(r)) => Some(r),
            _ => None,
        };
        out.entry(rule.stage.clone())
            .or_default()
            .push((ratio(rule.warning), ratio(rule.critical)));
    }
    // A stage with a deadline and no miss-rate rule is judged by `[alerts] deadline_miss_ratio`.
    for limits in out.values_mut() {
        if limits.is_empty() {
            limits.push((None, Some(config.alerts.deadline_miss_ratio)));
        }
    }
    out
}

/// Builds the PromQL of the panels.
struct Queries<'a> {
    names: &'a MetricNames,
    /// The template-variable selector every query carries.
    sel: String,
    env_label: &'a str,
    labelled: &'a [String],
    /// How Prometheus stores the stage histograms.
    hist: Histograms,
}

impl Queries<'_> {
    /// The histogram family of `stage` and the matchers that pick it out, without the template
    /// selector: its own family for a labelled stage, else the shared one with `stage="…"`.
    fn family(&self, stage: &StageKey) -> (String, String) {
        if stage.labels.is_empty() && !self.labelled.contains(&stage.name) {
            return (
                self.names.stage_duration().to_owned(),
                format!(r#"stage="{}""#, escape(&stage.name)),
            );
        }
        let matchers: Vec<String> = stage
            .labels
            .iter()
            .map(|(k, v)| format!(r#"{k}="{}""#, escape(v)))
            .collect();
        (self.names.labelled_stage(&stage.name), matchers.join(","))
    }

    fn selector(&self, matchers: &str) -> String {
        if matchers.is_empty() {
            format!("{{{}}}", self.sel)
        } else {
            format!("{{{matchers},{}}}", self.sel)
        }
    }

    fn quantile(&self, stage: &StageKey, q: f64) -> String {
        let (family, matchers) = self.family(stage);
        let sel = self.selector(&matchers);
        self.hist.quantile(q, Agg::All, &family, &sel, RATE_RANGE)
    }

    /// Rate of the sum over rate of the count, each summed as `agg` says.
    fn mean_of(&self, agg: Agg<'_>, family: &str, selector: &str) -> String {
        let rate = |part| self.hist.rate(part, agg, family, selector, RATE_RANGE);
        format!("{} / {}", rate(Part::Sum), rate(Part::Count))
    }

    fn mean(&self, stage: &StageKey) -> String {
        let (family, matchers) = self.family(stage);
        self.mean_of(Agg::All, &family, &self.selector(&matchers))
    }
}

/// Escapes a label value for a PromQL string literal.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', r#"\""#)
}

fn target(ref_id: usize, expr: String, legend: &str) -> Json {
    json!({
        "refId": ref_letter(ref_id),
        "expr": expr,
        "legendFormat": legend,
        "datasource": datasource(),
    })
}

fn ref_letter(i: usize) -> String {
    // A..Z is plenty: no panel here has more than a handful of queries.
    char::from(b'A' + u8::try_from(i % 26).unwrap_or(0)).to_string()
}

fn datasource() -> Json {
    json!({ "type": "prometheus", "uid": "${datasource}" })
}

fn percentile_label(q: f64) -> String {
    let p = q * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("p{}", p.round())
    } else {
        format!("p{p}")
    }
}

fn grafana_unit(unit: Unit) -> &'static str {
    match unit {
        Unit::Milliseconds => "ms",
        _ => "s",
    }
}

/// Threshold steps: a transparent base, then each `(value, color)` in increasing order; the
/// most severe colour wins where two limits are equal.
fn thresholds(lines: &[(f64, &'static str)]) -> Json {
    let severity = |c: &str| usize::from(c == "red");
    let mut sorted: Vec<(f64, &str)> = lines.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(severity(a.1).cmp(&severity(b.1))));
    let mut steps = vec![json!({ "color": "transparent", "value": null })];
    let mut last: Option<f64> = None;
    for (value, color) in sorted {
        if last == Some(value) {
            steps.pop();
        }
        steps.push(json!({ "color": color, "value": value }));
        last = Some(value);
    }
    json!({ "mode": "absolute", "steps": steps })
}

/// A time-series panel (id and position are set by [`Grid`]).
fn timeseries(title: &str, description: &str, unit: &str, targets: Vec<Json>) -> Json {
    json!({
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": datasource(),
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": { "drawStyle": "line", "lineWidth": 1, "fillOpacity": 0 },
            },
            "overrides": [],
        },
        "options": {
            "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
            "tooltip": { "mode": "multi", "sort": "desc" },
        },
    })
}

/// Draws `lines` as dashed threshold lines on `panel`.
fn with_lines(mut panel: Json, lines: &[(f64, &'static str)]) -> Json {
    if lines.is_empty() {
        return panel;
    }
    let defaults = &mut panel["fieldConfig"]["defaults"];
    defaults["thresholds"] = thresholds(lines);
    defaults["custom"]["thresholdsStyle"] = json!({ "mode": "dashed" });
    panel
}

fn latency_panel(q: &Queries<'_>, stage: &StageKey, rules: &[LatencyRule]) -> Json {
    let mut quantiles: Vec<f64> = BASE_QUANTILES.to_vec();
    let mut mean = false;
    let mut lines = Vec::new();
    let mut described = Vec::new();
    for rule in rules {
        match rule.metric {
            Metric::Quantile(p) => quantiles.push(p),
            Metric::Mean => mean = true,
            _ => {}
        }
        let name = match rule.metric {
            Metric::Quantile(p) => percentile_label(p),
            Metric::Mean => "mean".to_owned(),
            _ => "max".to_owned(),
        };
        if let Some(w) = rule.warning {
            lines.push((w, "orange"));
            described.push(format!("{name} warning {w}"));
        }
        if let Some(c) = rule.critical {
            lines.push((c, "red"));
            described.push(format!("{name} critical {c}"));
        }
    }
    quantiles.sort_by(f64::total_cmp);
    quantiles.dedup();
    let mut targets: Vec<Json> = quantiles
        .iter()
        .enumerate()
        .map(|(i, &p)| target(i, q.quantile(stage, p), &percentile_label(p)))
        .collect();
    if mean {
        targets.push(target(targets.len(), q.mean(stage), "mean"));
    }
    let unit = grafana_unit(q.names.unit());
    let description = format!(
        "Quantiles of {} over the rate interval, from the histogram buckets. Lines: the SLA rules' limits ({}, in {unit}).",
        stage.title(),
        described.join(", ")
    );
    with_lines(
        timeseries(
            &format!("{} latency", stage.title()),
            &description,
            unit,
            targets,
        ),
        &lines,
    )
}

/// A corrected stage's raw and corrected p99, overlaid.
fn corrected_panel(q: &Queries<'_>, stage: &str, interval: std::time::Duration) -> Json {
    let key = StageKey {
        name: stage.to_owned(),
        labels: Vec::new(),
    };
    let corrected = q.hist.quantile(
        0.99,
        Agg::All,
        q.names.stage_duration_corrected(),
        &q.selector(&format!(r#"stage="{}""#, escape(stage))),
        RATE_RANGE,
    );
    let interval =
        laptime::report::format_ns(u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX));
    timeseries(
        &format!("{stage}: raw vs CO-corrected p99"),
        &format!(
            "p99 of {stage} from its raw histogram and from its coordinated-omission-corrected one (expected interval {interval}: a span at least twice that also counts the spans it held back). The gap is what a stall hides from the raw figure."
        ),
        grafana_unit(q.names.unit()),
        vec![
            target(0, q.quantile(&key, 0.99), "p99 raw"),
            target(1, corrected, "p99 CO-corrected"),
        ],
    )
}

fn breakdown_panel(q: &Queries<'_>, config: &Config) -> Json {
    let family = q.names.stage_duration();
    let mut sel = q.sel.clone();
    if let Some(root) = &config.trace {
        // The root stage holds the others: stacking it beside them would count its time twice.
        sel = format!(r#"stage!="{}",{sel}"#, escape(&root.root));
    }
    let expr = q.mean_of(Agg::By("stage"), family, &format!("{{{sel}}}"));
    let mut panel = timeseries(
        "Stage breakdown (mean per stage, stacked)",
        "Mean time of each unlabelled stage (rate of the sum over rate of the count), stacked; the trace root is left out because it contains the others.",
        grafana_unit(q.names.unit()),
        vec![target(0, expr, "{{stage}}")],
    );
    let custom = &mut panel["fieldConfig"]["defaults"]["custom"];
    custom["stacking"] = json!({ "mode": "normal", "group": "A" });
    custom["fillOpacity"] = json!(30);
    panel
}

fn deadline_panel(q: &Queries<'_>, stage: &str, limits: &[RatioLimits]) -> Json {
    let key = StageKey {
        name: stage.to_owned(),
        labels: Vec::new(),
    };
    let (family, matchers) = q.family(&key);
    let count = q.hist.rate(
        Part::Count,
        Agg::All,
        &family,
        &q.selector(&matchers),
        RATE_RANGE,
    );
    let misses = format!(
        "sum(rate({}{}[$__rate_interval]))",
        q.names.deadline_miss(),
        q.selector(&format!(r#"stage="{}""#, escape(stage)))
    );
    let mut lines = Vec::new();
    for (w, c) in limits {
        lines.extend(w.map(|w| (w, "orange")));
        lines.extend(c.map(|c| (c, "red")));
    }
    let mut panel = with_lines(
        timeseries(
            &format!("{stage} deadline-miss ratio"),
            &format!(
                "Deadline misses of {stage} per completed span (0.01 is 1 %). Lines: the deadline_miss_rate rules' limits."
            ),
            "percentunit",
            vec![target(0, format!("{misses} / {count}"), "miss ratio")],
        ),
        &lines,
    );
    panel["fieldConfig"]["defaults"]["min"] = json!(0);
    panel
}

fn labelled_panel(q: &Queries<'_>, stage: &str) -> Json {
    let family = q.names.labelled_stage(stage);
    let sel = &q.sel;
    // The label names are the application's (the configuration does not list them), so the
    // legend is Grafana's automatic one, and the percentile goes in as a label: a fixed "p50"
    // legend named all three label sets' lines alike.
    let by_labels = |p: f64| {
        let selector = format!("{{{sel}}}");
        tagged(
            &q.hist
                .quantile(p, Agg::Without("instance"), &family, &selector, RATE_RANGE),
            "percentile",
            &percentile_label(p),
        )
    };
    timeseries(
        &format!("{stage}: p50 and p95 per label set"),
        &format!(
            "Each label set of {stage} (its own family {family}) side by side, e.g. a batch request beside a single one."
        ),
        grafana_unit(q.names.unit()),
        vec![
            target(0, by_labels(0.5), AUTO_LEGEND),
            target(1, by_labels(0.95), AUTO_LEGEND),
        ],
    )
}

/// Grafana's automatic legend: the labels that tell a panel's series apart.
const AUTO_LEGEND: &str = "__auto";

/// `expr` with the label `name="value"` added to each of its series.
fn tagged(expr: &str, name: &str, value: &str) -> String {
    format!(r#"label_replace({expr}, "{name}", "{value}", "", "")"#)
}

fn guard_panel(q: &Queries<'_>, config: &Config) -> Json {
    // Trips an hour as the burst alert judges them: their rate, times 3600 (the alert over
    // `rate_window`, the panel over Grafana's rate interval).
    let expr = format!(
        "sum by (reason) (rate({}{{{}}}[$__rate_interval])) * 3600",
        q.names.guard_trips(),
        q.sel
    );
    let lines: Vec<(f64, &'static str)> = config
        .alerts
        .guard_trip_burst
        .iter()
        .map(|(_, per_hour)| (*per_hour as f64, "red"))
        .collect();
    let reasons: Vec<String> = config
        .alerts
        .guard_trip_burst
        .iter()
        .map(|(r, n)| format!("{r} > {n}"))
        .collect();
    with_lines(
        timeseries(
            "Guard trips per reason (an hour, at the current rate)",
            &format!(
                "Guard trips per reason, as a rate in trips an hour, as the burst alerts judge them. Lines: the burst limits ({}).",
                reasons.join(", ")
            ),
            "short",
            vec![target(0, expr, "{{reason}}")],
        ),
        &lines,
    )
}

fn gauge_panel(q: &Queries<'_>, gauge: &str) -> Json {
    let name = format!("{}_{gauge}", q.names.namespace());
    let sel = &q.sel;
    timeseries(
        gauge,
        &format!("The application's gauge {name}."),
        "short",
        vec![target(
            0,
            format!("{name}{{{sel}}}"),
            "{{instance}} {{env}}",
        )],
    )
}

fn health_panels(q: &Queries<'_>, config: &Config) -> Vec<Json> {
    let sel = &q.sel;
    let health = |suffix: &str| {
        q.names
            .health(suffix)
            .unwrap_or_else(|| panic!("MetricNames knows no health figure {suffix}"))
    };
    // Per stage and, for a labelled stage, per label set (`sum by (stage)` added those up).
    let per_series = |counter: &str, what: &str| {
        tagged(
            &format!("sum without (instance) (rate({counter}{{{sel}}}[$__rate_interval]))"),
            "records",
            what,
        )
    };
    let drops = timeseries(
        "Records dropped and sampled out (per second)",
        "Records a full ring handed back (dropped) and records sampling left out, per stage and label set. Any drop loses data: the `dropped` alert fires on it.",
        "short",
        vec![
            target(0, per_series(q.names.dropped(), "dropped"), AUTO_LEGEND),
            target(
                1,
                per_series(q.names.sampled_out(), "sampled out"),
                AUTO_LEGEND,
            ),
        ],
    );
    let stall = config.alerts.aggregator_stalled_after.as_secs_f64();
    let lag = with_lines(
        timeseries(
            "Aggregator lag and drain age",
            &format!(
                "Age of the oldest record the aggregator drained last cycle, and time since it last drained. Line: the stall limit ({stall} s)."
            ),
            "s",
            vec![
                target(
                    0,
                    format!("max({}{{{sel}}})", health("aggregator_lag_seconds")),
                    "lag",
                ),
                target(
                    1,
                    format!(
                        "max({}{{{sel}}})",
                        health("aggregator_last_drain_age_seconds")
                    ),
                    "drain age",
                ),
            ],
        ),
        &[(stall, "red")],
    );
    let mut sampling = timeseries(
        "Sampling rate",
        "The global sampling rate in force (1 records every span), and whether adaptive sampling holds it down.",
        "percentunit",
        vec![
            target(
                0,
                format!("min({}{{{sel}}})", health("sampling_rate")),
                "sampling rate",
            ),
            target(
                1,
                format!("max({}{{{sel}}})", health("adaptive_sampling_engaged")),
                "adaptive engaged",
            ),
        ],
    );
    sampling["fieldConfig"]["defaults"]["min"] = json!(0);
    sampling["fieldConfig"]["defaults"]["max"] = json!(1);
    vec![drops, lag, sampling]
}

fn stage_regex(stages: &[&str]) -> String {
    let alternatives: Vec<String> = stages.iter().map(|s| regex_escape(s)).collect();
    alternatives.join("|")
}

/// Escapes a stage name for a PromQL regex matcher (RE2 inside a PromQL string).
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if ".+*?()|[]{}^$\\".contains(c) {
            out.push_str(r"\\");
        }
        out.push(c);
    }
    out
}

/// The selector of the canary panels: every env, the stage regex.
fn canary_selector(stages: &[&str]) -> String {
    format!(
        r#"stage=~"{}",job=~"$job",instance=~"$instance""#,
        stage_regex(stages)
    )
}

fn canary_p95_panel(q: &Queries<'_>, stages: &[&str]) -> Json {
    let family = q.names.stage_duration();
    let env = q.env_label;
    let sel = canary_selector(stages);
    let by = format!("stage, {env}");
    let expr = q.hist.quantile(
        0.95,
        Agg::By(&by),
        family,
        &format!("{{{sel}}}"),
        RATE_RANGE,
    );
    timeseries(
        "p95 per env (canary vs baseline)",
        &format!("p95 of each SLA'd stage per `{env}` label, every env at once."),
        grafana_unit(q.names.unit()),
        vec![target(0, expr, &format!("{{{{stage}}}} {{{{{env}}}}}"))],
    )
}

fn canary_regression_panel(q: &Queries<'_>, config: &Config, stages: &[&str]) -> Json {
    let family = q.names.stage_duration();
    let env = q.env_label;
    let sel = canary_selector(stages);
    let p95 = |which: &str| {
        let selector = format!(r#"{{{sel},{env}="{which}"}}"#);
        q.hist
            .quantile(0.95, Agg::By("stage"), family, &selector, RATE_RANGE)
    };
    let expr = format!("({} / {} - 1) * 100", p95(CANARY_ENV), p95(BASELINE_ENV));
    let pct = config.alerts.canary_regression_pct;
    let mut panel = with_lines(
        timeseries(
            "Canary p95 regression against baseline (%)",
            &format!(
                "How much higher the canary's p95 is than the baseline's, per stage. Line: the rollback trigger (+{pct} %). Empty unless processes with {env}=\"{CANARY_ENV}\" and {env}=\"{BASELINE_ENV}\" both run."
            ),
            "percent",
            vec![target(0, expr, "{{stage}}")],
        ),
        &[(pct, "red")],
    );
    panel["fieldConfig"]["defaults"]["noValue"] = json!(format!(
        "no {CANARY_ENV} and {BASELINE_ENV} running side by side"
    ));
    panel
}

/// A variable's "every value" selection.
const ALL: &str = "$__all";

/// The template variables: the Prometheus data source, then job, instance and env, each a
/// query over the label values of the stage histogram's count (a classic family) or of the
/// histogram itself (a native one).
fn variables(q: &Queries<'_>, prom: &laptime::config::PrometheusSection) -> Vec<Json> {
    let family = q.names.stage_duration();
    let query = |name: &str, label: &str, filter: &str, current: Option<&str>| {
        let q = format!("label_values({}, {label})", q.hist.presence(family, filter));
        let mut v = json!({
            "name": name,
            "label": name,
            "type": "query",
            "datasource": datasource(),
            "query": { "query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery" },
            "refresh": 2,
            "sort": 1,
            "multi": true,
            "includeAll": true,
            "allValue": ".*",
        });
        match current {
            // Every instance and env until the reader picks: with none selected, panels
            // stayed empty on a first load.
            Some(ALL) => v["current"] = json!({ "text": ["All"], "value": ["$__all"] }),
            Some(c) => v["current"] = json!({ "text": c, "value": c }),
            None => {}
        }
        v
    };
    vec![
        json!({
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
        }),
        query("job", "job", "", Some(&prom.job)),
        query("instance", "instance", r#"{job=~"$job"}"#, Some(ALL)),
        query("env", &prom.env_label, r#"{job=~"$job"}"#, Some(ALL)),
    ]
}

/// Lays panels out two per row under collapsible-free row headers, numbering ids from 1.
#[derive(Default)]
struct Grid {
    panels: Vec<Json>,
    next_id: u32,
    y: u32,
    /// Whether the last panel placed is in the left half (the next one goes right).
    left_taken: bool,
}

impl Grid {
    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn newline(&mut self) {
        if self.left_taken {
            self.y += PANEL_HEIGHT;
            self.left_taken = false;
        }
    }

    fn row(&mut self, title: &str) {
        self.newline();
        let id = self.id();
        self.panels.push(json!({
            "type": "row",
            "id": id,
            "title": title,
            "collapsed": false,
            "panels": [],
            "gridPos": { "h": 1, "w": 24, "x": 0, "y": self.y },
        }));
        self.y += 1;
    }

    fn panel(&mut self, mut panel: Json) {
        let id = self.id();
        let x = if self.left_taken { HALF } else { 0 };
        panel["id"] = json!(id);
        panel["gridPos"] = json!({ "h": PANEL_HEIGHT, "w": HALF, "x": x, "y": self.y });
        self.panels.push(panel);
        if self.left_taken {
            self.y += PANEL_HEIGHT;
        }
        self.left_taken = !self.left_taken;
    }
}
