//! The trace-file writer: a named thread fed through a bounded queue, so the aggregator hands a
//! file over in a `try_send` and never waits on a disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::WRITE_QUEUE;

#[derive(Debug, Default)]
struct Counts {
    written: AtomicU64,
    errors: AtomicU64,
    /// Files handed over and not yet written (or failed): at least the queue's length, since the
    /// thread counts a file down only after writing it, so `queued < WRITE_QUEUE` means a
    /// `try_send` will find room.
    queued: AtomicUsize,
}

/// Owns the writer thread: dropping it closes the queue, lets the thread write what was queued,
/// and joins it.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: Option<SyncSender<(PathBuf, String)>>,
    join: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
    /// Files not handed over: the queue was full (or the thread gone).
    skipped: u64,
}

impl Writer {
    pub(crate) fn spawn(generation: u64) -> std::io::Result<Self> {
        let (queue, jobs) = sync_channel::<(PathBuf, String)>(WRITE_QUEUE);
        let counts = Arc::new(Counts::default());
        let for_thread = counts.clone();
        let join = std::thread::Builder::new()
            .name(format!("laptime-trace-writer-{generation}"))
            .spawn(move || {
                for (path, text) in jobs {
                    let counter = match crate::fs::write_file(&path, text.as_bytes()) {
                        Ok(()) => &for_thread.written,
                        Err(_) => &for_thread.errors,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    // Relaxed: only a count; the channel orders the files themselves.
                    for_thread.queued.fetch_sub(1, Ordering::Relaxed);
                }
            })?;
        Ok(Self {
            queue: Some(queue),
            join: Some(join),
            counts,
            skipped: 0,
        })
    }

    /// Queues the text `text()` makes for `path`, or counts the file as skipped, without calling
    /// `text`, if the writer is [`WRITE_QUEUE`] files behind: when the disk is slow, the
    /// aggregator should not serialise traces that are then thrown away.
    pub(crate) fn submit(&mut self, path: PathBuf, text: impl FnOnce() -> String) {
        let sent = self.queue.as_ref().is_some_and(|q| {
            if self.counts.queued.load(Ordering::Relaxed) >= WRITE_QUEUE {
                return false;
            }
            // Counted up before the send, so the thread never counts a file down first.
            self.counts.queued.fetch_add(1, Ordering::Relaxed);
            let sent = q.try_send((path, text())).is_ok();
            if !sent {
                self.counts.queued.fetch_sub(1, Ordering::Relaxed);
            }
            sent
        });
        self.skipped += u64::from(!sent);
    }

    /// (written, failed, skipped) so far.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        (
            self.counts.written.load(Ordering::Relaxed),
            self.counts.errors.load(Ordering::Relaxed),
            self.skipped,
        )
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_full_queue_skips_the_file_without_making_its_text() {
        // A writer whose thread never drains: the receiver is held here, unread.
        let (queue, _jobs) = sync_channel::<(PathBuf, String)>(WRITE_QUEUE);
        let mut writer = Writer {
            queue: Some(queue),
            join: None,
            counts: Arc::default(),
            skipped: 0,
        };
        let made = Cell::new(0);
        for n in 0..WRITE_QUEUE + 3 {
            writer.submit(PathBuf::from(format!("trace_{n}.json")), || {
                made.set(made.get() + 1);
                String::new()
            });
        }
        assert_eq!(made.get(), WRITE_QUEUE, "texts made only for files queued");
        assert_eq!(writer.counts(), (0, 0, 3));
    }
}
