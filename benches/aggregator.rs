//! How fast does the aggregator drain records into 64 stage histograms, and how much memory do
//! those histograms hold?
//!
//! * `drain`: the bench thread writes `N` records spread over 64 stages (untimed), then times
//!   `laptime::flush()`, which runs one full aggregation cycle (drain, convert, record into the
//!   1 s / 5 s / 60 s windows and the cumulative histogram, publish a snapshot) and waits for it.
//!   Throughput is `N` elements, so criterion prints records/s. The collector's interval is 60 s
//!   and `N` is far below half a ring, so only our flushes run cycles.
//! * memory (printed before the benches, no timing): 64 stages fed a lognormal-ish latency
//!   distribution around 5 µs with a tail to 1 ms, then `Health::histogram_bytes`, beside the
//!   formula in `benches/README.md`. `LAPTIME_BENCH_STEADY=1` also feeds them every 250 ms for
//!   61 s, so every slice of every window holds data (the steady state; mostly sleeping).
//!
//! Every group also times a bare TSC pair and an `Instant` pair in the same run.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

use common::{DrainLoad, stages, timed_flushes, tsc};
use criterion::{Criterion, Throughput};
use laptime::{CollectorHandle, Stage, Window};

/// Stages per figure.
const STAGES: usize = 64;
/// Records per timed flush: 1 000 per stage. Below the aggregator's per-ring batch (65 536), so one
/// cycle drains them all, and far below half a ring, so no early wake-up runs a cycle for us.
const N: usize = 64_000;
/// Ring capacity, in records.
const RING: usize = 1 << 20;

fn collector() -> &'static CollectorHandle {
    static HANDLE: OnceLock<CollectorHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        laptime::Collector::builder()
            .with_ring_capacity(RING)
            .with_interval(Duration::from_secs(60))
            .install()
            .expect("the bench installs the first and only collector of its process")
    })
}

/// A deterministic latency source: lognormal around 5 µs (σ = 0.8 in log space), plus one value in
/// a thousand drawn log-uniformly from 100 µs to 1 ms; everything capped at 1 ms.
struct Latencies(u64);

impl Latencies {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// xorshift64*, as a float in (0, 1).
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn next_ns(&mut self) -> u64 {
        let ns = if self.uniform() < 0.001 {
            (100_000f64.ln() + self.uniform() * 10f64.ln()).exp()
        } else {
            // Box–Muller.
            let z = (-2.0 * self.uniform().ln()).sqrt()
                * (2.0 * std::f64::consts::PI * self.uniform()).cos();
            (5_000f64.ln() + 0.8 * z).exp()
        };
        (ns as u64).clamp(1, 1_000_000)
    }
}

/// The histogram chunk a value lands in: HdrHistogram's layout at 3 significant digits (2 048
/// sub-buckets, half of them per power of two above the first) and 256 counters per chunk, as
/// `src/aggregator/hist.rs` lays it out. Used only to predict `histogram_bytes`.
fn chunk_of(ns: u64) -> u64 {
    let bucket = 53 - (ns | 2047).leading_zeros();
    let index = ((u64::from(bucket) + 1) << 10) + (ns >> bucket) - 1024;
    index / 256
}

fn histogram_bytes() -> usize {
    assert!(laptime::flush(), "the aggregator answers a flush");
    laptime::health()
        .expect("a collector is installed")
        .histogram_bytes
}

/// Feeds each stage `per_stage` values, flushing every 16 stages so each cycle drains at most
/// 16 × `per_stage` records, and marks in `seen` the chunks each stage's values land in.
fn feed(stages: &[Stage], sources: &mut [Latencies], per_stage: usize, seen: &mut [Vec<bool>]) {
    for (i, (stage, source)) in stages.iter().zip(sources.iter_mut()).enumerate() {
        for _ in 0..per_stage {
            let ns = source.next_ns();
            seen[i][chunk_of(ns) as usize] = true;
            laptime::record(*stage, Duration::from_nanos(ns));
        }
        if i % 16 == 15 {
            assert!(laptime::flush(), "the aggregator answers a flush");
        }
    }
}

/// Bytes the chunk formula predicts for `chunks` chunks held by each of `hists_u32` window
/// histograms (u32 counters) and one cumulative histogram (u64 counters), directories aside.
fn predicted(chunks: usize, hists_u32: usize) -> usize {
    chunks * 256 * (8 + 4 * hists_u32)
}

/// Prints the memory figures: 64 stages, default windows (1 s/250 ms, 5 s/1 s, 60 s/5 s).
fn memory_report() {
    collector();
    let before = histogram_bytes();
    let stages = stages("mem_stage", STAGES);
    let mut sources: Vec<Latencies> = (0..STAGES as u64).map(Latencies::new).collect();
    let mut seen = vec![vec![false; 256]; STAGES];
    let per_stage = 2_500; // one 250 ms slice of a stage running at 10 000 events/s
    feed(&stages, &mut sources, per_stage, &mut seen);
    let burst = histogram_bytes() - before;
    for s in &stages {
        let st = laptime::get_stats(*s, Window::Cumulative).expect("fed above");
        assert_eq!(st.count, per_stage as u64, "{s}: every value recorded");
    }
    let chunks: usize = seen.iter().map(|c| c.iter().filter(|&&b| b).count()).sum();
    // One slice and the sum per window hold data, plus the cumulative histogram.
    let formula = predicted(chunks, 3 * 2);
    println!(
        "memory, 64 stages, one slice per window filled ({per_stage} values/stage): \
         histogram_bytes = {burst} B ({:.2} MiB); chunks touched = {chunks} \
         ({:.1} per stage); formula C*256*(8+4*6) = {formula} B; directories = {} B",
        burst as f64 / 1048576.0,
        chunks as f64 / STAGES as f64,
        burst as i64 - formula as i64,
    );

    if std::env::var_os("LAPTIME_BENCH_STEADY").is_some() {
        let started = Instant::now();
        let mut feeds = 1;
        while started.elapsed() < Duration::from_secs(61) {
            let next = started + Duration::from_millis(250) * feeds;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            feed(&stages, &mut sources, per_stage, &mut seen);
            feeds += 1;
        }
        let steady = histogram_bytes() - before;
        let union: usize = seen.iter().map(|c| c.iter().filter(|&&b| b).count()).sum();
        // Every slice of every window (4 + 5 + 12) and the three sums could hold every chunk.
        let bound = predicted(union, 4 + 5 + 12 + 3);
        println!(
            "memory, 64 stages, steady state after {feeds} feeds over {:.1} s: \
             histogram_bytes = {steady} B ({:.2} MiB); chunks touched (union) = {union} \
             ({:.1} per stage); bound C*256*(8+4*24) = {bound} B ({:.2} MiB)",
            started.elapsed().as_secs_f64(),
            steady as f64 / 1048576.0,
            union as f64 / STAGES as f64,
            bound as f64 / 1048576.0,
        );
    }
}

/// Drain rate into 64 stage histograms.
fn drain(c: &mut Criterion) {
    collector();
    let mut source = Latencies::new(99);
    let load = DrainLoad::new(
        stages("drain_stage", STAGES),
        (0..N).map(|_| Duration::from_nanos(source.next_ns())),
    );
    // Sanity: one flush drains all N records into the right stages, leaving nothing behind.
    load.assert_one_flush_drains_all();
    for s in &load.stages {
        let st = laptime::get_stats(*s, Window::S60).expect("fed above");
        assert_eq!(
            st.count,
            2 * (N / STAGES) as u64,
            "{s}: N/64 records per write"
        );
    }

    let mut g = c.benchmark_group("drain");
    g.bench_function("baseline/tsc_pair", |b| {
        b.iter(|| (black_box(tsc()), black_box(tsc())))
    });
    g.bench_function("baseline/instant_pair", |b| {
        b.iter(|| (black_box(Instant::now()), black_box(Instant::now())))
    });
    g.bench_function("cycle_empty", |b| {
        b.iter_custom(|iters| timed_flushes(iters, &|| ()))
    });
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("values_64_stages", |b| {
        b.iter_custom(|iters| timed_flushes(iters, &|| load.write_values()))
    });
    g.bench_function("spans_64_stages", |b| {
        b.iter_custom(|iters| timed_flushes(iters, &|| load.write_spans()))
    });
    g.finish();

    let h = laptime::health().expect("a collector is installed");
    println!(
        "laptime health: records {}, dropped {}, ring high water {} of {}, histogram bytes {}",
        h.records, h.dropped, h.ring_high_water, h.ring_capacity, h.histogram_bytes
    );
}

fn main() {
    memory_report();
    let mut c = Criterion::default().configure_from_args();
    drain(&mut c);
    c.final_summary();
}
