//! What does measuring cost on the hot path, next to the price of reading the clock?
//!
//! Every group times, in the same run, a bare TSC pair (`_rdtsc` twice) and a `std::time::Instant`
//! pair, so each figure can be read as a ratio to the clock on this machine at this moment (the
//! two vCPUs are shared and noisy; absolute nanoseconds drift between runs, ratios much less).
//! Results, machine and commands: `benches/README.md`.
//!
//! Benches that write records run their iterations in chunks and drain the rings between chunks
//! (untimed), so the ring never fills and the figure is the cost of a record that is kept. Before
//! each is timed, a sanity check proves the path really records (or really records nothing).

use std::hint::black_box;
use std::time::{Duration, Instant};

mod common;

use common::{
    CHUNK_RECORDS, collector, timed_in_chunks, timed_in_chunks_then, tsc, tsc_per_ns, work,
};
use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use laptime::{Stage, Window};

fn stats(stage: Stage) -> Option<laptime::StageStats> {
    laptime::get_stats(stage, Window::Cumulative)
}

fn count(stage: Stage) -> u64 {
    stats(stage).map_or(0, |s| s.count)
}

/// Runs `run` (which should record `expect` spans of `stage`), flushes, and panics unless the
/// stage's cumulative count grew by exactly `expect`.
fn assert_records(stage: Stage, expect: u64, run: impl FnOnce()) {
    let before = count(stage);
    run();
    assert!(laptime::flush(), "the aggregator answers a flush");
    let after = count(stage);
    assert_eq!(
        after - before,
        expect,
        "{stage}: {expect} spans should have been recorded"
    );
}

fn stage(name: &'static str) -> Stage {
    Stage::new(name).expect("valid bench stage name")
}

/// The two clock baselines, first in every group.
fn baselines(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.bench_function("baseline/tsc_pair", |b| {
        b.iter(|| (black_box(tsc()), black_box(tsc())))
    });
    g.bench_function("baseline/instant_pair", |b| {
        b.iter(|| (black_box(Instant::now()), black_box(Instant::now())))
    });
}

/// A guard span: `let _g = laptime::start(stage)` with a resolved `Stage` and with a literal name.
fn span(c: &mut Criterion) {
    collector();
    let resolved = stage("bench_guard_stage");
    let literal = stage("bench_guard_str");
    assert_records(resolved, 100, || {
        for _ in 0..100 {
            let _g = laptime::start(resolved);
        }
    });
    assert_records(literal, 100, || {
        for _ in 0..100 {
            let _g = laptime::start("bench_guard_str");
        }
    });

    let mut g = c.benchmark_group("span");
    baselines(&mut g);
    // The floor of any ring-based span: a TSC pair and one 32-byte push into the library's own
    // SPSC ring, owned here (no thread-local, no switches), drained between chunks on this thread.
    let (mut producer, mut consumer) = laptime::ring::ring::<[u64; 4]>(CHUNK_RECORDS as usize);
    g.bench_function("floor/tsc_pair_ring_push", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks_then(
                iters,
                1,
                || {
                    let start = tsc();
                    let end = tsc();
                    let pushed = producer.push(black_box([1, 0, start, end]));
                    debug_assert!(pushed.is_ok());
                },
                |n| assert_eq!(consumer.drain(usize::MAX, drop), n as usize),
            )
        })
    });
    g.bench_function("guard/stage", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks(iters, 1, || {
                let _g = laptime::start(black_box(resolved));
            })
        })
    });
    g.bench_function("guard/str", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks(iters, 1, || {
                let _g = laptime::start("bench_guard_str");
            })
        })
    });
    g.finish();
}

/// The split timer in a 4-stage tick: 5 clock reads and 5 records (4 stages and the total) per
/// lap. Throughput is set to 4 elements so criterion also prints stages per second; the README
/// divides the lap's time by 4.
fn split(c: &mut Criterion) {
    collector();
    let total = stage("bench_lap_total");
    let s = [
        stage("bench_lap_fetch_md"),
        stage("bench_lap_spread"),
        stage("bench_lap_guards"),
        stage("bench_lap_emit"),
    ];
    let lap_str = || {
        let mut lap = laptime::lap("bench_lap_total");
        lap.split("bench_lap_fetch_md");
        lap.split("bench_lap_spread");
        lap.split("bench_lap_guards");
        lap.end_with("bench_lap_emit");
    };
    let lap_stage = || {
        let mut lap = laptime::lap(black_box(total));
        lap.split(black_box(s[0]));
        lap.split(black_box(s[1]));
        lap.split(black_box(s[2]));
        lap.end_with(black_box(s[3]));
    };
    for run in [&lap_str as &dyn Fn(), &lap_stage] {
        assert_records(total, 50, || (0..50).for_each(|_| run()));
        for st in s {
            assert_eq!(count(st), count(total), "{st}: one record per lap");
        }
    }

    let mut g = c.benchmark_group("split");
    baselines(&mut g);
    g.throughput(Throughput::Elements(4));
    g.bench_function("lap_4_stages/str", |b| {
        b.iter_custom(|iters| timed_in_chunks(iters, 5, lap_str))
    });
    g.bench_function("lap_4_stages/stage", |b| {
        b.iter_custom(|iters| timed_in_chunks(iters, 5, lap_stage))
    });
    g.finish();
}

/// The switched-off paths: globally disabled, and a stage sampled out (rate 0).
fn switches(c: &mut Criterion) {
    collector();
    let disabled = stage("bench_disabled");
    let sampled = stage("bench_sampled_out");
    sampled
        .set_sampling_rate(Some(0.0))
        .expect("0 is a valid rate");

    // Disabled: records nothing and counts nothing.
    assert_records(disabled, 3, || {
        for _ in 0..3 {
            let _g = laptime::start(disabled);
        }
        laptime::set_enabled(false);
        for _ in 0..1000 {
            let _g = laptime::start(disabled);
            let _h = laptime::start("bench_disabled");
        }
        laptime::set_enabled(true);
    });
    // Sampled out: records nothing, counts every call.
    let before = stats(sampled).map_or(0, |s| s.sampled_out);
    assert_records(sampled, 0, || {
        for _ in 0..1000 {
            let _g = laptime::start(sampled);
        }
    });
    let after = stats(sampled).map_or(0, |s| s.sampled_out);
    assert_eq!(after - before, 1000, "every sampled-out call is counted");

    let mut g = c.benchmark_group("switches");
    baselines(&mut g);
    laptime::set_enabled(false);
    g.bench_function("disabled/stage", |b| {
        b.iter(|| {
            let _g = laptime::start(black_box(disabled));
        })
    });
    g.bench_function("disabled/str", |b| {
        b.iter(|| {
            let _g = laptime::start("bench_disabled");
        })
    });
    laptime::set_enabled(true);
    assert!(laptime::is_enabled());
    g.bench_function("sampled_out/stage", |b| {
        b.iter(|| {
            let _g = laptime::start(black_box(sampled));
        })
    });
    g.finish();
}

/// Why the library reads the TSC itself: `quanta::Clock::raw()` against `laptime::clock::ticks()`.
fn clock(c: &mut Criterion) {
    collector();
    let quanta = quanta::Clock::new();
    assert_eq!(
        laptime::clock::current(),
        laptime::clock::ClockSource::Tsc,
        "this bench compares TSC reads: the library must have chosen the TSC"
    );
    // quanta's raw value must advance with the TSC (not be its monotonic fallback).
    let (t0, q0) = (tsc(), quanta.raw());
    std::thread::sleep(Duration::from_millis(20));
    let (t1, q1) = (tsc(), quanta.raw());
    let rate = (q1 - q0) as f64 / (t1 - t0) as f64;
    assert!(
        (rate - 1.0).abs() < 0.01,
        "quanta::Clock::raw() is not the TSC here (rate {rate})"
    );

    let mut g = c.benchmark_group("clock");
    baselines(&mut g);
    g.bench_function("quanta_raw_pair", |b| {
        b.iter(|| (black_box(quanta.raw()), black_box(quanta.raw())))
    });
    g.bench_function("laptime_ticks_pair", |b| {
        b.iter(|| {
            (
                black_box(laptime::clock::ticks()),
                black_box(laptime::clock::ticks()),
            )
        })
    });
    g.finish();
}

/// Reading a published statistic: `get_stats` by `Stage` and by name.
fn query(c: &mut Criterion) {
    collector();
    let queried = stage("bench_query");
    assert_records(queried, 1000, || {
        for _ in 0..1000 {
            let _g = laptime::start(queried);
        }
    });
    assert_eq!(
        laptime::get_stats(queried, Window::S60).map(|s| s.count),
        Some(1000),
        "the 60 s window holds the spans just recorded"
    );

    let mut g = c.benchmark_group("query");
    baselines(&mut g);
    g.bench_function("get_stats/stage", |b| {
        b.iter(|| laptime::get_stats(black_box(queried), Window::S60))
    });
    g.bench_function("get_stats/str", |b| {
        b.iter(|| laptime::get_stats(black_box("bench_query"), Window::S60))
    });
    g.finish();
}

/// Times `iters` ticks of variant `pick`, each run beside a tick of the other variant (in
/// alternating order) so both see the same machine at the same moments, and returns `iters` ×
/// the sample's *median* tick. Each tick is timed on its own (a TSC pair, the same for both
/// variants): on these two shared cores a preempted tick costs milliseconds, which would swamp
/// the ~1 % asked about in any mean. Flushes (untimed) often enough that the instrumented
/// variant's records never fill the ring.
fn interleaved(iters: u64, pick: usize, variants: [&dyn Fn(); 2], tsc_per_ns: f64) -> Duration {
    let mut ticks = [Vec::new(), Vec::new()];
    for i in 0..iters {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for v in order {
            let started = tsc();
            variants[v]();
            ticks[v].push(tsc().wrapping_sub(started));
        }
        if (i + 1) % (CHUNK_RECORDS / 5) == 0 {
            assert!(laptime::flush(), "the aggregator answers a flush");
        }
    }
    let mine = &mut ticks[pick];
    let middle = mine.len() / 2;
    let median = *mine.select_nth_unstable(middle).1;
    Duration::from_secs_f64(median as f64 / tsc_per_ns * 1e-9 * iters as f64)
}

/// A realistic tick: 4 stages of ~2.5 µs of work each, bare and timed with the split timer.
fn tick(c: &mut Criterion) {
    collector();
    let rate = tsc_per_ns();
    let per_stage = (2_500.0 * rate) as u64;
    let bare = move || {
        work(per_stage);
        work(per_stage);
        work(per_stage);
        work(per_stage);
    };
    let instrumented = move || {
        let mut lap = laptime::lap("bench_tick_total");
        work(per_stage);
        lap.split("bench_tick_fetch_md");
        work(per_stage);
        lap.split("bench_tick_spread");
        work(per_stage);
        lap.split("bench_tick_guards");
        work(per_stage);
        lap.end_with("bench_tick_emit");
    };
    let total = stage("bench_tick_total");
    assert_records(total, 20, || (0..20).for_each(|_| instrumented()));
    let s = stats(total).expect("recorded above");
    assert!(
        (9_000..20_000).contains(&(s.p50.as_nanos() as u64)),
        "a tick takes about 10 µs (p50 {:?})",
        s.p50
    );

    let variants: [&dyn Fn(); 2] = [&bare, &instrumented];
    let mut g = c.benchmark_group("tick");
    baselines(&mut g);
    g.bench_function("4_stages_10us/bare", |b| {
        b.iter_custom(|iters| interleaved(iters, 0, variants, rate))
    });
    g.bench_function("4_stages_10us/instrumented", |b| {
        b.iter_custom(|iters| interleaved(iters, 1, variants, rate))
    });
    g.finish();
}

/// Per-symbol series: a span through a cached series handle beside one through a static stage
/// (issue 15: within noise), and the uncached lookup of an existing series among 5 000 symbols
/// (`series_or_overflow`: hash and probe, no lock, no allocation; target ≤ 100 ns), each beside
/// the TSC pair of the same run.
fn series(c: &mut Criterion) {
    collector();
    let family = laptime::Family::new("bench_series", &["pair"]).expect("a family");
    let symbols: Vec<String> = (0..5_000).map(|i| format!("S{i:05}-USD")).collect();
    let handles: Vec<Stage> = symbols
        .iter()
        .map(|s| family.series(&[s.as_str()]).expect("under the caps"))
        .collect();
    let fixed = stage("bench_series_static");
    assert_records(handles[7], 100, || {
        for _ in 0..100 {
            let _g = laptime::start(handles[7]);
        }
    });

    let mut g = c.benchmark_group("series");
    baselines(&mut g);
    g.bench_function("guard/static_stage", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks(iters, 1, || {
                let _g = laptime::start(black_box(fixed));
            })
        })
    });
    g.bench_function("guard/cached_series", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks(iters, 1, || {
                let _g = laptime::start(black_box(handles[7]));
            })
        })
    });
    // Symbols in turn, so the lookup is not served from one hot cache line.
    let mut next = 0usize;
    g.bench_function("lookup/uncached_existing", |b| {
        b.iter(|| {
            next = (next + 1) % symbols.len();
            black_box(family.series_or_overflow(&[black_box(symbols[next].as_str())]))
        })
    });
    g.finish();
    assert_eq!(family.len(), symbols.len(), "the lookups created nothing");
    assert_eq!(family.overflowed(), 0);
}

/// Spans back to back while the aggregator drains the same ring on the other vCPU, against a TSC
/// pair timed while a spinning thread holds that vCPU: what a kept span costs on a busy 2-core
/// machine, where the sibling's work slows this thread too. Nothing is flushed between chunks;
/// a chunk waits (untimed) only while the ring is more than a quarter full, so every span is kept,
/// and the bench fails if any was dropped. It prints the share kept.
fn sustained(c: &mut Criterion) {
    let handle = collector();
    let stage = stage("bench_sustained");
    let mut g = c.benchmark_group("sustained");
    let spinning = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sibling = {
        let spinning = spinning.clone();
        std::thread::spawn(move || {
            while spinning.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    g.bench_function("baseline/tsc_pair_beside_busy_sibling", |b| {
        b.iter(|| (black_box(tsc()), black_box(tsc())))
    });
    spinning.store(false, std::sync::atomic::Ordering::Relaxed);
    sibling.join().expect("the spinning sibling exits");

    laptime::flush();
    let before = handle.health();
    let quarter = before.ring_capacity as u64 / 4;
    let mut spans = 0u64;
    g.bench_function("guard/stage_aggregator_draining", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks_then(
                iters,
                1,
                || {
                    let _g = laptime::start(black_box(stage));
                },
                |n| {
                    spans += n;
                    // The backlog is at most what this thread made less what the aggregator has
                    // drained; the drained count lags by up to a cycle, which only overstates
                    // the backlog, so waiting while it is above a quarter ring never lets the
                    // ring fill.
                    while spans - (handle.health().records - before.records) > quarter {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                },
            )
        })
    });
    g.finish();
    laptime::flush();
    let after = handle.health();
    let dropped = after.dropped - before.dropped;
    println!(
        "sustained: {spans} spans, {dropped} dropped, share kept {:.4} %",
        100.0 * (spans - dropped) as f64 / spans as f64
    );
    assert_eq!(
        dropped, 0,
        "every sustained span is kept, or the figure is not a kept span's"
    );
}

/// The library's own accounting after the run: drops would mean some spans cost a failed push.
fn report_health() {
    laptime::flush();
    let h = laptime::health().expect("a collector is installed");
    println!(
        "laptime health: records {}, dropped {}, ring high water {} of {}, sampled out {}",
        h.records, h.dropped, h.ring_high_water, h.ring_capacity, h.sampled_out
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for group in [span, split, switches, sustained, clock, query, tick, series] {
        group(&mut c);
    }
    report_health();
    c.final_summary();
}
