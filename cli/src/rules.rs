//! `laptime rules`: Prometheus recording and alert rules, and their promtool unit tests, generated
//! from the same configuration file the process loads ([`laptime::config::Config`]), so the
//! in-process SLA checks and the Prometheus alerts judge the same stages against the same
//! thresholds. Metric names come from [`MetricNames`], the exporter's own.
//!
//! # YAML without a YAML library
//!
//! The two files are a small fixed structure (groups of rules; tests of series and expected
//! alerts), so [`Yaml`] writes it in block style with every string double-quoted through
//! `serde_json` (a JSON string is a valid YAML double-quoted scalar). No YAML crate is pulled in
//! (`serde_yaml` is archived), nothing is ever parsed back, and `promtool check rules` /
//! `promtool test rules` (cli/tests/rules.rs) are the check that the output is what Prometheus
//! reads.
//!
//! # Windows
//!
//! An SLA rule's window (`1s`, `60s`) is the process's sliding window; Prometheus sees scrapes,
//! so every generated rule reads its rule's metric over `[alerts].rate_window` instead.
//!
//! # Coordinated omission
//!
//! Every stage `[expected_intervals]` corrects also gets a recording rule of its corrected p99,
//! `<ns>:stage_latency_corrected_<unit>:p99`, from the exporter's corrected histogram, beside
//! the raw `<ns>:stage_latency_<unit>:p99` (with a unit test). Alerts stay on the raw figures,
//! which the SLA rules judge in the process too.
//!
//! # Native histograms
//!
//! With `[prometheus] native = true` (`laptime rules --native`) every rule reads the stage
//! histograms as native histograms ([`crate::promql`]); records and alerts keep their names and
//! labels. promtool 2.42 cannot feed a test a native histogram, so the native tests cover the
//! rules that read none and list the others ([`NATIVE_TESTS_NOTE`]).

use std::fmt::Write as _;
use std::time::Duration;

use laptime::config::{AlertsSection, Config, SlaRuleConfig};
use laptime::export::prometheus::MetricNames;
use laptime::{Metric, Value};

use crate::promql::{Agg, Histograms, Part};

/// A YAML value of the block style the rule files use.
#[derive(Debug, Clone)]
pub enum Yaml {
    /// A string, always double-quoted.
    Str(String),
    /// A number or other plain scalar, written as is.
    Plain(String),
    /// A mapping, in order.
    Map(Vec<(String, Yaml)>),
    /// A sequence.
    Seq(Vec<Yaml>),
}

fn s(v: impl Into<String>) -> Yaml {
    Yaml::Str(v.into())
}

fn map(entries: Vec<(&str, Yaml)>) -> Yaml {
    Yaml::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn quote(v: &str) -> String {
    serde_json::to_string(v).expect("a string serializes")
}

/// A mapping key: plain when it is a simple identifier, quoted otherwise.
fn key(k: &str) -> String {
    let mut chars = k.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain { k.to_owned() } else { quote(k) }
}

/// An SLA rule's window in an alert's name: `60s`, `1500ms` (whole units, so 1.5 s and 15 s
/// differ), `Cumulative`.
fn window_token(w: laptime::Window) -> String {
    match w {
        laptime::Window::Last(d) => name_duration(d),
        _ => "Cumulative".to_owned(),
    }
}

/// An SLA rule's window, as the file writes it.
fn window_text(w: laptime::Window) -> String {
    match w {
        laptime::Window::Last(d) => human_duration(d),
        _ => "cumulative".to_owned(),
    }
}

impl Yaml {
    /// The document, ending with a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn inline(&self) -> Option<String> {
        match self {
            Yaml::Str(v) => Some(quote(v)),
            Yaml::Plain(v) => Some(v.clone()),
            Yaml::Map(m) if m.is_empty() => Some("{}".to_owned()),
            Yaml::Seq(l) if l.is_empty() => Some("[]".to_owned()),
            _ => None,
        }
    }

    fn write(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        match self {
            Yaml::Map(m) if !m.is_empty() => {
                for (k, v) in m {
                    match v.inline() {
                        Some(text) => {
                            let _ = writeln!(out, "{pad}{}: {text}", key(k));
                        }
                        None => {
                            let _ = writeln!(out, "{pad}{}:", key(k));
                            v.write(out, indent + 2);
                        }
                    }
                }
            }
            Yaml::Seq(l) if !l.is_empty() => {
                for item in l {
                    match item.inline() {
                        Some(text) => {
                            let _ = writeln!(out, "{pad}- {text}");
                        }
                        None => {
                            // The item's first line goes after the dash, the rest aligned with it.
                            let mut inner = String::new();
                            item.write(&mut inner, indent + 2);
                            let rest = &inner[indent + 2..];
                            let _ = write!(out, "{pad}- {rest}");
                        }
                    }
                }
            }
            other => {
                let _ = writeln!(out, "{pad}{}", other.inline().unwrap_or_default());
            }
        }
    }
}

/// A Prometheus duration: whole hours, minutes, seconds or milliseconds. PromQL's grammar (`5m`,
/// no fractions, no `µ`), so not [`laptime::fmt::duration`], which writes figures for people.
pub fn prom_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_owned()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A threshold for a rule name: `2ms`, `1600us`, `250ns`, `1s`. A token of a series name (ASCII,
/// integral, exact), so not [`laptime::fmt::duration`].
fn name_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1000) {
        format!("{}us", ns / 1000)
    } else {
        format!("{ns}ns")
    }
}

/// A threshold for people: `1.6ms`. Exact, where [`laptime::fmt::duration`] rounds to three
/// significant digits (`1.60ms`, and `1.2345ms` would read `1.23ms`): an alert's text quotes the
/// threshold as the configuration file gives it, and the committed `ops/` files are written so.
fn human_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e9 {
        format!("{}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{}us", ns / 1e3)
    } else {
        format!("{ns}ns")
    }
}

/// Characters a metric or rule name cannot hold become `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn camel(name: &str) -> String {
    sanitize(name)
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A stage in an alert's name: `TickTotal`, and for a labelled stage its labels too
/// (`ExchangeReqVerbPostApiBatch`), so the alerts of two label sets of one stage have names of
/// their own. With one name, each set's no-data alert fired for the other's missing series.
fn stage_token(stage: &StageRef) -> String {
    let mut token = camel(&stage.name);
    for (k, v) in &stage.labels {
        token.push_str(&camel(k));
        token.push_str(&camel(v));
    }
    token
}

fn metric_tag(m: Metric) -> String {
    match m {
        Metric::Quantile(q) => format!("p{}", (q * 100.0).to_string().replace('.', "")),
        Metric::Max => "max".to_owned(),
        Metric::Mean => "mean".to_owned(),
        Metric::DeadlineMissRate => "deadline_miss_rate".to_owned(),
    }
}

/// One stage the configuration names: by `[deadlines]` or by an `[[sla]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRef {
    /// The stage's name.
    pub name: String,
    /// Its static labels, in order.
    pub labels: Vec<(String, String)>,
    /// Its deadline, if `[deadlines]` gives one (labelled or not: deadlines are by name).
    pub deadline: Option<Duration>,
    /// Whether it is a labelled stage's bare name (`[prometheus] labelled_stages`, no labels):
    /// the total of its label sets, which the exporter leaves to the backend to sum.
    pub total: bool,
}

/// How to query one stage's series.
struct Sel<'a> {
    n: &'a MetricNames,
    stage: &'a StageRef,
    env: &'a str,
    /// Whether the stage's series are in a family of its own: a labelled stage, or the bare
    /// name of one (`[prometheus] labelled_stages`), whose total the exporter leaves to the
    /// backend to sum from its label sets.
    own_family: bool,
    /// How Prometheus stores the family.
    hist: Histograms,
}

impl Sel<'_> {
    /// The histogram family (without `_bucket`) and its matchers.
    fn family(&self) -> (String, String) {
        if !self.own_family {
            (
                self.n.stage_duration().to_owned(),
                format!("stage={}", quote(&self.stage.name)),
            )
        } else {
            (
                self.n.labelled_stage(&self.stage.name),
                self.label_matchers(),
            )
        }
    }

    fn label_matchers(&self) -> String {
        self.stage
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The labels every per-stage aggregation keeps.
    fn group(&self) -> Vec<String> {
        let mut g = Vec::new();
        if !self.own_family {
            g.push("stage".to_owned());
        }
        g.extend(self.stage.labels.iter().map(|(k, _)| k.clone()));
        g.push(self.env.to_owned());
        g
    }

    fn by(&self) -> String {
        self.group().join(", ")
    }

    fn quantile(&self, q: f64, window: &str) -> String {
        let (fam, m) = self.family();
        let by = self.by();
        self.hist
            .quantile(q, Agg::By(&by), &fam, &format!("{{{m}}}"), window)
    }

    fn rate_of(&self, part: Part, window: &str) -> String {
        let (fam, m) = self.family();
        let by = self.by();
        self.hist
            .rate(part, Agg::By(&by), &fam, &format!("{{{m}}}"), window)
    }

    /// A series the stage has while it is exported, for `absent()`.
    fn presence(&self) -> String {
        let (fam, m) = self.family();
        self.hist.presence(&fam, &format!("{{{m}}}"))
    }

    fn miss_ratio(&self, window: &str) -> String {
        let mut m = format!("stage={}", quote(&self.stage.name));
        if !self.stage.labels.is_empty() {
            m.push(',');
            m.push_str(&self.label_matchers());
        }
        format!(
            "sum by ({g}) (rate({}{{{m}}}[{window}])) / {}",
            self.n.deadline_miss(),
            self.rate_of(Part::Count, window),
            g = self.by()
        )
    }

    /// The static labels of a stage's alerts: none for a plain stage (the alert's name holds
    /// the stage), else `stage` (its own family has no `stage` label) and the stage's labels,
    /// which the alert's series carries anyway: Prometheus' linter tells alerts apart by name and
    /// static labels, and two label sets of one stage share the name.
    fn extra_labels(&self) -> Vec<(String, String)> {
        if self.own_family {
            series_identity(self.stage)
        } else {
            Vec::new()
        }
    }
}

/// What every alert of one stage shares.
struct StageAlerts<'a> {
    stage: &'a StageRef,
    sel: Sel<'a>,
    /// The stage as the annotations name it. A labelled stage's own family has no `stage` label
    /// (the rule adds it, after the annotations are expanded): its name goes in as written.
    shown: String,
    /// `stage` and the stage's static labels: what its tests expect on a firing alert.
    labels: Vec<(String, String)>,
    /// `for:`.
    pending: String,
}

impl<'a> StageAlerts<'a> {
    fn new(plan: &'a Plan<'_>, stage: &'a StageRef) -> Self {
        let sel = plan.sel(stage);
        let shown = if sel.own_family {
            stage.name.clone()
        } else {
            "{{ $labels.stage }}".to_owned()
        };
        Self {
            stage,
            sel,
            shown,
            labels: series_identity(stage),
            pending: prom_duration(plan.config.alerts.pending_for),
        }
    }

    /// The labels the rule adds besides severity, with their values.
    fn extra(&self) -> Vec<(String, String)> {
        self.sel.extra_labels()
    }
}

/// `stage` and the stage's labels: what its exported counters (deadline misses) carry.
fn series_identity(stage: &StageRef) -> Vec<(String, String)> {
    let mut labels = vec![("stage".to_owned(), stage.name.clone())];
    labels.extend(stage.labels.iter().cloned());
    labels
}

/// What a stage's recorded series carry: [`series_identity`], and `total="true"` for a name
/// total, whose records share `stage` with those of its label sets (whose label names the
/// configuration need not list).
fn record_identity(stage: &StageRef) -> Vec<(String, String)> {
    let mut labels = series_identity(stage);
    if stage.total {
        labels.push(("total".to_owned(), "true".to_owned()));
    }
    labels
}

/// `k="v",…` of `labels`.
fn matchers(labels: &[(String, String)]) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    pairs.join(",")
}

/// The matchers of a stage's recorded series ([`record_identity`]).
fn record_matchers(stage: &StageRef) -> String {
    matchers(&record_identity(stage))
}

/// The matchers of a stage's exported counters ([`series_identity`]).
fn series_matchers(stage: &StageRef) -> String {
    matchers(&series_identity(stage))
}

/// A builder of one of the alerts every stage gets.
type StageAlert<'a> = fn(&Plan<'a>, &StageAlerts<'_>) -> Option<Alert>;

/// Everything the generator derives from a configuration.
pub struct Plan<'a> {
    config: &'a Config,
    names: MetricNames,
    window: String,
    hist: Histograms,
}

impl<'a> Plan<'a> {
    /// The plan for `config`.
    pub fn new(config: &'a Config) -> Self {
        let p = &config.prometheus;
        Self {
            config,
            names: MetricNames::new(&p.namespace, p.unit.into()),
            window: prom_duration(config.alerts.rate_window),
            hist: Histograms::of(p),
        }
    }

    /// The stages: every `[[sla]]` stage (with its labels), then every `[deadlines]` stage no
    /// rule names, in the file's order.
    pub fn stages(&self) -> Vec<StageRef> {
        let deadline = |name: &str| {
            self.config
                .deadlines
                .iter()
                .find(|(s, _)| s == name)
                .map(|(_, d)| *d)
        };
        let labelled = &self.config.prometheus.labelled_stages;
        let total = |name: &String, labels: &[(String, String)]| {
            labels.is_empty() && labelled.contains(name)
        };
        let mut out: Vec<StageRef> = Vec::new();
        for r in &self.config.sla {
            if !out
                .iter()
                .any(|s| s.name == r.stage && s.labels == r.labels)
            {
                out.push(StageRef {
                    name: r.stage.clone(),
                    labels: r.labels.clone(),
                    deadline: deadline(&r.stage),
                    total: total(&r.stage, &r.labels),
                });
            }
        }
        for (name, d) in &self.config.deadlines {
            if !out.iter().any(|s| &s.name == name) {
                out.push(StageRef {
                    name: name.clone(),
                    labels: Vec::new(),
                    deadline: Some(*d),
                    total: total(name, &[]),
                });
            }
        }
        out
    }

    fn sel<'b>(&'b self, stage: &'b StageRef) -> Sel<'b> {
        Sel {
            n: &self.names,
            stage,
            env: &self.config.prometheus.env_label,
            own_family: !stage.labels.is_empty() || stage.total,
            hist: self.hist,
        }
    }

    fn rules_for(&self, stage: &StageRef) -> Vec<&'a SlaRuleConfig> {
        self.config
            .sla
            .iter()
            .filter(|r| r.stage == stage.name && r.labels == stage.labels)
            .collect()
    }

    /// `<ns>:stage_latency_<unit>:p95`.
    pub fn quantile_record(&self, tag: &str) -> String {
        let unit = self
            .names
            .stage_duration()
            .rsplit('_')
            .next()
            .unwrap_or("seconds")
            .to_owned();
        format!("{}:stage_latency_{unit}:{tag}", self.names.namespace())
    }

    /// `<ns>:stage_latency_corrected_<unit>:p99`: a quantile of the coordinated-omission
    /// corrected histogram.
    pub fn corrected_quantile_record(&self, tag: &str) -> String {
        self.quantile_record(tag)
            .replacen(":stage_latency_", ":stage_latency_corrected_", 1)
    }

    /// The stages `[expected_intervals]` corrects, with their intervals, in the file's order.
    pub fn corrected_stages(&self) -> &[(String, Duration)] {
        &self.config.expected_intervals
    }

    /// `histogram_quantile(q, …)` over a corrected stage's corrected histogram.
    fn corrected_quantile(&self, stage: &str, q: f64) -> String {
        let by = format!("stage, {}", self.env());
        self.hist.quantile(
            q,
            Agg::By(&by),
            self.names.stage_duration_corrected(),
            &format!("{{stage={}}}", quote(stage)),
            &self.window,
        )
    }

    /// `<ns>:deadline_miss:ratio_rate<window>`.
    pub fn miss_record(&self) -> String {
        format!(
            "{}:deadline_miss:ratio_rate{}",
            self.names.namespace(),
            self.window
        )
    }

    /// The threshold the SLO compliance series compares p95 with: the p95 rule's critical
    /// threshold (or warning if it has none), else the stage's deadline.
    fn slo_threshold(&self, stage: &StageRef) -> Option<Duration> {
        let p95 = self.rules_for(stage).into_iter().find_map(|r| {
            (r.metric == Metric::P95)
                .then(|| match r.critical.or(r.warning) {
                    Some(Value::Latency(d)) => Some(d),
                    _ => None,
                })
                .flatten()
        });
        p95.or(stage.deadline)
    }

    /// `slo:<stage>:p95_under_<threshold>`.
    pub fn slo_record(&self, stage: &StageRef, threshold: Duration) -> String {
        format!(
            "slo:{}:p95_under_{}",
            sanitize(&stage.name),
            name_duration(threshold)
        )
    }

    /// Every recording rule, in the file's order.
    pub fn records(&self) -> Vec<Record> {
        let mut rules = Vec::new();
        for stage in self.stages() {
            let sel = self.sel(&stage);
            for (q, tag) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
                rules.push(Record {
                    name: self.quantile_record(tag),
                    expr: sel.quantile(q, &self.window),
                    labels: record_identity(&stage),
                    reads_histograms: true,
                });
            }
            if let Some(t) = self.slo_threshold(&stage) {
                let m = record_matchers(&stage);
                rules.push(Record {
                    name: self.slo_record(&stage, t),
                    expr: format!(
                        "{}{{{m}}} < bool {}",
                        self.quantile_record("p95"),
                        self.names.in_unit(t)
                    ),
                    labels: record_identity(&stage),
                    reads_histograms: false,
                });
            }
            if stage.deadline.is_some() {
                rules.push(Record {
                    name: self.miss_record(),
                    expr: sel.miss_ratio(&self.window),
                    labels: record_identity(&stage),
                    reads_histograms: true,
                });
            }
        }
        // The corrected p99 of every stage `[expected_intervals]` corrects, beside the raw one.
        for (stage, _) in self.corrected_stages() {
            rules.push(Record {
                name: self.corrected_quantile_record("p99"),
                expr: self.corrected_quantile(stage, 0.99),
                labels: vec![("stage".to_owned(), stage.clone())],
                reads_histograms: true,
            });
        }
        rules
    }

    fn recording(&self) -> Yaml {
        let rules = self
            .records()
            .into_iter()
            .map(|r| {
                let labels = r.labels.into_iter().map(|(k, v)| (k, s(v))).collect();
                map(vec![
                    ("record", s(r.name)),
                    ("expr", s(r.expr)),
                    ("labels", Yaml::Map(labels)),
                ])
            })
            .collect();
        map(vec![
            ("name", s(format!("{}_recording", self.names.namespace()))),
            ("rules", Yaml::Seq(rules)),
        ])
    }

    /// Every alert, with what its tests need.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut out = Vec::new();
        for stage in self.stages() {
            let ctx = StageAlerts::new(self, &stage);
            out.extend(self.sla_alerts(&ctx));
            // The alerts every stage gets after its SLA rules' own, in this order; a builder
            // gives `None` where its alert does not apply.
            let builders: [StageAlert<'a>; 3] = [
                Self::deadline_alert,
                Self::no_data_alert,
                Self::canary_alert,
            ];
            for build in builders {
                out.extend(build(self, &ctx));
            }
        }
        for (reason, n) in &self.config.alerts.guard_trip_burst {
            out.push(self.guard_burst_alert(reason, *n));
        }
        out.push(self.dropped_alert());
        out.push(self.stalled_alert());
        out
    }

    /// Alert names start with the namespace in camel case (`MmTickTotalNoData`).
    fn alert_prefix(&self) -> String {
        camel(self.names.namespace())
    }

    fn env(&self) -> &str {
        &self.config.prometheus.env_label
    }

    /// One alert per threshold (warning, then critical) of every SLA rule on the stage.
    fn sla_alerts(&self, ctx: &StageAlerts<'_>) -> Vec<Alert> {
        let mut out = Vec::new();
        for rule in self.rules_for(ctx.stage) {
            for (severity, value) in [("warning", rule.warning), ("critical", rule.critical)] {
                if let Some(value) = value {
                    out.extend(self.sla_alert(ctx, rule, severity, value));
                }
            }
        }
        out
    }

    /// The alert of one threshold of one SLA rule; `None` for a metric and value that do not
    /// go together.
    fn sla_alert(
        &self,
        ctx: &StageAlerts<'_>,
        rule: &SlaRuleConfig,
        severity: &'static str,
        value: Value,
    ) -> Option<Alert> {
        let (expr, shown) = self.sla_condition(&ctx.sel, rule.metric, value)?;
        let (tag, st, env) = (metric_tag(rule.metric), &ctx.shown, self.env());
        // Rules on one metric over different in-process windows become alerts on the same
        // Prometheus window: the in-process window tells their names apart.
        let same_metric = self.rules_for(ctx.stage);
        let over = if same_metric
            .iter()
            .filter(|r| r.metric == rule.metric)
            .count()
            > 1
        {
            format!("Over{}", window_token(rule.window))
        } else {
            String::new()
        };
        Some(Alert {
            name: format!(
                "{}{}{}{over}Slo{}",
                self.alert_prefix(),
                stage_token(ctx.stage),
                camel(&tag),
                camel(severity)
            ),
            expr,
            pending_for: ctx.pending.clone(),
            severity,
            extra: ctx.extra(),
            summary: format!("{tag} of stage {st} above {shown} ({severity})"),
            description: format!(
                "The {tag} of stage {st} in {env} {{{{ $labels.{env} }}}} over the last {} is above the {severity} threshold {shown} of the SLA rule (judged over {} in the process). Look at the stage's latency panel and its child stages, then at guard trips.",
                self.window,
                window_text(rule.window)
            ),
            test: match rule.metric {
                Metric::DeadlineMissRate => TestKind::MissRatio,
                _ => TestKind::Latency(match value {
                    Value::Latency(d) => d,
                    Value::Ratio(_) => Duration::from_millis(1),
                }),
            },
            stage: Some(ctx.stage.clone()),
            stage_labels: ctx.labels.clone(),
        })
    }

    /// An SLA rule's condition in PromQL and its threshold as the annotations show it.
    fn sla_condition(
        &self,
        sel: &Sel<'_>,
        metric: Metric,
        value: Value,
    ) -> Option<(String, String)> {
        let w = &self.window;
        let above = |expr: String, d: Duration| {
            (
                format!("{expr} > {}", self.names.in_unit(d)),
                human_duration(d),
            )
        };
        Some(match (metric, value) {
            (Metric::DeadlineMissRate, Value::Ratio(r)) => (
                format!("{} > {r}", sel.miss_ratio(w)),
                format!("{} %", r * 100.0),
            ),
            (Metric::Quantile(q), Value::Latency(d)) => above(sel.quantile(q, w), d),
            (Metric::Max, Value::Latency(d)) => above(sel.quantile(1.0, w), d),
            (Metric::Mean, Value::Latency(d)) => above(
                format!(
                    "{} / {}",
                    sel.rate_of(Part::Sum, w),
                    sel.rate_of(Part::Count, w)
                ),
                d,
            ),
            _ => return None,
        })
    }

    /// A deadline stage no `deadline_miss_rate` rule judges: its miss ratio against
    /// `[alerts].deadline_miss_ratio`.
    fn deadline_alert(&self, ctx: &StageAlerts<'_>) -> Option<Alert> {
        let judged_by_rule = self.rules_for(ctx.stage).iter().any(|r| {
            r.metric == Metric::DeadlineMissRate
                && [r.warning, r.critical]
                    .iter()
                    .any(|v| matches!(v, Some(Value::Ratio(_))))
        });
        if ctx.stage.deadline.is_none() || judged_by_rule {
            return None;
        }
        let (r, st, env) = (
            self.config.alerts.deadline_miss_ratio,
            &ctx.shown,
            self.env(),
        );
        Some(Alert {
            name: format!(
                "{}{}DeadlineMissRatio",
                self.alert_prefix(),
                stage_token(ctx.stage)
            ),
            expr: format!("{} > {r}", ctx.sel.miss_ratio(&self.window)),
            pending_for: ctx.pending.clone(),
            severity: "critical",
            extra: ctx.extra(),
            summary: format!(
                "stage {st} misses its deadline in more than {} % of spans",
                r * 100.0
            ),
            description: format!(
                "More than {} % of the spans of stage {st} in {env} {{{{ $labels.{env} }}}} ended after the stage's deadline over the last {}. Look at the deadline-miss panel and the stage's p99.",
                r * 100.0,
                self.window
            ),
            test: TestKind::MissRatio,
            stage: Some(ctx.stage.clone()),
            stage_labels: ctx.labels.clone(),
        })
    }

    /// No data: the stage recorded nothing for `no_data_after`, or was never exported.
    fn no_data_alert(&self, ctx: &StageAlerts<'_>) -> Option<Alert> {
        let nd = prom_duration(self.config.alerts.no_data_after);
        let st = &ctx.shown;
        Some(Alert {
            name: format!("{}{}NoData", self.alert_prefix(), stage_token(ctx.stage)),
            expr: format!(
                "{} == 0 or absent({})",
                ctx.sel.rate_of(Part::Count, &nd),
                ctx.sel.presence()
            ),
            pending_for: ctx.pending.clone(),
            severity: "warning",
            extra: ctx.extra(),
            summary: format!("stage {st} recorded nothing for {nd}"),
            description: format!(
                "No span of stage {st} was exported over the last {nd}. Look at whether the process is up and scraped (up, /health), whether the stage still runs, and at the sampling rate."
            ),
            test: TestKind::NoData,
            stage: Some(ctx.stage.clone()),
            stage_labels: ctx.labels.clone(),
        })
    }

    /// Canary regression: canary p95 above baseline's by more than the percentage.
    fn canary_alert(&self, ctx: &StageAlerts<'_>) -> Option<Alert> {
        let pct = self.config.alerts.canary_regression_pct;
        let (m, st, env) = (record_matchers(ctx.stage), &ctx.shown, self.env());
        let p95 = self.quantile_record("p95");
        Some(Alert {
            name: format!(
                "{}{}CanaryRegression",
                self.alert_prefix(),
                stage_token(ctx.stage)
            ),
            expr: format!(
                "{p95}{{{m},{env}=\"canary\"}} > ignoring({env}) {} * {p95}{{{m},{env}=\"baseline\"}}",
                1.0 + pct / 100.0
            ),
            pending_for: ctx.pending.clone(),
            severity: "critical",
            extra: ctx.extra(),
            summary: format!("canary p95 of stage {st} more than {pct} % above baseline"),
            description: format!(
                "The canary's p95 of stage {st} over the last {} is more than {pct} % above the baseline's: roll the canary back. Compare the two on the canary-vs-baseline panel.",
                self.window
            ),
            test: TestKind::Canary,
            stage: Some(ctx.stage.clone()),
            // It reads the p95 records: their labels, `total` too for a name total.
            stage_labels: record_identity(ctx.stage),
        })
    }

    /// Trips of one reason at more than `n` an hour, as a rate over the rate window: an
    /// `increase(…[1h])` held the alert for an hour after the burst had passed.
    fn guard_burst_alert(&self, reason: &str, n: u64) -> Alert {
        let env = self.env();
        Alert {
            name: format!("{}GuardTripBurst{}", self.alert_prefix(), camel(reason)),
            expr: format!(
                "sum by (reason, {env}) (rate({}{{reason={}}}[{}])) * 3600 > {n}",
                self.names.guard_trips(),
                quote(reason),
                self.window
            ),
            pending_for: prom_duration(self.config.alerts.pending_for),
            severity: "warning",
            extra: Vec::new(),
            summary: format!("guard {{{{ $labels.reason }}}} tripping more than {n} times an hour"),
            description: format!(
                "The {{{{ $labels.reason }}}} guard tripped at more than {n} an hour over the last {} in {env} {{{{ $labels.{env} }}}}. Look at the guard-trips panel and the stage latencies around the trips.",
                self.window
            ),
            test: TestKind::Guard(reason.to_owned(), n),
            stage: None,
            stage_labels: vec![("reason".to_owned(), reason.to_owned())],
        }
    }

    fn dropped_alert(&self) -> Alert {
        let (a, env) = (&self.config.alerts, self.env());
        Alert {
            name: format!("{}RecordsDropped", self.alert_prefix()),
            expr: format!(
                "sum by (stage, {env}) (rate({}[{}])) > {}",
                self.names.dropped(),
                self.window,
                a.drop_rate
            ),
            pending_for: prom_duration(a.drop_for),
            severity: "warning",
            extra: Vec::new(),
            summary: "records of stage {{ $labels.stage }} are being dropped".to_owned(),
            description: format!(
                "Rings are full: records of stage {{{{ $labels.stage }}}} in {env} {{{{ $labels.{env} }}}} are dropped, so its percentiles miss them. Look at the ring high-water mark, the aggregator lag and cycle time; raise ring_capacity or lower the interval."
            ),
            test: TestKind::Dropped,
            stage: None,
            stage_labels: vec![("stage".to_owned(), "dropping_stage".to_owned())],
        }
    }

    fn stalled_alert(&self) -> Alert {
        let (a, env) = (&self.config.alerts, self.env());
        let stalled = a.aggregator_stalled_after.as_secs_f64();
        let (age, lag) = self.aggregator_gauges();
        Alert {
            name: format!("{}AggregatorStalled", self.alert_prefix()),
            expr: format!(
                "max by (instance, {env}) ({age}) > {stalled} or max by (instance, {env}) ({lag}) > {stalled}"
            ),
            pending_for: prom_duration(a.pending_for),
            severity: "critical",
            extra: Vec::new(),
            summary: "laptime's aggregator on {{ $labels.instance }} is stalled".to_owned(),
            description: format!(
                "The aggregator on {{{{ $labels.instance }}}} has not drained the rings for more than {} (or drains records that old): every figure it exports is stale. Look at /health, aggregator restarts and callback panics.",
                human_duration(a.aggregator_stalled_after)
            ),
            test: TestKind::Stalled,
            stage: None,
            stage_labels: vec![("instance".to_owned(), "app:9000".to_owned())],
        }
    }

    /// The health gauges the stalled alert reads: the last drain's age and the aggregator's lag.
    fn aggregator_gauges(&self) -> (String, String) {
        let gauge = |name| self.names.health(name).unwrap_or_default();
        (
            gauge("aggregator_last_drain_age_seconds"),
            gauge("aggregator_lag_seconds"),
        )
    }

    fn alerting(&self) -> Yaml {
        let rules = self
            .alerts()
            .iter()
            .map(|al| {
                let mut labels = vec![("severity", s(al.severity))];
                for (k, v) in &al.extra {
                    labels.push((k.as_str(), s(v.clone())));
                }
                map(vec![
                    ("alert", s(al.name.clone())),
                    ("expr", s(al.expr.clone())),
                    ("for", s(al.pending_for.clone())),
                    ("labels", map(labels)),
                    (
                        "annotations",
                        map(vec![
                            ("summary", s(al.summary.clone())),
                            ("description", s(al.description.clone())),
                        ]),
                    ),
                ])
            })
            .collect();
        map(vec![
            ("name", s(format!("{}_alerts", self.names.namespace()))),
            ("rules", Yaml::Seq(rules)),
        ])
    }

    /// `rules.yml`.
    pub fn rules_yaml(&self) -> String {
        let doc = map(vec![(
            "groups",
            Yaml::Seq(vec![self.recording(), self.alerting()]),
        )]);
        format!(
            "# Generated by `laptime rules` from the configuration file: do not edit.\n{}",
            doc.render()
        )
    }
}

/// One generated recording rule.
#[derive(Debug, Clone)]
pub struct Record {
    /// The recorded series' name.
    pub name: String,
    /// Its PromQL.
    pub expr: String,
    /// Its static labels: the stage and its labels, the values its recorded series carry anyway.
    /// Prometheus' linter (`promtool check rules --lint-fatal`) tells rules apart by record
    /// name and static labels only, so without them the records of two stages were duplicates.
    pub labels: Vec<(String, String)>,
    /// Whether its expression reads a stage histogram (not only other records).
    pub reads_histograms: bool,
}

/// What an alert's unit tests feed it.
#[derive(Debug, Clone)]
pub enum TestKind {
    /// Stage latency against this threshold (the highest of the rule's).
    Latency(Duration),
    /// Deadline-miss ratio.
    MissRatio,
    /// No data.
    NoData,
    /// Canary vs baseline.
    Canary,
    /// Guard trips of a reason above a count per hour.
    Guard(String, u64),
    /// Dropped records.
    Dropped,
    /// Aggregator stalled.
    Stalled,
}

impl TestKind {
    /// Whether the alert's expression reads a stage histogram itself (the canary alert reads
    /// the p95 records; the rest read counters and gauges).
    pub fn reads_histograms(&self) -> bool {
        matches!(self, Self::Latency(_) | Self::MissRatio | Self::NoData)
    }
}

/// One generated alert.
#[derive(Debug, Clone)]
pub struct Alert {
    /// The alert's name.
    pub name: String,
    /// Its PromQL.
    pub expr: String,
    /// `for:`.
    pub pending_for: String,
    /// `severity` label.
    pub severity: &'static str,
    /// Labels the rule adds besides severity.
    pub extra: Vec<(String, String)>,
    /// Annotation `summary` (templates use `$labels` only).
    pub summary: String,
    /// Annotation `description`.
    pub description: String,
    /// How it is tested.
    pub test: TestKind,
    /// The stage it watches.
    pub stage: Option<StageRef>,
    /// The labels identifying what it watches, for tests.
    pub stage_labels: Vec<(String, String)>,
}

/// Expands `{{ $labels.x }}` with `labels`, as Prometheus will.
fn expand(template: &str, labels: &[(String, String)]) -> String {
    let mut out = template.to_owned();
    for (k, v) in labels {
        out = out.replace(&format!("{{{{ $labels.{k} }}}}"), v);
    }
    out
}

impl Plan<'_> {
    /// `rules_test.yml`: promtool unit tests, one that fires and one that stays quiet per alert,
    /// and checks of the recording rules' values.
    pub fn tests_yaml(&self, rule_file: &str) -> String {
        let tl = Timeline::new(&self.config.alerts);
        let native = self.hist.is_native();
        let mut tests = Vec::new();
        for al in self.alerts() {
            if !(native && al.test.reads_histograms()) {
                let inputs = self.alert_inputs(&al, &tl);
                tests.extend(alert_tests(&al, &inputs, &tl));
            }
        }
        // Recording rules: p50/p95/p99 of spans all in (c, 2c] are 1.5c, 1.95c, 1.99c; the SLO
        // series is 0 for them and 1 for spans below c/1000.
        for stage in self.stages() {
            if let Some(c) = self.slo_threshold(&stage) {
                tests.push(self.recording_test(&stage, c, &tl));
            }
        }
        if !native {
            for (stage, interval) in self.corrected_stages() {
                tests.push(self.corrected_test(stage, *interval, &tl));
            }
        }
        let doc = map(vec![
            ("rule_files", Yaml::Seq(vec![s(rule_file)])),
            ("evaluation_interval", s(tl.interval())),
            ("tests", Yaml::Seq(tests)),
        ]);
        let header = if native {
            self.native_tests_header()
        } else {
            String::new()
        };
        format!(
            "# Generated by `laptime rules`: promtool unit tests of rules.yml (`promtool test rules`).\n{header}{}",
            doc.render()
        )
    }

    /// What the native tests leave out, and why: Debian's promtool 2.42 has no notation for a
    /// native histogram sample in a test's input series, so a rule that reads a stage histogram
    /// cannot be fed one. `promtool check rules` still parses them all.
    fn native_tests_header(&self) -> String {
        let mut untested: Vec<String> = self
            .alerts()
            .into_iter()
            .filter(|al| al.test.reads_histograms())
            .map(|al| format!("alert {}", al.name))
            .collect();
        for r in self.records() {
            let line = format!("record {}", r.name);
            if r.reads_histograms && !untested.contains(&line) {
                untested.push(line);
            }
        }
        let mut out = String::from(NATIVE_TESTS_NOTE);
        for line in untested {
            let _ = writeln!(out, "#   {line}");
        }
        out
    }

    /// What one alert's two tests feed it, by the kind of alert.
    fn alert_inputs(&self, al: &Alert, tl: &Timeline) -> AlertInputs {
        let stage = || al.stage.as_ref().expect("stage alert");
        let (fire, quiet) = match &al.test {
            TestKind::Latency(c) => (
                self.hist_series(stage(), *c, "prod", true, tl),
                self.hist_series(stage(), *c, "prod", false, tl),
            ),
            TestKind::MissRatio => self.miss_series(stage(), tl),
            TestKind::NoData => {
                let count = self.stage_series(stage(), "count", "prod", "");
                (
                    vec![(count.clone(), tl.flat(5.0))],
                    vec![(count, tl.ramp(60.0))],
                )
            }
            TestKind::Canary if self.hist.is_native() => self.canary_records(stage(), tl),
            TestKind::Canary => self.canary_series(stage(), tl),
            TestKind::Guard(reason, n) => self.guard_series(reason, *n, tl),
            TestKind::Dropped => self.dropped_series(tl),
            TestKind::Stalled => self.stalled_series(tl),
        };
        let mut labels = al.stage_labels.clone();
        // The canary alert compares two environments: it keeps neither.
        if !matches!(al.test, TestKind::Canary) {
            labels.push((self.env().to_owned(), "prod".to_owned()));
        }
        let eval = tl.eval_min;
        AlertInputs {
            fire,
            quiet,
            labels,
            eval,
        }
    }

    /// A stage's series of `suffix` (`bucket`, `count`, `sum`) in environment `envv`, with
    /// `extra` matchers (`,le="…"`) after the rest.
    fn stage_series(&self, stage: &StageRef, suffix: &str, envv: &str, extra: &str) -> String {
        let (fam, m) = self.sel(stage).family();
        // A name total selects its whole family: no matcher of its own.
        let m = if m.is_empty() { m } else { m + "," };
        format!(
            "{fam}_{suffix}{{{m}{env}={},instance=\"app:9000\"{extra}}}",
            quote(envv),
            env = self.env()
        )
    }

    /// Buckets at c/1000, c and 2c, `+Inf` and the count: 60 spans a minute, all in (c, 2c]
    /// when slow, below c/1000 else.
    fn bucket_series(
        &self,
        st: &StageRef,
        c: Duration,
        envv: &str,
        slow: bool,
        tl: &Timeline,
    ) -> Series {
        let c_u = self.names.in_unit(c);
        let mut out = Series::new();
        for (i, b) in [c_u / 1000.0, c_u, 2.0 * c_u].iter().enumerate() {
            let filled = if slow { i == 2 } else { true };
            let v = if filled { tl.ramp(60.0) } else { tl.flat(0.0) };
            out.push((
                self.stage_series(st, "bucket", envv, &format!(",le=\"{b}\"")),
                v,
            ));
        }
        out.push((
            self.stage_series(st, "bucket", envv, ",le=\"+Inf\""),
            tl.ramp(60.0),
        ));
        out.push((self.stage_series(st, "count", envv, ""), tl.ramp(60.0)));
        out
    }

    /// [`Self::bucket_series`] and the sum that goes with them (mean 1.5c when slow, c/2000
    /// else): a whole histogram.
    fn hist_series(
        &self,
        st: &StageRef,
        c: Duration,
        envv: &str,
        slow: bool,
        tl: &Timeline,
    ) -> Series {
        let mut out = self.bucket_series(st, c, envv, slow, tl);
        let c_u = self.names.in_unit(c);
        let mean = if slow { 1.5 * c_u } else { c_u / 2000.0 };
        out.push((self.stage_series(st, "sum", envv, ""), tl.ramp(60.0 * mean)));
        out
    }

    /// 60 spans a minute: 30 missed (50 %) against none.
    fn miss_series(&self, st: &StageRef, tl: &Timeline) -> (Series, Series) {
        let m = series_matchers(st);
        let env = self.env();
        let miss = |per_min: f64| {
            (
                format!(
                    "{}{{{m},{env}=\"prod\",instance=\"app:9000\"}}",
                    self.names.deadline_miss()
                ),
                tl.ramp(per_min),
            )
        };
        let count = self.stage_series(st, "count", "prod", "");
        (
            vec![(count.clone(), tl.ramp(60.0)), miss(30.0)],
            vec![(count, tl.ramp(60.0)), miss(0.0)],
        )
    }

    /// A slow canary against a fast baseline, and both slow.
    fn canary_series(&self, st: &StageRef, tl: &Timeline) -> (Series, Series) {
        let c = self.slo_threshold(st).unwrap_or(Duration::from_millis(1));
        let mut fire = self.hist_series(st, c, "canary", true, tl);
        fire.extend(self.hist_series(st, c, "baseline", false, tl));
        let mut quiet = self.hist_series(st, c, "canary", true, tl);
        quiet.extend(self.hist_series(st, c, "baseline", true, tl));
        (fire, quiet)
    }

    /// The p95 records the canary alert reads, given as input: a baseline at c (the stage's SLO
    /// threshold) and a canary twice the allowed regression above it, against one half of it
    /// above, so a rule that misreads the percentage fails one of the two. With native
    /// histograms the records cannot be computed in a test (see [`NATIVE_TESTS_NOTE`]); the
    /// comparison that rolls a canary back can still be judged.
    fn canary_records(&self, st: &StageRef, tl: &Timeline) -> (Series, Series) {
        let c = self
            .names
            .in_unit(self.slo_threshold(st).unwrap_or(Duration::from_millis(1)));
        let pct = self.config.alerts.canary_regression_pct / 100.0;
        let baseline = self.p95_record_series(st, "baseline", c, tl);
        let canary = |f: f64| self.p95_record_series(st, "canary", c * f, tl);
        (
            vec![canary(1.0 + 2.0 * pct), baseline.clone()],
            vec![canary(1.0 + pct / 2.0), baseline],
        )
    }

    /// A stage's p95 record in environment `envv`, holding `value`.
    fn p95_record_series(
        &self,
        st: &StageRef,
        envv: &str,
        value: f64,
        tl: &Timeline,
    ) -> (String, String) {
        let name = format!(
            "{}{{{},{}={}}}",
            self.quantile_record("p95"),
            record_matchers(st),
            self.env(),
            quote(envv)
        );
        (name, tl.flat(value))
    }

    /// Over an hour: 2 n trips against n / 2.
    fn guard_series(&self, reason: &str, n: u64, tl: &Timeline) -> (Series, Series) {
        let name = format!(
            "{}{{reason={},{}=\"prod\",instance=\"app:9000\"}}",
            self.names.guard_trips(),
            quote(reason),
            self.env()
        );
        (
            vec![(name.clone(), tl.ramp(2.0 * n as f64 / 60.0))],
            vec![(name, tl.ramp(n as f64 / 120.0))],
        )
    }

    /// Drops at twice the alert's rate (and at least one a second) against none.
    fn dropped_series(&self, tl: &Timeline) -> (Series, Series) {
        let name = format!(
            "{}{{stage=\"dropping_stage\",{}=\"prod\",instance=\"app:9000\"}}",
            self.names.dropped(),
            self.env()
        );
        let per_min = (self.config.alerts.drop_rate * 60.0).ceil() * 2.0 + 60.0;
        (
            vec![(name.clone(), tl.ramp(per_min))],
            vec![(name, tl.flat(3.0))],
        )
    }

    /// A last drain that ages from twice the limit against one 10 ms old; the lag stays low.
    fn stalled_series(&self, tl: &Timeline) -> (Series, Series) {
        let (age, lag) = self.aggregator_gauges();
        let at = |n: &str| format!("{n}{{{}=\"prod\",instance=\"app:9000\"}}", self.env());
        let limit = self.config.alerts.aggregator_stalled_after.as_secs_f64();
        (
            vec![
                (at(&age), tl.line(2.0 * limit, 60.0)),
                (at(&lag), tl.flat(0.001)),
            ],
            vec![(at(&age), tl.flat(0.01)), (at(&lag), tl.flat(0.001))],
        )
    }

    /// The test of a stage's p50/p95/p99 records (against its SLO threshold `c`) and its SLO
    /// series.
    ///
    /// With native histograms only the SLO series is judged, from p95 records given as input
    /// (see [`NATIVE_TESTS_NOTE`]).
    fn recording_test(&self, stage: &StageRef, c: Duration, tl: &Timeline) -> Yaml {
        let mut label_str = String::new();
        for (k, v) in &record_identity(stage) {
            let _ = write!(label_str, "{k}={},", quote(v));
        }
        let (input, mut exprs, name) = if self.hist.is_native() {
            let c_u = self.names.in_unit(c);
            let input = vec![
                self.p95_record_series(stage, "slow", 1.95 * c_u, tl),
                self.p95_record_series(stage, "fast", c_u / 1000.0, tl),
            ];
            let name = format!("SLO series of stage {} (from its p95 record)", stage.name);
            (input, Vec::new(), name)
        } else {
            let mut input = self.bucket_series(stage, c, "slow", true, tl);
            input.extend(self.bucket_series(stage, c, "fast", false, tl));
            let exprs: Vec<Yaml> = [("p50", 1.5), ("p95", 1.95), ("p99", 1.99)]
                .into_iter()
                .map(|(tag, f)| self.quantile_check(stage, c, tag, f, &label_str, tl))
                .collect();
            (
                input,
                exprs,
                format!("recording rules of stage {}", stage.name),
            )
        };
        exprs.push(self.slo_check(stage, c, &label_str, tl));
        map(vec![
            ("name", s(name)),
            ("interval", s(tl.interval())),
            ("input_series", series_yaml(&input)),
            ("promql_expr_test", Yaml::Seq(exprs)),
        ])
    }

    /// The slow series' `tag` record is `f` c (within a millionth of c).
    fn quantile_check(
        &self,
        stage: &StageRef,
        c: Duration,
        tag: &str,
        f: f64,
        label_str: &str,
        tl: &Timeline,
    ) -> Yaml {
        let (c_u, env) = (self.names.in_unit(c), self.env());
        let expr = format!(
            "abs({}{{{},{env}=\"slow\"}} - {}) < bool {}",
            self.quantile_record(tag),
            record_matchers(stage),
            f * c_u,
            c_u * 1e-6
        );
        let sample = (format!("{{{label_str}{env}=\"slow\"}}"), "1");
        expr_test(expr, tl, &[sample])
    }

    /// The SLO series is 1 for the fast series and 0 for the slow one.
    fn slo_check(&self, stage: &StageRef, c: Duration, label_str: &str, tl: &Timeline) -> Yaml {
        let (slo, env) = (self.slo_record(stage, c), self.env());
        let samples = [
            (format!("{slo}{{{label_str}{env}=\"fast\"}}"), "1"),
            (format!("{slo}{{{label_str}{env}=\"slow\"}}"), "0"),
        ];
        // A name total and its label sets share the record's name.
        let expr = format!("{slo}{{{}}}", record_matchers(stage));
        expr_test(expr, tl, &samples)
    }

    /// The corrected p99 record: corrected values all in (i, 2i] (i the expected interval)
    /// give 1.99i.
    fn corrected_test(&self, stage: &str, interval: Duration, tl: &Timeline) -> Yaml {
        let (i_u, env) = (self.names.in_unit(interval), self.env());
        let fam = self.names.stage_duration_corrected();
        let st = |suffix: &str, extra: &str| {
            format!(
                "{fam}_{suffix}{{stage={},{env}=\"prod\",instance=\"app:9000\"{extra}}}",
                quote(stage)
            )
        };
        let mut input = Series::new();
        for (i, b) in [i_u / 1000.0, i_u, 2.0 * i_u].iter().enumerate() {
            let v = if i == 2 { tl.ramp(60.0) } else { tl.flat(0.0) };
            input.push((st("bucket", &format!(",le=\"{b}\"")), v));
        }
        input.push((st("bucket", ",le=\"+Inf\""), tl.ramp(60.0)));
        let expr = format!(
            "abs({}{{stage={}}} - {}) < bool {}",
            self.corrected_quantile_record("p99"),
            quote(stage),
            1.99 * i_u,
            i_u * 1e-6
        );
        let sample = (format!("{{stage={},{env}=\"prod\"}}", quote(stage)), "1");
        map(vec![
            (
                "name",
                s(format!("corrected p99 recording rule of stage {stage}")),
            ),
            ("interval", s(tl.interval())),
            ("input_series", series_yaml(&input)),
            (
                "promql_expr_test",
                Yaml::Seq(vec![expr_test(expr, tl, &[sample])]),
            ),
        ])
    }
}

/// The head of the native rules' tests: what they cannot test, and why.
pub const NATIVE_TESTS_NOTE: &str = "\
# Native histograms: Debian's promtool 2.42 has no notation for a native histogram sample in a
# test's input series (`values: '{{schema:0 sum:5 count:4 buckets:[1 2 1]}}'` fails with \"parse
# error: unexpected character in series sequence: '{'\"; later releases read it), so no rule
# below is fed a stage histogram. Tested here: the alerts on counters and gauges, and the canary
# rollback and SLO series from p95 records given as input. Not tested here (`promtool check
# rules` parses them; a live Prometheus with --enable-feature=native-histograms is their test):
";

/// Input series, each a name with its matchers and its values in promtool's expanding notation.
type Series = Vec<(String, String)>;

/// When the generated tests judge, and how long their series run.
struct Timeline {
    /// Minutes after the start at which alerts and records are judged: past every window and
    /// every `for:`.
    eval_min: u64,
    /// Seconds between two samples of an input series (and between two rule evaluations).
    step_secs: u64,
    /// Samples in every input series after the first.
    len: u64,
}

/// Sample intervals the tests may use, longest first: each divides a minute.
const TEST_STEPS_SECS: [u64; 8] = [60, 30, 20, 15, 10, 5, 2, 1];

impl Timeline {
    fn new(a: &AlertsSection) -> Self {
        let hold = a.rate_window.max(a.no_data_after) + a.pending_for.max(a.drop_for);
        let eval_min = hold.as_secs().div_ceil(60) + 3;
        // rate() needs two samples inside its window, and a window exactly one step long may
        // hold only one: sample at least four times per window, the shorter of the rate window
        // and the no-data window (the minute steps of the default 5 m windows stay as they
        // were). A 30 s window with minute samples made every test that reads a rate find
        // nothing. The configuration refuses windows under 4 s.
        let shortest = a.rate_window.min(a.no_data_after).as_secs();
        let step_secs = TEST_STEPS_SECS
            .into_iter()
            .find(|&step| shortest >= 4 * step)
            .unwrap_or(1);
        Self {
            eval_min,
            step_secs,
            len: (eval_min + 5) * 60 / step_secs,
        }
    }

    /// The sample interval, as promtool reads it.
    fn interval(&self) -> String {
        prom_duration(Duration::from_secs(self.step_secs))
    }

    /// `start+stepxN`: a series from `start` that moves by `per_min` a minute.
    fn line(&self, start: f64, per_min: f64) -> String {
        let step = per_min * self.step_secs as f64 / 60.0;
        format!("{start}+{step}x{}", self.len)
    }

    /// A counter from 0 that grows by `per_min` a minute.
    fn ramp(&self, per_min: f64) -> String {
        self.line(0.0, per_min)
    }

    /// A value that stays at `v`.
    fn flat(&self, v: f64) -> String {
        self.line(v, 0.0)
    }
}

/// What one alert's pair of tests feeds it and expects of it.
struct AlertInputs {
    /// Series under which the alert fires.
    fire: Series,
    /// Series under which it stays quiet.
    quiet: Series,
    /// The firing alert's labels beyond its severity and the rule's own.
    labels: Vec<(String, String)>,
    /// Minutes after the start at which the alert is judged.
    eval: u64,
}

fn series_yaml(list: &[(String, String)]) -> Yaml {
    Yaml::Seq(
        list.iter()
            .map(|(name, values)| {
                map(vec![
                    ("series", s(name.clone())),
                    ("values", s(values.clone())),
                ])
            })
            .collect(),
    )
}

/// An alert's two tests: it fires on the firing series (with these labels and annotations) and
/// stays quiet on the others, both judged at the same time.
fn alert_tests(al: &Alert, inputs: &AlertInputs, tl: &Timeline) -> [Yaml; 2] {
    let mut labels = vec![("severity".to_owned(), al.severity.to_owned())];
    labels.extend(al.extra.iter().cloned());
    for l in &inputs.labels {
        if !labels.iter().any(|(k, _)| *k == l.0) {
            labels.push(l.clone());
        }
    }
    let exp = map(vec![
        (
            "exp_labels",
            Yaml::Map(
                labels
                    .iter()
                    .map(|(k, v)| (k.clone(), s(v.clone())))
                    .collect(),
            ),
        ),
        (
            "exp_annotations",
            map(vec![
                ("summary", s(expand(&al.summary, &labels))),
                ("description", s(expand(&al.description, &labels))),
            ]),
        ),
    ]);
    let at = format!("{}m", inputs.eval);
    let test = |verb: &str, series: &[(String, String)], expected: Vec<Yaml>| {
        map(vec![
            ("name", s(format!("{} {verb} ({})", al.name, al.severity))),
            ("interval", s(tl.interval())),
            ("input_series", series_yaml(series)),
            (
                "alert_rule_test",
                Yaml::Seq(vec![map(vec![
                    ("eval_time", s(at.clone())),
                    ("alertname", s(al.name.clone())),
                    ("exp_alerts", Yaml::Seq(expected)),
                ])]),
            ),
        ])
    };
    [
        test("fires", &inputs.fire, vec![exp]),
        test("stays quiet", &inputs.quiet, Vec::new()),
    ]
}

/// A `promql_expr_test` entry: `expr` judged at the evaluation time gives these samples (labels
/// as promtool writes them, value).
fn expr_test(expr: String, tl: &Timeline, samples: &[(String, &str)]) -> Yaml {
    map(vec![
        ("expr", s(expr)),
        ("eval_time", s(format!("{}m", tl.eval_min))),
        (
            "exp_samples",
            Yaml::Seq(
                samples
                    .iter()
                    .map(|(labels, value)| {
                        map(vec![
                            ("labels", s(labels.clone())),
                            ("value", Yaml::Plain((*value).to_owned())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

/// Writes `DIR/prometheus/rules.yml` and `DIR/prometheus/rules_test.yml` for `config` by the
/// library's write rule ([`laptime::fs::write_file`]); returns the paths written.
pub fn write_rules(
    config: &Config,
    dir: &std::path::Path,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    let plan = Plan::new(config);
    let prom = dir.join("prometheus");
    std::fs::create_dir_all(&prom)?;
    let rules = prom.join("rules.yml");
    let tests = prom.join("rules_test.yml");
    laptime::fs::write_file(&rules, plan.rules_yaml().as_bytes())?;
    laptime::fs::write_file(&tests, plan.tests_yaml("rules.yml").as_bytes())?;
    Ok(vec![rules, tests])
}
