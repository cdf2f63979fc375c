//! Does `#[laptime::measure]` cost what the guard it writes for you costs?
//!
//! Group `measure`, in one run: a bare TSC pair (the baseline), the same empty function bare, with
//! a hand-written `laptime::start(stage)` guard on a resolved `Stage`, with `#[measure]`, as a
//! method named by default (its stage found by `Self`'s type), and a `measure_block!`. The macro
//! must be within 5 % of the hand-written guard.
//!
//! Group `measure_async`: an `async fn` that suspends `k` times (a future that is pending once per
//! suspension), polled by hand with a no-op waker, bare and with `#[measure]`, for k = 0 and
//! k = 16. The span's cost per completion is the k = 0 difference; its cost per poll is how the
//! difference grows from k = 0 to k = 16, divided by 16.
//!
//! Results, machine and commands: `benches/README.md`.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

mod common;

use common::{collector, timed_in_chunks, tsc};
use criterion::{Criterion, Throughput};
use laptime::{Stage, Window};

#[inline(never)]
fn bare(x: u64) -> u64 {
    black_box(x)
}

#[inline(never)]
fn hand_written(x: u64) -> u64 {
    static STAGE: OnceLock<Stage> = OnceLock::new();
    let stage = *STAGE.get_or_init(|| Stage::new("bench_hand_written").unwrap());
    let _span = laptime::start(stage);
    black_box(x)
}

#[inline(never)]
#[laptime::measure(name = "bench_measure")]
fn measured(x: u64) -> u64 {
    black_box(x)
}

/// A method named by default: its site finds `Self`'s stage (`MethodSite`) before the guard.
struct Venue;

impl Venue {
    #[inline(never)]
    #[laptime::measure]
    fn method(&self, x: u64) -> u64 {
        black_box(x)
    }
}

#[inline(never)]
fn block(x: u64) -> u64 {
    laptime::measure_block!("bench_measure_block", { black_box(x) })
}

/// Checks, before anything is timed, that `run` records exactly `n` spans of `name`.
fn assert_records(name: &str, n: u64, run: impl Fn()) {
    let count = || {
        assert!(laptime::flush());
        Stage::lookup(name, &[])
            .and_then(|s| laptime::get_stats(s, Window::Cumulative))
            .map_or(0, |s| s.count)
    };
    let before = count();
    for _ in 0..n {
        run();
    }
    assert_eq!(count() - before, n, "{name} did not record every span");
}

fn measure(c: &mut Criterion) {
    collector();
    assert_records("bench_hand_written", 100, || {
        hand_written(1);
    });
    assert_records("bench_measure", 100, || {
        measured(1);
    });
    assert_records("bench_measure_block", 100, || {
        block(1);
    });
    assert_records("macros::Venue::method", 100, || {
        Venue.method(1);
    });

    let mut g = c.benchmark_group("measure");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tsc_pair", |b| {
        b.iter(|| (black_box(tsc()), black_box(tsc())))
    });
    g.bench_function("fn/bare", |b| b.iter(|| bare(black_box(1))));
    g.bench_function("fn/hand_written_guard", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks(iters, 1, || {
                hand_written(black_box(1));
            })
        })
    });
    g.bench_function("fn/measure_attribute", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks(iters, 1, || {
                measured(black_box(1));
            })
        })
    });
    g.bench_function("fn/measure_method", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks(iters, 1, || {
                Venue.method(black_box(1));
            })
        })
    });
    g.bench_function("fn/measure_block", |b| {
        b.iter_custom(|iters| {
            timed_in_chunks(iters, 1, || {
                block(black_box(1));
            })
        })
    });
    g.finish();
}

/// Pending once, then ready: one suspension, which wakes its task at once (as `yield_now` does),
/// so `polls` has a wake to time before every poll but the first.
struct Suspend(bool);

impl Future for Suspend {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

async fn work_bare(k: u32) -> u32 {
    for _ in 0..k {
        Suspend(false).await;
    }
    black_box(k)
}

#[laptime::measure(name = "bench_async")]
async fn work_measured(k: u32) -> u32 {
    for _ in 0..k {
        Suspend(false).await;
    }
    black_box(k)
}

#[laptime::measure(name = "bench_async_polls", polls)]
async fn work_polls(k: u32) -> u32 {
    for _ in 0..k {
        Suspend(false).await;
    }
    black_box(k)
}

/// Polls `fut` to completion with a no-op waker; returns the number of polls.
#[inline(always)]
fn run<F: Future>(fut: F) -> u32 {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 1;
    while fut.as_mut().poll(&mut cx).is_pending() {
        polls += 1;
    }
    polls
}

fn measure_async(c: &mut Criterion) {
    collector();
    assert_eq!(run(work_measured(16)), 17, "16 suspensions take 17 polls");
    assert_records("bench_async", 100, || {
        run(work_measured(3));
    });
    // Each call records its busy time once (beside its wall span, 4 polls and 3 delays).
    assert_records("bench_async_polls.busy", 100, || {
        run(work_polls(3));
    });

    let mut g = c.benchmark_group("measure_async");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tsc_pair", |b| {
        b.iter(|| (black_box(tsc()), black_box(tsc())))
    });
    for k in [0u32, 16] {
        g.bench_function(format!("bare/k={k}"), |b| {
            b.iter(|| run(work_bare(black_box(k))))
        });
        g.bench_function(format!("measure/k={k}"), |b| {
            b.iter_custom(|iters| {
                timed_in_chunks(iters, 1, || {
                    run(work_measured(black_box(k)));
                })
            })
        });
        // Records 2 + 2k values a call (wall, busy, k+1 polls, k delays): chunked like `measure`.
        g.bench_function(format!("polls/k={k}"), |b| {
            b.iter_custom(|iters| {
                timed_in_chunks(iters, 2 + 2 * u64::from(k), || {
                    run(work_polls(black_box(k)));
                })
            })
        });
    }
    g.finish();
}

criterion::criterion_group!(benches, measure, measure_async);
criterion::criterion_main!(benches);
