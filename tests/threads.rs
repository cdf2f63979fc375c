//! Real threads on the real clock: several producers, thousands of short-lived threads, panics
//! inside measured code, guards that change threads.

mod common;

use std::time::Duration;

use laptime::{Collector, Stage, Window};

#[test]
fn two_to_eight_producers_lose_nothing_unaccounted() {
    let _s = common::serial();
    let handle = common::install(Collector::builder().with_ring_capacity(1 << 12));
    for threads in [2usize, 4, 8] {
        let stage = Stage::new(common::unique("producers")).unwrap();
        let per_thread = 50_000u64;
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        if i % 2 == 0 {
                            let _g = laptime::start(stage);
                        } else {
                            laptime::record(stage, Duration::from_nanos(i));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert!(handle.flush());
        let s = handle.get_stats(stage, Window::Cumulative).unwrap();
        assert_eq!(
            s.count + s.dropped,
            threads as u64 * per_thread,
            "{threads} threads"
        );
    }
    let h = handle.health();
    assert_eq!(h.produced, h.records + h.dropped + h.in_rings);
    assert_eq!(h.in_rings, 0, "flushed, producers joined");
}

#[test]
fn thousands_of_short_lived_threads_leave_bounded_memory() {
    let _s = common::serial();
    let handle = common::install(Collector::builder().with_ring_capacity(64));
    let stage = Stage::new(common::unique("churn")).unwrap();
    let rounds = 40;
    let per_round = 100;
    for _ in 0..rounds {
        let workers: Vec<_> = (0..per_round)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let _g = laptime::start(stage);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert!(handle.flush());
        let h = handle.health();
        assert!(
            h.rings <= 2,
            "rings of exited threads are reclaimed, {} live",
            h.rings
        );
    }
    let s = handle.get_stats(stage, Window::Cumulative).unwrap();
    assert_eq!(s.count + s.dropped, rounds * per_round * 10);
    assert!(handle.health().rings_reclaimed >= rounds * per_round);
}

#[test]
fn a_panic_inside_a_measured_span_still_closes_it() {
    let _s = common::serial();
    let handle = common::install(Collector::builder());
    let span_stage = common::unique("panicking_span");
    let lap_total = common::unique("panicking_lap");
    let split = common::unique("panicking_split");
    let result = std::panic::catch_unwind(|| {
        let _g = laptime::start(span_stage);
        let mut lap = laptime::lap(lap_total);
        lap.split(split);
        panic!("trading logic bug");
    });
    assert!(result.is_err());
    assert!(handle.flush());
    assert_eq!(
        handle
            .get_stats(span_stage, Window::Cumulative)
            .unwrap()
            .count,
        1
    );
    assert_eq!(
        handle
            .get_stats(lap_total, Window::Cumulative)
            .unwrap()
            .count,
        1
    );
    assert_eq!(
        handle.get_stats(split, Window::Cumulative).unwrap().count,
        1
    );
}

#[test]
fn a_guard_may_end_on_another_thread() {
    let _s = common::serial();
    let handle = common::install(Collector::builder());
    let name = common::unique("moved_guard");
    let guards: Vec<_> = (0..100).map(|_| laptime::start(name)).collect();
    std::thread::spawn(move || drop(guards)).join().unwrap();
    assert!(handle.flush());
    assert_eq!(
        handle.get_stats(name, Window::Cumulative).unwrap().count,
        100
    );
}

#[test]
fn a_ring_passing_half_full_wakes_the_aggregator_before_its_interval() {
    let _s = common::serial();
    let handle = common::install(
        Collector::builder()
            .with_ring_capacity(256)
            .with_interval(Duration::from_secs(60)),
    );
    let stage = Stage::new(common::unique("wake")).unwrap();
    // The first cycle runs at start; after it only an early wake can drain before a minute.
    assert!(handle.flush());
    let before = handle.health().records;
    for round in 0..20 {
        for _ in 0..200 {
            let _g = laptime::start(stage);
        }
        std::thread::sleep(Duration::from_millis(1 + round % 3));
    }
    // Bounded wait, no timing assertion: some cycle must have run without a flush.
    let woke = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        handle.health().records > before
    });
    assert!(woke, "no cycle ran although rings passed half full");
    assert!(handle.flush());
    let s = handle.get_stats(stage, Window::Cumulative).unwrap();
    assert_eq!(s.count + s.dropped, 4000);
}

/// A thread-local whose destructor records, destroyed after laptime's own at thread exit (it was
/// created first, and destructors run last-created first).
struct RecordsWhenDropped(Stage);

impl Drop for RecordsWhenDropped {
    fn drop(&mut self) {
        for i in 0..50 {
            laptime::record(self.0, Duration::from_nanos(i + 1));
        }
    }
}

thread_local! {
    static LATE: std::cell::Cell<Option<RecordsWhenDropped>> = const { std::cell::Cell::new(None) };
}

#[test]
fn records_made_after_the_threads_ring_is_gone_are_counted_and_register_nothing() {
    let _s = common::serial();
    let handle = common::install(Collector::builder());
    let stage = Stage::new(common::unique("late")).unwrap();
    assert!(handle.flush());
    let before = handle.health();
    std::thread::spawn(move || {
        LATE.set(Some(RecordsWhenDropped(stage)));
        laptime::record(stage, Duration::from_nanos(7)); // registers the ring
    })
    .join()
    .unwrap();
    assert!(handle.flush());
    let s = handle.get_stats(stage, Window::Cumulative).unwrap();
    assert_eq!(s.count + s.dropped, 51, "every record accounted for");
    let after = handle.health();
    assert_eq!(
        after.rings_reclaimed - before.rings_reclaimed,
        1,
        "the thread's one ring, and none registered by its late records"
    );
}
