//! What the bench files share: the bare clock read every figure is divided by, and the chunked
//! timing loop that keeps rings from filling.
#![allow(dead_code)] // each bench file uses its own part

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use laptime::{CollectorHandle, Stage};

/// One TSC read, as bare as it gets: the baseline every figure is divided by.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Elsewhere the library's own tick stands in for the TSC (the figures then compare less).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn tsc() -> u64 {
    laptime::clock::ticks()
}

/// TSC ticks per nanosecond, measured against `Instant` over 20 ms.
pub fn tsc_per_ns() -> f64 {
    let (t0, i0) = (tsc(), Instant::now());
    std::thread::sleep(Duration::from_millis(20));
    let (t1, i1) = (tsc(), Instant::now());
    (t1 - t0) as f64 / (i1 - i0).as_nanos() as f64
}

/// Busy work: spins on the TSC for `ticks` from the moment it is called, so instrumentation
/// between stages adds to the tick instead of being absorbed by the spin.
#[inline(always)]
pub fn work(ticks: u64) {
    let start = tsc();
    while tsc().wrapping_sub(start) < ticks {}
}

/// Records written between two flushes: half the aggregator's per-ring batch, so one flush
/// empties the ring and a chunk never comes near filling it.
pub const CHUNK_RECORDS: u64 = 1 << 15;

/// Runs `body` `iters` times and returns the time spent in `body` only: iterations go in chunks
/// of at most [`CHUNK_RECORDS`] records, each chunk timed on its own, with an untimed flush after
/// it so no record is ever dropped for want of ring space.
pub fn timed_in_chunks(iters: u64, records_per_iter: u64, body: impl FnMut()) -> Duration {
    timed_in_chunks_then(iters, records_per_iter, body, |_| {
        assert!(laptime::flush(), "the aggregator answers a flush");
    })
}

/// [`timed_in_chunks`] with `empty(n)` run, untimed, after each chunk of `n` iterations.
pub fn timed_in_chunks_then(
    iters: u64,
    records_per_iter: u64,
    mut body: impl FnMut(),
    mut empty: impl FnMut(u64),
) -> Duration {
    let chunk = (CHUNK_RECORDS / records_per_iter).max(1);
    let mut timed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(chunk);
        let started = Instant::now();
        for _ in 0..n {
            body();
        }
        timed += started.elapsed();
        left -= n;
        empty(n);
    }
    timed
}

/// The CPU's model name, as `lscpu` prints it (`model name` in `/proc/cpuinfo`): every figure is
/// written down with its machine.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Times each of `paths` paths `rounds` times, interleaved (so a busy spell of the machine falls
/// on every path alike): `time(i)` runs path `i` `iters` times and returns how long it took.
/// Returns each path's median ns per iteration.
pub fn median_ns_per_iter(
    iters: u64,
    rounds: usize,
    paths: usize,
    mut time: impl FnMut(usize) -> Duration,
) -> Vec<f64> {
    let mut figures = vec![Vec::with_capacity(rounds); paths];
    for _ in 0..rounds {
        for (i, figure) in figures.iter_mut().enumerate() {
            figure.push(time(i).as_nanos() as f64 / iters as f64);
        }
    }
    figures
        .into_iter()
        .map(|mut f| {
            f.sort_by(f64::total_cmp);
            f[f.len() / 2]
        })
        .collect()
}

/// Prints `rows` (a path, its ns per operation) as a markdown table, each also as a ratio to
/// row `base`, under a line naming the CPU and the run.
pub fn print_ratio_table(run: &str, per: &str, rows: &[(&str, f64)], base: usize) {
    println!("CPU: {}; {run}", cpu_model());
    println!("| path | ns per {per} | x {} |", rows[base].0);
    println!("|---|---:|---:|");
    for (name, ns) in rows {
        println!("| {name} | {ns:.1} | {:.2} |", ns / rows[base].1);
    }
}

/// The process's collector, installed before anything records, with rings big enough that the
/// aggregator's default 10 ms interval never lets one fill between our flushes.
pub fn collector() -> &'static CollectorHandle {
    static HANDLE: OnceLock<CollectorHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        laptime::Collector::builder()
            .with_ring_capacity(1 << 20)
            .install()
            .expect("the bench installs the first and only collector of its process")
    })
}

/// `count` stages named `{prefix}_00`, `{prefix}_01`, …
pub fn stages(prefix: &str, count: usize) -> Vec<Stage> {
    (0..count)
        .map(|i| {
            let name: &'static str = Box::leak(format!("{prefix}_{i:02}").into_boxed_str());
            Stage::new(name).expect("valid bench stage name")
        })
        .collect()
}

/// The drain benches' load: values spread round-robin over stages, written as manual values or
/// as spans of the same stages.
pub struct DrainLoad {
    pub stages: Vec<Stage>,
    pub values: Vec<(Stage, Duration)>,
}

impl DrainLoad {
    /// `durations[i]` goes to stage `i % stages.len()`.
    pub fn new(stages: Vec<Stage>, durations: impl IntoIterator<Item = Duration>) -> Self {
        let values = durations
            .into_iter()
            .enumerate()
            .map(|(i, d)| (stages[i % stages.len()], d))
            .collect();
        DrainLoad { stages, values }
    }

    /// Every value, through `laptime::record`.
    pub fn write_values(&self) {
        for &(stage, d) in &self.values {
            laptime::record(stage, d);
        }
    }

    /// As many spans as values, over the same stages.
    pub fn write_spans(&self) {
        for i in 0..self.values.len() {
            let _g = laptime::start(self.stages[i % self.stages.len()]);
        }
    }

    /// Checks, before timing, that one flush after each kind of write drains every record of it,
    /// leaving none in the rings and dropping none.
    pub fn assert_one_flush_drains_all(&self) {
        let n = self.values.len() as u64;
        let check = |write: &dyn Fn()| {
            let before = laptime::health().expect("a collector is installed");
            write();
            assert!(laptime::flush(), "the aggregator answers a flush");
            let after = laptime::health().expect("a collector is installed");
            assert_eq!(after.records - before.records, n, "one cycle drains N");
            assert_eq!(
                (after.in_rings, after.dropped),
                (0, 0),
                "nothing left or lost"
            );
        };
        check(&|| self.write_values());
        check(&|| self.write_spans());
    }
}

/// `iters` times: `write` (untimed), then one `flush()`, timed; returns the flushes' total.
pub fn timed_flushes(iters: u64, write: &dyn Fn()) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..iters {
        write();
        let started = Instant::now();
        assert!(laptime::flush(), "the aggregator answers a flush");
        timed += started.elapsed();
    }
    timed
}
