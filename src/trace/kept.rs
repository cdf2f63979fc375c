//! The values of kept ticks, handed to another sink on the aggregator thread that links its
//! figures to traces: the Prometheus export shows them as exemplars on its buckets, so a slow
//! bucket names a trace the user has. Nothing is kept until a reader subscribes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;

use super::Trace;

/// Most values waiting for the reader, which takes them every aggregator cycle: the oldest fall
/// out first (a reader keeps the latest per bucket anyway).
pub(crate) const MAX_WAITING: usize = 4096;

/// One value of a kept tick: the root's or a span's duration, its stage and the tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeptValue {
    /// The stage's id.
    pub(crate) stage: u32,
    /// The tick's number: its trace is `tick_<n>` (`golden_trace_<n>.json`).
    pub(crate) tick: u64,
    /// The duration, in nanoseconds, as the trace holds it.
    pub(crate) duration_ns: u64,
    /// When the aggregator kept the tick: within one of its cycles after the tick ended.
    pub(crate) at: SystemTime,
}

/// The values of the kept ticks a reader has not taken yet.
#[derive(Debug, Default)]
pub(crate) struct KeptValues {
    subscribed: AtomicBool,
    waiting: Mutex<VecDeque<KeptValue>>,
}

// `subscribe` and `take` are the reader's: the Prometheus export's exemplars.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
impl KeptValues {
    /// From now on, kept ticks' values wait here for [`take`](Self::take).
    pub(crate) fn subscribe(&self) {
        // Relaxed: a sink subscribes in `install`, before the aggregator thread that offers is
        // spawned (which orders it); a later subscription is seen a little later, harmlessly.
        self.subscribed.store(true, Ordering::Relaxed);
    }

    /// The root's duration (stage `root`) and every span's of `trace`, if a reader subscribed.
    pub(crate) fn offer(&self, trace: &Trace, root: u32) {
        if !self.subscribed.load(Ordering::Relaxed) {
            return;
        }
        let at = SystemTime::now();
        let spans = trace.spans.iter().map(|s| (s.stage_id, s.duration_ns));
        let mut waiting = self.waiting.lock();
        for (stage, duration_ns) in std::iter::once((root, trace.duration_ns)).chain(spans) {
            if waiting.len() >= MAX_WAITING {
                waiting.pop_front();
            }
            waiting.push_back(KeptValue {
                stage,
                tick: trace.tick,
                duration_ns,
                at,
            });
        }
    }

    /// Moves every waiting value into `into`, oldest first.
    pub(crate) fn take(&self, into: &mut Vec<KeptValue>) {
        into.extend(self.waiting.lock().drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Reason, TraceSpan};

    fn trace(tick: u64, spans: usize) -> Trace {
        let span = |i: usize| TraceSpan {
            name: "unit_kept_span",
            labels: &[],
            start_ns: 0,
            duration_ns: i as u64,
            depth: 1,
            parent: None,
            stage_id: 7,
        };
        Trace {
            tick,
            reason: Reason::Sampled,
            root: "unit_kept_root",
            thread: "t".into(),
            start_ns: 0,
            duration_ns: 1_000 + tick,
            spans: (0..spans).map(span).collect(),
            complete: true,
        }
    }

    #[test]
    fn nothing_waits_until_a_reader_subscribes_and_then_at_most_the_latest() {
        let kept = KeptValues::default();
        let mut taken = Vec::new();
        kept.offer(&trace(1, 2), 3);
        kept.take(&mut taken);
        assert!(taken.is_empty(), "no reader, nothing kept");

        kept.subscribe();
        kept.offer(&trace(2, 2), 3);
        kept.take(&mut taken);
        let got: Vec<_> = taken
            .iter()
            .map(|v| (v.stage, v.tick, v.duration_ns))
            .collect();
        assert_eq!(
            got,
            [(3, 2, 1_002), (7, 2, 0), (7, 2, 1)],
            "the root, then each span"
        );

        taken.clear();
        for tick in 0..3 {
            kept.offer(&trace(tick, MAX_WAITING / 2), 3);
        }
        kept.take(&mut taken);
        assert_eq!(taken.len(), MAX_WAITING, "bounded");
        assert_eq!(taken.last().map(|v| v.tick), Some(2), "the latest stay");
    }
}
