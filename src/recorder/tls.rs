//! The thread's slot for its ring: what every kept span reaches first.
//!
//! Two thread-locals, because only one of them needs a destructor. `HOT` has none and a `const`
//! initializer, so where the target has native thread-locals (x86-64 and aarch64 Linux among
//! them) reading it is one `%fs`-relative load with no "initialized yet?" or "destroyed yet?"
//! test: it holds a pointer to the thread's [`Local`], a busy flag and the sampler. `OWNER` owns
//! the `Local` behind that pointer and drops it at thread exit, after clearing the pointer and
//! setting the busy flag for good, so a span recorded by a later thread-local destructor finds
//! the slot refused and is counted as dropped: it neither touches freed memory nor registers a
//! new ring that would die with the thread.
//!
//! The pointer is dereferenced only inside [`with_local`], which sets the busy flag first: a
//! span recorded re-entrantly (by a signal handler, or by an allocator the registration called)
//! sees the flag and is counted as dropped, as `RefCell::try_borrow_mut` made it before. (The
//! sampler is not guarded: a signal handler that samples in the middle of a decision can only
//! make two decisions share a draw, never make memory unsafe.)
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::sync::atomic::{Ordering, compiler_fence};

use super::sampling::Sampler;
use super::thread::Local;

/// The per-thread state read on every kept or sampled call.
pub(super) struct Hot {
    /// The `Local` that `OWNER` holds, or null (not registered, or torn down).
    local: Cell<*mut Local>,
    /// Set while `local` is in use, so a re-entrant call cannot take a second `&mut`; set for
    /// good once `OWNER` is gone.
    busy: Cell<bool>,
    pub(super) sampler: Sampler,
}

/// Owns the thread's `Local`; its destructor retires the slot before freeing it.
struct Owner(RefCell<Option<Box<Local>>>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(hot) = hot() {
            // SAFETY: see `hot`.
            let hot = unsafe { &*hot };
            hot.busy.set(true);
            hot.local.set(std::ptr::null_mut());
        }
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

/// This thread's `HOT`, or `None` where the platform has already destroyed it (targets without
/// native thread-locals keep it behind an OS key, which is destroyed at exit; elsewhere this is
/// never `None`). A pointer, so that the access inlines into the hot path (`LocalKey::with` with
/// a closure doing the work did not). Dereferencing it is sound on this thread while the thread
/// runs and the value is not destroyed: a native `HOT` has no destructor, so its storage outlives
/// every use, and `Hot` is not `Sync`, so a reference made from it cannot leave the thread.
#[inline(always)]
fn hot() -> Option<*const Hot> {
    HOT.try_with(std::ptr::from_ref).ok()
}

/// Clears the busy flag when dropped, also if the closure run under it unwinds (which would
/// otherwise refuse every later record of the thread).
struct Release<'a>(&'a Hot);

impl Drop for Release<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        self.0.busy.set(false);
    }
}

/// Sets `hot`'s busy flag, or `None` if it was set.
#[inline(always)]
fn enter(hot: &Hot) -> Option<Release<'_>> {
    if hot.busy.replace(true) {
        return None;
    }
    // A signal handler on this thread that records must see the flag before we touch the
    // `Local`: order the store before the accesses that follow (free at run time).
    compiler_fence(Ordering::SeqCst);
    Some(Release(hot))
}

/// Why [`with_local`] did not run its closure.
pub(super) enum Unavailable<A> {
    /// The thread is already inside [`with_local`] (re-entered), or exiting: the caller counts a
    /// drop.
    Busy,
    /// The thread has no `Local` (its first record): the caller may register one, and gets its
    /// argument back to run it then.
    Empty(A),
}

/// Runs `f(local, arg)` on this thread's `Local`, or hands `arg` back when there is none.
#[inline(always)]
pub(super) fn with_local<A, R>(
    arg: A,
    f: impl FnOnce(&mut Local, A) -> R,
) -> Result<R, Unavailable<A>> {
    let Some(hot) = hot() else {
        return Err(Unavailable::Busy);
    };
    // SAFETY: see `hot`.
    let hot = unsafe { &*hot };
    if hot.busy.get() {
        return Err(Unavailable::Busy);
    }
    let local = hot.local.get();
    if local.is_null() {
        return Err(Unavailable::Empty(arg));
    }
    let _busy = enter(hot);
    // SAFETY: `local` points into the `Box` that `OWNER` holds on this thread; `OWNER` clears
    // the pointer before freeing it and `install` sets it only to the box it keeps, so it is
    // live. `busy` was clear and is now set, and every other `&mut` is made here under the
    // same flag, so this is the only reference for the duration of `f`.
    Ok(f(unsafe { &mut *local }, arg))
}

/// Runs `make` with the slot marked busy (so any recording it does re-entrantly is refused and
/// counted) and installs the `Local` it returns as this thread's, dropping the one before.
/// `None` when the slot is busy or retired, when `make` gives none, or when the thread is
/// exiting (then `make` is not called: a ring registered now would die with the thread).
#[cold]
pub(super) fn install(make: impl FnOnce() -> Option<Local>) -> Option<()> {
    // SAFETY: see `hot`.
    let hot = unsafe { &*hot()? };
    let _busy = enter(hot)?;
    OWNER
        .try_with(|owner| {
            let mut slot = owner.0.try_borrow_mut().ok()?;
            let boxed = slot.insert(Box::new(make()?));
            hot.local.set(&mut **boxed);
            Some(())
        })
        .ok()
        .flatten()
}

/// The thread's sampler (its skip budget and random state), or `None` once the platform has
/// destroyed it. Sampling needs no ring: it works before registration.
#[inline(always)]
pub(super) fn with_sampler<R>(f: impl FnOnce(&Sampler) -> R) -> Option<R> {
    // SAFETY: see `hot`.
    hot().map(|hot| f(unsafe { &(*hot).sampler }))
}
