//! A driver for counting the hot path's instructions per call under callgrind: a figure that does
//! not move with the load on a shared 2-vCPU guest, unlike the wall clock. Each kind of call runs
//! in its own `#[inline(never)]` loop, and callgrind collects only inside that loop, so the
//! aggregator's work on its own thread is left out:
//!
//! ```text
//! cargo build --release --example hot_path_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     --toggle-collect='hot_path_instructions::spans' \
//!     target/release/examples/hot_path_instructions spans 100000
//! callgrind_annotate /tmp/cg.out | head     # "PROGRAM TOTALS" Ir / 100 000 = per span
//! ```
//!
//! Kinds: `spans` (a guard on a resolved stage), `laps` (a 4-stage split lap: 5 clock reads,
//! 5 records), `sampled_out` (the `spans` loop on a stage at rate 0: collect in `spans`),
//! `values` (`laptime::record`), `drops` (the `spans` loop into a full 2-record ring, the aggregator
//! asleep: every span is counted as dropped). Except for `drops`, the ring holds
//! every record of the run, so the figure is that of a kept record; the driver checks after a
//! flush that every call landed where it should.
use std::hint::black_box;
use std::time::Duration;

use laptime::{Collector, Stage, Window};

fn stage(name: &'static str) -> Stage {
    Stage::new(name).expect("a valid stage name")
}

#[inline(never)]
fn spans(s: Stage, n: u64) {
    for _ in 0..n {
        let _span = laptime::start(black_box(s));
    }
}

#[inline(never)]
fn laps(total: Stage, s: [Stage; 4], n: u64) {
    for _ in 0..n {
        let mut lap = laptime::lap(black_box(total));
        lap.split(black_box(s[0]));
        lap.split(black_box(s[1]));
        lap.split(black_box(s[2]));
        lap.end_with(black_box(s[3]));
    }
}

#[inline(never)]
fn values(s: Stage, n: u64) {
    for i in 0..n {
        laptime::record(
            black_box(s),
            Duration::from_nanos(black_box(1_000 + (i & 1023))),
        );
    }
}

fn count(s: Stage) -> (u64, u64) {
    laptime::get_stats(s, Window::Cumulative).map_or((0, 0), |st| (st.count, st.sampled_out))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (kind, n) = match args.as_slice() {
        [_, kind, n] => (kind.as_str(), n.parse::<u64>().ok()),
        _ => ("", None),
    };
    let Some(n) = n.filter(|&n| n <= 1 << 20) else {
        eprintln!("usage: hot_path_instructions spans|laps|sampled_out|values|drops N (N ≤ 2^20)");
        std::process::exit(2);
    };
    let ring = if kind == "drops" { 2 } else { 8 << 20 };
    let _collector = Collector::builder()
        .with_ring_capacity(ring)
        .with_interval(Duration::from_secs(60))
        .install()
        .expect("install a collector");
    let s = stage("hpi_stage");
    let parts = [
        stage("hpi_a"),
        stage("hpi_b"),
        stage("hpi_c"),
        stage("hpi_d"),
    ];
    // One call first, so the thread's ring is registered outside the counted loop.
    drop(laptime::start(s));
    laptime::flush();
    if kind == "drops" {
        // Fill the ring; the aggregator sleeps for its 60 s interval meanwhile.
        (0..2).for_each(|_| drop(laptime::start(s)));
    }
    let before = count(s);
    let dropped_before = s.dropped();
    let expect = match kind {
        "spans" => (spans(s, n), (n, 0)).1,
        "laps" => (laps(s, parts, n), (n, 0)).1,
        "values" => (values(s, n), (n, 0)).1,
        "drops" => (spans(s, n), (2, 0)).1,
        "sampled_out" => {
            s.set_sampling_rate(Some(0.0)).expect("0 is a valid rate");
            (spans(s, n), (0, n)).1
        }
        _ => {
            eprintln!("unknown kind {kind:?}");
            std::process::exit(2);
        }
    };
    assert!(laptime::flush(), "the aggregator answers");
    let after = count(s);
    let got = (after.0 - before.0, after.1 - before.1);
    assert_eq!(got, expect, "(recorded, sampled out) of {kind}");
    if kind == "drops" {
        assert_eq!(
            s.dropped() - dropped_before,
            n,
            "every span of the loop dropped"
        );
    }
    if kind == "laps" {
        for p in parts {
            assert_eq!(count(p).0, n, "{p}: one record per lap");
        }
    }
    println!(
        "{kind}: {n} calls, recorded {}, sampled out {}",
        got.0, got.1
    );
}
