//! The SPSC ring against `VecDeque`: random sequences of push, pop, drain and length queries on
//! random capacities, every return value checked. Single-threaded: the cross-thread orderings are
//! loom's job (`tests/loom.rs`); Miri runs this file with a few cases (`scripts/miri.sh`).

use std::collections::VecDeque;

use laptime::ring::ring;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// `PROPTEST_CASES` if set, else 256. Under Miri (which does not forward the environment and runs
/// about 5 s per case) a handful.
fn cases() -> u32 {
    if cfg!(miri) {
        return 4;
    }
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// Miri cannot open files with isolation on: keep persistence for the normal run only.
fn persistence() -> Option<Box<dyn proptest::test_runner::FailurePersistence>> {
    (!cfg!(miri)).then(|| {
        Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/ring_model.txt",
        )) as Box<dyn proptest::test_runner::FailurePersistence>
    })
}

const MAX_OPS: usize = if cfg!(miri) { 40 } else { 300 };

/// A record shaped like the hot path's (several words), so a torn or stale slot shows.
type Rec = (u64, u32, u16);

#[derive(Debug, Clone)]
enum Op {
    Push(u16),
    /// Push until the ring refuses, so full-ring behaviour is hit on large capacities too.
    Fill,
    /// `push_with` of this many records: as many as fit, one publication.
    PushBatch(usize),
    Pop,
    /// Drain with this limit (`usize::MAX` too: "everything").
    Drain(usize),
    RefreshLen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u16>().prop_map(Op::Push),
        1 => Just(Op::Fill),
        2 => (0usize..=12).prop_map(Op::PushBatch),
        3 => Just(Op::Pop),
        3 => (0usize..=20).prop_map(Op::Drain),
        1 => Just(Op::Drain(usize::MAX)),
        1 => Just(Op::RefreshLen),
    ]
}

/// Requested capacities: the small ones wrap often; 0 and 1 must round up to 2.
fn capacity() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0usize..=9, 1 => 10usize..=70]
}

fn run(requested: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let (mut p, mut c) = ring::<Rec>(requested);
    let cap = requested.max(2).next_power_of_two();
    prop_assert_eq!(p.capacity(), cap);
    prop_assert_eq!(c.capacity(), cap);
    prop_assert!(cap.is_power_of_two() && cap >= requested && cap >= 2);
    prop_assert!(
        cap < 2 * requested.max(2),
        "rounded up to the next power of two only"
    );

    let mut model: VecDeque<Rec> = VecDeque::new();
    let mut seq: u64 = 0;
    let mut popped: usize = 0;
    // True while the consumer has not popped since the producer last read its index: `push`'s
    // occupancy must then be exact, not just an upper bound.
    let mut producer_view_exact = true;

    let mut push = |p: &mut laptime::ring::Producer<Rec>,
                    model: &mut VecDeque<Rec>,
                    exact: &mut bool,
                    v: u16|
     -> Result<bool, TestCaseError> {
        seq += 1;
        let rec = (seq, seq as u32 ^ 0xA5A5_A5A5, v);
        match p.push(rec) {
            Ok(occupancy) => {
                prop_assert!(model.len() < cap, "accepted into a full ring");
                model.push_back(rec);
                prop_assert!(
                    occupancy >= model.len() && occupancy <= cap,
                    "occupancy {} not an upper bound within capacity (real {}, cap {})",
                    occupancy,
                    model.len(),
                    cap
                );
                if *exact {
                    prop_assert_eq!(occupancy, model.len());
                }
                Ok(true)
            }
            Err(back) => {
                prop_assert_eq!(back, rec, "the refused record is handed back unchanged");
                prop_assert_eq!(model.len(), cap, "refused while not full");
                // A refusal re-reads the consumer's index.
                *exact = true;
                Ok(false)
            }
        }
    };

    // Batches number their records apart from single pushes (whose closure holds `seq`).
    let mut batch_seq: u64 = 1 << 40;
    for op in ops {
        match *op {
            Op::Push(v) => {
                push(&mut p, &mut model, &mut producer_view_exact, v)?;
            }
            Op::Fill => {
                let mut pushed = 0;
                while push(&mut p, &mut model, &mut producer_view_exact, 0)? {
                    pushed += 1;
                    prop_assert!(pushed <= cap);
                }
                prop_assert_eq!(model.len(), cap);
            }
            Op::PushBatch(n) => {
                let recs: Vec<Rec> = (0..n)
                    .map(|i| {
                        batch_seq += 1;
                        (batch_seq, batch_seq as u32 ^ 0x5A5A_5A5A, i as u16)
                    })
                    .collect();
                let mut asked = Vec::new();
                let written = p.push_with(n, |i| {
                    asked.push(i);
                    recs[i]
                });
                let fits = n.min(cap - model.len());
                prop_assert_eq!(written, fits, "writes as many as fit");
                prop_assert_eq!(
                    asked,
                    (0..fits).collect::<Vec<_>>(),
                    "asks in order, no more"
                );
                model.extend(&recs[..written]);
                if written < n {
                    // Short of room, it re-read the consumer's index.
                    producer_view_exact = true;
                }
            }
            Op::Pop => {
                let got = c.pop();
                prop_assert_eq!(got, model.pop_front());
                if got.is_some() {
                    popped += 1;
                    producer_view_exact = false;
                }
            }
            Op::Drain(limit) => {
                let mut got = Vec::new();
                let n = c.drain(limit, |r| got.push(r));
                let want: Vec<Rec> = (0..limit.min(model.len()))
                    .map(|_| model.pop_front().expect("in range"))
                    .collect();
                prop_assert_eq!(n, got.len(), "drain's count matches the calls to f");
                prop_assert_eq!(got, want);
                popped += n;
                if n > 0 {
                    producer_view_exact = false;
                }
            }
            Op::RefreshLen => {
                prop_assert_eq!(p.refresh_len(), model.len());
                producer_view_exact = true;
            }
        }
        prop_assert_eq!(c.len(), model.len());
        prop_assert_eq!(c.is_empty(), model.is_empty());
        prop_assert_eq!(c.popped(), popped);
        prop_assert!(!c.is_closed());
    }

    // Reclamation: once the producer is gone, `closed` is seen and one drain empties the ring.
    drop(p);
    prop_assert!(c.is_closed());
    let mut rest = Vec::new();
    c.drain(usize::MAX, |r| rest.push(r));
    prop_assert_eq!(rest, model.drain(..).collect::<Vec<_>>());
    prop_assert!(c.is_empty());
    prop_assert_eq!(c.pop(), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: persistence(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn ring_matches_vecdeque(
        requested in capacity(),
        ops in prop::collection::vec(op(), 0..MAX_OPS),
    ) {
        run(requested, &ops)?;
    }
}

#[test]
fn capacity_rounding_table() {
    for (requested, expected) in [
        (0, 2),
        (1, 2),
        (2, 2),
        (3, 4),
        (4, 4),
        (5, 8),
        (8, 8),
        (9, 16),
        (1000, 1024),
        (1024, 1024),
        (1025, 2048),
    ] {
        let (p, c) = ring::<u8>(requested);
        assert_eq!(
            (p.capacity(), c.capacity()),
            (expected, expected),
            "{requested}"
        );
    }
}

/// Wraps the indices through many laps on the smallest ring with every pattern of fill level.
#[test]
fn long_run_on_the_smallest_ring() {
    let laps = if cfg!(miri) { 20 } else { 5_000 };
    let ops: Vec<Op> = (0..laps)
        .flat_map(|i| {
            [
                Op::Push(i as u16),
                Op::Push(!(i as u16)),
                Op::Push(0),
                Op::Drain(1 + i % 2),
                Op::Pop,
            ]
        })
        .collect();
    run(0, &ops).unwrap();
}
