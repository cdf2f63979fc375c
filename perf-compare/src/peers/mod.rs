//! The registry of libraries under comparison: one module per library, each with a
//! `pub static PEER: crate::peer::Peer`, listed in [`all`] in table order.

use crate::peer::{Peer, Reported};

pub mod hdr_sync;
pub mod instant_hdr;
pub mod laptime;
pub mod tsc_pair;

// peers (added by the peers helper): one `pub mod NAME;` line each, here.
pub mod fastrace;
// hotpath's macros declare `#[export_name]` statics, which the crate's `deny(unsafe_code)`
// reports; no unsafe code is written in that module.
#[allow(unsafe_code)]
pub mod hotpath;
pub mod metrics_prom;
pub mod prometheus_crate;
pub mod tracing_timing;

/// Every library, in the order of the table's rows: the baseline first, then laptime, then the
/// others.
pub fn all() -> Vec<&'static Peer> {
    vec![
        &tsc_pair::PEER,
        &laptime::PEER,
        &instant_hdr::PEER,
        &hdr_sync::PEER,
        // peers (added by the peers helper): one `&NAME::PEER,` line each, here.
        &hotpath::PEER,
        &fastrace::PEER,
        &metrics_prom::PEER,
        &prometheus_crate::PEER,
        &prometheus_crate::PEER_LOCAL,
        &tracing_timing::PEER,
    ]
}

/// The library whose row is called `name`.
pub fn find(name: &str) -> Option<&'static Peer> {
    all().into_iter().find(|p| p.name == name)
}

/// Every stage the workloads record, in a fixed order (for peers that keep one histogram each).
pub const STAGES: [&str; 7] = ["span", "fetch", "spread", "guards", "emit", "spin", "value"];

/// The workloads of a peer that times with std's `Instant` and hands each duration to
/// `$record(index into STAGES, ns)`: the two hdrhistogram rows, which differ only in how they
/// record. Defines `empty_span`, `tick`, `spin_span` and `record_value`.
macro_rules! instant_timed_workloads {
    ($record:ident) => {
        fn elapsed_ns(from: std::time::Instant, to: std::time::Instant) -> u64 {
            u64::try_from((to - from).as_nanos()).unwrap_or(u64::MAX)
        }

        fn empty_span() {
            let start = std::time::Instant::now();
            $record(
                crate::peers::SPAN,
                elapsed_ns(start, std::time::Instant::now()),
            );
        }

        fn tick(work: fn(usize)) {
            let mut from = std::time::Instant::now();
            for (i, &stage) in crate::peers::TICK.iter().enumerate() {
                work(i);
                let now = std::time::Instant::now();
                $record(stage, elapsed_ns(from, now));
                from = now;
            }
        }

        fn spin_span(ns: u64) {
            let start = std::time::Instant::now();
            crate::peer::spin(ns);
            $record(
                crate::peers::SPIN,
                elapsed_ns(start, std::time::Instant::now()),
            );
        }

        fn record_value(ns: u64) -> bool {
            $record(crate::peers::VALUE, ns);
            true
        }
    };
}
pub(crate) use instant_timed_workloads;

/// Indices into [`STAGES`]: the span's, the tick's four stages', the spins' and the values'.
pub const SPAN: usize = 0;
pub const TICK: [usize; 4] = [1, 2, 3, 4];
pub const SPIN: usize = 5;
pub const VALUE: usize = 6;

/// The index of `stage` in [`STAGES`].
pub fn stage_index(stage: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == stage)
}

/// An HDR histogram with laptime's default range and precision (1 ns – 1 h, 3 significant
/// digits), allocated once, never resized: recording into it never allocates.
pub fn hdr_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("valid histogram bounds")
}

/// What an HDR histogram reports: its count and its p50 / p99 / p99.9 (`None` when empty).
pub fn hdr_reported(h: &hdrhistogram::Histogram<u64>) -> Reported {
    let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
    Reported {
        count: Some(h.len()),
        p50_ns: q(0.5),
        p99_ns: q(0.99),
        p999_ns: q(0.999),
    }
}
