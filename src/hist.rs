//! Histograms for the aggregator: HdrHistogram's bucket layout, stored as a short sorted list of
//! the values held or in lazily allocated chunks.
//!
//! Why not `hdrhistogram::Histogram` directly: memory. A 1 ns – 1 h, 3-digit `Histogram<u64>` is
//! 33 792 counters (264 KiB) whatever it holds, so 64 stages × (3 windows of several slices +
//! cumulative) would need hundreds of MiB. The crate can add and subtract whole histograms
//! (`add`, `subtract`), which expiring a slice needs, but each call walks every counter of both,
//! and `value_at_quantile` scans every counter per quantile. Here the index math is HdrHistogram's
//! (the tests convert to the `hdrhistogram` crate and compare, and a profile serialises through
//! it), but a histogram of few distinct values is a sorted list of them (a series' window slice
//! holds a handful), and past that counters are allocated 64 at a time only where values land;
//! every chunk keeps its total so a quantile walks the totals then one chunk, and windows add and
//! subtract only what holds anything.
use std::fmt;

/// Counters per chunk: 64 × 4 B = 256 B for window counters, half an octave at 2 significant
/// digits. Small chunks follow where values land closely; the price is a longer directory.
const CHUNK: usize = 64;
/// A window-slice chunk that held fewer records than this when its slice expired is freed rather
/// than zeroed: steady-state memory then follows where values land now, not every value ever
/// seen, at the price of an allocation when a rare value lands there again (aggregator thread).
const KEEP_CHUNK_AT: u64 = 64;

/// The bucket layout: HdrHistogram's, with a lowest discernible value of 1.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// log2 of half the sub-bucket count (10 for 3 significant digits).
    half_magnitude: u32,
    /// `sub_bucket_count - 1`.
    sub_bucket_mask: u64,
    /// 64 - log2(sub_bucket_count): `leading_zeros(v | mask)` subtracted from it gives the bucket.
    leading_zero_base: u32,
    highest: u64,
    len: usize,
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("sub_buckets", &(self.sub_bucket_mask + 1))
            .field("highest", &self.highest)
            .field("counters", &self.len)
            .finish()
    }
}

impl Layout {
    /// `digits` in 1..=5, `highest` ≥ 2048 (validated by the collector's configuration).
    pub(crate) fn new(digits: u8, highest: u64) -> Self {
        let largest_single_unit = 2 * 10u64.pow(u32::from(digits));
        let sub_bucket_count_magnitude = largest_single_unit.next_power_of_two().trailing_zeros();
        let sub_bucket_count = 1u64 << sub_bucket_count_magnitude;
        let mut layout = Layout {
            half_magnitude: sub_bucket_count_magnitude - 1,
            sub_bucket_mask: sub_bucket_count - 1,
            leading_zero_base: 64 - sub_bucket_count_magnitude,
            highest,
            len: 0,
        };
        layout.len = layout.index(highest) + 1;
        layout
    }

    /// Its significant digits (HdrHistogram's: 2 digits is 256 sub-buckets, 3 is 2048).
    pub(crate) fn digits(&self) -> u8 {
        let sub_buckets = self.sub_bucket_mask + 1;
        (1..=5u8)
            .find(|d| (2 * 10u64.pow(u32::from(*d))).next_power_of_two() == sub_buckets)
            .unwrap_or(3)
    }

    /// Values above this are recorded as this (and counted as saturated by the caller).
    pub(crate) fn highest(&self) -> u64 {
        self.highest
    }

    fn bucket(&self, v: u64) -> u32 {
        self.leading_zero_base - (v | self.sub_bucket_mask).leading_zeros()
    }

    /// The counter index of `v` (saturated to `highest`).
    #[inline]
    pub(crate) fn index(&self, v: u64) -> usize {
        let v = v.min(self.highest);
        let bucket = self.bucket(v);
        let sub = v >> bucket;
        (((bucket as u64 + 1) << self.half_magnitude) + sub - (1 << self.half_magnitude)) as usize
    }

    /// The smallest value that lands in counter `index`.
    pub(crate) fn lowest_equivalent(&self, index: usize) -> u64 {
        let index = index as u64;
        let half = 1u64 << self.half_magnitude;
        let bucket = (index >> self.half_magnitude) as i64 - 1;
        let mut sub = (index & (half - 1)) + half;
        let bucket = if bucket < 0 {
            sub -= half;
            0
        } else {
            bucket as u32
        };
        sub << bucket
    }

    /// The largest value that lands in counter `index`.
    pub(crate) fn highest_equivalent(&self, index: usize) -> u64 {
        let low = self.lowest_equivalent(index);
        low + (1u64 << self.bucket(low)) - 1
    }

    /// Number of counters a dense histogram of this layout would need.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// A counter type: `u32` for slices and windows (at most a minute of records), `u64` cumulative.
pub(crate) trait Count: Copy + Default + Eq + fmt::Debug + 'static {
    fn add(&mut self, n: u64);
    fn sub(&mut self, n: u64);
    fn get(self) -> u64;
}

impl Count for u32 {
    #[inline]
    fn add(&mut self, n: u64) {
        // A window or slice holding 2^32 records of one stage would need 70 M records/s for a
        // minute, above what one aggregator drains; saturate rather than wrap if it ever happens.
        *self = u32::try_from(u64::from(*self) + n).unwrap_or(u32::MAX);
    }
    #[inline]
    fn sub(&mut self, n: u64) {
        debug_assert!(u64::from(*self) >= n, "window counter underflow");
        *self = self.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn get(self) -> u64 {
        u64::from(self)
    }
}

impl Count for u64 {
    #[inline]
    fn add(&mut self, n: u64) {
        *self = self.saturating_add(n);
    }
    #[inline]
    fn sub(&mut self, n: u64) {
        debug_assert!(*self >= n, "counter underflow");
        *self = self.saturating_sub(n);
    }
    fn get(self) -> u64 {
        self
    }
}

/// Counts per counter index. A histogram holding few distinct values keeps them as a short sorted
/// list (a window slice of a series recording ten values a second holds a handful); past
/// [`SPARSE_MAX`] distinct values it turns dense when that is smaller, allocated a chunk at a time
/// where values land.
/// On reset, dense chunks that held records are zeroed, not freed, so a busy histogram does not
/// allocate again where values keep landing; a histogram emptied by subtraction (an idle window)
/// lets go of everything.
#[derive(Clone, Default)]
pub(crate) struct Hist<C: Count> {
    store: Store<C>,
    total: u64,
}

#[derive(Clone)]
enum Store<C: Count> {
    /// Non-zero counters as (index, count), ascending by index; at most [`SPARSE_LIMIT`].
    Sparse(Vec<(u32, C)>),
    /// Boxed: most histograms of a series are lists, and every window slice holds one.
    Dense(Box<Dense<C>>),
}

impl<C: Count> Default for Store<C> {
    fn default() -> Self {
        Store::Sparse(Vec::new())
    }
}

#[derive(Clone, Default)]
struct Dense<C: Count> {
    chunks: Vec<Option<Box<[C; CHUNK]>>>,
    /// Sum of each chunk's counters (0 for absent chunks).
    chunk_totals: Vec<u64>,
    /// How many of `chunks` are allocated (kept, so memory accounting is O(1)).
    allocated: usize,
}

/// Distinct values a histogram always keeps as a sorted list. Past this, it turns dense once the
/// list would take more memory than the dense chunks its values touch (checked every
/// [`SPARSE_CHECK_EVERY`] insertions), and at [`SPARSE_LIMIT`] whatever: a window slice holding
/// fifty values spread over two octaves at 2 digits stays a 400-byte list, not four 256-byte
/// chunks.
const SPARSE_MAX: usize = 48;
const SPARSE_CHECK_EVERY: usize = 16;
/// The longest list: an insertion moves at most this many entries. Longer lists (a minute's
/// window sum of a busy series) saved little memory against their chunks and cost a large move
/// per insertion: at 20 000 series, 512 dropped five times as many records as 128.
const SPARSE_LIMIT: usize = 128;

/// Whether a list of `entries` takes one more entry rather than turning dense.
fn stays_sparse<C: Count>(entries: &[(u32, C)]) -> bool {
    let len = entries.len();
    if len < SPARSE_MAX {
        return true;
    }
    if len >= SPARSE_LIMIT || !len.is_multiple_of(SPARSE_CHECK_EVERY) {
        return len < SPARSE_LIMIT;
    }
    (len + SPARSE_CHECK_EVERY) * size_of::<(u32, C)>()
        < chunks_touched(entries) * CHUNK * size_of::<C>()
}

/// Whether a list built in one go (a merge) stays a list: the rule [`stays_sparse`] applies one
/// insertion at a time.
fn list_fits<C: Count>(entries: &[(u32, C)]) -> bool {
    let len = entries.len();
    if len <= SPARSE_MAX {
        return true;
    }
    if len > SPARSE_LIMIT {
        return false;
    }
    size_of_val(entries) < chunks_touched(entries) * CHUNK * size_of::<C>()
}

/// Makes room for `more` entries, growing by a quarter rather than doubling: thousands of
/// series hold dozens of lists each, and a doubled list is on average a third empty.
fn grow_list<T>(entries: &mut Vec<T>, more: usize) {
    if entries.capacity() - entries.len() < more {
        entries.reserve_exact(more.max(entries.len() / 4).max(4));
    }
}

/// How many dense chunks the entries of a list fall in.
fn chunks_touched<C: Count>(entries: &[(u32, C)]) -> usize {
    let mut chunks = 0;
    let mut last = usize::MAX;
    for e in entries {
        let chunk = e.0 as usize / CHUNK;
        chunks += usize::from(chunk != last);
        last = chunk;
    }
    chunks
}

/// Adds the sorted list `theirs` into the sorted list `mine` in one pass from the back (the new
/// entries counted first, so every entry moves once): folding a base slice into a minute's window
/// sum is a streaming merge, not a binary search and an insertion per value.
fn merge_lists<C: Count, D: Count>(mine: &mut Vec<(u32, C)>, theirs: &[(u32, D)]) {
    let (mut i, mut new) = (0, 0);
    for e in theirs {
        while i < mine.len() && mine[i].0 < e.0 {
            i += 1;
        }
        new += usize::from(mine.get(i).is_none_or(|m| m.0 != e.0));
    }
    let old = mine.len();
    grow_list(mine, new);
    mine.resize(old + new, (0, C::default()));
    let (mut i, mut j, mut k) = (old, theirs.len(), old + new);
    while j > 0 {
        let (key, count) = theirs[j - 1];
        k -= 1;
        if i > 0 && mine[i - 1].0 > key {
            mine[k] = mine[i - 1];
            i -= 1;
            continue;
        }
        let mut merged = if i > 0 && mine[i - 1].0 == key {
            i -= 1;
            mine[i].1
        } else {
            C::default()
        };
        merged.add(count.get());
        mine[k] = (key, merged);
        j -= 1;
    }
    debug_assert_eq!(i, k, "the entries left in front are already in place");
}

impl<C: Count> fmt::Debug for Hist<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Hist");
        d.field("total", &self.total);
        match &self.store {
            Store::Sparse(entries) => d.field("sparse", &entries.len()),
            Store::Dense(dense) => d.field("chunks", &dense.allocated),
        };
        d.finish()
    }
}

impl<C: Count> Dense<C> {
    fn chunk_mut(&mut self, chunk: usize) -> &mut [C; CHUNK] {
        if chunk >= self.chunks.len() {
            self.chunks.resize_with(chunk + 1, || None);
            self.chunk_totals.resize(chunk + 1, 0);
        }
        let slot = &mut self.chunks[chunk];
        if slot.is_none() {
            self.allocated += 1;
        }
        slot.get_or_insert_with(|| Box::new([C::default(); CHUNK]))
    }

    #[inline]
    fn record(&mut self, index: usize, n: u64) {
        let (chunk, offset) = (index / CHUNK, index % CHUNK);
        self.chunk_mut(chunk)[offset].add(n);
        self.chunk_totals[chunk] += n;
    }

    fn subtract_at(&mut self, index: usize, n: u64) {
        let (chunk, offset) = (index / CHUNK, index % CHUNK);
        self.chunk_mut(chunk)[offset].sub(n);
        self.chunk_totals[chunk] -= n;
    }

    /// Adds (`add`) or subtracts every counter of `other`, chunk by chunk.
    fn merge<D: Count>(&mut self, other: &Dense<D>, add: bool) {
        for (chunk, counts) in other.chunks.iter().enumerate() {
            let Some(counts) = counts else { continue };
            let other_total = other.chunk_totals[chunk];
            if other_total == 0 {
                continue;
            }
            let mine = self.chunk_mut(chunk);
            for (m, o) in mine.iter_mut().zip(counts.iter()) {
                if add { m.add(o.get()) } else { m.sub(o.get()) }
            }
            if add {
                self.chunk_totals[chunk] += other_total;
            } else {
                self.chunk_totals[chunk] -= other_total;
            }
        }
    }

    /// Zeroes every counter; frees the chunks that held fewer than `keep_at` records.
    fn reset(&mut self, keep_at: u64) {
        for (chunk, counts) in self.chunks.iter_mut().enumerate() {
            let total = std::mem::take(&mut self.chunk_totals[chunk]);
            if counts.is_none() {
                continue;
            }
            if total < keep_at {
                *counts = None;
                self.allocated -= 1;
            } else if total != 0
                && let Some(counts) = counts
            {
                counts.fill(C::default());
            }
        }
    }
}

impl<C: Count> Hist<C> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Turns a sparse histogram dense (its list no longer fits).
    fn densify(&mut self) -> &mut Dense<C> {
        if let Store::Sparse(entries) = &self.store {
            let mut dense = Dense::default();
            for &(index, count) in entries {
                dense.record(index as usize, count.get());
            }
            self.store = Store::Dense(Box::new(dense));
        }
        match &mut self.store {
            Store::Dense(dense) => dense,
            Store::Sparse(_) => unreachable!("made dense above"),
        }
    }

    /// Adds `n` to the counter at `index`.
    #[inline]
    pub(crate) fn record(&mut self, index: usize, n: u64) {
        self.total += n;
        if let Store::Sparse(entries) = &mut self.store {
            // Indices stay below the layout's length (a few hundred thousand at 5 digits).
            let key = index as u32;
            match entries.binary_search_by_key(&key, |e| e.0) {
                Ok(at) => return entries[at].1.add(n),
                Err(at) if stays_sparse(entries) => {
                    let mut count = C::default();
                    count.add(n);
                    grow_list(entries, 1);
                    return entries.insert(at, (key, count));
                }
                Err(_) => {}
            }
        }
        self.densify().record(index, n);
    }

    /// Adds every count of `other` (of the same layout).
    pub(crate) fn add<D: Count>(&mut self, other: &Hist<D>) {
        match (&mut self.store, &other.store) {
            (Store::Sparse(mine), Store::Sparse(theirs)) => {
                self.total += other.total;
                merge_lists(mine, theirs);
                if !list_fits(mine) {
                    self.densify();
                }
            }
            (_, Store::Sparse(theirs)) => {
                for &(index, count) in theirs {
                    self.record(index as usize, count.get());
                }
            }
            (_, Store::Dense(theirs)) => {
                self.total += other.total;
                self.densify().merge(theirs, true);
            }
        }
    }

    /// Removes every count of `other`, which must have been added before. A histogram emptied
    /// this way (a window whose every slice expired) frees its memory.
    pub(crate) fn subtract<D: Count>(&mut self, other: &Hist<D>) {
        self.total -= other.total;
        match (&mut self.store, &other.store) {
            (Store::Dense(mine), Store::Dense(theirs)) => mine.merge(theirs, false),
            (Store::Dense(mine), Store::Sparse(theirs)) => {
                for &(index, count) in theirs {
                    mine.subtract_at(index as usize, count.get());
                }
            }
            (Store::Sparse(mine), _) => {
                // One forward walk (both ascending), then one pass dropping the emptied entries:
                // a binary search and a removal per entry missed the cache on every probe.
                let mut at = 0;
                for (index, count) in other.iter() {
                    let key = index as u32;
                    while at < mine.len() && mine[at].0 < key {
                        at += 1;
                    }
                    match mine.get_mut(at) {
                        Some(e) if e.0 == key => e.1.sub(count),
                        _ => debug_assert!(false, "subtracting a count never added"),
                    }
                }
                mine.retain(|e| e.1.get() != 0);
            }
        }
        if self.total == 0 {
            self.store = Store::default();
        }
    }

    /// Zeroes every counter (the open base slice, reset every base slice), keeping the dense
    /// chunks that held records for reuse and freeing the others; a dense histogram that held
    /// no more records than a list does goes back to a list.
    pub(crate) fn reset(&mut self) {
        self.reset_keeping(1);
    }

    /// Zeroes every counter like [`Hist::reset`], but frees the dense chunks that held fewer than
    /// [`KEEP_CHUNK_AT`] records: a window slice that rotates then does not keep a chunk for
    /// every rare tail value it ever saw. Call only when the counts are no longer needed (a slice
    /// already subtracted from its window's sum).
    pub(crate) fn reset_and_trim(&mut self) {
        self.reset_keeping(KEEP_CHUNK_AT);
    }

    fn reset_keeping(&mut self, keep_at: u64) {
        let held = std::mem::take(&mut self.total);
        match &mut self.store {
            Store::Sparse(entries) => entries.clear(),
            // A dense histogram that held no more than a list does goes back to a list.
            Store::Dense(_) if held <= SPARSE_MAX as u64 => self.store = Store::default(),
            Store::Dense(dense) => dense.reset(keep_at),
        }
    }

    /// For each rank in `ranks` (ascending, each in 1..=total), the counter index holding the
    /// record of that rank in sorted order. One walk over the chunk totals and into the chunks
    /// that hold a rank.
    #[cfg(test)]
    pub(crate) fn indices_at_ranks(&self, ranks: &[u64], out: &mut [usize]) {
        indices_at_ranks(&[self], ranks, out);
    }

    /// Non-zero counters as (index, count), ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let (sparse, dense) = match &self.store {
            Store::Sparse(entries) => (entries.as_slice(), None),
            Store::Dense(dense) => (&[][..], Some(&**dense)),
        };
        let sparse = sparse.iter().map(|&(i, c)| (i as usize, c.get()));
        let dense = dense.into_iter().flat_map(|d| {
            d.chunks.iter().enumerate().flat_map(|(chunk, counts)| {
                counts
                    .iter()
                    .flat_map(|c| c.iter().enumerate())
                    .filter(|(_, c)| c.get() != 0)
                    .map(move |(offset, c)| (chunk * CHUNK + offset, c.get()))
            })
        });
        sparse.chain(dense)
    }

    /// Heap bytes held (a list, or chunks plus the two directories).
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.store {
            Store::Sparse(entries) => entries.capacity() * size_of::<(u32, C)>(),
            Store::Dense(d) => {
                size_of::<Dense<C>>()
                    + d.allocated * CHUNK * size_of::<C>()
                    + d.chunks.capacity() * size_of::<Option<Box<[C; CHUNK]>>>()
                    + d.chunk_totals.capacity() * size_of::<u64>()
            }
        }
    }

    /// Chunks a rank walk must visit.
    fn chunk_span(&self) -> usize {
        match &self.store {
            Store::Sparse(entries) => entries.last().map_or(0, |e| e.0 as usize / CHUNK + 1),
            Store::Dense(d) => d.chunk_totals.len(),
        }
    }

    /// The entries of a sparse histogram that fall in `chunk`.
    fn sparse_in(entries: &[(u32, C)], chunk: usize) -> &[(u32, C)] {
        let (lo, hi) = ((chunk * CHUNK) as u32, ((chunk + 1) * CHUNK) as u32);
        let from = entries.partition_point(|e| e.0 < lo);
        let to = from + entries[from..].partition_point(|e| e.0 < hi);
        &entries[from..to]
    }

    fn chunk_total(&self, chunk: usize) -> u64 {
        match &self.store {
            Store::Sparse(e) => Self::sparse_in(e, chunk).iter().map(|e| e.1.get()).sum(),
            Store::Dense(d) => d.chunk_totals.get(chunk).copied().unwrap_or(0),
        }
    }

    /// Adds this histogram's counters of `chunk` into `counts`.
    fn add_chunk_into(&self, chunk: usize, counts: &mut [u64; CHUNK]) {
        match &self.store {
            Store::Sparse(entries) => {
                for &(index, count) in Self::sparse_in(entries, chunk) {
                    counts[index as usize % CHUNK] += count.get();
                }
            }
            Store::Dense(d) => {
                if let Some(Some(mine)) = d.chunks.get(chunk) {
                    for (c, m) in counts.iter_mut().zip(mine.iter()) {
                        *c += m.get();
                    }
                }
            }
        }
    }
}

/// [`Hist::indices_at_ranks`] over the sum of several histograms of one layout, without building
/// the sum: lists are merged as the walk goes; with a dense one among them, chunk totals are
/// added to find the chunk holding a rank, and only that chunk's counters are summed.
pub(crate) fn indices_at_ranks<C: Count>(hists: &[&Hist<C>], ranks: &[u64], out: &mut [usize]) {
    debug_assert!(ranks.windows(2).all(|w| w[0] <= w[1]));
    debug_assert_eq!(ranks.len(), out.len());
    let mut walk = RankWalk {
        ranks,
        out,
        next: 0,
        seen: 0,
    };
    if hists.len() <= MAX_LISTS && hists.iter().all(|h| matches!(h.store, Store::Sparse(_))) {
        walk_lists(hists, &mut walk);
    } else {
        walk_chunks(hists, &mut walk);
    }
    // Ranks beyond the total (callers never ask) get the last index.
    let last = walk
        .out
        .get(walk.next.wrapping_sub(1))
        .copied()
        .unwrap_or(0);
    for o in &mut walk.out[walk.next..] {
        *o = last;
    }
}

/// Ranks being placed by a walk over counters in ascending order.
struct RankWalk<'a> {
    ranks: &'a [u64],
    out: &'a mut [usize],
    /// The first rank not yet placed.
    next: usize,
    /// Records passed so far.
    seen: u64,
}

impl RankWalk<'_> {
    fn done(&self) -> bool {
        self.next == self.ranks.len()
    }

    /// Passes `count` records at `index`, placing the ranks they reach.
    #[inline]
    fn pass(&mut self, index: usize, count: u64) {
        self.seen += count;
        while self.next < self.ranks.len() && self.ranks[self.next] <= self.seen {
            self.out[self.next] = index;
            self.next += 1;
        }
    }
}

/// Lists merged by [`walk_lists`] at most: the callers sum a window's running sum and its open
/// slice, so two; more go through [`walk_chunks`].
const MAX_LISTS: usize = 4;

/// Every histogram a list: merge them in index order (on the stack: this runs for every
/// figure the aggregator refreshes).
fn walk_lists<C: Count>(hists: &[&Hist<C>], walk: &mut RankWalk<'_>) {
    let mut lists: [&[(u32, C)]; MAX_LISTS] = [&[]; MAX_LISTS];
    for (list, h) in lists.iter_mut().zip(hists) {
        if let Store::Sparse(entries) = &h.store {
            *list = entries;
        }
    }
    let lists = &lists[..hists.len()];
    let mut at = [0usize; MAX_LISTS];
    while !walk.done() {
        let Some(index) = lists
            .iter()
            .zip(&at)
            .filter_map(|(l, &i)| l.get(i).map(|e| e.0))
            .min()
        else {
            return;
        };
        let mut count = 0;
        for (list, i) in lists.iter().zip(&mut at) {
            if let Some(e) = list.get(*i)
                && e.0 == index
            {
                count += e.1.get();
                *i += 1;
            }
        }
        walk.pass(index as usize, count);
    }
}

/// A dense histogram among them: skip whole chunks by their totals, sum the one holding a rank.
fn walk_chunks<C: Count>(hists: &[&Hist<C>], walk: &mut RankWalk<'_>) {
    let chunks = hists.iter().map(|h| h.chunk_span()).max().unwrap_or(0);
    let mut counts = [0u64; CHUNK];
    for chunk in 0..chunks {
        if walk.done() {
            return;
        }
        let chunk_total: u64 = hists.iter().map(|h| h.chunk_total(chunk)).sum();
        if chunk_total == 0 || walk.seen + chunk_total < walk.ranks[walk.next] {
            walk.seen += chunk_total;
            continue;
        }
        counts.fill(0);
        for h in hists {
            h.add_chunk_into(chunk, &mut counts);
        }
        for (offset, &count) in counts.iter().enumerate() {
            if count != 0 {
                walk.pass(chunk * CHUNK + offset, count);
            }
        }
    }
}

/// The nearest-rank rank of quantile `q` among `n` sorted values: ⌈q·n⌉, at least 1, where a
/// product within 1e-9 of an integer counts as that integer (so 0.999 × 1000 is rank 999, not
/// 1000 through floating-point error).
pub fn rank(q: f64, n: u64) -> u64 {
    let x = q * n as f64;
    let nearest = x.round();
    let r = if (x - nearest).abs() <= 1e-9 * (n as f64).max(1.0) {
        nearest
    } else {
        x.ceil()
    };
    (r as u64).clamp(1, n.max(1))
}

/// Whether the nearest-rank quantile `q` of `count` values falls among the `saturated` ones: the
/// values above the histogram's highest trackable value, recorded as it and so the top ranks.
/// Then the figure reads the highest trackable value while the true quantile is larger. `q` of
/// 0 and 1 are the exact min and max, never saturated.
pub(crate) fn quantile_saturated(q: f64, count: u64, saturated: u64) -> bool {
    saturated > 0 && q > 0.0 && q < 1.0 && rank(q, count) > count.saturating_sub(saturated)
}

/// Exact figures beside a histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tally {
    pub(crate) count: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) sum: u128,
    /// Σx², exact; `u128::MAX` once it would overflow (then `sum_sq_f64` takes over).
    pub(crate) sum_sq: u128,
    /// Σx² in floating point, for totals beyond 2^128 ns².
    pub(crate) sum_sq_f64: f64,
    pub(crate) dropped: u64,
    pub(crate) sampled_out: u64,
    pub(crate) saturated: u64,
    pub(crate) misses: u64,
    /// Spans abandoned before their end (a cancelled guard, a dropped token or async future).
    pub(crate) cancelled: u64,
    /// Spans that ended while their thread unwound from a panic (also recorded as durations).
    pub(crate) unwound: u64,
    /// Corrected histograms only: values added by the coordinated-omission correction (also in
    /// `count`).
    pub(crate) synthesized: u64,
    /// Corrected histograms only: stalls whose coordinated-omission correction was cut short.
    pub(crate) truncated: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
            sum_sq: 0,
            sum_sq_f64: 0.0,
            dropped: 0,
            sampled_out: 0,
            saturated: 0,
            misses: 0,
            cancelled: 0,
            unwound: 0,
            synthesized: 0,
            truncated: 0,
        }
    }
}

impl Tally {
    #[inline]
    pub(crate) fn record(&mut self, value: u64, saturated: bool) {
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += u128::from(value);
        // Saturates only past 2^128 ns² (hundreds of years of recorded time, or `record` of absurd
        // durations); `stddev` then uses the floating-point sum.
        self.sum_sq = self
            .sum_sq
            .saturating_add(u128::from(value) * u128::from(value));
        self.sum_sq_f64 += value as f64 * value as f64;
        self.saturated += u64::from(saturated);
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.sum_sq = self.sum_sq.saturating_add(other.sum_sq);
        self.sum_sq_f64 += other.sum_sq_f64;
        self.dropped += other.dropped;
        self.sampled_out += other.sampled_out;
        self.saturated += other.saturated;
        self.misses += other.misses;
        self.cancelled += other.cancelled;
        self.unwound += other.unwound;
        self.synthesized += other.synthesized;
        self.truncated += other.truncated;
    }

    /// Whether anything at all happened.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
            && self.dropped == 0
            && self.sampled_out == 0
            && self.misses == 0
            && self.cancelled == 0
    }
}

/// Many values bound for one histogram at once: `(counter index, how many)` pairs and the exact
/// tally of the same values. Built by the coordinated-omission correction (`omission.rs`).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) counts: Vec<(usize, u64)>,
    pub(crate) tally: Tally,
}

impl Batch {
    pub(crate) fn clear(&mut self) {
        self.counts.clear();
        self.tally = Tally::default();
    }
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_hdrhistogram() {
        for digits in 1..=5u8 {
            let highest = 3_600_000_000_000u64;
            let layout = Layout::new(digits, highest);
            let reference =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, highest, digits).unwrap();
            // HdrHistogram sizes its array to whole buckets; ours ends at `highest`'s counter.
            assert!(
                layout.len() <= reference.distinct_values(),
                "digits {digits}"
            );
            assert_eq!(
                layout.highest_equivalent(layout.len() - 1),
                reference.highest_equivalent(highest)
            );
            let mut v = 0u64;
            while v < highest {
                let i = layout.index(v);
                assert_eq!(
                    layout.lowest_equivalent(i),
                    reference.lowest_equivalent(v),
                    "v={v}"
                );
                assert_eq!(
                    layout.highest_equivalent(i),
                    reference.highest_equivalent(v),
                    "v={v}"
                );
                v = v * 3 / 2 + 1;
            }
        }
    }

    #[test]
    fn ranks_follow_nearest_rank_without_float_noise() {
        assert_eq!(rank(0.999, 1000), 999);
        assert_eq!(rank(0.5, 3), 2);
        assert_eq!(rank(0.0, 10), 1);
        assert_eq!(rank(1.0, 10), 10);
        assert_eq!(rank(0.95, 1), 1);
        assert_eq!(rank(0.9, 11), 10);
    }

    #[test]
    fn add_subtract_reset_round_trip() {
        let layout = Layout::new(3, 3_600_000_000_000);
        let mut a = Hist::<u32>::new();
        let mut b = Hist::<u32>::new();
        for v in [1u64, 5, 2048, 1_000_000, 1_000_001, 7_000_000_000] {
            a.record(layout.index(v), 1);
            b.record(layout.index(v * 2), 3);
        }
        let before: Vec<_> = a.iter().collect();
        a.add(&b);
        assert_eq!(a.total(), 6 + 18);
        a.subtract(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), before);
        a.reset_and_trim();
        assert_eq!(a.total(), 0);
        assert_eq!(a.iter().count(), 0);
        // Many records of one value: a list still holds them.
        for _ in 0..KEEP_CHUNK_AT * 4 {
            a.record(layout.index(5000), 1);
        }
        assert!(matches!(a.store, Store::Sparse(_)));
        // Many distinct values: dense, and a busy chunk is kept for reuse after a reset.
        for i in 0..KEEP_CHUNK_AT * 4 {
            a.record(layout.index(5000 + i), 1);
        }
        assert!(matches!(a.store, Store::Dense(_)));
        let dense = a.heap_bytes();
        a.reset_and_trim();
        assert_eq!(a.heap_bytes(), dense, "a dense chunk is kept for reuse");
        a.record(layout.index(7), 1);
        a.record(layout.index(5000), 2);
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            vec![(layout.index(7), 1), (layout.index(5000), 2)]
        );
    }

    /// Random records, adds, subtracts and resets on list and dense histograms, checked after
    /// every step against a map of exact counts: values spread wide (lists turn dense) and narrow
    /// (lists merged into lists, most keys shared).
    #[test]
    fn lists_and_chunks_agree_with_exact_counts() {
        churn_against_exact_counts(50_000);
        churn_against_exact_counts(300);
    }

    fn churn_against_exact_counts(spread: u64) {
        use std::collections::BTreeMap;
        let layout = Layout::new(3, 1 << 40);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        let mut sum = Hist::<u32>::new();
        let mut sum_ref = BTreeMap::<usize, u64>::new();
        let mut parts: Vec<(Hist<u32>, BTreeMap<usize, u64>)> = Vec::new();
        for step in 0..4000 {
            // Parts of 1 to ~200 distinct values: some stay lists, some turn dense.
            let mut part = (Hist::<u32>::new(), BTreeMap::new());
            for _ in 0..1 + next() % (1 + step % 200) {
                let index = layout.index(1000 + next() % spread);
                let n = 1 + next() % 3;
                part.0.record(index, n);
                *part.1.entry(index).or_insert(0) += n;
            }
            sum.add(&part.0);
            for (i, n) in &part.1 {
                *sum_ref.entry(*i).or_insert(0) += n;
            }
            parts.push(part);
            if parts.len() > 12 || next() % 5 == 0 {
                let (old, old_ref) = parts.remove(0);
                sum.subtract(&old);
                for (i, n) in old_ref {
                    let e = sum_ref.get_mut(&i).unwrap();
                    *e -= n;
                    if *e == 0 {
                        sum_ref.remove(&i);
                    }
                }
            }
            let exact: Vec<_> = sum_ref.iter().map(|(i, n)| (*i, *n)).collect();
            assert_eq!(sum.iter().collect::<Vec<_>>(), exact, "step {step}");
            assert_eq!(sum.total(), sum_ref.values().sum::<u64>());
            let chunk_totals: u64 = (0..sum.chunk_span()).map(|c| sum.chunk_total(c)).sum();
            assert_eq!(chunk_totals, sum.total());
        }
        for (old, _) in parts.drain(..) {
            sum.subtract(&old);
        }
        assert_eq!(sum.heap_bytes(), 0, "an emptied sum holds nothing");
    }

    #[test]
    fn indices_at_ranks_walks_in_order() {
        let layout = Layout::new(3, 1 << 40);
        let mut h = Hist::<u64>::new();
        let values: Vec<u64> = (1..=1000).map(|i| i * 997).collect();
        for &v in &values {
            h.record(layout.index(v), 1);
        }
        let ranks = [1, 500, 950, 990, 999, 1000];
        let mut out = [0; 6];
        h.indices_at_ranks(&ranks, &mut out);
        for (r, i) in ranks.iter().zip(out) {
            assert_eq!(i, layout.index(values[*r as usize - 1]));
        }
    }

    #[test]
    fn ranks_over_a_sum_of_histograms_match_the_summed_histogram() {
        let layout = Layout::new(3, 1 << 40);
        // A list and a dense histogram summed on the fly.
        let (mut few, mut many) = (Hist::<u32>::new(), Hist::<u32>::new());
        let mut all = Hist::<u32>::new();
        for i in 1..=40u64 {
            few.record(layout.index(i * 7919), 1);
            all.record(layout.index(i * 7919), 1);
        }
        for i in 1..=3000u64 {
            many.record(layout.index(i * 331), 2);
            all.record(layout.index(i * 331), 2);
        }
        let ranks = [1, 40, 41, 3000, 6000, 6040];
        let (mut mixed, mut summed) = ([0; 6], [0; 6]);
        indices_at_ranks(&[&few, &many], &ranks, &mut mixed);
        all.indices_at_ranks(&ranks, &mut summed);
        assert_eq!(mixed, summed);
        let (mut a, mut b, mut both) = (Hist::<u32>::new(), Hist::<u32>::new(), Hist::<u32>::new());
        for i in 1..=3000u64 {
            let v = i * i % 977_771 + 1;
            let h = if i % 3 == 0 { &mut a } else { &mut b };
            h.record(layout.index(v), 1);
            both.record(layout.index(v), 1);
        }
        let ranks = [1, 2, 1500, 2999, 3000];
        let (mut pair, mut summed) = ([0; 5], [0; 5]);
        indices_at_ranks(&[&a, &b], &ranks, &mut pair);
        both.indices_at_ranks(&ranks, &mut summed);
        assert_eq!(pair, summed);
    }
}
