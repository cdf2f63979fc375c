//! Nanoseconds per `tracing` span timed into laptime by the layer, beside the same span with the
//! registry alone, laptime's own span and a bare TSC pair, all in one run (ratios; the CPU
//! named).
//!
//! ```text
//! cargo run --release -p laptime-tracing --example ns_per_span [ITERATIONS]
//! ```
//!
//! A span here is `info_span!(..).entered()` dropped at once: created, entered, exited, closed.
//! Each figure is the median over 7 rounds of ITERATIONS (default 500 000) spans, timed in chunks
//! with an untimed flush between them so no ring ever fills (benches/common).

#[path = "../../../benches/common/mod.rs"]
mod common;

use std::hint::black_box;

use laptime::Stage;
use laptime_tracing::{LaptimeLayer, SpanTime};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

const ROUNDS: usize = 7;

/// A path timed: its name, the dispatcher it runs under (none: laptime alone), its body.
type Variant<'a> = (&'a str, Option<&'a Dispatch>, &'a dyn Fn());

fn layer(time: SpanTime) -> LaptimeLayer {
    LaptimeLayer::builder()
        .with_time(time)
        .with_label_field("pair")
        .build()
        .unwrap()
}

fn main() {
    let iters: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    common::collector();
    let span_stage = Stage::new("nps_laptime_span").unwrap();
    let plain = || {
        let _e = tracing::info_span!("nps_span").entered();
    };
    let labelled = || {
        let _e = tracing::info_span!("nps_labelled", pair = "BTC-USD").entered();
    };
    let none = Dispatch::new(tracing_subscriber::registry());
    let wall = Dispatch::new(tracing_subscriber::registry().with(layer(SpanTime::Wall)));
    let busy = Dispatch::new(tracing_subscriber::registry().with(layer(SpanTime::Busy)));
    let tsc = || {
        black_box(common::tsc());
        black_box(common::tsc());
    };
    let own = || {
        let _g = laptime::start(span_stage);
    };
    let variants: [Variant<'_>; 6] = [
        ("TSC pair (bare clock reads)", None, &tsc),
        ("laptime::start guard (a span)", None, &own),
        (
            "tracing span, registry alone (no layer)",
            Some(&none),
            &plain,
        ),
        ("tracing span + layer, wall time", Some(&wall), &plain),
        ("tracing span + layer, busy time", Some(&busy), &plain),
        (
            "tracing span + layer, busy time, a label field",
            Some(&busy),
            &labelled,
        ),
    ];
    let medians = common::median_ns_per_iter(iters, ROUNDS, variants.len(), |i| {
        let (_, dispatch, body) = variants[i];
        let run = || common::timed_in_chunks(iters, 1, body);
        match dispatch {
            Some(d) => tracing::dispatcher::with_default(d, run),
            None => run(),
        }
    });
    let rows: Vec<(&str, f64)> = variants.iter().map(|v| v.0).zip(medians).collect();
    let run = format!("{iters} spans x {ROUNDS} rounds, medians");
    common::print_ratio_table(&run, "span", &rows, 1);
    laptime::flush();
    let count = |name| {
        laptime::get_stats(name, laptime::Window::Cumulative).map_or(0, |s| s.count + s.dropped)
    };
    let n = iters * ROUNDS as u64;
    assert_eq!(
        count("nps_span"),
        2 * n,
        "every span reached laptime (wall and busy)"
    );
    assert_eq!(count("nps_labelled"), n);
}
