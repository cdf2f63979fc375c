//! The gate over several runs per side (`gate_runs`, `laptime gate --baseline a b`): point values
//! against the merged profile and the raw values, the two-level bootstrap against its classical
//! definition, and the verdicts on runs that drift.

mod common;

use common::{Spec, dir, laptime, row, stderr, stdout, write};
use laptime::profile::Profile;
use laptime_cli::gate::{GateOptions, IntervalMethod, Metric, Verdict, gate, gate_runs};
use laptime_cli::interval::{
    QuantileSampler, RunSamplers, bootstrap_miss_difference, bootstrap_relative_pct,
    newcombe_difference,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` exponential values of mean `mean` times `scale`, capped at 2047 ns: below 2048 a
/// 3-digit histogram holds every value exactly, so its quantiles are the raw values'.
fn exact_values(n: usize, mean: f64, scale: f64, seed: u64) -> Vec<u64> {
    common::exponential_values(n, mean, seed)
        .into_iter()
        .map(|v| ((v as f64 * scale).round() as u64).clamp(1, 2047))
        .collect()
}

/// One run: a profile with one stage `s` holding `values`.
fn run(name: &str, values: &[u64]) -> Profile {
    common::profile(
        name,
        3,
        vec![common::stage_from_values("s", &[], values, 3, None)],
    )
}

fn sampler(values: &[u64], range: (u64, u64)) -> QuantileSampler {
    let s = common::stage_from_values("s", &[], values, 3, None);
    QuantileSampler::new(&s.histogram().unwrap().unwrap(), range.0, range.1)
}

/// The nearest-rank `q`-quantile of `values` (sorted in place).
fn nearest_rank(values: &mut [u64], q: f64) -> u64 {
    values.sort_unstable();
    values[laptime::rank(q, values.len() as u64) as usize - 1]
}

/// The row's point values are the nearest-rank percentiles of every run's raw values pooled,
/// which is also what `laptime merge` writes for the merged profile.
#[test]
fn point_values_are_the_pooled_runs_percentiles() {
    let scales = [1.0, 1.3, 0.9, 1.1];
    let runs: Vec<Vec<u64>> = (0..4)
        .map(|i| exact_values(3_000 + 500 * i, 300.0, scales[i], 10 + i as u64))
        .collect();
    let profiles: Vec<Profile> = runs.iter().map(|v| run("r", v)).collect();
    let report = gate_runs(&profiles, &profiles[..1], &GateOptions::default()).unwrap();
    let merged = Profile::merge("m", &profiles).unwrap();
    let mut pooled: Vec<u64> = runs.concat();
    for (metric, q, field) in [
        (Metric::P95, 0.95, merged.stages[0].p95_ns),
        (Metric::P99, 0.99, merged.stages[0].p99_ns),
    ] {
        let r = row(&report, "s", metric);
        let exact = nearest_rank(&mut pooled, q);
        assert_eq!(
            r.baseline as u64, exact,
            "{metric:?} against the raw values"
        );
        assert_eq!(r.baseline as u64, field, "{metric:?} against laptime merge");
        assert_eq!(r.method, Some(IntervalMethod::RunBootstrap));
    }
    assert_eq!((report.baseline_runs, report.current_runs), (4, 1));
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("current side is one run")),
        "{:?}",
        report.notes
    );
}

/// The shortcut (runs resampled as weights, the pooled order statistic drawn as one Beta
/// variate) gives the interval of the two-level bootstrap done by hand on the raw values: draw
/// `k − 1` runs with replacement, pool their values, resample as many values with replacement,
/// take the nearest-rank quantile.
#[test]
fn run_bootstrap_matches_its_classical_definition() {
    let (q, k, n) = (0.95, 4usize, 1_000usize);
    let side = |seed: u64, scales: [f64; 4]| -> Vec<Vec<u64>> {
        (0..k)
            .map(|i| exact_values(n, 300.0, scales[i], seed + i as u64))
            .collect()
    };
    let b = side(100, [1.0, 1.2, 0.95, 1.05]);
    let c = side(200, [1.1, 1.0, 1.3, 0.9]);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let replicates = 2_000;
    let mut classical_replicate = |runs: &[Vec<u64>]| {
        let mut pool = Vec::new();
        for _ in 0..k - 1 {
            pool.extend_from_slice(&runs[rng.random_range(0..k)]);
        }
        let mut drawn: Vec<u64> = (0..pool.len())
            .map(|_| pool[rng.random_range(0..pool.len())])
            .collect();
        nearest_rank(&mut drawn, q) as f64
    };
    let mut deltas: Vec<f64> = (0..replicates)
        .map(|_| {
            let (qb, qc) = (classical_replicate(&b), classical_replicate(&c));
            100.0 * (qc - qb) / qb
        })
        .collect();
    deltas.sort_by(f64::total_cmp);
    let classical = (deltas[49], deltas[1949]);

    let samplers = |runs: &[Vec<u64>]| {
        let range = (
            *runs.iter().flatten().min().unwrap(),
            *runs.iter().flatten().max().unwrap(),
        );
        RunSamplers::new(runs.iter().map(|v| sampler(v, range)).collect())
    };
    let shortcut = bootstrap_relative_pct(&samplers(&b), &samplers(&c), q, 0.95, 4_000, &mut rng);
    common::assert_same_interval(shortcut, classical);
}

/// Asserts that the mean of two-level to one-level width ratios, for `k` runs that do not
/// differ, is within 5 % of `√(1 + k/(k − 1))`.
fn assert_widened_by_both_levels(ratios: &[f64], k: usize) {
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let predicted = (1.0 + k as f64 / (k as f64 - 1.0)).sqrt();
    assert!(
        (mean / predicted - 1.0).abs() < 0.05,
        "width ratio {mean:.3} vs predicted {predicted:.3}: {ratios:?}"
    );
}

/// When runs do not differ, the two-level interval counts a run's sampling noise twice: its
/// variance is `1 + k/(k − 1)` times the one-level interval's of the merged values (the runs'
/// spread seen through `k − 1` draws, plus the values drawn again within them). The mean width
/// over eight pairs must be within 5 % of that (measured: +1.8 %; with `k` draws, not
/// `k − 1`, it would be 9 % narrower).
#[test]
fn runs_that_do_not_differ_widen_the_interval_by_the_predicted_factor() {
    let (q, k, n) = (0.95, 6usize, 20_000usize);
    let mut ratios = Vec::new();
    for pair in 0..8u64 {
        let runs = |seed: u64| -> Vec<QuantileSampler> {
            (0..k)
                .map(|i| {
                    let v = common::exponential_values(n, 100_000.0, seed + i as u64);
                    sampler(&v, (1, u64::MAX))
                })
                .collect()
        };
        let (b, c) = (runs(1_000 * pair), runs(1_000 * pair + 500));
        // The same values as one run each side: the one-level interval.
        let pooled = |seed: u64| {
            let values: Vec<u64> = (0..k)
                .flat_map(|i| common::exponential_values(n, 100_000.0, seed + i as u64))
                .collect();
            RunSamplers::from(sampler(&values, (1, u64::MAX)))
        };
        let mut rng = ChaCha8Rng::seed_from_u64(pair);
        let two = bootstrap_relative_pct(
            &RunSamplers::new(b),
            &RunSamplers::new(c),
            q,
            0.95,
            4_000,
            &mut rng,
        );
        let one = bootstrap_relative_pct(
            &pooled(1_000 * pair),
            &pooled(1_000 * pair + 500),
            q,
            0.95,
            4_000,
            &mut rng,
        );
        ratios.push((two.1 - two.0) / (one.1 - one.0));
    }
    assert_widened_by_both_levels(&ratios, k);
}

/// Six runs a side of the demo's tick shape, each run's values multiplied by its `scales` entry
/// (a run on a busy machine is slower throughout).
fn runs(scales: &[f64], seed: u64) -> Vec<Profile> {
    scales
        .iter()
        .enumerate()
        .map(|(i, &scale)| {
            let spec = Spec {
                scale,
                n: 5_000,
                ..Spec::new("tick_total", 420_000.0, 0.35)
            };
            common::profile("run", 3, vec![common::stage(&spec, seed + i as u64, 3)])
        })
        .collect()
}

/// Runs of one build where a busy neighbour slowed two of the current side's six by 30 %: the
/// merged profiles judged as one run each fail the gate, the runs judged as runs pass it. A 10 %
/// slowdown of every current run still fails.
#[test]
fn drift_between_runs_widens_the_interval_and_a_real_shift_still_fails() {
    let o = GateOptions::default();
    let baseline = runs(&[1.0; 6], 1);
    let drifted = runs(&[1.0, 1.3, 1.0, 1.0, 1.3, 1.0], 101);
    let merged = |runs: &[Profile]| Profile::merge("m", runs).unwrap();
    let as_one = gate(&merged(&baseline), &merged(&drifted), &o).unwrap();
    assert!(!as_one.passed(), "{}", as_one.to_markdown());
    let as_runs = gate_runs(&baseline, &drifted, &o).unwrap();
    assert!(as_runs.passed(), "{}", as_runs.to_markdown());
    let p95 = row(&as_runs, "tick_total", Metric::P95);
    assert!(
        p95.delta > o.p95_pct,
        "the point change is past the threshold: {p95:?}"
    );
    assert_eq!(p95.verdict, Verdict::WithinNoise);

    let slower = runs(&[1.1; 6], 201);
    let report = gate_runs(&baseline, &slower, &o).unwrap();
    for metric in [Metric::P95, Metric::P99] {
        let r = row(&report, "tick_total", metric);
        assert_eq!(r.verdict, Verdict::Regression, "{}", report.to_markdown());
    }
}

/// Deadline misses over runs: when the runs' miss shares differ only by binomial noise, the
/// two-level interval is `√(1 + k/(k − 1))` times Newcombe's on the pooled counts (each run's
/// noise counted at both levels, as for percentiles; the mean over 40 pairs must be within 5 % (measured: −0.4 %),
/// one pair's spread of six runs scatters widely); when one run of a side misses far more, the
/// interval widens to hold it.
#[test]
fn miss_intervals_over_runs() {
    let (k, n, p) = (6usize, 20_000u64, 0.05);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let binomial = rand_distr::Binomial::new(n, p).unwrap();
    let mut side = || -> Vec<(u64, u64)> {
        (0..k)
            .map(|_| (rand_distr::Distribution::sample(&binomial, &mut rng), n))
            .collect()
    };
    let total = |runs: &[(u64, u64)]| runs.iter().fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
    let mut ratios = Vec::new();
    let mut pairs = Vec::new();
    for _ in 0..40 {
        pairs.push((side(), side()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (b, c) in &pairs {
        let ((xb, nb), (xc, nc)) = (total(b), total(c));
        let newcombe = newcombe_difference(xb, nb, xc, nc, 0.95);
        let runs = bootstrap_miss_difference(b, c, 0.95, 2_000, &mut rng);
        ratios.push((runs.1 - runs.0) / (newcombe.1 - newcombe.0));
    }
    assert_widened_by_both_levels(&ratios, k);

    let (b, c) = &pairs[0];
    let (xb, nb) = total(b);
    let mut outlier = c.clone();
    outlier[2].0 = n / 4; // one run missed 25 %
    let (xo, no) = total(&outlier);
    let pooled = newcombe_difference(xb, nb, xo, no, 0.95);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let wide = bootstrap_miss_difference(b, &outlier, 0.95, 20_000, &mut rng);
    assert!(
        wide.0 < 0.0 && pooled.0 > 0.02,
        "one bad run: runs {wide:?} reach below no change, the pooled counts {pooled:?} do not"
    );
}

/// `laptime gate` takes several files a side, as one option with many values or the option
/// repeated; the report names them and says how the intervals were made; runs that cannot be
/// merged (different histogram precision) exit 2 naming the side.
#[test]
fn the_command_takes_several_runs_a_side() {
    let d = dir("the_command_takes_several_runs_a_side");
    let files = |side: &str, profiles: &[Profile]| -> Vec<std::path::PathBuf> {
        profiles
            .iter()
            .enumerate()
            .map(|(i, p)| write(&d, &format!("{side}-{i}.json"), p))
            .collect()
    };
    let b = files("b", &runs(&[1.0; 3], 1));
    let c = files("c", &runs(&[1.0; 3], 11));
    let out = laptime(
        ["gate", "--baseline"]
            .iter()
            .map(std::ffi::OsStr::new)
            .chain(b.iter().map(|p| p.as_os_str()))
            .chain(["--current".as_ref(), c[0].as_os_str()])
            .chain(["--current".as_ref(), c[1].as_os_str()])
            .chain(["--current".as_ref(), c[2].as_os_str()]),
    );
    let md = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{md}{}", stderr(&out));
    let names = |paths: &[std::path::PathBuf]| {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        names.join(", ")
    };
    assert!(
        md.contains(&format!("- baseline: {} (3 runs, merged)", names(&b))),
        "{md}"
    );
    assert!(md.contains("two-level bootstrap"), "{md}");

    let mut coarse = runs(&[1.0], 21);
    coarse[0] = common::profile(
        "coarse",
        2,
        vec![common::stage(
            &Spec::new("tick_total", 420_000.0, 0.35),
            21,
            2,
        )],
    );
    let odd = write(&d, "coarse.json", &coarse[0]);
    let out = laptime(
        ["gate", "--baseline"]
            .iter()
            .map(std::ffi::OsStr::new)
            .chain([b[0].as_os_str(), odd.as_os_str()])
            .chain(["--current".as_ref(), c[0].as_os_str()]),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the baseline runs cannot be merged"), "{err}");
}

/// A run where the stage recorded nothing is left out of its side's resampling: a replicate of
/// empty runs would read 0 ns, a change of −100 % or +∞, and hide a real regression.
#[test]
fn a_run_where_the_stage_recorded_nothing_is_left_out() {
    let empty = || {
        let stage = common::stage_from_values("tick_total", &[], &[], 3, None);
        assert_eq!(stage.count, 0);
        common::profile("idle run", 3, vec![stage])
    };
    // Two runs a side, one of them idle: half the replicates would draw only the idle one.
    let mut baseline = runs(&[1.0], 1);
    baseline.push(empty());
    let mut slower = runs(&[1.1], 201);
    slower.insert(0, empty());
    let report = gate_runs(&baseline, &slower, &GateOptions::default()).unwrap();
    for metric in [Metric::P95, Metric::P99] {
        let r = row(&report, "tick_total", metric);
        let (lo, hi) = r.interval.unwrap();
        assert!(lo.is_finite() && hi.is_finite() && lo > -100.0, "{r:?}");
    }
    let p95 = row(&report, "tick_total", Metric::P95);
    assert_eq!(p95.verdict, Verdict::Regression, "{}", report.to_markdown());
}

/// Miss counts from a crafted file near `u64::MAX`, on a side of several runs: judged, not a
/// panic in the binomial draw (which refuses more than 2⁶³ trials).
#[test]
fn huge_miss_counts_over_runs_do_not_panic() {
    let values = common::lognormal_values(&Spec::new("tick_total", 420_000.0, 0.35), 3);
    let mut huge = common::stage_from_values("tick_total", &[], &values, 3, None);
    huge.deadline_misses = u64::MAX / 2 + 1;
    huge.deadline_miss_pct = 100.0;
    let huge = common::profile("huge", 3, vec![huge]);
    huge.validate().unwrap();
    let mut side = runs(&[1.0; 2], 1);
    side.push(huge);
    let report = gate_runs(&side, &side, &GateOptions::default()).unwrap();
    let r = row(&report, "tick_total", Metric::DeadlineMiss);
    assert_eq!(r.method, Some(IntervalMethod::RunBootstrap));
    let (lo, hi) = r.interval.unwrap();
    assert!(lo.is_finite() && hi.is_finite(), "{r:?}");
}
