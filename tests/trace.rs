//! Golden traces under the mock clock: a tick's nested spans, offsets and durations exactly as the
//! clock was moved; slow ticks always kept; the golden interval; the sample rate with a fixed
//! seed; byte-identical files across runs and against the committed ones in `tests/golden/`
//! (regenerate with `LAPTIME_BLESS=1`, then review the diff); configuration errors; write errors.
#![cfg(all(feature = "trace", feature = "test-util"))]

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::{clock, install, serial};
use laptime::clock::MockClock;
use laptime::trace::{Reason, Trace, TraceConfig, TraceError};
use laptime::{Collector, CollectorBuilder, CollectorHandle, ConfigError, InstallErrorKind, Stage};

const US: Duration = Duration::from_micros(1);
const EXCHANGE: &[(&str, &str)] = &[("verb", "post"), ("api", "batch-orders")];

fn builder() -> CollectorBuilder {
    clock();
    // A long interval: cycles run on flush, on a half-full ring, and at stop.
    Collector::builder()
        .with_interval(Duration::from_secs(30))
        .with_ring_capacity(1 << 16)
}

/// A fresh, empty directory under cargo's scratch space for integration tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("trace-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&dir); // left by write_errors_are_counted_...
    dir
}

#[laptime::measure(name = "trace_quote")]
fn quote(clock: MockClock) {
    clock.advance(3 * US);
}

/// What the helper thread is asked to do while a tick runs.
enum Helper {
    Start,
    End,
}

/// One tick of the demo's shape, 215 µs on the mock clock:
///
/// ```text
/// tick_total                                  [0, 215]
///   stage_fetch_md                            [0, 100]   (2 000 µs when slow)
///   stage_spread                              [100, 130]
///   stage_guards                              [130, 150]
///   stage_emit                                [150, 215]
///     exchange_req{verb=post,api=batch-orders}  [160, 208]
///       trace_quote                               [165, 168]
/// ```
///
/// With a helper, another thread records `trace_other_thread` over [165, 208]: inside the tick in
/// time, but on another ring, so in no trace of this thread.
fn tick(clock: MockClock, slow: bool, helper: Option<&(mpsc::Sender<Helper>, mpsc::Receiver<()>)>) {
    let ask = |what: Helper| {
        if let Some((tx, done)) = helper {
            tx.send(what).expect("helper alive");
            done.recv().expect("helper answers");
        }
    };
    let mut lap = laptime::lap("tick_total");
    clock.advance(if slow { 2_000 * US } else { 100 * US });
    lap.split("stage_fetch_md");
    clock.advance(30 * US);
    lap.split("stage_spread");
    clock.advance(20 * US);
    lap.split("stage_guards");
    clock.advance(10 * US);
    {
        let exchange = Stage::with_labels("exchange_req", EXCHANGE).expect("valid stage");
        let _req = laptime::start(exchange);
        clock.advance(5 * US);
        ask(Helper::Start);
        quote(clock);
        clock.advance(40 * US);
        ask(Helper::End);
    }
    clock.advance(7 * US);
    lap.end_with("stage_emit");
}

/// Runs `ticks` ticks on a thread named `tick-loop` (slow where `slow(n)`), with the helper
/// thread when `helper`, flushing every 500 ticks so no ring fills.
fn run_ticks(ticks: u64, slow: impl Fn(u64) -> bool + Send + 'static, helper: bool) {
    let clock = clock();
    std::thread::Builder::new()
        .name("tick-loop".into())
        .spawn(move || {
            let helper = helper.then(|| {
                let (ask, asked) = mpsc::channel::<Helper>();
                let (answer, answered) = mpsc::channel::<()>();
                std::thread::Builder::new()
                    .name("helper".into())
                    .spawn(move || {
                        let mut span = None;
                        for what in asked {
                            match what {
                                Helper::Start => span = Some(laptime::start("trace_other_thread")),
                                Helper::End => drop(span.take()),
                            }
                            answer.send(()).expect("tick thread waits");
                        }
                    })
                    .expect("spawn helper");
                (ask, answered)
            });
            for n in 1..=ticks {
                tick(clock, slow(n), helper.as_ref());
                if n % 500 == 0 {
                    assert!(laptime::flush());
                }
            }
        })
        .expect("spawn tick loop")
        .join()
        .expect("tick loop ran");
}

fn golden_config(dir: &Path) -> TraceConfig {
    TraceConfig::new("tick_total")
        .with_sample_rate(0.0)
        .with_golden_interval(100)
        .with_output_dir(dir)
        .with_metadata("symbols", serde_json::json!(["BTCUSDT", "ETHUSDT"]))
        .with_metadata("parallel_symbols", serde_json::json!(10))
}

/// The golden scenario: 200 ticks with the helper thread, golden every 100; writes the golden
/// files and `chrome_trace.json` into `dir`. Returns the kept traces.
fn golden_run(dir: &Path) -> Vec<Trace> {
    let handle = install(builder().with_tracing(golden_config(dir)));
    run_ticks(200, |_| false, true);
    assert!(handle.flush());
    let traces = handle.traces();
    handle
        .write_chrome_trace(dir.join("chrome_trace.json"))
        .expect("write the chrome trace");
    let health = handle.health();
    assert_eq!((health.dropped, handle.trace_health().kept), (0, 2));
    drop(handle); // the writer thread has written every file once the handle is gone
    traces
}

type SpanRow = (
    &'static str,
    &'static [(&'static str, &'static str)],
    u64,
    u64,
    u32,
    Option<usize>,
);

fn rows(trace: &Trace) -> Vec<SpanRow> {
    trace
        .spans
        .iter()
        .map(|s| {
            (
                s.name,
                s.labels,
                s.start_ns,
                s.duration_ns,
                s.depth,
                s.parent,
            )
        })
        .collect()
}

#[test]
fn a_golden_trace_is_the_tick_exactly_as_the_clock_moved() {
    let _s = serial();
    let dir = scratch("exact");
    let traces = golden_run(&dir);

    let ticks: Vec<_> = traces.iter().map(|t| (t.tick, t.reason)).collect();
    assert_eq!(ticks, [(100, Reason::Golden), (200, Reason::Golden)]);
    let t = &traces[0];
    assert_eq!(
        (t.root, t.thread.as_str(), t.complete),
        ("tick_total", "tick-loop", true)
    );
    assert_eq!(t.duration_ns, 215_000);
    // Ticks run back to back from the install (the collector's epoch): tick 100 starts after 99.
    assert_eq!(t.start_ns, 99 * 215_000);
    assert_eq!(traces[1].start_ns, 199 * 215_000);
    let no_labels: &[(&str, &str)] = &[];
    assert_eq!(
        rows(t),
        [
            ("stage_fetch_md", no_labels, 0, 100_000, 1, None),
            ("stage_spread", no_labels, 100_000, 30_000, 1, None),
            ("stage_guards", no_labels, 130_000, 20_000, 1, None),
            ("stage_emit", no_labels, 150_000, 65_000, 1, None),
            ("exchange_req", EXCHANGE, 160_000, 48_000, 2, Some(3)),
            ("trace_quote", no_labels, 165_000, 3_000, 3, Some(4)),
        ],
        "the helper thread's trace_other_thread span is on another ring: not in this trace"
    );
    assert_eq!(rows(&traces[1]), rows(t));

    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("output dir exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "chrome_trace.json",
            "golden_trace_100.json",
            "golden_trace_200.json"
        ]
    );
    let golden = std::fs::read_to_string(dir.join("golden_trace_100.json")).unwrap();
    assert_eq!(
        golden,
        laptime::trace::golden_json(&traces[0], golden_config(&dir).metadata()),
        "the file is the golden form of the kept trace"
    );
    matches_committed(&dir.join("golden_trace_100.json"), "golden_trace_100.json");
    matches_committed(&dir.join("chrome_trace.json"), "chrome_trace.json");
}

/// Compares `file` byte for byte with `tests/golden/<name>`, or overwrites that with
/// `LAPTIME_BLESS=1`.
fn matches_committed(file: &Path, name: &str) {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let got = std::fs::read(file).expect("the run wrote it");
    if std::env::var_os("LAPTIME_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&committed, &got).expect("write the committed file");
        return;
    }
    let want = std::fs::read(&committed)
        .unwrap_or_else(|e| panic!("{}: {e} (LAPTIME_BLESS=1 writes it)", committed.display()));
    assert!(
        got == want,
        "{} differs from {}; if the change is intended, rerun with LAPTIME_BLESS=1 and review the diff",
        file.display(),
        committed.display()
    );
}

#[test]
fn the_chrome_trace_holds_complete_events_perfetto_reads() {
    let _s = serial();
    let dir = scratch("chrome");
    let traces = golden_run(&dir);
    let text = std::fs::read_to_string(dir.join("chrome_trace.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["displayTimeUnit"], "ns");
    let events = v["traceEvents"].as_array().expect("an event array");
    // Process and thread names, then per trace the root and its six spans.
    assert_eq!(events.len(), 2 + 2 * 7);
    assert_eq!(events[1]["args"]["name"], "tick-loop");
    let complete: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(complete.len(), 14);
    let root = complete[0];
    assert_eq!(root["name"], "tick_total");
    assert_eq!(root["ts"].as_f64(), Some((99 * 215_000) as f64 / 1e3));
    assert_eq!(root["dur"].as_f64(), Some(215.0));
    assert_eq!(
        (root["pid"].as_u64(), root["tid"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(root["args"]["reason"], "golden");
    let names: Vec<_> = complete[1..7]
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "stage_fetch_md",
            "stage_spread",
            "stage_guards",
            "stage_emit",
            "exchange_req{verb=post,api=batch-orders}",
            "trace_quote"
        ]
    );
    // The quote sits 165 µs into the tick, for 3 µs.
    assert_eq!(
        complete[6]["ts"].as_f64(),
        Some((99 * 215_000 + 165_000) as f64 / 1e3)
    );
    assert_eq!(complete[6]["dur"].as_f64(), Some(3.0));
    assert_eq!(text, laptime::trace::chrome_json(&traces));
}

#[test]
fn two_runs_write_byte_identical_files() {
    let _s = serial();
    let (a, b) = (scratch("run_a"), scratch("run_b"));
    let first = golden_run(&a);
    let second = golden_run(&b);
    assert_eq!(first, second);
    for name in [
        "golden_trace_100.json",
        "golden_trace_200.json",
        "chrome_trace.json",
    ] {
        let (x, y) = (
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
        );
        assert!(x == y, "{name} differs between two runs");
    }
}

/// Clears a stage's deadline when dropped: stage deadlines are process-wide, and a failed
/// assertion must not leave one behind for the next test of this process.
struct ClearDeadline(&'static str);

impl Drop for ClearDeadline {
    fn drop(&mut self) {
        // No panic here: this may run while a failed assertion unwinds.
        if let Ok(stage) = Stage::new(self.0) {
            let _ = stage.set_deadline(None);
        }
    }
}

#[test]
fn slow_ticks_are_always_kept_with_the_root_stages_own_deadline() {
    let _s = serial();
    // Declared before the handle, so dropped after it.
    let _clear = ClearDeadline("tick_total");
    let dir = scratch("slow");
    let handle = install(
        builder()
            .with_deadline("tick_total", Duration::from_millis(1))
            .with_tracing(
                TraceConfig::new("tick_total")
                    .with_sample_rate(0.0)
                    .with_golden_interval(100)
                    .with_output_dir(&dir),
            ),
    );
    // Tick 100 is both golden and slow: slow is the reason reported.
    run_ticks(300, |n| [7, 100, 299].contains(&n), false);
    assert!(handle.flush());
    let kept: Vec<_> = handle
        .traces()
        .iter()
        .map(|t| (t.tick, t.reason, t.duration_ns))
        .collect();
    assert_eq!(
        kept,
        [
            (7, Reason::Slow, 2_115_000),
            (100, Reason::Slow, 2_115_000),
            (200, Reason::Golden, 215_000),
            (299, Reason::Slow, 2_115_000),
            (300, Reason::Golden, 215_000),
        ]
    );
    drop(handle);
    for n in [7, 100, 200, 299, 300] {
        let text = std::fs::read_to_string(dir.join(format!("golden_trace_{n}.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["trace_id"], format!("tick_{n}"));
        assert_eq!(
            v["metadata"]["reason"],
            if n % 100 == 0 && n != 100 {
                "golden"
            } else {
                "slow"
            }
        );
    }
}

/// Two splits with no clock movement between them (under the mock clock, every time): the
/// zero-length one only touches its neighbours, so it is their sibling, in record order; a
/// zero-length guard strictly inside a split is its child; a guard spanning exactly a split's
/// interval is its child, as its record arrives first.
#[test]
fn zero_length_spans_that_touch_their_neighbours_are_siblings() {
    let _s = serial();
    let clock = clock();
    let handle = install(
        builder().with_tracing(
            TraceConfig::new("tick_total")
                .with_sample_rate(1.0)
                .with_golden(false),
        ),
    );
    let mut lap = laptime::lap("tick_total");
    lap.split("trace_zero_first");
    clock.advance(10 * US);
    lap.split("trace_zero_a");
    lap.split("trace_zero_mid");
    clock.advance(5 * US);
    {
        let _instant = laptime::start("trace_zero_instant");
    }
    clock.advance(5 * US);
    lap.split("trace_zero_b");
    {
        let _same = laptime::start("trace_zero_same");
        clock.advance(5 * US);
    }
    lap.split("trace_zero_c");
    lap.end_with("trace_zero_last");
    assert!(handle.flush());
    let traces = handle.traces();
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].duration_ns, 25_000);
    let none: &[(&str, &str)] = &[];
    assert_eq!(
        rows(&traces[0]),
        [
            ("trace_zero_first", none, 0, 0, 1, None),
            ("trace_zero_a", none, 0, 10_000, 1, None),
            ("trace_zero_mid", none, 10_000, 0, 1, None),
            ("trace_zero_b", none, 10_000, 10_000, 1, None),
            ("trace_zero_instant", none, 15_000, 0, 2, Some(3)),
            ("trace_zero_c", none, 20_000, 5_000, 1, None),
            ("trace_zero_same", none, 20_000, 5_000, 2, Some(5)),
            ("trace_zero_last", none, 25_000, 0, 1, None),
        ]
    );
}

#[test]
fn a_trace_deadline_overrides_the_roots_and_sampled_ticks_are_not_written() {
    let _s = serial();
    let dir = scratch("trace_deadline");
    let handle = install(
        builder().with_tracing(
            TraceConfig::new("tick_total")
                .with_sample_rate(1.0)
                .with_golden(false)
                .with_deadline(Duration::from_micros(500))
                .with_output_dir(&dir),
        ),
    );
    run_ticks(5, |n| n == 3, false);
    assert!(handle.flush());
    let kept: Vec<_> = handle.traces().iter().map(|t| (t.tick, t.reason)).collect();
    assert_eq!(
        kept,
        [
            (1, Reason::Sampled),
            (2, Reason::Sampled),
            (3, Reason::Slow),
            (4, Reason::Sampled),
            (5, Reason::Sampled),
        ]
    );
    drop(handle);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["golden_trace_3.json"]);
}

#[test]
fn golden_ticks_follow_the_interval_and_memory_keeps_the_latest() {
    let _s = serial();
    let handle = install(
        builder().with_tracing(
            TraceConfig::new("tick_total")
                .with_sample_rate(0.0)
                .with_golden_interval(7)
                .with_keep(3),
        ),
    );
    run_ticks(50, |_| false, false);
    assert!(handle.flush());
    let kept: Vec<_> = handle.traces().iter().map(|t| t.tick).collect();
    assert_eq!(kept, [35, 42, 49], "the latest three of 7, 14, …, 49");
    assert_eq!(handle.trace_health().kept, 7);
}

/// The ticks a run of `ticks` ticks keeps with sample rate `rate` and `seed`, nothing else kept.
fn sampled_ticks(ticks: u64, rate: f64, seed: u64) -> Vec<u64> {
    let handle = install(
        builder().with_tracing(
            TraceConfig::new("tick_total")
                .with_sample_rate(rate)
                .with_golden(false)
                .with_seed(seed)
                .with_keep(laptime::trace::MAX_KEEP),
        ),
    );
    run_ticks(ticks, |_| false, false);
    assert!(handle.flush());
    assert_eq!(handle.health().dropped, 0);
    let traces = handle.traces();
    assert!(traces.iter().all(|t| t.reason == Reason::Sampled));
    traces.iter().map(|t| t.tick).collect()
}

#[test]
fn the_sample_rate_is_honoured_and_the_seed_fixes_the_ticks() {
    let _s = serial();
    let n = 2_000;
    let first = sampled_ticks(n, 0.2, 42);
    let again = sampled_ticks(n, 0.2, 42);
    assert_eq!(first, again, "same seed, same ticks");
    // Binomial(2000, 0.2): mean 400, σ ≈ 17.9; ±5σ.
    assert!(
        (311..=489).contains(&first.len()),
        "kept {} of {n} at rate 0.2",
        first.len()
    );
    let other = sampled_ticks(n, 0.2, 43);
    assert_ne!(first, other, "another seed draws other ticks");
    assert_eq!(sampled_ticks(50, 1.0, 42), (1..=50).collect::<Vec<_>>());
    assert_eq!(sampled_ticks(50, 0.0, 42), Vec::<u64>::new());
}

#[test]
fn a_tick_with_more_spans_than_the_buffer_is_marked_incomplete() {
    let _s = serial();
    let handle = install(
        builder().with_tracing(
            TraceConfig::new("tick_total")
                .with_sample_rate(1.0)
                .with_max_spans(4),
        ),
    );
    run_ticks(1, |_| false, false);
    assert!(handle.flush());
    let traces = handle.traces();
    assert!(!traces[0].complete);
    // The six spans arrive quote, exchange_req, then the four splits: the last four stay.
    let names: Vec<_> = traces[0].spans.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "stage_fetch_md",
            "stage_spread",
            "stage_guards",
            "stage_emit"
        ]
    );
    assert_eq!(handle.trace_health().incomplete, 1);
}

#[test]
fn disabled_tracing_keeps_and_writes_nothing() {
    let _s = serial();
    let dir = scratch("disabled");
    let handle = install(
        builder().with_tracing(
            TraceConfig::new("tick_total")
                .with_enabled(false)
                .with_sample_rate(1.0)
                .with_output_dir(&dir),
        ),
    );
    run_ticks(100, |_| true, false);
    assert!(handle.flush());
    assert!(handle.traces().is_empty());
    assert_eq!(handle.trace_health().kept, 0);
    drop(handle);
    assert!(!dir.exists(), "not even the directory is created");
}

#[test]
fn write_errors_are_counted_and_the_aggregator_carries_on() {
    let _s = serial();
    let dir = scratch("errors");
    let handle = install(
        builder().with_tracing(
            TraceConfig::new("tick_total")
                .with_sample_rate(0.0)
                .with_golden_interval(1)
                .with_output_dir(&dir),
        ),
    );
    // A file where the directory was: the writer cannot recreate the directory.
    std::fs::remove_dir(&dir).expect("install created it, empty");
    std::fs::write(&dir, b"not a directory").expect("writable scratch space");
    run_ticks(3, |_| false, false);
    // The writer thread fails on its own schedule: flush until its count is published.
    let mut errors = 0;
    for _ in 0..500 {
        assert!(handle.flush());
        errors = handle.trace_health().write_errors;
        if errors == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(errors, 3);
    let traced = handle.trace_health();
    assert_eq!((traced.files_written, traced.kept), (0, 3));
    assert_eq!(handle.health().aggregator_restarts, 0);
    assert_eq!(handle.traces().len(), 3, "kept in memory all the same");
}

#[test]
fn invalid_settings_are_typed_errors_that_name_the_setting() {
    let _s = serial();
    let cases = [
        (
            TraceConfig::new("tick_total").with_sample_rate(1.5),
            "sample_rate",
            "use e.g. 0.2",
        ),
        (
            TraceConfig::new("tick_total").with_sample_rate(f64::NAN),
            "sample_rate",
            "[0, 1]",
        ),
        (
            TraceConfig::new("tick_total").with_golden_interval(0),
            "golden_interval",
            "at least 1",
        ),
        (
            TraceConfig::new("tick_total").with_deadline(Duration::ZERO),
            "deadline",
            "budget",
        ),
        (
            TraceConfig::new("tick_total").with_max_spans(0),
            "max_spans",
            "1..=",
        ),
        (
            TraceConfig::new("tick_total").with_keep(1 << 20),
            "keep",
            "keep fewer",
        ),
        (
            TraceConfig::new("tick_total").with_metadata("tick", serde_json::json!(1)),
            "metadata",
            "rename yours",
        ),
        (TraceConfig::new("tick total"), "root", "[A-Za-z0-9_.:/-]"),
    ];
    for (config, setting, hint) in cases {
        let err = builder()
            .with_tracing(config.clone())
            .validate()
            .unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, ConfigError::Sink(e) if matches!(
                e.downcast_ref::<TraceError>(),
                Some(TraceError::Setting { setting: s, .. }) if *s == setting
            )),
            "{config:?}: {err:?}"
        );
        assert!(
            message.contains(setting) && message.contains(hint),
            "{message}"
        );
        let refused = builder().with_tracing(config).install().unwrap_err();
        assert!(matches!(
            &refused.kind,
            InstallErrorKind::Config(ConfigError::Sink(e))
                if matches!(e.downcast_ref::<TraceError>(), Some(TraceError::Setting { .. }))
        ));
    }
}

#[test]
fn an_output_dir_that_cannot_be_created_fails_the_install() {
    let _s = serial();
    let base = scratch("not_a_dir");
    std::fs::create_dir_all(&base).unwrap();
    let file = base.join("file");
    std::fs::write(&file, "a file, not a directory").unwrap();
    let err = builder()
        .with_tracing(TraceConfig::new("tick_total").with_output_dir(file.join("traces")))
        .install()
        .unwrap_err();
    assert!(
        matches!(&err.kind, InstallErrorKind::Sink(e) if matches!(
            e.downcast_ref::<TraceError>(),
            Some(TraceError::OutputDir { dir, .. }) if *dir == file.join("traces")
        )),
        "{err}"
    );
    assert!(err.to_string().contains("with_output_dir"), "{err}");
    // Nothing was left running: another collector installs.
    let handle: CollectorHandle = install(builder());
    drop(handle);
}
