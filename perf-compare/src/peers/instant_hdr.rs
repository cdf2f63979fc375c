//! The do-it-yourself baseline: a `std::time::Instant` pair around the work and a **thread-local**
//! hdrhistogram per stage (no lock, no atomic on the hot path). A thread merges its histograms
//! into the process-wide ones (behind a mutex) when it calls `flush` and when it exits; the
//! report reads the process-wide ones. So samples of a thread that is still running and has not
//! flushed are not reportable yet: the harness' worker threads have exited before the final count.

use std::cell::RefCell;
use std::sync::Mutex;

use hdrhistogram::Histogram;

use super::{STAGES, hdr_histogram, hdr_reported, stage_index};
use crate::peer::{Peer, Reported};

pub static PEER: Peer = Peer {
    name: "instant+hdrhistogram",
    setup,
    empty_span,
    tick,
    spin_span,
    record_value,
    flush,
    report,
};

/// The merged histograms, one per stage of [`STAGES`].
static MERGED: Mutex<Vec<Histogram<u64>>> = Mutex::new(Vec::new());

/// This thread's histograms; merged into [`MERGED`] when dropped (at thread exit).
struct Local(Vec<Histogram<u64>>);

impl Drop for Local {
    fn drop(&mut self) {
        merge(&mut self.0);
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local(STAGES.iter().map(|_| hdr_histogram()).collect()));
}

fn merge(local: &mut [Histogram<u64>]) {
    let mut merged = MERGED.lock().unwrap_or_else(|e| e.into_inner());
    for (m, l) in merged.iter_mut().zip(local.iter_mut()) {
        m.add(&*l).expect("same bounds");
        l.reset();
    }
}

#[inline]
fn record(stage: usize, ns: u64) {
    LOCAL.with(|l| l.borrow_mut().0[stage].saturating_record(ns));
}

fn setup() {
    *MERGED.lock().unwrap_or_else(|e| e.into_inner()) =
        STAGES.iter().map(|_| hdr_histogram()).collect();
}

// The same std-clock workloads as the other hdrhistogram row: only `record` differs.
super::instant_timed_workloads!(record);

fn flush() {
    LOCAL.with(|l| merge(&mut l.borrow_mut().0));
}

fn report(stage: &str) -> Reported {
    let merged = MERGED.lock().unwrap_or_else(|e| e.into_inner());
    match stage_index(stage) {
        Some(i) => hdr_reported(&merged[i]),
        None => Reported::default(),
    }
}
