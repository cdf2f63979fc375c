#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)] // the checks of both targets live in one file; each uses one
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_config(data));
