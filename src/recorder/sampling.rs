//! Sampling decisions: random per call (never 1-in-k, which aliases with periodic work), cheap
//! when the call is skipped.
//!
//! Rates of one half and above keep a call when a fresh 64-bit draw falls below the rate's
//! threshold. Lower rates use a skip budget instead, so a skipped call costs a compare and a
//! subtraction and no draw: each thread holds a budget `E`, drawn from the unit exponential
//! distribution, and every call of a stage at rate `p` spends the hazard `λ = −ln(1 − p)` of it;
//! the call that finds `E ≤ λ` is kept and draws a new budget. Because the exponential
//! distribution is memoryless, `P(kept | not kept before) = 1 − e^{−λ} = p` for every call, so the
//! calls are independent Bernoulli(p) trials exactly as with one draw each, also when stages of
//! different rates interleave on a thread and when a rate changes mid-budget. (With one rate this
//! is the geometric skip count; the hazard form generalizes it to many rates on one counter.)
//!
//! Budgets and hazards are fixed-point with 56 fractional bits, and a budget is drawn from a
//! 53-bit uniform: a rate below 2⁻⁵⁷ (about 7 × 10⁻¹⁸) rounds to 0, and the keep probability of
//! any rate is exact to about 2⁻⁵³ (so relatively exact for every rate a user would set; a rate
//! near 2⁻⁵⁶ is off by up to half itself).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// One unit of hazard (or budget) in fixed point.
const ONE: f64 = (1u64 << 56) as f64;
/// Thresholds from here up (rates ≥ 1/2) are decided by a direct draw: a kept call is then the
/// common case, and a direct draw is cheaper than drawing a new exponential budget.
const DIRECT_FROM: u64 = 1 << 63;

/// A sampling rate as the hot path reads it: the keep threshold (`u64::MAX` keeps every call,
/// `rate × 2⁶⁴` otherwise) and the hazard the skip budget spends.
pub(crate) struct SamplingRate {
    threshold: AtomicU64,
    hazard: AtomicU64,
}

impl SamplingRate {
    /// Keeps every call.
    pub(crate) const fn keep_all() -> Self {
        Self {
            threshold: AtomicU64::new(u64::MAX),
            hazard: AtomicU64::new(u64::MAX),
        }
    }

    /// Sets the rate from its threshold. A call racing with this may read the old threshold with
    /// the new hazard: it is then decided at one rate or the other.
    pub(crate) fn set(&self, threshold: u64) {
        self.threshold.store(threshold, Ordering::Relaxed);
        self.hazard.store(hazard(threshold), Ordering::Relaxed);
    }

    #[inline(always)]
    pub(crate) fn threshold(&self) -> u64 {
        self.threshold.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub(crate) fn hazard(&self) -> u64 {
        self.hazard.load(Ordering::Relaxed)
    }
}

/// The fixed-point hazard `−ln(1 − p) × 2⁵⁶` of the rate `p = threshold / 2⁶⁴`.
pub(crate) fn hazard(threshold: u64) -> u64 {
    if threshold == u64::MAX {
        return u64::MAX;
    }
    let p = threshold as f64 / 2f64.powi(64);
    // ln_1p keeps small rates accurate; the result is at most ln(2⁶⁴) × 2⁵⁶ < 2⁶².
    (-(-p).ln_1p() * ONE).round() as u64
}

/// A thread's sampling state: its skip budget and its xorshift64* generator. Both start at 0; a
/// generator state of 0 means "not seeded yet".
pub(crate) struct Sampler {
    budget: Cell<u64>,
    rng: Cell<u64>,
}

impl Sampler {
    pub(crate) const fn new() -> Self {
        Self {
            budget: Cell::new(0),
            rng: Cell::new(0),
        }
    }

    /// Whether to keep a call at `threshold` (not `u64::MAX`: the caller keeps those without a
    /// decision), whose rate's hazard is `hazard`.
    #[cfg(test)]
    pub(crate) fn keep(&self, threshold: u64, hazard: u64) -> bool {
        self.decide(threshold, hazard)
            .unwrap_or_else(|| self.spent(threshold, hazard))
    }

    /// The common cases of a decision: `None` when the budget is spent or the sampler was never
    /// seeded, for [`Sampler::spent`] to settle out of line.
    #[inline(always)]
    pub(crate) fn decide(&self, threshold: u64, hazard: u64) -> Option<bool> {
        if threshold >= DIRECT_FROM {
            let x = self.rng.get();
            return (x != 0).then(|| self.step(x) < threshold);
        }
        let budget = self.budget.get();
        if budget > hazard {
            self.budget.set(budget - hazard);
            return Some(false);
        }
        None
    }

    /// Settles what [`Sampler::decide`] left: seeds a sampler that never was, then decides; else
    /// the budget is spent, so this call is kept and a new budget drawn.
    #[inline(never)]
    pub(crate) fn spent(&self, threshold: u64, hazard: u64) -> bool {
        if self.rng.get() == 0 {
            self.seed();
            return self.decide(threshold, hazard).unwrap_or(true);
        }
        self.refill();
        true
    }

    #[cold]
    fn seed(&self) {
        // Distinct per thread (the sampler's address) and per run (the clock).
        let here = std::ptr::from_ref(self).addr() as u64;
        self.rng
            .set(here.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ crate::clock::ticks() | 1);
        self.refill();
    }

    /// Draws a new budget from the unit exponential distribution: `−ln U` for `U` uniform in
    /// (0, 1], at least 1 (a budget of 0 would keep the next call at any rate, even 0).
    fn refill(&self) {
        let u = ((self.step(self.rng.get()) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        self.budget.set(((-u.ln() * ONE) as u64).max(1));
    }

    /// Advances the xorshift64* generator from state `x` (not 0) and returns its output.
    #[inline(always)]
    fn step(&self, mut x: u64) -> u64 {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A sampler with a fixed seed, for tests.
    #[cfg(test)]
    pub(crate) fn seeded(seed: u64) -> Self {
        let s = Self::new();
        s.rng.set(seed | 1);
        s.refill();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::rate_to_threshold;

    fn rate(r: f64) -> (u64, u64) {
        let t = rate_to_threshold(r).unwrap();
        (t, hazard(t))
    }

    /// The kept share of `n` calls at rate `r` is within 6 binomial standard deviations of `r`.
    fn assert_share(kept: u64, n: u64, r: f64, what: &str) {
        let sd = (n as f64 * r * (1.0 - r)).sqrt();
        let expected = n as f64 * r;
        assert!(
            (kept as f64 - expected).abs() <= 6.0 * sd + 1.0,
            "{what}: kept {kept} of {n}, expected {expected:.0} ± {sd:.0}"
        );
    }

    #[test]
    fn hazard_is_minus_log_of_the_skip_probability() {
        assert_eq!(hazard(u64::MAX), u64::MAX);
        assert_eq!(hazard(0), 0);
        for r in [1e-9, 1e-4, 0.01, 0.1, 0.25, 0.5, 0.9] {
            let (_, h) = rate(r);
            let back = -(-(h as f64) / ONE).exp_m1();
            // Exact to the fixed point's 2⁻⁵⁶ (and the float maths' relative 1e-12).
            let tolerance = 2f64.powi(-55) + r * 1e-12;
            assert!(
                (back - r).abs() <= tolerance,
                "rate {r}: hazard {h} gives {back}"
            );
        }
    }

    #[test]
    fn rate_zero_keeps_nothing_and_the_budget_never_runs_out() {
        let s = Sampler::new();
        let (t, h) = rate(0.0);
        assert!((0..100_000).all(|_| !s.keep(t, h)));
    }

    #[test]
    fn kept_share_matches_the_rate_at_every_rate() {
        // 2 M calls a rate: 6 standard deviations are ±13 % of the expected count at 0.001.
        let n = 2_000_000;
        for (i, r) in [0.001, 0.01, 0.1, 0.3, 0.49, 0.5, 0.75, 0.99]
            .into_iter()
            .enumerate()
        {
            let s = Sampler::seeded(0x1234_5678 + i as u64);
            let (t, h) = rate(r);
            let kept = (0..n).filter(|_| s.keep(t, h)).count() as u64;
            assert_share(kept, n, r, &format!("rate {r}"));
        }
    }

    #[test]
    fn interleaved_rates_on_one_budget_are_independent_trials() {
        // Three stages called in a fixed cycle on one thread, as a tick's stages are: each keeps
        // its own share, and two of them are kept together as often as independence says.
        let s = Sampler::seeded(7);
        let shares = [0.05, 0.2, 0.3];
        let rates = shares.map(rate);
        let n = 1_000_000;
        let mut kept = [0u64; 3];
        let mut both = 0u64;
        for _ in 0..n {
            let k = rates.map(|(t, h)| s.keep(t, h));
            for (count, kept_now) in kept.iter_mut().zip(k) {
                *count += u64::from(kept_now);
            }
            both += u64::from(k[0] && k[1]);
        }
        for (k, r) in kept.into_iter().zip(shares) {
            assert_share(k, n, r, &format!("stage at {r} among others"));
        }
        assert_share(both, n, shares[0] * shares[1], "two stages kept together");
    }

    #[test]
    fn gaps_between_kept_calls_are_geometric_not_periodic() {
        // 1-in-10 would give gaps of exactly 10 (variance 0); independent draws give a geometric
        // gap: mean 1/p = 10, variance (1 − p)/p² = 90.
        let s = Sampler::seeded(99);
        let (t, h) = rate(0.1);
        let mut gaps = Vec::new();
        let mut since = 0u64;
        for _ in 0..1_000_000 {
            since += 1;
            if s.keep(t, h) {
                gaps.push(since as f64);
                since = 0;
            }
        }
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!((mean - 10.0).abs() < 0.3, "mean gap {mean}");
        assert!((var - 90.0).abs() < 9.0, "gap variance {var}");
    }

    #[test]
    fn the_first_call_after_a_rate_change_is_kept_at_the_new_rate() {
        // Many threads' samplers, each deep in a budget drawn at a low rate: one call at 0.4 must
        // be kept by 40 % of them. A skip count drawn in calls at the old rate would keep almost
        // none (its count runs to thousands).
        let samplers = 20_000;
        let (t0, h0) = rate(0.0001);
        let (t, h) = rate(0.4);
        let kept = (0..samplers)
            .filter(|&i| {
                let s = Sampler::seeded(1_000 + i);
                (0..1000).for_each(|_| {
                    s.keep(t0, h0);
                });
                s.keep(t, h)
            })
            .count() as u64;
        assert_share(kept, samplers, 0.4, "first call after raising the rate");
    }

    #[test]
    fn an_unseeded_sampler_seeds_itself() {
        let s = Sampler::new();
        let (t, h) = rate(0.2);
        let kept = (0..100_000).filter(|_| s.keep(t, h)).count() as u64;
        assert_share(kept, 100_000, 0.2, "unseeded");
        let direct = Sampler::new();
        let (t, h) = rate(0.8);
        let kept = (0..100_000).filter(|_| direct.keep(t, h)).count() as u64;
        assert_share(kept, 100_000, 0.8, "unseeded, direct");
    }
}
