//! The structured stats document (feature `http`): one window of a published [`Snapshot`] as
//! JSON, what [`MetricsServer`](super::http::MetricsServer) serves on `GET /stats?window=…` and
//! what `laptime top` reads.
//!
//! Everything in it comes from one snapshot, the one the aggregator published last: the same
//! figures [`crate::get_all_stats`], [`crate::check_sla_violations`], [`Snapshot::guard_trips`]
//! and [`crate::health`] give when they read that snapshot. Building it takes no lock the hot path
//! or the aggregator uses.
//!
//! # Schema (version 1)
//!
//! `docs/stats-endpoint.md` describes every field with an example. In short:
//!
//! ```text
//! {
//!   "version": 1,                      // STATS_VERSION: bumped on any incompatible change
//!   "window": "1s",                    // the window of every figure below (but `health`)
//!   "windows": ["1s", "5s", "60s", "cumulative"],   // the windows the process keeps
//!   "taken_at_ns": 12000000000,        // when the snapshot was taken, since the collector started
//!   "cycle": 1234,                     // the aggregator cycle that published it
//!   "stages": [ {                      // every series with activity in the window, stage-id order
//!       "name": "exchange_req", "labels": {"verb": "post", "api": "batch"},
//!       "count": 9, "calls": 9, "min_ns": …, "max_ns": …, "mean_ns": …, "stddev_ns": …,
//!       "p50_ns": …, "p90_ns": …, "p95_ns": …, "p99_ns": …, "p999_ns": …,
//!       "deadline_ns": null, "deadline_misses": 0, "dropped": 0, "sampled_out": 0,
//!       "saturated": 0, "cancelled": 0, "unwound": 0, "in_flight": 0, "in_rings": 0,
//!       "produced": 9, "corrected": null,
//!       "sla": {"state": "ok", "rule": null},
//!       "family": null, "family_total": false, "total": false } ],
//!   "families": [ {                    // every runtime-labelled family active in the window
//!       "name": "order_exec", "label_names": ["pair"], "series": 40, "overflowed": 0,
//!       "slowest": [ {"labels": {"pair": "BTC-USD"}, "count": 17, "p99_ns": …} ] } ],
//!   "violations": [ … ],              // every active SLA violation, over every window
//!   "guard_trips": [ {"reason": "vol_hard", "count": 3} ],   // trips in the window
//!   "health": { "records": …, "dropped": …, "in_rings": …, "lag_ns": …, … }
//! }
//! ```
//!
//! A series of a labelled stage is its own entry (`name` plus `labels`, in the stage's label
//! order). A runtime-labelled [`Family`]'s series name it in `family`; its total (every series'
//! values in one histogram, no labels) is an entry of its own with `family_total: true`; so is a
//! labelled stage's name total (its labelled stages' values under the bare name), with `total:
//! true` (which a family total has too), and
//! `families` lists each such family with its [`FAMILY_TOP_K`] slowest series by p99
//! ([`Family::top`]).
//!
//! A stage's `sla.state` is the worst active violation of that series over any window (a rule
//! judges its own window, whichever window the document shows), `"ok"` when there is none;
//! `sla.rule` is that violation (its window, metric, threshold and observed value), `null` for
//! `"ok"`.
//!
//! # Example
//!
//! ```
//! use laptime::Window;
//! use laptime::export::stats_json::{parse_window, render};
//!
//! let collector = laptime::Collector::builder().install().unwrap();
//! laptime::record("demo_stage", std::time::Duration::from_micros(250));
//! collector.flush();
//! let snapshot = collector.snapshot();
//! let json = render(&snapshot, parse_window("cumulative").unwrap()).unwrap();
//! assert!(json.starts_with("{\"version\":1,\"window\":\"cumulative\""));
//! // A window the collector does not keep is refused with the reason.
//! assert!(render(&snapshot, Window::Last(std::time::Duration::from_secs(2))).is_err());
//! ```

use std::time::Duration;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::family::{Family, Rank};
use crate::stage::Stage;
use crate::stats::{CorrectedStats, Health, Metric, Severity, Snapshot, StageStats, Value};
use crate::stats::{Violation, Window};

/// The document's `version`: raised whenever a field changes meaning or goes away (fields may be
/// added without a raise; a reader ignores the ones it does not know).
pub const STATS_VERSION: u32 = 1;

/// How many of a family's series `families[].slowest` lists: its slowest by p99.
pub const FAMILY_TOP_K: usize = 5;

/// The text of a window in the document and in `?window=`: `1s`, `5s`, `60s`, `500ms`,
/// `cumulative` (as [`Window`]'s `Display`).
pub fn window_name(window: Window) -> String {
    window.to_string()
}

/// Reads a `window` parameter: `cumulative`, or a length as a whole number and a unit (`ns`,
/// `us` or `µs`, `ms`, `s`), e.g. `1s`, `60s`, `500ms`. The reason, when it is not one, says what
/// is accepted.
pub fn parse_window(text: &str) -> Result<Window, String> {
    if text == "cumulative" {
        return Ok(Window::Cumulative);
    }
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let per_unit: fn(u64) -> Duration = match unit {
        "ns" => Duration::from_nanos,
        "us" | "µs" => Duration::from_micros,
        "ms" => Duration::from_millis,
        "s" => Duration::from_secs,
        _ => {
            return Err(format!(
                "window {text:?} is not a window: use 1s, 5s, 60s or cumulative (or another \
                 kept window's length, e.g. 500ms)"
            ));
        }
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Window::Last(per_unit(n))),
        _ => Err(format!(
            "window {text:?} has no length: use a whole number above 0 and a unit, e.g. 1s or \
             500ms, or cumulative"
        )),
    }
}

/// The document for `window` of `snapshot`, as compact JSON; the reason when the snapshot does
/// not keep that window (naming the ones it keeps).
pub fn render(snapshot: &Snapshot, window: Window) -> Result<String, String> {
    check_kept(snapshot, window)?;
    let document = Document::new(snapshot, window);
    serde_json::to_string(&document).map_err(|e| format!("cannot encode the stats: {e}"))
}

/// Whether `snapshot` keeps `window`; the reason, naming the windows it keeps, when it does not.
pub fn check_kept(snapshot: &Snapshot, window: Window) -> Result<(), String> {
    if snapshot.windows.contains(&window) {
        return Ok(());
    }
    let kept: Vec<String> = snapshot.windows.iter().map(|w| w.to_string()).collect();
    Err(format!(
        "window {window} is not kept by this process: use one of {}",
        kept.join(", ")
    ))
}

/// Nanoseconds, saturating at `u64::MAX` (584 years).
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Serialize)]
struct Document {
    version: u32,
    window: String,
    windows: Vec<String>,
    taken_at_ns: u64,
    cycle: u64,
    stages: Vec<StageJson>,
    families: Vec<FamilyJson>,
    violations: Vec<ViolationJson>,
    guard_trips: Vec<TripJson>,
    health: HealthJson,
}

impl Document {
    fn new(snapshot: &Snapshot, window: Window) -> Self {
        let violations = snapshot.violations();
        Document {
            version: STATS_VERSION,
            window: window_name(window),
            windows: snapshot.windows.iter().map(|w| window_name(*w)).collect(),
            taken_at_ns: ns(snapshot.taken_at),
            cycle: snapshot.health.cycles,
            stages: snapshot
                .all(window)
                .map(|s| StageJson::new(s, violations))
                .collect(),
            families: families_in(snapshot, window)
                .map(|f| FamilyJson::new(f, snapshot, window))
                .collect(),
            violations: violations
                .iter()
                .filter(|v| !v.cleared)
                .map(ViolationJson::new)
                .collect(),
            guard_trips: snapshot
                .trip_counts(window)
                .into_iter()
                .map(|(reason, count)| TripJson { reason, count })
                .collect(),
            health: HealthJson::new(&snapshot.health),
        }
    }
}

/// A stage's labels as a JSON object, in the stage's order.
struct LabelsJson(Vec<(String, String)>);

impl LabelsJson {
    fn new<'a, K, V>(pairs: impl IntoIterator<Item = &'a (K, V)>) -> Self
    where
        K: ToString + 'a,
        V: ToString + 'a,
    {
        LabelsJson(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl Serialize for LabelsJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The figures a stage and its corrected view both have, in ns.
#[derive(Serialize)]
struct FiguresJson {
    min_ns: u64,
    max_ns: u64,
    mean_ns: u64,
    stddev_ns: u64,
    p50_ns: u64,
    p90_ns: u64,
    p95_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
}

impl FiguresJson {
    /// From min, max, mean, stddev, p50, p90, p95, p99 and p99.9, in that order.
    fn new(d: [Duration; 9]) -> Self {
        let [min, max, mean, stddev, p50, p90, p95, p99, p999] = d.map(ns);
        FiguresJson {
            min_ns: min,
            max_ns: max,
            mean_ns: mean,
            stddev_ns: stddev,
            p50_ns: p50,
            p90_ns: p90,
            p95_ns: p95,
            p99_ns: p99,
            p999_ns: p999,
        }
    }
}

#[derive(Serialize)]
struct StageJson {
    name: String,
    labels: LabelsJson,
    count: u64,
    calls: u64,
    #[serde(flatten)]
    figures: FiguresJson,
    deadline_ns: Option<u64>,
    deadline_misses: u64,
    dropped: u64,
    sampled_out: u64,
    saturated: u64,
    cancelled: u64,
    unwound: u64,
    in_flight: u64,
    in_rings: u64,
    produced: u64,
    corrected: Option<CorrectedJson>,
    sla: SlaJson,
    /// The family this stage is a series or the total of; `null` for a plain stage.
    family: Option<&'static str>,
    /// Whether this entry is a family total (every series' values in one histogram).
    family_total: bool,
    /// Whether this entry is a total: a family's, or a name's (the values of every labelled
    /// stage of that name, which `Stage::with_labels` keeps under the bare name).
    total: bool,
}

impl StageJson {
    fn new(s: &StageStats, violations: &[Violation]) -> Self {
        let mine = violations
            .iter()
            .filter(|v| !v.cleared && v.stage == s.stage && v.labels == s.labels);
        // The worst; the first of equals (snapshot order).
        let worst = mine.fold(None::<&Violation>, |w, v| match w {
            Some(w) if w.severity >= v.severity => Some(w),
            _ => Some(v),
        });
        let stage = Stage::lookup(s.stage, s.labels);
        StageJson {
            family: stage.and_then(Stage::family).map(Family::name),
            family_total: stage.is_some_and(Stage::is_family_total),
            total: stage.is_some_and(Stage::is_total),
            name: s.stage.to_string(),
            labels: LabelsJson::new(s.labels.iter()),
            count: s.count,
            calls: s.calls,
            figures: FiguresJson::new([
                s.min, s.max, s.mean, s.stddev, s.p50, s.p90, s.p95, s.p99, s.p999,
            ]),
            deadline_ns: s.deadline.map(ns),
            deadline_misses: s.deadline_misses,
            dropped: s.dropped,
            sampled_out: s.sampled_out,
            saturated: s.saturated,
            cancelled: s.cancelled,
            unwound: s.unwound,
            in_flight: s.in_flight,
            in_rings: s.in_rings,
            produced: s.produced,
            corrected: s.corrected.as_deref().map(CorrectedJson::new),
            sla: SlaJson {
                state: worst.map_or("ok", |v| severity_name(v.severity)),
                rule: worst.map(RuleJson::new),
            },
        }
    }
}

/// The stages of `snapshot` that are family totals with activity in `window`: their families.
fn families_in(snapshot: &Snapshot, window: Window) -> impl Iterator<Item = Family> + '_ {
    snapshot
        .all(window)
        .filter_map(|s| Stage::lookup(s.stage, s.labels))
        .filter(|stage| stage.is_family_total())
        .filter_map(Stage::family)
}

/// A family with activity in the window: its size and its slowest series by p99
/// ([`Family::top`] over the same snapshot and window).
#[derive(Serialize)]
struct FamilyJson {
    name: &'static str,
    label_names: &'static [&'static str],
    series: usize,
    overflowed: u64,
    slowest: Vec<SlowSeriesJson>,
}

#[derive(Serialize)]
struct SlowSeriesJson {
    labels: LabelsJson,
    count: u64,
    p99_ns: u64,
}

impl FamilyJson {
    fn new(family: Family, snapshot: &Snapshot, window: Window) -> Self {
        let slowest = family.top(snapshot, window, Rank::Quantile(0.99), FAMILY_TOP_K);
        FamilyJson {
            name: family.name(),
            label_names: family.label_names(),
            series: family.len(),
            overflowed: family.overflowed(),
            slowest: slowest
                .iter()
                .map(|s| SlowSeriesJson {
                    labels: LabelsJson::new(s.labels.iter()),
                    count: s.count,
                    p99_ns: ns(s.p99),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct CorrectedJson {
    expected_interval_ns: u64,
    count: u64,
    synthesized: u64,
    #[serde(flatten)]
    figures: FiguresJson,
    truncated: u64,
}

impl CorrectedJson {
    fn new(c: &CorrectedStats) -> Self {
        CorrectedJson {
            expected_interval_ns: ns(c.expected_interval),
            count: c.count,
            synthesized: c.synthesized,
            figures: FiguresJson::new([
                c.min, c.max, c.mean, c.stddev, c.p50, c.p90, c.p95, c.p99, c.p999,
            ]),
            truncated: c.truncated,
        }
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

#[derive(Serialize)]
struct SlaJson {
    state: &'static str,
    rule: Option<RuleJson>,
}

/// The rule a violation broke, with what was observed. Latencies are in ns (`unit` `"ns"`), a
/// deadline-miss rate a fraction in [0, 1] (`unit` `"ratio"`).
#[derive(Serialize)]
struct RuleJson {
    window: String,
    metric: String,
    severity: &'static str,
    unit: &'static str,
    threshold: Number,
    observed: Number,
}

impl RuleJson {
    fn new(v: &Violation) -> Self {
        let unit = match v.metric {
            Metric::DeadlineMissRate => "ratio",
            _ => "ns",
        };
        RuleJson {
            window: window_name(v.window),
            metric: v.metric.to_string(),
            severity: severity_name(v.severity),
            unit,
            threshold: Number::new(v.threshold),
            observed: Number::new(v.observed),
        }
    }
}

/// A threshold or observed value: whole nanoseconds for a latency, a fraction for a ratio.
#[derive(Serialize)]
#[serde(untagged)]
enum Number {
    Ns(u64),
    Ratio(f64),
}

impl Number {
    fn new(v: Value) -> Self {
        match v {
            Value::Latency(d) => Number::Ns(ns(d)),
            // JSON has no NaN or infinity: a ratio is a fraction in [0, 1].
            Value::Ratio(r) if r.is_finite() => Number::Ratio(r),
            Value::Ratio(_) => Number::Ratio(0.0),
        }
    }
}

#[derive(Serialize)]
struct ViolationJson {
    stage: String,
    labels: LabelsJson,
    #[serde(flatten)]
    rule: RuleJson,
}

impl ViolationJson {
    fn new(v: &Violation) -> Self {
        ViolationJson {
            stage: v.stage.to_string(),
            labels: LabelsJson::new(v.labels.iter()),
            rule: RuleJson::new(v),
        }
    }
}

#[derive(Serialize)]
struct TripJson {
    reason: &'static str,
    count: u64,
}

#[derive(Serialize)]
struct HealthJson {
    records: u64,
    dropped: u64,
    in_rings: u64,
    produced: u64,
    sampled_out: u64,
    saturated: u64,
    backwards_spans: u64,
    rejected: u64,
    rings: usize,
    rings_reclaimed: u64,
    ring_high_water: usize,
    ring_capacity: usize,
    cycles: u64,
    last_cycle_ns: u64,
    lag_ns: u64,
    aggregator_restarts: u64,
    callback_panics: u64,
    sampling_rate: f64,
    adaptive_engaged: bool,
    enabled: bool,
    in_flight: usize,
    untracked_starts: u64,
    abandoned: u64,
    histogram_bytes: usize,
    rejected_trips: u64,
    sink_panics: u64,
    series: usize,
    series_overflowed: u64,
}

impl HealthJson {
    fn new(h: &Health) -> Self {
        HealthJson {
            records: h.records,
            dropped: h.dropped,
            in_rings: h.in_rings,
            produced: h.produced,
            sampled_out: h.sampled_out,
            saturated: h.saturated,
            backwards_spans: h.backwards_spans,
            rejected: h.rejected,
            rings: h.rings,
            rings_reclaimed: h.rings_reclaimed,
            ring_high_water: h.ring_high_water,
            ring_capacity: h.ring_capacity,
            cycles: h.cycles,
            last_cycle_ns: ns(h.last_cycle),
            lag_ns: ns(h.lag),
            aggregator_restarts: h.aggregator_restarts,
            callback_panics: h.callback_panics,
            sampling_rate: if h.sampling_rate.is_finite() {
                h.sampling_rate
            } else {
                0.0
            },
            adaptive_engaged: h.adaptive_engaged,
            enabled: h.enabled,
            in_flight: h.in_flight,
            untracked_starts: h.untracked_starts,
            abandoned: h.abandoned,
            histogram_bytes: h.histogram_bytes,
            rejected_trips: h.rejected_trips,
            sink_panics: h.sink_panics,
            series: h.series,
            series_overflowed: h.series_overflowed,
        }
    }
}

/// Reads the `/stats` query string (`window=1s`; empty for the default), as the server does: the
/// window asked for, `None` for the default (the snapshot's first window), or the reason the
/// query is refused (answered `400`). Whether the snapshot keeps the window is not checked here.
pub fn parse_query(query: &str) -> Result<Option<Window>, String> {
    let mut window = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        let value = percent_decode(value)?;
        match key.as_str() {
            "window" if window.is_some() => {
                return Err("window is given twice: give it once".to_owned());
            }
            "window" => window = Some(parse_window(&value)?),
            _ => {
                return Err(format!(
                    "unknown parameter {key:?}: /stats takes window=1s|5s|60s|cumulative"
                ));
            }
        }
    }
    Ok(window)
}

/// `%XX` escapes and `+` (a space) decoded; the reason when an escape is cut short or the bytes
/// are not UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{text:?} has a bad %-escape: use %XX"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_as_they_print() {
        for w in [
            Window::S1,
            Window::S5,
            Window::S60,
            Window::Cumulative,
            Window::Last(Duration::from_millis(500)),
            Window::Last(Duration::from_micros(250)),
        ] {
            assert_eq!(parse_window(&window_name(w)), Ok(w), "{w}");
        }
        assert_eq!(
            parse_window("250us"),
            Ok(Window::Last(Duration::from_micros(250)))
        );
        for bad in [
            "",
            "s",
            "0s",
            "1",
            "1h",
            "-1s",
            "1.5s",
            " 1s",
            "Cumulative",
            "99999999999999999999s",
        ] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn queries_take_one_window_and_nothing_else() {
        assert_eq!(parse_query(""), Ok(None));
        assert_eq!(parse_query("window=5s"), Ok(Some(Window::S5)));
        assert_eq!(parse_query("&window=60s&"), Ok(Some(Window::S60)));
        assert_eq!(
            parse_query("window=250%C2%B5s"),
            Ok(Some(Window::Last(Duration::from_micros(250))))
        );
        let twice = parse_query("window=1s&window=5s").unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
        let unknown = parse_query("window=1s&sort=p99").unwrap_err();
        assert!(unknown.contains("unknown parameter \"sort\""), "{unknown}");
        let bad = parse_query("window=2x").unwrap_err();
        assert!(bad.contains("\"2x\" is not a window"), "{bad}");
        assert!(parse_query("window=%G1").is_err());
        assert!(parse_query("window=%C2").is_err());
        assert!(parse_query("window").is_err());
    }
}
