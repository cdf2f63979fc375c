//! `churn`: many short-lived threads, each recording a few spans and exiting. Every ring must be
//! reclaimed, every span counted, and memory must come back to where it was.

use std::thread;
use std::time::{Duration, Instant};

use laptime::{CollectorHandle, Health, Stage, Window};
use serde::Serialize;

use crate::report::{Report, Tally};
use crate::rss;
use crate::{heap, reference};

/// Each thread records `churn_a`, `churn_b`, `churn_a`.
const STAGES: [&str; 2] = ["churn_a", "churn_b"];
const PER_THREAD: [u64; 2] = [2, 1];
/// Time given before reading RSS: the aggregator hands the memory of freed rings back to the OS
/// at most once a second.
const SETTLE: Duration = Duration::from_millis(1500);

/// `churn`'s flags.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ChurnArgs {
    /// Short-lived threads to run after the warm-up.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub threads: u64,
    /// Threads spawned at once (joined before the next batch).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,
    /// Threads run first, before the baseline is taken.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub warmup_threads: u64,
    /// Bound on VmRSS after the run minus the baseline, in MiB.
    #[arg(long, default_value_t = 4)]
    pub max_rss_growth_mib: u64,
    /// Bound on the live heap after the run minus the baseline, in KiB: what was allocated for
    /// the threads and not freed.
    #[arg(long, default_value_t = 1024)]
    pub max_heap_growth_kib: u64,
    /// Bound on the wait for every exited thread's ring to be reclaimed, in ms.
    #[arg(long, default_value_t = 5_000)]
    pub max_settle_ms: u64,
    /// Bound on the library's histogram memory after the run, in KiB. Histograms grow with the
    /// spread of the durations seen, not with the number of threads: a per-thread cost would
    /// cross this by orders of magnitude.
    #[arg(long, default_value_t = 1024)]
    pub max_histogram_kib: u64,
}

#[derive(Debug, Serialize)]
struct Sample {
    t_secs: f64,
    threads: u64,
    rss_kib: u64,
    rings: usize,
    rings_reclaimed: u64,
}

/// Runs the churn and returns its report.
pub fn run(args: &ChurnArgs) -> Result<Report, String> {
    let mut report = Report::new("churn", args);
    let handle = laptime::Collector::builder()
        .install()
        .map_err(|e| format!("cannot install the collector: {e}"))?;
    let stages: Vec<Stage> = STAGES
        .iter()
        .map(|s| Stage::new(s).map_err(|e| format!("stage {s}: {e}")))
        .collect::<Result<_, _>>()?;
    let settle_bound = Duration::from_millis(args.max_settle_ms);

    let warm = Instant::now();
    run_threads(args.warmup_threads, args.batch, |_| {})?;
    let (_, settled) = settle(&handle, 0, settle_bound);
    if !settled {
        return Err("the warm-up threads' rings were not reclaimed in time".into());
    }
    println!(
        "warm-up: {} threads in {:.2?}",
        args.warmup_threads,
        warm.elapsed()
    );
    thread::sleep(SETTLE);
    let base = handle.health();
    let base_mem = rss::read().map_err(|e| e.to_string())?;
    let base_counts = counts(&handle, &stages);
    let base_heap = heap::live();
    println!(
        "baseline: rss {} KiB, rings {}, reclaimed {}, histograms {} KiB",
        base_mem.rss_kib,
        base.rings,
        base.rings_reclaimed,
        base.histogram_bytes / 1024
    );

    let started = Instant::now();
    let mut peak_rss = base_mem.rss_kib;
    let mut last_line = started;
    let mut samples = Vec::new();
    run_threads(args.threads, args.batch, |done| {
        // Every 16 batches: /proc is cheap, but not free next to a 64-thread batch.
        if !(done / args.batch).is_multiple_of(16) {
            return;
        }
        let mem = rss::read().map_or(0, |m| m.rss_kib);
        peak_rss = peak_rss.max(mem);
        if last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            let h = handle.health();
            let t = started.elapsed().as_secs_f64();
            let sample = Sample {
                t_secs: t,
                threads: done,
                rss_kib: mem,
                rings: h.rings,
                rings_reclaimed: h.rings_reclaimed - base.rings_reclaimed,
            };
            println!(
                "[{:>5.1}s] threads {} ({:.0}/s), rss {} KiB, rings {}, reclaimed {}",
                t,
                done,
                done as f64 / t,
                mem,
                sample.rings,
                sample.rings_reclaimed
            );
            samples.push(sample);
        }
    })?;
    let spawn_secs = started.elapsed().as_secs_f64();
    report.samples(&samples);
    let (waited, settled) = settle(&handle, base.rings, settle_bound);
    thread::sleep(SETTLE);
    handle.flush();
    let h = handle.health();
    let mem = rss::read().map_err(|e| e.to_string())?;
    peak_rss = peak_rss.max(mem.rss_kib);

    report.figure("threads_per_sec", args.threads as f64 / spawn_secs);
    report.figure("spawn_secs", spawn_secs);
    report.check(
        "rings_back_to_baseline",
        settled,
        h.rings,
        format!("== {} within {} ms", base.rings, args.max_settle_ms),
        None,
    );
    report.figure("settle_ms", waited.as_millis() as u64);
    report.equal(
        "rings_reclaimed_delta",
        h.rings_reclaimed - base.rings_reclaimed,
        args.threads,
    );
    report.equal(
        "health_produced",
        h.produced,
        h.records + h.dropped + h.in_rings,
    );
    let after_counts = counts(&handle, &stages);
    for (i, name) in STAGES.iter().enumerate() {
        let expected = args.threads * PER_THREAD[i];
        let (c0, l0) = base_counts[i];
        let (c1, l1) = after_counts[i];
        report.equal(&format!("{name}.count_delta"), c1 - c0, expected);
        report.equal(&format!("{name}.library_calls_delta"), l1 - l0, expected);
    }
    let mut identity = Tally::new("stage_produced_and_calls_eq_sum_of_parts");
    for s in handle.get_all_stats(Window::Cumulative) {
        let r = reference::stage_identity(&s);
        identity.observe(r.is_ok(), || format!("{r:?}"));
    }
    report.tally(identity);

    let heap_growth = heap::live() as i64 - base_heap as i64;
    report.figure("heap_live_baseline_bytes", base_heap);
    report.figure("heap_live_after_bytes", heap::live());
    report.figure("heap_live_peak_bytes", heap::peak());
    report.at_most(
        "heap_live_growth_kib",
        heap_growth / 1024,
        args.max_heap_growth_kib as i64,
        "KiB",
    );
    let growth_kib = mem.rss_kib as i64 - base_mem.rss_kib as i64;
    report.figure("rss_baseline_kib", base_mem.rss_kib);
    report.figure("rss_after_kib", mem.rss_kib);
    report.figure("rss_peak_sampled_kib", peak_rss);
    report.figure("vm_hwm_kib", mem.hwm_kib);
    let rss_bound = (args.max_rss_growth_mib * 1024) as i64;
    report.figure("rss_growth_kib", growth_kib);
    report.check(
        "rss_growth_kib",
        growth_kib <= rss_bound,
        growth_kib,
        format!("<= {rss_bound} KiB"),
        // Which kind of growth it is: held by the program, or freed and kept by the allocator.
        (growth_kib > rss_bound).then(|| {
            format!(
                "the live heap grew {} KiB of it: the rest was freed but is still resident (kept by the C allocator); the live heap peaked at {} MiB while exited threads' rings awaited reclamation",
                heap_growth / 1024,
                heap::peak() >> 20
            )
        }),
    );
    report.figure("histogram_bytes_baseline", base.histogram_bytes);
    report.figure("histogram_bytes_after", h.histogram_bytes);
    report.at_most(
        "histogram_kib_after",
        h.histogram_bytes as u64 / 1024,
        args.max_histogram_kib,
        "KiB",
    );
    report.figure("dropped", h.dropped - base.dropped);
    Ok(report)
}

/// Runs `n` threads, `batch` at a time, each recording its spans; `each_batch` gets the number
/// of threads joined so far.
fn run_threads(n: u64, batch: u64, mut each_batch: impl FnMut(u64)) -> Result<(), String> {
    let mut done = 0;
    let mut joins = Vec::with_capacity(batch as usize);
    while done < n {
        let k = batch.min(n - done);
        for _ in 0..k {
            let join = thread::Builder::new()
                .spawn(|| {
                    drop(laptime::start(STAGES[0]));
                    drop(laptime::start(STAGES[1]));
                    drop(laptime::start(STAGES[0]));
                })
                .map_err(|e| format!("cannot spawn thread {}: {e}", done + joins.len() as u64))?;
            joins.push(join);
        }
        for join in joins.drain(..) {
            join.join()
                .map_err(|_| "a churn thread panicked".to_owned())?;
        }
        done += k;
        each_batch(done);
    }
    Ok(())
}

/// Flushes until the live rings are back to `rings` or `bound` has passed; returns the time
/// waited and whether it got there.
fn settle(handle: &CollectorHandle, rings: usize, bound: Duration) -> (Duration, bool) {
    let t = Instant::now();
    loop {
        handle.flush();
        let h: Health = handle.health();
        if h.rings == rings {
            return (t.elapsed(), true);
        }
        if t.elapsed() > bound {
            println!(
                "  ! rings still {} (want {rings}) after {:?}",
                h.rings,
                t.elapsed()
            );
            return (t.elapsed(), false);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `(count, count + dropped + sampled_out + cancelled)` of each stage, cumulative.
fn counts(handle: &CollectorHandle, stages: &[Stage]) -> Vec<(u64, u64)> {
    stages
        .iter()
        .map(|s| {
            handle
                .get_stats(*s, Window::Cumulative)
                .map_or((0, 0), |s| (s.count, reference::library_calls(&s)))
        })
        .collect()
}
