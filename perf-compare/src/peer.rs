//! What every library under comparison provides. Each peer is a module in `src/peers/` exposing
//! one `pub static PEER: Peer`, and the harness only ever calls through these function pointers:
//! the baseline (a bare TSC pair) is called the same way, so the indirect call costs every row
//! alike and ratios stay fair. Each peer runs in its own process (`perf-compare --peer NAME`), so
//! no global recorder, collector or subscriber leaks between them.

/// What a library reports for one stage after [`Peer::flush`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reported {
    /// Samples the library can report (its histogram's count). `None`: it cannot say.
    pub count: Option<u64>,
    /// Its p50, p99 and p99.9 in nanoseconds. `None`: it cannot report that percentile.
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub p999_ns: Option<u64>,
}

/// One library, as plain function pointers.
pub struct Peer {
    /// Row name in the table, e.g. "laptime", "hotpath", "metrics+prometheus-exporter".
    pub name: &'static str,
    /// Installs recorders / collectors / subscribers. Called once, first, on the main thread.
    pub setup: fn(),
    /// One measured span of stage "span" around nothing: the per-span cost. Called in tight
    /// loops, on one or two threads at once.
    pub empty_span: fn(),
    /// One tick: stages "fetch", "spread", "guards", "emit" in sequence, each timed the way the
    /// library's users would time sequential stages, the i-th stage running `work(i)`.
    pub tick: fn(work: fn(usize)),
    /// One span of stage "spin" around `spin(ns)`: the accuracy workload for libraries that only
    /// time what runs inside them.
    pub spin_span: fn(ns: u64),
    /// Records a known duration into stage "value" when the library accepts values; returns
    /// false (and records nothing) when it does not.
    pub record_value: fn(ns: u64) -> bool,
    /// Makes everything recorded so far reportable (drains, flushes, collects); may block.
    pub flush: fn(),
    /// What the library reports for `stage` ("span", "spin", "value", or a tick stage).
    pub report: fn(stage: &str) -> Reported,
}

/// Spins on the TSC until `ns` nanoseconds have passed (converted with the harness' calibrated
/// rate): the simulated work of ticks and the accuracy workload.
pub fn spin(ns: u64) {
    crate::clock::spin_ns(ns)
}
