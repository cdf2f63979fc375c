//! The harness' clock: laptime's public TSC read (`laptime::clock::ticks`, one `rdtsc` and a
//! branch on this project's machines; benches/README.md puts its pair at 1.02 × a bare `_rdtsc`
//! pair), calibrated once against `std::time::Instant`, and a spin-wait on it.
//!
//! The harness reads the TSC through laptime rather than `core::arch::x86_64::_rdtsc` so that the
//! crate needs no `unsafe` beyond its counting allocator. Where laptime finds no invariant TSC,
//! `ticks()` is monotonic nanoseconds and calibration gives 1 tick per ns; the table's header
//! says which source ran.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Reads the clock in ticks.
#[inline(always)]
pub fn ticks() -> u64 {
    laptime::clock::ticks()
}

/// Ticks per nanosecond, measured once per process over about 50 ms.
pub fn ticks_per_ns() -> f64 {
    static RATE: OnceLock<f64> = OnceLock::new();
    *RATE.get_or_init(|| {
        // Two short runs, keep the later one: the first also pages in the clock's code.
        let mut rate = 1.0;
        for length in [Duration::from_millis(5), Duration::from_millis(50)] {
            let (t0, i0) = (ticks(), Instant::now());
            while i0.elapsed() < length {
                std::hint::spin_loop();
            }
            let (t1, i1) = (ticks(), Instant::now());
            rate = (t1 - t0) as f64 / (i1 - i0).as_nanos() as f64;
        }
        rate
    })
}

/// Converts a tick count into nanoseconds.
pub fn to_ns(ticks: u64) -> f64 {
    ticks as f64 / ticks_per_ns()
}

thread_local! {
    static LAST_SPIN: Cell<u64> = const { Cell::new(0) };
}

/// Spins on the clock until `ns` nanoseconds have passed. Overshoots by about one clock read,
/// or by as long as the scheduler takes the thread away at the wrong moment; either way the
/// spin's true length, from its first read to its last, is kept for [`last_spin_ns`].
pub fn spin_ns(ns: u64) {
    let start = ticks();
    let length = (ns as f64 * ticks_per_ns()) as u64;
    let mut now = start;
    while now.wrapping_sub(start) < length {
        std::hint::spin_loop();
        now = ticks();
    }
    LAST_SPIN.with(|l| l.set(now.wrapping_sub(start)));
}

/// How long this thread's last [`spin_ns`] really spun, in nanoseconds: the accuracy workload's
/// reference (what a span around the spin should report, less the span's own cost).
pub fn last_spin_ns() -> u64 {
    to_ns(LAST_SPIN.with(Cell::get)).round() as u64
}

/// Which source `ticks()` reads, for the table's header.
pub fn source() -> &'static str {
    let _ = ticks();
    match laptime::clock::current() {
        laptime::clock::ClockSource::Tsc => "TSC",
        laptime::clock::ClockSource::Monotonic => "monotonic clock",
        _ => "undecided clock",
    }
}
