//! Coordinated-omission correction, in the manner of HdrHistogram's
//! `recordValueWithExpectedInterval`.
//!
//! A loop that should start a span every `interval` and measures each span from its actual start
//! under-reports a stall: while one span takes `d`, the spans that should have started during it
//! are simply not there (the loop was busy), so only one slow value is recorded where a
//! schedule-based measurement would have seen `d − interval`, `d − 2·interval`, … as well. The
//! correction adds those values, down to `interval`, to a second set of histograms; the raw ones
//! are left untouched, and both are reported.
//!
//! The added values form an arithmetic sequence, so they are counted bucket by bucket (one
//! `(index, n)` pair per histogram counter they touch, at most one per counter) with a closed-form
//! tally, rather than one by one: a 10 s stall of a 1 µs loop costs a few thousand counter
//! updates, not ten million.

use super::window::{Cumulative, Event, StageWindows};
use crate::hist::{Batch, Layout, Tally};

/// Values one span may add, at most: a 4 s stall of a 1 µs loop, 70 minutes of a 1 ms one.
/// Beyond it the smallest added values are left out and the span counts as `truncated`. It keeps
/// a window slice's `u32` counters from saturating (that would take a thousand such stalls in
/// one slice).
pub(crate) const MAX_SYNTHESIZED: u64 = 1 << 22;

/// One stage's corrected histograms.
pub(crate) struct Correction {
    pub(crate) windows: StageWindows,
    pub(crate) cumulative: Cumulative,
    /// The interval the last span was corrected with (what the snapshot reports).
    pub(crate) interval_ns: u64,
    /// The values being added, reused from span to span.
    batch: Batch,
}

impl Correction {
    pub(crate) fn new(windows: StageWindows, interval_ns: u64) -> Self {
        Self {
            windows,
            cumulative: Cumulative::default(),
            interval_ns,
            batch: Batch::default(),
        }
    }

    /// Records span `duration` (already at `index`, saturated or not) that ended at `at`, and the
    /// values the spans it held back would have measured. Returns how many values it added.
    pub(crate) fn record(
        &mut self,
        layout: &Layout,
        at: u64,
        index: usize,
        duration: u64,
        interval_ns: u64,
    ) -> u64 {
        let saturated = duration > layout.highest();
        self.interval_ns = interval_ns;
        self.cumulative.record(index, duration, saturated);
        self.windows.record(at, index, duration, saturated);
        let Some(held_back) = held_back(duration, interval_ns) else {
            return 0;
        };
        let truncated = synthesize(layout, duration, interval_ns, held_back, &mut self.batch);
        self.cumulative.record_batch(&self.batch);
        self.windows.record_batch(at, &self.batch);
        if truncated {
            self.cumulative.count_event(Event::Truncated, 1);
            self.windows.count_event(at, Event::Truncated, 1);
        }
        self.batch.tally.count
    }
}

/// How many values a span of `duration` adds: `duration − k·interval` for k = 1, 2, … while the
/// value is at least `interval` (HdrHistogram's rule), i.e. ⌊duration / interval⌋ − 1. `None`
/// when it adds none.
pub(crate) fn held_back(duration: u64, interval_ns: u64) -> Option<u64> {
    let k = (duration / interval_ns.max(1)).checked_sub(1)?;
    (k > 0).then_some(k)
}

/// Fills `batch` with the first `min(k, MAX_SYNTHESIZED)` values `duration − interval`,
/// `duration − 2·interval`, …: per histogram counter, how many of them it takes, and their exact
/// tally. Returns whether the sequence was cut short.
pub(crate) fn synthesize(
    layout: &Layout,
    duration: u64,
    interval: u64,
    k: u64,
    batch: &mut Batch,
) -> bool {
    batch.clear();
    let n = k.min(MAX_SYNTHESIZED);
    let mut done = 0;
    while done < n {
        let v = duration - (done + 1) * interval;
        let index = layout.index(v);
        // Every value of the sequence from `v` down to this counter's lowest value lands in it
        // (a value above `highest` lands in the top counter, whose lowest value is below it).
        let lowest = layout.lowest_equivalent(index);
        let here = ((v - lowest) / interval + 1).min(n - done);
        batch.counts.push((index, here));
        done += here;
    }
    batch.tally = sequence_tally(layout, duration, interval, n);
    k > n
}

/// The exact tally of `duration − j·interval` for j = 1..=n.
fn sequence_tally(layout: &Layout, duration: u64, interval: u64, n: u64) -> Tally {
    let (d, i, n128) = (u128::from(duration), u128::from(interval), u128::from(n));
    // Σj and Σj² for j = 1..=n: n ≤ 2^22, so these fit easily.
    let s1 = n128 * (n128 + 1) / 2;
    let s2 = n128 * (n128 + 1) * (2 * n128 + 1) / 6;
    let sum = n128 * d - i * s1;
    // Σ(d − j·i)² = n·d² − 2·d·i·Σj + i²·Σj², which overflows u128 only for durations beyond
    // 2^53 ns or so; then the tally's floating-point sum takes over, as it does for raw values.
    let sum_sq = d
        .checked_mul(d)
        .and_then(|d2| d2.checked_mul(n128))
        .and_then(|a| {
            let b = d.checked_mul(i)?.checked_mul(2)?.checked_mul(s1)?;
            let c = i.checked_mul(i)?.checked_mul(s2)?;
            a.checked_add(c)?.checked_sub(b)
        })
        .unwrap_or(u128::MAX);
    let (df, if_, nf) = (duration as f64, interval as f64, n as f64);
    let s1f = nf * (nf + 1.0) / 2.0;
    let s2f = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 6.0;
    let saturated = match duration.checked_sub(layout.highest()) {
        // j·interval < duration − highest
        Some(over) if over > 0 => ((over - 1) / interval).min(n),
        _ => 0,
    };
    Tally {
        count: n,
        min: duration - n * interval,
        max: duration - interval,
        sum,
        sum_sq,
        sum_sq_f64: nf * df * df - 2.0 * df * if_ * s1f + if_ * if_ * s2f,
        saturated,
        synthesized: n,
        ..Tally::default()
    }
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(3, 3_600_000_000_000)
    }

    /// HdrHistogram's loop, one value at a time: the reference.
    fn reference(duration: u64, interval: u64) -> Vec<u64> {
        let mut out = Vec::new();
        if duration <= interval {
            return out;
        }
        let mut missing = duration - interval;
        while missing >= interval {
            out.push(missing);
            missing -= interval;
        }
        out
    }

    #[test]
    fn the_batch_equals_hdrhistograms_loop_value_by_value() {
        let l = layout();
        let mut batch = Batch::default();
        for (duration, interval) in [
            (10, 3),
            (1_000, 1),
            (2_048 * 3 + 17, 5),
            (5_000_000, 1_000),
            (5_000_000, 999),
            (123_456_789, 10_007),
            (7_000, 3_500),
            (7_001, 3_500),
            (6_999, 3_500),
        ] {
            let values = reference(duration, interval);
            let k = held_back(duration, interval).unwrap_or(0);
            assert_eq!(k, values.len() as u64, "{duration}/{interval}");
            if k == 0 {
                continue;
            }
            assert!(!synthesize(&l, duration, interval, k, &mut batch));
            let mut expected: std::collections::BTreeMap<usize, u64> = Default::default();
            for v in &values {
                *expected.entry(l.index(*v)).or_default() += 1;
            }
            let mut got: std::collections::BTreeMap<usize, u64> = Default::default();
            for &(i, n) in &batch.counts {
                *got.entry(i).or_default() += n;
            }
            assert_eq!(got, expected, "{duration}/{interval}");
            let t = batch.tally;
            assert_eq!(t.count, values.len() as u64);
            assert_eq!(t.min, *values.iter().min().unwrap());
            assert_eq!(t.max, *values.iter().max().unwrap());
            assert_eq!(t.sum, values.iter().map(|v| u128::from(*v)).sum::<u128>());
            assert_eq!(
                t.sum_sq,
                values.iter().map(|v| u128::from(*v).pow(2)).sum::<u128>()
            );
        }
    }

    #[test]
    fn saturated_values_are_counted_and_land_in_the_top_counter() {
        let l = Layout::new(3, 1_000_000);
        let mut batch = Batch::default();
        let (duration, interval) = (1_000_250, 100);
        let values = reference(duration, interval);
        let k = held_back(duration, interval).unwrap();
        synthesize(&l, duration, interval, k, &mut batch);
        let above = values.iter().filter(|v| **v > l.highest()).count() as u64;
        assert_eq!(batch.tally.saturated, above);
        let top = l.index(l.highest());
        let in_top: u64 = batch
            .counts
            .iter()
            .filter(|(i, _)| *i == top)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            in_top,
            values.iter().filter(|v| l.index(**v) == top).count() as u64
        );
    }

    #[test]
    fn a_huge_stall_is_cut_at_the_cap_keeping_the_largest_values() {
        let l = layout();
        let mut batch = Batch::default();
        let (duration, interval) = (10_000_000_000, 1); // 10 s at 1 ns
        let k = held_back(duration, interval).unwrap();
        assert!(synthesize(&l, duration, interval, k, &mut batch));
        assert_eq!(batch.tally.count, MAX_SYNTHESIZED);
        assert_eq!(batch.tally.max, duration - 1);
        assert_eq!(batch.tally.min, duration - MAX_SYNTHESIZED);
        assert_eq!(
            batch.counts.iter().map(|(_, n)| n).sum::<u64>(),
            MAX_SYNTHESIZED
        );
        // One pair per counter touched, not per value.
        assert!(batch.counts.len() < 10_000, "{}", batch.counts.len());
    }
}
