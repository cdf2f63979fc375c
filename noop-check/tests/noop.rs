//! laptime's whole API, built without the `enable` feature: it compiles, runs, and records
//! nothing. No stage is registered by the macros, no collector thread starts, nothing allocates
//! on the recording paths, and every query comes back empty.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use laptime::{Collector, Stage, StageEnum, Window};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` unchanged; counting has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (we allocate only through it).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[laptime::measure(
    name = "noop_spread",
    deadline = "1ms",
    sample = 0.5,
    labels(side = "bid")
)]
fn spread(mid: f64) -> f64 {
    mid * 0.001
}

#[laptime::measure(outcome)]
fn parse(text: &str) -> Result<u32, std::num::ParseIntError> {
    text.parse()
}

#[laptime::measure]
async fn fetch() -> u32 {
    4
}

struct Quoter;

#[laptime::measure_all]
impl Quoter {
    fn quote(&self) -> u32 {
        1
    }

    #[laptime::skip]
    fn skipped(&self) -> u32 {
        2
    }
}

#[derive(Debug, Clone, Copy, laptime::Stage)]
enum EventId {
    CandleProcessing,
    #[stage(name = "tick_total")]
    Tick,
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

/// Every recording entry point, as instrumented code would call them.
fn hot_path() -> u32 {
    let mut lap = laptime::lap("noop_tick");
    lap.split("noop_fetch");
    let v = laptime::measure_block!("noop_block", { spread(100.0) as u32 });
    let w = laptime::measure_block!("noop_outcome", outcome, { parse("3") });
    let _span = laptime::start(EventId::CandleProcessing);
    let token = laptime::record_start("noop_token");
    laptime::record_end(token);
    laptime::record("noop_value", Duration::from_micros(5));
    laptime::start("noop_cancelled").cancel();
    let tripped = laptime::record_trip_if(true, "noop_vol_hard");
    lap.end_with("noop_emit");
    v + w.unwrap_or(0) + Quoter.quote() + Quoter.skipped() + u32::from(tripped)
}

#[test]
fn the_whole_api_builds_runs_and_records_nothing() {
    assert!(
        !std::hint::black_box(laptime::COMPILED_IN),
        "laptime was built with `enable`: features unify across one cargo build, so run this \
         crate on its own: cargo test -p laptime-noop-check"
    );
    let threads_before = threads();
    let handle = Collector::builder()
        .with_interval(Duration::from_millis(1))
        .with_deadline("noop_tick", Duration::from_millis(1))
        .with_expected_interval("noop_tick", Duration::from_micros(100))
        .with_tracing(
            laptime::trace::TraceConfig::new("noop_tick")
                .with_sample_rate(1.0)
                .with_output_dir(std::env::temp_dir().join("laptime-noop-check-traces")),
        )
        .install()
        .expect("the configuration is still validated");
    assert!(
        Collector::builder()
            .with_sampling_rate(2.0)
            .install()
            .is_err(),
        "bad configuration is still refused"
    );

    // Warm once (the registry and thread-locals of std itself may allocate), then count.
    let first = hot_path();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut sum = 0;
    for _ in 0..1000 {
        sum += hot_path();
        laptime::set_enabled(true);
        laptime::set_sampling_rate(1.0).unwrap();
    }
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(sum, first * 1000, "the instrumented code still computes");
    assert_eq!(allocated, 0, "recording paths allocated");

    // The async fn still runs: poll it by hand.
    let mut fut = std::pin::pin!(fetch());
    let poll = fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    assert_eq!(poll, std::task::Poll::Ready(4));

    assert!(!handle.flush(), "there is no aggregator to flush");
    assert!(!laptime::flush());
    assert_eq!(
        threads(),
        threads_before,
        "no aggregator thread was started"
    );
    assert!(laptime::get_stats("noop_tick", Window::S1).is_none());
    assert!(laptime::get_stats(EventId::Tick, Window::Cumulative).is_none());
    assert!(laptime::get_all_stats(Window::Cumulative).is_empty());
    assert!(laptime::health().is_none());
    assert!(laptime::snapshot().is_none());
    assert!(laptime::check_sla_violations(Window::S1).is_empty());
    assert!(laptime::trip_counts(Window::Cumulative).is_empty());
    assert!(handle.get_all_stats(Window::Cumulative).is_empty());
    assert_eq!(handle.health().records, 0);
    assert!(!laptime::start("noop_probe").is_recording());
    assert!(handle.traces().is_empty(), "no tick was traced");
    assert!(
        matches!(
            handle.profile("noop"),
            Err(laptime::profile::ProfileError::Collector { .. })
        ),
        "there is no aggregator to take a profile from"
    );

    // The macros left their functions as written: none registered a stage.
    for (name, labels) in [
        ("noop_spread", &[("side", "bid")][..]),
        ("noop_check::parse", &[("outcome", "ok")][..]),
        ("noop::parse", &[("outcome", "ok")][..]),
        ("noop::Quoter::quote", &[][..]),
        ("noop_block", &[][..]),
    ] {
        assert!(
            Stage::lookup(name, labels).is_none(),
            "{name} was registered"
        );
    }
    // Derived stage enums still name their stages, for code that walks them.
    let names: Vec<_> = EventId::ALL.iter().map(|e| e.stage_name()).collect();
    assert_eq!(names, ["candle_processing", "tick_total"]);
    drop(handle);
}
