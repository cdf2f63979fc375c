//! A driver for counting the aggregator's instructions per record under cachegrind, where the
//! wall clock of a shared 2-vCPU guest moves by up to 4× between runs of one binary.
//!
//! Installs a collector (with the Prometheus exporter or without), then `ROUNDS` times writes
//! 64 000 spans (or 64 000 values spread log-uniformly over 1 µs – 10 ms) round-robin over 64
//! stages and flushes. The difference between two round counts, divided by the records between
//! them, is the cost per record of writing it and aggregating it, setup excluded:
//!
//! ```text
//! cargo build --release --example drain_instructions --features prometheus
//! valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=/dev/null \
//!     target/release/examples/drain_instructions exporter spans 6    # then: ... spans 1
//! # (I refs at 6 rounds − I refs at 1 round) / (5 × 64 000)
//! ```
//!
//! It uses only API that predates the `Sink` seam, so the same file builds against an older
//! commit for a before/after (benches/README.md, "Drain in instructions").
use std::time::Duration;

use laptime::export::prometheus::PrometheusExporter;
use laptime::{Collector, Stage};

const RECORDS: usize = 64_000;
const STAGES: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: drain_instructions exporter|none spans|values ROUNDS";
    let (with, kind, rounds) = match args.as_slice() {
        [_, with, kind, rounds] => (with == "exporter", kind.as_str(), rounds.parse().ok()),
        _ => (false, "", None),
    };
    let Some(rounds) = rounds.filter(|_| matches!(kind, "spans" | "values")) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let stages: Vec<Stage> = (0..STAGES)
        .map(|i| Stage::new(Box::leak(format!("s_{i:02}").into_boxed_str())).unwrap())
        .collect();
    let values = durations();
    let mut builder = Collector::builder()
        .with_ring_capacity(1 << 20)
        .with_interval(Duration::from_secs(60));
    if with {
        builder = builder.with_prometheus(PrometheusExporter::builder().build().unwrap());
    }
    let _collector = builder.install().unwrap();
    for _ in 0..rounds {
        if kind == "spans" {
            for i in 0..RECORDS {
                let _span = laptime::start(stages[i % STAGES]);
            }
        } else {
            for (i, d) in values.iter().enumerate() {
                laptime::record(stages[i % STAGES], *d);
            }
        }
        assert!(laptime::flush(), "the aggregator answers");
    }
}

/// Log-uniform over 1 µs – 10 ms, from a fixed xorshift64*: the same values every run, and the
/// ones `benches/prometheus.rs` drains (its `durations(N, 99)`). Written out, not included from
/// there, so this one file builds against an older commit for a before/after.
fn durations() -> Vec<Duration> {
    let mut x = 99u64.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..RECORDS)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let u = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            Duration::from_nanos((1_000.0 * 1e4f64.powf(u)) as u64)
        })
        .collect()
}
