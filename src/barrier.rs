//! A process-wide memory barrier, so that a rare operation (stopping a collector) can order itself
//! against every producer's hot path without the hot path paying for a fence.
//!
//! A producer announces a push with a plain store, then reads the control word; on x86 the store
//! may still sit in its core's store buffer when the load executes. The stopping aggregator sets
//! the control word, calls [`heavy`], and only then reads the announcements: `membarrier(2)` makes
//! every running thread of the process execute a full barrier, so after it returns each producer
//! either has its announcement visible or reads the control word after the barrier (and sees the
//! collector stopped). The producer's side is [`light`]: a compiler fence, free at run time.
//!
//! Where `membarrier` is missing (not Linux, or a kernel or sandbox without it) [`heavy`] falls
//! back to a full fence and a short sleep: store buffers drain in nanoseconds, so the stop is then
//! exact in practice but not by proof. Under Miri and loom the producer's side is a real `SeqCst`
//! fence, the pairing those checkers can verify.
#![allow(unsafe_code)]

use std::sync::atomic::{Ordering, compiler_fence, fence};

/// The producer's half: orders its announcement store before its control-word load against
/// [`heavy`].
#[inline(always)]
pub(crate) fn light() {
    if cfg!(any(miri, laptime_loom)) {
        fence(Ordering::SeqCst);
    } else {
        compiler_fence(Ordering::SeqCst);
    }
}

/// The stopper's half: a full barrier on every thread of the process. Slow (a system call, up to
/// a few milliseconds): for rare operations only.
pub(crate) fn heavy() {
    fence(Ordering::SeqCst);
    if cfg!(any(miri, laptime_loom)) || !membarrier() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, registering the process on first use, or
/// `MEMBARRIER_CMD_GLOBAL` where registration is refused. False when neither is available.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(miri),
    not(laptime_loom)
))]
fn membarrier() -> bool {
    use std::ffi::{c_int, c_long};
    use std::sync::OnceLock;

    const SYS_MEMBARRIER: c_long = if cfg!(target_arch = "x86_64") {
        324
    } else {
        283
    };
    const CMD_GLOBAL: c_int = 1;
    const CMD_PRIVATE_EXPEDITED: c_int = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: c_int = 1 << 4;

    unsafe extern "C" {
        fn syscall(number: c_long, ...) -> c_long;
    }
    let call = |cmd: c_int| {
        // SAFETY: membarrier takes two integers (command, flags) and a CPU id it ignores without
        // MEMBARRIER_CMD_FLAG_CPU; it reads and writes no memory of ours. An unknown command or
        // a kernel without it returns -1 (EINVAL, ENOSYS, EPERM), which we take as "not here".
        unsafe { syscall(SYS_MEMBARRIER, cmd, 0 as c_int, 0 as c_int) == 0 }
    };
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| call(CMD_REGISTER_PRIVATE_EXPEDITED)) {
        call(CMD_PRIVATE_EXPEDITED)
    } else {
        call(CMD_GLOBAL)
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(miri),
    not(laptime_loom)
)))]
fn membarrier() -> bool {
    false
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    #[test]
    fn the_barrier_is_available_here() {
        // The kernels this project runs on have had membarrier since 4.14; if this fails, the
        // stop is exact only in practice (see the module docs).
        if cfg!(all(target_os = "linux", not(miri))) {
            assert!(
                super::membarrier(),
                "membarrier(2) is refused on this machine"
            );
        }
    }
}
