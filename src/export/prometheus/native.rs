//! Native histograms: Prometheus' sparse exponential buckets, counted exactly from each recorded
//! nanosecond value on the aggregator thread, beside the classic buckets.
//!
//! Schema `s` splits every power of two of the exported unit into `2^s` buckets: bucket `i` holds
//! the values in `(2^((i−1)/2^s), 2^(i/2^s)]`, so neighbouring bounds differ by a factor
//! `2^(2^−s)` (schema 6: 1.09 %; schema 8: 0.27 %). Buckets of one schema nest in the next lower
//! one's (bucket `i` of schema `s` lies in bucket `⌈i/2⌉` of `s − 1`), which is what makes them
//! add up across processes and lets a histogram lower its schema without losing a count. The
//! counting is [`crate::exponential`]'s (a schema is its scale); this module holds the settings
//! and Prometheus' spans-and-deltas form.

use crate::exponential::{ExponentialCounts, MAX_SCALE, MIN_SCALE};
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
    /// schema is lowered. A histogram keeps 8 bytes a bucket of the run its values span (1 µs to
    /// 10 ms: 14 doublings, 7 KiB), up to twice that while the run grows, plus the copy the last
    /// cycle published. With thousands of series, a lower budget (or classic buckets for the
    /// family) keeps memory down.
    pub const DEFAULT_MAX_BUCKETS: usize = 2048;
    /// The highest schema Prometheus accepts.
    pub const MAX_SCHEMA: i8 = MAX_SCALE;
    /// The lowest schema Prometheus accepts (a bucket spans 2^16).
    pub const MIN_SCHEMA: i8 = MIN_SCALE;
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
    /// no count is lost, the histogram's resolution halves. Memory per histogram: 8
    /// bytes a bucket of the run, up to about twice that while it grows, plus the published copy.
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

/// The buckets as Prometheus' spans and deltas: `(offset, length)` runs of buckets (the first
/// offset an index, the later ones gaps), and each bucket's count less the one before it.
/// Runs of up to two empty buckets stay inside a span (two zero deltas are cheaper than a
/// new span), longer ones split it.
pub(crate) fn spans(native: &ExponentialCounts) -> (Vec<(i32, u32)>, Vec<i64>) {
    const MAX_GAP: usize = 2;
    let (mut spans, mut deltas) = (Vec::new(), Vec::new());
    let (mut previous, mut end_of_last) = (0i64, None::<i32>);
    let mut k = 0;
    while k < native.counts.len() {
        if native.counts[k] == 0 {
            k += 1;
            continue;
        }
        let index = native.offset + k as i32;
        let start = k;
        // The run: to the last non-empty bucket before a gap longer than MAX_GAP.
        let mut last = k;
        while let Some(next) = (last + 1..native.counts.len()).find(|&n| native.counts[n] != 0) {
            if next - last - 1 > MAX_GAP {
                break;
            }
            last = next;
        }
        let gap = end_of_last.map_or(index, |e| index - e);
        spans.push((gap, (last - start + 1) as u32));
        for &c in &native.counts[start..=last] {
            // Counts stay below 2^63 (a u64 sum of them is the count).
            deltas.push(c as i64 - previous);
            previous = c as i64;
        }
        end_of_last = Some(native.offset + last as i32 + 1);
        k = last + 1;
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_skip_long_gaps_and_keep_short_ones() {
        let e = ExponentialCounts {
            scale: 0,
            zero: 0,
            offset: -3,
            counts: vec![0, 2, 0, 0, 5, 0, 0, 0, 1, 1, 0].into_boxed_slice(),
        };
        let (spans, deltas) = spans(&e);
        // Buckets −2 (2), 1 (5) two apart: one span; 5 (1), 6 (1) three empty later: a new one.
        assert_eq!(spans, [(-2, 4), (3, 2)]);
        assert_eq!(deltas, [2, -2, 0, 5, -4, 0]);
    }
}
