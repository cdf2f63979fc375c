//! The clock: raw ticks on the hot path, nanoseconds only in the aggregator.
//!
//! On x86_64 with an invariant TSC (CPUID `80000007h:EDX[8]`, or the kernel itself running on the
//! `tsc` clocksource) a tick is one `rdtsc`: about 10 ns on this project's machine, half the price of
//! `Instant::now()`. Elsewhere a tick is a nanosecond of the monotonic clock. The source is chosen
//! once per process, on the first read (or by [`crate::CollectorBuilder::with_clock`] before it),
//! and never changes afterwards, so every record of a process shares one unit.
//!
//! We read the TSC ourselves instead of through `quanta`: `quanta::Clock::raw()` costs the same
//! `rdtsc` (see `benches/README.md`) but needs a `Clock` value on the hot path, and its conversion
//! state is per `Clock`; here the conversion lives in the aggregator's `Calibration`.
//!
//! With the `test-util` feature, `MockClock` replaces the source for the whole process: ticks are
//! then the mock's nanoseconds. Without the feature there is no branch for it.
#![allow(unsafe_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

/// Where ticks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClockSource {
    /// The TSC when it is invariant, the monotonic clock otherwise.
    #[default]
    Auto,
    /// The TSC. Falls back to the monotonic clock where there is no invariant TSC.
    Tsc,
    /// `std::time::Instant`, in nanoseconds. Twice the cost of the TSC, correct everywhere.
    Monotonic,
}

const UNDECIDED: u8 = 0;
const TSC: u8 = 1;
const MONOTONIC: u8 = 2;

static SOURCE: AtomicU8 = AtomicU8::new(UNDECIDED);
static ANCHOR: OnceLock<Instant> = OnceLock::new();

/// Reads the clock in ticks. The hot path's only clock read.
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(feature = "test-util")]
    if mock::ACTIVE.load(Ordering::Relaxed) {
        return mock::now();
    }
    #[cfg(target_arch = "x86_64")]
    if SOURCE.load(Ordering::Relaxed) == TSC {
        return rdtsc();
    }
    ticks_slow()
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a register; it has no memory effects and every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cold]
fn ticks_slow() -> u64 {
    match SOURCE.load(Ordering::Relaxed) {
        UNDECIDED => {
            choose(ClockSource::Auto);
            ticks()
        }
        _ => monotonic_ns(),
    }
}

fn monotonic_ns() -> u64 {
    let anchor = *ANCHOR.get_or_init(Instant::now);
    u64::try_from(anchor.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Fixes the source for the process, unless it is fixed already. Returns the source in force.
pub(crate) fn choose(wanted: ClockSource) -> ClockSource {
    let pick = match wanted {
        ClockSource::Monotonic => MONOTONIC,
        ClockSource::Auto | ClockSource::Tsc if invariant_tsc() => TSC,
        ClockSource::Auto | ClockSource::Tsc => MONOTONIC,
    };
    ANCHOR.get_or_init(Instant::now);
    let _ = SOURCE.compare_exchange(UNDECIDED, pick, Ordering::Relaxed, Ordering::Relaxed);
    current()
}

/// The source in force (`Auto` while nothing has been read yet).
pub fn current() -> ClockSource {
    match SOURCE.load(Ordering::Relaxed) {
        TSC => ClockSource::Tsc,
        MONOTONIC => ClockSource::Monotonic,
        _ => ClockSource::Auto,
    }
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
fn invariant_tsc() -> bool {
    // CPUID leaf 0x8000_0007, EDX bit 8: the TSC ticks at a constant rate in every P/C-state.
    let max_ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
    let cpuid_says =
        max_ext >= 0x8000_0007 && std::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0;
    // The bit says nothing about the TSCs of different cores agreeing, and virtual machines often
    // hide it. Where the kernel says, trust the kernel: it uses the TSC as its clocksource only
    // after checking it is stable and synchronised across CPUs, and drops it when it is not.
    kernel_clocksource().map_or(cpuid_says, |source| source == "tsc")
}

// Miri runs no inline assembly (CPUID, RDTSC): there the clock is `Instant`, so the collector's
// publication can be checked under it.
#[cfg(any(not(target_arch = "x86_64"), miri))]
fn invariant_tsc() -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
fn kernel_clocksource() -> Option<String> {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Converts ticks to nanoseconds. Owned by the aggregator, which refines it as time passes.
#[derive(Debug, Clone)]
pub(crate) struct Calibration {
    tick0: u64,
    instant0: Instant,
    ns_per_tick: f64,
    /// Never re-measured: one tick is one nanosecond from tick 0 (engine tests drive time by hand).
    frozen: bool,
}

impl Calibration {
    /// Fixes the epoch: the tick reading that becomes nanosecond 0. Cheap (two tick reads and an
    /// `Instant`); `install` calls it so that no record can predate its collector's epoch.
    pub(crate) fn start() -> Self {
        let (tick0, instant0) = paired_read();
        Self {
            tick0,
            instant0,
            ns_per_tick: 1.0,
            frozen: false,
        }
    }

    /// One tick per nanosecond from tick 0, never re-measured: engine tests write records whose
    /// ticks are the nanoseconds they mean, whatever clock the process has.
    #[cfg(test)]
    pub(crate) fn fixed() -> Self {
        Self {
            tick0: 0,
            instant0: Instant::now(),
            ns_per_tick: 1.0,
            frozen: true,
        }
    }

    /// Measures the tick rate against the monotonic clock. For the TSC this spins until `settle`
    /// has passed since the epoch, on the calling thread (the aggregator's, never a producer's).
    pub(crate) fn settle(&mut self, settle: std::time::Duration) {
        if self.frozen || Self::unit_is_ns() {
            return;
        }
        while self.instant0.elapsed() < settle {
            std::hint::spin_loop();
        }
        self.refine();
    }

    fn unit_is_ns() -> bool {
        #[cfg(feature = "test-util")]
        if mock::ACTIVE.load(Ordering::Relaxed) {
            return true;
        }
        SOURCE.load(Ordering::Relaxed) != TSC
    }

    /// Re-measures the rate over the whole time since creation: the longer the baseline, the
    /// smaller the error of the two end readings.
    pub(crate) fn refine(&mut self) {
        if self.frozen {
            return;
        }
        if Self::unit_is_ns() {
            self.ns_per_tick = 1.0;
            return;
        }
        let (tick1, instant1) = paired_read();
        let ticks = tick1.saturating_sub(self.tick0);
        let ns = instant1.duration_since(self.instant0).as_nanos() as f64;
        if ticks > 0 && ns > 0.0 {
            self.ns_per_tick = ns / ticks as f64;
        }
    }

    /// A tick count (a duration) in nanoseconds.
    #[inline]
    pub(crate) fn to_ns(&self, ticks: u64) -> u64 {
        if self.ns_per_tick == 1.0 {
            ticks
        } else {
            (ticks as f64 * self.ns_per_tick) as u64
        }
    }

    /// A tick reading as nanoseconds since this calibration's epoch (0 for readings before it).
    #[inline]
    pub(crate) fn since_epoch_ns(&self, tick: u64) -> u64 {
        self.to_ns(tick.saturating_sub(self.tick0))
    }

    /// Now, as nanoseconds since the epoch.
    pub(crate) fn now_ns(&self) -> u64 {
        self.since_epoch_ns(ticks())
    }
}

/// A tick reading and an `Instant` taken as close together as we can: the tick is the midpoint of
/// two reads around the `Instant`.
fn paired_read() -> (u64, Instant) {
    let a = ticks();
    let instant = Instant::now();
    let b = ticks();
    // `b < a` if the thread moved to a core whose TSC is slightly behind: take the midpoint anyway.
    (a.min(b) + a.abs_diff(b) / 2, instant)
}

#[cfg(feature = "test-util")]
pub use mock::MockClock;

#[cfg(feature = "test-util")]
mod mock {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    pub(super) static ACTIVE: AtomicBool = AtomicBool::new(false);
    static NOW: AtomicU64 = AtomicU64::new(0);

    pub(super) fn now() -> u64 {
        NOW.load(Ordering::Acquire)
    }

    /// A process-wide hand-driven clock (feature `test-util`). While one is active every tick the
    /// library reads, on every thread, is its current value in nanoseconds.
    ///
    /// Activate it before the collector starts; the aggregator reads it too, so window rotation,
    /// deadline checks and SLA evaluation follow it and tests never sleep.
    #[derive(Debug, Clone, Copy)]
    pub struct MockClock(());

    impl MockClock {
        /// Switches the process to the mock clock, starting at `start_ns`.
        pub fn install(start_ns: u64) -> Self {
            NOW.store(start_ns, Ordering::Release);
            ACTIVE.store(true, Ordering::Release);
            MockClock(())
        }

        /// Sets the time, in nanoseconds. Time may not go backwards: an earlier value is ignored.
        pub fn set(&self, ns: u64) {
            NOW.fetch_max(ns, Ordering::AcqRel);
        }

        /// Moves time forward.
        pub fn advance(&self, by: Duration) {
            let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            let _ = NOW.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(by))
            });
        }

        /// The current time, in nanoseconds.
        pub fn now(&self) -> u64 {
            now()
        }
    }
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_monotonic_on_one_thread() {
        let mut last = ticks();
        for _ in 0..10_000 {
            let t = ticks();
            assert!(t >= last);
            last = t;
        }
    }

    #[test]
    fn calibration_converts_a_spin_to_roughly_its_length() {
        let mut cal = Calibration::start();
        cal.settle(std::time::Duration::from_millis(20));
        let t0 = ticks();
        let i0 = Instant::now();
        while i0.elapsed() < std::time::Duration::from_millis(5) {}
        let ns = cal.to_ns(ticks() - t0) as f64;
        let truth = i0.elapsed().as_nanos() as f64;
        // Not a timing assertion: both sides measure the same interval; only the rate is tested.
        assert!(
            (ns / truth - 1.0).abs() < 0.02,
            "calibrated {ns} ns vs {truth} ns"
        );
    }
}
