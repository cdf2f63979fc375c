//! A bounded, wait-free single-producer single-consumer ring of `Copy` records.
//!
//! One of the four small modules with `unsafe` code (with the TSC read in `clock.rs`, the barrier
//! and the hot path's thread-local slot in `recorder/tls.rs`). The design
//! follows rtrb: the SPSC property is a type-level fact (`ring()` returns one [`Producer`] and one
//! [`Consumer`], each `Send`, neither `Sync`, writes take `&mut self`), head and tail live on their
//! own cache lines, and each side caches the other's index so the shared atomic is read only when
//! the ring looks full (producer) or empty (consumer).
//!
//! A full ring hands the record back (`Err(record)`); the caller counts the drop. Nothing spills.
//!
//! Why not rtrb itself: the engine needs four things its API does not give. Absolute push and pop
//! counts ([`Consumer::pushed`], [`Consumer::popped`]), so the accounting identity
//! `produced == recorded + dropped + in rings` is read off the ring's own indices rather than
//! summed; the producer's occupancy check every quarter ring that unparks the aggregator once the
//! ring is half full; batch visits that advance the head past every record already handed out
//! even if the consumer panics mid-batch (so a record that crashes the aggregator is never handed
//! out twice); and atomics from the crate's `sync` shim, so loom model-checks this ring and the
//! handoff around it (rtrb does not build under loom). The design is rtrb's; the extras are ~100
//! lines, all covered by loom, Miri and the `VecDeque` model test.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::{Arc, AtomicBool, AtomicUsize, Ordering, UnsafeCell};

struct Shared<T> {
    /// Index of the next slot the consumer reads. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Index of the next slot the producer writes. Written only by the producer.
    /// Invariant: `tail - head <= slots.len()` (wrapping arithmetic).
    tail: CachePadded<AtomicUsize>,
    /// Set once, by the producer's `Drop`, after its last push.
    closed: AtomicBool,
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: a slot is written only by the one producer while it lies outside `head..tail`, and read
// only by the one consumer while it lies inside; the Release store of `tail` (resp. `head`) and the
// Acquire load on the other side order those accesses. Values cross threads, hence `T: Send`.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: the shared block owns its `T`s; moving it to another thread moves them, hence `T: Send`.
unsafe impl<T: Send> Send for Shared<T> {}

/// The capacity [`ring`] gives for a requested one: rounded up to a power of two, minimum 2.
///
/// # Panics
/// If `requested` rounds up past `usize::MAX` (the collector caps rings far below that).
pub fn capacity_for(requested: usize) -> usize {
    requested
        .max(2)
        .checked_next_power_of_two()
        .expect("ring capacity must round up to a power of two that fits in usize")
}

/// Creates a ring holding [`capacity_for`]`(capacity)` records.
///
/// Allocates once, here; pushing and popping never allocate.
pub fn ring<T: Copy>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity_for(capacity);
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect::<Vec<_>>()
        .into_boxed_slice();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        closed: AtomicBool::new(false),
        mask: capacity - 1,
        slots,
    });
    let producer = Producer {
        shared: shared.clone(),
        tail: 0,
        cached_head: 0,
        not_sync: PhantomData,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        cached_tail: 0,
        not_sync: PhantomData,
    };
    (producer, consumer)
}

/// The writing end. Owned by one thread at a time.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our own copy of `shared.tail` (only we write it).
    tail: usize,
    /// Last `head` we read; the real head is at or past it.
    cached_head: usize,
    not_sync: PhantomData<Cell<()>>,
}

impl<T: Copy> Producer<T> {
    /// Appends `value`, or hands it back if the ring is full. Never blocks, never allocates.
    ///
    /// On success returns an upper bound on the ring's occupancy after the push (exact when the
    /// consumer has not popped since the producer last looked at its index).
    #[inline]
    pub fn push(&mut self, value: T) -> Result<usize, T> {
        if self.free_for(1) == 0 {
            return Err(value);
        }
        let index = self.tail & self.shared.mask;
        // SAFETY: `index <= mask < slots.len()`.
        let slot = unsafe { self.shared.slots.get_unchecked(index) };
        // SAFETY: the slot is outside `head..tail` (the ring is not full), so the consumer does not
        // read it until we publish the new tail below; we are the only producer.
        slot.with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
        self.tail = self.tail.wrapping_add(1);
        // Release: the slot write above is visible to a consumer that Acquire-loads this tail.
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(self.tail.wrapping_sub(self.cached_head))
    }

    /// Appends the values `value(0)`, `value(1)`, … up to `n` of them, as many as fit, and
    /// publishes them with one store: a consumer sees all of them or none. Returns how many were
    /// written (`value` is not called for the rest). Never blocks, never allocates.
    #[inline]
    pub fn push_with(&mut self, n: usize, mut value: impl FnMut(usize) -> T) -> usize {
        let written = n.min(self.free_for(n));
        // Read once: a slot write could alias them as far as the compiler knows.
        let (mask, slots, tail) = (self.shared.mask, &self.shared.slots[..], self.tail);
        for i in 0..written {
            let index = tail.wrapping_add(i) & mask;
            // SAFETY: `index <= mask < slots.len()`.
            let slot = unsafe { slots.get_unchecked(index) };
            let v = value(i);
            // SAFETY: the slot is among the `free` ones outside `head..tail`, which the consumer
            // does not read until the tail published below covers it; we are the only producer.
            slot.with_mut(|p| unsafe { p.write(MaybeUninit::new(v)) });
        }
        if written > 0 {
            self.tail = self.tail.wrapping_add(written);
            // Release: every slot write above is visible to a consumer that Acquire-loads it.
            self.shared.tail.store(self.tail, Ordering::Release);
        }
        written
    }

    /// Free slots: as the cached head says, or, when that is fewer than `want`, as the consumer's
    /// index says now.
    #[inline(always)]
    fn free_for(&mut self, want: usize) -> usize {
        let capacity = self.shared.mask + 1;
        let free = capacity - self.tail.wrapping_sub(self.cached_head);
        if free >= want {
            return free;
        }
        // Acquire: the consumer's reads of the slots it released happen before our writes.
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        capacity - self.tail.wrapping_sub(self.cached_head)
    }

    /// Re-reads the consumer's index and returns the exact occupancy at this instant.
    pub fn refresh_len(&mut self) -> usize {
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.tail.wrapping_sub(self.cached_head)
    }

    /// How many records the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Release: every push happened before this, so a consumer that sees `closed` (Acquire) and
        // then drains once more has seen everything.
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// What a [`Consumer::visit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// The producer is alive; `more` when a full batch was drained (there may be more waiting).
    Drained {
        /// A full batch was drained.
        more: bool,
    },
    /// The producer was gone before the visit and the ring is now empty for good: free it.
    Finished,
}

/// The reading end. Owned by one thread at a time.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Our own copy of `shared.head` (only we write it).
    head: usize,
    /// Last `tail` we read; the real tail is at or past it.
    cached_tail: usize,
    not_sync: PhantomData<Cell<()>>,
}

/// Advances the consumer's head past the records passed so far, when `drain` ends or unwinds.
struct HeadAdvance<'a, T> {
    consumer: &'a mut Consumer<T>,
    passed: usize,
}

impl<T> Drop for HeadAdvance<'_, T> {
    fn drop(&mut self) {
        if self.passed > 0 {
            let c = &mut *self.consumer;
            c.head = c.head.wrapping_add(self.passed);
            // Release: our reads of these slots happen before the producer reuses them.
            c.shared.head.store(c.head, Ordering::Release);
        }
    }
}

impl<T: Copy> Consumer<T> {
    /// Removes the oldest record, if any.
    pub fn pop(&mut self) -> Option<T> {
        let mut out = None;
        self.drain(1, |v| out = Some(v));
        out
    }

    /// Passes up to `limit` of the oldest records to `f`, oldest first, and releases their slots
    /// to the producer in one store. Returns how many were passed.
    ///
    /// If `f` panics, the records already passed to it (the one it panicked on included) stay
    /// consumed: a record that makes the consumer panic is not handed to it again.
    pub fn drain(&mut self, limit: usize, mut f: impl FnMut(T)) -> usize {
        if self.cached_tail.wrapping_sub(self.head) < limit {
            // The cached view cannot satisfy the request: look at the real tail.
            // Acquire: pairs with the producer's Release store; the slot writes are visible.
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        }
        let available = self.cached_tail.wrapping_sub(self.head);
        let n = available.min(limit);
        let mut release = HeadAdvance {
            consumer: self,
            passed: 0,
        };
        while release.passed < n {
            let consumer = &*release.consumer;
            let index = consumer.head.wrapping_add(release.passed) & consumer.shared.mask;
            // SAFETY: `index <= mask < slots.len()`.
            let slot = unsafe { consumer.shared.slots.get_unchecked(index) };
            // SAFETY: the slot is inside `head..tail`: the producer initialised it and published it
            // with the Release store we Acquire-loaded, and it does not touch it until we advance
            // `head` past it (in `HeadAdvance::drop`). `T: Copy`, so reading leaves nothing to drop.
            let value = slot.with(|p| unsafe { (*p).assume_init_read() });
            release.passed += 1;
            f(value);
        }
        n
    }

    /// One visit by a consumer that frees the ring once its producer is gone: reads
    /// [`Consumer::is_closed`] *before* draining, then drains one batch of `batch` records, or, if
    /// the ring was closed, drains it to empty. Because the producer's last push happened before
    /// it closed the ring, a visit that reports [`Visit::Finished`] has seen every record.
    pub fn visit(&mut self, batch: usize, mut f: impl FnMut(T)) -> Visit {
        let closed = self.is_closed();
        loop {
            let n = self.drain(batch, &mut f);
            if n < batch {
                return if closed {
                    Visit::Finished
                } else {
                    Visit::Drained { more: false }
                };
            }
            if !closed {
                return Visit::Drained { more: true };
            }
        }
    }

    /// Passes every record waiting right now to `f`, oldest first, without consuming any of
    /// them, and returns the tail it read: `tail - popped()` records were passed. For counting
    /// what is still in flight; a later drain hands the same records out again.
    pub fn peek(&mut self, mut f: impl FnMut(&T)) -> usize {
        // Acquire: pairs with the producer's Release store; the slot writes are visible.
        let tail = self.shared.tail.load(Ordering::Acquire);
        self.cached_tail = tail;
        let mut i = self.head;
        while i != tail {
            // SAFETY: `i & mask <= mask < slots.len()`.
            let slot = unsafe { self.shared.slots.get_unchecked(i & self.shared.mask) };
            // SAFETY: the slot is inside `head..tail`, published by the Release store we just
            // Acquire-loaded; the producer does not touch it until `head` moves past it, which
            // only this consumer does (and not here). `T: Copy`: a copy leaves nothing to drop.
            let value = slot.with(|p| unsafe { (*p).assume_init_read() });
            f(&value);
            i = i.wrapping_add(1);
        }
        tail
    }

    /// Records currently waiting (a snapshot; the producer may add more at any time).
    pub fn len(&self) -> usize {
        self.shared
            .tail
            .load(Ordering::Acquire)
            .wrapping_sub(self.head)
    }

    /// Whether nothing is waiting right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the producer has been dropped. Once this is true, one more drain empties the ring
    /// for good.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// How many records the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Total records ever popped, modulo `usize`.
    pub fn popped(&self) -> usize {
        self.head
    }

    /// Total records ever pushed, modulo `usize`, as the producer has published so far.
    pub fn pushed(&self) -> usize {
        self.shared.tail.load(Ordering::Acquire)
    }
}

/// Hands memory freed by reclaimed rings back to the OS. A ring (256 KiB by default) is
/// allocated by its thread and freed by the aggregator when the thread has exited; glibc keeps
/// such freed chunks resident in the arena of the thread that allocated them, so a process that
/// keeps starting short-lived threads would grow by megabytes that are free but never returned.
/// `malloc_trim(0)` releases them (it also `madvise`s free pages inside every arena). The
/// aggregator calls it at most once a second, only after reclaiming rings, and not at all with
/// `CollectorBuilder::with_memory_release(false)`: it takes the arenas' locks, which only
/// allocating threads wait for — never the hot path, which does not allocate. Other allocators
/// and platforms: nothing to do here.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(miri), not(laptime_loom)))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's `malloc_trim` takes no pointer and may be called from any thread at
        // any time; it only returns free memory of the process's own heaps to the OS.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(all(test, not(laptime_loom)))]
mod tests {
    use super::*;

    #[test]
    fn fills_to_capacity_then_hands_back() {
        let (mut p, mut c) = ring::<u32>(4);
        for i in 0..4 {
            assert!(p.push(i).is_ok());
        }
        assert_eq!(p.push(99), Err(99));
        assert_eq!(c.pop(), Some(0));
        assert!(p.push(4).is_ok());
        let mut got = Vec::new();
        c.drain(usize::MAX, |v| got.push(v));
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn peek_sees_what_is_waiting_and_consumes_nothing() {
        let (mut p, mut c) = ring::<u32>(4);
        let mut seen = Vec::new();
        assert_eq!(c.peek(|v| seen.push(*v)), 0);
        assert!(seen.is_empty());
        for i in 0..3 {
            p.push(i).unwrap();
        }
        assert_eq!(c.pop(), Some(0));
        p.push(3).unwrap();
        p.push(4).unwrap(); // wraps
        assert_eq!(c.peek(|v| seen.push(*v)), 5);
        assert_eq!(seen, vec![1, 2, 3, 4]);
        let mut drained = Vec::new();
        c.drain(usize::MAX, |v| drained.push(v));
        assert_eq!(drained, seen);
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        let (p, c) = ring::<u8>(5);
        assert_eq!(p.capacity(), 8);
        assert_eq!(c.capacity(), 8);
        let (p, _c) = ring::<u8>(0);
        assert_eq!(p.capacity(), 2);
    }

    #[test]
    fn push_reports_occupancy() {
        let (mut p, mut c) = ring::<u8>(8);
        assert_eq!(p.push(1), Ok(1));
        assert_eq!(p.push(2), Ok(2));
        c.pop();
        assert_eq!(p.refresh_len(), 1);
    }

    #[test]
    fn close_is_seen_after_producer_drop() {
        let (mut p, mut c) = ring::<u64>(4);
        p.push(7).unwrap();
        assert!(!c.is_closed());
        drop(p);
        assert!(c.is_closed());
        assert_eq!(c.pop(), Some(7));
        assert!(c.is_empty());
    }

    #[test]
    fn a_panicking_consumer_does_not_see_the_same_record_twice() {
        let (mut p, mut c) = ring::<u32>(8);
        for i in 0..5 {
            p.push(i).unwrap();
        }
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.drain(usize::MAX, |v| assert_ne!(v, 2, "poisoned record"));
        }));
        assert!(caught.is_err());
        let mut rest = Vec::new();
        c.drain(usize::MAX, |v| rest.push(v));
        assert_eq!(rest, vec![3, 4]);
        assert_eq!(p.refresh_len(), 0);
    }

    #[test]
    fn a_batch_writes_what_fits_across_the_wrap_and_publishes_once() {
        let (mut p, mut c) = ring::<u32>(8);
        assert_eq!(p.push_with(6, |i| i as u32), 6);
        c.drain(5, drop);
        // Slots 6, 7, then 0..: the batch wraps; 8 − 1 are free, 9 asked.
        assert_eq!(p.push_with(9, |i| 100 + i as u32), 7);
        let mut got = Vec::new();
        c.drain(usize::MAX, |v| got.push(v));
        assert_eq!(got, vec![5, 100, 101, 102, 103, 104, 105, 106]);
        assert_eq!(p.push_with(0, |_| unreachable!("nothing asked")), 0);
        assert_eq!(c.pushed(), 13);
    }

    #[test]
    fn two_threads_batches_keep_order_and_lose_nothing() {
        let n: u64 = if cfg!(miri) { 200 } else { 200_000 };
        let (mut p, mut c) = ring::<u64>(16);
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < n {
                let want = ((i % 7) as usize + 1).min((n - i) as usize);
                let written = p.push_with(want, |k| i + k as u64);
                i += written as u64;
                if written == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let mut expected = 0;
        while expected < n {
            if !drain_in_sequence(&mut c, &mut expected) {
                std::thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(c.pop(), None);
    }

    /// Drains what is waiting, checking it continues the sequence at `expected`; false if
    /// nothing was.
    fn drain_in_sequence(c: &mut Consumer<u64>, expected: &mut u64) -> bool {
        c.drain(usize::MAX, |v| {
            assert_eq!(v, *expected);
            *expected += 1;
        }) > 0
    }

    #[test]
    fn wraps_many_times() {
        let (mut p, mut c) = ring::<usize>(4);
        let n = if cfg!(miri) { 50 } else { 10_000 };
        for i in 0..n {
            p.push(i).unwrap();
            assert_eq!(c.pop(), Some(i));
        }
        assert_eq!(c.popped(), n);
    }

    #[test]
    fn two_threads_keep_order_and_lose_nothing() {
        let n: u64 = if cfg!(miri) { 300 } else { 200_000 };
        let (mut p, mut c) = ring::<u64>(16);
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < n {
                if p.push(i).is_ok() {
                    i += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut expected = 0;
        while expected < n {
            // A peek while the producer writes sees the next records in order, and leaves them.
            let mut next = expected;
            let tail = c.peek(|v| {
                assert_eq!(*v, next);
                next += 1;
            });
            assert_eq!(tail as u64, next);
            if !drain_in_sequence(&mut c, &mut expected) {
                std::thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert!(c.is_closed());
        assert_eq!(c.pop(), None);
    }
}
