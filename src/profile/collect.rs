//! A running collector's profile: the aggregator hands over its cumulative counters at the end
//! of a cycle, and the caller's thread turns them into histograms and figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::{
    CorrectedCounts, CorrectedProfile, Profile, ProfileConfig, ProfileError, ProfileMeta,
    StageCounts, StageProfile,
};
use crate::aggregator::hist::{Layout, to_hdrhistogram};
use crate::aggregator::window::Tally;
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

/// The request/reply slot between [`take`] and the aggregator, kept in the collector's shared
/// state.
pub(crate) struct Exchange {
    /// When the collector was installed: the profile's start.
    installed: SystemTime,
    /// The last request id; held for the whole request, so one caller at a time asks and a
    /// reply is never taken by another caller.
    last: Mutex<u64>,
    /// The id of the request waiting for an answer, 0 for none.
    wanted: AtomicU64,
    reply: Mutex<Option<(u64, Dump)>>,
}

impl Exchange {
    pub(crate) fn new() -> Self {
        Self {
            installed: SystemTime::now(),
            last: Mutex::new(0),
            wanted: AtomicU64::new(0),
            reply: Mutex::new(None),
        }
    }

    /// On the aggregator thread, at the end of a cycle: the request to answer, if any.
    pub(crate) fn wanted(&self) -> Option<u64> {
        // Relaxed: the id is the only data; the reply travels under its mutex.
        match self.wanted.swap(0, Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// On the aggregator thread: the answer to request `id`.
    pub(crate) fn answer(&self, id: u64, dump: Dump) {
        *self.reply.lock() = Some((id, dump));
    }
}

/// How long [`take`] waits for the aggregator, over both of its flushes.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// `CollectorHandle::profile`: asks the aggregator for its cumulative figures and builds the
/// profile from them. `flush` runs a cycle and waits for it until the given instant (false if it
/// did not answer by then); both flushes share one deadline, [`TIMEOUT`] from the call.
pub(crate) fn take(
    exchange: &Exchange,
    name: &str,
    flush: impl Fn(Instant) -> bool,
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
    let mut last = exchange.last.lock();
    *last += 1;
    let id = *last;
    // First a cycle that drains every record made before this call. The request is made only
    // once that cycle has ended (its end happens-before this store, through the flush mutex), so
    // the cycle that answers started after it and its counts hold every one of those records.
    // Asking before the flush could be answered by a cycle that drained before this call.
    if !flush(deadline) {
        return Err(no_answer());
    }
    exchange.wanted.store(id, Ordering::Relaxed);
    let answered = flush(deadline);
    let reply = exchange.reply.lock().take();
    let dump = match reply {
        Some((reply_id, dump)) if reply_id == id => dump,
        _ => {
            // Withdraw the request, so a late answer does not do the work for nobody.
            let _ = exchange
                .wanted
                .compare_exchange(id, 0, Ordering::Relaxed, Ordering::Relaxed);
            return Err(if answered {
                ProfileError::Collector {
                    message: "the aggregator's cycle failed before it answered (see \
                              `Health::aggregator_restarts`): retry"
                        .to_owned(),
                }
            } else {
                no_answer()
            });
        }
    };
    drop(last);
    build(exchange, name, dump)
}

fn build(exchange: &Exchange, name: &str, dump: Dump) -> Result<Profile, ProfileError> {
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
    meta.started_unix_ms = super::unix_ms(exchange.installed);
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
    }
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
        let exchange = Exchange::new();
        let seen = Mutex::new(Vec::new());
        let before = Instant::now();
        let profile = take(&exchange, "p", |deadline| {
            seen.lock().push(deadline);
            // The second flush is the cycle that answers the request.
            if let Some(id) = exchange.wanted() {
                exchange.answer(
                    id,
                    Dump {
                        digits: 3,
                        highest: 1 << 40,
                        interval: Duration::from_millis(10),
                        ring_capacity: 64,
                        sampling_rate: 1.0,
                        backwards_spans: 0,
                        stages: Vec::new(),
                    },
                );
            }
            true
        })
        .unwrap();
        let after = Instant::now();
        assert!(profile.stages.is_empty());
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1], "one deadline for both flushes");
        assert!(seen[0] >= before + TIMEOUT && seen[0] <= after + TIMEOUT);
    }
}
