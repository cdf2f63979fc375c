//! `flood`: every core records empty spans as fast as it can into small rings, so records are
//! dropped. The hot path must never block (every producer progresses in every bucket of time),
//! the host must stay responsive, every drop must be counted exactly, and once the flood stops the
//! aggregator must catch up and record again without loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use laptime::{Stage, Window};
use serde::Serialize;

use crate::reference;
use crate::report::{self, Report, Tally, ns, percentile};

const STAGES: [&str; 3] = ["flood_a", "flood_b", "flood_c"];
/// Calls between two looks at the clock and the stop flag.
const BATCH: u64 = 256;
/// One call in this many is timed on its own.
const TIMED_EVERY: u64 = 1024;

/// `flood`'s flags.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FloodArgs {
    /// How long to flood, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub secs: u64,
    /// Producer threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub producers: Option<u32>,
    /// Ring capacity in records: small, so the flood overruns it.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(2..=(1 << 24)))]
    pub ring_capacity: u32,
    /// Length of the buckets of time in which every producer must make progress, in ms. Long
    /// enough that the scheduler alone (producers on every core, plus the aggregator and the
    /// heartbeat) cannot starve a thread that long on a shared machine; a hot path that waited
    /// on anything would.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub bucket_ms: u64,
    /// Bound on the heartbeat thread's oversleep (host responsiveness), in ms.
    #[arg(long, default_value_t = 1_000)]
    pub max_heartbeat_ms: u64,
    /// Bound on the time from the flood's end until the rings are empty and the lag is back
    /// under --max-lag-after-ms, in ms.
    #[arg(long, default_value_t = 5_000)]
    pub max_recover_ms: u64,
    /// The lag (`Health::lag`) that counts as recovered, in ms.
    #[arg(long, default_value_t = 100)]
    pub max_lag_after_ms: u64,
    /// Spans recorded slowly after the flood (one thread, a flush every 1 000): none may drop.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub after_spans: u64,
}

struct Produced {
    calls: [u64; 3],
    /// Calls per bucket of time since the producer passed the start barrier.
    buckets: Vec<u64>,
    longest: Duration,
}

#[derive(Debug, Serialize)]
struct Sample {
    t_secs: f64,
    calls: u64,
    records: u64,
    dropped: u64,
    in_rings: u64,
    ring_high_water: usize,
    lag_us: u64,
    cycles: u64,
}

/// Runs the flood and returns its report.
pub fn run(args: &FloodArgs) -> Result<Report, String> {
    let producers = args.producers.map_or_else(report::cores, |p| p as usize);
    let mut report = Report::new("flood", args);
    report.figure("producers", producers);
    let handle = laptime::Collector::builder()
        .with_ring_capacity(args.ring_capacity as usize)
        .install()
        .map_err(|e| format!("cannot install the collector: {e}"))?;
    let stages: Vec<Stage> = STAGES
        .iter()
        .map(|s| Stage::new(s).map_err(|e| format!("stage {s}: {e}")))
        .collect::<Result<_, _>>()?;

    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..producers).map(|_| AtomicU64::new(0)).collect());
    let ready = Arc::new(std::sync::Barrier::new(producers + 2));
    let bucket = Duration::from_millis(args.bucket_ms);
    let mut joins = Vec::with_capacity(producers);
    for i in 0..producers {
        let (stop, progress, ready) = (stop.clone(), progress.clone(), ready.clone());
        let join = thread::Builder::new()
            .name(format!("flood-producer-{i}"))
            .spawn(move || {
                ready.wait();
                flood(&stop, &progress[i], Instant::now(), bucket)
            })
            .map_err(|e| format!("cannot spawn producer {i}: {e}"))?;
        joins.push(join);
    }
    let heartbeat = {
        let (stop, ready) = (stop.clone(), ready.clone());
        thread::Builder::new()
            .name("flood-heartbeat".into())
            .spawn(move || {
                ready.wait();
                heartbeat(&stop)
            })
            .map_err(|e| format!("cannot spawn the heartbeat: {e}"))?
    };
    ready.wait();
    let started = Instant::now();
    let records_at_start = handle.health().records;

    let mut identity = Tally::new("health_produced_eq_records_dropped_in_rings");
    let mut flushes = Tally::new("flush_answered_every_sample");
    let mut high_water = Tally::new("ring_high_water_le_capacity");
    let mut peak_high_water = 0;
    let mut samples = Vec::new();
    let mut next = started;
    while started.elapsed() < Duration::from_secs(args.secs) {
        next += Duration::from_secs(1);
        thread::sleep(next.saturating_duration_since(Instant::now()));
        let flushed = handle.flush();
        let t = started.elapsed();
        let h = handle.health();
        flushes.observe(flushed, || format!("at {t:.1?}"));
        identity.observe(h.produced == h.records + h.dropped + h.in_rings, || {
            format!(
                "at {t:.1?}: produced {} != records {} + dropped {} + in_rings {}",
                h.produced, h.records, h.dropped, h.in_rings
            )
        });
        high_water.observe(h.ring_high_water <= h.ring_capacity, || {
            format!(
                "at {t:.1?}: high water {} > capacity {}",
                h.ring_high_water, h.ring_capacity
            )
        });
        peak_high_water = peak_high_water.max(h.ring_high_water);
        let sample = Sample {
            t_secs: t.as_secs_f64(),
            calls: progress.iter().map(|p| p.load(Ordering::Relaxed)).sum(),
            records: h.records,
            dropped: h.dropped,
            in_rings: h.in_rings,
            ring_high_water: h.ring_high_water,
            lag_us: ns(h.lag) / 1_000,
            cycles: h.cycles,
        };
        println!(
            "[{:>5.1}s] calls {}, records {}, dropped {} ({:.1} %), in rings {}, high water {}, lag {} µs, cycles {}",
            sample.t_secs,
            sample.calls,
            sample.records,
            sample.dropped,
            100.0 * sample.dropped as f64 / sample.calls.max(1) as f64,
            sample.in_rings,
            sample.ring_high_water,
            sample.lag_us,
            sample.cycles,
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    report.samples(&samples);
    let flood_secs = stopped.duration_since(started).as_secs_f64();

    let mut own = [0u64; 3];
    let mut longest = Duration::ZERO;
    let full_buckets = (Duration::from_secs(args.secs).as_nanos() / bucket.as_nanos()) as usize;
    let mut stalls = Tally::new("every_producer_progresses_in_every_bucket");
    let mut min_bucket = u64::MAX;
    for (i, join) in joins.into_iter().enumerate() {
        let p = join.join().map_err(|_| format!("producer {i} panicked"))?;
        for (o, c) in own.iter_mut().zip(p.calls) {
            *o += c;
        }
        longest = longest.max(p.longest);
        for b in 0..full_buckets {
            let calls = p.buckets.get(b).copied().unwrap_or(0);
            min_bucket = min_bucket.min(calls);
            stalls.observe(calls > 0, || {
                format!(
                    "producer {i} made no call in bucket {b} ({} ms from the start)",
                    b as u64 * args.bucket_ms
                )
            });
        }
    }
    let mut oversleeps = heartbeat
        .join()
        .map_err(|_| "the heartbeat panicked".to_owned())?;
    let flood_calls: u64 = own.iter().sum();

    // The aggregator recovers: rings empty and the lag back down within the bound.
    let recover_bound = Duration::from_millis(args.max_recover_ms);
    let lag_bound = Duration::from_millis(args.max_lag_after_ms);
    let (recovered, records_at_recovery) = loop {
        let flushed = handle.flush();
        let h = handle.health();
        if flushed && h.in_rings == 0 && h.lag <= lag_bound {
            break (stopped.elapsed(), h.records);
        }
        if stopped.elapsed() > recover_bound {
            println!(
                "  ! not recovered after {:?}: in rings {}, lag {:?}",
                stopped.elapsed(),
                h.in_rings,
                h.lag
            );
            break (stopped.elapsed(), h.records);
        }
        thread::sleep(Duration::from_millis(10));
    };
    let dropped_before: Vec<u64> = stages
        .iter()
        .map(|s| {
            handle
                .get_stats(*s, Window::Cumulative)
                .map_or(0, |s| s.dropped)
        })
        .collect();
    let health_dropped_before = handle.health().dropped;

    // Then ordinary recording: slow enough that the small ring never fills.
    let mut after = [0u64; 3];
    for k in 0..args.after_spans {
        let s = (k % 3) as usize;
        drop(laptime::start(STAGES[s]));
        after[s] += 1;
        if (k + 1) % 1000 == 0 {
            handle.flush();
        }
    }
    let flushed = handle.flush();
    report.check("final_flush_answered", flushed, flushed, "true", None);

    report.tally(flushes);
    report.tally(identity);
    report.tally(high_water);
    report.tally(stalls);
    report.figure("min_calls_in_a_bucket", min_bucket);
    report.figure("longest_timed_call_ns", ns(longest));
    oversleeps.sort_unstable();
    report.figure("heartbeat_samples", oversleeps.len());
    report.figure("heartbeat_p99_us", percentile(&mut oversleeps, 990));
    report.at_most(
        "heartbeat_max_oversleep_us",
        oversleeps.last().copied().unwrap_or(0),
        args.max_heartbeat_ms * 1_000,
        "µs",
    );
    report.at_most(
        "recovery_ms",
        recovered.as_millis() as u64,
        args.max_recover_ms,
        "ms",
    );

    let snap = handle.snapshot();
    let h = &snap.health;
    report.equal(
        "final.health_produced",
        h.produced,
        h.records + h.dropped + h.in_rings,
    );
    report.equal("final.health_in_rings", h.in_rings, 0);
    // The producers' rings were reclaimed; the main thread's (the slow phase) is live.
    report.equal(
        "final.health_rings_reclaimed",
        h.rings_reclaimed,
        producers as u64,
    );
    report.equal("final.health_rings", h.rings, 1);
    report.equal(
        "final.health_dropped_unchanged_after_flood",
        h.dropped,
        health_dropped_before,
    );
    report.at_most(
        "final.ring_high_water",
        h.ring_high_water,
        h.ring_capacity,
        "records (the ring capacity)",
    );
    let mut dropped_total = 0;
    for (i, stage) in stages.iter().enumerate() {
        let name = STAGES[i];
        let s = snap.stats(*stage, Window::Cumulative);
        let get = |f: fn(&laptime::StageStats) -> u64| s.map_or(0, f);
        let calls = own[i] + after[i];
        report.equal(
            &format!("final.{name}.library_calls"),
            get(reference::library_calls),
            calls,
        );
        report.equal(
            &format!("final.{name}.calls_field"),
            get(|s| s.calls),
            calls,
        );
        report.equal(
            &format!("final.{name}.count_plus_dropped"),
            get(|s| s.count) + get(|s| s.dropped),
            calls,
        );
        report.equal(
            &format!("final.{name}.sampled_out"),
            get(|s| s.sampled_out),
            0,
        );
        report.equal(&format!("final.{name}.cancelled"), get(|s| s.cancelled), 0);
        report.equal(&format!("final.{name}.in_rings"), get(|s| s.in_rings), 0);
        let identity = s.map_or(Ok(()), reference::stage_identity);
        report.check(
            format!("final.{name}.identity"),
            identity.is_ok(),
            identity.is_ok(),
            "produced == count + dropped + cancelled + in_rings, calls == produced + sampled_out",
            identity.err(),
        );
        report.equal(
            &format!("final.{name}.no_new_drops_after_flood"),
            get(|s| s.dropped),
            dropped_before[i],
        );
        dropped_total += get(|s| s.dropped);
    }
    report.equal(
        "final.health_dropped_eq_stage_drops",
        h.dropped,
        dropped_total,
    );

    report.figure("flood_secs", flood_secs);
    report.figure("flood_calls", flood_calls);
    report.figure("calls_per_sec", flood_calls as f64 / flood_secs);
    report.figure("dropped", dropped_total);
    report.figure(
        "drop_fraction",
        dropped_total as f64 / flood_calls.max(1) as f64,
    );
    report.figure(
        "records_per_sec_drained",
        (records_at_recovery - records_at_start) as f64 / (flood_secs + recovered.as_secs_f64()),
    );
    report.figure(
        "peak_ring_high_water",
        peak_high_water.max(h.ring_high_water),
    );
    report.figure("ring_capacity", h.ring_capacity);
    Ok(report)
}

fn flood(stop: &AtomicBool, progress: &AtomicU64, t0: Instant, bucket: Duration) -> Produced {
    let mut calls = [0u64; 3];
    let mut buckets = Vec::new();
    let mut longest = Duration::ZERO;
    let mut n = 0u64;
    let bucket_ns = bucket.as_nanos().max(1);
    while !stop.load(Ordering::Relaxed) {
        for k in 0..BATCH {
            let s = (k % 3) as usize;
            if (n + k).is_multiple_of(TIMED_EVERY) {
                let t = Instant::now();
                drop(laptime::start(STAGES[s]));
                longest = longest.max(t.elapsed());
            } else {
                drop(laptime::start(STAGES[s]));
            }
            calls[s] += 1;
        }
        n += BATCH;
        progress.store(n, Ordering::Relaxed);
        let b = (t0.elapsed().as_nanos() / bucket_ns) as usize;
        if buckets.len() <= b {
            buckets.resize(b + 1, 0);
        }
        buckets[b] += BATCH;
    }
    Produced {
        calls,
        buckets,
        longest,
    }
}

/// Sleeps 10 ms at a time until stopped; returns each oversleep in µs.
fn heartbeat(stop: &AtomicBool) -> Vec<u64> {
    const NAP: Duration = Duration::from_millis(10);
    let mut over = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        thread::sleep(NAP);
        over.push(ns(t.elapsed().saturating_sub(NAP)) / 1_000);
    }
    over
}
