//! The workloads, run in the child process of one peer. Every call goes through the peer's
//! function pointers, and every figure is taken beside the TSC-pair baseline (itself a `Peer`,
//! called the same way) in the same process, round for round, so a noisy neighbour on the shared
//! vCPUs weighs on both.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use super::{Accuracy, Allocs, Cost, PeerRun, RssRun, Sizes, StageCount, Tick, alloc, rss};
use crate::clock::{self, ticks, to_ns};
use crate::peer::{Peer, Reported};
use crate::peers::tsc_pair;

/// The tick's simulated work, stage by stage (10 µs in all).
const STAGE_WORK_NS: [u64; 4] = [3_000, 2_000, 2_000, 3_000];
const TICK_STAGES: [&str; 4] = ["fetch", "spread", "guards", "emit"];

fn work(stage: usize) {
    clock::spin_ns(STAGE_WORK_NS[stage]);
}

fn bare_tick(work: fn(usize)) {
    for i in 0..4 {
        work(i);
    }
}

/// Calls `f` `n` times through an opaque pointer; returns the ticks it took.
fn timed_chunk(f: fn(), n: u64) -> u64 {
    let f = black_box(f);
    let start = ticks();
    for _ in 0..n {
        f();
    }
    ticks() - start
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn cost(mut peer: Vec<f64>, mut base: Vec<f64>) -> Cost {
    let median_ns = median(&mut peer);
    let tsc_median_ns = median(&mut base);
    Cost {
        median_ns,
        min_ns: peer.first().copied().unwrap_or(f64::NAN),
        max_ns: peer.last().copied().unwrap_or(f64::NAN),
        tsc_median_ns,
        ratio: median_ns / tsc_median_ns,
    }
}

/// Produced samples per stage, as the harness counts them.
#[derive(Default)]
struct Produced {
    span: u64,
    ticks: u64,
    spins: u64,
    values: u64,
}

/// Everything but the memory workload, for one peer. `setup` has not run yet.
pub fn run(peer: &'static Peer, sizes: Sizes, quick: bool) -> PeerRun {
    let started = Instant::now();
    let ticks_per_ns = clock::ticks_per_ns();
    (peer.setup)();
    let mut produced = Produced::default();

    // Warm-up: first events create rings, thread-locals, registrations.
    timed_chunk(peer.empty_span, sizes.chunk);
    timed_chunk(tsc_pair::PEER.empty_span, sizes.chunk);
    produced.span += sizes.chunk;
    (peer.flush)();

    let (span_1, allocs) = span_one_thread(peer, sizes, &mut produced);
    let span_2 = span_two_threads(peer, sizes, &mut produced);
    let tick = tick(peer, sizes, &mut produced);
    let spins = spin_accuracy(peer, sizes, &mut produced);
    let values = value_accuracy(peer, sizes, &mut produced);

    (peer.flush)();
    let mut stages = vec![StageCount {
        stage: "span".into(),
        produced: produced.span,
        reported: (peer.report)("span").count,
    }];
    for s in TICK_STAGES {
        stages.push(StageCount {
            stage: s.into(),
            produced: produced.ticks,
            reported: (peer.report)(s).count,
        });
    }
    stages.push(StageCount {
        stage: "spin".into(),
        produced: produced.spins,
        reported: (peer.report)("spin").count,
    });
    if values.is_some() {
        stages.push(StageCount {
            stage: "value".into(),
            produced: produced.values,
            reported: (peer.report)("value").count,
        });
    }

    PeerRun {
        peer: peer.name.into(),
        quick,
        clock: clock::source().into(),
        ticks_per_ns,
        span_1,
        span_2,
        tick,
        allocs,
        stages,
        values,
        spins,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Per-span cost on one thread, and what the spans allocate.
fn span_one_thread(peer: &Peer, sizes: Sizes, produced: &mut Produced) -> (Cost, Allocs) {
    let n = sizes.chunk;
    let (mut peer_ns, mut base_ns) = (Vec::new(), Vec::new());
    let (mut thread_allocs, mut thread_bytes, mut process_allocs) = (0, 0, 0);
    for _ in 0..sizes.rounds_1 {
        base_ns.push(to_ns(timed_chunk(tsc_pair::PEER.empty_span, n)) / n as f64);
        let (a0, b0) = alloc::thread();
        let p0 = alloc::process();
        let t = timed_chunk(peer.empty_span, n);
        let (a1, b1) = alloc::thread();
        (peer.flush)();
        let p1 = alloc::process();
        peer_ns.push(to_ns(t) / n as f64);
        thread_allocs += a1 - a0;
        thread_bytes += b1 - b0;
        process_allocs += p1 - p0;
        produced.span += n;
    }
    let spans = (n * sizes.rounds_1 as u64) as f64;
    let allocs = Allocs {
        thread_per_span: thread_allocs as f64 / spans,
        thread_bytes_per_span: thread_bytes as f64 / spans,
        process_per_span: process_allocs as f64 / spans,
    };
    (cost(peer_ns, base_ns), allocs)
}

/// Per-span cost with two threads producing at once (each thread's chunk is one sample). The two
/// workers start every chunk together at a barrier; the main thread flushes while they wait.
fn span_two_threads(peer: &'static Peer, sizes: Sizes, produced: &mut Produced) -> Cost {
    let n = sizes.chunk;
    let go = Barrier::new(3);
    let results: Vec<(Vec<f64>, Vec<f64>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let go = &go;
                s.spawn(move || {
                    let (mut peer_ns, mut base_ns) = (Vec::new(), Vec::new());
                    // Round 0 warms this thread up (its ring, thread-locals); not kept.
                    for round in 0..=sizes.rounds_2 {
                        go.wait();
                        let b = to_ns(timed_chunk(tsc_pair::PEER.empty_span, n)) / n as f64;
                        go.wait();
                        let p = to_ns(timed_chunk(peer.empty_span, n)) / n as f64;
                        go.wait(); // the main thread flushes now
                        if round > 0 {
                            base_ns.push(b);
                            peer_ns.push(p);
                        }
                    }
                    (peer_ns, base_ns)
                })
            })
            .collect();
        for _ in 0..=sizes.rounds_2 {
            go.wait();
            go.wait();
            go.wait();
            (peer.flush)();
        }
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    produced.span += 2 * n * (sizes.rounds_2 as u64 + 1);
    let (mut peer_ns, mut base_ns) = (Vec::new(), Vec::new());
    for (p, b) in results {
        peer_ns.extend(p);
        base_ns.extend(b);
    }
    cost(peer_ns, base_ns)
}

/// Batches of ticks, bare and through the peer, alternating; each tick timed on its own.
fn tick(peer: &Peer, sizes: Sizes, produced: &mut Produced) -> Tick {
    let (mut bare, mut with_peer) = (Vec::new(), Vec::new());
    let batch = |f: fn(fn(usize)), out: &mut Vec<f64>| {
        let f = black_box(f);
        for _ in 0..sizes.ticks {
            let start = ticks();
            f(work);
            out.push(to_ns(ticks() - start));
        }
    };
    for _ in 0..sizes.tick_rounds {
        batch(bare_tick, &mut bare);
        batch(peer.tick, &mut with_peer);
        produced.ticks += sizes.ticks as u64;
        (peer.flush)();
    }
    let bare_ns = median(&mut bare);
    let peer_ns = median(&mut with_peer);
    Tick {
        bare_ns,
        peer_ns,
        overhead_ns: peer_ns - bare_ns,
        overhead_pct: 100.0 * (peer_ns - bare_ns) / bare_ns,
    }
}

/// A deterministic lognormal sampler (xorshift64* and Box–Muller): `median × e^(σ·N(0,1))`.
struct LogNormal {
    state: u64,
    median: f64,
    sigma: f64,
}

impl LogNormal {
    fn new(seed: u64, median: f64, sigma: f64) -> Self {
        LogNormal {
            state: seed | 1,
            median,
            sigma,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn draw(&mut self, lo: u64, hi: u64) -> u64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        ((self.median * (self.sigma * z).exp()) as u64).clamp(lo, hi)
    }
}

/// The exact nearest-rank p50 / p99 / p99.9 of `values` (sorted here), laptime's definition.
fn exact(values: &mut [u64]) -> [u64; 3] {
    values.sort_unstable();
    let n = values.len() as u64;
    [0.5, 0.99, 0.999].map(|q| values[(laptime::rank(q, n).max(1) - 1) as usize])
}

fn accuracy(samples: usize, exact_ns: [u64; 3], r: Reported) -> Accuracy {
    let reported_ns = [r.p50_ns, r.p99_ns, r.p999_ns];
    let mut error_pct = [None; 3];
    for i in 0..3 {
        error_pct[i] =
            reported_ns[i].map(|v| 100.0 * (v as f64 - exact_ns[i] as f64) / exact_ns[i] as f64);
    }
    Accuracy {
        samples,
        exact_ns,
        reported_ns,
        error_pct,
    }
}

/// Spans around spins of drawn lengths (lognormal, median 20 µs, σ 0.5, within 1 µs – 1 ms).
///
/// The reference of each span is how long its spin really took, read by the spin itself
/// ([`clock::last_spin_ns`]): that includes any time the scheduler took away inside the spin
/// (the library sees it too) and none of the library's own work before or after its clock reads
/// (which it does not time). What a library reports above it is its own cost inside the span:
/// about one clock read for a TSC-based span.
fn spin_accuracy(peer: &Peer, sizes: Sizes, produced: &mut Produced) -> Accuracy {
    let mut draw = LogNormal::new(0x5eed_0001, 20_000.0, 0.5);
    let spin_span = black_box(peer.spin_span);
    let mut spun = Vec::with_capacity(sizes.spins);
    for i in 0..sizes.spins {
        spin_span(draw.draw(1_000, 1_000_000));
        spun.push(clock::last_spin_ns());
        // Ring-buffered peers are drained now and then, untimed, as their aggregator would.
        if (i + 1) % 4_096 == 0 {
            (peer.flush)();
        }
    }
    produced.spins += sizes.spins as u64;
    (peer.flush)();
    accuracy(sizes.spins, exact(&mut spun), (peer.report)("spin"))
}

/// Known values (lognormal, median 5 µs, σ 1, within 100 ns – 10 s) through `record_value`,
/// when the peer takes values. The first call tells.
fn value_accuracy(peer: &Peer, sizes: Sizes, produced: &mut Produced) -> Option<Accuracy> {
    let mut draw = LogNormal::new(0x5eed_0002, 5_000.0, 1.0);
    let mut values: Vec<u64> = (0..sizes.values)
        .map(|_| draw.draw(100, 10_000_000_000))
        .collect();
    if !(peer.record_value)(values[0]) {
        return None;
    }
    for (i, &v) in values.iter().enumerate().skip(1) {
        (peer.record_value)(v);
        if (i + 1) % sizes.chunk as usize == 0 {
            (peer.flush)();
        }
    }
    produced.values += values.len() as u64;
    (peer.flush)();
    Some(accuracy(
        values.len(),
        exact(&mut values),
        (peer.report)("value"),
    ))
}

/// Spans back to back for `sizes.flood_ms`, in chunks between looks at the clock, with no flush:
/// how many were made, over how many seconds.
fn flood(peer: &Peer, sizes: Sizes) -> (u64, f64) {
    let started = Instant::now();
    let until = Duration::from_millis(sizes.flood_ms);
    let mut spans = 0;
    while started.elapsed() < until {
        timed_chunk(peer.empty_span, sizes.chunk);
        spans += sizes.chunk;
    }
    (spans, started.elapsed().as_secs_f64())
}

/// The memory workload, in a process of its own: `rss_spans` spans flushed every chunk, the peak
/// resident memory then, and afterwards one burst of `burst_spans` spans without a flush.
pub fn run_rss(peer: &'static Peer, sizes: Sizes) -> RssRun {
    let started = Instant::now();
    clock::ticks_per_ns();
    (peer.setup)();
    let hwm_setup_kib = rss::peak_kib();
    let mut left = sizes.rss_spans;
    while left > 0 {
        let n = left.min(sizes.chunk);
        timed_chunk(peer.empty_span, n);
        (peer.flush)();
        left -= n;
    }
    let hwm_kib = rss::peak_kib();
    let reported = (peer.report)("span").count;

    timed_chunk(peer.empty_span, sizes.burst_spans);
    (peer.flush)();
    let after_burst = (peer.report)("span").count;
    let burst_reported = after_burst
        .zip(reported)
        .map(|(after, before)| after.saturating_sub(before));
    let (flood_spans, flood_seconds) = flood(peer, sizes);
    (peer.flush)();
    let flood_reported = (peer.report)("span")
        .count
        .zip(after_burst)
        .map(|(after, before)| after.saturating_sub(before));
    RssRun {
        peer: peer.name.into(),
        spans: sizes.rss_spans,
        hwm_setup_kib,
        hwm_kib,
        reported,
        burst_spans: sizes.burst_spans,
        burst_reported,
        flood_spans,
        flood_reported,
        flood_seconds,
        seconds: started.elapsed().as_secs_f64(),
    }
}
