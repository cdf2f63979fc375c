//! laptime, the way its README shows it: a collector installed with rings sized for the
//! workloads, a guard span (`laptime::start`) per measured call, the split timer
//! (`laptime::lap` … `split` … `end_with`) for the tick's sequential stages, `laptime::record`
//! for known values, `laptime::flush` and cumulative `get_stats` for the report. Stages are
//! resolved once per call site with `laptime::stage!`, as `#[laptime::measure]` does.

use std::sync::OnceLock;
use std::time::Duration;

use laptime::{CollectorHandle, Window, stage};

use crate::peer::{Peer, Reported};

pub static PEER: Peer = Peer {
    name: "laptime",
    setup,
    empty_span,
    tick,
    spin_span,
    record_value,
    flush,
    report,
};

/// Records per thread ring: 4 chunks of the harness' 32 768 calls between two flushes (a tick
/// writes 5 records). 131 072 records × 32 B = 4 MiB per producing thread.
pub const RING_RECORDS: usize = 1 << 17;

/// Kept for the life of the process: dropping it would stop the aggregator.
static COLLECTOR: OnceLock<CollectorHandle> = OnceLock::new();

fn setup() {
    let handle = laptime::Collector::builder()
        .with_ring_capacity(RING_RECORDS)
        .install()
        .unwrap_or_else(|e| panic!("laptime collector: {e}"));
    let _ = COLLECTOR.set(handle);
}

fn empty_span() {
    let _span = laptime::start(stage!("span"));
}

fn tick(work: fn(usize)) {
    let mut lap = laptime::lap(stage!("tick"));
    work(0);
    lap.split(stage!("fetch"));
    work(1);
    lap.split(stage!("spread"));
    work(2);
    lap.split(stage!("guards"));
    work(3);
    lap.end_with(stage!("emit"));
}

fn spin_span(ns: u64) {
    let _span = laptime::start(stage!("spin"));
    crate::peer::spin(ns);
}

fn record_value(ns: u64) -> bool {
    laptime::record(stage!("value"), Duration::from_nanos(ns));
    true
}

fn flush() {
    assert!(laptime::flush(), "laptime's aggregator answers a flush");
}

fn report(stage: &str) -> Reported {
    let ns = |d: Duration| Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    match laptime::get_stats(stage, Window::Cumulative) {
        Some(s) => Reported {
            count: Some(s.count),
            p50_ns: ns(s.p50),
            p99_ns: ns(s.p99),
            p999_ns: ns(s.p999),
        },
        // No stats: nothing of this stage arrived (laptime can say that much).
        None => Reported {
            count: Some(0),
            ..Reported::default()
        },
    }
}
