//! A driver for timing the two queries issue 15 bounds at 20 000 series, `get_all_stats` and the
//! text exposition, without the load of `laptime-stress cardinality` around them: on a shared
//! 2-vCPU guest the stress run's figures mix the queries' own cost with the time they wait for a
//! CPU, and a profile of this program shows only the queries.
//!
//! 5 000 symbols × 4 families, each series given `VALUES` values over about four powers of two
//! (the stress run's shape after a few seconds), flushed; then `ROUNDS` times: one
//! `get_all_stats(Cumulative)` and one render, each timed. Between rounds, with `touch`, every
//! series records one more value (in a scattered order) and the collector flushes, so every
//! series changed since the last render (as at a scrape every 5 s under the stress run's load).
//! For instruction counts that the shared machine's clock cannot blur:
//! `valgrind --tool=callgrind --toggle-collect='*PrometheusExporter::render' … 3` (minus the same
//! with 1 round, halved: the first render also builds every series' labels).
//!
//! ```text
//! cargo build --release --example query_timing --features prometheus
//! target/release/examples/query_timing 20 touch
//! ```
use std::time::{Duration, Instant};

use laptime::export::prometheus::PrometheusExporter;
use laptime::{Collector, Family, FamilyOptions, Window};

const SYMBOLS: usize = 5_000;
const FAMILIES: [&str; 4] = ["md_decode", "risk_check", "order_route", "order_ack"];
/// Enough that a series' cumulative histogram has turned dense, as after a few seconds of the
/// stress run.
const VALUES: u64 = 150;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10);
    let touch = args.get(2).is_some_and(|a| a == "touch");
    let exporter = PrometheusExporter::builder().build().expect("an exporter");
    let handle = Collector::builder()
        .with_prometheus(exporter.clone())
        .install()
        .expect("a collector");
    let series = declare();
    for (i, s) in series.iter().enumerate() {
        for v in 0..VALUES {
            laptime::record(*s, value(i as u64, v));
        }
    }
    assert!(handle.flush());
    let (mut all, mut render) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if touch {
            // In a scattered order, as records from many symbols reach the aggregator: series
            // in id order would find each other's state already in cache.
            for k in 0..series.len() {
                let i = k * 7_919 % series.len();
                laptime::record(series[i], value(i as u64, round as u64 + VALUES));
            }
            assert!(handle.flush());
        }
        let t = Instant::now();
        let stats = handle.get_all_stats(Window::Cumulative);
        all.push(t.elapsed());
        assert_eq!(stats.len(), SYMBOLS * FAMILIES.len() + FAMILIES.len());
        drop(stats);
        let t = Instant::now();
        let text = exporter.render().expect("a render");
        render.push(t.elapsed());
        assert!(text.len() > 1_000_000);
    }
    println!("get_all_stats {}", summary(&mut all));
    println!("render        {}", summary(&mut render));
}

fn declare() -> Vec<laptime::Stage> {
    let mut options = FamilyOptions::default();
    options.max_series = SYMBOLS;
    let mut series = Vec::new();
    for name in FAMILIES {
        let family = Family::with_options(name, &["pair"], options).expect("a family");
        for i in 0..SYMBOLS {
            let symbol = format!("S{i:05}-USD");
            series.push(family.series(&[symbol.as_str()]).expect("under the cap"));
        }
    }
    series
}

/// Values from 2 µs to about 40 µs, varied by series and index.
fn value(series: u64, v: u64) -> Duration {
    Duration::from_nanos(2_000 + (series * 7_919 + v * 104_729) % 38_000)
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "min {:.2} ms, median {:.2} ms, max {:.2} ms over {}",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    )
}
