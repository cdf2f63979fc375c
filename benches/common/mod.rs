//! What both bench files share: the bare clock read every figure is divided by.

/// One TSC read, as bare as it gets: the baseline every figure is divided by.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Elsewhere the library's own tick stands in for the TSC (the figures then compare less).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn tsc() -> u64 {
    laptime::clock::ticks()
}
