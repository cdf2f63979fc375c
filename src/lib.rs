//! In-process latency metrics for hot paths counted in nanoseconds: how long each stage of a tick
//! takes, while the process runs, at about the price of reading the clock.
//!
//! # Guarantees
//!
//! * **No allocation** on the hot path after a thread's first record (which creates its ring).
//! * **No blocking, no lock, no panic** on the hot path once a thread has its ring and a name has
//!   been resolved at its call site (both happen once): a span reads the TSC at start and end and
//!   writes one 32-byte record into its thread's wait-free SPSC ring.
//! * **No silent loss**: a full ring hands the record back and the stage's drop counter goes up;
//!   [`Health`] reports what the rings' own indices say was produced beside what was aggregated,
//!   dropped and still waiting, so `produced = aggregated + dropped + in rings` is checkable.
//! * **Right figures**: percentiles within the histogram's resolution (0.1 % at the default 3
//!   significant digits) of the exact nearest-rank value; mean, min, max and stddev exact.
//! * **Overhead**, measured on a 2-vCPU Xeon guest where a bare TSC pair costs 15 ns (figures,
//!   commands and caveats in `benches/README.md`): a span ≈ 1.4 × a TSC pair (21 ns); a split
//!   ≈ 1.3 × a TSC pair per stage (19 ns); a disabled span 0.3 ns; a 4-stage tick of 10 µs
//!   +0.6 %.
//!
//! # Quickstart
//!
//! ```
//! use laptime::Window;
//!
//! fn tick() {
//!     let mut lap = laptime::lap("tick_total");
//!     // ... fetch market data
//!     lap.split("stage_fetch_md");
//!     // ... compute the spread
//!     lap.split("stage_spread");
//!     // ... check guards
//!     if laptime::guard_trip_if(false, "vol_hard") { return; }
//!     lap.end_with("stage_emit");
//! }
//!
//! for _ in 0..100 {
//!     tick();
//! }
//! {
//!     let _span = laptime::start("stage_reconcile"); // a guard: recorded when it drops
//! }
//! laptime::flush(); // normally the aggregator publishes every 10 ms by itself
//! let stats = laptime::get_stats("stage_spread", Window::S1).unwrap();
//! assert_eq!(stats.count, 100);
//! println!("spread p99 = {:?}", stats.p99);
//! ```
//!
//! # Concepts
//!
//! * A **stage** ([`Stage`]) is a static name plus optional static labels, resolved once to a dense
//!   id. Pass a `&'static str` (looked up by address, no hashing) or a [`Stage`] handle
//!   ([`stage!`] keeps one in a call-site static).
//! * A **span** times one stage: [`start`] returns a [`SpanGuard`] that records on drop;
//!   [`record_start`] / [`record_end`] split the two ends; [`record`] takes a measured duration.
//! * The **split timer** [`lap`] times a tick's sequential stages with one clock read per boundary.
//! * The **collector** ([`Collector::builder`]) owns the aggregator thread; a default one starts by
//!   itself on the first span. Its **windows** (1 s, 5 s, 60 s by default, plus cumulative) are rings
//!   of slices; [`get_stats`] reads the latest published [`Snapshot`].
//! * **Deadlines** ([`Stage::set_deadline`], [`CollectorBuilder::with_deadline`]) publish each
//!   span's start, so a stuck span counts as a miss while it is stuck.
//! * **SLA rules** ([`SlaRule`]) give warning and critical thresholds; violations come as data
//!   ([`check_sla_violations`]), callbacks, and latency guards ([`Stage::latency_guard`]).
//! * **Switches**: [`set_enabled`], [`Stage::set_enabled`], [`set_sampling_rate`], adaptive sampling.
//!
//! # Feature flags
//!
//! * `test-util`: [`clock::MockClock`], a hand-driven clock for deterministic tests, and
//!   [`CollectorHandle::inject_aggregator_panic`].
//!
//! # Caveats
//!
//! * One collector is current per process; stage names and their switches are process-wide.
//! * Ticks are converted with a calibration refined as the process runs; the first 10 ms of the
//!   aggregator calibrate the TSC.
//! * Stopping a collector: spans that end after the stop are counted as dropped, but a record
//!   whose push races the final drain (a window of a few nanoseconds) is lost with the ring.
#![deny(unsafe_code)]
#![warn(missing_docs)]
// The two modules that read the TSC and own the ring's slots opt back in, each with a SAFETY line
// on every block.
#![cfg_attr(not(laptime_loom), doc(test(attr(deny(warnings)))))]

// Under `--cfg laptime_loom` only the loom-checked core builds (`tests/loom.rs`): the ring, the
// ring handoff and the sync shim. The rest uses std primitives and statics that loom cannot run.
#[cfg(not(laptime_loom))]
mod aggregator;
#[cfg(not(laptime_loom))]
pub mod clock;
#[cfg(not(laptime_loom))]
mod collector;
#[cfg(not(laptime_loom))]
mod error;
#[cfg(laptime_loom)]
pub mod handoff;
#[cfg(not(laptime_loom))]
mod handoff;
#[cfg(not(laptime_loom))]
mod recorder;
pub mod ring;
#[cfg(not(laptime_loom))]
mod sla;
#[cfg(not(laptime_loom))]
mod stage;
#[cfg(not(laptime_loom))]
mod stats;
mod sync;

#[cfg(not(laptime_loom))]
pub use collector::{
    AdaptiveSampling, Collector, CollectorBuilder, CollectorHandle, IntoStageQuery,
    MAX_RING_CAPACITY, MAX_SLICES_PER_WINDOW, SlaCallback, WindowSpec, check_sla_violations, flush,
    get_all_stats, get_stats, health, snapshot,
};
#[cfg(not(laptime_loom))]
pub use error::{ConfigError, InstallError, InstallErrorKind, StageError};
#[cfg(not(laptime_loom))]
pub use recorder::{
    Lap, SpanGuard, SpanToken, is_enabled, lap, record, record_end, record_start, sampling_rate,
    set_enabled, set_sampling_rate, start,
};
#[cfg(not(laptime_loom))]
pub use sla::{
    CLEAR_BELOW, GuardReason, MAX_GUARD_REASONS, Metric, Severity, SlaPreset, SlaRule, Value,
    Violation, guard_trip, presets,
};
#[cfg(not(laptime_loom))]
pub use stage::{
    DEFAULT_MAX_STAGES, IntoStage, Labels, LatencyGuard, MAX_NAME_LEN, MAX_STAGES_LIMIT, Stage,
};
#[cfg(not(laptime_loom))]
pub use stats::{GuardTrips, Health, Snapshot, StageSnapshotIter, StageStats, Window};

/// Guard trips of every reason over `window`, from the current collector's latest snapshot.
#[cfg(not(laptime_loom))]
pub fn guard_trips(window: Window) -> Vec<(&'static str, u64)> {
    snapshot()
        .map(|s| s.guard_trips(window))
        .unwrap_or_default()
}

/// Trips `reason` when `condition` holds and returns `condition`: `if guard_trip_if(vol > max,
/// "vol_hard") { return; }`.
#[inline]
#[cfg(not(laptime_loom))]
pub fn guard_trip_if(condition: bool, reason: &'static str) -> bool {
    if condition {
        guard_trip(reason);
    }
    condition
}

/// The exact nearest-rank definition every percentile here follows: the rank of quantile `q` among
/// `n` sorted values is ⌈q·n⌉ (at least 1), with products within 1e-9 of an integer taken as that
/// integer. Tests compare reported percentiles with `sorted[rank(q, n) - 1]`.
#[cfg(not(laptime_loom))]
pub fn rank(q: f64, n: u64) -> u64 {
    aggregator::hist::rank(q, n)
}
