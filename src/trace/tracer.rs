//! The aggregator's side of tracing: per-ring span buffers, the keep decision, trace building, and
//! the store the handle reads.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::writer::Writer;
use super::{KeptValues, Reason, Trace, TraceConfig, TraceHealth, TraceSpan};
use crate::InstallErrorKind;
use crate::clock::Calibration;
use crate::record::{Kind, Record};
use crate::stage::{Stage, registry};

/// A span record waiting for its thread's next root span.
#[derive(Debug, Clone, Copy)]
struct Pending {
    stage: u32,
    start: u64,
    end: u64,
}

impl Pending {
    fn is_instant(&self) -> bool {
        self.start == self.end
    }
}

/// One ring's tracing state, kept beside its consumer in the aggregator.
#[derive(Debug)]
pub(crate) struct RingTrace {
    ring_id: u64,
    thread: Option<Box<str>>,
    /// Span records since this ring's last root, oldest first; allocated (at the tracer's
    /// `max_spans`) on the first span, never grown past it.
    pending: VecDeque<Pending>,
    /// The latest end tick among records that fell out of `pending` since the last root: a tick
    /// starting after it lost nothing.
    overflow_end: Option<u64>,
}

impl RingTrace {
    /// The ring's state on its first record; `thread` (the writing thread's name) labels its
    /// traces.
    pub(crate) fn new(ring_id: u64, thread: Option<&str>) -> Self {
        Self {
            ring_id,
            thread: thread.map(Box::from),
            pending: VecDeque::new(),
            overflow_end: None,
        }
    }

    fn thread_label(&self) -> String {
        match &self.thread {
            Some(name) => name.to_string(),
            None => format!("ring-{}", self.ring_id),
        }
    }

    fn buffer(&mut self, r: &Record, cap: usize) {
        if self.pending.capacity() < cap {
            self.pending.reserve_exact(cap - self.pending.len());
        }
        if self.pending.len() >= cap
            && let Some(old) = self.pending.pop_front()
        {
            self.overflow_end = Some(self.overflow_end.map_or(old.end, |e| e.max(old.end)));
        }
        self.pending.push_back(Pending {
            stage: r.stage,
            start: r.a,
            end: r.b,
        });
        debug_assert!(self.pending.len() <= cap);
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.overflow_end = None;
    }
}

/// The latest kept traces, shared by the aggregator (which adds) and the handle (which reads).
#[derive(Debug)]
pub(crate) struct Store {
    keep: usize,
    traces: Mutex<VecDeque<Arc<Trace>>>,
    /// As of the aggregator's last cycle.
    pub(crate) health: Mutex<TraceHealth>,
    /// The values of the traces a user can open, for the sink that links to them.
    pub(crate) kept: KeptValues,
}

impl Store {
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            keep,
            traces: Mutex::new(VecDeque::new()),
            health: Mutex::new(TraceHealth::default()),
            kept: KeptValues::default(),
        }
    }

    fn push(&self, trace: Arc<Trace>) {
        if self.keep == 0 {
            return;
        }
        let mut traces = self.traces.lock();
        if traces.len() >= self.keep {
            traces.pop_front();
        }
        traces.push_back(trace);
    }

    /// The kept traces, oldest first. Only `Arc`s are cloned under the lock, so a reader holds
    /// the aggregator up for microseconds at most.
    pub(crate) fn traces(&self) -> Vec<Trace> {
        let shared: Vec<Arc<Trace>> = self.traces.lock().iter().cloned().collect();
        shared.iter().map(|t| Trace::clone(t)).collect()
    }
}

/// splitmix64 (Steele, Lea and Flood; Vigna's reference `splitmix64.c`): one 64-bit draw per
/// tick, reproducible from the seed alone.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Decides which ticks are kept, builds their traces, stores and writes them. Lives on the
/// aggregator thread; exists only when tracing is configured and enabled.
pub(crate) struct Tracer {
    root: Stage,
    /// A tick is sampled when its draw is below this (`u64::MAX`: every tick).
    threshold: u64,
    golden_interval: Option<u64>,
    deadline_ns: Option<u64>,
    max_spans: usize,
    metadata: BTreeMap<String, serde_json::Value>,
    output_dir: Option<PathBuf>,
    rng: SplitMix64,
    tick: u64,
    store: Arc<Store>,
    writer: Option<Writer>,
    kept: u64,
    incomplete: u64,
}

impl Tracer {
    /// Called by `install` once the configuration is valid and the root stage registered:
    /// creates the output directory and starts the writer thread, so either failure is the
    /// install's typed error, not a silent loss later.
    pub(crate) fn start(
        config: &TraceConfig,
        store: Arc<Store>,
        generation: u64,
    ) -> Result<Self, InstallErrorKind> {
        let root = Stage::new(config.root()).map_err(|e| InstallErrorKind::Config(e.into()))?;
        let threshold = crate::record::rate_to_threshold(config.sample_rate())
            .map_err(InstallErrorKind::Config)?;
        let writer = match config.output_dir() {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|error| {
                    let e = super::TraceError::OutputDir {
                        dir: dir.to_path_buf(),
                        error,
                    };
                    InstallErrorKind::Sink(crate::SinkError::new("trace", e))
                })?;
                Some(Writer::spawn(generation).map_err(InstallErrorKind::Spawn)?)
            }
            None => None,
        };
        Ok(Self {
            root,
            threshold,
            golden_interval: config.golden().then_some(config.golden_interval()),
            deadline_ns: config
                .deadline()
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            max_spans: config.max_spans(),
            metadata: config.metadata().clone(),
            output_dir: config.output_dir().map(PathBuf::from),
            rng: SplitMix64::new(config.seed()),
            tick: 0,
            store,
            writer,
            kept: 0,
            incomplete: 0,
        })
    }

    /// Takes one drained record of `ring`.
    pub(crate) fn observe(&mut self, ring: &mut RingTrace, r: &Record, cal: &Calibration) {
        self.observe_with(ring, r, |tick| cal.since_epoch_ns(tick));
    }

    /// [`observe`](Self::observe) with `ns` converting a tick reading to nanoseconds since the
    /// epoch (any monotone conversion: tests use non-unit rates a fresh `Calibration` cannot
    /// have).
    fn observe_with(&mut self, ring: &mut RingTrace, r: &Record, ns: impl Fn(u64) -> u64) {
        if !matches!(r.kind, Kind::Span | Kind::Unwound) {
            return;
        }
        if r.stage != self.root.id() {
            ring.buffer(r, self.max_spans);
            return;
        }
        self.tick += 1;
        // Drawn for every tick, kept or not, so tick n's draw depends on the seed alone.
        let draw = self.rng.next_u64();
        // The same subtraction of converted readings as the spans' (see `build`), so a span
        // ending at the root's end ends at exactly `duration`.
        let duration = ns(r.b).saturating_sub(ns(r.a));
        let deadline = self.deadline_ns.or_else(|| {
            self.root
                .deadline()
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        });
        let reason = if deadline.is_some_and(|d| duration > d) {
            Some(Reason::Slow)
        } else if self
            .golden_interval
            .is_some_and(|n| self.tick.is_multiple_of(n))
        {
            Some(Reason::Golden)
        } else if self.threshold == u64::MAX || draw < self.threshold {
            Some(Reason::Sampled)
        } else {
            None
        };
        if let Some(reason) = reason {
            let trace = self.build(ring, r, &ns, reason, duration);
            self.keep(trace);
        }
        ring.reset();
    }

    /// Nests the buffered spans inside `[root start, root end]` (see the module docs for the
    /// rule). `ns` converts each tick reading once; offsets and durations are differences of
    /// converted readings, never conversions of differences: conversion truncates, so converting
    /// a start offset and a duration separately could end a child 1 ns after its parent, while
    /// differences of one monotone conversion keep every containment.
    fn build(
        &self,
        ring: &RingTrace,
        root: &Record,
        ns: impl Fn(u64) -> u64,
        reason: Reason,
        duration_ns: u64,
    ) -> Trace {
        let (from, to) = (root.a, root.b);
        // With its place in arrival order, which settles ties (see below).
        let mut inside: Vec<(usize, Pending)> = ring
            .pending
            .iter()
            .copied()
            .filter(|p| p.start >= from && p.end <= to && p.start <= p.end)
            .enumerate()
            .collect();
        // Parents before children: by start; at equal starts zero-length spans first (they touch
        // the longer ones and contain nothing), in arrival order; then the longer first; for
        // identical intervals the later arrival first, as a parent's record follows its
        // children's.
        inside.sort_by(|(i, x), (j, y)| {
            x.start
                .cmp(&y.start)
                .then(y.is_instant().cmp(&x.is_instant()))
                .then(y.end.cmp(&x.end))
                .then(if x.is_instant() { i.cmp(j) } else { j.cmp(i) })
        });
        let from_ns = ns(from);
        let mut spans = Vec::with_capacity(inside.len());
        // The chain of spans that may still contain the next one: (index in `spans`, start and
        // end tick), each inside the one below it, none zero-length.
        let mut open: Vec<(usize, u64, u64)> = Vec::new();
        for (_, p) in inside {
            let Some(stage) = registry().get(p.stage) else {
                continue;
            };
            // Every open span started at or before `p` (sorted by start) and is longer than
            // zero. It contains a longer-than-zero `p` iff it ends at or after `p` does, and a
            // zero-length `p` only strictly inside: an instant at its start or end merely
            // touches it (two splits with no clock movement between them are siblings).
            while open.last().is_some_and(|&(_, start, end)| {
                if p.is_instant() {
                    !(start < p.start && p.start < end)
                } else {
                    end < p.end
                }
            }) {
                open.pop();
            }
            let start_ns = ns(p.start);
            spans.push(TraceSpan {
                name: stage.name(),
                labels: stage.labels(),
                start_ns: start_ns.saturating_sub(from_ns),
                duration_ns: ns(p.end).saturating_sub(start_ns),
                depth: u32::try_from(open.len() + 1).unwrap_or(u32::MAX),
                parent: open.last().map(|&(i, _, _)| i),
                stage_id: p.stage,
            });
            if !p.is_instant() {
                open.push((spans.len() - 1, p.start, p.end));
            }
        }
        Trace {
            tick: self.tick,
            reason,
            root: self.root.name(),
            thread: ring.thread_label(),
            start_ns: from_ns,
            duration_ns,
            spans,
            complete: ring.overflow_end.is_none_or(|end| end < from),
        }
    }

    fn keep(&mut self, trace: Trace) {
        self.kept += 1;
        self.incomplete += u64::from(!trace.complete);
        let written = matches!(trace.reason, Reason::Slow | Reason::Golden);
        if written && let (Some(writer), Some(dir)) = (&mut self.writer, &self.output_dir) {
            let path = dir.join(format!("golden_trace_{}.json", trace.tick));
            // Serialised only once the writer has room: a full queue skips the work too.
            writer.submit(path, || super::golden_json(&trace, &self.metadata));
        }
        // Linked only to traces the user can open: with an output directory the files written
        // (slow and golden), without one those `traces()` returns.
        let openable = match self.writer {
            Some(_) => written,
            None => self.store.keep > 0,
        };
        if openable {
            self.store.kept.offer(&trace, self.root.id());
        }
        self.store.push(Arc::new(trace));
    }

    /// Publishes the tracing figures for [`crate::CollectorHandle::trace_health`].
    pub(crate) fn report(&self) {
        let mut health = TraceHealth {
            kept: self.kept,
            incomplete: self.incomplete,
            ..TraceHealth::default()
        };
        if let Some(writer) = &self.writer {
            (
                health.files_written,
                health.write_errors,
                health.writes_skipped,
            ) = writer.counts();
        }
        *self.store.health.lock() = health;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The first outputs of Vigna's splitmix64.c seeded with 1234567 (also the test vector of
        // java.util.SplittableRandom's mixer).
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    fn record(stage: Stage, a: u64, b: u64) -> Record {
        Record {
            stage: stage.id(),
            kind: Kind::Span,
            span: 0,
            a,
            b,
        }
    }

    fn tracer(config: &TraceConfig) -> Tracer {
        Tracer::start(config, Arc::new(Store::new(16)), 0).expect("no output dir: cannot fail")
    }

    fn stage(name: &'static str) -> Stage {
        Stage::new(name).expect("valid test stage name")
    }

    /// One nanosecond per tick from tick 0, as under the mock clock. (A real `Calibration`'s
    /// epoch is the current tick reading, after these synthetic ticks.)
    fn unit(tick: u64) -> u64 {
        tick
    }

    #[test]
    fn nests_by_containment_in_arrival_order_of_a_lap() {
        let root = stage("unit_trace_root");
        let (a, b, c, inner, deeper, other) = (
            stage("unit_trace_a"),
            stage("unit_trace_b"),
            stage("unit_trace_c"),
            stage("unit_trace_inner"),
            stage("unit_trace_deeper"),
            stage("unit_trace_before"),
        );
        let mut t = tracer(&TraceConfig::new("unit_trace_root").with_sample_rate(1.0));
        let mut ring = RingTrace::new(7, None);
        // As a lap writes them: spans nested in a split end (and arrive) before the splits,
        // which arrive together just before the total.
        for r in [
            record(other, 900, 990), // before the tick: left out
            record(deeper, 1_250, 1_260),
            record(inner, 1_200, 1_300),
            record(a, 1_000, 1_100),
            record(b, 1_100, 1_150),
            record(c, 1_150, 1_400),
            record(root, 1_000, 1_400),
        ] {
            t.observe_with(&mut ring, &r, unit);
        }
        let traces = t.store.traces();
        assert_eq!(traces.len(), 1);
        let trace = &traces[0];
        let got: Vec<_> = trace
            .spans
            .iter()
            .map(|s| (s.name, s.start_ns, s.duration_ns, s.depth, s.parent))
            .collect();
        assert_eq!(
            got,
            [
                ("unit_trace_a", 0, 100, 1, None),
                ("unit_trace_b", 100, 50, 1, None),
                ("unit_trace_c", 150, 250, 1, None),
                ("unit_trace_inner", 200, 100, 2, Some(2)),
                ("unit_trace_deeper", 250, 10, 3, Some(3)),
            ]
        );
        assert_eq!(
            (trace.tick, trace.start_ns, trace.duration_ns),
            (1, 1_000, 400)
        );
        assert_eq!(trace.thread, "ring-7", "a ring with no thread name");
        assert!(trace.complete);
        assert!(
            ring.pending.is_empty(),
            "a root forgets its thread's buffer"
        );
    }

    #[test]
    fn overflow_drops_the_oldest_spans_and_marks_the_trace_incomplete() {
        let root = stage("unit_trace_root2");
        let s = stage("unit_trace_s");
        let config = TraceConfig::new("unit_trace_root2")
            .with_sample_rate(1.0)
            .with_max_spans(3);
        let mut t = tracer(&config);
        let mut ring = RingTrace::new(1, None);
        // Tick 1: five spans inside, three fit.
        for i in 0..5 {
            t.observe_with(&mut ring, &record(s, 100 + i * 10, 105 + i * 10), unit);
        }
        t.observe_with(&mut ring, &record(root, 100, 200), unit);
        // Tick 2: the overflow happened before it started: complete.
        for i in 0..5 {
            t.observe_with(&mut ring, &record(s, 210 + i, 211 + i), unit);
        }
        t.observe_with(&mut ring, &record(root, 214, 300), unit);
        let traces = t.store.traces();
        let starts: Vec<Vec<u64>> = traces
            .iter()
            .map(|t| t.spans.iter().map(|s| s.start_ns).collect())
            .collect();
        assert_eq!(starts, [vec![20, 30, 40], vec![0]]);
        assert_eq!(
            traces.iter().map(|t| t.complete).collect::<Vec<_>>(),
            [false, true]
        );
        t.report();
        let health = *t.store.health.lock();
        assert_eq!((health.kept, health.incomplete), (2, 1));
    }

    /// A span as (name, start, duration, depth, parent).
    type Row = (&'static str, u64, u64, u32, Option<usize>);

    /// The trace of one root `[from, to]` over `spans` fed in arrival order on a fresh ring, and
    /// its rows, with `ns` converting ticks.
    fn nest(
        root: &'static str,
        spans: &[(Stage, u64, u64)],
        (from, to): (u64, u64),
        ns: impl Fn(u64) -> u64,
    ) -> (Trace, Vec<Row>) {
        let mut t = tracer(&TraceConfig::new(root).with_sample_rate(1.0));
        let mut ring = RingTrace::new(1, None);
        for &(s, a, b) in spans {
            t.observe_with(&mut ring, &record(s, a, b), &ns);
        }
        t.observe_with(&mut ring, &record(stage(root), from, to), &ns);
        let trace = t.store.traces().pop().expect("kept at sample rate 1");
        let rows = trace
            .spans
            .iter()
            .map(|s| (s.name, s.start_ns, s.duration_ns, s.depth, s.parent))
            .collect();
        (trace, rows)
    }

    #[test]
    fn instants_touching_a_span_are_its_siblings_and_identical_intervals_nest_by_arrival() {
        let [first, a, mid, b, instant, same, c, last] = [
            "unit_zero_first",
            "unit_zero_a",
            "unit_zero_mid",
            "unit_zero_b",
            "unit_zero_instant",
            "unit_zero_same",
            "unit_zero_c",
            "unit_zero_last",
        ]
        .map(stage);
        // A lap with no clock movement at some boundaries, as under the mock clock: the guards'
        // records arrive when they end, the splits' together at the lap's end.
        let (_, rows) = nest(
            "unit_zero_root",
            &[
                (instant, 15, 15), // a guard with no work, inside split b
                (same, 20, 25),    // a guard spanning exactly split c
                (first, 0, 0),     // a split right at the lap's start
                (a, 0, 10),
                (mid, 10, 10), // a split right after a: touches a's end and b's start
                (b, 10, 20),
                (c, 20, 25),
                (last, 25, 25), // `end_with` right after c
            ],
            (0, 25),
            |t| t,
        );
        assert_eq!(
            rows,
            [
                ("unit_zero_first", 0, 0, 1, None),
                ("unit_zero_a", 0, 10, 1, None),
                ("unit_zero_mid", 10, 0, 1, None),
                ("unit_zero_b", 10, 10, 1, None),
                ("unit_zero_instant", 15, 0, 2, Some(3)),
                ("unit_zero_c", 20, 5, 1, None),
                ("unit_zero_same", 20, 5, 2, Some(5)),
                ("unit_zero_last", 25, 0, 1, None),
            ]
        );
    }

    #[test]
    fn offsets_and_durations_are_differences_of_converted_readings() {
        let (parent, child) = (stage("unit_conv_parent"), stage("unit_conv_child"));
        // 0.7 ns per tick, in integers so the expected values are exact: 1000 -> 700,
        // 1001 -> 700, 1002 -> 701, 1005 -> 703, 1010 -> 707.
        let (trace, rows) = nest(
            "unit_conv_root",
            &[(child, 1_002, 1_005), (parent, 1_001, 1_005)],
            (1_000, 1_010),
            |t| t * 7 / 10,
        );
        // Converting offset and duration separately gives the parent [0, 0 + 2] and the child
        // [1, 1 + 2]: a child ending after its parent.
        assert_eq!(
            rows,
            [
                ("unit_conv_parent", 0, 3, 1, None),
                ("unit_conv_child", 1, 2, 2, Some(0)),
            ]
        );
        assert_eq!((trace.start_ns, trace.duration_ns), (700, 7));
    }

    #[test]
    fn a_ring_without_a_thread_name_is_labelled_by_its_id() {
        std::thread::Builder::new()
            .name("unit-trace-named".into())
            .spawn(|| {
                let name = std::thread::current().name().map(str::to_owned);
                assert_eq!(
                    RingTrace::new(3, name.as_deref()).thread_label(),
                    "unit-trace-named"
                );
                let untraced = RingTrace::new(3, None);
                assert_eq!(untraced.thread, None);
                assert_eq!(untraced.thread_label(), "ring-3");
            })
            .expect("spawn")
            .join()
            .expect("assertions hold");
    }
}
