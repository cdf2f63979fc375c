//! Exponential histogram buckets, counted exactly from integer nanosecond values: the layout of
//! Prometheus' native histograms and OpenTelemetry's `ExponentialHistogram`, for sinks that
//! export either (the Prometheus exporter's native histograms, the `laptime-otlp` bridge).
//!
//! At scale `s` (Prometheus calls it the schema) every power of two of the unit is split into
//! `2^s` buckets. Here bucket `i` holds the values in `(2^((i−1)/2^s), 2^(i/2^s)]` units:
//! Prometheus' numbering. OpenTelemetry numbers the same bucket `i − 1` (its bucket `k` is
//! `(base^k, base^(k+1)]`, `base = 2^(2^−s)`). Buckets of one scale nest in the next lower one's
//! (bucket `i` of scale `s` lies in bucket `⌈i/2⌉` of `s − 1`), which is what makes them add up
//! across processes and lets a histogram lower its scale without losing a count. A value of 0 ns
//! goes to the zero bucket.
//!
//! ```
//! use std::sync::Arc;
//! use laptime::exponential::{ExponentialBuckets, ExponentialIndex};
//!
//! let index = Arc::new(ExponentialIndex::new(3, 1e9).unwrap()); // seconds, 8 buckets a doubling
//! let mut buckets = ExponentialBuckets::new(index, 160);
//! buckets.record_n(1_000_000, 2); // 1 ms, twice
//! buckets.record_n(0, 1);
//! let counts = buckets.export();
//! assert_eq!((counts.scale, counts.zero, counts.counts.iter().sum::<u64>()), (3, 1, 2));
//! // 1 ms = 2^−9.97 s: in (2^(−80/8), 2^(−79/8)], bucket −79 (OpenTelemetry's −80).
//! assert_eq!(counts.offset, -79);
//! ```

use std::sync::Arc;

/// The highest scale a table is built for (Prometheus' highest schema; buckets 0.27 % apart).
pub const MAX_SCALE: i8 = 8;
/// The lowest scale (a bucket spans 2^16): every `u64` nanosecond value fits in 5 buckets.
pub const MIN_SCALE: i8 = -4;

/// Why an [`ExponentialIndex`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ExponentialError {
    /// The scale is outside [`MIN_SCALE`]..=[`MAX_SCALE`].
    ScaleOutOfRange {
        /// The scale asked for.
        scale: i8,
    },
    /// The unit is not a finite number of nanoseconds of at least 1.
    InvalidUnit {
        /// The nanoseconds per unit asked for.
        ns_per_unit: f64,
    },
}

impl std::fmt::Display for ExponentialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ScaleOutOfRange { scale } => write!(
                f,
                "exponential scale {scale} is out of range: use {MIN_SCALE} to {MAX_SCALE}"
            ),
            Self::InvalidUnit { ns_per_unit } => write!(
                f,
                "a unit of {ns_per_unit} ns cannot be used: give a finite number of nanoseconds, at least 1 (1e9 for seconds)"
            ),
        }
    }
}

impl std::error::Error for ExponentialError {}

/// Finds a nanosecond value's bucket index at one scale, for one unit, in a table lookup and
/// at most a comparison or two.
///
/// Bucket `i` ends at `D·2^(i/2^s)` nanoseconds (`D` the nanoseconds in a unit), so an integer
/// value `ns` is in the first bucket whose end, rounded down to whole nanoseconds, is at or
/// above it. `upper` holds those rounded-down ends for every index a `u64` can reach. Each
/// octave `[2^k, 2^(k+1))` of `ns` is cut into `2^(s+1)` equal bins (1 ns bins where the
/// octave is narrower), finer than the buckets there; `bins` holds, per bin, the first index
/// whose end is at or above the bin's lowest value, and a value steps on from it past the ends
/// below it: at most one step, none in the octaves of 1 ns bins.
pub struct ExponentialIndex {
    scale: i8,
    /// Bucket index of `upper[0]`: the bucket of 1 ns.
    first: i32,
    /// `upper[j]`: the largest value in bucket `first + j`; the last is `u64::MAX`.
    upper: Box<[u64]>,
    /// log2 of the bins per octave.
    bin_bits: u32,
    /// `bins[(k << bin_bits) + b]`: the first `j` with `upper[j]` at or above bin `b` of octave
    /// `k`'s lowest value.
    bins: Box<[u32]>,
}

impl ExponentialIndex {
    /// The table for `scale` ([`MIN_SCALE`] to [`MAX_SCALE`]) and a unit of `ns_per_unit`
    /// nanoseconds (`1e9`: bounds are powers of `2^(2^−scale)` seconds).
    pub fn new(scale: i8, ns_per_unit: f64) -> Result<Self, ExponentialError> {
        if !(MIN_SCALE..=MAX_SCALE).contains(&scale) {
            return Err(ExponentialError::ScaleOutOfRange { scale });
        }
        if !(ns_per_unit.is_finite() && ns_per_unit >= 1.0) {
            return Err(ExponentialError::InvalidUnit { ns_per_unit });
        }
        let per_doubling = 2f64.powi(i32::from(scale));
        // The end of bucket `i`, in nanoseconds, rounded down; saturating past u64::MAX.
        let end = |i: i32| {
            let ns = ns_per_unit * (f64::from(i) / per_doubling).exp2();
            if ns >= u64::MAX as f64 {
                u64::MAX
            } else {
                ns.floor() as u64
            }
        };
        // 1 ns is 2^(log2(1/D)) units: its bucket is near 2^s·log2(1/D); settle it exactly.
        let mut first = (per_doubling * (1.0 / ns_per_unit).log2()).ceil() as i32 - 1;
        while end(first) < 1 {
            first += 1;
        }
        while first > i32::MIN && end(first - 1) >= 1 {
            first -= 1;
        }
        let mut upper = Vec::new();
        let mut i = first;
        loop {
            let e = end(i);
            upper.push(e);
            if e == u64::MAX {
                break;
            }
            i += 1;
        }
        let bin_bits = u32::try_from(i32::from(scale) + 1).unwrap_or(0);
        let mut bins = vec![0u32; 64 << bin_bits];
        let mut j = 0usize;
        for k in 0..64u32 {
            let width_bits = k.saturating_sub(bin_bits);
            let count = 1u64 << (k - width_bits);
            for b in 0..count {
                let lowest = (1u64 << k) + (b << width_bits);
                while upper[j] < lowest {
                    j += 1;
                }
                // At most 64·2^8 + a few entries: fits.
                bins[((k as usize) << bin_bits) + b as usize] = j as u32;
            }
        }
        Ok(Self {
            scale,
            first,
            upper: upper.into_boxed_slice(),
            bin_bits,
            bins: bins.into_boxed_slice(),
        })
    }

    /// The scale this table finds indexes at.
    pub fn scale(&self) -> i8 {
        self.scale
    }

    /// The bucket index of `ns` (at least 1) at this table's scale.
    #[inline]
    pub fn index(&self, ns: u64) -> i32 {
        debug_assert!(ns > 0, "0 is counted in the zero bucket");
        let k = 63 - (ns | 1).leading_zeros();
        let width_bits = k.saturating_sub(self.bin_bits);
        let bin = (ns >> width_bits) - (1u64 << (k - width_bits));
        let mut j = self.bins[((k as usize) << self.bin_bits) + bin as usize] as usize;
        // Ends at u64::MAX at the latest.
        while self.upper[j] < ns {
            j += 1;
        }
        // At most 64·2^8 + a few entries: fits.
        self.first + j as i32
    }

    /// The largest value in bucket `i` of this table's scale (`0` below 1 ns, `u64::MAX` past
    /// the table).
    fn end(&self, i: i32) -> u64 {
        match usize::try_from(i64::from(i) - i64::from(self.first)) {
            Err(_) => 0,
            Ok(j) => self.upper.get(j).copied().unwrap_or(u64::MAX),
        }
    }
}

/// Bucket `i` of a scale holds buckets `(i−1)·2^d + 1 ..= i·2^d` of the scale `d` above it:
/// the index `i` of the higher one is in `⌈i / 2^d⌉` of the lower.
fn lower_index(i: i32, d: u32) -> i32 {
    // ⌈i / 2^d⌉ for negative i too: an arithmetic shift rounds down.
    ((i64::from(i) + (1i64 << d) - 1) >> d) as i32
}

/// One histogram's exponential counts: plain integers, kept by whoever counts (a sink, on the
/// aggregator thread).
pub struct ExponentialBuckets {
    index: Arc<ExponentialIndex>,
    /// How many scales below the index's these counts are kept at.
    lowered: u32,
    max_buckets: usize,
    /// The zero bucket: values of 0 ns.
    zero: u64,
    /// Bucket index of `counts[0]`.
    offset: i32,
    counts: std::collections::VecDeque<u64>,
}

impl ExponentialBuckets {
    /// Counts at `index`'s scale until more than `max_buckets` buckets (from the lowest index to
    /// the highest, empty ones between included: OpenTelemetry's `max_size`) would be needed;
    /// then the scale is lowered by one, merging neighbours, until the run fits. No count is
    /// lost; at [`MIN_SCALE`] every `u64` value fits in 5 buckets, and the budget is not lowered
    /// further.
    pub fn new(index: Arc<ExponentialIndex>, max_buckets: usize) -> Self {
        Self {
            index,
            lowered: 0,
            max_buckets,
            zero: 0,
            offset: 0,
            counts: std::collections::VecDeque::new(),
        }
    }

    /// The scale the counts are kept at now.
    pub fn scale(&self) -> i8 {
        // lowered ≤ 12 (8 down to −4).
        self.index.scale - self.lowered as i8
    }

    /// Counts `n` values of `ns` nanoseconds.
    #[inline]
    pub fn record_n(&mut self, ns: u64, n: u64) {
        if ns == 0 {
            self.zero += n;
            return;
        }
        let i = lower_index(self.index.index(ns), self.lowered);
        let slot = self.slot(i);
        self.counts[slot] += n;
    }

    /// Counts the `n` durations `highest`, `highest − step`, … bucket by bucket: at most one step
    /// per bucket, not per value.
    pub fn record_sequence(&mut self, highest: u64, step: u64, n: u64) {
        let (mut v, mut left) = (highest, n);
        while left > 0 {
            if v == 0 {
                self.zero += left;
                return;
            }
            let i = lower_index(self.index.index(v), self.lowered);
            // The bucket holds (end of bucket i−1, end of bucket i], at the kept scale.
            let below = self.index.end(((i64::from(i) - 1) << self.lowered) as i32);
            let here = ((v - below - 1) / step.max(1) + 1).min(left);
            self.record_n(v, here);
            left -= here;
            v = v.saturating_sub(here.saturating_mul(step));
        }
    }

    /// The slot of bucket `i` in `counts`, widening the run to it and lowering the scale while
    /// the run would be wider than the budget.
    fn slot(&mut self, mut i: i32) -> usize {
        if self.counts.is_empty() {
            self.offset = i;
            self.counts.push_back(0);
            return 0;
        }
        loop {
            let last = self.offset + self.counts.len() as i32 - 1;
            let (low, high) = (i.min(self.offset), i.max(last));
            let width = (i64::from(high) - i64::from(low) + 1) as usize;
            if width <= self.max_buckets || self.scale() == MIN_SCALE {
                break;
            }
            self.lower_scale();
            i = lower_index(i, 1);
        }
        while i < self.offset {
            self.counts.push_front(0);
            self.offset -= 1;
        }
        let j = (i - self.offset) as usize;
        if j >= self.counts.len() {
            self.counts.resize(j + 1, 0);
        }
        j
    }

    /// Merges each pair of neighbouring buckets: one scale lower.
    fn lower_scale(&mut self) {
        let old = std::mem::take(&mut self.counts);
        let offset = lower_index(self.offset, 1);
        for (k, c) in old.into_iter().enumerate() {
            let j = (lower_index(self.offset + k as i32, 1) - offset) as usize;
            if j == self.counts.len() {
                self.counts.push_back(0);
            }
            self.counts[j] += c;
        }
        self.offset = offset;
        self.lowered += 1;
    }

    /// The counts as they are now.
    pub fn export(&self) -> ExponentialCounts {
        ExponentialCounts {
            scale: self.scale(),
            zero: self.zero,
            offset: self.offset,
            counts: self.counts.iter().copied().collect(),
        }
    }
}

/// One histogram's exponential counts at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExponentialCounts {
    /// The scale the counts are kept at.
    pub scale: i8,
    /// Values of 0 ns.
    pub zero: u64,
    /// Bucket index of `counts[0]` (Prometheus' numbering: OpenTelemetry's is one less).
    pub offset: i32,
    /// Per bucket from `offset` on, not cumulative; empty buckets between are zeros.
    pub counts: Box<[u64]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact: `ns ≤ D·2^(i/2^s)` in integers, raised to the power 2^s (for s ≥ 0) so no root is
    /// taken: `ns^(2^s) ≤ D^(2^s)·2^i`.
    fn at_or_below_end(ns: u64, i: i32, scale: i8, d: u64) -> bool {
        use num_bigint::BigUint;
        if scale < 0 {
            // 2^(i·2^−s): an integer power of two.
            let e = i64::from(i) << -scale;
            let lhs = BigUint::from(ns);
            let d = BigUint::from(d);
            return if e >= 0 {
                lhs <= d << e as usize
            } else {
                lhs << (-e) as usize <= d
            };
        }
        let p = 1u32 << scale;
        let lhs = BigUint::from(ns).pow(p);
        let rhs = BigUint::from(d).pow(p);
        if i >= 0 {
            lhs <= rhs << i as usize
        } else {
            lhs << (-i) as usize <= rhs
        }
    }

    fn probes(index: &ExponentialIndex) -> Vec<u64> {
        let mut v: Vec<u64> = vec![1, 2, 3, 1000, u64::MAX, u64::MAX - 1];
        for &e in index.upper.iter().filter(|&&e| e < 1 << 38) {
            v.extend([e.saturating_sub(1), e, e + 1, e + 2]);
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push((x >> (x % 64)).max(1));
        }
        v.retain(|&n| n > 0);
        v
    }

    /// Every value's index against the definition, decided in exact integer arithmetic: it is at
    /// or below its bucket's end and above the end of the bucket before. Bucket ends are where
    /// rounding would go wrong, so every end below 2^38 ns (4.6 minutes) and its neighbours is
    /// probed, for seconds and milliseconds, at both ends of the scale range and between.
    #[test]
    fn a_value_s_index_is_the_bucket_the_definition_gives() {
        for scale in [8, 6, 3, 1, 0, -1, -4] {
            for d in [1_000_000_000u64, 1_000_000] {
                let index = ExponentialIndex::new(scale, d as f64).unwrap();
                for ns in probes(&index) {
                    let i = index.index(ns);
                    if ns >= 1 << 38 {
                        continue; // The bigints grow with ns^(2^s); these only run the lookup.
                    }
                    assert!(
                        at_or_below_end(ns, i, scale, d),
                        "scale {scale}, unit {d}: {ns} ns above the end of bucket {i}"
                    );
                    assert!(
                        !at_or_below_end(ns, i - 1, scale, d),
                        "scale {scale}, unit {d}: {ns} ns fits bucket {}",
                        i - 1
                    );
                }
            }
        }
    }

    /// The bins are fine enough that a lookup steps at most once past its bin's first index (the
    /// speed claim), in every octave.
    #[test]
    fn a_lookup_steps_at_most_once_past_its_bin() {
        for scale in [8, 6, 0, -4] {
            let index = ExponentialIndex::new(scale, 1e9).unwrap();
            for ns in probes(&index) {
                let k = 63 - ns.leading_zeros();
                let w = k.saturating_sub(index.bin_bits);
                let bin = (ns >> w) - (1u64 << (k - w));
                let start = index.bins[((k as usize) << index.bin_bits) + bin as usize];
                let steps = (index.index(ns) - index.first) as u32 - start;
                assert!(steps <= 1, "scale {scale}: {ns} ns took {steps} steps");
            }
        }
    }

    /// Counts kept at a lowered scale equal counting every value at that scale directly.
    #[test]
    fn a_scale_or_unit_out_of_range_is_refused() {
        assert_eq!(
            ExponentialIndex::new(9, 1e9).err(),
            Some(ExponentialError::ScaleOutOfRange { scale: 9 })
        );
        assert!(ExponentialIndex::new(-5, 1e9).is_err());
        assert!(ExponentialIndex::new(0, 0.5).is_err());
        assert!(ExponentialIndex::new(0, f64::NAN).is_err());
    }

    #[test]
    fn lowering_the_scale_merges_neighbours_without_losing_a_count() {
        let values: Vec<u64> = (0..5_000u64).map(|k| 1_000 + k * k * 37).collect();
        let mut narrow =
            ExponentialBuckets::new(Arc::new(ExponentialIndex::new(8, 1e9).unwrap()), 40);
        for &v in &values {
            narrow.record_n(v, 1);
        }
        let kept = narrow.export();
        assert!(kept.scale < 8, "the budget lowered the scale");
        assert!(kept.counts.len() <= 40);
        let direct_index = Arc::new(ExponentialIndex::new(kept.scale, 1e9).unwrap());
        let mut direct = ExponentialBuckets::new(direct_index, usize::MAX);
        for &v in &values {
            direct.record_n(v, 1);
        }
        let want = direct.export();
        let trim = |e: &ExponentialCounts| {
            let mut pairs: Vec<(i32, u64)> = (0..e.counts.len())
                .map(|k| (e.offset + k as i32, e.counts[k]))
                .filter(|p| p.1 > 0)
                .collect();
            pairs.sort();
            pairs
        };
        assert_eq!(trim(&kept), trim(&want));
        assert_eq!(kept.counts.iter().sum::<u64>(), values.len() as u64);
    }

    /// A coordinated-omission sequence counted bucket by bucket equals counting each value.
    #[test]
    fn a_sequence_counts_as_its_values_one_by_one() {
        let index = Arc::new(ExponentialIndex::new(6, 1e9).unwrap());
        for (highest, step, n) in [(50_000u64, 700u64, 60u64), (9_999, 1, 9_999), (10, 3, 9)] {
            let mut whole = ExponentialBuckets::new(index.clone(), 4096);
            whole.record_sequence(highest, step, n);
            let mut each = ExponentialBuckets::new(index.clone(), 4096);
            for k in 0..n {
                each.record_n(highest.saturating_sub(k * step), 1);
            }
            assert_eq!(whole.export(), each.export(), "{highest} {step} {n}");
        }
    }
}
