//! Transparent huge pages for a large buffer that lives for one operation: the text exposition
//! of 20 000 series is ~33 MB written once into a fresh allocation (glibc maps anything past
//! 32 MiB on its own and unmaps it when freed), so every render faulted in ~8 000 pages of 4 KiB:
//! half of a render's time (`examples/query_timing.rs` under `perf record`). With
//! `MADV_HUGEPAGE` the kernel backs the buffer's aligned 2 MiB stretches with one page each, at
//! the first touch; a stretch never written is never backed, so advising room that an estimate
//! left over costs nothing.
//!
//! Advice only: where transparent huge pages are off (`never`), on other platforms, under Miri
//! or loom, nothing changes and the buffer works as before.
#![allow(unsafe_code)]

/// A huge page on the platforms that have them under that name (x86-64, and arm64 with 4 KiB
/// base pages). Only whole, aligned ones are advised: the edges of a buffer are left alone.
const HUGE_PAGE: usize = 2 << 20;

/// Below this, a buffer comes from the allocator's heap, shared with other allocations and
/// reused without faults; advice would outlive the buffer there.
const WORTH_IT: usize = 8 << 20;

/// An empty string with room for `room` bytes, backed by huge pages where that is worth it.
pub(crate) fn string_with_capacity(room: usize) -> String {
    let s = String::with_capacity(room);
    advise_huge(s.as_bytes(), s.capacity());
    s
}

/// An empty byte buffer with room for `room` bytes, backed by huge pages where that is worth it.
#[cfg(feature = "prometheus-native")]
pub(crate) fn bytes_with_capacity(room: usize) -> Vec<u8> {
    let v = Vec::with_capacity(room);
    advise_huge(&v, v.capacity());
    v
}

/// Asks for huge pages for the allocation that starts at `buf` and holds `capacity` bytes, if
/// it is at least [`WORTH_IT`] long. Returns whether the advice was given and accepted.
fn advise_huge(buf: &[u8], capacity: usize) -> bool {
    if capacity < WORTH_IT {
        return false;
    }
    let start = (buf.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
    let end = (buf.as_ptr() as usize + capacity) / HUGE_PAGE * HUGE_PAGE;
    end > start && madvise_huge(start, end - start)
}

#[cfg(all(target_os = "linux", not(miri), not(laptime_loom)))]
fn madvise_huge(start: usize, len: usize) -> bool {
    unsafe extern "C" {
        fn madvise(
            addr: *mut std::ffi::c_void,
            len: usize,
            advice: std::ffi::c_int,
        ) -> std::ffi::c_int;
    }
    /// `MADV_HUGEPAGE` in Linux's `mman-common.h`, the same on every architecture.
    const MADV_HUGEPAGE: std::ffi::c_int = 14;
    // SAFETY: the range is page-aligned and lies inside one live allocation the caller owns
    // (`advise_huge` rounds inward), and MADV_HUGEPAGE changes only how the kernel backs those
    // pages, never their contents or mapping: no memory is read, written or released.
    unsafe { madvise(start as *mut std::ffi::c_void, len, MADV_HUGEPAGE) == 0 }
}

#[cfg(not(all(target_os = "linux", not(miri), not(laptime_loom))))]
fn madvise_huge(_start: usize, _len: usize) -> bool {
    false
}

#[cfg(all(test, target_os = "linux", not(miri), not(laptime_loom)))]
mod tests {
    use super::*;

    /// The kernel's transparent-huge-page mode: `always`, `madvise` or `never`.
    fn thp_mode() -> Option<String> {
        let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
        let (_, rest) = text.split_once('[')?;
        Some(rest.split_once(']')?.0.to_owned())
    }

    #[test]
    fn a_small_buffer_is_left_alone() {
        let buf = String::with_capacity(WORTH_IT - 1);
        assert!(!advise_huge(buf.as_bytes(), buf.capacity()));
    }

    #[test]
    fn a_large_buffer_is_advised_and_keeps_what_it_holds() {
        let mut buf = String::with_capacity(4 * HUGE_PAGE + WORTH_IT);
        buf.push_str("written before");
        let advised = advise_huge(buf.as_bytes(), buf.capacity());
        // Where the kernel has huge pages on offer the advice must be taken; `never` refuses it.
        if matches!(thp_mode().as_deref(), Some("always" | "madvise")) {
            assert!(advised, "madvise(MADV_HUGEPAGE) was refused");
        }
        buf.extend(std::iter::repeat_n('x', 3 * HUGE_PAGE));
        assert!(buf.starts_with("written before"));
        assert_eq!(buf.len(), 14 + 3 * HUGE_PAGE);
    }
}
