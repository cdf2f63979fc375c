//! The process's collector globals: which collector is current, the lazily started default one,
//! and the sampling rate the user asked for under the one adaptive sampling holds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

use super::{CollectorBuilder, CollectorHandle, CollectorShared};
use crate::record::CONTROL;
use crate::sync::Arc;

/// Serialises installs and the lazy start of the default collector.
pub(super) static INSTALL: Mutex<()> = Mutex::new(());
/// The current collector, for registration (slow path) and queries (lock-free loads).
pub(super) static CURRENT: ArcSwapOption<CollectorShared> = ArcSwapOption::const_empty();
pub(super) static NEXT_GENERATION: AtomicU64 = AtomicU64::new(0);
pub(super) static NEXT_RING_ID: AtomicU64 = AtomicU64::new(0);
/// Set once a collector was installed, or the default one failed to start: from then on the first
/// span of a thread no longer starts a default collector.
pub(super) static NO_LAZY_DEFAULT: AtomicBool = AtomicBool::new(false);
/// The lazily started default collector's handle: never dropped, it runs for the process.
pub(super) static DEFAULT: Mutex<Option<CollectorHandle>> = Mutex::new(None);
/// The sampling threshold the user asked for; adaptive sampling lowers the live one below it.
pub(super) static BASE_SAMPLING: AtomicU64 = AtomicU64::new(u64::MAX);
/// The threshold adaptive sampling holds the rate to while engaged; `u64::MAX` when not.
pub(super) static ADAPTIVE_REDUCED: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets the rate the user asked for; the live rate is it, or lower while adaptive sampling holds.
pub(crate) fn set_base_sampling(threshold: u64) {
    BASE_SAMPLING.store(threshold, Ordering::Relaxed);
    apply_sampling();
}

/// Sets adaptive sampling's ceiling (`u64::MAX` = not engaged).
pub(crate) fn set_adaptive_ceiling(threshold: u64) {
    ADAPTIVE_REDUCED.store(threshold, Ordering::Relaxed);
    apply_sampling();
}

fn apply_sampling() {
    let base = BASE_SAMPLING.load(Ordering::Relaxed);
    let ceiling = ADAPTIVE_REDUCED.load(Ordering::Relaxed);
    CONTROL.set_sampling_threshold(base.min(ceiling));
}

/// The current collector, starting the default one if none was ever installed.
#[cold]
pub(crate) fn current_or_default() -> Option<(Arc<CollectorShared>, u64)> {
    if let Some(c) = CURRENT.load_full() {
        return Some((c.clone(), c.generation));
    }
    if NO_LAZY_DEFAULT.load(Ordering::Relaxed) {
        // A collector was installed (and stopped), or the default one could not start: stay
        // quiet until the next install, without taking the lock on every call.
        return None;
    }
    let _lock = INSTALL.lock();
    if let Some(c) = CURRENT.load_full() {
        return Some((c.clone(), c.generation));
    }
    if NO_LAZY_DEFAULT.load(Ordering::Relaxed) {
        return None;
    }
    let Ok(handle) = CollectorBuilder::default().install_locked() else {
        NO_LAZY_DEFAULT.store(true, Ordering::Relaxed);
        return None;
    };
    let shared = handle.shared.clone();
    *DEFAULT.lock() = Some(handle);
    Some((shared.clone(), shared.generation))
}
