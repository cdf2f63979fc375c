//! loom models of the SPSC ring and of ring registration and reclamation. Only under
//! `--cfg laptime_loom`, which builds the library down to `ring`, `handoff` and the `sync` shim
//! (`scripts/loom.sh`):
//!
//! ```text
//! RUSTFLAGS="--cfg laptime_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --test loom -- --nocapture
//! ```
//!
//! Each model prints how many interleavings it explored. Spin loops call `loom::thread::yield_now`
//! (never `spin_loop`), or loom reports the model as never making progress.
#![cfg(laptime_loom)]

use std::sync::atomic::{AtomicBool as StdAtomicBool, AtomicUsize as StdAtomicUsize};
use std::time::Instant;

use laptime::handoff::Handoff;
use laptime::ring::{Consumer, ring};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

/// Runs `model` under loom and prints the number of interleavings and the time taken.
fn check(name: &str, model: impl Fn() + Sync + Send + 'static) {
    let counter = std::sync::Arc::new(StdAtomicUsize::new(0));
    let per_model = counter.clone();
    let started = Instant::now();
    loom::model(move || {
        per_model.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        model();
    });
    let n = counter.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "loom: {name}: {n} interleavings in {:.2?}",
        started.elapsed()
    );
}

/// The one way a model waits for the other thread: a loom yield, so the scheduler runs it.
fn backoff() {
    thread::yield_now();
}

/// (a) One producer thread pushes `0..items`, spinning while the ring is full; the consumer pops
/// until it has them all. Checks FIFO, no loss, no duplicate, and `closed` after the join.
fn spsc(capacity: usize, items: u32) {
    let (mut p, mut c) = ring::<u32>(capacity);
    assert_eq!(p.capacity(), capacity);
    let producer = thread::spawn(move || {
        for i in 0..items {
            let mut v = i;
            loop {
                match p.push(v) {
                    Ok(occupancy) => {
                        assert!((1..=capacity).contains(&occupancy));
                        break;
                    }
                    Err(back) => {
                        v = back;
                        backoff();
                    }
                }
            }
        }
    });
    let mut next = 0;
    while next < items {
        match c.pop() {
            Some(v) => {
                assert_eq!(v, next, "out of order or lost");
                next += 1;
            }
            None => backoff(),
        }
    }
    producer.join().unwrap();
    assert!(c.is_closed());
    assert_eq!(c.pop(), None, "more came out than went in");
}

#[test]
fn spsc_cap2_3_items() {
    check("spsc cap 2, 3 items", || spsc(2, 3));
}

#[test]
fn spsc_cap2_4_items() {
    check("spsc cap 2, 4 items", || spsc(2, 4));
}

#[test]
fn spsc_cap4_4_items() {
    check("spsc cap 4, 4 items", || spsc(4, 4));
}

/// (b) The consumer takes records with `drain(limit)` while the producer is still pushing: each
/// call passes at most `limit`, in order, and its return value counts the calls to `f`.
fn drain_with_limit(capacity: usize, items: u32, limit: usize) {
    let (mut p, mut c) = ring::<u32>(capacity);
    let producer = thread::spawn(move || {
        for i in 0..items {
            while p.push(i).is_err() {
                backoff();
            }
        }
    });
    let mut next = 0;
    while next < items {
        let mut passed = 0;
        let n = c.drain(limit, |v| {
            assert_eq!(v, next, "out of order or lost");
            next += 1;
            passed += 1;
        });
        assert_eq!(n, passed);
        assert!(n <= limit);
        if n == 0 {
            backoff();
        }
    }
    producer.join().unwrap();
    assert_eq!(c.drain(usize::MAX, |_| panic!("nothing is left")), 0);
}

#[test]
fn drain_limit_2_cap2_4_items() {
    check("drain limit 2, cap 2, 4 items", || {
        drain_with_limit(2, 4, 2)
    });
}

#[test]
fn drain_limit_3_cap4_4_items() {
    check("drain limit 3, cap 4, 4 items", || {
        drain_with_limit(4, 4, 3)
    });
}

/// (c) The aggregator's per-stage count of what is still in flight: `peek` while the producer
/// pushes sees the records after the head, in order, up to the tail it returns, and consumes
/// nothing: the drain that follows hands out the same records again (and a full ring's
/// producer still cannot overwrite one that was only peeked at).
fn peek_then_drain(capacity: usize, items: u32) {
    let (mut p, mut c) = ring::<u32>(capacity);
    let producer = thread::spawn(move || {
        for i in 0..items {
            while p.push(i).is_err() {
                backoff();
            }
        }
    });
    let mut next = 0;
    while next < items {
        let mut peeked = Vec::new();
        let tail = c.peek(|v| peeked.push(*v));
        assert_eq!(tail, c.popped() + peeked.len());
        assert!(peeked.len() <= capacity);
        for (k, v) in peeked.iter().enumerate() {
            assert_eq!(*v, next + k as u32, "peek out of order");
        }
        let mut drained = 0;
        c.drain(peeked.len(), |v| {
            assert_eq!(v, peeked[drained], "the drain differs from the peek");
            drained += 1;
        });
        assert_eq!(drained, peeked.len());
        next += drained as u32;
        if drained == 0 {
            backoff();
        }
    }
    producer.join().unwrap();
    assert_eq!(c.peek(|_| panic!("nothing is left")), c.popped());
}

#[test]
fn peek_then_drain_cap2_3_items() {
    check("peek then drain, cap 2, 3 items", || peek_then_drain(2, 3));
}

/// One visit of a ring, through the same `Consumer::visit` the aggregator calls: true when the
/// ring may be reclaimed.
fn visit(c: &mut Consumer<u32>, batch: usize, seen: &mut Vec<u32>) -> bool {
    c.visit(batch, |v| seen.push(v)) == laptime::ring::Visit::Finished
}

/// (c) Reclamation: the producer pushes `items` and exits (drops its `Producer`); the consumer
/// visits until the ring is reclaimable and must by then have seen every record.
fn reclamation(capacity: usize, items: u32, batch: usize) {
    let (mut p, mut c) = ring::<u32>(capacity);
    let producer = thread::spawn(move || {
        for i in 0..items {
            p.push(i).expect("the ring holds every item");
        }
        // `p` drops here: the thread's exit closes its ring.
    });
    let mut seen = Vec::new();
    while !visit(&mut c, batch, &mut seen) {
        backoff();
    }
    assert_eq!(
        seen,
        (0..items).collect::<Vec<_>>(),
        "reclaimed with records left"
    );
    producer.join().unwrap();
}

#[test]
fn reclaim_after_2_items() {
    check("reclaim after 2 items, batch 8", || reclamation(2, 2, 8));
}

#[test]
fn reclaim_after_3_items_batch_1() {
    check("reclaim after 3 items, batch 1", || reclamation(4, 3, 1));
}

/// A thread's registration as the collector does it: make a ring, hand its consumer over, push
/// `items` if accepted, exit. A refused ring must come back whole: still connected to our producer.
/// Returns whether the registration was accepted.
fn register_and_push(handoff: &Handoff<Consumer<u32>>, base: u32, items: u32) -> bool {
    let (mut p, c) = ring::<u32>(2);
    match handoff.register(c) {
        Ok(()) => {
            for i in 0..items {
                while p.push(base + i).is_err() {
                    backoff();
                }
            }
            true
        }
        Err(mut back) => {
            p.push(99).unwrap();
            assert_eq!(back.pop(), Some(99), "a refused ring comes back whole");
            assert!(back.is_empty());
            false
        }
    }
}

/// The aggregator's side as `Aggregator::run` + `cycle` do it: each cycle adopts new rings
/// (`take_all`) and visits every ring, dropping the reclaimed ones; `close` runs before cycle
/// number `close_at`. After that it keeps cycling until every adopted ring was reclaimed (all
/// producer threads exited), so nothing may be missing at the end.
fn aggregate(handoff: &Handoff<Consumer<u32>>, close_at: usize, seen: &mut Vec<u32>) -> usize {
    let mut rings: Vec<Consumer<u32>> = Vec::new();
    let mut adopted = 0;
    let mut cycle = 0;
    loop {
        let closing = cycle >= close_at;
        if cycle == close_at {
            handoff.close();
        }
        let before = rings.len();
        handoff.take_all(&mut rings);
        adopted += rings.len() - before;
        rings.retain_mut(|c| !visit(c, 1, seen));
        if closing && rings.is_empty() {
            // Closed, and one `take_all` since: nothing can join any more.
            let mut late = Vec::new();
            handoff.take_all(&mut late);
            assert!(late.is_empty(), "a ring joined after close");
            return adopted;
        }
        cycle += 1;
        backoff();
    }
}

/// (d) Registration against close: the registering thread and the aggregator race. Accepted ⇔
/// adopted exactly once, every record of an accepted ring is drained exactly once and in order,
/// and a refused ring was never seen by the aggregator and comes back whole.
fn registration(close_at: usize, items: u32) {
    let handoff = Arc::new(Handoff::<Consumer<u32>>::new());
    let registering = {
        let handoff = handoff.clone();
        thread::spawn(move || register_and_push(&handoff, 0, items))
    };
    let mut seen = Vec::new();
    let adopted = aggregate(&handoff, close_at, &mut seen);
    let accepted = registering.join().unwrap();
    assert_eq!(
        adopted,
        usize::from(accepted),
        "accepted must mean adopted, once"
    );
    let expected: Vec<u32> = if accepted {
        (0..items).collect()
    } else {
        vec![]
    };
    assert_eq!(seen, expected);
}

#[test]
fn registration_races_close_at_once() {
    check("registration vs close before cycle 0, 2 items", || {
        registration(0, 2)
    });
}

#[test]
fn registration_races_close_after_a_cycle() {
    check("registration vs close before cycle 1, 2 items", || {
        registration(1, 2)
    });
}

/// (d) Two threads register against one close: each is adopted exactly once or handed back.
#[test]
fn two_registrations_race_close() {
    check(
        "two registrations vs close before cycle 1, 1 item each",
        || {
            let handoff = Arc::new(Handoff::<Consumer<u32>>::new());
            let threads: Vec<_> = [0, 10]
                .into_iter()
                .map(|base| {
                    let handoff = handoff.clone();
                    thread::spawn(move || register_and_push(&handoff, base, 1))
                })
                .collect();
            let mut seen = Vec::new();
            let adopted = aggregate(&handoff, 1, &mut seen);
            let accepted: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let accepted_count = accepted.iter().filter(|a| **a).count();
            assert_eq!(adopted, accepted_count, "accepted must mean adopted, once");
            seen.sort_unstable();
            let expected: Vec<u32> = [0, 10]
                .into_iter()
                .zip(&accepted)
                .filter(|(_, a)| **a)
                .map(|(b, _)| b)
                .collect();
            assert_eq!(seen, expected);
        },
    );
}

/// (d) The real shutdown (`CollectorHandle::drop` + `Aggregator::run`): the handle sets the
/// recorder's `STOPPED` flag, the aggregator closes the handoff and runs ONE final cycle, then
/// drops every ring. A thread still alive then may check `STOPPED` just before it is set and push
/// just after the final drain: that record is neither drained nor counted as dropped. This model
/// checks what does hold (no duplicate, order, no ring missed by the final cycle, nothing lost
/// from a ring closed before it) and that the stranding is reachable: the caveat in the crate docs.
#[test]
fn final_drain_strands_only_late_pushes_into_live_rings() {
    static STRANDED_SEEN: StdAtomicBool = StdAtomicBool::new(false);
    check(
        "real shutdown: one final cycle, live thread pushing",
        || {
            const ITEMS: u32 = 2;
            let handoff = Arc::new(Handoff::<Consumer<u32>>::new());
            let stopped = Arc::new(AtomicBool::new(false));
            let registering = {
                let handoff = handoff.clone();
                let stopped = stopped.clone();
                thread::spawn(move || {
                    let (mut p, c) = ring::<u32>(2);
                    if handoff.register(c).is_err() {
                        return (false, 0);
                    }
                    let mut counted_dropped = 0;
                    for i in 0..ITEMS {
                        // The recorder's `STOPPED` check (`with_local`), then the push.
                        if stopped.load(Ordering::SeqCst) || p.push(i).is_err() {
                            counted_dropped += 1;
                        }
                    }
                    (true, counted_dropped)
                })
            };
            // The handle's drop: STOPPED, then the aggregator's final cycle.
            stopped.store(true, Ordering::SeqCst);
            handoff.close();
            let mut rings = Vec::new();
            handoff.take_all(&mut rings);
            let mut drained = Vec::new();
            let mut closed_at_final = false;
            for c in &mut rings {
                closed_at_final = visit(c, 1024, &mut drained);
            }
            let (accepted, counted_dropped) = registering.join().unwrap();
            assert_eq!(
                rings.len(),
                usize::from(accepted),
                "the final cycle missed a ring"
            );
            // Audit what the aggregator would now drop with its rings.
            let mut stranded = Vec::new();
            for c in &mut rings {
                c.drain(usize::MAX, |v| stranded.push(v));
            }
            let mut all = drained.clone();
            all.extend(&stranded);
            assert!(all.windows(2).all(|w| w[0] < w[1]), "order or duplicate");
            assert_eq!(
                all.len() as u32 + counted_dropped,
                if accepted { ITEMS } else { 0 },
                "every call is drained, counted as dropped, or stranded"
            );
            if closed_at_final {
                assert!(stranded.is_empty(), "a closed ring lost records");
            }
            if !stranded.is_empty() {
                STRANDED_SEEN.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        },
    );
    assert!(
        STRANDED_SEEN.load(std::sync::atomic::Ordering::Relaxed),
        "expected the documented shutdown window to be reachable"
    );
}

/// (e) A collector's stop against a push, as `recorder::with_local` and `Aggregator::quiesce` do
/// it. The producer announces the push, fences, reads "stopped", then pushes (or counts a drop)
/// and clears the announcement with Release. The stopper sets "stopped", fences (the process-wide
/// barrier, `barrier::heavy`), waits for the announcement to clear (Acquire), then makes its final
/// drain. Every record must be drained or counted as dropped, exactly once. With `fenced` false
/// (no fences: what a plain store/load pair gives) a record can be lost, and the model must find
/// it.
fn stop_against_push(items: u32, fenced: bool) {
    use loom::sync::atomic::{AtomicUsize, fence};
    let (mut p, mut c) = ring::<u32>(4);
    let stopped = Arc::new(AtomicBool::new(false));
    let pushing = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (stopped, pushing, dropped) = (stopped.clone(), pushing.clone(), dropped.clone());
        thread::spawn(move || {
            for i in 0..items {
                pushing.store(true, Ordering::Relaxed);
                if fenced {
                    fence(Ordering::SeqCst);
                }
                if stopped.load(Ordering::Relaxed) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    p.push(i).expect("room: the ring holds every item");
                }
                pushing.store(false, Ordering::Release);
            }
            p // the thread lives on: its ring is not closed
        })
    };
    stopped.store(true, Ordering::Relaxed);
    if fenced {
        fence(Ordering::SeqCst);
    }
    while pushing.load(Ordering::Acquire) {
        backoff();
    }
    let mut drained = 0;
    c.drain(usize::MAX, |_| drained += 1);
    let _producer = producer.join().unwrap();
    let dropped = dropped.load(Ordering::Relaxed);
    assert_eq!(
        drained + dropped,
        items as usize,
        "a record admitted before the stop was neither drained nor counted"
    );
}

#[test]
fn stop_against_push_loses_nothing() {
    check("stop vs push, 2 items, fenced", || {
        stop_against_push(2, true)
    });
}

/// The same model without the fences must fail: the model can tell a lost record.
#[test]
#[should_panic(expected = "neither drained nor counted")]
fn stop_against_push_without_fences_loses_a_record() {
    check("stop vs push, 2 items, unfenced", || {
        stop_against_push(2, false)
    });
}
