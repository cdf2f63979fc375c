//! The engine on its own: an aggregator driven by hand on the test's thread, with fake rings,
//! a fixed calibration (one tick is one nanosecond), `cycle_at(now)` instead of a clock, and a
//! sink that keeps everything it is handed.

use std::sync::{Arc as StdArc, Mutex as StdMutex};

use super::*;
use crate::ring::{Producer, ring};
use crate::sink::{Cycle, Interest, RecordBatch, Sink, ValueBatch};
use crate::stats::Window;
use crate::{Metric, SlaRule};

const MS: u64 = 1_000_000;

/// What a sink saw, in order.
#[derive(Default)]
struct Seen {
    /// (ring id, records in the batch, last batch of the ring)
    record_batches: Vec<(u64, usize, bool)>,
    values: Vec<Recorded>,
    /// (cycle's stage count, count of each stage's cumulative histogram)
    cycles: Vec<Vec<(u32, u64)>>,
    stopped: bool,
}

struct RecordingSink {
    seen: StdArc<StdMutex<Seen>>,
    /// Done after this many cycles, if set.
    one_shot: Option<usize>,
}

impl Sink for RecordingSink {
    fn interest(&self) -> Interest {
        Interest::RECORDS.and(Interest::VALUES)
    }

    fn records(&mut self, batch: &RecordBatch<'_>) {
        let entry = (batch.ring_id(), batch.records().len(), batch.is_last());
        self.seen.lock().unwrap().record_batches.push(entry);
    }

    fn values(&mut self, batch: &ValueBatch<'_>) {
        let mut seen = self.seen.lock().unwrap();
        seen.values.extend_from_slice(batch.values());
    }

    fn cycle(&mut self, cycle: &Cycle<'_>) {
        let stages = cycle
            .stages()
            .map(|s| (s.stage().id(), s.cumulative().count()))
            .collect();
        self.seen.lock().unwrap().cycles.push(stages);
    }

    fn is_done(&self) -> bool {
        self.one_shot
            .is_some_and(|n| self.seen.lock().unwrap().cycles.len() >= n)
    }

    fn stop(&mut self) {
        self.seen.lock().unwrap().stopped = true;
    }
}

struct PanickingSink;

impl Sink for PanickingSink {
    fn cycle(&mut self, _: &Cycle<'_>) {
        panic!("a sink's bug");
    }
}

fn settings(rules: Vec<SlaRule>) -> Settings {
    let (settings, _) = crate::Collector::builder().into_parts();
    Settings { rules, ..settings }
}

/// The violations an SLA callback received, in order.
type Announced = StdArc<StdMutex<Vec<Violation>>>;

fn announcing(settings: &mut Settings) -> Announced {
    let announced = Announced::default();
    let sink = announced.clone();
    settings.callback = Some(Box::new(move |v: &[Violation]| {
        sink.lock().unwrap().extend_from_slice(v)
    }));
    announced
}

/// An aggregator on the test's thread, and a way to give it rings.
struct Engine {
    aggregator: Aggregator,
    next_ring: u64,
}

impl Engine {
    fn new(rules: Vec<SlaRule>, sinks: Vec<Box<dyn Sink>>) -> Self {
        Self::with_settings(settings(rules), sinks)
    }

    fn with_settings(settings: Settings, sinks: Vec<Box<dyn Sink>>) -> Self {
        let shared = Arc::new(CollectorShared::detached(settings.kept_windows()));
        let baseline = Baseline::with_epoch(Calibration::fixed());
        Self {
            aggregator: Aggregator::new(shared, settings, sinks, baseline),
            next_ring: 1 << 30,
        }
    }

    /// A new thread's ring, handed to the aggregator as registration does.
    fn ring(&mut self) -> Producer<Record> {
        let (producer, consumer) = ring::<Record>(64);
        let shared = std::sync::Arc::new(ThreadShared::new(crate::limits::DEFAULT_MAX_STAGES));
        self.next_ring += 1;
        let ring = ThreadRing::new(
            consumer,
            shared,
            crate::limits::DEFAULT_MAX_STAGES,
            self.next_ring,
            false,
        );
        assert!(self.aggregator.shared.pending.register(ring).is_ok());
        producer
    }

    fn cycle(&mut self, now_ns: u64) -> std::sync::Arc<Snapshot> {
        self.aggregator.cycle_at(now_ns);
        self.aggregator.shared.snapshot.load_full()
    }
}

fn span(stage: Stage, span: u64, start: u64, end: u64) -> Record {
    Record::span(stage.id(), span, start, end)
}

fn start(stage: Stage, span: u64, at: u64) -> Record {
    Record {
        stage: stage.id(),
        kind: Kind::Start,
        span,
        a: at,
        b: 0,
    }
}

fn push(ring: &mut Producer<Record>, records: &[Record]) {
    for r in records {
        assert!(ring.push(*r).is_ok(), "the test's ring has room");
    }
}

fn cumulative(snapshot: &Snapshot, stage: Stage) -> crate::StageStats {
    snapshot
        .stats(stage, Window::Cumulative)
        .cloned()
        .expect("the stage has activity")
}

#[test]
fn pairs_a_start_with_its_end_and_an_end_that_came_first() {
    let stage = Stage::new("engine_pairing").unwrap();
    stage.set_deadline(Some(Duration::from_secs(1))).unwrap();
    let mut engine = Engine::new(Vec::new(), Vec::new());
    let mut a = engine.ring();
    push(&mut a, &[start(stage, 7, MS)]);
    let snapshot = engine.cycle(2 * MS);
    assert_eq!(cumulative(&snapshot, stage).in_flight, 1);
    assert_eq!(snapshot.health.in_flight, 1);

    // The end closes the span: recorded once, in flight no more.
    push(&mut a, &[span(stage, 7, MS, 4 * MS)]);
    let s = cumulative(&engine.cycle(5 * MS), stage);
    assert_eq!(
        (s.count, s.in_flight, s.max),
        (1, 0, Duration::from_millis(3))
    );

    // Span 8 ends on one ring before its start is drained from another: the late start is
    // discarded, not left in flight.
    let mut b = engine.ring();
    push(&mut a, &[span(stage, 8, 6 * MS, 7 * MS)]);
    push(&mut b, &[start(stage, 8, 6 * MS)]);
    let snapshot = engine.cycle(8 * MS);
    let s = cumulative(&snapshot, stage);
    assert_eq!((s.count, s.in_flight), (2, 0));
    assert_eq!(snapshot.health.in_flight, 0);
    stage.set_deadline(None).unwrap();
}

#[test]
fn a_window_holds_what_its_slices_hold_and_the_cumulative_everything() {
    let stage = Stage::new("engine_windows").unwrap();
    let mut engine = Engine::new(Vec::new(), Vec::new());
    let mut ring = engine.ring();
    push(&mut ring, &[span(stage, 0, 0, 2 * MS)]); // ends at 2 ms
    push(&mut ring, &[span(stage, 0, 1200 * MS, 1205 * MS)]); // ends at 1.205 s
    let snapshot = engine.cycle(1300 * MS);
    // The 1 s window (250 ms slices) at 1.3 s covers [0.25 s, 1.3 s): the first span expired.
    let last_second = snapshot.stats(stage, Window::S1).expect("active in 1 s");
    assert_eq!(
        (last_second.count, last_second.min),
        (1, Duration::from_millis(5))
    );
    let all = cumulative(&snapshot, stage);
    assert_eq!((all.count, all.min), (2, Duration::from_millis(2)));
    // 5 s later the sliding windows are empty; the cumulative one is not.
    let snapshot = engine.cycle(7000 * MS);
    assert!(snapshot.stats(stage, Window::S1).is_none());
    assert_eq!(cumulative(&snapshot, stage).count, 2);
}

#[test]
fn an_sla_rule_is_judged_against_the_published_window() {
    let stage = Stage::new("engine_sla").unwrap();
    let rule = SlaRule::new("engine_sla", Window::Cumulative, Metric::P95)
        .with_warning(Duration::from_millis(1))
        .with_critical(Duration::from_millis(10));
    let mut engine = Engine::new(vec![rule], Vec::new());
    let mut ring = engine.ring();
    push(&mut ring, &[span(stage, 0, 0, MS / 2)]);
    assert!(engine.cycle(MS).violations().is_empty(), "0.5 ms is within");
    for i in 0..20 {
        push(&mut ring, &[span(stage, 0, i * MS, i * MS + 3 * MS)]);
    }
    let snapshot = engine.cycle(30 * MS);
    let [violation] = snapshot.violations() else {
        panic!("one violation: {:?}", snapshot.violations());
    };
    assert_eq!(violation.stage, "engine_sla");
    assert_eq!(violation.severity, crate::Severity::Warning);
}

#[test]
fn a_stuck_span_misses_its_deadline_once_while_in_flight() {
    let stage = Stage::new("engine_deadline").unwrap();
    stage.set_deadline(Some(Duration::from_millis(5))).unwrap();
    let mut engine = Engine::new(Vec::new(), Vec::new());
    let mut ring = engine.ring();
    push(&mut ring, &[start(stage, 11, 0)]);
    assert_eq!(cumulative(&engine.cycle(4 * MS), stage).deadline_misses, 0);
    let s = cumulative(&engine.cycle(6 * MS), stage);
    assert_eq!((s.deadline_misses, s.in_flight, s.count), (1, 1, 0));
    // Its end, 12 ms after its start, is recorded but not counted as a miss again.
    push(&mut ring, &[span(stage, 11, 0, 12 * MS)]);
    let s = cumulative(&engine.cycle(13 * MS), stage);
    assert_eq!((s.deadline_misses, s.in_flight, s.count), (1, 0, 1));
    stage.set_deadline(None).unwrap();
}

#[test]
fn sinks_get_each_visit_in_one_batch_and_every_cycle() {
    let stage = Stage::new("engine_sink").unwrap();
    let seen = StdArc::new(StdMutex::new(Seen::default()));
    let sink = RecordingSink {
        seen: seen.clone(),
        one_shot: None,
    };
    let mut engine = Engine::new(Vec::new(), vec![Box::new(sink)]);
    let mut ring = engine.ring();
    let ring_id = engine.next_ring;
    push(
        &mut ring,
        &[
            span(stage, 0, 0, 10),
            span(stage, 0, 20, 50),
            start(stage, 5, 60),
        ],
    );
    engine.cycle(MS);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.record_batches,
            [(ring_id, 3, false)],
            "one call per visit"
        );
        let durations: Vec<u64> = seen.values.iter().map(|v| v.duration_ns).collect();
        assert_eq!(durations, [10, 30], "the recorded values, not the start");
        assert_eq!(seen.values[1].at_ns, 50);
        let cycle = seen.cycles.last().expect("a cycle");
        assert!(cycle.contains(&(stage.id(), 2)), "{cycle:?}");
    }
    // The thread exits: its last batch says so.
    drop(ring);
    engine.cycle(2 * MS);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.record_batches.last(),
        Some(&(ring_id, 0, true)),
        "an exited thread's last visit is handed over even when empty, so sinks can let go"
    );
    assert_eq!(seen.cycles.len(), 2);
}

#[test]
fn a_panicking_sink_is_counted_and_the_others_still_served() {
    let stage = Stage::new("engine_sink_panic").unwrap();
    let seen = StdArc::new(StdMutex::new(Seen::default()));
    let sink = RecordingSink {
        seen: seen.clone(),
        one_shot: Some(1),
    };
    let mut engine = Engine::new(Vec::new(), vec![Box::new(PanickingSink), Box::new(sink)]);
    let mut ring = engine.ring();
    push(&mut ring, &[span(stage, 0, 0, 10)]);
    engine.cycle(MS);
    engine.cycle(2 * MS);
    // A cycle's sink panics show in the next snapshot: the sinks run on the one being published.
    let snapshot = engine.cycle(3 * MS);
    assert_eq!(
        snapshot.health.sink_panics, 2,
        "one per cycle, the sink kept"
    );
    assert_eq!(cumulative(&snapshot, stage).count, 1);
    // The one-shot sink saw its one cycle and was let go: no second cycle, no stop.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.cycles.len(), 1);
    assert!(!seen.stopped);
}

#[test]
fn a_violation_that_ends_is_announced_as_cleared() {
    let stage = Stage::new("engine_sla_clear").unwrap();
    let rule = SlaRule::new("engine_sla_clear", Window::S1, Metric::P95)
        .with_warning(Duration::from_millis(1));
    let mut settings = settings(vec![rule]);
    let announced = announcing(&mut settings);
    let mut engine = Engine::with_settings(settings, Vec::new());
    let mut ring = engine.ring();
    for i in 0..20 {
        push(&mut ring, &[span(stage, 0, i * MS, i * MS + 3 * MS)]);
    }
    assert_eq!(engine.cycle(100 * MS).violations().len(), 1);
    // Two seconds on, the 1 s window is empty: the violation ends, and the callback hears it.
    assert!(engine.cycle(2000 * MS).violations().is_empty());
    let announced = announced.lock().unwrap();
    let events: Vec<(Severity, bool)> = announced.iter().map(|v| (v.severity, v.cleared)).collect();
    assert_eq!(
        events,
        [(Severity::Warning, false), (Severity::Warning, true)]
    );
    assert_eq!(announced[1].observed, crate::Value::Latency(Duration::ZERO));
    assert_eq!(
        announced[1].to_string(),
        "warning cleared: engine_sla_clear p95 over 1s: 0.00ns, below 90% of 1.00ms"
    );
}

#[test]
fn a_latency_guard_trip_is_counted_in_the_snapshot_that_trips_it() {
    let stage = Stage::new("engine_guard").unwrap();
    let rule = SlaRule::new("engine_guard", Window::Cumulative, Metric::Max)
        .with_critical(Duration::from_millis(1));
    let mut settings = settings(vec![rule]);
    settings.latency_guard_reason = "engine_guard_latency";
    let mut engine = Engine::with_settings(settings, Vec::new());
    let mut ring = engine.ring();
    push(&mut ring, &[span(stage, 0, 0, 3 * MS)]);
    let snapshot = engine.cycle(4 * MS);
    assert!(stage.latency_breaker().is_tripped());
    assert_eq!(
        snapshot.trip_counts(Window::Cumulative),
        [("engine_guard_latency", 1)],
        "the guard and its trip are published together"
    );
}

#[test]
fn a_snapshot_is_taken_on_the_windows_clock() {
    let mut engine = Engine::new(Vec::new(), Vec::new());
    // Nanoseconds since the epoch the records are placed by: not since the thread started.
    assert_eq!(
        engine.cycle(1234 * MS).taken_at,
        Duration::from_millis(1234)
    );
}

#[test]
fn busy_series_are_refreshed_within_a_budget_in_turn_and_all_on_flush() {
    let family = crate::Family::new("engine_refresh_budget", &["k"]).unwrap();
    let plain = Stage::new("engine_refresh_plain").unwrap();
    let series: Vec<Stage> = (0..5u8).map(|k| family.series(&[k]).unwrap()).collect();
    // A zero interval: the budget is spent before any series, so each cycle refreshes one.
    let settings = Settings {
        interval: Duration::ZERO,
        ..settings(Vec::new())
    };
    let mut engine = Engine::with_settings(settings, Vec::new());
    let mut ring = engine.ring();
    engine.cycle(MS);
    let count = |snapshot: &Snapshot, stage| {
        snapshot
            .stats(stage, Window::Cumulative)
            .map_or(0, |s| s.count)
    };
    let records: Vec<Record> = std::iter::once(plain)
        .chain(series.iter().copied())
        .enumerate()
        .map(|(i, s)| span(s, 100 + i as u64, MS, 2 * MS))
        .collect();
    push(&mut ring, &records);
    engine.aggregator.publish_complete = false;
    let mut refreshed_at = vec![None; series.len()];
    for cycle in 0..series.len() {
        let snapshot = engine.cycle(3 * MS + cycle as u64);
        // A stage without labels and the family total are always current.
        assert_eq!(count(&snapshot, plain), 1);
        assert_eq!(count(&snapshot, family.total()), series.len() as u64);
        let current = series.iter().filter(|s| count(&snapshot, **s) == 1).count();
        assert_eq!(current, cycle + 1, "one series more each cycle");
        for (i, s) in series.iter().enumerate() {
            if count(&snapshot, *s) == 1 && refreshed_at[i].is_none() {
                refreshed_at[i] = Some(cycle);
            }
        }
    }
    // Each cycle refreshed a new series: none was skipped for another twice.
    let mut order: Vec<usize> = refreshed_at.iter().map(|c| c.unwrap()).collect();
    order.sort_unstable();
    assert_eq!(order, (0..series.len()).collect::<Vec<_>>());

    // A flush's cycle refreshes every one at once.
    push(
        &mut ring,
        &series
            .iter()
            .map(|s| span(*s, 7, 10 * MS, 11 * MS))
            .collect::<Vec<_>>(),
    );
    engine.aggregator.publish_complete = true;
    let snapshot = engine.cycle(12 * MS);
    for s in &series {
        assert_eq!(count(&snapshot, *s), 2);
    }
}
