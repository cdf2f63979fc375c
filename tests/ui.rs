//! The macros' accepted and rejected forms, compiled by trybuild. Rejections are compared with the
//! committed `tests/ui/fail/*.stderr`; after an intended change to a message, regenerate them with
//! `TRYBUILD=overwrite cargo test --test ui` and review the diff.
#![cfg(feature = "enable")]

#[test]
fn macros() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
