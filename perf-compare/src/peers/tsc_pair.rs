//! The baseline row: a bare TSC pair around the work, black-boxed so neither read is optimised
//! away, reporting nothing. Called through the same function pointers as every library, so the
//! ratio to it is what a library adds beyond reading the clock twice.

use std::hint::black_box;

use crate::clock::ticks;
use crate::peer::{Peer, Reported};

pub static PEER: Peer = Peer {
    name: "tsc-pair",
    setup,
    empty_span,
    tick,
    spin_span,
    record_value,
    flush,
    report,
};

fn setup() {}

fn empty_span() {
    black_box(ticks());
    black_box(ticks());
}

/// The floor of a 4-stage tick: one read per boundary, 5 reads.
fn tick(work: fn(usize)) {
    black_box(ticks());
    for i in 0..4 {
        work(i);
        black_box(ticks());
    }
}

fn spin_span(ns: u64) {
    black_box(ticks());
    crate::peer::spin(ns);
    black_box(ticks());
}

fn record_value(_ns: u64) -> bool {
    false
}

fn flush() {}

fn report(_stage: &str) -> Reported {
    Reported::default()
}
