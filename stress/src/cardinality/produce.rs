//! The desk's workload: symbols sharded over producer threads (as a market maker shards its
//! books), each thread resolving its series once into cached handles and recording a paced
//! stream of synthetic latencies, counting every record per series itself.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use laptime::{Family, Stage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

/// How often a producer looks at the clock and records what its schedule says is due: short
/// against the 10 ms aggregator interval, so the load is spread over time and never a burst.
const TICK: Duration = Duration::from_micros(500);
/// A producer further behind its schedule than this (descheduled) skips the missed records,
/// counted, rather than bursting them.
const MAX_BEHIND: Duration = Duration::from_millis(100);
/// Bounds of the synthetic latencies, in ns: kept in a `u32` reference.
const VALUE_MIN_NS: f64 = 100.0;
const VALUE_MAX_NS: f64 = 1e9;

/// What every producer shares: the symbols, the families and who is slow.
#[derive(Debug)]
pub struct Plan {
    /// The symbols, e.g. `S00042-USD`.
    pub symbols: Vec<String>,
    /// One family per pipeline stage, each labelled by `pair`.
    pub families: Vec<Family>,
    /// Median latency of each stage, in ns.
    pub stage_median_ns: Vec<f64>,
    /// Whether each symbol is slow (every stage `slow_factor` times slower).
    pub slow: Vec<bool>,
    /// How much slower a slow symbol is.
    pub slow_factor: f64,
    /// Symbols whose every value is kept for the percentile check: every `sample_every`-th.
    pub sample_every: usize,
    /// Producer threads; symbol `i` belongs to producer `i % threads`.
    pub threads: usize,
    /// Records per second over all producers.
    pub rate: u64,
    /// The run's length, to size the kept values up front.
    pub secs: u64,
    /// Seed of producer 0's generator (producer `p` uses `seed + p`).
    pub seed: u64,
}

impl Plan {
    /// Series in all: one per symbol and stage.
    pub fn series(&self) -> usize {
        self.symbols.len() * self.families.len()
    }

    /// The global index of a series, the same in every producer's reference and in the checks.
    pub fn index(&self, symbol: usize, stage: usize) -> usize {
        symbol * self.families.len() + stage
    }

    /// Whether `symbol`'s values are kept for the percentile check.
    pub fn sampled(&self, symbol: usize) -> bool {
        symbol.is_multiple_of(self.sample_every)
    }

    /// Records per second producer `p` owes: the total split as evenly as integers allow.
    fn rate_of(&self, p: usize) -> u64 {
        let threads = self.threads as u64;
        self.rate / threads + u64::from((p as u64) < self.rate % threads)
    }
}

/// Which of `symbols` symbols are slow: `count` of them (at most all), each in the middle of one
/// of `count` equal runs of symbols, so they spread over every producer and the whole range.
pub fn slow_symbols(symbols: usize, count: usize) -> Vec<bool> {
    let count = count.min(symbols);
    let run = symbols / count.max(1);
    (0..symbols)
        .map(|i| count > 0 && i % run == run / 2 && i / run < count)
        .collect()
}

/// What a producer hands back when it stops.
#[derive(Debug)]
pub struct Produced {
    /// Its symbols (global indices).
    pub own: Vec<usize>,
    /// Its series, `own[j]`'s stage `s` at `j * stages + s`.
    pub handles: Vec<Stage>,
    /// Records sent to each of `handles`.
    pub counts: Vec<u64>,
    /// Every value sent to the sampled series: (global series index, values in ns).
    pub values: Vec<(usize, Vec<u32>)>,
    /// Records given up because the producer fell more than 100 ms behind its schedule.
    pub skipped: u64,
    /// Time taken to create (resolve) its series.
    pub resolve: Duration,
}

/// Runs producer `p`: resolves its series, waits at `ready`, records until `stop`.
pub fn run(
    plan: &Plan,
    p: usize,
    progress: &AtomicU64,
    stop: &AtomicBool,
    ready: &Barrier,
) -> Result<Produced, String> {
    let own: Vec<usize> = (p..plan.symbols.len()).step_by(plan.threads).collect();
    let t = Instant::now();
    let resolved = resolve(plan, &own);
    let resolve_time = t.elapsed();
    // The references are allocated before the run's baseline is read, at the barrier.
    let produced = resolved.map(|handles| Produced {
        counts: vec![0; handles.len()],
        values: kept_values(plan, &own),
        own,
        handles,
        skipped: 0,
        resolve: resolve_time,
    });
    // Wait even after a failure: the others, and the run, are waiting here too.
    ready.wait();
    let mut produced = produced?;
    record_paced(plan, p, &mut produced, progress, stop);
    Ok(produced)
}

/// Each of `own`'s series, resolved once from its runtime label value: the cached `Copy`
/// handles a desk keeps per symbol.
fn resolve(plan: &Plan, own: &[usize]) -> Result<Vec<Stage>, String> {
    let mut handles = Vec::with_capacity(own.len() * plan.families.len());
    for &symbol in own {
        let pair = plan.symbols[symbol].as_str();
        for family in &plan.families {
            let series = family
                .series(&[pair])
                .map_err(|e| format!("series {}{{pair={pair}}}: {e}", family.name()))?;
            handles.push(series);
        }
    }
    Ok(handles)
}

/// Room for every value of the sampled series, allocated and written now so that filling it
/// during the run adds nothing to the memory measured.
fn kept_values(plan: &Plan, own: &[usize]) -> Vec<(usize, Vec<u32>)> {
    let per_series = plan.secs * plan.rate / plan.series().max(1) as u64;
    let room = (per_series + per_series / 5 + 64) as usize;
    let mut kept = Vec::new();
    for &symbol in own.iter().filter(|&&s| plan.sampled(s)) {
        for stage in 0..plan.families.len() {
            let mut values = vec![1u32; room];
            values.clear();
            kept.push((plan.index(symbol, stage), values));
        }
    }
    kept
}

/// Records on an absolute schedule of `rate_of(p)` records a second, a tick's worth at a time,
/// cycling through the series in pipeline order (each symbol's stages, then the next symbol).
fn record_paced(
    plan: &Plan,
    p: usize,
    out: &mut Produced,
    progress: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed.wrapping_add(p as u64));
    // σ 0.5 in log space around each stage's median: a symbol's p99 about 3.2 × its median.
    let spread = LogNormal::new(0.0, 0.5).expect("finite parameters");
    let stages = plan.families.len();
    // Where each handle's values are kept, if it is sampled.
    let mut slot = vec![usize::MAX; out.handles.len()];
    for (k, (index, _)) in out.values.iter().enumerate() {
        let local = out.own.iter().position(|&s| s == index / stages);
        if let Some(j) = local {
            slot[j * stages + index % stages] = k;
        }
    }
    let rate = u128::from(plan.rate_of(p));
    let behind = (rate * MAX_BEHIND.as_nanos() / 1_000_000_000) as u64;
    let (mut due_done, mut n) = (0u64, 0usize);
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_nanos() * rate / 1_000_000_000) as u64;
        if due > due_done + behind {
            out.skipped += due - due_done;
            due_done = due;
        }
        while due_done < due {
            let h = n % out.handles.len();
            let (symbol, stage) = (out.own[h / stages], h % stages);
            let factor = if plan.slow[symbol] {
                plan.slow_factor
            } else {
                1.0
            };
            let ns = (plan.stage_median_ns[stage] * factor * spread.sample(&mut rng))
                .clamp(VALUE_MIN_NS, VALUE_MAX_NS) as u32;
            laptime::record(out.handles[h], Duration::from_nanos(u64::from(ns)));
            out.counts[h] += 1;
            if let Some((_, values)) = out.values.get_mut(slot[h]) {
                values.push(ns);
            }
            n += 1;
            due_done += 1;
        }
        progress.store(n as u64, Ordering::Relaxed);
        thread::sleep(TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: u64, threads: usize) -> Plan {
        Plan {
            symbols: Vec::new(),
            families: Vec::new(),
            stage_median_ns: Vec::new(),
            slow: Vec::new(),
            slow_factor: 1.0,
            sample_every: 1,
            threads,
            rate,
            secs: 1,
            seed: 0,
        }
    }

    #[test]
    fn the_rate_is_split_to_the_record() {
        for (rate, threads) in [(200_000, 2), (20_001, 2), (7, 3), (1, 4)] {
            let plan = plan(rate, threads);
            let rates: Vec<u64> = (0..threads).map(|p| plan.rate_of(p)).collect();
            assert_eq!(rates.iter().sum::<u64>(), rate, "{rates:?}");
            assert!(rates.iter().max().unwrap() - rates.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn slow_symbols_are_as_many_as_asked_and_spread() {
        let slow = slow_symbols(5_000, 10);
        let at: Vec<usize> = (0..5_000).filter(|&i| slow[i]).collect();
        assert_eq!(at, (0..10).map(|k| 250 + 500 * k).collect::<Vec<_>>());
        assert_eq!(slow_symbols(7, 3).iter().filter(|s| **s).count(), 3);
        assert_eq!(slow_symbols(3, 10), vec![true; 3]);
        assert!(slow_symbols(100, 0).iter().all(|s| !s));
    }
}
