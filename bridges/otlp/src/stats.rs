//! What the exporter counted: written by the aggregator (batches handed over) and the export
//! thread (sends), read by [`crate::OtlpExporter::stats`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The exporter's figures since it started: plain data, cumulative.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtlpStats {
    /// Batches the sink handed to the export thread (one per export period, and a last one when
    /// the collector stops).
    pub batches_queued: u64,
    /// Batches lost to a full queue (the oldest queued one goes; the newest carries its counts,
    /// since every batch is cumulative).
    pub batches_dropped: u64,
    /// Batches not sent because a newer one was queued by the time the thread was free.
    pub batches_superseded: u64,
    /// Requests the endpoint answered with a 2xx status.
    pub exports_ok: u64,
    /// Data points the endpoint rejected in requests it otherwise took (OTLP's partial success).
    pub points_rejected: u64,
    /// Requests that failed: refused, timed out, not HTTP, or answered with another status.
    pub exports_failed: u64,
    /// The last failure, as text (cleared by nothing: compare `exports_failed` to see if it is new).
    pub last_error: Option<String>,
}

/// Each figure a relaxed atomic: they are independent counts, read for display, and no other
/// memory is published through them.
#[derive(Default)]
pub(crate) struct Counters {
    queued: AtomicU64,
    dropped: AtomicU64,
    superseded: AtomicU64,
    ok: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn add_queued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_superseded(&self, n: u64) {
        self.superseded.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_ok(&self, rejected_points: u64) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.rejected.fetch_add(rejected_points, Ordering::Relaxed);
    }

    /// Only the export thread calls this, and `stats` copies the text: never the aggregator.
    pub(crate) fn add_failed(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> OtlpStats {
        OtlpStats {
            batches_queued: self.queued.load(Ordering::Relaxed),
            batches_dropped: self.dropped.load(Ordering::Relaxed),
            batches_superseded: self.superseded.load(Ordering::Relaxed),
            exports_ok: self.ok.load(Ordering::Relaxed),
            points_rejected: self.rejected.load(Ordering::Relaxed),
            exports_failed: self.failed.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
