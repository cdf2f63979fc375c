//! Does tracing slow the tick down? The seed's budget: trace sampling at 0.2 may add at most 3 % to
//! the demo's tick time.
//!
//! The tick is the demo's shape: a 4-stage lap (fetch 8 µs, spread 3 µs, guards 2 µs, emit 7 µs of
//! spinning on the TSC) with one `exchange_req` span of 4 µs nested in emit, about 20 µs in all and
//! 6 records. The aggregator runs on its own schedule (10 ms interval, early when a ring is half
//! full) and drains while the ticks run: tracing adds no instruction to the hot path, so whatever
//! it costs the tick comes from the aggregator's extra work competing for the two vCPUs and their
//! caches. Only one collector can be installed at a time, so the variants take turns: install,
//! time, drop, install the next.
//!
//! * `tick`: criterion's figure per variant, each tick timed on its own with a TSC pair and the
//!   sample's *median* tick reported (a preempted tick costs milliseconds on these shared cores and
//!   would swamp a 3 % question in any mean). Variants: `off` (no tracing), `sampled_0.2`
//!   (`TraceConfig` at the seed's settings: rate 0.2, golden every 100 ticks, 2 ms deadline, kept
//!   in memory), `sampled_0.2_files` (the same, writing golden and slow traces to a directory).
//! * `ab`: printed before criterion runs, the same run's A/B: rounds of 4 000 ticks per variant, the
//!   variants' order alternating round by round; per variant the median over rounds of each
//!   round's median tick, and of each round's mean tick (the mean keeps what preemption added,
//!   by the aggregator or anything else on the machine).
//! * `drain`: the aggregator's own cost: 2 000 ticks written (untimed), then one `flush()` timed,
//!   without tracing, at the seed's rate 0.2, and with every tick kept (rate 1, the worst case).
//!
//! Figures, machine and commands: `benches/README.md`, "Tracing".

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;

use common::{tsc, tsc_per_ns, work};
use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use laptime::trace::TraceConfig;
use laptime::{Collector, CollectorHandle, Stage};

/// The aggregator's default interval: it drains on its own while the ticks run.
const INTERVAL: Duration = Duration::from_millis(10);
const EXCHANGE: &[(&str, &str)] = &[("verb", "post"), ("api", "batch-orders")];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Off,
    Sampled,
    SampledFiles,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Off, Variant::Sampled, Variant::SampledFiles];

    fn name(self) -> &'static str {
        match self {
            Variant::Off => "off",
            Variant::Sampled => "sampled_0.2",
            Variant::SampledFiles => "sampled_0.2_files",
        }
    }

    /// The seed's trace settings (`trace.sample_rate` 0.2, `golden_trace_interval` 100), with
    /// the demo's 2 ms deadline (the seed's 200 ms scaled to its shorter ticks).
    fn install(self, rate: f64, interval: Duration) -> CollectorHandle {
        let builder = Collector::builder()
            .with_ring_capacity(1 << 16)
            .with_interval(interval);
        let trace = TraceConfig::new("bench_trace_total")
            .with_sample_rate(rate)
            .with_golden_interval(100)
            .with_deadline(Duration::from_millis(2));
        let builder = match self {
            Variant::Off => builder,
            Variant::Sampled => builder.with_tracing(trace),
            Variant::SampledFiles => builder.with_tracing(trace.with_output_dir(out_dir())),
        };
        builder
            .install()
            .expect("the bench installs one collector at a time")
    }
}

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-traces")
}

/// The demo's tick, with each stage's spin in TSC ticks.
#[derive(Clone, Copy)]
struct Tick {
    us: f64,
    exchange: Stage,
}

impl Tick {
    fn new(tsc_per_ns: f64) -> Self {
        Tick {
            us: 1_000.0 * tsc_per_ns,
            exchange: Stage::with_labels("bench_trace_exchange_req", EXCHANGE)
                .expect("valid stage"),
        }
    }

    fn spin(&self, us: f64) {
        work((us * self.us) as u64);
    }

    #[inline(never)]
    fn run(&self) {
        let mut lap = laptime::lap("bench_trace_total");
        self.spin(8.0);
        lap.split("bench_trace_fetch_md");
        self.spin(3.0);
        lap.split("bench_trace_spread");
        self.spin(2.0);
        lap.split("bench_trace_guards");
        self.spin(1.5);
        {
            let _req = laptime::start(black_box(self.exchange));
            self.spin(4.0);
        }
        self.spin(1.5);
        lap.end_with("bench_trace_emit");
    }
}

/// Runs `n` ticks, each timed with a TSC pair, and returns each tick's time in TSC ticks.
fn tick_times(tick: &Tick, n: u64) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let started = tsc();
            tick.run();
            tsc().wrapping_sub(started)
        })
        .collect()
}

fn median(values: &mut [u64]) -> u64 {
    let middle = values.len() / 2;
    *values.select_nth_unstable(middle).1
}

/// The median tick of `n` ticks, in TSC ticks.
fn median_tick(tick: &Tick, n: u64) -> u64 {
    median(&mut tick_times(tick, n))
}

/// Checks before timing that the variant does what it says: every tick arrives, none is dropped,
/// and with tracing about a fifth of the ticks is kept, each with its five spans nested right.
fn sanity(handle: &CollectorHandle, variant: Variant, tick: &Tick) {
    let before = handle.health();
    let kept_before = handle.trace_health().kept;
    for _ in 0..2_000 {
        tick.run();
    }
    assert!(handle.flush());
    let h = handle.health();
    assert_eq!(h.dropped, 0, "no record dropped");
    assert_eq!(
        h.records - before.records,
        2_000 * 6,
        "every record drained"
    );
    let kept = handle.trace_health().kept - kept_before;
    if variant == Variant::Off {
        assert_eq!(kept, 0);
        return;
    }
    // Binomial(2000, 0.2) ± 6σ, plus 20 golden and the odd slow (preempted) tick.
    assert!((300..=550).contains(&kept), "{kept} of 2000 ticks kept");
    let last = handle.traces().pop().expect("traces kept");
    let shape: Vec<_> = last.spans.iter().map(|s| (s.name, s.depth)).collect();
    assert_eq!(
        shape,
        [
            ("bench_trace_fetch_md", 1),
            ("bench_trace_spread", 1),
            ("bench_trace_guards", 1),
            ("bench_trace_emit", 1),
            ("bench_trace_exchange_req", 2)
        ]
    );
}

/// The same run's A/B, printed: rounds of 4 000 ticks per variant in alternating order.
fn ab(tick: &Tick, tsc_per_ns: f64) {
    const ROUNDS: usize = 20;
    const TICKS: u64 = 4_000;
    // Per variant and round: the median tick, and the mean (which also holds what preemption by
    // the aggregator, or anything else on the machine, added).
    let mut medians: [Vec<u64>; 3] = Default::default();
    let mut means: [Vec<u64>; 3] = Default::default();
    for round in 0..ROUNDS {
        let mut order = Variant::ALL;
        if round % 2 == 1 {
            order.reverse();
        }
        for v in order {
            let handle = v.install(0.2, INTERVAL);
            median_tick(tick, 500); // warm: the thread's ring, the caches
            let mut times = tick_times(tick, TICKS);
            means[v as usize].push(times.iter().sum::<u64>() / TICKS);
            medians[v as usize].push(median(&mut times));
            assert_eq!(handle.health().dropped, 0);
        }
    }
    for (what, figures) in [("median", &mut medians), ("mean", &mut means)] {
        let mut ns = |v: Variant| median(&mut figures[v as usize]) as f64 / tsc_per_ns;
        let off = ns(Variant::Off);
        println!(
            "tracing ab: median over {ROUNDS} rounds of each round's {what} tick ({TICKS} ticks): off {off:.0} ns"
        );
        for v in [Variant::Sampled, Variant::SampledFiles] {
            let on = ns(v);
            println!(
                "tracing ab: {what} {} {on:.0} ns = {:+.2} % vs off",
                v.name(),
                (on / off - 1.0) * 100.0
            );
        }
    }
}

fn baselines(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.bench_function("baseline/tsc_pair", |b| {
        b.iter(|| (black_box(tsc()), black_box(tsc())))
    });
}

fn ticks(c: &mut Criterion, tick: Tick, tsc_per_ns: f64) {
    let mut g = c.benchmark_group("tick");
    baselines(&mut g);
    for v in Variant::ALL {
        let handle = v.install(0.2, INTERVAL);
        sanity(&handle, v, &tick);
        g.bench_function(format!("demo_20us/{}", v.name()), |b| {
            b.iter_custom(|iters| {
                let median = median_tick(&tick, iters);
                Duration::from_secs_f64(median as f64 / tsc_per_ns * 1e-9 * iters as f64)
            })
        });
        drop(handle);
    }
    g.finish();
}

fn drain(c: &mut Criterion, tick: Tick) {
    // The records are what matters here, not the work between them.
    let tick = Tick { us: 0.0, ..tick };
    const TICKS: u64 = 2_000;
    let mut g = c.benchmark_group("drain");
    g.throughput(Throughput::Elements(TICKS * 6));
    for (name, variant, rate) in [
        ("off", Variant::Off, 1.0),
        ("sampled_0.2", Variant::Sampled, 0.2),
        ("every_tick_traced", Variant::Sampled, 1.0),
    ] {
        // Only the timed flush runs a cycle: a 60 s interval, and 12 000 records stay below half
        // a ring, so no early wake-up.
        let handle = variant.install(rate, Duration::from_secs(60));
        g.bench_function(format!("ticks_2000/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    assert!(handle.flush());
                    for _ in 0..TICKS {
                        tick.run();
                    }
                    let started = Instant::now();
                    assert!(handle.flush());
                    timed += started.elapsed();
                }
                timed
            })
        });
        assert_eq!(handle.health().dropped, 0);
        drop(handle);
    }
    g.finish();
}

fn main() {
    let _ = std::fs::remove_dir_all(out_dir());
    let rate = tsc_per_ns();
    let tick = Tick::new(rate);
    ab(&tick, rate);
    let mut c = Criterion::default().configure_from_args();
    ticks(&mut c, tick, rate);
    drain(&mut c, tick);
    c.final_summary();
    let _ = std::fs::remove_dir_all(out_dir());
}
