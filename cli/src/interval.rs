//! Confidence intervals for the gate: a bootstrap of the relative change of a percentile between
//! two histograms, and Newcombe's score interval for the change of a deadline-miss proportion.
//!
//! # Bootstrapping a percentile from a histogram without resampling it
//!
//! Resampling `n` values from a histogram of `n` counts and taking the nearest-rank `q`-quantile of
//! the resample is the same as taking the `k`-th order statistic (`k = ⌈q·n⌉`) of `n` draws from
//! the histogram's distribution. That order statistic is `F⁻¹(U₍ₖ₎)`, where `U₍ₖ₎`, the `k`-th of
//! `n` sorted uniforms, is `Beta(k, n − k + 1)` distributed. So one bootstrap replicate is one Beta
//! draw and one look-up in the histogram's cumulative counts ([`QuantileSampler`]): its cost does
//! not depend on `n`, and a histogram of millions of counts is as quick as one of a hundred.

use rand::Rng;
use rand_distr::{Beta, Binomial, Distribution};
use statrs::distribution::{ContinuousCDF, Normal};

use laptime::profile::Histogram;

/// A histogram's inverse CDF: its non-empty buckets' values with their cumulative counts.
#[derive(Debug, Clone)]
pub struct QuantileSampler {
    /// Each non-empty bucket's highest equivalent value, clamped to the stage's exact [min, max],
    /// ascending.
    values: Vec<u64>,
    /// `cumulative[i]` = counts in buckets `0..=i` (saturating); ascending, last = `total`.
    cumulative: Vec<u64>,
    total: u64,
    /// How many of the values are independent draws: `total`, except for a coordinated-omission
    /// corrected histogram, whose added values are derived from the spans that added them.
    independent: u64,
}

impl QuantileSampler {
    /// The inverse CDF of `histogram`. Values are the buckets' highest equivalent values clamped to
    /// `[min, max]`, the convention of a profile's percentile fields, so
    /// [`quantile`](Self::quantile) gives the figures the profile shows.
    pub fn new(histogram: &Histogram, min: u64, max: u64) -> Self {
        let mut values = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0u64;
        for v in histogram.iter_recorded() {
            // Saturating: the counts come from a file.
            total = total.saturating_add(v.count_at_value());
            values.push(v.value_iterated_to().clamp(min, max.max(min)));
            cumulative.push(total);
        }
        QuantileSampler {
            values,
            cumulative,
            total,
            independent: total,
        }
    }

    /// Resamples as if only `n` of the values were independent draws (at most `total`): for a
    /// corrected histogram, `n` = the spans really measured. Its added values come in runs, one
    /// run per stall, so resampling them one by one would give intervals far too narrow (about
    /// ten times on the demo's A/A runs).
    pub fn with_independent(mut self, n: u64) -> Self {
        self.independent = n.clamp(1, self.total.max(1));
        self
    }

    /// Counts in the histogram.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The value of rank `rank` (1-based, clamped to `1..=total`); 0 for an empty histogram.
    pub fn value_at_rank(&self, rank: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = rank.clamp(1, self.total);
        let i = self.cumulative.partition_point(|&c| c < rank);
        self.values[i]
    }

    /// The nearest-rank `q`-quantile ([`laptime::rank`]).
    pub fn quantile(&self, q: f64) -> u64 {
        self.value_at_rank(laptime::rank(q, self.total))
    }

    /// The `q`-quantile of one bootstrap resample of `n` values (`n` = the independent ones):
    /// the order statistic of rank `⌈q·n⌉` is `F⁻¹(u)` with `u ~ Beta(k, n − k + 1)`.
    pub fn resampled_quantile<R: Rng + ?Sized>(&self, q: f64, rng: &mut R) -> u64 {
        let n = self.independent.min(self.total);
        if n <= 1 {
            return self.value_at_rank(1);
        }
        let u = beta_order_statistic(q, n, rng);
        // The rank whose cumulative share first reaches u: the inverse CDF at u.
        let rank = (u * self.total as f64).ceil() as u64;
        self.value_at_rank(rank)
    }
}

/// One side of a comparison: the inverse CDFs of the same stage in one or more runs (processes,
/// machines, rounds of a benchmark).
///
/// Within one run the values are draws of one distribution, but runs differ from each other as
/// well: another process wakes up, a thread lands on a busy core, a cache is warm or not. A
/// bootstrap over the values alone measures only the first kind of noise, and on this project's
/// 2-core machines two sets of runs of one build differed by 10–45 % at p95 with intervals ±4 %
/// wide. So with several runs one replicate first resamples the runs with replacement, then
/// draws the quantile of the values pooled from the runs it drew (a two-level bootstrap): the
/// interval then covers the spread between runs as far as the runs show it.
///
/// A replicate draws `runs − 1` runs, not `runs`: a bootstrap of `n` clusters sees their spread
/// as `(n − 1)/n` of what it is, too narrow with the few runs a pipeline has, and `n − 1` draws
/// make the variance of a mean over runs exactly the unbiased one. With two runs each replicate
/// is one run.
///
/// The interval is conservative when the runs do not differ: a run's own sampling noise is then
/// counted at both levels, and the interval is about `√(1 + k/(k − 1))` times as wide as the
/// one-level interval of the merged values (1.5× for six runs). When runs do differ, as they do on
/// shared machines, the one-level interval is far too narrow: 43 % of A/A comparisons of one
/// demo run per side failed the gate, against 2 % of six runs per side (benches/README.md).
#[derive(Debug, Clone)]
pub struct RunSamplers {
    runs: Vec<QuantileSampler>,
    /// Every run's bucket values, sorted and deduplicated: the candidates of a pooled look-up.
    values: Vec<u64>,
}

impl RunSamplers {
    /// The runs of one side (at least one; an empty list is treated as one empty run).
    pub fn new(mut runs: Vec<QuantileSampler>) -> Self {
        if runs.is_empty() {
            runs.push(QuantileSampler {
                values: Vec::new(),
                cumulative: Vec::new(),
                total: 0,
                independent: 0,
            });
        }
        let mut values: Vec<u64> = runs.iter().flat_map(|r| r.values.iter().copied()).collect();
        values.sort_unstable();
        values.dedup();
        RunSamplers { runs, values }
    }

    /// How many runs this side holds.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The nearest-rank `q`-quantile of every run's values pooled: the merged profile's figure.
    pub fn quantile(&self, q: f64) -> u64 {
        if let [one] = self.runs.as_slice() {
            return one.quantile(q);
        }
        let weights = vec![1u64; self.runs.len()];
        let total = self.pooled(&weights, |r| r.total);
        self.pooled_value_at_rank(&weights, laptime::rank(q, total))
    }

    /// The `q`-quantile of one bootstrap replicate: the runs resampled with replacement (when
    /// there are several), then the order statistic of their pooled values, drawn as in
    /// [`QuantileSampler::resampled_quantile`].
    pub fn resampled_quantile<R: Rng + ?Sized>(&self, q: f64, rng: &mut R) -> u64 {
        if let [one] = self.runs.as_slice() {
            return one.resampled_quantile(q, rng);
        }
        let weights = resampled_weights(self.runs.len(), rng);
        let total = self.pooled(&weights, |r| r.total);
        let n = self.pooled(&weights, |r| r.independent).min(total);
        if n <= 1 {
            return self.pooled_value_at_rank(&weights, 1);
        }
        let u = beta_order_statistic(q, n, rng);
        self.pooled_value_at_rank(&weights, (u * total as f64).ceil() as u64)
    }

    /// `Σ weight × field(run)`, saturating.
    fn pooled(&self, weights: &[u64], field: impl Fn(&QuantileSampler) -> u64) -> u64 {
        self.runs.iter().zip(weights).fold(0u64, |sum, (r, &w)| {
            sum.saturating_add(field(r).saturating_mul(w))
        })
    }

    /// The value of rank `rank` among the runs' values, each run counted `weight` times: the
    /// smallest bucket value whose pooled cumulative count reaches the rank.
    fn pooled_value_at_rank(&self, weights: &[u64], rank: u64) -> u64 {
        let total = self.pooled(weights, |r| r.total);
        if total == 0 {
            return 0;
        }
        let rank = rank.clamp(1, total);
        let at_or_below = |v: u64| {
            self.pooled(weights, |r| match r.values.partition_point(|&x| x <= v) {
                0 => 0,
                i => r.cumulative[i - 1],
            })
        };
        let i = self.values.partition_point(|&v| at_or_below(v) < rank);
        self.values[i.min(self.values.len() - 1)]
    }
}

impl From<QuantileSampler> for RunSamplers {
    fn from(one: QuantileSampler) -> Self {
        RunSamplers::new(vec![one])
    }
}

/// How many times each of `runs` runs is drawn when `runs − 1` (at least one) are drawn with
/// replacement (see [`RunSamplers`] for why one fewer).
fn resampled_weights<R: Rng + ?Sized>(runs: usize, rng: &mut R) -> Vec<u64> {
    let mut weights = vec![0u64; runs];
    for _ in 0..runs.saturating_sub(1).max(1) {
        weights[rng.random_range(0..runs)] += 1;
    }
    weights
}

/// The share `u` of the order statistic of rank `⌈q·n⌉` among `n` uniforms (`n ≥ 2`).
fn beta_order_statistic<R: Rng + ?Sized>(q: f64, n: u64, rng: &mut R) -> f64 {
    let k = laptime::rank(q, n).clamp(1, n);
    // Both shapes are ≥ 1, so `Beta::new` cannot fail; a failure would be a bug here.
    let beta = Beta::new(k as f64, (n - k + 1) as f64).expect("Beta shapes are at least 1");
    beta.sample(rng)
}

/// `100 × (current − baseline) / baseline`: 0 when both are 0, +∞ when only the baseline is.
pub fn relative_pct(baseline: f64, current: f64) -> f64 {
    if baseline == 0.0 {
        if current == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        100.0 * (current - baseline) / baseline
    }
}

/// The two-sided `confidence` percentile interval of the relative change (in percent) of the
/// `q`-quantile from `baseline` to `current`, from `replicates` bootstrap replicates.
pub fn bootstrap_relative_pct<R: Rng + ?Sized>(
    baseline: &RunSamplers,
    current: &RunSamplers,
    q: f64,
    confidence: f64,
    replicates: usize,
    rng: &mut R,
) -> (f64, f64) {
    let deltas = (0..replicates.max(1)).map(|_| {
        let b = baseline.resampled_quantile(q, rng) as f64;
        let c = current.resampled_quantile(q, rng) as f64;
        relative_pct(b, c)
    });
    percentile_interval(deltas.collect(), confidence)
}

/// The two-sided `confidence` percentile interval of bootstrap replicates.
fn percentile_interval(mut replicates: Vec<f64>, confidence: f64) -> (f64, f64) {
    replicates.sort_by(f64::total_cmp);
    let alpha = 1.0 - confidence;
    let n = replicates.len() as u64;
    let lo = replicates[(laptime::rank(alpha / 2.0, n) - 1) as usize];
    let hi = replicates[(laptime::rank(1.0 - alpha / 2.0, n) - 1) as usize];
    (lo, hi)
}

/// One run's deadline misses: `(misses, spans)`.
pub type MissCount = (u64, u64);

/// The two-sided `confidence` interval of the change of a miss proportion, `current − baseline`,
/// from runs on each side: a two-level bootstrap like [`RunSamplers::resampled_quantile`]'s.
/// Each replicate resamples each side's runs with replacement, pools their misses and spans,
/// and draws the side's proportion as a binomial count of the pooled spans at the pooled share
/// (the within-run noise Newcombe's interval covers for one run per side).
pub fn bootstrap_miss_difference<R: Rng + ?Sized>(
    baseline: &[MissCount],
    current: &[MissCount],
    confidence: f64,
    replicates: usize,
    rng: &mut R,
) -> (f64, f64) {
    let deltas = (0..replicates.max(1)).map(|_| {
        let b = resampled_miss_share(baseline, rng);
        let c = resampled_miss_share(current, rng);
        c - b
    });
    percentile_interval(deltas.collect(), confidence)
}

/// One replicate's miss share of one side (0 for a side with no spans).
fn resampled_miss_share<R: Rng + ?Sized>(runs: &[MissCount], rng: &mut R) -> f64 {
    let weights = resampled_weights(runs.len(), rng);
    let (mut misses, mut spans) = (0u64, 0u64);
    for (&(x, n), w) in runs.iter().zip(weights) {
        misses = misses.saturating_add(x.saturating_mul(w));
        spans = spans.saturating_add(n.saturating_mul(w));
    }
    if spans == 0 {
        return 0.0;
    }
    let share = (misses as f64 / spans as f64).clamp(0.0, 1.0);
    if spans > EXACT_BINOMIAL_SPANS {
        // rand_distr's binomial panics past 2⁶³ trials (a crafted file can hold that many); at
        // this size the normal approximation is exact to far below the figures' resolution.
        let sd = (share * (1.0 - share) / spans as f64).sqrt();
        let z: f64 = rng.sample(rand_distr::StandardNormal);
        return (share + sd * z).clamp(0.0, 1.0);
    }
    // `share` is in [0, 1], so `Binomial::new` cannot fail; a failure would be a bug here.
    let draw = Binomial::new(spans, share).expect("a share in [0, 1]");
    draw.sample(rng) as f64 / spans as f64
}

/// Spans up to which a replicate's misses are drawn from the binomial itself.
const EXACT_BINOMIAL_SPANS: u64 = 1 << 40;

/// The standard normal quantile of `p` (0 < p < 1).
pub fn normal_quantile(p: f64) -> f64 {
    // `standard()` has fixed valid parameters.
    Normal::standard().inverse_cdf(p)
}

/// Wilson's score interval for a proportion `x / n` at `confidence`; `(0, 1)` when `n` is 0.
pub fn wilson(x: u64, n: u64, confidence: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0);
    let (n, p) = (n as f64, x as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Newcombe's hybrid score interval (his method 10, 1998) for the difference of two independent
/// proportions `x2/n2 − x1/n1`, built from the two Wilson intervals. Unlike the plain Wald
/// interval it stays sensible for proportions near 0 (a deadline is rarely missed) and for small
/// counts.
pub fn newcombe_difference(x1: u64, n1: u64, x2: u64, n2: u64, confidence: f64) -> (f64, f64) {
    let p1 = if n1 == 0 { 0.0 } else { x1 as f64 / n1 as f64 };
    let p2 = if n2 == 0 { 0.0 } else { x2 as f64 / n2 as f64 };
    let (l1, u1) = wilson(x1, n1, confidence);
    let (l2, u2) = wilson(x2, n2, confidence);
    let d = p2 - p1;
    let lo = d - ((p2 - l2).powi(2) + (u1 - p1).powi(2)).sqrt();
    let hi = d + ((u2 - p2).powi(2) + (p1 - l1).powi(2)).sqrt();
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_the_table() {
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-9);
        assert!((normal_quantile(0.95) - 1.644_853_626_951_472_2).abs() < 1e-9);
    }

    /// Newcombe (1998), Statistics in Medicine 17, 873–890, table II, example (a): 56/70 − 48/80,
    /// method 10 gives 0.0524 to 0.3339.
    #[test]
    fn newcombe_matches_the_paper() {
        let (lo, hi) = newcombe_difference(48, 80, 56, 70, 0.95);
        assert!((lo - 0.0524).abs() < 5e-5, "lower {lo}");
        assert!((hi - 0.3339).abs() < 5e-5, "upper {hi}");
    }

    /// With only `n` independent draws the interval is as wide as the normal approximation of
    /// the order statistic says for `n`, not for the histogram's total: for values uniform on
    /// (0, M], the median's share u has sd √(q(1−q)/n), so the relative change of two
    /// independent medians has sd √2·sd/q and a 95 % interval about 2·1.96 times that.
    #[test]
    fn fewer_independent_draws_widen_the_interval_as_the_normal_approximation_says() {
        use rand::SeedableRng;
        let mut h = Histogram::new_with_bounds(1, 1_000_000, 3).unwrap();
        for v in 1..=100_000u64 {
            h.record(v).unwrap();
        }
        let all = QuantileSampler::new(&h, 1, 100_000);
        let (q, replicates) = (0.5, 4_000);
        for n in [100u64, 10_000] {
            let s = RunSamplers::from(QuantileSampler::new(&h, 1, 100_000).with_independent(n));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n);
            let (lo, hi) = bootstrap_relative_pct(&s, &s, q, 0.95, replicates, &mut rng);
            let expected = 2.0 * 1.96 * 2f64.sqrt() * (q * (1.0 - q) / n as f64).sqrt() / q * 100.0;
            let width = hi - lo;
            assert!(
                (width / expected - 1.0).abs() < 0.1,
                "n = {n}: width {width:.2} %, normal approximation {expected:.2} %"
            );
        }
        assert_eq!(all.independent, all.total());
    }

    /// Wilson's interval for 0/10 at 95 %: [0, 0.2775] (Newcombe 1998, table I).
    #[test]
    fn wilson_zero_events() {
        let (lo, hi) = wilson(0, 10, 0.95);
        assert!(lo.abs() < 1e-12, "lower {lo}");
        assert!((hi - 0.2775).abs() < 5e-5, "upper {hi}");
    }

    fn sampler(values: &[u64]) -> QuantileSampler {
        let mut h = Histogram::new_with_bounds(1, 1_000_000, 3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        let (min, max) = (*values.iter().min().unwrap(), *values.iter().max().unwrap());
        QuantileSampler::new(&h, min, max)
    }

    #[test]
    fn quantile_is_nearest_rank_of_the_sorted_values() {
        let values: Vec<u64> = (1..=1000).map(|i| i * 7).collect();
        let s = sampler(&values);
        assert_eq!(s.total(), 1000);
        // Values below 2048 are exact at 3 significant digits.
        for (q, want) in [(0.5, 3500), (0.9, 6300), (0.001, 7), (0.0, 7), (1.0, 7000)] {
            let got = s.quantile(q);
            let tol = want / 500; // within the histogram's resolution
            assert!(got.abs_diff(want) <= tol, "q {q}: {got} vs {want}");
        }
        assert_eq!(s.value_at_rank(1), 7);
        assert_eq!(s.value_at_rank(1000), 7000);
        assert_eq!(s.value_at_rank(5000), 7000);
    }

    #[test]
    fn resampled_quantiles_of_a_constant_are_the_constant() {
        use rand::SeedableRng;
        let s = sampler(&[500; 100]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(s.resampled_quantile(0.99, &mut rng), 500);
        }
        let s = RunSamplers::from(s);
        let (lo, hi) = bootstrap_relative_pct(&s, &s, 0.95, 0.95, 200, &mut rng);
        assert_eq!((lo, hi), (0.0, 0.0));
    }

    #[test]
    fn relative_pct_edges() {
        assert_eq!(relative_pct(0.0, 0.0), 0.0);
        assert_eq!(relative_pct(0.0, 1.0), f64::INFINITY);
        assert_eq!(relative_pct(200.0, 210.0), 5.0);
    }
}
