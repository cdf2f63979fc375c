//! Configuration files (`laptime::config`): a full file read into plain data against values written
//! out here; installed, its effects seen through the public API under the mock clock (deadlines,
//! windows, sampling, SLA violations and latency guards, traces); the demo's file against the
//! seeds' preset it scales; every kind of error with its key, line and column; and random
//! garbage, which must give an error, never a panic.
#![cfg(all(feature = "config", feature = "enable"))]

mod common;

use std::time::Duration;

use laptime::config::{Config, ConfigFileError};
use laptime::{ConfigError, Metric, Value, Window, WindowSpec, presets};

const MS: Duration = Duration::from_millis(1);

/// Every key of every section.
const FULL: &str = r#"
# every key, none at its default
[collector]
ring_capacity = 4096
interval = "30s"
windows = [
  { length = "2s", slice = "500ms" },
  { length = "10s", slice = "2s" },
]
significant_digits = 2
highest = "10s"
max_stages = 2048
max_in_flight = 1000
abandon_after = "1m"
latency_guard_reason = "cfg_latency"
clock = "monotonic"

[sampling]
rate = 0.5
adaptive = { budget_per_sec = 5_000.0, reduced_rate = 0.25 }

[deadlines]
cfg_tick = "5ms"
"cfg.emit" = "1.5ms"

[expected_intervals]
cfg_tick = "5ms"
"cfg.emit" = "250us"

[[sla]]
stage = "cfg_tick"
window = "2s"
metric = "p99"
warning = "8ms"
critical = "10ms"
min_count = 5

[[sla]]
stage = "cfg_req"
labels = { verb = "post", api = "batch" }
window = "cumulative"
metric = "max"
warning = "40ms"
critical = "50ms"
guard = false

[[sla]]
stage = "cfg_tick"
window = "10s"
metric = "deadline_miss_rate"
critical = 0.02

[trace]
enabled = true
root = "cfg_tick"
sample_rate = 0.0
deadline = "100ms"
export_golden = true
golden_trace_interval = 1
output_dir = "out/traces"
seed = 7
keep = 16
max_spans = 64
metadata = { symbols = ["BTCUSDT", "ETHUSDT"], parallel_symbols = 10 }

[profile]
name = "cfg_run"
output = "out/profile.json"
tags = { env = "canary", mode = "async_batch" }
"#;

#[test]
fn a_full_file_reads_into_plain_data() {
    let config = Config::from_toml_str(FULL).unwrap_or_else(|e| panic!("{e}"));
    let c = &config.collector;
    assert_eq!(c.ring_capacity, 4096);
    assert_eq!(c.interval, Duration::from_secs(30));
    assert_eq!(
        c.windows,
        [
            WindowSpec::new(Duration::from_secs(2), 500 * MS),
            WindowSpec::new(Duration::from_secs(10), Duration::from_secs(2)),
        ]
    );
    assert_eq!(
        c.kept_windows(),
        [
            Window::Last(Duration::from_secs(2)),
            Window::Last(Duration::from_secs(10)),
            Window::Cumulative
        ]
    );
    assert_eq!(c.significant_digits, 2);
    assert_eq!(c.highest, Duration::from_secs(10));
    assert_eq!((c.max_stages, c.max_in_flight), (2048, 1000));
    assert_eq!(c.abandon_after, Duration::from_secs(60));
    assert_eq!(c.latency_guard_reason, "cfg_latency");
    assert_eq!(c.clock, laptime::clock::ClockSource::Monotonic);

    assert_eq!(config.sampling.rate, Some(0.5));
    let adaptive = config.sampling.adaptive.expect("adaptive given");
    assert_eq!(
        (adaptive.budget_per_sec, adaptive.reduced_rate),
        (5000.0, 0.25)
    );

    assert_eq!(
        config.deadlines,
        [
            ("cfg_tick".to_owned(), 5 * MS),
            ("cfg.emit".to_owned(), Duration::from_micros(1500)),
        ]
    );
    assert_eq!(
        config.expected_intervals,
        [
            ("cfg_tick".to_owned(), 5 * MS),
            ("cfg.emit".to_owned(), Duration::from_micros(250)),
        ]
    );

    assert_eq!(config.sla.len(), 3);
    let r = &config.sla[0];
    assert_eq!(
        (r.stage.as_str(), r.window, r.metric),
        (
            "cfg_tick",
            Window::Last(Duration::from_secs(2)),
            Metric::P99
        )
    );
    assert_eq!(
        (r.warning, r.critical),
        (Some(Value::Latency(8 * MS)), Some(Value::Latency(10 * MS)))
    );
    assert_eq!((r.min_count, r.guard), (5, true));
    assert!(r.labels.is_empty());
    let r = &config.sla[1];
    assert_eq!(
        r.labels,
        [
            ("verb".to_owned(), "post".to_owned()),
            ("api".to_owned(), "batch".to_owned())
        ],
        "labels keep the file's order"
    );
    assert_eq!((r.window, r.metric), (Window::Cumulative, Metric::Max));
    assert_eq!((r.min_count, r.guard), (1, false));
    let r = &config.sla[2];
    assert_eq!(r.metric, Metric::DeadlineMissRate);
    assert_eq!((r.warning, r.critical), (None, Some(Value::Ratio(0.02))));

    let t = config.trace.as_ref().expect("[trace] given");
    assert_eq!(t.root, "cfg_tick");
    assert_eq!(
        (t.enabled, t.sample_rate, t.deadline),
        (Some(true), Some(0.0), Some(100 * MS))
    );
    assert_eq!(
        (t.export_golden, t.golden_trace_interval),
        (Some(true), Some(1))
    );
    assert_eq!(
        t.output_dir.as_deref(),
        Some(std::path::Path::new("out/traces"))
    );
    assert_eq!((t.seed, t.keep, t.max_spans), (Some(7), Some(16), Some(64)));
    assert_eq!(
        t.metadata,
        [
            (
                "symbols".to_owned(),
                serde_json::json!(["BTCUSDT", "ETHUSDT"])
            ),
            ("parallel_symbols".to_owned(), serde_json::json!(10)),
        ]
    );

    let p = config.profile.as_ref().expect("[profile] given");
    assert_eq!(p.name.as_deref(), Some("cfg_run"));
    assert_eq!(
        p.output.as_deref(),
        Some(std::path::Path::new("out/profile.json"))
    );
    assert_eq!(
        p.tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        [("env", "canary"), ("mode", "async_batch")]
    );

    config.builder().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_seed_trace_block_reads_with_its_own_keys() {
    // The seed's YAML `trace:` block, written as TOML, with the root it does not name.
    let config = Config::from_toml_str(
        "[trace]\nenabled = true\nroot = \"tick_total\"\nsample_rate = 0.2\ndeadline_ms = 200.0\nexport_golden = true\ngolden_trace_interval = 100\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = config.trace.unwrap();
    assert_eq!(
        (
            t.enabled,
            t.sample_rate,
            t.deadline,
            t.export_golden,
            t.golden_trace_interval
        ),
        (Some(true), Some(0.2), Some(200 * MS), Some(true), Some(100))
    );
    let rollback =
        Config::from_toml_str("[trace]\nroot = \"tick_total\"\nenabled = false\n").unwrap();
    assert_eq!(rollback.trace.unwrap().enabled, Some(false));
    let fractional = Config::from_toml_str("[trace]\nroot = \"t\"\ndeadline_ms = 0.25\n").unwrap();
    assert_eq!(
        fractional.trace.unwrap().deadline,
        Some(Duration::from_micros(250))
    );
}

#[cfg(feature = "test-util")]
#[test]
fn an_installed_file_shows_its_settings_and_rules_through_the_api() {
    use laptime::{Severity, Stage, TripReason};
    let _s = common::serial();
    let clock = common::clock();
    // The full file, minus what would make this test depend on more than the file: adaptive
    // sampling (an event budget) and the clock source (the mock clock rules anyway).
    let text = FULL
        .replace(
            "adaptive = { budget_per_sec = 5_000.0, reduced_rate = 0.25 }\n",
            "",
        )
        .replace("clock = \"monotonic\"", "clock = \"auto\"")
        .replace("output_dir = \"out/traces\"\n", "");
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let handle = common::install(config.builder().unwrap_or_else(|e| panic!("{e}")));

    assert_eq!(laptime::sampling_rate(), 0.5);
    assert!(handle.flush());
    assert_eq!(handle.health().sampling_rate, 0.5);
    assert_eq!(handle.health().ring_capacity, 4096);
    assert_eq!(
        handle.snapshot().windows,
        [
            Window::Last(Duration::from_secs(2)),
            Window::Last(Duration::from_secs(10)),
            Window::Cumulative
        ]
    );
    let tick = Stage::lookup("cfg_tick", &[]).expect("registered by its deadline");
    assert_eq!(tick.deadline(), Some(5 * MS));
    assert_eq!(
        Stage::lookup("cfg.emit", &[]).unwrap().deadline(),
        Some(Duration::from_micros(1500))
    );
    assert_eq!(tick.expected_interval(), Some(5 * MS));
    assert_eq!(
        Stage::lookup("cfg.emit", &[]).unwrap().expected_interval(),
        Some(Duration::from_micros(250))
    );

    // Everything recorded from here on; 20 ticks of 20 ms (each a deadline miss) and one
    // 60 ms request.
    laptime::set_sampling_rate(1.0).unwrap();
    let trips_before = TripReason::new("cfg_latency").unwrap().trips();
    for _ in 0..20 {
        let span = laptime::start("cfg_tick");
        clock.advance(20 * MS);
        drop(span);
    }
    let req = Stage::with_labels("cfg_req", &[("verb", "post"), ("api", "batch")]).unwrap();
    laptime::record(req, 60 * MS);
    assert!(handle.flush());

    let mut seen: Vec<_> = handle
        .snapshot()
        .violations()
        .iter()
        .map(|v| {
            (
                v.stage,
                v.labels,
                v.window,
                v.metric,
                v.severity,
                v.threshold,
                v.observed,
            )
        })
        .collect();
    seen.sort_by_key(|v| format!("{v:?}"));
    let mut want = vec![
        (
            "cfg_tick",
            &[][..],
            Window::Last(Duration::from_secs(2)),
            Metric::P99,
            Severity::Critical,
            Value::Latency(10 * MS),
            Value::Latency(20 * MS),
        ),
        (
            "cfg_req",
            &[("verb", "post"), ("api", "batch")][..],
            Window::Cumulative,
            Metric::Max,
            Severity::Critical,
            Value::Latency(50 * MS),
            Value::Latency(60 * MS),
        ),
        (
            "cfg_tick",
            &[][..],
            Window::Last(Duration::from_secs(10)),
            Metric::DeadlineMissRate,
            Severity::Critical,
            Value::Ratio(0.02),
            Value::Ratio(1.0),
        ),
    ];
    want.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(seen, want);
    assert!(tick.latency_breaker().is_tripped());
    assert!(!req.latency_breaker().is_tripped(), "guard = false");
    // Corrected with the file's 5 ms interval: each 20 ms tick adds 15, 10 and 5 ms.
    let corrected = handle
        .get_stats(tick, Window::Cumulative)
        .unwrap()
        .corrected
        .expect("[expected_intervals] turns the correction on");
    assert_eq!(
        (corrected.count, corrected.synthesized, corrected.min),
        (80, 60, 5 * MS)
    );
    assert!(
        handle
            .get_stats(req, Window::Cumulative)
            .unwrap()
            .corrected
            .is_none()
    );
    assert_eq!(
        TripReason::new("cfg_latency").unwrap().trips(),
        trips_before + 1,
        "the file's latency_guard_reason counts the trip"
    );

    // Tracing: every tick golden (interval 1), none slow (100 ms deadline), the last 16 kept.
    let traces: Vec<_> = handle
        .traces()
        .iter()
        .map(|t| (t.tick, t.reason, t.root))
        .collect();
    let want: Vec<_> = (5..=20)
        .map(|n| (n, laptime::trace::Reason::Golden, "cfg_tick"))
        .collect();
    assert_eq!(traces, want);
    drop(handle);
    laptime::set_sampling_rate(1.0).unwrap();
}

#[test]
fn the_demo_file_is_the_seeds_preset_scaled_to_the_demo() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/trading_tick.toml");
    let config = Config::from_path(path).unwrap_or_else(|e| panic!("{e}"));
    config
        .builder()
        .unwrap_or_else(|e| panic!("{e}"))
        .validate()
        .unwrap();

    // The demo installs `Collector::builder()` with the preset: library defaults elsewhere.
    assert_eq!(
        config.collector,
        laptime::config::CollectorSection::default()
    );
    assert_eq!(config.sampling, laptime::config::SamplingSection::default());

    // What demo/src/main.rs's `demo_sla()` does to the preset: durations / 1000, judged over the
    // last second once it holds 500 ticks.
    let preset = presets::market_maker();
    let mut scaled = preset.clone();
    for (_, deadline) in &mut scaled.deadlines {
        *deadline /= 1000;
    }
    for rule in &mut scaled.rules {
        rule.window = Window::S1;
        rule.min_count = 500;
        for threshold in [&mut rule.warning, &mut rule.critical]
            .into_iter()
            .flatten()
        {
            if let Value::Latency(d) = threshold {
                *d /= 1000;
            }
        }
    }
    assert_eq!(config.sla_preset().unwrap(), scaled);
    assert_eq!(
        config.deadlines,
        [("tick_total".to_owned(), Duration::from_micros(200))]
    );
    // The demo's tick period, as demo/src/main.rs's built-in settings set it.
    assert_eq!(
        config.expected_intervals,
        [("tick_total".to_owned(), Duration::from_millis(1))]
    );

    let t = config.trace.as_ref().expect("the demo traces");
    assert_eq!(t.root, "tick_total");
    assert_eq!(t.deadline, Some(preset.deadlines[0].1 / 1000));
    assert_eq!(
        (
            t.enabled,
            t.sample_rate,
            t.export_golden,
            t.golden_trace_interval
        ),
        (Some(true), Some(0.2), Some(true), Some(100))
    );
    let p = config.profile.as_ref().expect("the demo writes a profile");
    assert_eq!(p.name.as_deref(), Some("trading_tick"));
    assert_eq!(p.tags.get("env").map(String::as_str), Some("local"));
}

/// A rule with its window, metric and thresholds on lines 3, 4, 5 (and 6).
fn rule(window: &str, metric: &str, thresholds: &str) -> String {
    format!("[[sla]]\nstage = \"a\"\nwindow = {window}\nmetric = {metric}\n{thresholds}")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Parse,
    Invalid,
}

/// Every kind of mistake: the error's kind, dotted key, line and column, and a piece of its
/// message (what to change).
#[test]
fn each_mistake_names_its_key_line_and_column() {
    let windows = "[collector]\nwindows = [\n  { length = \"1s\", slice = \"250ms\" },\n";
    let cases: Vec<(&str, String, Kind, &str, usize, usize, &str)> = vec![
        (
            "unknown top-level key",
            "# settings\nring_capacity = 5\n".into(),
            Kind::Parse,
            "ring_capacity",
            2,
            1,
            "allowed here: `collector`, `sampling`, `deadlines`, `expected_intervals`, `sla`, `trace`, `profile`",
        ),
        (
            "unknown section",
            "[collector]\n\n[alerting]\nwarn = 1\n".into(),
            Kind::Parse,
            "alerting",
            3,
            2,
            "unknown key `alerting`",
        ),
        (
            "unknown key in a section",
            "[collector]\ninterval = \"10ms\"\nring_capcity = 5\n".into(),
            Kind::Parse,
            "collector.ring_capcity",
            3,
            1,
            "fix its spelling; allowed here: `ring_capacity`",
        ),
        (
            "unknown key in the second [[sla]]",
            format!(
                "{}\n{}",
                rule("\"1s\"", "\"p99\"", "critical = \"1ms\"\n"),
                rule("\"1s\"", "\"p99\"", "critcal = \"1ms\"\n")
            ),
            Kind::Parse,
            "sla[1].critcal",
            11,
            1,
            "allowed here: `stage`, `window`, `metric`, `warning`, `critical`",
        ),
        (
            "unknown key in an inline table",
            "[sampling]\nadaptive = { budget = 10.0 }\n".into(),
            Kind::Parse,
            "sampling.adaptive.budget",
            2,
            14,
            "allowed here: `budget_per_sec`, `reduced_rate`",
        ),
        (
            "wrong type",
            "[collector]\nring_capacity = \"big\"\n".into(),
            Kind::Parse,
            "collector.ring_capacity",
            2,
            17,
            "expected a whole number",
        ),
        (
            "a section that is not a table",
            "sampling = 1\n".into(),
            Kind::Parse,
            "sampling",
            1,
            12,
            "expected a table",
        ),
        (
            "[sla] instead of [[sla]]",
            "[sla]\nstage = \"a\"\n".into(),
            Kind::Parse,
            "sla",
            1,
            1,
            "under an [[sla]] header",
        ),
        (
            "a duration without its quotes' unit",
            "[collector]\ninterval = 10\n".into(),
            Kind::Parse,
            "collector.interval",
            2,
            12,
            "expected a duration string with a unit",
        ),
        (
            "bad duration",
            "[collector]\ninterval = \"20 mss\"\n".into(),
            Kind::Parse,
            "collector.interval",
            2,
            12,
            "unknown unit \" mss\"",
        ),
        (
            "bad duration in a window",
            format!("{windows}  {{ length = \"5s\", slice = \"1sec\" }},\n]\n"),
            Kind::Parse,
            "collector.windows[1].slice",
            4,
            28,
            "unknown unit \"sec\"",
        ),
        (
            "zero interval",
            "[collector]\ninterval = \"0s\"\n".into(),
            Kind::Parse,
            "collector.interval",
            2,
            12,
            "must be more than zero",
        ),
        (
            "zero deadline",
            "[deadlines]\n\"svc.tick\" = \"0ms\"\n".into(),
            Kind::Parse,
            "deadlines.\"svc.tick\"",
            2,
            14,
            "must be more than zero",
        ),
        (
            "zero expected interval: the library's typed error at its key",
            "[expected_intervals]\n\"svc.tick\" = \"0ms\"\n".into(),
            Kind::Invalid,
            "expected_intervals.\"svc.tick\"",
            2,
            14,
            "expected interval of stage \"svc.tick\" is zero",
        ),
        (
            "bad duration in expected_intervals",
            "[expected_intervals]\ntick = \"1 sec\"\n".into(),
            Kind::Parse,
            "expected_intervals.tick",
            2,
            8,
            "unknown unit",
        ),
        (
            "sampling rate above 1",
            "[sampling]\nrate = 1.5\n".into(),
            Kind::Parse,
            "sampling.rate",
            2,
            8,
            "sampling rate 1.5 is not in [0, 1]",
        ),
        (
            "trace sample rate below 0",
            "[trace]\nroot = \"t\"\nsample_rate = -0.1\n".into(),
            Kind::Parse,
            "trace.sample_rate",
            3,
            15,
            "is not in [0, 1]",
        ),
        (
            "unknown clock",
            "[collector]\nclock = \"rdtsc\"\n".into(),
            Kind::Parse,
            "collector.clock",
            2,
            9,
            "use `auto`, `tsc`, `monotonic`",
        ),
        (
            "unknown metric",
            rule("\"1s\"", "\"p42\"", "critical = \"1ms\"\n"),
            Kind::Parse,
            "sla[0].metric",
            4,
            10,
            "unknown value `p42`: use `p50`, `p90`, `p95`, `p99`",
        ),
        (
            "malformed window",
            rule("\"2x\"", "\"p99\"", "critical = \"1ms\"\n"),
            Kind::Parse,
            "sla[0].window",
            3,
            10,
            "or \"cumulative\" for the whole run",
        ),
        (
            "window the collector does not keep",
            rule("\"2s\"", "\"p99\"", "critical = \"1ms\"\n"),
            Kind::Parse,
            "sla[0].window",
            3,
            10,
            "use one of \"1s\", \"5s\", \"60s\", \"cumulative\", or add it to [collector].windows",
        ),
        (
            "missing metric",
            "[[sla]]\nstage = \"a\"\nwindow = \"1s\"\ncritical = \"1ms\"\n".into(),
            Kind::Parse,
            "sla[0].metric",
            1,
            1,
            "missing key `metric`: add it",
        ),
        (
            "no threshold",
            rule("\"1s\"", "\"p99\"", "min_count = 3\n"),
            Kind::Parse,
            "sla[0]",
            1,
            1,
            "give `warning`, `critical` or both",
        ),
        (
            "warning above critical",
            rule(
                "\"1s\"",
                "\"p99\"",
                "warning = \"2ms\"\ncritical = \"1ms\"\n",
            ),
            Kind::Parse,
            "sla[0].warning",
            5,
            11,
            "warning 2.00ms is above critical 1.00ms: swap them",
        ),
        (
            "warning above critical, miss rate",
            rule(
                "\"1s\"",
                "\"deadline_miss_rate\"",
                "critical = 0.01\nwarning = 0.02\n",
            ),
            Kind::Parse,
            "sla[0].warning",
            6,
            11,
            "swap them",
        ),
        (
            "a number for a latency metric",
            rule("\"1s\"", "\"p99\"", "critical = 0.5\n"),
            Kind::Parse,
            "sla[0].critical",
            5,
            12,
            "p99 is a latency: give a duration string",
        ),
        (
            "a duration for the miss rate",
            rule("\"1s\"", "\"deadline_miss_rate\"", "critical = \"1ms\"\n"),
            Kind::Parse,
            "sla[0].critical",
            5,
            12,
            "not a duration",
        ),
        (
            "a percentage for the miss rate",
            rule("\"1s\"", "\"deadline_miss_rate\"", "critical = 2\n"),
            Kind::Parse,
            "sla[0].critical",
            5,
            12,
            "write 0.02 for 2 %",
        ),
        (
            "trace deadline given twice",
            "[trace]\nroot = \"t\"\ndeadline = \"200ms\"\ndeadline_ms = 200.0\n".into(),
            Kind::Parse,
            "trace.deadline_ms",
            4,
            15,
            "the trace deadline is given twice",
        ),
        (
            "trace deadline given twice, the other way round",
            "[trace]\nroot = \"t\"\ndeadline_ms = 200.0\ndeadline = \"200ms\"\n".into(),
            Kind::Parse,
            "trace.deadline",
            4,
            12,
            "keep either deadline_ms = 200.0",
        ),
        (
            "negative trace deadline",
            "[trace]\nroot = \"t\"\ndeadline_ms = -1.0\n".into(),
            Kind::Parse,
            "trace.deadline_ms",
            3,
            15,
            "is not a positive deadline",
        ),
        (
            "trace without root",
            "[collector]\n\n[trace]\nsample_rate = 0.2\n".into(),
            Kind::Parse,
            "trace.root",
            3,
            1,
            "root = \"tick_total\"",
        ),
        (
            "metadata JSON cannot hold",
            "[trace]\nroot = \"t\"\nmetadata = { x = inf }\n".into(),
            Kind::Parse,
            "trace.metadata.x",
            3,
            18,
            "give a finite number",
        ),
        (
            "syntax",
            "[collector]\ninterval = \"10ms\"\nmax_stages = = 3\n".into(),
            Kind::Parse,
            "",
            3,
            14,
            "fix the TOML syntax",
        ),
        (
            "duplicate key",
            "[collector]\ninterval = \"1s\"\ninterval = \"2s\"\n".into(),
            Kind::Parse,
            "",
            3,
            1,
            "may appear once",
        ),
        (
            "ring capacity out of range",
            "[collector]\nring_capacity = 1\n".into(),
            Kind::Invalid,
            "collector.ring_capacity",
            2,
            17,
            "use 2..=16777216 records per thread",
        ),
        (
            "window its slice does not divide",
            format!("{windows}  {{ length = \"5s\", slice = \"2s\" }},\n]\n"),
            Kind::Invalid,
            "collector.windows[1]",
            4,
            3,
            "pick a slice that divides the window",
        ),
        (
            "window given twice",
            format!("{windows}  {{ length = \"1s\", slice = \"500ms\" }},\n]\n"),
            Kind::Invalid,
            "collector.windows[1]",
            4,
            3,
            "configured twice: keep one",
        ),
        (
            "significant digits",
            "[collector]\nsignificant_digits = 7\n".into(),
            Kind::Invalid,
            "collector.significant_digits",
            2,
            22,
            "use 1..=5",
        ),
        (
            "max_in_flight zero",
            "[collector]\nmax_in_flight = 0\n".into(),
            Kind::Invalid,
            "collector.max_in_flight",
            2,
            17,
            "max_in_flight is zero",
        ),
        (
            "adaptive budget",
            "[sampling]\nadaptive = { budget_per_sec = 0.0 }\n".into(),
            Kind::Invalid,
            "sampling.adaptive.budget_per_sec",
            2,
            31,
            "use e.g. 1000.0",
        ),
        (
            "latency guard reason",
            "[collector]\nlatency_guard_reason = \"latency hard\"\n".into(),
            Kind::Invalid,
            "collector.latency_guard_reason",
            2,
            24,
            "has a character outside [A-Za-z0-9_.:/-]",
        ),
        (
            "stage name in deadlines",
            "[deadlines]\n\"tick total\" = \"2ms\"\n".into(),
            Kind::Invalid,
            "deadlines.\"tick total\"",
            2,
            16,
            "stage name \"tick total\" has a character outside",
        ),
        (
            "stage name in expected_intervals",
            "[deadlines]\ntick = \"1ms\"\n[expected_intervals]\n\"tick total\" = \"2ms\"\n".into(),
            Kind::Invalid,
            "expected_intervals.\"tick total\"",
            4,
            16,
            "stage name \"tick total\" has a character outside",
        ),
        (
            "stage name in a rule",
            "[[sla]]\nstage = \"\"\nwindow = \"1s\"\nmetric = \"max\"\ncritical = \"1ms\"\n".into(),
            Kind::Invalid,
            "sla[0].stage",
            2,
            9,
            "stage name is empty",
        ),
        (
            "reserved label",
            rule(
                "\"1s\"",
                "\"max\"",
                "critical = \"1ms\"\nlabels = { verb = \"post\", le = \"1\" }\n",
            ),
            Kind::Invalid,
            "sla[0].labels.le",
            6,
            32,
            "label name \"le\" is not a Prometheus label name or is reserved",
        ),
        (
            "trace root name",
            "[trace]\nroot = \"tick total\"\n".into(),
            Kind::Invalid,
            "trace.root",
            2,
            8,
            "has a character outside",
        ),
        (
            "golden interval zero",
            "[trace]\nroot = \"t\"\ngolden_trace_interval = 0\n".into(),
            Kind::Invalid,
            "trace.golden_trace_interval",
            3,
            25,
            "use at least 1",
        ),
        (
            "metadata key the trace uses itself",
            "[trace]\nroot = \"t\"\nmetadata = { symbols = [], tick = 1 }\n".into(),
            Kind::Invalid,
            "trace.metadata.tick",
            3,
            35,
            "is the trace's own: rename yours",
        ),
        (
            "native schema above 8",
            "[prometheus]\nnative = true\nnative_schema = 9\n".into(),
            Kind::Parse,
            "prometheus.native_schema",
            3,
            17,
            "schema 9 is not one Prometheus defines: give a whole number from -4 to 8",
        ),
        (
            "native schema below -4",
            "[prometheus]\nnative_schema = -5\n".into(),
            Kind::Parse,
            "prometheus.native_schema",
            2,
            17,
            "from -4 to 8",
        ),
        (
            "native schema not a whole number",
            "[prometheus]\nnative_schema = 5.5\n".into(),
            Kind::Parse,
            "prometheus.native_schema",
            2,
            17,
            "expected a whole number",
        ),
        (
            "too few native buckets to hold every value",
            "[prometheus]\nnative_max_buckets = 7\n".into(),
            Kind::Parse,
            "prometheus.native_max_buckets",
            2,
            22,
            "give at least 8",
        ),
        (
            "native not a boolean",
            "[prometheus]\nnative = \"yes\"\n".into(),
            Kind::Parse,
            "prometheus.native",
            2,
            10,
            "expected a boolean",
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, kind, key, line, column, fragment) in &cases {
        let err = match Config::from_toml_str(text) {
            Ok(_) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Err(e) => e,
        };
        let got_kind = match &err {
            ConfigFileError::Parse { .. } => Kind::Parse,
            ConfigFileError::Invalid { .. } => Kind::Invalid,
            other => panic!("{name}: {other:?}"),
        };
        let (got_line, got_column) = match &err {
            ConfigFileError::Parse { line, column, .. }
            | ConfigFileError::Invalid { line, column, .. } => (*line, *column),
            _ => unreachable!(),
        };
        let message = err.to_string();
        if (got_kind, err.key(), got_line, got_column) != (*kind, Some(*key), *line, *column)
            || !message.contains(fragment)
            || !message.starts_with(&format!("line {line}, column {column}: "))
        {
            failures.push(format!(
                "{name}: got {got_kind:?} {:?} {got_line}:{got_column} {message:?}; want {kind:?} {key:?} {line}:{column} containing {fragment:?}",
                err.key()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// `[prometheus]`'s native-histogram keys: off, schema 6 and 2 048 buckets unless the file says
/// otherwise; every schema Prometheus defines is taken.
#[test]
fn native_histogram_keys_read_with_their_defaults() {
    let p = Config::from_toml_str("").unwrap().prometheus;
    assert_eq!(
        (p.native, p.native_schema, p.native_max_buckets),
        (false, 6, 2048)
    );
    for schema in -4..=8 {
        let text = format!(
            "[prometheus]\nnative = true\nnative_schema = {schema}\nnative_max_buckets = 8\n"
        );
        let p = Config::from_toml_str(&text)
            .unwrap_or_else(|e| panic!("{e}"))
            .prometheus;
        assert_eq!(
            (p.native, p.native_schema, p.native_max_buckets),
            (true, schema, 8)
        );
    }
    let a = Config::from_toml_str("[prometheus]\nnative = true\n").unwrap();
    assert_ne!(a, Config::default(), "native is part of the settings");
}

/// The file's native keys become the exporter's settings, and every budget the file takes the
/// exporter takes too (the two minimums are one rule).
#[cfg(feature = "prometheus-native")]
#[test]
fn native_keys_build_the_exporter_s_native_histograms() {
    use laptime::export::prometheus::{NativeHistograms, PrometheusExporter};
    assert_eq!(Config::default().prometheus.native_histograms(), None);
    let text = "[prometheus]\nnative = true\nnative_schema = 3\nnative_max_buckets = 8\n";
    let native = Config::from_toml_str(text)
        .unwrap()
        .prometheus
        .native_histograms()
        .expect("native = true");
    assert_eq!((native.schema(), native.max_buckets()), (3, 8));
    assert_eq!(
        laptime::config::MIN_NATIVE_MAX_BUCKETS,
        NativeHistograms::MIN_MAX_BUCKETS
    );
    PrometheusExporter::builder()
        .with_native_histograms(native)
        .build()
        .expect("the smallest budget the file takes builds");
}

#[test]
fn messages_read_as_a_whole() {
    let err =
        Config::from_toml_str("[collector]\ninterval = \"10ms\"\nring_capcity = 5\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 3, column 1: collector.ring_capcity: unknown key `ring_capcity`: remove it or fix its \
         spelling; allowed here: `ring_capacity`, `interval`, `windows`, `significant_digits`, \
         `highest`, `max_stages`, `max_series`, `max_in_flight`, `abandon_after`, `latency_guard_reason`, `clock`"
    );
    let err = Config::from_toml_str("[collector]\nring_capacity = 1\n").unwrap_err();
    match &err {
        ConfigFileError::Invalid { source, .. } => {
            assert_eq!(**source, ConfigError::RingCapacity { capacity: 1 });
            assert_eq!(
                std::error::Error::source(&err).map(|s| s.to_string()),
                Some(source.to_string())
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "line 2, column 17: collector.ring_capacity: ring capacity 1 is out of range: use \
         2..=16777216 records per thread"
    );
}

/// A zero interval set in code on a file's configuration (its fields are public) is the same
/// typed error from `builder`, at the key it would have in the file.
#[test]
fn a_zero_expected_interval_added_in_code_is_refused_by_builder() {
    let mut config = Config::from_toml_str("[expected_intervals]\ntick_total = \"1ms\"\n").unwrap();
    config.builder().unwrap_or_else(|e| panic!("{e}"));
    config
        .expected_intervals
        .push(("svc.emit".to_owned(), Duration::ZERO));
    let err = config.builder().unwrap_err();
    match &err {
        ConfigFileError::Invalid { source, key, .. } => {
            assert_eq!(
                **source,
                ConfigError::ZeroExpectedInterval {
                    stage: "svc.emit".to_owned()
                }
            );
            assert_eq!(key, "expected_intervals.\"svc.emit\"");
        }
        other => panic!("{other:?}"),
    }
    // Not in the file: located at the table.
    assert_eq!(err.line(), Some(1));
}

#[test]
fn file_errors_carry_the_path() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_file");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[sampling]\nrate = 2.0\n").unwrap();
    let err = Config::from_path(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::Parse { path: Some(p), line: 2, .. } if *p == path),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:8: sampling.rate: ", path.display())),
        "{err}"
    );

    let missing = dir.join("missing.toml");
    let err = Config::from_path(&missing).unwrap_err();
    match &err {
        ConfigFileError::Io { path, source } => {
            assert_eq!(*path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((err.key(), err.line()), (None, None));
    assert!(err.to_string().contains("check the path"), "{err}");
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    /// Whatever the text, an error points inside it (or just past its end), and a file that
    /// reads gives a builder or an error.
    fn check(text: &str) -> Result<(), TestCaseError> {
        match Config::from_toml_str(text) {
            Ok(config) => {
                let _ = config.builder();
            }
            Err(e) => {
                let lines = text.split('\n').count();
                let line = e.line().expect("text errors have a line");
                prop_assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
        Ok(())
    }

    /// The demo's file, with a few spans replaced by pieces of TOML.
    fn mutated() -> impl Strategy<Value = String> {
        let demo = include_str!("../demo/trading_tick.toml");
        let piece = prop_oneof![
            Just(String::new()),
            "[\\[\\]{}=\",.#\n a-z0-9_]{1,6}",
            Just("\"0ms\"".to_owned()),
            Just("1e400".to_owned()),
            Just("-1".to_owned()),
            Just("[[sla]]\n".to_owned()),
            Just("{ a = 1 }".to_owned()),
        ];
        proptest::collection::vec((0..demo.len(), 0usize..8, piece), 1..4).prop_map(move |edits| {
            let mut text = demo.to_owned();
            for (at, len, piece) in edits {
                let mut start = at.min(text.len());
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = (start + len).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(start..end, &piece);
            }
            text
        })
    }

    proptest! {
        #![proptest_config(common::proptest_config("config_file"))]

        #[test]
        fn random_text_gives_an_error_not_a_panic(text in "\\PC{0,200}") {
            check(&text)?;
        }

        #[test]
        fn a_mangled_demo_file_gives_an_error_not_a_panic(text in mutated()) {
            check(&text)?;
        }
    }
}
