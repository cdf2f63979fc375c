//! Nanoseconds per record through the `metrics` facade into laptime, beside laptime's own span
//! and value record and a bare TSC pair, all in one run (ratios; the CPU named).
//!
//! ```text
//! cargo run --release -p laptime-metrics --example ns_per_record [ITERATIONS]
//! ```
//!
//! Each figure is the median over 7 rounds of ITERATIONS (default 1 000 000) calls, timed in
//! chunks with an untimed flush between them so no ring ever fills (benches/common).

#[path = "../../../benches/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use laptime::Stage;
use laptime_metrics::LaptimeRecorder;

const ROUNDS: usize = 7;

fn main() {
    let iters: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    common::collector();
    let span_stage = Stage::new("npr_laptime_span").unwrap();
    let value_stage = Stage::new("npr_laptime_value").unwrap();
    let recorder = LaptimeRecorder::builder().build().unwrap();
    let tally = recorder.tally();
    metrics::set_global_recorder(recorder).expect("the first recorder");
    let cached = metrics::histogram!("npr_cached_seconds", "pair" => "BTC-USD");
    let value = Duration::from_micros(3);

    let variants: [(&str, &dyn Fn()); 5] = [
        ("TSC pair (bare clock reads)", &|| {
            black_box(common::tsc());
            black_box(common::tsc());
        }),
        ("laptime::start guard (a span)", &|| {
            let _g = laptime::start(span_stage);
        }),
        ("laptime::record (a value)", &|| {
            laptime::record(value_stage, value)
        }),
        ("metrics: cached Histogram::record", &|| cached.record(3e-6)),
        ("metrics: histogram!(.., \"pair\" => ..).record", &|| {
            metrics::histogram!("npr_macro_seconds", "pair" => "BTC-USD").record(3e-6)
        }),
    ];
    let medians = common::median_ns_per_iter(iters, ROUNDS, variants.len(), |i| {
        common::timed_in_chunks(iters, 1, variants[i].1)
    });
    let rows: Vec<(&str, f64)> = variants.iter().map(|v| v.0).zip(medians).collect();
    let run = format!("{iters} calls x {ROUNDS} rounds, medians");
    common::print_ratio_table(&run, "record", &rows, 1);
    laptime::flush();
    let recorded = laptime::get_stats("npr_macro_seconds", laptime::Window::Cumulative)
        .map_or(0, |s| s.count + s.dropped);
    assert_eq!(
        recorded,
        iters * ROUNDS as u64,
        "every macro record reached laptime"
    );
    assert_eq!(
        tally.counts(),
        Default::default(),
        "nothing refused or dropped"
    );
}
