//! Reading the file: serde shapes that mirror the TOML (every value that a later check may blame
//! carries its span), durations, and the conversion into the public [`Config`] with each check
//! pointing at its key.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use toml::Spanned;

use super::{
    AlertsSection, CollectorSection, Config, ConfigFileError, ExportUnit, ProfileSection,
    PrometheusSection, SamplingSection, SlaRuleConfig, TraceSection,
};
use crate::clock::ClockSource;
use crate::collector::{AdaptiveSampling, WindowSpec};
use crate::prom_name::{is_label_name, is_metric_name};
use crate::sla::{Metric, Value};
use crate::stats::Window;

/// Line and column (both 1-based) where each value the file set starts (a section: its header),
/// by dotted key (`sla[1].critical`), so a check that runs after parsing (or the library's own
/// validation, in [`Config::builder`]) can point at the line that caused it.
#[derive(Debug, Clone, Default)]
pub(super) struct Positions(BTreeMap<String, (usize, usize)>);

impl Positions {
    /// Whether the file set `key`.
    pub(super) fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Where `key` was set; for a key the file left out, where its nearest enclosing section
    /// starts; line 1 for the file's defaults.
    pub(super) fn locate(&self, key: &str) -> (usize, usize) {
        let mut k = key;
        loop {
            if let Some(pos) = self.0.get(k) {
                return *pos;
            }
            match k.rfind(['.', '[']) {
                Some(cut) => k = &k[..cut],
                None => return (1, 1),
            }
        }
    }
}

/// Byte offsets to lines and columns.
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn at(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        // A span never splits a character, but stay total on any offset.
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }
}

/// `tick_total` stays bare; a stage name with `.`, `:` or `/` is quoted, as TOML requires.
pub(super) fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// `"200ms"`, `"1.5s"`, `"250us"` / `"250µs"`, `"800ns"`, `"10m"`, `"1h"`: an exact whole number
/// of nanoseconds (zero allowed here; the keys that need a positive one say so). The grammar is
/// `laptime_duration`'s, the same as the `deadline = "…"` argument of `#[laptime::measure]`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    laptime_duration::parse_nanos(text).map(Duration::from_nanos)
}

/// A duration written as a string with a unit.
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string with a unit, such as \"200ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// An SLA threshold as written: a duration string (latency metrics) or a number (the miss rate).
#[derive(Debug, Clone, Copy)]
enum Threshold {
    Latency(Duration),
    Ratio(f64),
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Threshold;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration string such as \"150ms\" (latency metrics) or a fraction such as 0.02 (deadline_miss_rate)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Threshold, E> {
                parse_duration(v).map(Threshold::Latency).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Threshold, E> {
                Ok(Threshold::Ratio(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Threshold, E> {
                Ok(Threshold::Ratio(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Threshold, E> {
                Ok(Threshold::Ratio(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"1s"`, `"5s"`, `"60s"` (any duration) or `"cumulative"`.
#[derive(Debug, Clone, Copy)]
struct RawWindow(Window);

impl<'de> Deserialize<'de> for RawWindow {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawWindow;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a window length such as \"5s\", or \"cumulative\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawWindow, E> {
                if v == "cumulative" {
                    return Ok(RawWindow(Window::Cumulative));
                }
                parse_duration(v)
                    .map(|d| RawWindow(Window::Last(d)))
                    .map_err(|e| E::custom(format!("{e}; or \"cumulative\" for the whole run")))
            }
        }
        d.deserialize_str(V)
    }
}

/// A table whose keys the file chooses (deadlines by stage, labels, tags, metadata), in the
/// file's order (labels are an ordered list in the library).
#[derive(Debug)]
struct Ordered<V>(Vec<(String, Spanned<V>)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry()? {
                    entries.push((k, v));
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(Vis(PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a laptime configuration file")]
struct RawFile {
    collector: Option<Spanned<RawCollector>>,
    sampling: Option<Spanned<RawSampling>>,
    deadlines: Option<Spanned<Ordered<Dur>>>,
    expected_intervals: Option<Spanned<Ordered<Dur>>>,
    sla: Option<Vec<Spanned<RawSla>>>,
    trace: Option<Spanned<RawTrace>>,
    profile: Option<Spanned<RawProfile>>,
    prometheus: Option<Spanned<RawPrometheus>>,
    alerts: Option<Spanned<RawAlerts>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table: [prometheus]")]
struct RawPrometheus {
    namespace: Option<Spanned<String>>,
    unit: Option<Spanned<RawUnit>>,
    env_label: Option<Spanned<String>>,
    job: Option<Spanned<String>>,
    gauges: Option<Spanned<Vec<String>>>,
    labelled_stages: Option<Spanned<Vec<String>>>,
    native: Option<Spanned<bool>>,
    // Read wide, so an out-of-range value gets this file's message rather than serde's.
    native_schema: Option<Spanned<i64>>,
    native_max_buckets: Option<Spanned<i64>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawUnit {
    Seconds,
    Ms,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table: [alerts]")]
struct RawAlerts {
    rate_window: Option<Spanned<Dur>>,
    #[serde(rename = "for")]
    pending_for: Option<Spanned<Dur>>,
    no_data_after: Option<Spanned<Dur>>,
    deadline_miss_ratio: Option<Spanned<f64>>,
    canary_regression_pct: Option<Spanned<f64>>,
    guard_trip_burst: Option<Spanned<Ordered<u64>>>,
    drop_rate: Option<Spanned<f64>>,
    drop_for: Option<Spanned<Dur>>,
    aggregator_stalled_after: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table: [collector]")]
struct RawCollector {
    ring_capacity: Option<Spanned<usize>>,
    interval: Option<Spanned<Dur>>,
    windows: Option<Spanned<Vec<Spanned<RawWindowSpec>>>>,
    significant_digits: Option<Spanned<u8>>,
    highest: Option<Spanned<Dur>>,
    max_stages: Option<Spanned<usize>>,
    max_series: Option<Spanned<usize>>,
    max_in_flight: Option<Spanned<usize>>,
    abandon_after: Option<Spanned<Dur>>,
    latency_guard_reason: Option<Spanned<String>>,
    clock: Option<Spanned<RawClock>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a window such as { length = \"1s\", slice = \"250ms\" }"
)]
struct RawWindowSpec {
    length: Spanned<Dur>,
    slice: Spanned<Dur>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawClock {
    Auto,
    Tsc,
    Monotonic,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table: [sampling]")]
struct RawSampling {
    rate: Option<Spanned<f64>>,
    adaptive: Option<Spanned<RawAdaptive>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { budget_per_sec = 1000.0, reduced_rate = 0.1 }"
)]
struct RawAdaptive {
    budget_per_sec: Option<Spanned<f64>>,
    reduced_rate: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table: [[sla]]")]
struct RawSla {
    stage: Spanned<String>,
    window: Spanned<RawWindow>,
    metric: Spanned<RawMetric>,
    warning: Option<Spanned<Threshold>>,
    critical: Option<Spanned<Threshold>>,
    min_count: Option<u64>,
    guard: Option<bool>,
    labels: Option<Spanned<Ordered<String>>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawMetric {
    P50,
    P90,
    P95,
    P99,
    #[serde(alias = "p99.9")]
    P999,
    Max,
    Mean,
    DeadlineMissRate,
}

impl RawMetric {
    fn metric(self) -> Metric {
        match self {
            Self::P50 => Metric::P50,
            Self::P90 => Metric::P90,
            Self::P95 => Metric::P95,
            Self::P99 => Metric::P99,
            Self::P999 => Metric::P999,
            Self::Max => Metric::Max,
            Self::Mean => Metric::Mean,
            Self::DeadlineMissRate => Metric::DeadlineMissRate,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table: [trace]")]
struct RawTrace {
    enabled: Option<bool>,
    root: Option<Spanned<String>>,
    sample_rate: Option<Spanned<f64>>,
    deadline_ms: Option<Spanned<f64>>,
    deadline: Option<Spanned<Dur>>,
    export_golden: Option<bool>,
    golden_trace_interval: Option<Spanned<u64>>,
    output_dir: Option<String>,
    seed: Option<u64>,
    keep: Option<Spanned<usize>>,
    max_spans: Option<Spanned<usize>>,
    metadata: Option<Spanned<Ordered<toml::Value>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table: [profile]")]
struct RawProfile {
    name: Option<String>,
    output: Option<String>,
    tags: Option<Ordered<String>>,
}

/// serde lists names as "`a`", "`a` or `b`" or "one of `a`, `b`, `c`": one way here.
fn list(allowed: &str) -> String {
    allowed
        .trim_start_matches("one of ")
        .replace("` or `", "`, `")
}

/// Turns serde's wording into the file's: keys rather than fields, TOML types rather than Rust's,
/// and what to do about it.
fn reword(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return match rest.split_once(", expected ") {
            Some((key, allowed)) => format!(
                "unknown key {key}: remove it or fix its spelling; allowed here: {}",
                list(allowed)
            ),
            None => format!("unknown key {rest}: remove it"),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return match rest.split_once(", expected ") {
            Some((value, allowed)) => format!("unknown value {value}: use {}", list(allowed)),
            None => format!("unknown value {rest}"),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing key {rest}: add it");
    }
    let mut out = message.to_owned();
    for (rust, toml) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected f64", "expected a number"),
        ("expected i64", "expected a whole number"),
        ("expected a sequence", "expected an array"),
        ("expected a string", "expected a string (in quotes)"),
        ("invalid type: map", "invalid type: table"),
        ("invalid type: sequence", "invalid type: array"),
    ] {
        if let Some(i) = out.find(rust) {
            out.replace_range(i..i + rust.len(), toml);
        }
    }
    out
}

/// The dotted key serde_path_to_error tracked, in the file's notation.
fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            // `Spanned` is a struct with private field names to serde: not a key of the file.
            Segment::Map { key: k } if k.starts_with("$__serde_spanned_private") => {}
            Segment::Map { key: k } | Segment::Enum { variant: k } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(&key_segment(k));
            }
            Segment::Unknown => {}
        }
    }
    key
}

/// Collects positions and builds errors while the raw file is converted.
struct Ctx<'a> {
    lines: Lines<'a>,
    positions: Positions,
}

impl Ctx<'_> {
    fn note(&mut self, key: &str, span: &Range<usize>) {
        let pos = self.lines.at(span.start);
        self.positions.0.insert(key.to_owned(), pos);
    }

    fn err(&self, key: &str, span: &Range<usize>, message: impl Into<String>) -> ConfigFileError {
        let (line, column) = self.lines.at(span.start);
        ConfigFileError::Parse {
            path: None,
            key: key.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    /// The value of a key that must be a positive duration.
    fn positive(&mut self, key: &str, d: &Spanned<Dur>) -> Result<Duration, ConfigFileError> {
        self.note(key, &d.span());
        let value = d.get_ref().0;
        if value.is_zero() {
            return Err(self.err(
                key,
                &d.span(),
                "must be more than zero: give a positive duration such as \"10ms\"",
            ));
        }
        Ok(value)
    }

    /// The value of a key that is a fraction of calls, checked by the library's own rule.
    fn rate(&mut self, key: &str, r: &Spanned<f64>) -> Result<f64, ConfigFileError> {
        self.note(key, &r.span());
        let value = *r.get_ref();
        crate::record::rate_to_threshold(value)
            .map_err(|e| self.err(key, &r.span(), e.to_string()))?;
        Ok(value)
    }

    fn plain<T: Copy>(&mut self, key: &str, v: &Spanned<T>) -> T {
        self.note(key, &v.span());
        *v.get_ref()
    }
}

/// Parses `text` into a [`Config`], checking everything the file itself decides. The library's own
/// validation runs afterwards (see [`Config::from_toml_str`]).
pub(super) fn parse(text: &str) -> Result<Config, ConfigFileError> {
    let lines = Lines::new(text);
    let raw = read_raw(text, &lines)?;
    let mut ctx = Ctx {
        lines,
        positions: Positions::default(),
    };
    let collector = convert_collector(&mut ctx, raw.collector)?;
    let sampling = convert_sampling(&mut ctx, raw.sampling)?;
    let deadlines = convert_deadlines(&mut ctx, raw.deadlines)?;
    let expected_intervals = convert_expected_intervals(&mut ctx, raw.expected_intervals);
    let mut sla = Vec::new();
    for (i, rule) in raw.sla.into_iter().flatten().enumerate() {
        let rule = convert_rule(&mut ctx, i, rule, &collector, &sla)?;
        sla.push(rule);
    }
    let trace = raw.trace.map(|t| convert_trace(&mut ctx, t)).transpose()?;
    let profile = raw.profile.map(|p| convert_profile(&mut ctx, p));
    let prometheus = convert_prometheus(&mut ctx, raw.prometheus)?;
    let alerts = convert_alerts(&mut ctx, raw.alerts)?;
    Ok(Config {
        collector,
        sampling,
        deadlines,
        expected_intervals,
        sla,
        trace,
        profile,
        prometheus,
        alerts,
        positions: ctx.positions,
    })
}

/// The file's TOML read into its raw tables: a syntax error, an unknown key, a missing one or a
/// value of the wrong type is reported at its line and column, naming its key.
fn read_raw(text: &str, lines: &Lines<'_>) -> Result<RawFile, ConfigFileError> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let (line, column) = lines.at(e.span().map_or(0, |s| s.start));
        ConfigFileError::Parse {
            path: None,
            key: String::new(),
            line,
            column,
            message: match e.message().trim_end() {
                "duplicate key" => {
                    "duplicate key: a key or [table] may appear once in its table; merge the two"
                        .to_owned()
                }
                other => format!("{other}: fix the TOML syntax"),
            },
        }
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = dotted(e.path());
        let message = e.inner().message().trim_end().to_owned();
        if let Some(rest) = message.strip_prefix("missing field `")
            && let Some(field) = rest.strip_suffix('`')
        {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(field);
        }
        let (line, column) = lines.at(e.inner().span().map_or(0, |s| s.start));
        let message = if key == "sla" && message.starts_with("invalid type") {
            "each rule is a table of its own under an [[sla]] header (two brackets), not [sla]"
                .to_owned()
        } else {
            reword(&message)
        };
        ConfigFileError::Parse {
            path: None,
            key,
            line,
            column,
            message,
        }
    })
}

fn convert_deadlines(
    ctx: &mut Ctx<'_>,
    raw: Option<Spanned<Ordered<Dur>>>,
) -> Result<Vec<(String, Duration)>, ConfigFileError> {
    let mut deadlines = Vec::new();
    if let Some(table) = raw {
        ctx.note("deadlines", &table.span());
        for (stage, deadline) in &table.get_ref().0 {
            let key = format!("deadlines.{}", key_segment(stage));
            deadlines.push((stage.clone(), ctx.positive(&key, deadline)?));
        }
    }
    Ok(deadlines)
}

/// A zero interval is left to `Config`'s check, which reports the library's own typed error
/// (`ConfigError::ZeroExpectedInterval`) at this key.
fn convert_expected_intervals(
    ctx: &mut Ctx<'_>,
    raw: Option<Spanned<Ordered<Dur>>>,
) -> Vec<(String, Duration)> {
    let mut expected_intervals = Vec::new();
    if let Some(table) = raw {
        ctx.note("expected_intervals", &table.span());
        for (stage, interval) in &table.get_ref().0 {
            let key = format!("expected_intervals.{}", key_segment(stage));
            expected_intervals.push((stage.clone(), ctx.plain(&key, interval).0));
        }
    }
    expected_intervals
}

fn convert_profile(ctx: &mut Ctx<'_>, raw: Spanned<RawProfile>) -> ProfileSection {
    ctx.note("profile", &raw.span());
    let p = raw.into_inner();
    ProfileSection {
        name: p.name,
        output: p.output.map(PathBuf::from),
        tags: p
            .tags
            .map(|t| t.0.into_iter().map(|(k, v)| (k, v.into_inner())).collect())
            .unwrap_or_default(),
    }
}

fn convert_prometheus(
    ctx: &mut Ctx<'_>,
    raw: Option<Spanned<RawPrometheus>>,
) -> Result<PrometheusSection, ConfigFileError> {
    let mut p = PrometheusSection::default();
    let Some(raw) = raw else {
        return Ok(p);
    };
    ctx.note("prometheus", &raw.span());
    let raw = raw.into_inner();
    for (key, value, target, label) in [
        (
            "prometheus.namespace",
            &raw.namespace,
            &mut p.namespace,
            false,
        ),
        (
            "prometheus.env_label",
            &raw.env_label,
            &mut p.env_label,
            true,
        ),
    ] {
        if let Some(v) = value {
            prometheus_name(ctx, key, v, label)?.clone_into(target);
        }
    }
    if let Some(v) = &raw.unit {
        p.unit = match ctx.plain("prometheus.unit", v) {
            RawUnit::Seconds => ExportUnit::Seconds,
            RawUnit::Ms => ExportUnit::Milliseconds,
        };
    }
    if let Some(v) = &raw.job {
        ctx.note("prometheus.job", &v.span());
        if v.get_ref().is_empty() {
            return Err(ctx.err(
                "prometheus.job",
                &v.span(),
                "must not be empty: give the scrape job's name",
            ));
        }
        p.job.clone_from(v.get_ref());
    }
    if let Some(v) = &raw.gauges {
        ctx.note("prometheus.gauges", &v.span());
        if let Some(bad) = v.get_ref().iter().find(|g| !is_metric_name(g)) {
            return Err(ctx.err(
                "prometheus.gauges",
                &v.span(),
                format!(
                    "`{bad}` is not a gauge name: give the name passed to the exporter's `gauge`, \
                     letters, digits and `_`"
                ),
            ));
        }
        p.gauges.clone_from(v.get_ref());
    }
    if let Some(v) = &raw.labelled_stages {
        ctx.note("prometheus.labelled_stages", &v.span());
        if let Some(bad) = v
            .get_ref()
            .iter()
            .find(|s| crate::stage::valid_name(s).is_err())
        {
            return Err(ctx.err(
                "prometheus.labelled_stages",
                &v.span(),
                format!("`{bad}` is not a stage name the library accepts"),
            ));
        }
        p.labelled_stages.clone_from(v.get_ref());
    }
    convert_native(ctx, &raw, &mut p)?;
    Ok(p)
}

/// `native`, `native_schema` and `native_max_buckets` of `[prometheus]`.
fn convert_native(
    ctx: &mut Ctx<'_>,
    raw: &RawPrometheus,
    p: &mut PrometheusSection,
) -> Result<(), ConfigFileError> {
    if let Some(v) = &raw.native {
        p.native = ctx.plain("prometheus.native", v);
    }
    if let Some(v) = &raw.native_schema {
        let key = "prometheus.native_schema";
        let schema = ctx.plain(key, v);
        let range = super::NATIVE_SCHEMAS;
        p.native_schema = i8::try_from(schema)
            .ok()
            .filter(|s| range.contains(s))
            .ok_or_else(|| {
                ctx.err(
                    key,
                    &v.span(),
                    format!(
                        "schema {schema} is not one Prometheus defines: give a whole number from \
                         {} to {} (6: buckets about 1.1 % wide, 8: about 0.27 %)",
                        range.start(),
                        range.end()
                    ),
                )
            })?;
    }
    if let Some(v) = &raw.native_max_buckets {
        let key = "prometheus.native_max_buckets";
        let n = ctx.plain(key, v);
        let least = super::MIN_NATIVE_MAX_BUCKETS;
        p.native_max_buckets =
            usize::try_from(n)
                .ok()
                .filter(|&n| n >= least)
                .ok_or_else(|| {
                    ctx.err(
                key,
                &v.span(),
                format!(
                    "{n} buckets: give at least {least} (every value fits in 5 at schema -4), the \
                     buckets one histogram may hold before its schema is lowered (default {})",
                    super::DEFAULT_NATIVE_MAX_BUCKETS
                ),
            )
                })?;
    }
    Ok(())
}

/// A namespace (`label` false) or label name (`label` true) at `key`, if Prometheus accepts it.
fn prometheus_name<'v>(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: &'v Spanned<String>,
    label: bool,
) -> Result<&'v str, ConfigFileError> {
    ctx.note(key, &v.span());
    let name = v.get_ref();
    let valid = if label {
        is_label_name(name)
    } else {
        is_metric_name(name)
    };
    if !valid {
        return Err(ctx.err(
            key,
            &v.span(),
            format!(
                "`{name}` is not a Prometheus name: use letters, digits and `_`, not \
                 starting with a digit{}",
                if label { " or `__`" } else { "" }
            ),
        ));
    }
    Ok(name)
}

/// The shortest range the generated rules may give `rate()`.
const MIN_RATE_RANGE: Duration = Duration::from_secs(4);

fn convert_alerts(
    ctx: &mut Ctx<'_>,
    raw: Option<Spanned<RawAlerts>>,
) -> Result<AlertsSection, ConfigFileError> {
    let mut a = AlertsSection::default();
    let Some(raw) = raw else {
        return Ok(a);
    };
    ctx.note("alerts", &raw.span());
    let raw = raw.into_inner();
    for (key, value, target) in [
        ("alerts.rate_window", &raw.rate_window, &mut a.rate_window),
        ("alerts.for", &raw.pending_for, &mut a.pending_for),
        (
            "alerts.no_data_after",
            &raw.no_data_after,
            &mut a.no_data_after,
        ),
        ("alerts.drop_for", &raw.drop_for, &mut a.drop_for),
        (
            "alerts.aggregator_stalled_after",
            &raw.aggregator_stalled_after,
            &mut a.aggregator_stalled_after,
        ),
    ] {
        if let Some(v) = value {
            let d = ctx.positive(key, v)?;
            if d.subsec_nanos() % 1_000_000 != 0 {
                return Err(ctx.err(
                    key,
                    &v.span(),
                    "Prometheus durations are whole milliseconds: round it, e.g. \"5m\" or \"1500ms\"",
                ));
            }
            // Both are rate() ranges in the generated rules.
            let ranged = matches!(key, "alerts.rate_window" | "alerts.no_data_after");
            if ranged && d < MIN_RATE_RANGE {
                return Err(ctx.err(
                    key,
                    &v.span(),
                    "at least \"4s\": rate() needs two scrapes in its range and four to be steady, \
                     and a scrape a second is as often as Prometheus is usually asked",
                ));
            }
            *target = d;
        }
    }
    if let Some(v) = &raw.deadline_miss_ratio {
        a.deadline_miss_ratio = ctx.rate("alerts.deadline_miss_ratio", v)?;
    }
    if let Some(v) = &raw.canary_regression_pct {
        let pct = ctx.plain("alerts.canary_regression_pct", v);
        if !(pct.is_finite() && pct > 0.0) {
            return Err(ctx.err(
                "alerts.canary_regression_pct",
                &v.span(),
                "must be a positive number of percent, e.g. 15 for 15 %",
            ));
        }
        a.canary_regression_pct = pct;
    }
    if let Some(v) = &raw.drop_rate {
        let rate = ctx.plain("alerts.drop_rate", v);
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(ctx.err(
                "alerts.drop_rate",
                &v.span(),
                "must be 0 or more records per second (0: any drop alerts)",
            ));
        }
        a.drop_rate = rate;
    }
    if let Some(table) = &raw.guard_trip_burst {
        ctx.note("alerts.guard_trip_burst", &table.span());
        a.guard_trip_burst.clear();
        for (reason, n) in &table.get_ref().0 {
            let key = format!("alerts.guard_trip_burst.{}", key_segment(reason));
            a.guard_trip_burst
                .push((reason.clone(), ctx.plain(&key, n)));
        }
    }
    Ok(a)
}

fn convert_collector(
    ctx: &mut Ctx<'_>,
    raw: Option<Spanned<RawCollector>>,
) -> Result<CollectorSection, ConfigFileError> {
    let mut c = CollectorSection::default();
    let Some(raw) = raw else {
        return Ok(c);
    };
    ctx.note("collector", &raw.span());
    let raw = raw.into_inner();
    if let Some(v) = &raw.ring_capacity {
        c.ring_capacity = ctx.plain("collector.ring_capacity", v);
    }
    if let Some(v) = &raw.interval {
        c.interval = ctx.positive("collector.interval", v)?;
    }
    if let Some(windows) = &raw.windows {
        ctx.note("collector.windows", &windows.span());
        c.windows = Vec::new();
        for (i, w) in windows.get_ref().iter().enumerate() {
            let key = format!("collector.windows[{i}]");
            ctx.note(&key, &w.span());
            let length = ctx.positive(&format!("{key}.length"), &w.get_ref().length)?;
            let slice = ctx.positive(&format!("{key}.slice"), &w.get_ref().slice)?;
            c.windows.push(WindowSpec::new(length, slice));
        }
    }
    if let Some(v) = &raw.significant_digits {
        c.significant_digits = ctx.plain("collector.significant_digits", v);
    }
    if let Some(v) = &raw.highest {
        c.highest = ctx.positive("collector.highest", v)?;
    }
    if let Some(v) = &raw.max_stages {
        c.max_stages = ctx.plain("collector.max_stages", v);
    }
    if let Some(v) = &raw.max_series {
        c.max_series = ctx.plain("collector.max_series", v);
    }
    if let Some(v) = &raw.max_in_flight {
        c.max_in_flight = ctx.plain("collector.max_in_flight", v);
    }
    if let Some(v) = &raw.abandon_after {
        c.abandon_after = ctx.positive("collector.abandon_after", v)?;
    }
    if let Some(v) = raw.latency_guard_reason {
        ctx.note("collector.latency_guard_reason", &v.span());
        c.latency_guard_reason = v.into_inner();
    }
    if let Some(v) = &raw.clock {
        ctx.note("collector.clock", &v.span());
        c.clock = match v.get_ref() {
            RawClock::Auto => ClockSource::Auto,
            RawClock::Tsc => ClockSource::Tsc,
            RawClock::Monotonic => ClockSource::Monotonic,
        };
    }
    Ok(c)
}

fn convert_sampling(
    ctx: &mut Ctx<'_>,
    raw: Option<Spanned<RawSampling>>,
) -> Result<SamplingSection, ConfigFileError> {
    let mut s = SamplingSection::default();
    let Some(raw) = raw else {
        return Ok(s);
    };
    ctx.note("sampling", &raw.span());
    let raw = raw.into_inner();
    if let Some(r) = &raw.rate {
        s.rate = Some(ctx.rate("sampling.rate", r)?);
    }
    if let Some(a) = &raw.adaptive {
        ctx.note("sampling.adaptive", &a.span());
        let mut policy = AdaptiveSampling::default();
        if let Some(b) = &a.get_ref().budget_per_sec {
            policy.budget_per_sec = ctx.plain("sampling.adaptive.budget_per_sec", b);
        }
        if let Some(r) = &a.get_ref().reduced_rate {
            policy.reduced_rate = ctx.rate("sampling.adaptive.reduced_rate", r)?;
        }
        s.adaptive = Some(policy);
    }
    Ok(s)
}

/// Rule `i` of `[[sla]]`, checked alone and against the rules before it (`earlier`).
fn convert_rule(
    ctx: &mut Ctx<'_>,
    i: usize,
    raw: Spanned<RawSla>,
    collector: &CollectorSection,
    earlier: &[SlaRuleConfig],
) -> Result<SlaRuleConfig, ConfigFileError> {
    let at = format!("sla[{i}]");
    ctx.note(&at, &raw.span());
    let header = raw.span();
    let raw = raw.into_inner();
    ctx.note(&format!("{at}.stage"), &raw.stage.span());
    let metric = ctx.plain(&format!("{at}.metric"), &raw.metric).metric();
    let window = ctx.plain(&format!("{at}.window"), &raw.window).0;
    let kept = collector.kept_windows();
    if !kept.contains(&window) {
        let names: Vec<String> = kept.iter().map(|w| format!("\"{w}\"")).collect();
        return Err(ctx.err(
            &format!("{at}.window"),
            &raw.window.span(),
            format!(
                "window \"{window}\" is not kept by the collector: use one of {}, or add it to [collector].windows",
                names.join(", ")
            ),
        ));
    }
    let warning = convert_threshold(ctx, &format!("{at}.warning"), metric, &raw.warning)?;
    let critical = convert_threshold(ctx, &format!("{at}.critical"), metric, &raw.critical)?;
    match (warning, critical) {
        (None, None) => {
            return Err(ctx.err(
                &at,
                &header,
                "the rule has no threshold: give `warning`, `critical` or both",
            ));
        }
        (Some(w), Some(c)) if w > c => {
            let span = raw.warning.as_ref().map_or(header, |w| w.span());
            return Err(ctx.err(
                &format!("{at}.warning"),
                &span,
                format!("warning {w} is above critical {c}: swap them, or lower the warning"),
            ));
        }
        _ => {}
    }
    let mut labels = Vec::new();
    if let Some(table) = &raw.labels {
        ctx.note(&format!("{at}.labels"), &table.span());
        for (k, v) in &table.get_ref().0 {
            ctx.note(&format!("{at}.labels.{}", key_segment(k)), &v.span());
            labels.push((k.clone(), v.get_ref().clone()));
        }
    }
    // Two rules on one stage, window and metric would judge the same figure twice: two
    // violations, two alerts of one name, each firing twice in the generated tests.
    let stage = raw.stage.get_ref();
    if let Some(j) = earlier.iter().position(|r| {
        r.stage == *stage && r.labels == labels && r.window == window && r.metric == metric
    }) {
        let (line, _) = ctx.positions.locate(&format!("sla[{j}]"));
        return Err(ctx.err(
            &at,
            &header,
            format!(
                "this rule repeats the [[sla]] at line {line} (stage {stage}, window \"{window}\", \
                 metric {metric}): give one rule both thresholds, or judge another window"
            ),
        ));
    }
    Ok(SlaRuleConfig {
        stage: raw.stage.into_inner(),
        labels,
        window,
        metric,
        warning,
        critical,
        min_count: raw.min_count.unwrap_or(1),
        guard: raw.guard.unwrap_or(true),
    })
}

/// A rule's threshold at `key`, checked against its metric: a fraction in [0, 1] for the
/// deadline-miss rate, a duration for every latency metric.
fn convert_threshold(
    ctx: &mut Ctx<'_>,
    key: &str,
    metric: Metric,
    t: &Option<Spanned<Threshold>>,
) -> Result<Option<Value>, ConfigFileError> {
    let Some(t) = t else {
        return Ok(None);
    };
    ctx.note(key, &t.span());
    match (metric, *t.get_ref()) {
        (Metric::DeadlineMissRate, Threshold::Ratio(r)) if (0.0..=1.0).contains(&r) => {
            Ok(Some(Value::Ratio(r)))
        }
        (Metric::DeadlineMissRate, Threshold::Ratio(r)) => Err(ctx.err(
            key,
            &t.span(),
            format!("{r} is not a fraction in [0, 1]: write 0.02 for 2 % of spans"),
        )),
        (Metric::DeadlineMissRate, Threshold::Latency(_)) => Err(ctx.err(
            key,
            &t.span(),
            "deadline_miss_rate is a fraction of spans, not a duration: write a number in [0, 1], e.g. 0.02 for 2 %",
        )),
        (_, Threshold::Latency(d)) => Ok(Some(Value::Latency(d))),
        (_, Threshold::Ratio(_)) => Err(ctx.err(
            key,
            &t.span(),
            format!("{metric} is a latency: give a duration string such as \"150ms\""),
        )),
    }
}

fn convert_trace(
    ctx: &mut Ctx<'_>,
    raw: Spanned<RawTrace>,
) -> Result<TraceSection, ConfigFileError> {
    ctx.note("trace", &raw.span());
    let header = raw.span();
    let raw = raw.into_inner();
    let root = match raw.root {
        Some(root) => {
            ctx.note("trace.root", &root.span());
            root.into_inner()
        }
        None => {
            return Err(ctx.err(
                "trace.root",
                &header,
                "missing key `root`: name the stage whose spans make a trace, e.g. root = \"tick_total\"",
            ));
        }
    };
    let sample_rate = raw
        .sample_rate
        .as_ref()
        .map(|r| ctx.rate("trace.sample_rate", r))
        .transpose()?;
    let deadline = match (&raw.deadline_ms, &raw.deadline) {
        (Some(ms), Some(d)) => {
            // Blame whichever of the two comes second in the file.
            let (key, span) = if d.span().start > ms.span().start {
                ("trace.deadline", d.span())
            } else {
                ("trace.deadline_ms", ms.span())
            };
            return Err(ctx.err(
                key,
                &span,
                "the trace deadline is given twice: keep either deadline_ms = 200.0 (the seed's key) or deadline = \"200ms\"",
            ));
        }
        (Some(ms), None) => {
            ctx.note("trace.deadline_ms", &ms.span());
            let v = *ms.get_ref();
            let ns = (v * 1e6).round();
            if !(ns >= 1.0 && ns <= u64::MAX as f64) {
                return Err(ctx.err(
                    "trace.deadline_ms",
                    &ms.span(),
                    format!("{v} ms is not a positive deadline: give milliseconds such as 200.0"),
                ));
            }
            Some(Duration::from_nanos(ns as u64))
        }
        (None, Some(d)) => Some(ctx.positive("trace.deadline", d)?),
        (None, None) => None,
    };
    let golden_trace_interval = raw
        .golden_trace_interval
        .as_ref()
        .map(|v| ctx.plain("trace.golden_trace_interval", v));
    let keep = raw.keep.as_ref().map(|v| ctx.plain("trace.keep", v));
    let max_spans = raw
        .max_spans
        .as_ref()
        .map(|v| ctx.plain("trace.max_spans", v));
    let mut metadata = Vec::new();
    if let Some(table) = raw.metadata {
        ctx.note("trace.metadata", &table.span());
        for (k, v) in table.into_inner().0 {
            let key = format!("trace.metadata.{}", key_segment(&k));
            ctx.note(&key, &v.span());
            let json = to_json(v.get_ref()).map_err(|m| ctx.err(&key, &v.span(), m))?;
            metadata.push((k, json));
        }
    }
    Ok(TraceSection {
        enabled: raw.enabled,
        root,
        sample_rate,
        deadline,
        export_golden: raw.export_golden,
        golden_trace_interval,
        output_dir: raw.output_dir.map(PathBuf::from),
        seed: raw.seed,
        keep,
        max_spans,
        metadata,
    })
}

/// Trace metadata is written into JSON traces: TOML values that JSON cannot hold are refused here
/// rather than changed on the way.
fn to_json(v: &toml::Value) -> Result<serde_json::Value, String> {
    Ok(match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{f} cannot be written to JSON: give a finite number"))?,
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grammar is tested in `laptime_duration`; this is the conversion.
    #[test]
    fn durations_come_from_the_shared_grammar() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert!(
            parse_duration("20 mss")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn lines_and_columns_are_one_based_and_count_characters() {
        let lines = Lines::new("a = 1\nµs = \"x\"\n\nlast");
        assert_eq!(lines.at(0), (1, 1));
        assert_eq!(lines.at(4), (1, 5));
        assert_eq!(lines.at(6), (2, 1));
        // `µ` is two bytes: the `=` after "µs " is the fourth character.
        assert_eq!(lines.at(10), (2, 4));
        assert_eq!(lines.at(16), (3, 1));
        assert_eq!(lines.at(17), (4, 1));
        assert_eq!(lines.at(999), (4, 5));
    }

    /// `[prometheus]` names as the file has always checked them: the namespace and gauges are
    /// metric names, the env label a label name (no `__` prefix).
    #[test]
    fn prometheus_names_follow_the_prometheus_rules() {
        // (name, as a namespace or gauge, as the env label)
        let table = [
            ("mm", true, true),
            ("_x1", true, true),
            ("__x", true, false),
            ("", false, false),
            ("1x", false, false),
            ("a:b", false, false),
            ("a-b", false, false),
            ("é", false, false),
        ];
        for (name, metric, label) in table {
            let read = |text: String| parse(&text).is_ok();
            let ns = read(format!("[prometheus]\nnamespace = {name:?}\n"));
            let gauge = read(format!("[prometheus]\ngauges = [{name:?}]\n"));
            let env = read(format!("[prometheus]\nenv_label = {name:?}\n"));
            assert_eq!((ns, gauge, env), (metric, metric, label), "{name:?}");
        }
    }

    #[test]
    fn keys_are_quoted_only_when_toml_needs_it() {
        assert_eq!(key_segment("tick_total"), "tick_total");
        assert_eq!(key_segment("exchange-req"), "exchange-req");
        assert_eq!(key_segment("svc.tick"), "\"svc.tick\"");
        assert_eq!(key_segment(""), "\"\"");
    }

    #[test]
    fn positions_fall_back_to_the_enclosing_section() {
        let mut p = Positions::default();
        p.0.insert("sla[1]".into(), (7, 1));
        p.0.insert("sla[1].critical".into(), (9, 12));
        assert_eq!(p.locate("sla[1].critical"), (9, 12));
        assert_eq!(p.locate("sla[1].warning"), (7, 1));
        assert_eq!(p.locate("collector.ring_capacity"), (1, 1));
    }
}
