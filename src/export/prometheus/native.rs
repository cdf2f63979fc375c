//! Native histograms: Prometheus' sparse exponential buckets, counted exactly from each recorded
//! nanosecond value on the aggregator thread, beside the classic buckets.
//!
//! Schema `s` splits every power of two of the exported unit into `2^s` buckets: bucket `i` holds
//! the values in `(2^((i−1)/2^s), 2^(i/2^s)]`, so neighbouring bounds differ by a factor
//! `2^(2^−s)` (schema 6: 1.09 %; schema 8: 0.27 %). Buckets of one schema nest in the next lower
//! one's (bucket `i` of schema `s` lies in bucket `⌈i/2⌉` of `s − 1`), which is what makes them
//! add up across processes and lets a histogram lower its schema without losing a count.

use std::sync::Arc;

use crate::export::ExportError;

/// Settings of the native histograms an exporter keeps
/// ([`PrometheusBuilder::with_native_histograms`](super::PrometheusBuilder::with_native_histograms)).
///
/// ```
/// use laptime::export::prometheus::NativeHistograms;
/// let native = NativeHistograms::default().with_schema(5).with_max_buckets(512);
/// assert_eq!((native.schema(), native.max_buckets()), (5, 512));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeHistograms {
    schema: i8,
    max_buckets: usize,
}

impl NativeHistograms {
    /// The default schema: bounds 2^(1/64) ≈ 1.0109 apart. `histogram_quantile` answers inside
    /// the bucket holding the rank, so its answer is within 1.09 % of the true quantile, for one
    /// process or summed over a fleet. Schema 5 (2.2 %) would not keep a fleet quantile within 2 %.
    pub const DEFAULT_SCHEMA: i8 = 6;
    /// The default bucket budget: at schema 6, 32 doublings (e.g. 10 ns to 43 s) before the
    /// schema is lowered; a histogram keeps at most 16 KiB of counts, and only as wide a run as
    /// its values span (1 µs to 10 ms: 14 doublings, 7 KiB). With thousands of series, a lower
    /// budget (or classic buckets for the family) keeps memory down.
    pub const DEFAULT_MAX_BUCKETS: usize = 2048;
    /// The highest schema Prometheus accepts.
    pub const MAX_SCHEMA: i8 = 8;
    /// The lowest schema Prometheus accepts (a bucket spans 2^16).
    pub const MIN_SCHEMA: i8 = -4;
    /// The smallest budget: at schema −4 every `u64` nanosecond value, from 1 ns to 584 years,
    /// fits in 5 buckets, so a budget of 8 can always be kept.
    pub const MIN_MAX_BUCKETS: usize = 8;

    /// The schema histograms start at (−4 to 8).
    pub fn with_schema(mut self, schema: i8) -> Self {
        self.schema = schema;
        self
    }

    /// The widest run of bucket indexes one histogram keeps, counting empty buckets between the
    /// lowest and the highest (as OpenTelemetry's `max_size`). A value that would widen it past
    /// this lowers that histogram's schema by one, merging neighbouring buckets, until it fits:
    /// no count is lost, the histogram's resolution halves. Memory per histogram is at most 8
    /// bytes a bucket.
    pub fn with_max_buckets(mut self, max_buckets: usize) -> Self {
        self.max_buckets = max_buckets;
        self
    }

    /// The schema histograms start at.
    pub fn schema(&self) -> i8 {
        self.schema
    }

    /// The bucket budget of one histogram.
    pub fn max_buckets(&self) -> usize {
        self.max_buckets
    }

    pub(super) fn validate(&self) -> Result<(), ExportError> {
        if !(Self::MIN_SCHEMA..=Self::MAX_SCHEMA).contains(&self.schema) {
            return Err(ExportError::InvalidNativeSchema {
                schema: self.schema,
            });
        }
        if self.max_buckets < Self::MIN_MAX_BUCKETS {
            return Err(ExportError::TooFewNativeBuckets {
                max_buckets: self.max_buckets,
                min: Self::MIN_MAX_BUCKETS,
            });
        }
        Ok(())
    }
}

impl Default for NativeHistograms {
    fn default() -> Self {
        Self {
            schema: Self::DEFAULT_SCHEMA,
            max_buckets: Self::DEFAULT_MAX_BUCKETS,
        }
    }
}

/// Finds a nanosecond value's bucket index at one schema, for one unit, in a table lookup and
/// at most a comparison or two.
///
/// Bucket `i` ends at `D·2^(i/2^s)` nanoseconds (`D` the nanoseconds in a unit), so an integer
/// value `ns` is in the first bucket whose end, rounded down to whole nanoseconds, is at or
/// above it. `upper` holds those rounded-down ends for every index a `u64` can reach. Each
/// octave `[2^k, 2^(k+1))` of `ns` is cut into `2^(s+1)` equal bins (1 ns bins where the
/// octave is narrower), finer than the buckets there; `bins` holds, per bin, the first index
/// whose end is at or above the bin's lowest value, and a value steps on from it past the ends
/// below it (one step at most past the octaves of a few nanoseconds).
pub(crate) struct NativeIndex {
    schema: i8,
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

impl NativeIndex {
    /// The table for `schema` (−4 to 8) and a unit of `ns_per_unit` nanoseconds.
    pub(crate) fn new(schema: i8, ns_per_unit: f64) -> Self {
        let per_doubling = 2f64.powi(i32::from(schema));
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
        let bin_bits = u32::try_from(i32::from(schema) + 1).unwrap_or(0);
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
        Self {
            schema,
            first,
            upper: upper.into_boxed_slice(),
            bin_bits,
            bins: bins.into_boxed_slice(),
        }
    }

    /// The bucket index of `ns` (at least 1) at this table's schema.
    #[inline]
    pub(crate) fn index(&self, ns: u64) -> i32 {
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

    /// The largest value in bucket `i` of this table's schema (`0` below 1 ns, `u64::MAX` past
    /// the table).
    fn end(&self, i: i32) -> u64 {
        match usize::try_from(i64::from(i) - i64::from(self.first)) {
            Err(_) => 0,
            Ok(j) => self.upper.get(j).copied().unwrap_or(u64::MAX),
        }
    }
}

/// Bucket `i` of a schema holds buckets `(i−1)·2^d + 1 ..= i·2^d` of the schema `d` above it:
/// the index `i` of the higher one is in `⌈i / 2^d⌉` of the lower.
fn lower_index(i: i32, d: u32) -> i32 {
    // ⌈i / 2^d⌉ for negative i too: an arithmetic shift rounds down.
    ((i64::from(i) + (1i64 << d) - 1) >> d) as i32
}

/// One histogram's native counts: kept by the aggregator, plain integers.
pub(crate) struct NativeBuckets {
    index: Arc<NativeIndex>,
    /// How many schemas below the index's these counts are kept at.
    lowered: u32,
    max_buckets: usize,
    /// The zero bucket: values of 0 ns.
    zero: u64,
    /// Bucket index of `counts[0]`.
    offset: i32,
    counts: std::collections::VecDeque<u64>,
}

impl NativeBuckets {
    pub(crate) fn new(index: Arc<NativeIndex>, max_buckets: usize) -> Self {
        Self {
            index,
            lowered: 0,
            max_buckets,
            zero: 0,
            offset: 0,
            counts: std::collections::VecDeque::new(),
        }
    }

    /// The schema the counts are kept at now.
    pub(crate) fn schema(&self) -> i8 {
        // lowered ≤ 12 (8 down to −4).
        self.index.schema - self.lowered as i8
    }

    /// Counts `n` values of `ns` nanoseconds.
    #[inline]
    pub(crate) fn record_n(&mut self, ns: u64, n: u64) {
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
    pub(crate) fn record_sequence(&mut self, highest: u64, step: u64, n: u64) {
        let (mut v, mut left) = (highest, n);
        while left > 0 {
            if v == 0 {
                self.zero += left;
                return;
            }
            let i = lower_index(self.index.index(v), self.lowered);
            // The bucket holds (end of bucket i−1, end of bucket i], at the kept schema.
            let below = self.index.end(((i64::from(i) - 1) << self.lowered) as i32);
            let here = ((v - below - 1) / step.max(1) + 1).min(left);
            self.record_n(v, here);
            left -= here;
            v = v.saturating_sub(here.saturating_mul(step));
        }
    }

    /// The slot of bucket `i` in `counts`, widening the run to it and lowering the schema while
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
            if width <= self.max_buckets || self.schema() == NativeHistograms::MIN_SCHEMA {
                break;
            }
            self.lower_schema();
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

    /// Merges each pair of neighbouring buckets: one schema lower.
    fn lower_schema(&mut self) {
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

    /// What a cycle publishes of these counts.
    pub(crate) fn export(&self) -> NativeExport {
        NativeExport {
            schema: self.schema(),
            zero: self.zero,
            offset: self.offset,
            counts: self.counts.iter().copied().collect(),
        }
    }
}

/// One native histogram's counts as of a cycle.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NativeExport {
    pub(crate) schema: i8,
    /// Values of 0 ns.
    pub(crate) zero: u64,
    /// Bucket index of `counts[0]`.
    pub(crate) offset: i32,
    /// Per bucket from `offset` on, not cumulative; empty buckets between are zeros.
    pub(crate) counts: Box<[u64]>,
}

impl NativeExport {
    /// The buckets as Prometheus' spans and deltas: `(offset, length)` runs of buckets (the first
    /// offset an index, the later ones gaps), and each bucket's count less the one before it.
    /// Runs of up to two empty buckets stay inside a span (two zero deltas are cheaper than a
    /// new span), longer ones split it.
    pub(crate) fn spans(&self) -> (Vec<(i32, u32)>, Vec<i64>) {
        const MAX_GAP: usize = 2;
        let (mut spans, mut deltas) = (Vec::new(), Vec::new());
        let (mut previous, mut end_of_last) = (0i64, None::<i32>);
        let mut k = 0;
        while k < self.counts.len() {
            if self.counts[k] == 0 {
                k += 1;
                continue;
            }
            let index = self.offset + k as i32;
            let start = k;
            // The run: to the last non-empty bucket before a gap longer than MAX_GAP.
            let mut last = k;
            while let Some(next) = (last + 1..self.counts.len()).find(|&n| self.counts[n] != 0) {
                if next - last - 1 > MAX_GAP {
                    break;
                }
                last = next;
            }
            let gap = end_of_last.map_or(index, |e| index - e);
            spans.push((gap, (last - start + 1) as u32));
            for &c in &self.counts[start..=last] {
                // Counts stay below 2^63 (a u64 sum of them is the count).
                deltas.push(c as i64 - previous);
                previous = c as i64;
            }
            end_of_last = Some(self.offset + last as i32 + 1);
            k = last + 1;
        }
        (spans, deltas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact: `ns ≤ D·2^(i/2^s)` in integers, raised to the power 2^s (for s ≥ 0) so no root is
    /// taken: `ns^(2^s) ≤ D^(2^s)·2^i`.
    fn at_or_below_end(ns: u64, i: i32, schema: i8, d: u64) -> bool {
        use num_bigint::BigUint;
        if schema < 0 {
            // 2^(i·2^−s): an integer power of two.
            let e = i64::from(i) << -schema;
            let lhs = BigUint::from(ns);
            let d = BigUint::from(d);
            return if e >= 0 {
                lhs <= d << e as usize
            } else {
                lhs << (-e) as usize <= d
            };
        }
        let p = 1u32 << schema;
        let lhs = BigUint::from(ns).pow(p);
        let rhs = BigUint::from(d).pow(p);
        if i >= 0 {
            lhs <= rhs << i as usize
        } else {
            lhs << (-i) as usize <= rhs
        }
    }

    fn probes(index: &NativeIndex) -> Vec<u64> {
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
    /// probed, for seconds and milliseconds, at both ends of the schema range and between.
    #[test]
    fn a_value_s_index_is_the_bucket_the_definition_gives() {
        for schema in [8, 6, 3, 1, 0, -1, -4] {
            for d in [1_000_000_000u64, 1_000_000] {
                let index = NativeIndex::new(schema, d as f64);
                for ns in probes(&index) {
                    let i = index.index(ns);
                    if ns >= 1 << 38 {
                        continue; // The bigints grow with ns^(2^s); these only run the lookup.
                    }
                    assert!(
                        at_or_below_end(ns, i, schema, d),
                        "schema {schema}, unit {d}: {ns} ns above the end of bucket {i}"
                    );
                    assert!(
                        !at_or_below_end(ns, i - 1, schema, d),
                        "schema {schema}, unit {d}: {ns} ns fits bucket {}",
                        i - 1
                    );
                }
            }
        }
    }

    /// The bins are fine enough that a lookup steps at most once past its bin's first index
    /// (the speed claim), above the octaves of a few nanoseconds.
    #[test]
    fn a_lookup_steps_at_most_once_past_its_bin() {
        for schema in [8, 6, 0, -4] {
            let index = NativeIndex::new(schema, 1e9);
            for ns in probes(&index).into_iter().filter(|&n| n >= 64) {
                let k = 63 - ns.leading_zeros();
                let w = k.saturating_sub(index.bin_bits);
                let bin = (ns >> w) - (1u64 << (k - w));
                let start = index.bins[((k as usize) << index.bin_bits) + bin as usize];
                let steps = (index.index(ns) - index.first) as u32 - start;
                assert!(steps <= 1, "schema {schema}: {ns} ns took {steps} steps");
            }
        }
    }

    /// Counts kept at a lowered schema equal counting every value at that schema directly.
    #[test]
    fn lowering_the_schema_merges_neighbours_without_losing_a_count() {
        let values: Vec<u64> = (0..5_000u64).map(|k| 1_000 + k * k * 37).collect();
        let mut narrow = NativeBuckets::new(Arc::new(NativeIndex::new(8, 1e9)), 40);
        for &v in &values {
            narrow.record_n(v, 1);
        }
        let kept = narrow.export();
        assert!(kept.schema < 8, "the budget lowered the schema");
        assert!(kept.counts.len() <= 40);
        let direct_index = Arc::new(NativeIndex::new(kept.schema, 1e9));
        let mut direct = NativeBuckets::new(direct_index, usize::MAX);
        for &v in &values {
            direct.record_n(v, 1);
        }
        let want = direct.export();
        let trim = |e: &NativeExport| {
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
        let index = Arc::new(NativeIndex::new(6, 1e9));
        for (highest, step, n) in [(50_000u64, 700u64, 60u64), (9_999, 1, 9_999), (10, 3, 9)] {
            let mut whole = NativeBuckets::new(index.clone(), 4096);
            whole.record_sequence(highest, step, n);
            let mut each = NativeBuckets::new(index.clone(), 4096);
            for k in 0..n {
                each.record_n(highest.saturating_sub(k * step), 1);
            }
            assert_eq!(whole.export(), each.export(), "{highest} {step} {n}");
        }
    }

    #[test]
    fn spans_skip_long_gaps_and_keep_short_ones() {
        let e = NativeExport {
            schema: 0,
            zero: 0,
            offset: -3,
            counts: vec![0, 2, 0, 0, 5, 0, 0, 0, 1, 1, 0].into_boxed_slice(),
        };
        let (spans, deltas) = e.spans();
        // Buckets −2 (2), 1 (5) two apart: one span; 5 (1), 6 (1) three empty later: a new one.
        assert_eq!(spans, [(-2, 4), (3, 2)]);
        assert_eq!(deltas, [2, -2, 0, 5, -4, 0]);
    }
}
