//! Replays the inputs the fuzzers kept (`fuzz/regressions/<target>/`: crashes found and fixed, and
//! hand-made edge cases) through the same checks the fuzz targets run, on stable, in every test
//! run. Add a file there whenever `cargo fuzz` finds something.

#[cfg(all(feature = "profile", feature = "config"))]
#[path = "../fuzz/checks.rs"]
mod checks;

#[cfg(feature = "http")]
#[path = "../fuzz/http_checks.rs"]
mod http_checks;

#[allow(dead_code)] // unused when no parser's feature is on
fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    for file in files {
        let data = std::fs::read(&file).expect("readable regression input");
        eprintln!("replaying {}", file.display());
        check(&data);
    }
}

#[cfg(all(feature = "profile", feature = "config"))]
#[test]
fn profile_regressions_replay() {
    replay("parse_profile", checks::check_profile);
}

#[cfg(all(feature = "profile", feature = "config"))]
#[test]
fn config_regressions_replay() {
    replay("parse_config", checks::check_config);
}

#[cfg(feature = "http")]
#[test]
fn http_request_regressions_replay() {
    replay("http_request", http_checks::check_http_request);
}
