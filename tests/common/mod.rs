//! Helpers shared by the integration tests.
//!
//! The collector, the stage registry and the mock clock are process-wide. nextest runs every test
//! in its own process; `cargo test` runs a file's tests as threads of one process, so each test
//! takes `serial()` and installs (then drops) its own collector.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the tests of one binary; a failed test does not poison the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs `builder`, panicking with the typed error's message if it fails.
pub fn install(builder: laptime::CollectorBuilder) -> laptime::CollectorHandle {
    builder
        .install()
        .unwrap_or_else(|e| panic!("install failed: {e}"))
}

/// The process-wide mock clock, installed on first use at 1 s (feature `test-util`). Install it
/// before the first collector of the process.
#[cfg(feature = "test-util")]
pub fn clock() -> laptime::clock::MockClock {
    static CLOCK: std::sync::OnceLock<laptime::clock::MockClock> = std::sync::OnceLock::new();
    *CLOCK.get_or_init(|| laptime::clock::MockClock::install(1_000_000_000))
}

/// Proptest cases: `PROPTEST_CASES` if set, else a count that keeps a file quick on two cores.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// The proptest configuration of a model file: [`cases`] cases, failures persisted to
/// `proptest-regressions/<name>.txt` (commit them).
pub fn proptest_config(name: &str) -> proptest::test_runner::Config {
    let path: &'static str = Box::leak(format!("proptest-regressions/{name}.txt").into_boxed_str());
    proptest::test_runner::Config {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(path),
        )),
        ..proptest::test_runner::Config::default()
    }
}

/// A fresh, leaked stage name, unique in this process.
pub fn unique(prefix: &str) -> &'static str {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Box::leak(format!("{prefix}_{n}").into_boxed_str())
}

/// The values HdrHistogram's `recordValueWithExpectedInterval` loop adds for a span of `d` with
/// expected interval `i`, one at a time: the reference for coordinated-omission correction.
pub fn co_added(d: u64, i: u64) -> Vec<u64> {
    let mut out = Vec::new();
    if d <= i {
        return out;
    }
    let mut missing = d - i;
    while missing >= i {
        out.push(missing);
        missing -= i;
    }
    out
}
