//! Sliding windows as rings of preallocated slices, and the exact tallies beside each histogram.
//!
//! A window of length `L` split into `n = L / s` slices keeps the `n` most recent slices of length
//! `s`, the newest one still filling. Its histogram `sum` is the sum of the slices' histograms,
//! kept up to date as records arrive (each record lands in its slice and in `sum`) and as slices
//! expire (the expiring slice is subtracted, then reset and reused). So at any time the window
//! holds exactly the records whose timestamps fall in the last `n` slices: between `(n-1)·s` and
//! `n·s` of history, "exact to one slice". Every statistic of the window — percentiles from `sum`,
//! count, min, max, mean, stddev, drops, misses from the slices' tallies — comes from the same
//! slices, so they expire together.
//!
//! Time is passed in (`now_ns`, record timestamps): nothing here reads a clock.

use std::time::Duration;

use crate::hist::{Batch, Count, Hist, Layout, Tally, indices_at_ranks, rank};
use crate::stats::{Distribution, QUANTILES, StageStats, Window};

/// A counted event that is not a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Dropped,
    SampledOut,
    Miss,
    Cancelled,
    Unwound,
    Truncated,
}

impl Tally {
    fn count_event(&mut self, event: Event, n: u64) {
        match event {
            Event::Dropped => self.dropped += n,
            Event::SampledOut => self.sampled_out += n,
            Event::Miss => self.misses += n,
            Event::Cancelled => self.cancelled += n,
            Event::Unwound => self.unwound += n,
            Event::Truncated => self.truncated += n,
        }
    }
}

#[derive(Debug)]
struct Slice {
    /// Which slice of time (`t / slice_ns`) this one holds; `u64::MAX` = never used.
    number: u64,
    hist: Hist<u32>,
    tally: Tally,
}

/// One stage's sliding window.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    length: Duration,
    slice_ns: u64,
    slices: Box<[Slice]>,
    /// The newest slice number; slices `current + 1 - n ..= current` are live.
    current: u64,
    /// Sum of the live slices' histograms.
    sum: Hist<u32>,
    /// Something recorded expired since `take_expired` last looked, by whichever path moved the
    /// window (a cycle, a newer record, an absorbed base slice).
    expired: bool,
}

impl SlidingWindow {
    /// `length` a whole multiple of `slice` (checked by the configuration).
    pub(crate) fn new(length: Duration, slice: Duration, now_ns: u64) -> Self {
        let slice_ns = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX).max(1);
        let n = (length.as_nanos() / slice.as_nanos()).max(1) as usize;
        let current = now_ns / slice_ns;
        let mut slices: Box<[Slice]> = (0..n)
            .map(|_| Slice {
                number: u64::MAX,
                hist: Hist::new(),
                tally: Tally::default(),
            })
            .collect();
        slices[(current % n as u64) as usize].number = current;
        Self {
            length,
            slice_ns,
            slices,
            current,
            sum: Hist::new(),
            expired: false,
        }
    }

    pub(crate) fn window(&self) -> Window {
        Window::Last(self.length)
    }

    fn n(&self) -> u64 {
        self.slices.len() as u64
    }

    /// Moves the window to `now_ns`, expiring slices that fall out. Returns whether anything
    /// recorded expired (the window's statistics changed).
    pub(crate) fn advance(&mut self, now_ns: u64) -> bool {
        let target = now_ns / self.slice_ns;
        if target <= self.current {
            return false;
        }
        let steps = (target - self.current).min(self.n());
        let mut changed = false;
        for number in target + 1 - steps..=target {
            let slot = (number % self.n()) as usize;
            let slice = &mut self.slices[slot];
            if !slice.tally.is_empty() {
                changed = true;
                self.sum.subtract(&slice.hist);
                slice.hist.reset_and_trim();
                slice.tally = Tally::default();
            }
            slice.number = number;
        }
        self.current = target;
        self.expired |= changed;
        if changed && self.sum.total() == 0 {
            // Everything expired: an idle series lets go of its slices' storage (a busy one
            // keeps it, so its slices do not allocate again every time they come round).
            for slice in &mut self.slices {
                slice.hist = Hist::new();
            }
        }
        changed
    }

    /// Holds nothing and has no expiry left to report: advancing it changes nothing.
    fn is_idle(&self) -> bool {
        !self.expired && self.slices.iter().all(|s| s.tally.is_empty())
    }

    /// Whether anything expired since the last call.
    fn take_expired(&mut self) -> bool {
        std::mem::take(&mut self.expired)
    }

    /// The live slice holding time `t_ns`, moving the window forward if `t_ns` is newer; `None`
    /// when `t_ns` is older than the window.
    fn slot_for(&mut self, t_ns: u64) -> Option<usize> {
        let number = t_ns / self.slice_ns;
        if number > self.current {
            self.advance(t_ns);
        }
        if number + self.n() <= self.current {
            return None;
        }
        let slot = (number % self.n()) as usize;
        (self.slices[slot].number == number).then_some(slot)
    }

    /// Records a duration that ended at `t_ns`. Returns false when `t_ns` is older than the
    /// window (the cumulative histogram still takes it).
    #[inline]
    pub(crate) fn record(&mut self, t_ns: u64, index: usize, value: u64, saturated: bool) -> bool {
        let Some(slot) = self.slot_for(t_ns) else {
            return false;
        };
        let slice = &mut self.slices[slot];
        slice.hist.record(index, 1);
        slice.tally.record(value, saturated);
        self.sum.record(index, 1);
        true
    }

    /// Records a batch of values that ended at `t_ns`. Returns false when `t_ns` is older than
    /// the window.
    fn record_batch(&mut self, t_ns: u64, batch: &Batch) -> bool {
        let Some(slot) = self.slot_for(t_ns) else {
            return false;
        };
        let slice = &mut self.slices[slot];
        for &(index, n) in &batch.counts {
            slice.hist.record(index, n);
            self.sum.record(index, n);
        }
        slice.tally.merge(&batch.tally);
        true
    }

    /// Adds a whole base slice that started at `t_ns`: its counts into their window slice and
    /// the sum, chunk by chunk. Returns false when `t_ns` is older than the window.
    fn absorb(&mut self, t_ns: u64, hist: &Hist<u32>, tally: &Tally) -> bool {
        let Some(slot) = self.slot_for(t_ns) else {
            return false;
        };
        let slice = &mut self.slices[slot];
        slice.hist.add(hist);
        slice.tally.merge(tally);
        self.sum.add(hist);
        true
    }

    /// Counts `n` non-duration events at `t_ns`.
    pub(crate) fn count_event(&mut self, t_ns: u64, event: Event, n: u64) -> bool {
        let Some(slot) = self.slot_for(t_ns) else {
            return false;
        };
        self.slices[slot].tally.count_event(event, n);
        true
    }

    /// The merged tally of the live slices.
    fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for s in self.slices.iter().filter(|s| s.number != u64::MAX) {
            t.merge(&s.tally);
        }
        t
    }

    /// The window's figures, with the stage's open base slices `open` (not absorbed yet, each
    /// inside the window: see [`StageWindows::open_in`]).
    fn stats(&self, stage: crate::Stage, layout: &Layout, open: &[&Fresh]) -> StageStats {
        let mut tally = self.tally();
        for f in open {
            tally.merge(&f.tally);
        }
        self.stats_with(stage, layout, open, &tally)
    }

    /// [`Self::stats`] with the tally of the live slices and `open` already merged.
    fn stats_with(
        &self,
        stage: crate::Stage,
        layout: &Layout,
        open: &[&Fresh],
        tally: &Tally,
    ) -> StageStats {
        let mut hists = [&self.sum; CLOSED + 2];
        for (h, f) in hists[1..].iter_mut().zip(open) {
            *h = &f.hist;
        }
        stats_from(
            stage,
            self.window(),
            &hists[..1 + open.len()],
            tally,
            layout,
            0,
        )
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.sum.heap_bytes()
            + self
                .slices
                .iter()
                .map(|s| s.hist.heap_bytes())
                .sum::<usize>()
    }
}

/// A base slice not yet handed to the windows: a record of the stage lands in the one of its time
/// (the newest, but for a late one) and in the cumulative histogram, two counter writes per
/// record. A closed base slice's
/// counts are added, chunk by chunk, into each window's slice and sum when the aggregator next
/// advances the stage, not by the record that opens the next one: at 20 000 series, the first
/// record of each series after a slice boundary used to fold all of them within a few cycles,
/// the aggregator's longest. The base slice length is the greatest common divisor of the
/// windows' slices, so a base slice always falls inside one slice of every window.
#[derive(Debug)]
struct Fresh {
    /// Which base slice (`t / base_ns`) this is.
    number: u64,
    hist: Hist<u32>,
    tally: Tally,
}

/// A stage's sliding windows and the open base slices they are fed from.
#[derive(Debug)]
pub(crate) struct StageWindows {
    base_ns: u64,
    /// The newest base slice.
    fresh: Fresh,
    /// The base slices before `fresh`, closed but not folded yet (empty once folded), oldest
    /// first. Two: the series sweep visits a series about once a base slice, so with one a record
    /// two base slices on still had to fold on the record path about half the time.
    closed: [Fresh; CLOSED],
    windows: Vec<SlidingWindow>,
}

/// Closed base slices a stage keeps waiting for the aggregator to fold them.
const CLOSED: usize = 2;

impl StageWindows {
    /// `specs` as (length, slice); `base_ns` divides every slice.
    pub(crate) fn new(
        specs: impl IntoIterator<Item = (Duration, Duration)>,
        base_ns: u64,
        now_ns: u64,
    ) -> Self {
        let base_ns = base_ns.max(1);
        let open = |number| Fresh {
            number,
            hist: Hist::new(),
            tally: Tally::default(),
        };
        Self {
            base_ns,
            fresh: open(now_ns / base_ns),
            closed: [open(u64::MAX), open(u64::MAX)],
            windows: specs
                .into_iter()
                .map(|(length, slice)| SlidingWindow::new(length, slice, now_ns))
                .collect(),
        }
    }

    /// How many windows.
    pub(crate) fn len(&self) -> usize {
        self.windows.len()
    }

    /// The base slice holding `t_ns`. Most records fall in the open one: a comparison, not a
    /// 64-bit division, decides that.
    #[inline]
    fn base_number(&self, t_ns: u64) -> u64 {
        let start = self.fresh.number * self.base_ns;
        if t_ns >= start && t_ns - start < self.base_ns {
            self.fresh.number
        } else {
            t_ns / self.base_ns
        }
    }

    /// Hands closed base slice `i` to the windows (a no-op when it is empty).
    fn fold(&mut self, i: usize) {
        let closed = &mut self.closed[i];
        if !closed.tally.is_empty() {
            let start = closed.number * self.base_ns;
            for w in &mut self.windows {
                w.absorb(start, &closed.hist, &closed.tally);
            }
            closed.hist.reset();
            closed.tally = Tally::default();
        }
    }

    /// Hands every closed base slice to the windows, oldest first.
    fn fold_closed(&mut self) {
        for i in 0..CLOSED {
            self.fold(i);
        }
    }

    /// Opens base slice `number` (newer than `fresh`): `fresh` joins the closed ones, folded later
    /// by [`Self::advance`]. Only a stage that reaches yet another base slice before the
    /// aggregator advanced it folds its oldest here.
    fn open_next(&mut self, number: u64) {
        self.fold(0);
        self.closed.rotate_left(1);
        std::mem::swap(&mut self.closed[CLOSED - 1], &mut self.fresh);
        self.fresh.number = number;
    }

    /// Where a record or event at base slice `number` goes: an open base slice, opening a new
    /// one if it is newer, or `None` for one already folded (it goes straight into the windows).
    #[inline]
    fn open_for(&mut self, number: u64) -> Option<&mut Fresh> {
        if number > self.fresh.number {
            self.open_next(number);
        }
        if number == self.fresh.number {
            return Some(&mut self.fresh);
        }
        self.closed.iter_mut().find(|c| c.number == number)
    }

    /// Records a duration that ended at `t_ns`. A record older than the open base slices (its
    /// ring was drained late) goes straight into its own slice of each window.
    #[inline]
    pub(crate) fn record(&mut self, t_ns: u64, index: usize, value: u64, saturated: bool) {
        let number = self.base_number(t_ns);
        if let Some(open) = self.open_for(number) {
            open.hist.record(index, 1);
            open.tally.record(value, saturated);
            return;
        }
        for w in &mut self.windows {
            w.record(t_ns, index, value, saturated);
        }
    }

    /// Records a batch of values that ended at `t_ns` (see [`Self::record`]).
    pub(crate) fn record_batch(&mut self, t_ns: u64, batch: &Batch) {
        let number = self.base_number(t_ns);
        if let Some(open) = self.open_for(number) {
            for &(index, n) in &batch.counts {
                open.hist.record(index, n);
            }
            open.tally.merge(&batch.tally);
            return;
        }
        for w in &mut self.windows {
            w.record_batch(t_ns, batch);
        }
    }

    /// Counts `n` non-duration events at `t_ns`.
    pub(crate) fn count_event(&mut self, t_ns: u64, event: Event, n: u64) {
        let number = self.base_number(t_ns);
        if let Some(open) = self.open_for(number) {
            open.tally.count_event(event, n);
            return;
        }
        for w in &mut self.windows {
            w.count_event(t_ns, event, n);
        }
    }

    /// Folds the closed base slices and moves every window to `now_ns`. Returns whether anything
    /// expired since the last call, on any path (so a stage idle since is still republished).
    pub(crate) fn advance(&mut self, now_ns: u64) -> bool {
        self.fold_closed();
        let number = now_ns / self.base_ns;
        if number > self.fresh.number {
            // The newest base slice has closed too: fold it, and open `number` in its place.
            self.open_next(number);
            self.fold_closed();
        }
        let mut changed = false;
        for w in &mut self.windows {
            w.advance(now_ns);
            changed |= w.take_expired();
        }
        if changed && self.is_idle() {
            self.fresh.hist = Hist::new();
            for c in &mut self.closed {
                c.hist = Hist::new();
            }
        }
        changed
    }

    /// No window holds anything, the open base slices are empty and no expiry is waiting to be
    /// reported: [`Self::advance`] would change nothing and return false, so a caller may skip it
    /// until the stage's next record or event.
    pub(crate) fn is_idle(&self) -> bool {
        self.fresh.tally.is_empty()
            && self.closed.iter().all(|c| c.tally.is_empty())
            && self.windows.iter().all(SlidingWindow::is_idle)
    }

    /// The base slices not folded yet, for window figures. A window moves only by folding
    /// (oldest first) or by [`Self::advance`] (which folds them all), so no window has moved past
    /// one of them.
    fn open(&self) -> ([&Fresh; CLOSED + 1], usize) {
        let mut open = [&self.fresh; CLOSED + 1];
        let mut n = 0;
        for c in self.closed.iter().filter(|c| !c.tally.is_empty()) {
            open[n] = c;
            n += 1;
        }
        open[n] = &self.fresh;
        (open, n + 1)
    }

    /// The figures of window `i`.
    pub(crate) fn stats(&self, i: usize, stage: crate::Stage, layout: &Layout) -> StageStats {
        let (open, n) = self.open();
        self.windows[i].stats(stage, layout, &open[..n])
    }

    /// The figures of window `i` and the exact tally they were built from.
    pub(crate) fn stats_and_tally(
        &self,
        i: usize,
        stage: crate::Stage,
        layout: &Layout,
    ) -> (StageStats, Tally) {
        let (open, n) = self.open();
        let mut tally = self.windows[i].tally();
        for f in &open[..n] {
            tally.merge(&f.tally);
        }
        let stats = self.windows[i].stats_with(stage, layout, &open[..n], &tally);
        (stats, tally)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.fresh.hist.heap_bytes()
            + self
                .closed
                .iter()
                .map(|c| c.hist.heap_bytes())
                .sum::<usize>()
            + self
                .windows
                .iter()
                .map(SlidingWindow::heap_bytes)
                .sum::<usize>()
    }
}

/// Everything since start.
#[derive(Debug, Default)]
pub(crate) struct Cumulative {
    pub(crate) hist: Hist<u64>,
    pub(crate) tally: Tally,
}

impl Cumulative {
    #[inline]
    pub(crate) fn record(&mut self, index: usize, value: u64, saturated: bool) {
        self.hist.record(index, 1);
        self.tally.record(value, saturated);
    }

    pub(crate) fn count_event(&mut self, event: Event, n: u64) {
        self.tally.count_event(event, n);
    }

    pub(crate) fn record_batch(&mut self, batch: &Batch) {
        for &(index, n) in &batch.counts {
            self.hist.record(index, n);
        }
        self.tally.merge(&batch.tally);
    }

    pub(crate) fn stats(&self, stage: crate::Stage, layout: &Layout, in_flight: u64) -> StageStats {
        stats_from(
            stage,
            Window::Cumulative,
            &[&self.hist],
            &self.tally,
            layout,
            in_flight,
        )
    }
}

fn ns(v: u64) -> Duration {
    Duration::from_nanos(v)
}

/// Population standard deviation from exact sums: exact in integers, (n·Σx² − (Σx)²) / n², while
/// the products fit in 128 bits (total recorded time under 2^64 ns, about 584 years); in floating
/// point beyond that. Never panics.
fn stddev(n: u64, tally: &Tally) -> f64 {
    let (sum, sum_sq) = (tally.sum, tally.sum_sq);
    let n128 = u128::from(n);
    let exact = n128
        .checked_mul(sum_sq)
        .zip(sum.checked_mul(sum))
        .filter(|_| sum_sq != u128::MAX);
    let variance = match exact {
        Some((a, b)) => a.saturating_sub(b) as f64 / (n as f64 * n as f64),
        None => {
            let mean = sum as f64 / n as f64;
            (tally.sum_sq_f64 / n as f64 - mean * mean).max(0.0)
        }
    };
    variance.sqrt()
}

/// The corrected figures, from the corrected histograms' own statistics and tally.
pub(crate) fn corrected_from(
    stats: StageStats,
    tally: &Tally,
    interval_ns: u64,
) -> Box<crate::stats::CorrectedStats> {
    Box::new(crate::stats::CorrectedStats {
        expected_interval: ns(interval_ns),
        synthesized: tally.synthesized,
        truncated: tally.truncated,
        distribution: stats.distribution,
    })
}

/// Builds the public figures from a histogram and the tally of the same records.
pub(crate) fn stats_from<C: Count>(
    stage: crate::Stage,
    window: Window,
    hists: &[&Hist<C>],
    tally: &Tally,
    layout: &Layout,
    in_flight: u64,
) -> StageStats {
    debug_assert_eq!(
        hists.iter().map(|h| h.total()).sum::<u64>(),
        tally.count,
        "histograms and tally disagree"
    );
    let mut stats = StageStats {
        stage: stage.name(),
        labels: stage.labels(),
        window,
        distribution: Distribution {
            count: tally.count,
            saturated: tally.saturated,
            ..Distribution::default()
        },
        dropped: tally.dropped,
        sampled_out: tally.sampled_out,
        calls: tally.count + tally.sampled_out + tally.dropped + tally.cancelled,
        deadline_misses: tally.misses,
        cancelled: tally.cancelled,
        in_flight,
        deadline: stage.deadline(),
        unwound: tally.unwound,
        in_rings: 0,
        produced: tally.count + tally.dropped + tally.cancelled,
        corrected: None,
    };
    let n = tally.count;
    if n == 0 {
        return stats;
    }
    stats.min = ns(tally.min);
    stats.max = ns(tally.max);
    let mean = tally.sum / u128::from(n);
    stats.mean = ns(mean as u64);
    stats.stddev = Duration::from_nanos(stddev(n, tally).round() as u64);

    let ranks = QUANTILES.map(|q| rank(q, n));
    let mut indices = [0usize; QUANTILES.len()];
    indices_at_ranks(hists, &ranks, &mut indices);
    // HdrHistogram reports a bucket's highest equivalent value; the exact min and max bound it.
    let value = |i: usize| ns(layout.highest_equivalent(i).clamp(tally.min, tally.max));
    stats.p50 = value(indices[0]);
    stats.p90 = value(indices[1]);
    stats.p95 = value(indices[2]);
    stats.p99 = value(indices[3]);
    stats.p999 = value(indices[4]);
    stats
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn layout() -> Layout {
        Layout::new(3, 3_600_000_000_000)
    }

    fn stage() -> crate::Stage {
        crate::Stage::new("unit_window").unwrap()
    }

    fn stats(w: &SlidingWindow, l: &Layout) -> StageStats {
        let empty = Fresh {
            number: 0,
            hist: Hist::new(),
            tally: Tally::default(),
        };
        w.stats(stage(), l, &[&empty])
    }

    #[test]
    fn an_expiry_caused_by_a_record_newer_than_the_cycle_is_still_reported() {
        let l = layout();
        let mut w = StageWindows::new(
            [(Duration::from_secs(5), Duration::from_secs(1))],
            250 * MS,
            0,
        );
        w.record(100 * MS, l.index(7), 7, false);
        assert!(!w.advance(900 * MS));
        // A record drained late in a cycle, ending after that cycle's `now`, 5 s on: it expires
        // the slice holding the first record.
        w.record(5_100 * MS, l.index(9), 9, false);
        // The next cycle is in the next base slice: folding the record moves the window.
        assert!(w.advance(5_300 * MS), "the expiry must not be lost");
        assert_eq!(w.stats(0, stage(), &l).count, 1);
        assert!(!w.advance(5_310 * MS));
    }

    /// A 1 s window of 250 ms slices and a 5 s one of 1 s slices, from time 0.
    fn one_and_five_seconds() -> StageWindows {
        StageWindows::new(
            [
                (Duration::from_secs(1), Duration::from_millis(250)),
                (Duration::from_secs(5), Duration::from_secs(1)),
            ],
            250 * MS,
            0,
        )
    }

    #[test]
    fn an_idle_stage_lets_go_of_its_window_memory() {
        let l = layout();
        let mut w = one_and_five_seconds();
        for i in 0..100u64 {
            let v = 1_000 + i * 37;
            w.record(10 * MS + i * MS, l.index(v), v, false);
        }
        w.advance(300 * MS);
        assert!(w.heap_bytes() > 0);
        assert!(w.advance(6_000 * MS), "everything expired");
        assert!(w.is_idle());
        assert_eq!(w.heap_bytes(), 0, "nothing held once idle");
    }

    #[test]
    fn idle_means_advancing_changes_nothing() {
        let l = layout();
        let mut w = one_and_five_seconds();
        assert!(w.is_idle(), "a new stage is idle");
        w.record(100 * MS, l.index(7), 7, false);
        assert!(!w.is_idle(), "a record in the open base slice");
        w.advance(300 * MS);
        assert!(!w.is_idle(), "a record in the windows");
        // The 1 s window lets it go at 1 s, the 5 s one at 5 s.
        assert!(w.advance(1000 * MS));
        assert!(!w.is_idle());
        // A late record expires the last slice on the record path: the expiry is still to be
        // reported, so the stage is not idle until a cycle has seen it.
        w.count_event(5_100 * MS, Event::Dropped, 1);
        assert!(!w.is_idle());
        assert!(w.advance(5_200 * MS));
        assert!(!w.is_idle(), "the drop is held");
        assert!(w.advance(10_300 * MS), "the drop expires");
        assert!(w.is_idle());
        assert!(!w.advance(20_000 * MS));
        assert!(w.is_idle());
    }

    #[test]
    fn folded_base_slices_equal_records_placed_one_by_one() {
        let l = layout();
        // Advanced every 37 records: records open new base slices between advances (the closed
        // one waits to be folded, a third folds it), and a one-slice window moves with every
        // base slice folded.
        let specs = [
            (Duration::from_secs(1), Duration::from_millis(250)),
            (Duration::from_secs(5), Duration::from_secs(1)),
            (Duration::from_millis(250), Duration::from_millis(250)),
        ];
        let mut folded = StageWindows::new(specs, 250 * MS, 0);
        let mut direct: Vec<SlidingWindow> = specs
            .iter()
            .map(|&(len, sl)| SlidingWindow::new(len, sl, 0))
            .collect();
        let mut t = 0;
        for i in 0..400u64 {
            t += (i * 7919) % (90 * MS);
            let v = 1000 + i * i;
            folded.record(t, l.index(v), v, false);
            for w in &mut direct {
                w.record(t, l.index(v), v, false);
            }
            if i % 5 == 0 {
                // A late record, older than the open base slice.
                let late = t.saturating_sub(300 * MS);
                folded.record(late, l.index(v), v, false);
                for w in &mut direct {
                    w.record(late, l.index(v), v, false);
                }
            }
            if i % 37 == 0 {
                folded.advance(t);
                for w in &mut direct {
                    w.advance(t);
                }
                for (k, w) in direct.iter().enumerate() {
                    assert_eq!(
                        folded.stats(k, stage(), &l),
                        stats(w, &l),
                        "window {k} at {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_closed_base_slice_counts_before_it_is_folded() {
        let l = layout();
        let mut w = one_and_five_seconds();
        w.record(100 * MS, l.index(5), 5, false);
        // Opens the next base slice: the first waits for the next advance to be folded.
        w.record(300 * MS, l.index(7), 7, false);
        for i in 0..2 {
            let s = w.stats(i, stage(), &l);
            assert_eq!((s.count, s.min, s.max), (2, ns(5), ns(7)), "window {i}");
        }
        // A third base slice: both closed ones wait; a fourth folds the oldest.
        w.record(600 * MS, l.index(9), 9, false);
        assert_eq!(w.stats(0, stage(), &l).count, 3);
        w.record(800 * MS, l.index(11), 11, false);
        assert_eq!(w.stats(1, stage(), &l).count, 4);
        w.advance(1_100 * MS);
        // 1 s window at 1.1 s: the slice of 0-250 ms expired, 250 ms on are in.
        assert_eq!(w.stats(0, stage(), &l).count, 3);
        assert_eq!(w.stats(1, stage(), &l).count, 4);
    }

    #[test]
    fn records_expire_one_slice_at_a_time() {
        let l = layout();
        let mut w = SlidingWindow::new(Duration::from_secs(1), Duration::from_millis(250), 0);
        w.record(10 * MS, l.index(100), 100, false);
        w.record(260 * MS, l.index(200), 200, false);
        assert_eq!(stats(&w, &l).count, 2);
        assert!(!w.advance(999 * MS));
        assert_eq!(stats(&w, &l).count, 2);
        // At 1.0 s the slice [0, 250 ms) expires.
        assert!(w.advance(1000 * MS));
        let s = stats(&w, &l);
        assert_eq!(
            (s.count, s.min, s.max),
            (1, Duration::from_nanos(200), Duration::from_nanos(200))
        );
        assert!(w.advance(1250 * MS));
        assert_eq!(stats(&w, &l).count, 0);
        assert_eq!(w.sum.total(), 0);
    }

    #[test]
    fn late_records_land_in_their_own_slice_or_are_refused() {
        let l = layout();
        let mut w = SlidingWindow::new(Duration::from_secs(1), Duration::from_millis(250), 0);
        w.advance(1100 * MS); // live slices: [250 ms, 1250 ms)
        assert!(w.record(300 * MS, l.index(5), 5, false));
        assert!(
            !w.record(100 * MS, l.index(5), 5, false),
            "older than the window"
        );
        assert_eq!(stats(&w, &l).count, 1);
        w.advance(1300 * MS); // expires [250, 500)
        assert_eq!(stats(&w, &l).count, 0);
    }

    #[test]
    fn a_long_gap_clears_everything() {
        let l = layout();
        let mut w = SlidingWindow::new(Duration::from_secs(5), Duration::from_secs(1), 0);
        for t in 0..5 {
            w.record(t * 1000 * MS, l.index(t + 1), t + 1, false);
            w.count_event(t * 1000 * MS, Event::Dropped, 2);
        }
        assert_eq!(stats(&w, &l).dropped, 10);
        w.advance(3600 * 1000 * MS);
        let s = stats(&w, &l);
        assert_eq!((s.count, s.dropped), (0, 0));
    }

    #[test]
    fn stats_are_exact_where_they_can_be() {
        let l = layout();
        let mut c = Cumulative::default();
        let values = [1000u64, 2000, 3000, 4000, 1_000_000];
        for v in values {
            c.record(l.index(v), v, false);
        }
        let s = c.stats(stage(), &l, 0);
        assert_eq!(s.mean, Duration::from_nanos(202_000));
        assert_eq!(s.min, Duration::from_nanos(1000));
        assert_eq!(s.max, Duration::from_nanos(1_000_000));
        // Percentiles report their bucket's highest value (3000 shares a 2 ns bucket with 3001).
        assert_eq!(
            s.p50,
            Duration::from_nanos(l.highest_equivalent(l.index(3000)))
        );
        assert_eq!(s.p50, Duration::from_nanos(3001));
        assert_eq!(
            s.p999,
            Duration::from_nanos(1_000_000),
            "clamped to the exact max"
        );
        let mean = 202_000f64;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / 5.0;
        assert_eq!(s.stddev, Duration::from_nanos(var.sqrt().round() as u64));
    }
}

/// A sliding count (guard trips): the same slices as [`SlidingWindow`], counts only.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slice_ns: u64,
    /// (slice number, count) per slot.
    slots: Box<[(u64, u64)]>,
}

impl CountWindow {
    pub(crate) fn new(length: Duration, slice: Duration) -> Self {
        let slice_ns = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX).max(1);
        let n = (length.as_nanos() / slice.as_nanos()).max(1) as usize;
        Self {
            slice_ns,
            slots: vec![(u64::MAX, 0); n].into_boxed_slice(),
        }
    }

    pub(crate) fn add(&mut self, t_ns: u64, n: u64) {
        let number = t_ns / self.slice_ns;
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(number % len) as usize];
        if slot.0 != number {
            *slot = (number, 0);
        }
        slot.1 += n;
    }

    /// The count over the window ending at `now_ns`.
    pub(crate) fn total(&self, now_ns: u64) -> u64 {
        let current = now_ns / self.slice_ns;
        let len = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(|(number, _)| {
                *number != u64::MAX && *number <= current && number + len > current
            })
            .map(|(_, c)| c)
            .sum()
    }
}
