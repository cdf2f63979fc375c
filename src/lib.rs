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
//! #[laptime::measure(name = "stage_spread", deadline = "200us")]
//! fn spread(bid: f64, ask: f64) -> f64 {
//!     ask - bid
//! }
//!
//! fn tick(bid: f64, ask: f64) -> Option<f64> {
//!     let mut lap = laptime::lap("tick_total"); // sequential stages: one clock read per boundary
//!     let book = laptime::measure_block!("stage_fetch_md", { (bid, ask) });
//!     lap.split("stage_book");
//!     let s = spread(book.0, book.1);
//!     if laptime::record_trip_if(s > 1.0, "vol_hard") {
//!         return None; // the lap's total is still recorded when it drops
//!     }
//!     lap.end_with("stage_emit");
//!     Some(s)
//! }
//!
//! for _ in 0..100 {
//!     tick(99.5, 100.0);
//! }
//! laptime::flush(); // normally the aggregator publishes every 10 ms by itself
//! let stats = laptime::get_stats("stage_spread", Window::S1).unwrap();
//! assert_eq!(stats.count, 100);
//! println!("spread p99 = {:?}", stats.p99);
//! ```
//!
//! # Concepts
//!
//! * A **stage** ([`Stage`](struct@Stage)) is a static name plus optional static labels, resolved once to a dense
//!   id. Pass a `&'static str` (looked up by address, no hashing) or a [`Stage`](struct@Stage) handle
//!   ([`stage!`] keeps one in a call-site static).
//! * **Instrumentation**: [`#[measure]`](macro@measure) on functions, methods and `async fn`s,
//!   [`measure_block!`] around blocks, [`#[measure_all]`](macro@measure_all) on `impl` blocks and
//!   modules, and [`#[derive(Stage)]`](derive@Stage) for enums of stages; each call site resolves
//!   its stage once into a `static`.
//! * A **span** times one stage: [`start`] returns a [`SpanGuard`] that records on drop;
//!   [`record_start`] / [`record_end`] split the two ends; [`record`] takes a measured duration.
//! * The **split timer** [`lap`] times a tick's sequential stages with one clock read per boundary.
//! * The **collector** ([`Collector::builder`]) owns the aggregator thread; a default one starts by
//!   itself on the first span. Its **windows** (1 s, 5 s, 60 s by default, plus cumulative) are rings
//!   of slices; [`get_stats`] reads the latest published [`Snapshot`].
//! * **Deadlines** ([`Stage::set_deadline`], [`CollectorBuilder::with_deadline`]) publish each
//!   span's start, so a stuck span counts as a miss while it is stuck.
//! * **SLA rules** ([`SlaRule`]) give warning and critical thresholds; violations come as data
//!   ([`check_sla_violations`]), callbacks, and latency breakers ([`Stage::latency_breaker`]).
//! * **Switches**: [`set_enabled`], [`Stage::set_enabled`], [`set_sampling_rate`], adaptive sampling
//!   ([`CollectorBuilder::with_adaptive_sampling`]; it reacts in 1–2 s, measuring the event rate
//!   over periods of at least one second).
//!
//! # Feature flags
//!
//! * `enable` (default): instrumentation compiled in. Without it (`default-features = false`) the
//!   macros leave their items as written and every recording entry point returns at once; the API
//!   is the same, so code builds either way ([`COMPILED_IN`] says which). A library that depends on
//!   laptime should use `default-features = false`, so that only the final binary turns `enable` on.
//! * `test-util`: `clock::MockClock`, a hand-driven clock for deterministic tests, and
//!   `CollectorHandle::inject_aggregator_panic`.
//! * `prometheus`: `laptime::export::prometheus`, the Prometheus export the aggregator feeds after
//!   each drain (stage histograms, guard-trip and deadline-miss counters, gauges, health), and
//!   `CollectorBuilder::with_prometheus`. `prometheus-process` adds the process's own figures.
//! * `http`: `laptime::export::http`, a small bounded `/metrics` + `/health` endpoint: one `mio`
//!   event loop and a few workers of its own (implies `prometheus`).
//! * `profile`: `laptime::profile`, a versioned JSON perf profile of a run (each stage's figures and
//!   HDR histogram), taken with `CollectorHandle::profile`, validated on read, mergeable across runs.
//! * `trace`: `laptime::trace`, golden traces: `CollectorBuilder::with_tracing` makes the
//!   aggregator rebuild sampled, golden and slow ticks' nested spans from the records it already
//!   drains (nothing changes on the hot path); `CollectorHandle::traces` returns them, and they are
//!   written as the seed's golden JSON and as Chrome trace-event JSON (Perfetto).
//! * `config`: `laptime::config`, one TOML file for the collector's settings, deadlines, SLA rules,
//!   sampling and tracing (and the export and alert settings `laptime rules` generates Prometheus
//!   rules and a Grafana dashboard from), with errors that name the key and the line (implies
//!   `trace`).
//! * `report`: `laptime::report`, a self-contained HTML report of a profile (and a baseline) with
//!   percentile-distribution plots, and the plots as SVG or PNG (implies `profile`).
//!
//! With `profile` or `trace`, `laptime::fs` holds the one rule every file is written by (a
//! symlink followed, a device or FIFO written through and never replaced, a regular file
//! replaced whole by a rename), for tools that write beside the library.
//!
//! The `laptime` command-line tool (package `laptime-cli`) gates a profile against a baseline,
//! merges profiles and draws reports.
//!
//! # Caveats
//!
//! * One collector is current per process; stage names and their switches are process-wide.
//! * Ticks are converted with a calibration refined as the process runs; the first 10 ms of the
//!   aggregator calibrate the TSC.
//! * Stopping a collector loses nothing: a span admitted before the stop is in the final snapshot
//!   or, if it ends after the stop, counted as dropped (on Linux by `membarrier(2)`; elsewhere a
//!   fence and a 1 ms pause make it exact in practice, not by proof).
#![deny(unsafe_code)]
#![deny(missing_docs)]
// The two modules that read the TSC and own the ring's slots opt back in, each with a SAFETY line
// on every block.
#![cfg_attr(not(laptime_loom), doc(test(attr(deny(warnings)))))]

// Under `--cfg laptime_loom` only the loom-checked core builds (`tests/loom.rs`): the ring, the
// ring handoff and the sync shim. The rest uses std primitives and statics that loom cannot run.
#[cfg(not(laptime_loom))]
mod aggregator;
#[cfg(not(laptime_loom))]
mod barrier;
#[cfg(not(laptime_loom))]
pub mod clock;
#[cfg(not(laptime_loom))]
mod collector;
#[cfg(all(not(laptime_loom), feature = "config"))]
pub mod config;
#[cfg(not(laptime_loom))]
mod error;
#[cfg(not(laptime_loom))]
pub mod exponential;
#[cfg(all(not(laptime_loom), any(feature = "prometheus", feature = "http")))]
pub mod export;
#[cfg(not(laptime_loom))]
pub mod family;
#[cfg(not(laptime_loom))]
pub mod fmt;
#[cfg(all(not(laptime_loom), any(feature = "profile", feature = "trace")))]
pub mod fs;
#[cfg(laptime_loom)]
pub mod handoff;
#[cfg(not(laptime_loom))]
mod handoff;
#[cfg(not(laptime_loom))]
mod hist;
#[cfg(not(laptime_loom))]
mod instrument;
#[cfg(not(laptime_loom))]
pub mod limits;
#[cfg(all(not(laptime_loom), feature = "profile"))]
pub mod profile;
#[cfg(not(laptime_loom))]
mod prom_name;
#[cfg(not(laptime_loom))]
mod record;
#[cfg(not(laptime_loom))]
mod recorder;
#[cfg(all(not(laptime_loom), feature = "report"))]
pub mod report;
pub mod ring;
#[cfg(not(laptime_loom))]
pub mod sink;
#[cfg(not(laptime_loom))]
mod sla;
#[cfg(not(laptime_loom))]
mod stage;
#[cfg(not(laptime_loom))]
mod stats;
mod sync;
#[cfg(all(not(laptime_loom), feature = "trace"))]
pub mod trace;

#[cfg(not(laptime_loom))]
pub use collector::{
    AdaptiveSampling, Collector, CollectorBuilder, CollectorHandle, IntoStageQuery, SlaCallback,
    WindowSpec, check_sla_violations, flush, get_all_stats, get_stats, health, snapshot,
};
#[cfg(not(laptime_loom))]
pub use error::{ConfigError, InstallError, InstallErrorKind, SeriesError, SinkError, StageError};
#[cfg(not(laptime_loom))]
pub use family::{Destination, Family, FamilyOptions, LabelValue, LabelValues, Rank};
#[cfg(not(laptime_loom))]
pub use limits::{MAX_RING_CAPACITY, MAX_SLICES_PER_WINDOW};
#[cfg(not(laptime_loom))]
pub use recorder::{
    Lap, SpanGuard, SpanToken, is_enabled, lap, record, record_end, record_start, sampling_rate,
    set_enabled, set_sampling_rate, start,
};
#[cfg(not(laptime_loom))]
pub use sla::{
    CLEAR_BELOW, MAX_TRIP_REASONS, Metric, Severity, SlaPreset, SlaRule, TripReason, Value,
    Violation, presets, record_trip,
};
#[cfg(not(laptime_loom))]
#[allow(deprecated)]
pub use sla::{GuardReason, MAX_GUARD_REASONS, guard_trip};
#[cfg(not(laptime_loom))]
#[allow(deprecated)]
pub use stage::LatencyGuard;
#[cfg(not(laptime_loom))]
pub use stage::{
    DEFAULT_MAX_STAGES, IntoStage, Labels, LatencyBreaker, MAX_NAME_LEN, MAX_STAGES_LIMIT, Stage,
};
#[cfg(not(laptime_loom))]
#[allow(deprecated)]
pub use stats::GuardTrips;
#[cfg(not(laptime_loom))]
pub use stats::{
    CorrectedStats, Distribution, Health, Snapshot, StageSnapshotIter, StageStats, TripCounts,
    Window,
};

#[cfg(not(laptime_loom))]
pub use instrument::StageEnum;
/// ARCHITECTURE.md's examples, run as doc tests so the "adding a sink" example cannot rot.
#[cfg(all(doctest, not(laptime_loom)))]
#[doc = include_str!("../ARCHITECTURE.md")]
pub struct ArchitectureDoctests;

#[cfg(not(laptime_loom))]
#[doc = include_str!("../docs/derive_stage.md")]
pub use laptime_macros::Stage;
#[cfg(not(laptime_loom))]
#[doc = include_str!("../docs/measure.md")]
pub use laptime_macros::measure;
#[cfg(not(laptime_loom))]
#[doc = include_str!("../docs/measure_all.md")]
pub use laptime_macros::measure_all;
#[cfg(not(laptime_loom))]
#[doc = include_str!("../docs/measure_block.md")]
// Not `measure!`: attribute and function-like macros share one namespace, and a `macro_rules!`
// that is both (`attr(..)` arms) is unstable in Rust 1.95 (E0658).
pub use laptime_macros::measure_block;
#[cfg(not(laptime_loom))]
/// Leaves a function out of [`macro@measure_all`]. On its own it does nothing.
pub use laptime_macros::skip;

/// Whether instrumentation is compiled in (the `enable` feature, on by default). When `false`,
/// every recording entry point returns at once, collectors start no thread, and the macros leave
/// their items as written.
pub const COMPILED_IN: bool = cfg!(feature = "enable");

/// What the instrumentation macros expand to. Not part of the API: names here may change in any
/// release.
#[doc(hidden)]
#[cfg(not(laptime_loom))]
pub mod __private {
    pub use crate::instrument::{
        AsyncSpan, CallSite, FamilySite, MethodSite, Outcome, OutcomeSpan, PollTimer,
    };
}

/// Trips of every reason over `window`, from the current collector's latest snapshot.
#[cfg(not(laptime_loom))]
pub fn trip_counts(window: Window) -> Vec<(&'static str, u64)> {
    snapshot()
        .map(|s| s.trip_counts(window))
        .unwrap_or_default()
}

/// Trips `reason` when `condition` holds and returns `condition`: `if record_trip_if(vol > max,
/// "vol_hard") { return; }`.
#[inline]
#[cfg(not(laptime_loom))]
pub fn record_trip_if(condition: bool, reason: &'static str) -> bool {
    if condition {
        record_trip(reason);
    }
    condition
}

/// Renamed [`trip_counts`].
#[deprecated(since = "0.2.0", note = "renamed `trip_counts`")]
#[cfg(not(laptime_loom))]
pub fn guard_trips(window: Window) -> Vec<(&'static str, u64)> {
    trip_counts(window)
}

/// Renamed [`record_trip_if`].
#[deprecated(since = "0.2.0", note = "renamed `record_trip_if`")]
#[inline]
#[cfg(not(laptime_loom))]
pub fn guard_trip_if(condition: bool, reason: &'static str) -> bool {
    record_trip_if(condition, reason)
}

/// The exact nearest-rank definition every percentile here follows: the rank of quantile `q` among
/// `n` sorted values is ⌈q·n⌉ (at least 1), with products within 1e-9 of an integer taken as that
/// integer. Tests compare reported percentiles with `sorted[rank(q, n) - 1]`.
#[cfg(not(laptime_loom))]
pub fn rank(q: f64, n: u64) -> u64 {
    hist::rank(q, n)
}

/// The README's and the guides' examples (`docs/`), compiled and run as doc tests so they cannot
/// drift from the API (with every feature on, as `scripts/test.sh` runs them: some show the
/// optional exports).
#[cfg(all(
    doctest,
    feature = "prometheus",
    feature = "http",
    feature = "test-util"
))]
pub mod doc_examples {
    #[doc = include_str!("../README.md")]
    pub struct ReadmeExamples;

    #[doc = include_str!("../docs/guide.md")]
    pub struct GuideExamples;

    #[doc = include_str!("../docs/export.md")]
    pub struct ExportExamples;

    #[doc = include_str!("../docs/traces.md")]
    pub struct TracesExamples;
}
