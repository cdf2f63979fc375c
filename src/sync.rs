//! The one place atomics and cells come from: std normally, loom under `--cfg laptime_loom`, so
//! the ring and the registration protocol can be model-checked without touching their code.

#[cfg(not(laptime_loom))]
pub(crate) use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

#[cfg(laptime_loom)]
pub(crate) use loom::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

/// An `UnsafeCell` with loom's closure-based access, so the ring's slot accesses are tracked by
/// loom's causality checker under `--cfg laptime_loom` and compile to plain pointer accesses
/// otherwise.
#[cfg(not(laptime_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(laptime_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(laptime_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// A mutex whose `lock` returns the guard directly: parking_lot's normally (no poisoning), loom's
/// under `--cfg laptime_loom` so the registration handoff is model-checked with its real lock.
#[cfg(not(laptime_loom))]
pub(crate) use parking_lot::Mutex;

/// loom's mutex behind parking_lot's signature (`lock` returns the guard, no `LockResult`).
#[cfg(laptime_loom)]
#[derive(Debug)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(laptime_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        // loom's mutex never poisons (a panic ends the model), so there is nothing to recover.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
