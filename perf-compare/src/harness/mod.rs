//! The workloads, what they measure, and the driver that runs each peer in its own process.
//!
//! A child (`perf-compare --peer NAME --json`) runs [`workloads::run`] and prints one JSON line,
//! a [`PeerRun`]; a second child (`--rss`) runs [`workloads::run_rss`], a [`RssRun`], so its peak
//! memory is that workload's alone. The parent ([`driver`]) runs both for every peer and prints
//! the [`table`].

pub mod alloc;
pub mod driver;
pub mod rss;
pub mod table;
pub mod workloads;

use serde::{Deserialize, Serialize};

/// Iteration counts: the full run, or `--quick` (CI: every path, tiny counts).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Calls per timed chunk; peers are flushed (untimed) between chunks.
    pub chunk: u64,
    /// Timed chunks per peer and per baseline, single thread.
    pub rounds_1: usize,
    /// Timed chunks per thread, per peer and per baseline, two threads.
    pub rounds_2: usize,
    /// Ticks per batch, and batches per peer and per bare tick.
    pub ticks: usize,
    pub tick_rounds: usize,
    /// Values recorded for the value-accuracy workload.
    pub values: usize,
    /// Spins for the spin-accuracy workload.
    pub spins: usize,
    /// Spans of the memory workload (flushed every `chunk`), then spans of one unflushed burst.
    pub rss_spans: u64,
    pub burst_spans: u64,
    /// Milliseconds of spans back to back, after the burst, without a flush: the sustained flood.
    pub flood_ms: u64,
}

impl Sizes {
    pub const FULL: Sizes = Sizes {
        chunk: 32_768,
        rounds_1: 25,
        rounds_2: 15,
        ticks: 500,
        tick_rounds: 15,
        values: 200_000,
        spins: 20_000,
        rss_spans: 10_000_000,
        burst_spans: 1_000_000,
        flood_ms: 2_000,
    };
    pub const QUICK: Sizes = Sizes {
        chunk: 1_024,
        rounds_1: 3,
        rounds_2: 2,
        ticks: 20,
        tick_rounds: 2,
        values: 2_000,
        spins: 200,
        rss_spans: 20_000,
        burst_spans: 5_000,
        flood_ms: 20,
    };
}

/// Per-call cost of one workload: the peer's ns per call over the timed chunks (median, min,
/// max) beside the TSC pair's, chunk for chunk in the same process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cost {
    pub median_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    pub tsc_median_ns: f64,
    /// `median_ns / tsc_median_ns`.
    pub ratio: f64,
}

/// The 4-stage tick with ~10 µs of work: per-tick medians, bare and instrumented.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tick {
    pub bare_ns: f64,
    pub peer_ns: f64,
    pub overhead_ns: f64,
    pub overhead_pct: f64,
}

/// Allocations per span of the single-thread span workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Allocs {
    /// On the calling thread, inside the timed chunks (the hot path).
    pub thread_per_span: f64,
    pub thread_bytes_per_span: f64,
    /// In the whole process, from the start of each chunk to the end of its flush (collectors,
    /// reporters, background threads included).
    pub process_per_span: f64,
}

/// One stage's samples: produced by the harness, reported by the library.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageCount {
    pub stage: String,
    pub produced: u64,
    /// `None`: the library cannot say how many it kept.
    pub reported: Option<u64>,
}

/// Reported percentiles against the exact (nearest-rank) ones of the same samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Accuracy {
    pub samples: usize,
    /// p50, p99, p99.9.
    pub exact_ns: [u64; 3],
    pub reported_ns: [Option<u64>; 3],
    /// `(reported − exact) / exact × 100`, signed.
    pub error_pct: [Option<f64>; 3],
}

/// What one `--peer NAME --json` child measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerRun {
    pub peer: String,
    pub quick: bool,
    pub clock: String,
    pub ticks_per_ns: f64,
    pub span_1: Cost,
    pub span_2: Cost,
    pub tick: Tick,
    pub allocs: Allocs,
    pub stages: Vec<StageCount>,
    /// Known values through `record_value`; `None` when the library takes no values.
    pub values: Option<Accuracy>,
    /// Spans around spins of drawn durations.
    pub spins: Accuracy,
    pub seconds: f64,
}

/// What one `--peer NAME --rss --json` child measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RssRun {
    pub peer: String,
    pub spans: u64,
    /// VmHWM after `setup`, and after the spans and a final flush.
    pub hwm_setup_kib: u64,
    pub hwm_kib: u64,
    pub reported: Option<u64>,
    /// One burst of spans without a flush between them, then one flush.
    pub burst_spans: u64,
    pub burst_reported: Option<u64>,
    /// Spans made back to back for `flood_ms` without a flush (the library drains, or not, on
    /// its own meanwhile), then one flush: how many it made, and how many it then reports.
    #[serde(default)]
    pub flood_spans: u64,
    #[serde(default)]
    pub flood_reported: Option<u64>,
    #[serde(default)]
    pub flood_seconds: f64,
    pub seconds: f64,
}

impl PeerRun {
    /// Samples kept over every stage the library can count, in % (the lowest stage's figure),
    /// and whether some stage could not be counted.
    pub fn kept_pct(&self) -> (Option<f64>, bool) {
        let mut lowest: Option<f64> = None;
        let mut unknown = false;
        for s in &self.stages {
            match s.reported {
                Some(r) if s.produced > 0 => {
                    let pct = 100.0 * r as f64 / s.produced as f64;
                    lowest = Some(lowest.map_or(pct, |l: f64| l.min(pct)));
                }
                Some(_) => {}
                None => unknown = true,
            }
        }
        (lowest, unknown)
    }
}
