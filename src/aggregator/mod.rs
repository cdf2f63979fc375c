//! The aggregator: one background thread per collector that drains every ring, pairs deadline
//! starts with their ends, converts ticks to nanoseconds, records into per-stage histograms
//! (sliding windows and cumulative), evaluates SLA rules and publishes an immutable snapshot.
//!
//! It wakes every interval, early when a ring passes half full, and at once on `flush`. A panic in
//! a cycle is caught and counted, and the thread carries on with its state; only the record being
//! processed when it panicked is given up (and it stays counted in `records`). On stop it refuses
//! new rings, drains once more, publishes, clears its latency guards and exits.

mod handover;
pub(crate) mod omission;
pub(crate) mod window;

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::hist::Layout;
pub(crate) use handover::Handover;
use omission::Correction;
use window::{CountWindow, Cumulative, Event, StageWindows};

use crate::AdaptiveSampling;
use crate::clock::Calibration;
use crate::collector::{CollectorShared, SlaCallback, WindowSpec, set_adaptive_ceiling};
use crate::record::{CONTROL, Kind, Record, threshold_to_rate};
use crate::recorder::{ThreadCounts, ThreadShared};
use crate::ring::{Consumer, Visit};
use crate::sink::{Cycle, Interest, RecordBatch, Recorded, Sink, Synthesized, ValueBatch};
use crate::sla::{ReasonInfo, SlaRule};
use crate::stage::{Stage, registry};
use crate::stats::{Health, Severity, Snapshot, StageSnapshot, TripCounts, Violation, Window};
use crate::sync::Arc;

/// A registered thread's ring, as the aggregator holds it.
pub(crate) struct ThreadRing {
    consumer: Consumer<Record>,
    shared: std::sync::Arc<ThreadShared>,
    /// Last values seen of each stage's per-thread counters: (sampled out, dropped).
    seen_counts: Box<[(u64, u64)]>,
    ring_id: u64,
    /// The registering thread's name, copied only when a sink reads records (it labels them).
    thread: Option<Box<str>>,
}

impl ThreadRing {
    /// Runs on the registering thread; `thread_name` when a sink will read the ring's records:
    /// otherwise registration would allocate for a label nothing reads.
    pub(crate) fn new(
        consumer: Consumer<Record>,
        shared: std::sync::Arc<ThreadShared>,
        stages: usize,
        ring_id: u64,
        thread_name: bool,
    ) -> Self {
        Self {
            consumer,
            shared,
            seen_counts: vec![(0, 0); stages].into_boxed_slice(),
            ring_id,
            thread: thread_name
                .then(|| std::thread::current().name().map(Box::from))
                .flatten(),
        }
    }
}

/// The engine's state for one stage; sinks see it through [`crate::sink::StageView`].
pub(crate) struct StageState {
    pub(crate) stage: Stage,
    /// Its histograms' layout: the collector's, or its family's precision.
    pub(crate) layout: Layout,
    windows: StageWindows,
    pub(crate) cumulative: Cumulative,
    /// Coordinated-omission-corrected histograms, from the first span drained while the stage
    /// had an expected interval.
    pub(crate) corrected: Option<Box<Correction>>,
    /// `StageInfo::dropped` as last seen.
    dropped_seen: u64,
    in_flight: u64,
    /// This stage's span outcomes (ends, values, cancels) waiting in rings at the last publish.
    pub(crate) in_rings: u64,
    /// Changed since the last publish.
    dirty: bool,
    /// Its figures are in the stage table (they are refreshed at least once).
    published: bool,
    /// A family's series (or overflow series): refreshed within the cycle's budget.
    is_series: bool,
    /// Heap bytes of its histograms when last refreshed (their part of `Health::histogram_bytes`).
    heap_bytes_seen: usize,
}

impl StageState {
    /// Moves its windows to `now`, expiring what fell out (which changes its figures).
    fn advance(&mut self, now: u64) {
        // An idle stage's windows hold nothing to expire: they move on with its next record.
        if !self.windows.is_idle() {
            self.dirty |= self.windows.advance(now);
        }
        if let Some(c) = &mut self.corrected
            && !c.windows.is_idle()
        {
            self.dirty |= c.windows.advance(now);
        }
    }

    fn needs_refresh(&self) -> bool {
        self.dirty || !self.published
    }

    fn heap_bytes(&self) -> usize {
        let corrected = self.corrected.as_ref().map_or(0, |c| {
            c.cumulative.hist.heap_bytes() + c.windows.heap_bytes()
        });
        self.cumulative.hist.heap_bytes() + self.windows.heap_bytes() + corrected
    }
}

/// A tracked span seen from one side only.
#[derive(Debug, Clone, Copy)]
enum Orphan {
    /// Its end (or cancel) arrived before its start: the start's ring is drained later, or the
    /// start was lost to a full ring.
    EndFirst { at: u64 },
    /// Given up on in flight at `at`; `missed` if its deadline miss was already counted.
    Abandoned { at: u64, missed: bool },
}

impl Orphan {
    fn at(self) -> u64 {
        match self {
            Orphan::EndFirst { at } | Orphan::Abandoned { at, .. } => at,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    stage: u32,
    start_ns: u64,
    /// Already counted as a deadline miss.
    overdue: bool,
}

struct ReasonState {
    info: &'static ReasonInfo,
    seen: u64,
    windows: Vec<CountWindow>,
    total: u64,
}

/// Process-wide counters as they stood when the collector was installed: what came before is not
/// this collector's. Read synchronously by `install`, before any span can reach the new collector.
pub(crate) struct Baseline {
    drops: Vec<u64>,
    trips: Vec<u64>,
    /// The clock's epoch: nanosecond 0 of this collector's timeline.
    epoch: Calibration,
}

impl Baseline {
    pub(crate) fn now() -> Self {
        Self::with_epoch(Calibration::start())
    }

    fn with_epoch(epoch: Calibration) -> Self {
        let drops = (0..registry().len() as u32)
            .map(|id| registry().get(id).map_or(0, Stage::dropped))
            .collect();
        let trips = crate::sla::reasons()
            .map(|(_, r)| r.trips.load(Ordering::Relaxed))
            .collect();
        Self {
            drops,
            trips,
            epoch,
        }
    }
}

/// What the engine runs on: the collector's settings, taken from the user's builder at install.
pub(crate) struct Settings {
    pub(crate) interval: Duration,
    pub(crate) windows: Vec<WindowSpec>,
    pub(crate) digits: u8,
    pub(crate) highest: Duration,
    pub(crate) ring_capacity: usize,
    pub(crate) rules: Vec<SlaRule>,
    pub(crate) release_memory: bool,
    pub(crate) callback: Option<SlaCallback>,
    pub(crate) adaptive: Option<AdaptiveSampling>,
    pub(crate) max_in_flight: usize,
    pub(crate) abandon_after: Duration,
    pub(crate) latency_guard_reason: &'static str,
    /// Run once on the aggregator thread before its first cycle (pinning it, naming it to a
    /// profiler, raising its priority).
    pub(crate) on_start: Option<AggregatorStart>,
}

/// The user's aggregator-start hook ([`crate::CollectorBuilder::with_aggregator_start`]).
pub(crate) type AggregatorStart = Box<dyn FnOnce() + Send>;

impl Settings {
    /// The windows a snapshot holds: the sliding ones in order, then [`Window::Cumulative`].
    pub(crate) fn kept_windows(&self) -> Vec<Window> {
        kept_windows(&self.windows)
    }
}

/// The windows a snapshot of `windows` holds: the sliding ones in order, then
/// [`Window::Cumulative`].
pub(crate) fn kept_windows(windows: &[WindowSpec]) -> Vec<Window> {
    let sliding = windows.iter().map(|w| Window::Last(w.length));
    sliding.chain([Window::Cumulative]).collect()
}

/// Records drained per ring per visit, so one flooding thread cannot starve the others.
const DRAIN_BATCH: usize = 1 << 14;
/// How long a stop waits for a thread in the middle of a push (a push takes nanoseconds; only a
/// thread descheduled inside one makes the stop wait at all).
const QUIESCE_LIMIT: Duration = Duration::from_secs(1);
/// How often the refresh goes round every series: their figures in a snapshot are at most this
/// old (with thousands of series, a pass takes several cycles instead of stretching one).
const SERIES_SWEEP: Duration = Duration::from_millis(250);
/// Visits per ring per cycle at most: a cycle ends even if producers keep up with it.
const MAX_PASSES: usize = 64;

pub(crate) struct Aggregator {
    shared: Arc<CollectorShared>,
    config: Settings,
    sinks: Vec<Box<dyn Sink>>,
    /// What the sinks want besides the cycle, all together.
    interest: Interest,
    /// The current ring visit's records and recorded values, for the sinks that asked; handed
    /// over after each visit (and, after a panic mid-visit, at the next publish).
    visit_records: Vec<Record>,
    visit_values: Vec<Recorded>,
    layout: Layout,
    /// The open base slice's length: the greatest common divisor of the windows' slices.
    base_slice_ns: u64,
    calibration: Calibration,
    rings: Vec<ThreadRing>,
    stages: Vec<StageState>,
    baseline: Baseline,
    in_flight: HashMap<u64, InFlight>,
    /// Tracked spans whose start and end did not meet in `in_flight`; kept for the abandon
    /// horizon, then forgotten.
    orphans: HashMap<u64, Orphan>,
    /// Start and cancel records drained (not calls: left out of the adaptive event rate).
    starts: u64,
    /// Records ever pushed into the rings already reclaimed.
    pushed_reclaimed: u64,
    /// Per-stage counts of what is in the rings, reused from publish to publish.
    in_rings_scratch: Vec<u64>,
    /// The counts as last given to the stages.
    in_rings_last: Vec<u64>,
    /// Rings were freed since the allocator was last asked to return freed memory, and when.
    reclaimed_since_trim: bool,
    last_trim: Instant,
    reasons: Vec<ReasonState>,
    latency_reason: Option<crate::sla::TripReason>,
    rule_stages: Vec<Option<Stage>>,
    rule_state: Vec<Option<Severity>>,
    health: Health,
    /// Unlabelled stage names → ids, shared by snapshots; rebuilt when stages that are not series
    /// are added (the second field is the count of those it was built for).
    names: (std::sync::Arc<HashMap<&'static str, u32>>, usize),
    oldest_in_cycle: u64,
    adaptive_mark: (u64, u64),
    cycle: u64,
    /// The current cycle's time, nanoseconds since the epoch.
    now: u64,
    /// Heap bytes of every stage's histograms as last refreshed.
    histogram_bytes: usize,
    /// This cycle refreshes every changed series (a flush or the stop asked for it).
    publish_complete: bool,
    /// The stage the next cycle's refresh of series starts from.
    refresh_cursor: usize,
    /// When the current pass over every series began (nanoseconds since the epoch).
    sweep_began: u64,
    /// Ids of the stages that are not series: refreshed in full every cycle.
    plain: Vec<u32>,
    /// Every stage's published figures.
    table: crate::stats::StageTable,
    /// The stages this cycle refreshed, in the order it did.
    changed: Vec<u32>,
    /// The flush ticket the last cycle answered.
    last_ticket: u64,
    /// `stage::DROPS` when the stages' drop counts were last scanned.
    drops_scanned: u64,
    /// Stages were added since: their drops (before this collector counted) are to be read.
    stages_added: bool,
    /// The base slice the stages' windows were last moved to.
    advanced_to: u64,
}

impl Aggregator {
    pub(crate) fn new(
        shared: Arc<CollectorShared>,
        config: Settings,
        sinks: Vec<Box<dyn Sink>>,
        baseline: Baseline,
    ) -> Self {
        let layout = Layout::new(
            config.digits,
            u64::try_from(config.highest.as_nanos()).unwrap_or(u64::MAX),
        );
        let mut calibration = baseline.epoch.clone();
        calibration.settle(Duration::from_millis(10));
        let rule_stages = config.rules.iter().map(SlaRule::find).collect();
        let rule_state = vec![None; config.rules.len()];
        let latency_reason = crate::sla::TripReason::new(config.latency_guard_reason).ok();
        let health = Health {
            ring_capacity: crate::ring::capacity_for(config.ring_capacity),
            enabled: crate::recorder::is_enabled(),
            sampling_rate: crate::recorder::sampling_rate(),
            ..Health::default()
        };
        let base_slice_ns = config
            .windows
            .iter()
            .map(|w| u64::try_from(w.slice.as_nanos()).unwrap_or(u64::MAX))
            .fold(0, gcd);
        let mut aggregator = Self {
            shared,
            config,
            sinks: Vec::new(),
            interest: Interest::default(),
            visit_records: Vec::new(),
            visit_values: Vec::new(),
            layout,
            base_slice_ns,
            calibration,
            rings: Vec::new(),
            stages: Vec::new(),
            baseline,
            in_flight: HashMap::new(),
            orphans: HashMap::new(),
            starts: 0,
            pushed_reclaimed: 0,
            in_rings_scratch: Vec::new(),
            in_rings_last: Vec::new(),
            reclaimed_since_trim: false,
            last_trim: Instant::now(),
            reasons: Vec::new(),
            latency_reason,
            histogram_bytes: 0,
            publish_complete: true,
            refresh_cursor: 0,
            sweep_began: 0,
            plain: Vec::new(),
            table: crate::stats::StageTable::default(),
            changed: Vec::new(),
            last_ticket: 0,
            drops_scanned: 0,
            stages_added: true,
            advanced_to: 0,
            rule_stages,
            rule_state,
            health,
            names: (std::sync::Arc::default(), 0),
            oldest_in_cycle: u64::MAX,
            adaptive_mark: (0, 0),
            cycle: 0,
            now: 0,
        };
        aggregator.add_sinks(sinks);
        aggregator
    }

    fn add_sinks(&mut self, sinks: Vec<Box<dyn Sink>>) {
        self.sinks.extend(sinks);
        self.refresh_interest();
    }

    fn refresh_interest(&mut self) {
        self.interest = (self.sinks.iter()).fold(Interest::NONE, |all, s| all.and(s.interest()));
    }

    /// Runs `f` on every sink, catching and counting a panic in any of them: a sink's bug
    /// neither stops the others nor the engine.
    fn each_sink(&mut self, mut f: impl FnMut(&mut dyn Sink)) {
        for sink in &mut self.sinks {
            if catch_unwind(AssertUnwindSafe(|| f(sink.as_mut()))).is_err() {
                self.health.sink_panics += 1;
            }
        }
    }

    /// Hands the current visit's records and values to the sinks that asked for them.
    fn hand_over_visit(&mut self, ring_id: u64, thread: Option<&str>, last: bool) {
        // A ring's last visit goes out even empty: sinks keeping per-ring state let go of it.
        if !self.visit_records.is_empty() || (last && self.interest.records) {
            let batch = RecordBatch {
                ring_id,
                thread,
                records: &self.visit_records,
                clock: &self.calibration,
                last,
            };
            for sink in &mut self.sinks {
                if sink.interest().records
                    && catch_unwind(AssertUnwindSafe(|| sink.records(&batch))).is_err()
                {
                    self.health.sink_panics += 1;
                }
            }
            self.visit_records.clear();
        }
        self.hand_over_values();
    }

    fn hand_over_values(&mut self) {
        if self.visit_values.is_empty() {
            return;
        }
        let batch = ValueBatch {
            values: &self.visit_values,
        };
        for sink in &mut self.sinks {
            if sink.interest().values
                && catch_unwind(AssertUnwindSafe(|| sink.values(&batch))).is_err()
            {
                self.health.sink_panics += 1;
            }
        }
        self.visit_values.clear();
    }

    /// The thread's body.
    pub(crate) fn run(mut self) {
        if let Some(on_start) = self.config.on_start.take()
            && catch_unwind(AssertUnwindSafe(on_start)).is_err()
        {
            self.health.callback_panics += 1;
        }
        loop {
            let stopping = self.shared.stop.load(Ordering::Acquire);
            if stopping {
                // No ring may join after the final drain, and every push already admitted
                // lands before it.
                self.shared.pending.close();
                self.quiesce();
            }
            let ticket = self.shared.flush_requested.load(Ordering::Acquire);
            // Whoever flushes waits for every figure: no series left for a later cycle.
            self.publish_complete = stopping || ticket != self.last_ticket;
            self.last_ticket = ticket;
            if catch_unwind(AssertUnwindSafe(|| self.cycle())).is_err() {
                self.health.aggregator_restarts += 1;
                self.publish_health_only();
            }
            {
                let mut done = self.shared.flush_done.lock();
                *done = (*done).max(ticket);
                self.shared.flush_cv.notify_all();
            }
            if stopping {
                break;
            }
            if self.shared.flush_requested.load(Ordering::Acquire) == ticket
                && !self.shared.stop.load(Ordering::Acquire)
            {
                std::thread::park_timeout(self.config.interval);
            }
        }
        // The guards and the adaptive ceiling belong to this collector: none may outlive it.
        for stage in self.rule_stages.iter().flatten() {
            stage.0.tripped.store(false, Ordering::Relaxed);
        }
        if self.health.adaptive_engaged {
            set_adaptive_ceiling(u64::MAX);
        }
        self.each_sink(|sink| sink.stop());
        self.hand_over();
        let mut done = self.shared.flush_done.lock();
        *done = u64::MAX;
        self.shared.flush_cv.notify_all();
    }

    fn cycle(&mut self) {
        #[cfg(feature = "test-util")]
        if self.shared.inject_panic.swap(false, Ordering::Relaxed) {
            panic!("laptime: panic injected into the aggregator (test-util)");
        }
        self.calibration.refine();
        let now = self.calibration.now_ns();
        self.cycle_at(now);
    }

    /// One cycle at `now` (nanoseconds since the epoch): everything but reading the clock, so
    /// tests drive the engine through time by hand.
    fn cycle_at(&mut self, now: u64) {
        let began = Instant::now();
        self.cycle += 1;
        self.now = now;
        self.oldest_in_cycle = u64::MAX;
        self.ensure_stage_states();
        self.adopt_rings();
        self.adopt_sinks();
        self.drain(now);
        self.scan_all_thread_counts(now);
        self.count_drops(now);
        self.count_guard_trips(now);
        self.watch_deadlines(now);
        let horizon = u64::try_from(self.config.abandon_after.as_nanos()).unwrap_or(u64::MAX);
        self.orphans
            .retain(|_, o| now.saturating_sub(o.at()) <= horizon);
        self.advance_windows(now);
        self.adapt_sampling(now);
        self.health.lag = Duration::from_nanos(now.saturating_sub(self.oldest_in_cycle.min(now)));
        self.health.cycles = self.cycle;
        self.publish(now);
        // After publishing: readers are not kept waiting for it.
        if self.config.release_memory
            && self.reclaimed_since_trim
            && self.last_trim.elapsed() >= Duration::from_secs(1)
        {
            self.reclaimed_since_trim = false;
            self.last_trim = Instant::now();
            crate::ring::release_freed_memory();
        }
        self.health.last_cycle = began.elapsed();
    }

    /// Moves the windows of every stage that is not a series to `now` when a base slice has
    /// ended: slices expire only at their boundaries, so between them there is nothing to move.
    /// Series are moved as the refresh comes round to them (see [`Self::refresh_stages`]).
    fn advance_windows(&mut self, now: u64) {
        let base = now / self.base_slice_ns;
        if base == self.advanced_to {
            return;
        }
        self.advanced_to = base;
        for &id in &self.plain {
            self.stages[id as usize].advance(now);
        }
    }

    fn ensure_stage_states(&mut self) {
        let registered = registry().len();
        while self.stages.len() < registered {
            let id = self.stages.len() as u32;
            let Some(stage) = registry().get(id) else {
                break;
            };
            let windows = StageWindows::new(
                self.config.windows.iter().map(|w| (w.length, w.slice)),
                self.base_slice_ns,
                0,
            );
            let dropped_seen = self.baseline.drops.get(id as usize).copied().unwrap_or(0);
            let layout = stage.0.digits.map_or(self.layout, |digits| {
                Layout::new(digits, self.layout.highest())
            });
            self.stages_added = true;
            let is_series = stage.0.digits.is_some() && !stage.is_family_total();
            if !is_series {
                self.plain.push(id);
            }
            self.stages.push(StageState {
                stage,
                layout,
                windows,
                cumulative: Cumulative::default(),
                corrected: None,
                dropped_seen,
                in_flight: 0,
                in_rings: 0,
                dirty: true,
                published: false,
                is_series,
                heap_bytes_seen: 0,
            });
        }
        let reasons: Vec<_> = crate::sla::reasons().skip(self.reasons.len()).collect();
        for (i, info) in reasons {
            self.reasons.push(ReasonState {
                info,
                seen: self.baseline.trips.get(i).copied().unwrap_or(0),
                windows: self
                    .config
                    .windows
                    .iter()
                    .map(|w| CountWindow::new(w.length, w.slice))
                    .collect(),
                total: 0,
            });
        }
    }

    /// Before the final drain: waits until every thread that read the control word before the
    /// collector was marked stopped has finished its push (see `recorder::thread::with_ring`), so the
    /// drain holds every record admitted. A thread descheduled in the middle of a push is waited
    /// for up to [`QUIESCE_LIMIT`].
    fn quiesce(&mut self) {
        self.adopt_rings();
        crate::barrier::heavy();
        let give_up = Instant::now() + QUIESCE_LIMIT;
        for ring in &self.rings {
            // Acquire: pairs with the Release that clears it, after the push's tail store. A
            // thread announcing again after the barrier sees "stopped" and clears at once.
            while ring.shared.pushing.load(Ordering::Acquire) && Instant::now() < give_up {
                std::thread::yield_now();
            }
        }
    }

    fn adopt_rings(&mut self) {
        self.shared.pending.take_all(&mut self.rings);
    }

    /// Sinks added to the running collector since the last cycle.
    fn adopt_sinks(&mut self) {
        let added = std::mem::take(&mut *self.shared.added_sinks.lock());
        if !added.is_empty() {
            self.add_sinks(added);
        }
    }

    /// Runs `f` over the rings, putting them back even if `f` panics (the panic then goes on to
    /// the cycle's catch): a bug in one cycle must not orphan every thread's ring.
    fn with_rings(&mut self, f: impl FnOnce(&mut Self, &mut Vec<ThreadRing>)) {
        let mut rings = std::mem::take(&mut self.rings);
        let result = catch_unwind(AssertUnwindSafe(|| f(self, &mut rings)));
        rings.append(&mut self.rings);
        self.rings = rings;
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    fn drain(&mut self, now: u64) {
        self.with_rings(|this, rings| {
            // Visit the rings in turn, a batch each, while any of them still had a full batch: a
            // fast thread is not capped at one batch per cycle, and cannot starve the others.
            for pass in 0..MAX_PASSES {
                let mut more = false;
                rings.retain_mut(|ring| {
                    if pass == 0 {
                        let waiting = ring.consumer.len();
                        this.health.ring_high_water = this.health.ring_high_water.max(waiting);
                    }
                    let keep_records = this.interest.records;
                    let visit = ring.consumer.visit(DRAIN_BATCH, |r| {
                        this.health.records += 1;
                        if keep_records {
                            this.visit_records.push(r);
                        }
                        this.process(r);
                    });
                    let last = matches!(visit, Visit::Finished);
                    this.hand_over_visit(ring.ring_id, ring.thread.as_deref(), last);
                    match visit {
                        Visit::Drained { more: batch_full } => {
                            more |= batch_full;
                            true
                        }
                        Visit::Finished => {
                            this.scan_thread_counts(ring, now, true);
                            this.health.rings_reclaimed += 1;
                            this.reclaimed_since_trim = true;
                            this.pushed_reclaimed += ring.consumer.pushed() as u64;
                            false
                        }
                    }
                });
                if !more {
                    break;
                }
            }
        });
    }

    fn stage_state(&mut self, id: u32) -> Option<&mut StageState> {
        if id as usize >= self.stages.len() {
            self.ensure_stage_states();
        }
        self.stages.get_mut(id as usize)
    }

    fn process(&mut self, r: Record) {
        let cal = &self.calibration;
        match r.kind {
            Kind::Span | Kind::Unwound => {
                // An end read before its start (a clock stepped back, unsynchronised TSCs) is
                // recorded as 0 ns, and counted.
                self.health.backwards_spans += u64::from(r.b < r.a);
                let duration = cal.to_ns(r.b.saturating_sub(r.a));
                let end = cal.since_epoch_ns(r.b);
                let already_missed = (r.span != 0).then(|| self.close_in_flight(r.span, end));
                self.record_value(r.stage, end, duration, already_missed);
                if r.kind == Kind::Unwound {
                    self.count_event(r.stage, end, Event::Unwound, 1);
                }
            }
            Kind::Value => {
                let at = cal.since_epoch_ns(r.b);
                self.record_value(r.stage, at, r.a, None);
            }
            Kind::Cancel => {
                // A cancel carries no time: it counts in the cycle that drains it.
                let now = self.now;
                if r.span != 0 {
                    self.close_in_flight(r.span, now);
                }
                self.count_event(r.stage, now, Event::Cancelled, 1);
                self.starts += 1; // not a span: kept out of the event rate, like starts
            }
            Kind::Start => {
                self.starts += 1;
                if self.orphans.remove(&r.span).is_some() {
                    return; // its end (or cancel) came first, through another thread's ring
                }
                if self.in_flight.len() >= self.config.max_in_flight {
                    return; // judged by its duration alone when it ends
                }
                let start_ns = cal.since_epoch_ns(r.a);
                self.in_flight.insert(
                    r.span,
                    InFlight {
                        stage: r.stage,
                        start_ns,
                        overdue: false,
                    },
                );
                if let Some(state) = self.stage_state(r.stage) {
                    state.in_flight += 1;
                    state.dirty = true;
                }
            }
        }
    }

    /// Closes tracked span `span` at `at`, returning whether its deadline miss was already
    /// counted (while it was in flight).
    fn close_in_flight(&mut self, span: u64, at: u64) -> bool {
        if let Some(f) = self.in_flight.remove(&span) {
            if let Some(state) = self.stage_state(f.stage) {
                state.in_flight = state.in_flight.saturating_sub(1);
                state.dirty = true;
            }
            return f.overdue;
        }
        match self.orphans.remove(&span) {
            // Given up on after its miss was counted: do not count it again.
            Some(Orphan::Abandoned { missed, .. }) => missed,
            // The start is on a ring not drained yet (or was dropped): remember the end, so the
            // start, if it comes, is discarded.
            _ => {
                self.orphans.insert(span, Orphan::EndFirst { at });
                false
            }
        }
    }

    /// Records one duration ending at `at`. `already_missed` is `Some(true)` when the deadline
    /// watch already counted this span as a miss while it was in flight.
    fn record_value(&mut self, id: u32, at: u64, duration: u64, already_missed: Option<bool>) {
        self.oldest_in_cycle = self.oldest_in_cycle.min(at);
        if id as usize >= self.stages.len() {
            self.ensure_stage_states();
        }
        let Some(state) = self.stages.get_mut(id as usize) else {
            return;
        };
        let layout = state.layout;
        let saturated = duration > layout.highest();
        let index = layout.index(duration);
        state.cumulative.record(index, duration, saturated);
        state.windows.record(at, index, duration, saturated);
        let deadline = state.stage.0.deadline_ns.load(Ordering::Relaxed);
        let missed = deadline != 0 && duration > deadline && already_missed != Some(true);
        if missed {
            state.cumulative.count_event(Event::Miss, 1);
            state.windows.count_event(at, Event::Miss, 1);
        }
        if let Some(total) = total_of(state.stage) {
            self.record_into_total(total, at, index, duration, saturated, missed);
        }
        let Some(state) = self.stages.get_mut(id as usize) else {
            return;
        };
        let interval = state.stage.0.expected_interval_ns.load(Ordering::Relaxed);
        let corrected = (interval != 0).then(|| {
            let (windows, base_slice_ns) = (&self.config.windows, self.base_slice_ns);
            let count = state
                .corrected
                .get_or_insert_with(|| new_correction(windows, base_slice_ns, interval))
                .record(&layout, at, index, duration, interval);
            Synthesized {
                interval_ns: interval,
                count,
            }
        });
        state.dirty = true;
        self.health.saturated += u64::from(saturated);
        if self.interest.values {
            self.visit_values.push(Recorded {
                stage: state.stage,
                at_ns: at,
                duration_ns: duration,
                corrected,
            });
        }
    }

    fn count_event(&mut self, id: u32, at: u64, event: Event, n: u64) {
        let Some(state) = self.stage_state(id) else {
            return;
        };
        state.cumulative.count_event(event, n);
        state.windows.count_event(at, event, n);
        state.dirty = true;
        if let Some(total) = total_of(state.stage) {
            self.count_event(total, at, event, n);
        }
    }

    /// A series' value, recorded again into its family's total (the family as a whole: see
    /// `crate::family`), or a static labelled stage's into its name's (`Stage::with_labels`).
    /// Both share the stage's layout. Corrected figures and spans in flight stay per stage.
    fn record_into_total(
        &mut self,
        total: u32,
        at: u64,
        index: usize,
        duration: u64,
        saturated: bool,
        missed: bool,
    ) {
        let Some(state) = self.stage_state(total) else {
            return;
        };
        state.cumulative.record(index, duration, saturated);
        state.windows.record(at, index, duration, saturated);
        if missed {
            state.cumulative.count_event(Event::Miss, 1);
            state.windows.count_event(at, Event::Miss, 1);
        }
        state.dirty = true;
    }

    /// Counts the ring's new sampled-out calls and drops. `last` scans even if the flag is clear:
    /// the thread has exited, and its closed ring (Acquire) orders every counter store before
    /// this read.
    fn scan_thread_counts(&mut self, ring: &mut ThreadRing, now: u64, last: bool) {
        // Acquire: pairs with the producer's Release store of the flag.
        if !ring.shared.touched.swap(false, Ordering::Acquire) && !last {
            return;
        }
        let counters: &[ThreadCounts] = &ring.shared.counts;
        for (id, (counts, seen)) in counters.iter().zip(ring.seen_counts.iter_mut()).enumerate() {
            if let Some(delta) = advance(&counts.sampled_out, &mut seen.0) {
                self.health.sampled_out += delta;
                self.count_event(id as u32, now, Event::SampledOut, delta);
            }
            if let Some(delta) = advance(&counts.dropped, &mut seen.1) {
                self.count_thread_drops(id as u32, now, delta);
            }
        }
    }

    /// Drops a thread counted on its own: added to the stage's process-wide count too (already
    /// seen, so `count_drops` does not count them again), so `Stage::dropped` stays whole.
    fn count_thread_drops(&mut self, id: u32, now: u64, delta: u64) {
        if let Some(state) = self.stage_state(id) {
            state.stage.0.dropped.fetch_add(delta, Ordering::Relaxed);
            state.dropped_seen += delta;
        }
        self.health.dropped += delta;
        self.count_event(id, now, Event::Dropped, delta);
    }

    fn scan_all_thread_counts(&mut self, now: u64) {
        self.with_rings(|this, rings| {
            for ring in rings {
                this.scan_thread_counts(ring, now, false);
            }
        });
    }

    fn count_drops(&mut self, now: u64) {
        // Acquire: pairs with `count_drop`'s Release, so every stage count behind it is seen.
        let total = crate::stage::DROPS.load(Ordering::Acquire);
        if total == self.drops_scanned && !self.stages_added {
            return;
        }
        self.drops_scanned = total;
        self.stages_added = false;
        for id in 0..self.stages.len() {
            let state = &mut self.stages[id];
            let value = state.stage.dropped();
            if value > state.dropped_seen {
                let delta = value - state.dropped_seen;
                state.dropped_seen = value;
                self.health.dropped += delta;
                self.count_event(id as u32, now, Event::Dropped, delta);
            }
        }
    }

    fn count_guard_trips(&mut self, now: u64) {
        for reason in &mut self.reasons {
            let value = reason.info.trips.load(Ordering::Relaxed);
            if value > reason.seen {
                let delta = value - reason.seen;
                reason.seen = value;
                reason.total += delta;
                for w in &mut reason.windows {
                    w.add(now, delta);
                }
            }
        }
    }

    fn watch_deadlines(&mut self, now: u64) {
        let abandon = u64::try_from(self.config.abandon_after.as_nanos()).unwrap_or(u64::MAX);
        let mut misses: Vec<u32> = Vec::new();
        let mut abandoned: Vec<(u64, InFlight)> = Vec::new();
        self.in_flight.retain(|span, f| {
            let age = now.saturating_sub(f.start_ns);
            if !f.overdue
                && let Some(stage) = registry().get(f.stage)
            {
                let deadline = stage.0.deadline_ns.load(Ordering::Relaxed);
                if deadline != 0 && age > deadline {
                    f.overdue = true;
                    misses.push(f.stage);
                }
            }
            if age > abandon {
                abandoned.push((*span, *f));
                return false;
            }
            true
        });
        for id in misses {
            self.count_event(id, now, Event::Miss, 1);
        }
        for (span, f) in abandoned {
            self.health.abandoned += 1;
            let missed = f.overdue;
            self.orphans
                .insert(span, Orphan::Abandoned { at: now, missed });
            if let Some(state) = self.stage_state(f.stage) {
                state.in_flight = state.in_flight.saturating_sub(1);
                state.dirty = true;
            }
        }
    }

    fn adapt_sampling(&mut self, now: u64) {
        let Some(policy) = self.config.adaptive else {
            return;
        };
        let calls =
            self.health.records - self.starts + self.health.sampled_out + self.health.dropped;
        let (mark_ns, mark_calls) = self.adaptive_mark;
        let elapsed = now.saturating_sub(mark_ns);
        if elapsed < 1_000_000_000 {
            return;
        }
        self.adaptive_mark = (now, calls);
        let rate = (calls - mark_calls) as f64 / (elapsed as f64 / 1e9);
        let reduced = crate::record::rate_to_threshold(policy.reduced_rate).unwrap_or(u64::MAX);
        if !self.health.adaptive_engaged && rate > policy.budget_per_sec {
            self.health.adaptive_engaged = true;
            set_adaptive_ceiling(reduced);
        } else if self.health.adaptive_engaged && rate < policy.budget_per_sec / 2.0 {
            self.health.adaptive_engaged = false;
            set_adaptive_ceiling(u64::MAX);
        }
    }

    /// Counts what is still in the rings, per stage and in total, reading each ring's tail once:
    /// returns (records ever pushed, records in rings). The rings' own indices, independent of
    /// what this aggregator counted as it drained: `produced == records + dropped + in_rings` is
    /// then a check, not a sum.
    fn count_in_rings(&mut self) -> (u64, u64) {
        // A stage registered since the drain may already have records waiting.
        self.ensure_stage_states();
        let mut per_stage = std::mem::take(&mut self.in_rings_scratch);
        per_stage.clear();
        per_stage.resize(self.stages.len(), 0);
        let (mut pushed, mut in_rings) = (self.pushed_reclaimed, 0);
        for ring in &mut self.rings {
            let popped = ring.consumer.popped();
            let tail = ring.consumer.peek(|r| {
                // Starts are records but not span outcomes: in the total only.
                if r.kind != Kind::Start
                    && let Some(n) = per_stage.get_mut(r.stage as usize)
                {
                    *n += 1;
                }
            });
            pushed += tail as u64;
            in_rings += tail.wrapping_sub(popped) as u64;
        }
        // A total answers for its stages' outcomes in rings too, as for the rest.
        for id in 0..per_stage.len() {
            let n = per_stage[id];
            if n > 0
                && self.stages[id].is_series
                && let Some(total) = total_of(self.stages[id].stage)
                && let Some(t) = per_stage.get_mut(total as usize)
            {
                *t += n;
            }
        }
        // Compared with the last count side by side, so only the stages whose count moved are
        // touched (with thousands of series, most are not).
        let last = &mut self.in_rings_last;
        last.resize(per_stage.len(), 0);
        for (id, (n, seen)) in per_stage.iter().zip(last.iter_mut()).enumerate() {
            if *n != *seen {
                *seen = *n;
                let state = &mut self.stages[id];
                state.in_rings = *n;
                state.dirty = true;
            }
        }
        self.in_rings_scratch = per_stage;
        (pushed, in_rings)
    }

    fn publish(&mut self, now: u64) {
        let (pushed, in_rings) = self.count_in_rings();
        self.refresh_stages();
        let stages = self.table.clone();
        let histogram_bytes = self.histogram_bytes;
        let h = &mut self.health;
        h.in_rings = in_rings;
        h.produced = pushed + h.dropped;
        h.rings = self.rings.len();
        h.in_flight = self.in_flight.len();
        h.rejected = registry().rejected();
        h.sampling_rate = threshold_to_rate(CONTROL.sampling_threshold());
        h.enabled = crate::recorder::is_enabled();
        h.histogram_bytes = histogram_bytes;
        h.untracked_starts = crate::recorder::UNTRACKED_STARTS.load(Ordering::Relaxed);
        h.rejected_trips = crate::sla::REJECTED_TRIPS.load(Ordering::Relaxed);
        (h.series, h.series_overflowed) = crate::family::series_figures();
        // Only stages that are not series can be unlabelled: a new series leaves the index be.
        if self.names.1 != self.plain.len() {
            let names = self
                .plain
                .iter()
                .map(|&id| self.stages[id as usize].stage)
                .filter(|stage| stage.labels().is_empty())
                .map(|stage| (stage.name(), stage.id()))
                .collect();
            self.names = (std::sync::Arc::new(names), self.plain.len());
        }
        let mut snapshot = Snapshot {
            // The windows' clock: nanoseconds since the epoch the records are placed by.
            taken_at: Duration::from_nanos(now),
            windows: self.config.kept_windows(),
            stages,
            violations: Vec::new(),
            guard_trips: Vec::new(),
            names: self.names.0.clone(),
            health: self.health.clone(),
        };
        let changed;
        (snapshot.violations, changed) = self.evaluate_sla(&snapshot);
        // After the SLA verdicts: a latency guard they tripped is counted in this snapshot.
        self.count_guard_trips(now);
        snapshot.guard_trips = self.guard_trips(now);
        let snapshot = std::sync::Arc::new(snapshot);
        self.publish_to_sinks(&snapshot);
        self.shared.snapshot.store(snapshot);
        // After publishing, so a callback that queries sees the figures that triggered it.
        if !changed.is_empty()
            && let Some(callback) = &self.config.callback
            && catch_unwind(AssertUnwindSafe(|| callback(&changed))).is_err()
        {
            self.health.callback_panics += 1;
            self.publish_health_only();
        }
    }

    /// Recomputes the published figures of the stages that changed: every stage without labels,
    /// then series in id order from where the last cycle stopped. Each cycle visits enough
    /// series to go round all of them every [`SERIES_SWEEP`], moving their windows and
    /// refreshing those that changed, and stops early once a quarter of the interval is spent
    /// (a flush or the stop visits every one). Consecutive series share table chunks, so a
    /// cycle copies few.
    fn refresh_stages(&mut self) {
        let began = Instant::now();
        self.changed.clear();
        for &id in &self.plain {
            let state = &mut self.stages[id as usize];
            if let Some(figures) = refresh(state, &mut self.histogram_bytes) {
                self.table.set(id as usize, figures);
                self.changed.push(id);
            }
        }
        let n = self.stages.len();
        let (budget, visits) = if self.publish_complete {
            (Duration::MAX, n)
        } else {
            (self.config.interval / 4, self.series_visits(n))
        };
        let mut refreshed = 0;
        for _ in 0..visits {
            let i = self.refresh_cursor % n;
            let state = &mut self.stages[i];
            if state.is_series {
                state.advance(self.now);
                if state.needs_refresh() {
                    // At least one series a cycle, so a budget however small still goes round.
                    if refreshed > 0 && began.elapsed() >= budget {
                        break;
                    }
                    if let Some(figures) = refresh(state, &mut self.histogram_bytes) {
                        self.table.set(i, figures);
                        self.changed.push(i as u32);
                    }
                    refreshed += 1;
                }
            }
            self.refresh_cursor = i + 1;
            if self.refresh_cursor >= n {
                self.refresh_cursor = 0;
                self.health.series_sweep = Duration::from_nanos(self.now - self.sweep_began);
                self.sweep_began = self.now;
            }
        }
    }

    /// Stages one cycle visits so that a pass over all `n` takes [`SERIES_SWEEP`].
    fn series_visits(&self, n: usize) -> usize {
        let cycles = (SERIES_SWEEP.as_nanos() / self.config.interval.as_nanos().max(1)).max(1);
        n.div_ceil(cycles as usize).clamp(n.min(64), n)
    }

    /// After a caught panic: keep the last statistics, update the health figures.
    fn publish_health_only(&mut self) {
        // The cycle may have drained (and counted) records before it panicked: read the rings
        // again, so this snapshot's `produced == records + dropped + in_rings` still holds.
        let (pushed, in_rings) = self.count_in_rings();
        self.health.in_rings = in_rings;
        self.health.produced = pushed + self.health.dropped;
        let old = self.shared.snapshot.load_full();
        let snapshot = Snapshot {
            taken_at: Duration::from_nanos(self.calibration.now_ns()),
            windows: old.windows.clone(),
            stages: old.stages.clone(),
            violations: old.violations.clone(),
            guard_trips: old.guard_trips.clone(),
            names: old.names.clone(),
            health: self.health.clone(),
        };
        let snapshot = std::sync::Arc::new(snapshot);
        // Values recorded before the panic reach the sinks, so their counts stay exact. The raw
        // records of the visit that panicked are given up with it: handed over later they would
        // be labelled with the next visit's ring.
        self.hand_over_values();
        self.visit_records.clear();
        self.each_sink(|sink| sink.health_only(&snapshot));
        // Stored after the sinks have it, as `publish` does: whoever sees this snapshot sees
        // exports at least as new (a scrape never lags the health a test or caller just read).
        self.shared.snapshot.store(snapshot);
    }

    /// Hands every sink this cycle's figures, then lets go of the sinks that are done.
    fn publish_to_sinks(&mut self, snapshot: &std::sync::Arc<Snapshot>) {
        // Values a panicked visit recorded but did not hand over.
        self.hand_over_values();
        let cycle = Cycle {
            snapshot,
            stages: &self.stages,
            changed: &self.changed,
            layout: &self.layout,
            settings: &self.config,
        };
        let mut panics = 0;
        for sink in &mut self.sinks {
            if catch_unwind(AssertUnwindSafe(|| sink.cycle(&cycle))).is_err() {
                panics += 1;
            }
        }
        self.health.sink_panics += panics;
        let before = self.sinks.len();
        self.sinks.retain(|s| !s.is_done());
        if self.sinks.len() != before {
            self.refresh_interest();
        }
    }

    /// Guard trips per reason: in each sliding window, then since install.
    fn guard_trips(&self, now: u64) -> Vec<TripCounts> {
        let per_reason = |r: &ReasonState| TripCounts {
            reason: r.info.name,
            counts: r
                .windows
                .iter()
                .map(|w| w.total(now))
                .chain([r.total])
                .collect(),
        };
        self.reasons.iter().map(per_reason).collect()
    }

    /// Judges every rule against `snapshot`. Returns the violations (as data: this cycle's raw
    /// verdicts) and those whose settled severity started, changed or ended (for the callback;
    /// an ended one is marked `cleared`). Latency
    /// guards follow the settled severity, which leaves a level only below
    /// [`crate::sla::CLEAR_BELOW`] of its threshold, so one episode trips a guard once.
    fn evaluate_sla(&mut self, snapshot: &Snapshot) -> (Vec<Violation>, Vec<Violation>) {
        let mut violations = Vec::new();
        let mut changed = Vec::new();
        let mut critical: Vec<Stage> = Vec::new();
        for (i, rule) in self.config.rules.iter().enumerate() {
            // A series a rule names may appear at any time.
            if self.rule_stages[i].is_none() {
                self.rule_stages[i] = rule.find();
            }
            let Some(stage) = self.rule_stages[i] else {
                continue;
            };
            let stats = snapshot.stats(stage, rule.window);
            let verdict = stats.and_then(|s| rule.judge(s));
            let settled = rule.settle(stats, self.rule_state[i]);
            if settled != self.rule_state[i] {
                let was = std::mem::replace(&mut self.rule_state[i], settled);
                match (settled, was) {
                    (None, Some(severity)) => changed.push(rule.cleared(severity, stats)),
                    _ => changed.extend(
                        verdict
                            .as_ref()
                            .filter(|v| Some(v.severity) == settled)
                            .cloned(),
                    ),
                }
            }
            if settled == Some(Severity::Critical) && rule.trips_guard {
                critical.push(stage);
            }
            violations.extend(verdict);
        }
        for stage in self.rule_stages.iter().flatten() {
            let now_critical = critical.contains(stage);
            let was = stage.0.tripped.swap(now_critical, Ordering::Relaxed);
            if now_critical
                && !was
                && let Some(reason) = self.latency_reason
            {
                reason.trip();
            }
        }
        (violations, changed)
    }
}

/// A stage's corrected histograms, created when its first span with an expected interval drains.
/// Recomputes `state`'s published figures if it changed, and its share of `histogram_bytes`.
fn refresh(
    state: &mut StageState,
    histogram_bytes: &mut usize,
) -> Option<std::sync::Arc<StageSnapshot>> {
    if !state.needs_refresh() {
        return None;
    }
    let layout = state.layout;
    let mut stats = Vec::with_capacity(state.windows.len() + 1);
    for i in 0..state.windows.len() {
        let mut s = state.windows.stats(i, state.stage, &layout);
        if let Some(c) = &state.corrected {
            let (raw, tally) = c.windows.stats_and_tally(i, state.stage, &layout);
            s.corrected = Some(window::corrected_from(raw, &tally, c.interval_ns));
        }
        stats.push(active(&s).then_some(s));
    }
    let mut cumulative = state
        .cumulative
        .stats(state.stage, &layout, state.in_flight);
    cumulative.in_rings = state.in_rings;
    cumulative.produced += state.in_rings;
    cumulative.calls += state.in_rings;
    if let Some(c) = &state.corrected {
        let raw = c.cumulative.stats(state.stage, &layout, 0);
        cumulative.corrected = Some(window::corrected_from(
            raw,
            &c.cumulative.tally,
            c.interval_ns,
        ));
    }
    let live = active(&cumulative) || state.in_flight > 0 || state.in_rings > 0;
    stats.push(live.then_some(cumulative));
    state.published = true;
    state.dirty = false;
    let bytes = state.heap_bytes();
    *histogram_bytes = *histogram_bytes - state.heap_bytes_seen + bytes;
    state.heap_bytes_seen = bytes;
    Some(std::sync::Arc::from(stats))
}

fn new_correction(windows: &[WindowSpec], base_slice_ns: u64, interval_ns: u64) -> Box<Correction> {
    let windows = StageWindows::new(
        windows.iter().map(|w| (w.length, w.slice)),
        base_slice_ns,
        0,
    );
    Box::new(Correction::new(windows, interval_ns))
}

/// The id of the total `stage` also records into: its family's if it is a series, its name's if
/// it is a static labelled stage.
#[inline]
/// How far `counter` moved since `seen`, which it moves along; `None` if it did not.
fn advance(counter: &std::sync::atomic::AtomicU64, seen: &mut u64) -> Option<u64> {
    let value = counter.load(Ordering::Relaxed);
    let delta = value - *seen;
    *seen = value;
    (delta > 0).then_some(delta)
}

fn total_of(stage: Stage) -> Option<u32> {
    stage.sums_into().map(Stage::id)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn active(s: &crate::StageStats) -> bool {
    s.count > 0 || s.dropped > 0 || s.sampled_out > 0 || s.deadline_misses > 0 || s.cancelled > 0
}

#[cfg(all(test, not(laptime_loom)))]
mod tests;
