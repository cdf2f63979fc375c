//! hdrhistogram's own multi-threaded recorder (`sync` feature), used as its docs describe: one
//! `SyncHistogram` per stage on the reading side, one `Recorder` per writing thread (here in a
//! thread-local, cloned on first use from an idle prototype so the prototype never holds up a
//! phase shift), a `std::time::Instant` pair per span.
//!
//! `flush` (on the reading thread) first hands in the calling thread's own recorders (dropping a
//! recorder sends its samples), then `refresh_timeout`s every stage. A `Recorder` sends its
//! samples only on its next write after the phase shift (or when dropped): a thread that is idle
//! while the reader refreshes holds the refresh up until the timeout, and its samples arrive at a
//! later refresh. That is the library's design, and why `refresh` (without timeout) would hang
//! the harness while its worker threads wait at a barrier.

use std::cell::RefCell;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::sync::{IdleRecorder, Recorder, SyncHistogram};

use super::{STAGES, hdr_histogram, hdr_reported, stage_index};
use crate::peer::{Peer, Reported};

pub static PEER: Peer = Peer {
    name: "hdrhistogram-sync",
    setup,
    empty_span,
    tick,
    spin_span,
    record_value,
    flush,
    report,
};

/// How long a refresh waits for recorders that do not write.
const REFRESH_TIMEOUT: Duration = Duration::from_millis(20);

/// The reading side, one per stage of [`STAGES`].
static READERS: Mutex<Vec<SyncHistogram<u64>>> = Mutex::new(Vec::new());
/// Idle recorders that threads clone theirs from.
static PROTOTYPES: OnceLock<Mutex<Vec<Prototype>>> = OnceLock::new();

type Prototype = IdleRecorder<Recorder<u64>, u64>;

thread_local! {
    /// This thread's recorders, each made on the thread's first record of its stage (a recorder
    /// is a full histogram: 270 KB at this range and precision).
    static RECORDERS: RefCell<[Option<Recorder<u64>>; STAGES.len()]> =
        const { RefCell::new([const { None }; STAGES.len()]) };
}

fn setup() {
    let readers: Vec<SyncHistogram<u64>> =
        STAGES.iter().map(|_| hdr_histogram().into_sync()).collect();
    let prototypes = readers.iter().map(|r| r.recorder().into_idle()).collect();
    *READERS.lock().unwrap_or_else(|e| e.into_inner()) = readers;
    let _ = PROTOTYPES.set(Mutex::new(prototypes));
}

#[inline]
fn record(stage: usize, ns: u64) {
    RECORDERS.with(|r| {
        let mut r = r.borrow_mut();
        let recorder = r[stage].get_or_insert_with(|| {
            let prototypes = PROTOTYPES.get().expect("setup ran").lock();
            prototypes.unwrap_or_else(|e| e.into_inner())[stage].recorder()
        });
        recorder.saturating_record(ns);
    });
}

// The same std-clock workloads as the other hdrhistogram row: only `record` differs.
super::instant_timed_workloads!(record);

fn flush() {
    // The reader would otherwise wait for this thread's own recorders, which cannot write while
    // it waits; dropping them sends their samples (the next record clones new ones).
    RECORDERS.with(|r| r.borrow_mut().iter_mut().for_each(|r| drop(r.take())));
    for reader in READERS.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
        reader.refresh_timeout(REFRESH_TIMEOUT);
    }
}

fn report(stage: &str) -> Reported {
    let readers = READERS.lock().unwrap_or_else(|e| e.into_inner());
    match stage_index(stage) {
        // `SyncHistogram` derefs to the merged `Histogram`.
        Some(i) => hdr_reported(&readers[i]),
        None => Reported::default(),
    }
}
