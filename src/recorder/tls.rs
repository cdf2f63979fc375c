//! The thread's slot for its ring: what every kept span reaches first.
//!
//! Two thread-locals, because only one of them needs a destructor. `HOT` has none and a `const`
//! initializer, so reading it is one `%fs`-relative load with no "initialized yet?" or "destroyed
//! yet?" test: it holds a pointer to the thread's [`Local`], a re-entry flag and the sampler.
//! `OWNER` owns the `Local` behind that pointer and drops it at thread exit, after clearing the
//! pointer, so a span recorded by a later thread-local destructor finds no ring and is counted as
//! dropped instead of touching freed memory.
//!
//! The pointer is dereferenced only inside [`with_local`], which sets the re-entry flag first: a
//! span recorded re-entrantly (by a signal handler, or by an allocator the registration called)
//! sees the flag and is counted as dropped, as `RefCell::try_borrow_mut` made it before.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::sync::atomic::{Ordering, compiler_fence};

use super::sampling::Sampler;
use super::thread::Local;

/// The per-thread state read on every kept or sampled call.
pub(super) struct Hot {
    /// The `Local` that `OWNER` holds, or null (not registered, or torn down).
    local: Cell<*mut Local>,
    /// Set while `local` is in use, so a re-entrant call cannot take a second `&mut`.
    busy: Cell<bool>,
    pub(super) sampler: Sampler,
}

/// Owns the thread's `Local`; its destructor clears `HOT`'s pointer before freeing it.
struct Owner(RefCell<Option<Box<Local>>>);

impl Drop for Owner {
    fn drop(&mut self) {
        HOT.with(|hot| hot.local.set(std::ptr::null_mut()));
        // The `Local` (and its ring's producer) drops here: the ring closes.
        self.0.get_mut().take();
    }
}

thread_local! {
    static HOT: Hot = const {
        Hot { local: Cell::new(std::ptr::null_mut()), busy: Cell::new(false), sampler: Sampler::new() }
    };
    static OWNER: Owner = const { Owner(RefCell::new(None)) };
}

/// Why [`with_local`] did not run its closure.
pub(super) enum Unavailable<A> {
    /// The thread is already inside [`with_local`] (re-entered): the caller counts a drop.
    Busy,
    /// The thread has no `Local` (first record, or torn down): the caller may register one, and
    /// gets its argument back to run it then.
    Empty(A),
}

/// Runs `f(local, arg)` on this thread's `Local`, or hands `arg` back when there is none.
#[inline(always)]
pub(super) fn with_local<A, R>(
    arg: A,
    f: impl FnOnce(&mut Local, A) -> R,
) -> Result<R, Unavailable<A>> {
    // SAFETY: see `hot`.
    let hot = unsafe { &*hot() };
    {
        if hot.busy.get() {
            return Err(Unavailable::Busy);
        }
        let local = hot.local.get();
        if local.is_null() {
            return Err(Unavailable::Empty(arg));
        }
        hot.busy.set(true);
        // A signal handler on this thread that records must see the flag before we touch the
        // `Local`: order the store before the accesses below (free at run time).
        compiler_fence(Ordering::SeqCst);
        // SAFETY: `local` points into the `Box` that `OWNER` holds on this thread; `OWNER` clears
        // the pointer before freeing it and `install` sets it only to the box it keeps, so it is
        // live. `busy` was clear and is now set, and every other `&mut` is made here under the
        // same flag, so this is the only reference for the duration of `f`.
        let r = f(unsafe { &mut *local }, arg);
        compiler_fence(Ordering::SeqCst);
        hot.busy.set(false);
        Ok(r)
    }
}

/// This thread's `HOT`. A pointer, so that the access inlines into the hot path (`LocalKey::with`
/// with a closure doing the work did not). Dereferencing it is sound on this thread for as long
/// as the thread runs: `HOT` has no destructor, so its storage outlives every use, and `Hot` is
/// not `Sync`, so a reference made from it cannot leave the thread.
#[inline(always)]
fn hot() -> *const Hot {
    HOT.with(std::ptr::from_ref)
}

/// Runs `make` with the slot marked busy (so any recording it does re-entrantly is refused and
/// counted) and installs the `Local` it returns as this thread's, dropping the one before.
/// `None` when `make` gives none, or the thread is exiting (then the new `Local` drops here).
#[cold]
pub(super) fn install(make: impl FnOnce() -> Option<Local>) -> Option<()> {
    let entered = HOT.with(|hot| !hot.busy.replace(true));
    if !entered {
        return None;
    }
    let installed = make().and_then(|local| {
        OWNER
            .try_with(|owner| {
                let mut slot = owner.0.borrow_mut();
                let boxed = slot.insert(Box::new(local));
                HOT.with(|hot| hot.local.set(&mut **boxed));
            })
            .ok()
    });
    HOT.with(|hot| hot.busy.set(false));
    installed
}

/// The thread's sampler (its skip budget and random state). Sampling needs no ring: it works
/// before registration and after teardown.
#[inline(always)]
pub(super) fn with_sampler<R>(f: impl FnOnce(&Sampler) -> R) -> R {
    // SAFETY: see `hot`.
    f(unsafe { &(*hot()).sampler })
}
