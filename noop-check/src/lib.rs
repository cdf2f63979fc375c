//! An unpublished crate that depends on laptime with `default-features = false` (instrumentation
//! compiled out) and uses the whole API; `tests/noop.rs` proves it records nothing.
//!
//! Run it on its own: `cargo test -p laptime-noop-check`. Cargo unifies features across the
//! packages of one build, so building it together with laptime's own tests would turn `enable`
//! back on (the test then fails and says so).
