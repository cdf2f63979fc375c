//! The prometheus crate (default features off), in two rows, each its own process:
//!
//! * `prometheus` — the shared `Histogram` (atomics, usable from any thread) timed with
//!   `start_timer()` → `observe_duration()` (std `Instant`, 2 reads per span), known values with
//!   `observe`;
//! * `prometheus-local` — each thread's `local()` copy of the same histograms (plain counters,
//!   no atomics), timed with its `observe_closure_duration`, flushed into the shared histogram at
//!   the end: by `flush` on the calling thread, and when the thread-local copies drop at thread
//!   exit on the others (a `LocalHistogram` flushes on drop). Not `LocalHistogram::start_timer`:
//!   its timer records into a fresh clone that flushes (atomics) and frees on every span.
//!
//! The histograms are one `HistogramVec` with a `stage` label in the default registry, each
//! stage's child resolved once. The crate's default buckets (5 ms … 10 s) cannot tell
//! nanoseconds apart, so they are what a user timing a hot path would pick instead:
//! `exponential_buckets(10 ns, ×2, 31)`, 10 ns … 10.7 s.
//!
//! A Prometheus histogram keeps only bucket counts: `report` computes p50/p99/p99.9 from the
//! gathered buckets the way PromQL's `histogram_quantile` does (linear interpolation inside the
//! bucket holding the rank, 0 as the first bucket's lower edge, the highest finite bound when the
//! rank falls in +Inf). With ×2 buckets that can be off by up to half a bucket's width.

use std::cell::RefCell;
use std::sync::OnceLock;

use prometheus::{Histogram, HistogramOpts, local::LocalHistogram};

use crate::peer::{Peer, Reported};

pub static PEER: Peer = Peer {
    name: "prometheus",
    setup,
    empty_span,
    tick,
    spin_span,
    record_value,
    flush: flush_shared,
    report,
};

pub static PEER_LOCAL: Peer = Peer {
    name: "prometheus-local",
    setup,
    empty_span: local_empty_span,
    tick: local_tick,
    spin_span: local_spin_span,
    record_value: local_record_value,
    flush: local_flush,
    report,
};

const METRIC: &str = "perf_compare_stage_seconds";
/// `[span, spin, value, fetch, spread, guards, emit]`, in this order.
const STAGES: [&str; 7] = ["span", "spin", "value", "fetch", "spread", "guards", "emit"];
const SPAN: usize = 0;
const SPIN: usize = 1;
const VALUE: usize = 2;
const TICK: usize = 3;

static HISTS: OnceLock<[Histogram; 7]> = OnceLock::new();

fn setup() {
    HISTS.get_or_init(|| {
        let buckets = prometheus::exponential_buckets(10e-9, 2.0, 31).expect("valid buckets");
        let vec = prometheus::register_histogram_vec!(
            HistogramOpts::new(METRIC, "Stage duration in seconds.").buckets(buckets),
            &["stage"]
        )
        .expect("register the histogram");
        STAGES.map(|s| vec.with_label_values(&[s]))
    });
}

fn hists() -> &'static [Histogram; 7] {
    HISTS.get().expect("setup ran")
}

fn empty_span() {
    hists()[SPAN].start_timer().observe_duration();
}

fn tick(work: fn(usize)) {
    let h = hists();
    for i in 0..4 {
        let timer = h[TICK + i].start_timer();
        work(i);
        timer.observe_duration();
    }
}

fn spin_span(ns: u64) {
    let timer = hists()[SPIN].start_timer();
    crate::peer::spin(ns);
    timer.observe_duration();
}

fn record_value(ns: u64) -> bool {
    hists()[VALUE].observe(ns as f64 / 1e9);
    true
}

/// Every `observe` lands in the shared histogram at once: nothing to flush.
fn flush_shared() {}

thread_local! {
    /// This thread's local copies; each flushes into its histogram when dropped at thread exit.
    static LOCAL: RefCell<Option<[LocalHistogram; 7]>> = const { RefCell::new(None) };
}

#[inline]
fn with_local<R>(f: impl FnOnce(&[LocalHistogram; 7]) -> R) -> R {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        f(l.get_or_insert_with(|| hists().each_ref().map(|h| h.local())))
    })
}

fn local_empty_span() {
    with_local(|l| l[SPAN].observe_closure_duration(|| ()));
}

fn local_tick(work: fn(usize)) {
    with_local(|l| {
        for i in 0..4 {
            l[TICK + i].observe_closure_duration(|| work(i));
        }
    });
}

fn local_spin_span(ns: u64) {
    with_local(|l| l[SPIN].observe_closure_duration(|| crate::peer::spin(ns)));
}

fn local_record_value(ns: u64) -> bool {
    with_local(|l| l[VALUE].observe(ns as f64 / 1e9));
    true
}

fn local_flush() {
    with_local(|l| l.iter().for_each(LocalHistogram::flush));
}

/// Gathers the default registry, as an exporter would, and reads `stage`'s buckets.
fn report(stage: &str) -> Reported {
    let families = prometheus::gather();
    let Some(metric) = families
        .iter()
        .filter(|f| f.name() == METRIC)
        .flat_map(|f| f.get_metric())
        .find(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "stage" && l.value() == stage)
        })
    else {
        return Reported::default();
    };
    let h = metric.get_histogram();
    let count = h.get_sample_count();
    let buckets: Vec<(f64, u64)> = h
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    let q = |q: f64| histogram_quantile(q, &buckets, count).map(|s| (s * 1e9).round() as u64);
    Reported {
        count: Some(count),
        p50_ns: q(0.5),
        p99_ns: q(0.99),
        p999_ns: q(0.999),
    }
}

/// PromQL's `histogram_quantile` over cumulative `(upper bound, count)` buckets (finite bounds,
/// ascending) and the total `count` (the +Inf bucket).
fn histogram_quantile(q: f64, buckets: &[(f64, u64)], count: u64) -> Option<f64> {
    if count == 0 || buckets.is_empty() {
        return None;
    }
    let rank = q * count as f64;
    let Some(b) = buckets.iter().position(|&(_, c)| c as f64 >= rank) else {
        // The rank is in +Inf: Prometheus answers with the highest finite bound.
        return Some(buckets[buckets.len() - 1].0);
    };
    let (start, below) = if b == 0 { (0.0, 0) } else { buckets[b - 1] };
    let (end, upto) = buckets[b];
    let in_bucket = (upto - below) as f64;
    if in_bucket == 0.0 {
        return Some(end);
    }
    Some(start + (end - start) * (rank - below as f64) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::histogram_quantile;

    #[test]
    fn interpolates_like_promql() {
        // 10 samples ≤ 1, 10 more in (1, 2], none above.
        let b = [(1.0, 10), (2.0, 20), (4.0, 20)];
        assert_eq!(histogram_quantile(0.25, &b, 20), Some(0.5));
        assert_eq!(histogram_quantile(0.75, &b, 20), Some(1.5));
        // Ranks in +Inf give the highest finite bound.
        assert_eq!(histogram_quantile(0.99, &[(1.0, 1)], 10), Some(1.0));
        assert_eq!(histogram_quantile(0.5, &b, 0), None);
    }
}
