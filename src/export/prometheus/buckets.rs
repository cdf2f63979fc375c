//! Bucket lists and counts: [`Bounds`] finds a value's bucket, [`StageBuckets`] counts one
//! stage's values on the aggregator thread, [`StageExport`] is what a cycle publishes of them.

use std::sync::Arc;
use std::time::Duration;

use crate::export::ExportError;
use crate::hist::Tally;
use crate::stage::Stage;

/// Most bounds one bucket list may have.
pub const MAX_BUCKETS: usize = 256;

/// The default bucket bounds: a 1-2-5 ladder from 1 µs to 10 s (22 bounds), so sub-microsecond
/// stages and multi-second stalls both resolve. The prometheus crate's own defaults start at 5 ms.
pub fn default_buckets() -> Vec<Duration> {
    let mut bounds = Vec::with_capacity(22);
    let mut decade = Duration::from_micros(1);
    while decade < Duration::from_secs(10) {
        bounds.extend([decade, decade * 2, decade * 5]);
        decade *= 10;
    }
    bounds.push(Duration::from_secs(10));
    bounds
}

/// A geometric ladder: bounds from `lowest` up to the first at or past `highest`, each
/// `2^(1/per_doubling)` times the one before (rounded to whole nanoseconds, repeats dropped).
///
/// Prometheus' `histogram_quantile` interpolates inside the bucket that holds the rank, so its
/// answer can be anywhere in that bucket: for a quantile inside the ladder, within a factor
/// `r = 2^(1/per_doubling)` of the true one, `−(1 − 1/r)` to `+(r − 1)`. 8 a doubling (`r ≈
/// 1.091`): −8.3 % to +9.1 %, where the default 1-2-5 ladder allows −60 % to +150 %; 1 µs to 10 s
/// then takes 188 bounds. The bound holds for buckets summed across processes too. A quantile
/// in the first bucket is interpolated from 0, and one past the last bound is that bound: keep
/// the ladder wider than the values. `per_doubling` counts as 1 to 1 024; `lowest` below 1 ns as
/// 1 ns.
pub fn geometric_buckets(lowest: Duration, highest: Duration, per_doubling: u32) -> Vec<Duration> {
    // Finer than 1 024 a doubling (0.07 % apart) no bucket list can span a useful range within
    // MAX_BUCKETS; the cap also bounds the loop below (64 doublings cover every u64).
    let per_doubling = per_doubling.clamp(1, 1024);
    let ratio = 2f64.powf(1.0 / f64::from(per_doubling));
    let (lowest, highest) = (lowest.as_nanos().max(1) as f64, highest.as_nanos() as f64);
    let mut bounds: Vec<Duration> = Vec::new();
    for k in 0..=64 * per_doubling {
        // k ≤ 65 536: fits an i32.
        let ns = (lowest * ratio.powi(k as i32)).round();
        let bound = Duration::from_nanos(ns as u64);
        if bounds.last() != Some(&bound) {
            bounds.push(bound);
        }
        // Past a few hundred bounds the builder refuses the list anyway (MAX_BUCKETS).
        if ns >= highest || bounds.len() > MAX_BUCKETS {
            break;
        }
    }
    bounds
}

/// A bucket list in nanoseconds, with what finds a value's bucket in a few instructions.
///
/// A value's bucket is the number of bounds below it. For a value in octave `k` (`2^k ..
/// 2^(k+1)`; 0 and 1 in octave 0) that number is at least `first[k]` (the bounds below the
/// octave) and at most `steps` more (the most bounds any octave holds): a 1-2-5 ladder has at most
/// one bound per octave, so one comparison after a table lookup settles it, where a binary search
/// over 22 bounds chains five dependent loads. In `benches/prometheus.rs` that took the exporter's
/// added drain cost from 2–12 ns to 0–7 ns per record (`benches/README.md`, "Prometheus export").
/// Lists with more than [`MAX_STEPS`] bounds in one octave use the binary search.
pub(crate) struct Bounds {
    /// The bounds, strictly increasing, then one `u64::MAX`: no value is above it, so the stepping
    /// stops there at the latest.
    ns: Box<[u64]>,
    /// How many bounds (without the padding).
    pub(super) len: usize,
    /// `first[k]`: how many bounds are below the octave `k`'s lowest value.
    first: [u16; 64],
    /// The most bounds one octave holds.
    steps: usize,
}

/// Octaves holding more bounds than this are searched by bisection instead.
const MAX_STEPS: usize = 4;

impl Bounds {
    fn new(ns: Vec<u64>) -> Self {
        debug_assert!(ns.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        let len = ns.len();
        let below = |x: u128| ns.iter().filter(|&&b| u128::from(b) < x).count();
        let mut first = [0u16; 64];
        let mut steps = 0;
        for (k, f) in first.iter_mut().enumerate() {
            let low = if k == 0 { 0 } else { 1u128 << k };
            let next = 1u128 << (k + 1);
            // At most MAX_BUCKETS (256) bounds: fits.
            *f = u16::try_from(below(low)).unwrap_or(u16::MAX);
            steps = steps.max(below(next) - below(low));
        }
        let mut padded = ns;
        padded.push(u64::MAX);
        Self {
            ns: padded.into_boxed_slice(),
            len,
            first,
            steps,
        }
    }

    /// The bounds, in nanoseconds.
    pub(super) fn as_slice(&self) -> &[u64] {
        &self.ns[..self.len]
    }

    /// The bucket of `v`: how many bounds are below it (`le` is inclusive).
    #[inline]
    fn bucket(&self, v: u64) -> usize {
        if self.steps > MAX_STEPS {
            return self.as_slice().partition_point(|&b| b < v);
        }
        let octave = 63 - (v | 1).leading_zeros() as usize;
        let mut j = usize::from(self.first[octave]);
        for _ in 0..self.steps {
            // Stops at the padding at the latest: no value is above u64::MAX.
            j += usize::from(self.ns.get(j).is_some_and(|&b| b < v));
        }
        j
    }
}

/// One stage's bucket counts, kept by the aggregator: plain integers, no atomics.
pub(crate) struct StageBuckets {
    bounds: Arc<Bounds>,
    /// Records per bucket (not cumulative); the last one counts values above every bound.
    counts: Box<[u64]>,
    /// The same values in native buckets, when the exporter keeps them.
    #[cfg(feature = "prometheus-native")]
    native: Option<crate::exponential::ExponentialBuckets>,
    published: Option<Arc<StageExport>>,
    /// The latest exemplar of each bucket (the last one of values above every bound), once a
    /// golden trace linked one; shared with the publications until the next one changes.
    exemplars: Option<Exemplars>,
}

/// The latest exemplar of each bucket of one stage's histogram, by bucket.
pub(crate) type Exemplars = Arc<Vec<Option<Exemplar>>>;

/// A value of a kept golden trace, shown on its bucket (OpenMetrics, and the protobuf
/// exposition's classic buckets): the bucket then names a trace the user can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Only golden traces (feature `trace`) make them.
#[cfg_attr(not(feature = "trace"), allow(dead_code))]
pub(crate) struct Exemplar {
    /// The tick: the trace is `tick_<n>`.
    pub(crate) tick: u64,
    /// The value, in nanoseconds: the trace's duration for the stage.
    pub(crate) value_ns: u64,
    /// When the trace was kept.
    pub(crate) at: std::time::SystemTime,
}

impl StageBuckets {
    /// No values counted yet, in the buckets of `bounds`.
    pub(super) fn new(bounds: Arc<Bounds>) -> Self {
        Self {
            counts: vec![0; bounds.len + 1].into_boxed_slice(),
            bounds,
            #[cfg(feature = "prometheus-native")]
            native: None,
            published: None,
            exemplars: None,
        }
    }

    /// Makes `e` the exemplar of the bucket its value falls in.
    #[cfg(feature = "trace")]
    pub(crate) fn set_exemplar(&mut self, e: Exemplar) {
        let bucket = self.bounds.bucket(e.value_ns);
        let buckets = self.bounds.len + 1;
        let all = self
            .exemplars
            .get_or_insert_with(|| Arc::new(vec![None; buckets]));
        // Copies the list only while a publication still shares it: once per cycle at most.
        if let Some(slot) = Arc::make_mut(all).get_mut(bucket) {
            *slot = Some(e);
        }
    }

    /// The exemplars as of now, shared.
    pub(crate) fn exemplars(&self) -> Option<Exemplars> {
        self.exemplars.clone()
    }

    /// Counts in native buckets too, from the next value on.
    #[cfg(feature = "prometheus-native")]
    pub(super) fn with_native(mut self, native: crate::exponential::ExponentialBuckets) -> Self {
        self.native = Some(native);
        self
    }

    /// Counts one duration, in nanoseconds: the bucket is the first bound at or above it.
    #[inline]
    pub(crate) fn record(&mut self, ns: u64) {
        // At most `bounds.len`, the last index of `counts`.
        if let Some(c) = self.counts.get_mut(self.bounds.bucket(ns)) {
            *c += 1;
        }
        #[cfg(feature = "prometheus-native")]
        if let Some(native) = &mut self.native {
            native.record_n(ns, 1);
        }
    }

    /// Counts the `n` durations `highest`, `highest − step`, … (a coordinated-omission
    /// correction's added values) bucket by bucket: at most one step per bucket, not per value.
    pub(crate) fn record_sequence(&mut self, highest: u64, step: u64, n: u64) {
        let (mut v, mut left) = (highest, n);
        while left > 0 {
            let bucket = self.bounds.bucket(v);
            // Bucket `b` holds (bound b−1, bound b]; the last one everything above the bounds.
            let below = bucket.checked_sub(1).map_or(0, |b| self.bounds.ns[b]);
            let here = ((v - below - 1) / step.max(1) + 1).min(left);
            if let Some(c) = self.counts.get_mut(bucket) {
                *c += here;
            }
            left -= here;
            v = v.saturating_sub(here * step);
        }
        #[cfg(feature = "prometheus-native")]
        if let Some(native) = &mut self.native {
            native.record_sequence(highest, step, n);
        }
    }

    /// This stage's figures for the exporter, shared with the previous cycle's if nothing moved.
    pub(crate) fn export(&mut self, stage: Stage, tally: &Tally) -> Arc<StageExport> {
        if let Some(p) = &self.published
            && p.count == tally.count
            && p.misses == tally.misses
            && p.dropped == tally.dropped
            && p.sampled_out == tally.sampled_out
            && p.cancelled == tally.cancelled
        {
            return p.clone();
        }
        debug_assert_eq!(
            self.counts.iter().sum::<u64>(),
            tally.count,
            "every recorded duration is in exactly one bucket"
        );
        let export = Arc::new(StageExport {
            stage,
            bounds: self.bounds.clone(),
            counts: self.counts.clone(),
            count: tally.count,
            sum_ns: tally.sum,
            misses: tally.misses,
            dropped: tally.dropped,
            sampled_out: tally.sampled_out,
            cancelled: tally.cancelled,
            #[cfg(feature = "prometheus-native")]
            native: self
                .native
                .as_ref()
                .map(crate::exponential::ExponentialBuckets::export),
        });
        self.published = Some(export.clone());
        export
    }
}

/// One stage's exported histograms as of a cycle: the raw one, and the coordinated-omission
/// corrected one when the stage has an expected interval.
#[derive(Clone)]
pub(crate) struct StageFigures {
    pub(crate) raw: Arc<StageExport>,
    pub(crate) corrected: Option<Arc<StageExport>>,
    /// The raw histogram's exemplars, by bucket.
    pub(crate) exemplars: Option<Exemplars>,
}

/// One stage's cumulative figures as of a cycle.
pub(crate) struct StageExport {
    pub(super) stage: Stage,
    pub(super) bounds: Arc<Bounds>,
    pub(super) counts: Box<[u64]>,
    pub(super) count: u64,
    pub(super) sum_ns: u128,
    pub(super) misses: u64,
    pub(super) dropped: u64,
    pub(super) sampled_out: u64,
    pub(super) cancelled: u64,
    /// The native buckets, when the exporter keeps them.
    #[cfg(feature = "prometheus-native")]
    pub(super) native: Option<crate::exponential::ExponentialCounts>,
}

/// Checks a bucket list and converts it to nanoseconds.
pub(super) fn bounds_ns(
    bounds: &[Duration],
    stage: Option<&String>,
) -> Result<Arc<Bounds>, ExportError> {
    let stage = || stage.cloned();
    if bounds.is_empty() {
        return Err(ExportError::EmptyBuckets { stage: stage() });
    }
    if bounds.len() > MAX_BUCKETS {
        return Err(ExportError::TooManyBuckets {
            stage: stage(),
            count: bounds.len(),
            max: MAX_BUCKETS,
        });
    }
    if let Some(w) = bounds.windows(2).find(|w| w[1] <= w[0]) {
        return Err(ExportError::UnsortedBuckets {
            stage: stage(),
            bound: w[1],
        });
    }
    let ns: Vec<u64> = bounds
        .iter()
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .collect();
    if let Some(w) = ns.windows(2).find(|w| w[1] <= w[0]) {
        // Two bounds past u64::MAX ns (584 years) collapse into one.
        return Err(ExportError::UnsortedBuckets {
            stage: stage(),
            bound: Duration::from_nanos(w[1]),
        });
    }
    Ok(Arc::new(Bounds::new(ns)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_geometric_ladder_grows_by_its_ratio_and_covers_the_range() {
        let b = geometric_buckets(Duration::from_micros(1), Duration::from_secs(10), 8);
        assert_eq!(b.first(), Some(&Duration::from_micros(1)));
        assert!(*b.last().unwrap() >= Duration::from_secs(10));
        assert!(
            b[b.len() - 2] < Duration::from_secs(10),
            "stops at the first past the top"
        );
        assert_eq!(b.len(), 188);
        let r = 2f64.powf(1.0 / 8.0);
        for w in b.windows(2) {
            let step = w[1].as_nanos() as f64 / w[0].as_nanos() as f64;
            // Whole nanoseconds: 1 000 ns and up round by at most 0.05 %.
            assert!((step / r - 1.0).abs() < 1e-3, "{w:?}: step {step}");
        }
        // Rounding to whole nanoseconds repeats bounds at the bottom: dropped.
        let small = geometric_buckets(Duration::from_nanos(1), Duration::from_nanos(20), 8);
        assert!(small.windows(2).all(|w| w[0] < w[1]), "{small:?}");
        assert_eq!(small[..3], [1, 2, 3].map(Duration::from_nanos));
        assert_eq!(
            geometric_buckets(Duration::ZERO, Duration::from_nanos(4), 0),
            [1, 2, 4].map(Duration::from_nanos)
        );
        // A ratio too close to 1 repeats bounds for ever without the cap: it ends, increasing.
        let fine = geometric_buckets(Duration::from_nanos(1), Duration::from_secs(10), u32::MAX);
        assert!(fine.windows(2).all(|w| w[0] < w[1]) && fine.len() > MAX_BUCKETS);
    }

    #[test]
    fn default_buckets_are_a_1_2_5_ladder_from_1us_to_10s() {
        let b = default_buckets();
        assert_eq!(b.len(), 22);
        assert_eq!(b[0], Duration::from_micros(1));
        assert_eq!(b[1], Duration::from_micros(2));
        assert_eq!(b[2], Duration::from_micros(5));
        assert_eq!(*b.last().unwrap(), Duration::from_secs(10));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_value_lands_in_the_first_bucket_at_or_above_it() {
        let bounds = Arc::new(Bounds::new(vec![10, 20, 50]));
        let mut b = StageBuckets {
            counts: vec![0; 4].into_boxed_slice(),
            bounds,
            #[cfg(feature = "prometheus-native")]
            native: None,
            published: None,
            exemplars: None,
        };
        for v in [0, 10, 11, 20, 21, 50, 51, u64::MAX] {
            b.record(v);
        }
        assert_eq!(&*b.counts, &[2, 2, 2, 2]);
    }

    /// The octave lookup against a plain count of the bounds below each value, for lists with one
    /// bound per octave (the ladder), several, a zero bound, bounds at the top of the range, and
    /// lists dense enough to take the bisection path.
    #[test]
    fn octave_lookup_equals_counting_the_bounds_below() {
        let ladder: Vec<u64> = default_buckets()
            .iter()
            .map(|d| d.as_nanos() as u64)
            .collect();
        let lists: Vec<Vec<u64>> = vec![
            ladder,
            vec![0],
            vec![0, 1, 2, 3],
            vec![1, 3, 5, 7, 9, 1 << 40],
            vec![100, 101, 102, 200, 300],
            (1..=100).map(|i| i * 1_000).collect(),
            vec![u64::MAX - 1, u64::MAX],
            vec![u64::MAX],
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for list in lists {
            let b = Bounds::new(list.clone());
            let mut probes: Vec<u64> = vec![0, 1, 2, 3, u64::MAX, u64::MAX - 1];
            for &bound in &list {
                probes.extend([bound.saturating_sub(1), bound, bound.saturating_add(1)]);
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                probes.push(x >> (x % 64));
            }
            for v in probes {
                let want = list.iter().filter(|&&bound| bound < v).count();
                assert_eq!(b.bucket(v), want, "{list:?} at {v}");
            }
        }
    }
}
