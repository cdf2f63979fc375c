//! `#[measure(polls)]` on an `async fn`: besides its wall time (first poll to completion), the
//! time it spent being polled and how long it waited to be polled after each wake.
//!
//! The wall time of an async call mixes the task's own work with the time it sat ready in the
//! runtime's queue, or waited for I/O. Three more stages tell them apart:
//! - `<stage>.busy`: per call, the sum of its polls (the CPU time the call took on its threads);
//! - `<stage>.poll`: every poll (its count is the number of polls; a long one blocked its worker);
//! - `<stage>.wake_to_poll`: from each wake to the poll it caused (scheduling delay; the first
//!   poll has none).
//!
//! The wake time is taken by a waker wrapped around the runtime's: a small shared cell, reused
//! while the runtime's waker stays the same, and kept in a per-thread pool between calls (the
//! same task's cell even while a resource still holds it), so a steady stream of calls
//! allocates nothing once the pool is warm.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use crate::clock::ticks;
use crate::recorder::{record_between, recording};
use crate::stage::IntoStage;

/// The runtime's waker, and when it was last woken through the wrapper (0: not since the last
/// poll).
#[derive(Debug)]
struct WakeCell {
    woken_at: AtomicU64,
    waker: Waker,
}

impl Wake for WakeCell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The first wake since the last poll is the one the delay runs from: later ones (a timer
        // and a channel both firing) find the task already woken. Relaxed: the poll that reads
        // it was scheduled by the wake below, which orders it.
        let _ =
            self.woken_at
                .compare_exchange(0, ticks().max(1), Ordering::Relaxed, Ordering::Relaxed);
        self.waker.wake_by_ref();
    }
}

/// Cells of finished calls, for the next calls on this thread.
const POOL: usize = 16;

thread_local! {
    static CELLS: RefCell<Vec<Arc<WakeCell>>> = const { RefCell::new(Vec::new()) };
}

/// A cell wrapping `waker`, from this thread's pool when it has one that fits: the same task's
/// cell (a resource such as a channel may still hold it from the last call: its wakes are this
/// task's all the same), else one nothing else holds, rewrapped. Otherwise a new one.
fn cell_for(waker: &Waker) -> Arc<WakeCell> {
    let pooled = CELLS
        .try_with(|c| {
            let mut pool = c.try_borrow_mut().ok()?;
            let at = (pool.iter().position(|cell| cell.waker.will_wake(waker)))
                .or_else(|| pool.iter().position(|cell| Arc::strong_count(cell) == 1))?;
            Some(pool.swap_remove(at))
        })
        .ok()
        .flatten();
    if let Some(mut cell) = pooled {
        if let Some(unique) = Arc::get_mut(&mut cell) {
            unique.waker.clone_from(waker);
            *unique.woken_at.get_mut() = 0;
            return cell;
        }
        if cell.waker.will_wake(waker) {
            cell.woken_at.store(0, Ordering::Relaxed);
            return cell;
        }
    }
    Arc::new(WakeCell {
        woken_at: AtomicU64::new(0),
        waker: waker.clone(),
    })
}

/// Back to this thread's pool (when it has room). A cell nothing else holds lets go of the
/// runtime's waker first, so the pool keeps no finished task alive.
fn release(mut cell: Arc<WakeCell>) {
    if let Some(unique) = Arc::get_mut(&mut cell) {
        unique.waker = Waker::noop().clone();
    }
    let _ = CELLS.try_with(|c| {
        if let Ok(mut pool) = c.try_borrow_mut()
            && pool.len() < POOL
        {
            // Room for the whole pool at once: it never grows on a later call.
            let room = POOL - pool.len();
            pool.reserve_exact(room);
            pool.push(cell);
        }
    });
}

/// Times one call's polls; made by the expansion of `#[measure(polls)]`, which polls the body
/// through [`PollTimer::poll`] and calls [`PollTimer::finish`] when it completes.
#[derive(Debug)]
pub struct PollTimer<S> {
    busy: S,
    poll: S,
    wake_to_poll: S,
    busy_ticks: u64,
    /// A poll was timed (recording was on): the call has a busy time.
    timed: bool,
    /// The wrapper around the runtime's current waker, and the waker made of it.
    wrapper: Option<(Arc<WakeCell>, Waker)>,
}

impl<S: IntoStage + Copy> PollTimer<S> {
    /// A call's timer, recording into the three stages of the function's call sites.
    pub fn new(busy: S, poll: S, wake_to_poll: S) -> Self {
        Self {
            busy,
            poll,
            wake_to_poll,
            busy_ticks: 0,
            timed: false,
            wrapper: None,
        }
    }

    /// Polls `future` once, timed, with a waker that notes when it is woken.
    pub fn poll<F: Future>(
        &mut self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        if !recording() {
            return future.poll(cx);
        }
        let start = ticks();
        let waker = self.wrapped(cx.waker(), start);
        let result = future.poll(&mut Context::from_waker(waker));
        let end = ticks();
        self.busy_ticks = self.busy_ticks.saturating_add(end.saturating_sub(start));
        self.timed = true;
        record_between(self.poll, start, end);
        result
    }

    /// The wrapped waker for this poll, starting at `now`: the same as last poll's while the
    /// runtime's waker is. A wake since the last poll is recorded as its delay.
    fn wrapped(&mut self, runtime: &Waker, now: u64) -> &Waker {
        if let Some((cell, waker)) = self
            .wrapper
            .take_if(|(cell, _)| !cell.waker.will_wake(runtime))
        {
            note_wake(self.wake_to_poll, &cell, now);
            drop(waker);
            release(cell);
        }
        let (cell, waker) = self.wrapper.get_or_insert_with(|| {
            let cell = cell_for(runtime);
            let waker = Waker::from(cell.clone());
            (cell, waker)
        });
        note_wake(self.wake_to_poll, cell, now);
        waker
    }

    /// The body completed: records the call's busy time, ending now (if any poll was timed).
    pub fn finish(self) {
        if self.timed {
            let end = ticks();
            record_between(self.busy, end.saturating_sub(self.busy_ticks), end);
        }
    }
}

/// Records the wake `cell` saw since the last poll, if any, as a delay ending `now`.
fn note_wake(stage: impl IntoStage, cell: &WakeCell, now: u64) {
    let woken_at = cell.woken_at.swap(0, Ordering::Relaxed);
    if woken_at != 0 {
        // A wake read on another core's clock may be a few ticks ahead of this one.
        record_between(stage, woken_at.min(now), now);
    }
}

impl<S> Drop for PollTimer<S> {
    fn drop(&mut self) {
        if let Some((cell, waker)) = self.wrapper.take() {
            drop(waker);
            release(cell);
        }
    }
}
