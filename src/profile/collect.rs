//! A running collector's profile: a one-shot sink copies the cumulative counters at the end of a
//! cycle, and the caller's thread turns them into histograms and figures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::{
    CorrectedCounts, CorrectedProfile, Profile, ProfileConfig, ProfileError, ProfileMeta,
    StageCounts, StageProfile,
};
use crate::CollectorHandle;
use crate::hist::{Layout, Tally};
use crate::sink::{Cycle, HistogramView, Sink};
use crate::stage::Stage;

/// One stage's cumulative figures as the aggregator holds them.
pub(crate) struct StageDump {
    pub(crate) stage: Stage,
    /// The cumulative histogram's non-zero counters, (index, count), ascending.
    pub(crate) counts: Vec<(usize, u64)>,
    pub(crate) tally: Tally,
    /// The stage's span outcomes waiting in rings at the cycle's publish.
    pub(crate) in_rings: u64,
    /// The coordinated-omission-corrected histogram, for a stage that has one.
    pub(crate) corrected: Option<CorrectedDump>,
}

/// A stage's cumulative corrected histogram as the aggregator holds it.
pub(crate) struct CorrectedDump {
    /// Non-zero counters, (index, count), ascending.
    pub(crate) counts: Vec<(usize, u64)>,
    pub(crate) tally: Tally,
    /// The interval the latest span was corrected with.
    pub(crate) interval_ns: u64,
}

/// The aggregator's answer to a profile request: plain copies, no histogram work on its thread.
pub(crate) struct Dump {
    pub(crate) digits: u8,
    pub(crate) highest: u64,
    pub(crate) interval: Duration,
    pub(crate) ring_capacity: usize,
    pub(crate) sampling_rate: f64,
    /// [`crate::Health::backwards_spans`].
    pub(crate) backwards_spans: u64,
    /// Every stage with any activity, in stage-id order.
    pub(crate) stages: Vec<StageDump>,
}

/// The reply slot between [`take`] and its request's sink.
#[derive(Default)]
struct Reply {
    /// Set by [`take`] when it gave up waiting: a late cycle then does no work for nobody.
    withdrawn: AtomicBool,
    dump: Mutex<Option<Dump>>,
}

/// A one-shot sink: at the first cycle that sees it, copies every active stage's cumulative
/// counters and tallies into its reply (plain copies: the caller's thread builds the histograms),
/// then retires.
struct ProfileRequest {
    reply: Arc<Reply>,
    answered: bool,
}

impl Sink for ProfileRequest {
    fn name(&self) -> &'static str {
        "profile"
    }

    fn cycle(&mut self, cycle: &Cycle<'_>) {
        self.answered = true;
        if self.reply.withdrawn.load(Ordering::Relaxed) {
            return;
        }
        *self.reply.dump.lock() = Some(dump_of(cycle));
    }

    fn is_done(&self) -> bool {
        self.answered
    }
}

/// A histogram's non-zero counters as `(index, count)` in `layout`'s indices: as they are when
/// the histogram has that layout, else each bucket at its reported value (highest equivalent),
/// within the coarser of the two precisions (a family's series in a profile of 3-digit stages).
fn counts_in(view: &HistogramView<'_>, layout: &Layout) -> Vec<(usize, u64)> {
    let own = view.layout;
    if own == layout {
        return view.hist.iter().collect();
    }
    let mut counts: Vec<(usize, u64)> = Vec::new();
    for (i, n) in view.hist.iter() {
        let index = layout.index(own.highest_equivalent(i));
        match counts.last_mut() {
            Some((last, total)) if *last == index => *total += n,
            _ => counts.push((index, n)),
        }
    }
    counts
}

fn dump_of(cycle: &Cycle<'_>) -> Dump {
    // A profile has one layout: a family's coarser series are carried over into it.
    let layout = cycle.layout;
    let stages = cycle
        .stages()
        .filter(|s| !s.cumulative().tally.is_empty())
        .map(|s| {
            let cumulative = s.cumulative();
            StageDump {
                stage: s.stage(),
                counts: counts_in(&cumulative, layout),
                tally: *cumulative.tally,
                in_rings: s.in_rings(),
                corrected: s.corrected().map(|c| CorrectedDump {
                    counts: counts_in(&c.histogram, layout),
                    tally: *c.histogram.tally,
                    interval_ns: c.interval_ns,
                }),
            }
        })
        .collect();
    let health = &cycle.snapshot().health;
    Dump {
        digits: cycle.significant_digits(),
        highest: cycle.highest_trackable_ns(),
        interval: cycle.interval(),
        ring_capacity: health.ring_capacity,
        sampling_rate: health.sampling_rate,
        backwards_spans: health.backwards_spans,
        stages,
    }
}

/// How long [`take`] waits for the aggregator, over both of its flushes.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

impl CollectorHandle {
    /// The run so far as a perf profile named `name` (feature `profile`): every stage with any
    /// activity since install, in stage order, with its cumulative histogram and exact figures
    /// (the same percentiles as `get_stats(stage, Window::Cumulative)`), the collector's
    /// histogram settings, sampling rate, interval and ring capacity, and the install time as
    /// its start. Flushes first, so every span that ended before the call is in it.
    ///
    /// Fails when instrumentation is compiled out, or when the aggregator does not answer
    /// within 5 s in all (or is asked from an SLA callback, which runs on the aggregator thread).
    ///
    /// ```
    /// let handle = laptime::Collector::builder().install().unwrap();
    /// laptime::record("order_send", std::time::Duration::from_micros(40));
    /// let profile = handle.profile("nightly").unwrap();
    /// assert_eq!(profile.stage("order_send").unwrap().count, 1);
    /// # let dir = std::env::temp_dir().join(format!("laptime-doc-{}", std::process::id()));
    /// profile.write(dir.join("nightly.json")).unwrap();
    /// # std::fs::remove_dir_all(dir).unwrap();
    /// ```
    pub fn profile(&self, name: &str) -> Result<Profile, ProfileError> {
        take(
            name,
            self.installed_at(),
            |deadline| self.flush_within(deadline.saturating_duration_since(Instant::now())),
            |reply| {
                self.add_sink(Box::new(ProfileRequest {
                    reply,
                    answered: false,
                }))
            },
        )
    }
}

/// `CollectorHandle::profile`: asks the aggregator for its cumulative figures and builds the
/// profile from them. `flush` runs a cycle and waits for it until the given instant (false if it
/// did not answer by then); both flushes share one deadline, [`TIMEOUT`] from the call. `ask`
/// hands the aggregator a request that fills the reply at its next cycle.
fn take(
    name: &str,
    installed: SystemTime,
    flush: impl Fn(Instant) -> bool,
    ask: impl FnOnce(Arc<Reply>) -> bool,
) -> Result<Profile, ProfileError> {
    let no_answer = || ProfileError::Collector {
        message: format!(
            "the aggregator did not answer within {} s (a profile cannot be taken from an SLA \
             callback, which runs on the aggregator thread): retry, or take it from another \
             thread",
            TIMEOUT.as_secs()
        ),
    };
    if !crate::COMPILED_IN {
        return Err(ProfileError::Collector {
            message: "instrumentation is compiled out (laptime's `enable` feature is off), so \
                      nothing was recorded: build with the `enable` feature"
                .to_owned(),
        });
    }
    let deadline = Instant::now() + TIMEOUT;
    // First a cycle that drains every record made before this call. The request is made only
    // once that cycle has ended (its end happens-before the request, through the flush mutex),
    // so the cycle that answers started after it and its counts hold every one of those records.
    // Asking before the flush could be answered by a cycle that drained before this call.
    if !flush(deadline) {
        return Err(no_answer());
    }
    let reply = Arc::new(Reply::default());
    if !ask(reply.clone()) {
        return Err(ProfileError::Collector {
            message: "the collector has stopped: take the profile before dropping its handle"
                .to_owned(),
        });
    }
    let answered = flush(deadline);
    reply.withdrawn.store(true, Ordering::Relaxed);
    let Some(dump) = reply.dump.lock().take() else {
        return Err(if answered {
            ProfileError::Collector {
                message: "the aggregator's cycle failed before it answered (see \
                          `Health::aggregator_restarts`): retry"
                    .to_owned(),
            }
        } else {
            no_answer()
        });
    };
    build(name, installed, dump)
}

fn build(name: &str, installed: SystemTime, dump: Dump) -> Result<Profile, ProfileError> {
    let collector = |message: String| ProfileError::Collector { message };
    let layout = Layout::new(dump.digits, dump.highest);
    // Stage keys sort labels, so stages registered with the same labels in another order are
    // one stage here: their figures are added up. Grouped first, then each stage's histogram is
    // built, encoded and dropped before the next one's: one dense histogram alive at a time
    // (about 270 KB at 3 digits up to an hour, 27 MB at 5), not one per stage.
    let mut groups: Vec<Vec<&StageDump>> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for s in &dump.stages {
        let key = StageProfile::key_of(s.stage.name(), &labels_of(s.stage));
        match index.get(&key) {
            Some(&g) => groups[g].push(s),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![s]);
            }
        }
    }
    let mut stages = Vec::with_capacity(groups.len());
    for group in groups {
        let first = group[0].stage;
        let (counts, _) = group
            .iter()
            .map(|s| (counts_of(s), s.tally.count > 0))
            .reduce(|(mut a, a_recorded), (b, b_recorded)| {
                super::merge::add(&mut a, &b, a_recorded, b_recorded);
                (a, a_recorded || b_recorded)
            })
            .expect("every group holds at least one stage");
        // One histogram for the group: every member's counters recorded into it.
        let hist = to_hdrhistogram(
            &layout,
            dump.digits,
            group.iter().flat_map(|s| s.counts.iter().copied()),
        )
        .map_err(|e| collector(format!("stage {}: {e}", first.name())))?;
        let mut stage =
            StageProfile::from_histogram(first.name(), labels_of(first), &hist, counts)?;
        drop(hist);
        stage.corrected = corrected(&layout, dump.digits, &group)
            .map_err(|e| collector(format!("stage {}: {e}", first.name())))?;
        stages.push(stage);
    }
    let config = ProfileConfig {
        significant_digits: dump.digits,
        highest_ns: dump.highest,
        sampling_rate: dump.sampling_rate,
        interval_ns: u64::try_from(dump.interval.as_nanos()).unwrap_or(u64::MAX),
        ring_capacity: dump.ring_capacity as u64,
    };
    let mut meta = ProfileMeta::new(name, config);
    meta.started_unix_ms = super::unix_ms(installed);
    meta.backwards_spans = dump.backwards_spans;
    Ok(Profile::new(meta, stages))
}

fn labels_of(stage: Stage) -> BTreeMap<String, String> {
    stage
        .labels()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A stage's exact figures from its tally.
fn counts_of(s: &StageDump) -> StageCounts {
    let t = &s.tally;
    let recorded = t.count > 0;
    StageCounts {
        // An empty tally's min is u64::MAX; a profile says 0.
        min_ns: if recorded { t.min } else { 0 },
        max_ns: if recorded { t.max } else { 0 },
        sum_ns: u64::try_from(t.sum).unwrap_or(u64::MAX),
        deadline_ns: s
            .stage
            .deadline()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        deadline_misses: t.misses,
        dropped: t.dropped,
        sampled_out: t.sampled_out,
        cancelled: t.cancelled,
        saturated: t.saturated,
        unwound: t.unwound,
        in_rings: s.in_rings,
    }
}

/// The corrected figures of a group of stages (one key): the members with a corrected histogram
/// added up, with the first one's expected interval. `None` when no member was corrected.
fn corrected(
    layout: &Layout,
    digits: u8,
    group: &[&StageDump],
) -> Result<Option<CorrectedProfile>, String> {
    let members: Vec<&CorrectedDump> = group.iter().filter_map(|s| s.corrected.as_ref()).collect();
    let Some((counts, _)) = members
        .iter()
        .map(|c| (corrected_counts_of(c), c.tally.count > 0))
        .reduce(|(mut a, a_recorded), (b, b_recorded)| {
            super::merge::add_corrected(&mut a, &b, a_recorded, b_recorded);
            (a, a_recorded || b_recorded)
        })
    else {
        return Ok(None);
    };
    let hist = to_hdrhistogram(
        layout,
        digits,
        members.iter().flat_map(|c| c.counts.iter().copied()),
    )
    .map_err(|e| e.to_string())?;
    CorrectedProfile::from_histogram(&hist, counts)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A stage's exact corrected figures from its tally, as [`counts_of`].
fn corrected_counts_of(c: &CorrectedDump) -> CorrectedCounts {
    let t = &c.tally;
    let recorded = t.count > 0;
    CorrectedCounts {
        expected_interval_ns: c.interval_ns,
        min_ns: if recorded { t.min } else { 0 },
        max_ns: if recorded { t.max } else { 0 },
        sum_ns: u64::try_from(t.sum).unwrap_or(u64::MAX),
        synthesized: t.synthesized,
        truncated: t.truncated,
        saturated: t.saturated,
    }
}

/// Counts given as (index, count) pairs of `layout` (from [`Hist::iter`]) as an
/// `hdrhistogram::Histogram` of the same layout, for serialisation and merging with other
/// HdrHistogram tools. Exact: the bucket layouts are identical, and each counter's lowest value
/// lands in the same counter there. Fails only for digits or bounds the collector's configuration
/// would have refused.
fn to_hdrhistogram(
    layout: &Layout,
    digits: u8,
    counts: impl IntoIterator<Item = (usize, u64)>,
) -> Result<hdrhistogram::Histogram<u64>, String> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, layout.highest(), digits)
        .map_err(|e| format!("1 ns to {} ns at {digits} digits: {e}", layout.highest()))?;
    for (index, count) in counts {
        let value = layout.lowest_equivalent(index);
        h.record_n(value, count)
            .map_err(|e| format!("value {value} ns (counter {index}): {e}"))?;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both flushes of one request wait until the same instant, so the whole call is bounded by
    /// one `TIMEOUT`, not one per flush.
    #[test]
    fn both_flushes_share_one_deadline() {
        if !crate::COMPILED_IN {
            return;
        }
        let seen = Mutex::new(Vec::new());
        let before = Instant::now();
        let profile = take(
            "p",
            SystemTime::now(),
            |deadline| {
                seen.lock().push(deadline);
                true
            },
            // The second flush's cycle answers the request.
            |reply| {
                *reply.dump.lock() = Some(Dump {
                    digits: 3,
                    highest: 1 << 40,
                    interval: Duration::from_millis(10),
                    ring_capacity: 64,
                    sampling_rate: 1.0,
                    backwards_spans: 0,
                    stages: Vec::new(),
                });
                true
            },
        )
        .unwrap();
        let after = Instant::now();
        assert!(profile.stages.is_empty());
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1], "one deadline for both flushes");
        assert!(seen[0] >= before + TIMEOUT && seen[0] <= after + TIMEOUT);
    }

    #[test]
    fn converts_to_an_equal_hdrhistogram() {
        let layout = Layout::new(3, 3_600_000_000_000);
        let mut h = crate::hist::Hist::<u64>::new();
        for v in (0..5000u64).map(|i| i * i * 37 + 3) {
            h.record(layout.index(v), 1);
        }
        let hdr = to_hdrhistogram(&layout, 3, h.iter()).unwrap();
        assert_eq!(hdr.len(), h.total());
        let mut out = [0usize; 1];
        for q in [0.5, 0.9, 0.99, 0.999] {
            h.indices_at_ranks(&[crate::hist::rank(q, h.total())], &mut out);
            assert_eq!(
                layout.highest_equivalent(out[0]),
                hdr.highest_equivalent(hdr.value_at_quantile(q))
            );
        }
    }
}
