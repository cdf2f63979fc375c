//! A counting global allocator proves the hot path allocates nothing after a thread's first
//! event: guards, the split timer, start/end tokens, manual values, sampled-out and disabled calls,
//! guard trips, records dropped on a full ring, `#[measure]` methods named after `Self`'s type,
//! and `#[measure(polls)]` async calls (their wake cells come back from a per-thread pool).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use laptime::{Collector, Stage, Window};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{ALLOCATIONS, COUNTING};

/// A default method is one call site for both types: the second type seen walks the site's list.
trait Venue {
    #[laptime::measure]
    fn cancel(&self) {}
}
struct Xnas;
struct Bats;
impl Venue for Xnas {}
impl Venue for Bats {}

thread_local! {
    /// A resource that keeps the last waker it was given past the call (as a channel does).
    static KEEPER: std::cell::RefCell<Option<std::task::Waker>> = const { std::cell::RefCell::new(None) };
}

/// Pending once, waking its task at once (as `yield_now` does), then ready; with `keep`, it also
/// leaves its waker with [`KEEPER`].
struct Suspend {
    done: bool,
    keep: bool,
}

impl std::future::Future for Suspend {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if std::mem::replace(&mut self.done, true) {
            return std::task::Poll::Ready(());
        }
        if self.keep {
            KEEPER.with(|k| k.borrow_mut().clone_from(&Some(cx.waker().clone())));
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[laptime::measure(name = "alloc_async", polls)]
async fn polled_call() {
    Suspend {
        done: false,
        keep: false,
    }
    .await;
}

#[laptime::measure(name = "alloc_async_kept", polls)]
async fn polled_kept_call() {
    Suspend {
        done: false,
        keep: true,
    }
    .await;
}

/// A `#[measure(polls)]` call polled to completion on this thread's stack, by a runtime whose
/// waker for it is `waker`.
fn run_to_end(call: impl std::future::Future<Output = ()>, waker: &std::task::Waker) {
    let mut cx = std::task::Context::from_waker(waker);
    let mut call = std::pin::pin!(call);
    while call.as_mut().poll(&mut cx).is_pending() {}
}

fn run_polled_call() {
    run_to_end(polled_call(), std::task::Waker::noop());
}

/// A task's waker of its own (the no-op waker would match every pooled cell).
struct TaskWaker;

impl std::task::Wake for TaskWaker {
    fn wake(self: std::sync::Arc<Self>) {}
}

fn hot_path(round: u32, stages: &[Stage; 4], sampled_out: Stage, watched: Stage) {
    run_polled_call();
    // Runtime-labelled series that exist: looked up uncached by text, integer and mixed values;
    // one past the family's cap and one with a bad value, both sent to the overflow series.
    let family = laptime::family!("alloc_family", ["pair", "level"], max_series = 4);
    let level = round % 4;
    laptime::record(
        family.series_or_overflow(&("BTC", level)),
        Duration::from_nanos(5),
    );
    laptime::record(
        family.series_or_overflow(&["BTC", "9"]),
        Duration::from_nanos(5),
    );
    laptime::record(
        family.series_or_overflow(&["", "0"]),
        Duration::from_nanos(5),
    );
    {
        let _g = laptime::start(family.series_or_overflow(&[level.to_le_bytes()[0], 1]));
    }
    Xnas.cancel();
    Bats.cancel();
    {
        let _g = laptime::start(stages[0]);
    }
    {
        let _g = laptime::start("alloc_literal_stage");
    }
    {
        let _g = laptime::start(watched);
    }
    let mut lap = laptime::lap(stages[0]);
    lap.split(stages[1]);
    lap.split("alloc_literal_split");
    lap.split(stages[2]);
    lap.end_with(stages[3]);
    // A lap with a disabled split: its records are gathered around the gap.
    let mut lap = laptime::lap(stages[0]);
    lap.split("alloc_disabled_split");
    lap.end_with(stages[1]);
    let token = laptime::record_start(stages[1]);
    laptime::record_end(token);
    laptime::record(stages[2], Duration::from_nanos(u64::from(round)));
    {
        let _g = laptime::start(sampled_out);
    }
    laptime::record_trip("alloc_vol_hard");
    // Reading a latency guard is part of the hot path too (no rule here: it is never tripped).
    std::hint::black_box(stages[3].latency_breaker().is_tripped());
}

#[test]
fn nothing_on_the_hot_path_allocates_after_the_first_event() {
    let _s = common::serial();
    // A tiny ring: most records are dropped, so the drop path is exercised too.
    let handle = common::install(
        Collector::builder()
            .with_ring_capacity(64)
            .with_deadline("alloc_watched", Duration::from_secs(1)),
    );
    let stages = ["alloc_a", "alloc_b", "alloc_c", "alloc_d"].map(|n| Stage::new(n).unwrap());
    let sampled_out = Stage::new("alloc_sampled_out").unwrap();
    sampled_out.set_sampling_rate(Some(0.0)).unwrap();
    let watched = Stage::new("alloc_watched").unwrap();
    Stage::new("alloc_disabled_split")
        .unwrap()
        .set_enabled(false);

    // The thread's first event creates its ring; first uses resolve literals and guard reasons,
    // and create the family's series.
    // A task whose waker a resource keeps past each call (below): its first call, and the
    // plain calls after it, fill this thread's pool of wake cells.
    let task = std::task::Waker::from(std::sync::Arc::new(TaskWaker));
    run_to_end(polled_kept_call(), &task);
    for round in 0..4 {
        hot_path(round, &stages, sampled_out, watched);
    }
    COUNTING.with(|c| c.set(true));
    for round in 0..20_000 {
        hot_path(round, &stages, sampled_out, watched);
    }
    // Calls whose waker a resource keeps past the call: the same task's cell is reused.
    for _ in 0..1000 {
        run_to_end(polled_kept_call(), &task);
    }
    laptime::set_enabled(false);
    for round in 0..1000 {
        hot_path(round, &stages, sampled_out, watched);
    }
    laptime::set_enabled(true);
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations on the hot path"
    );

    assert!(handle.flush());
    let a = handle.get_stats(stages[0], Window::Cumulative).unwrap();
    assert_eq!(
        a.count + a.dropped,
        3 * 20_004,
        "every call is either recorded or counted as dropped"
    );
    assert!(
        a.dropped > 0,
        "the tiny ring overflowed, exercising the drop path"
    );
    let s = handle.get_stats(sampled_out, Window::Cumulative).unwrap();
    assert_eq!((s.count, s.sampled_out), (0, 20_004));
    let polls = Stage::lookup("alloc_async.poll", &[]).unwrap();
    let p = handle.get_stats(polls, Window::Cumulative).unwrap();
    assert_eq!(
        p.count + p.dropped,
        2 * 20_004,
        "two polls a call, recorded or dropped"
    );
}

/// Allocations made by a fresh thread's first event (which registers its ring), on a thread named
/// `name`, or unnamed.
fn first_event_allocations(stage: Stage, name: Option<&str>) -> usize {
    let mut thread = std::thread::Builder::new();
    if let Some(name) = name {
        thread = thread.name(name.to_owned());
    }
    thread
        .spawn(move || {
            COUNTING.with(|c| c.set(true));
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            {
                let _g = laptime::start(stage);
            }
            let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
            COUNTING.with(|c| c.set(false));
            // Left as found: the hot-path test asserts the count stays zero.
            ALLOCATIONS.fetch_sub(made, Ordering::Relaxed);
            made
        })
        .expect("spawn")
        .join()
        .expect("first event ran")
}

/// (unnamed, named): a registration's allocations on an unnamed and on a named thread, under the
/// installed collector `handle`.
fn registration_allocations(handle: &laptime::CollectorHandle, stage: Stage) -> (usize, usize) {
    // Process-wide first uses and one-time growths (the second thread still allocates once more
    // than later ones); each flush hands the new ring to the aggregator, so the next
    // registration finds the list rings join with room.
    for _ in 0..2 {
        first_event_allocations(stage, None);
        assert!(handle.flush());
    }
    let unnamed = first_event_allocations(stage, None);
    assert!(handle.flush());
    let named = first_event_allocations(stage, Some("alloc-named"));
    assert!(handle.flush());
    (unnamed, named)
}

#[test]
fn a_ring_copies_its_threads_name_only_for_a_tracer() {
    let _s = common::serial();
    let stage = Stage::new("alloc_first_event").unwrap();
    // A long interval: the aggregator cycles only on flush, never racing a registration for the
    // lock of the list rings join (contention could allocate, in the lock's parking).
    let builder = || Collector::builder().with_interval(Duration::from_secs(30));
    let handle = common::install(builder());
    let (unnamed, named) = registration_allocations(&handle, stage);
    assert_eq!(
        named, unnamed,
        "without a tracer a thread's name is not copied"
    );
    drop(handle);

    // The same measure sees the copy when a tracer labels traces with the name.
    #[cfg(feature = "trace")]
    {
        let handle = common::install(
            builder().with_tracing(laptime::trace::TraceConfig::new("alloc_first_event")),
        );
        let (unnamed, named) = registration_allocations(&handle, stage);
        assert_eq!(named, unnamed + 1, "the name, copied once");
    }
}
