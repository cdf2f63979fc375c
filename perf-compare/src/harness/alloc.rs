//! A counting global allocator: the system allocator plus, per allocation, two counters for the
//! calling thread (allocations, bytes) and one for the process. The workloads read the calling
//! thread's counters around a timed chunk: what the measured code allocated on the hot path,
//! whatever background threads do meanwhile. The process counter also sees what flushes,
//! collectors and reporters allocate.
//!
//! Every peer runs with it, so its cost (a thread-local add and one relaxed atomic add per
//! allocation, a few ns) weighs only on peers that allocate.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counting;

static PROCESS_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // `const` and `Cell<u64>`: no lazy initialisation and no destructor, so reading them from
    // inside the allocator cannot allocate or recurse, also while the thread is being torn down.
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    static THREAD_BYTES: Cell<u64> = const { Cell::new(0) };
}

#[inline]
fn count(bytes: usize) {
    PROCESS_ALLOCS.fetch_add(1, Ordering::Relaxed);
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = THREAD_BYTES.try_with(|c| c.set(c.get() + bytes as u64));
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees are ours; the counting touches only atomics and const thread-locals, never memory
// the allocator hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero size), which is
        // `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: `ptr` came from `System` with `layout`, and the caller upholds `realloc`'s
        // contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (and reallocations) made by the calling thread so far, and their bytes.
pub fn thread() -> (u64, u64) {
    (THREAD_ALLOCS.with(Cell::get), THREAD_BYTES.with(Cell::get))
}

/// Allocations made by the whole process so far.
pub fn process() -> u64 {
    PROCESS_ALLOCS.load(Ordering::Relaxed)
}
