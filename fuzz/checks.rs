// What the fuzz targets assert for one input, shared with `tests/fuzz_regressions.rs` (which
// replays `fuzz/regressions/*` on stable): parsing never panics, and whatever parses survives a
// round trip unchanged and can be used.

use laptime::config::Config;
use laptime::profile::Profile;

/// A profile that parses writes back to JSON that parses to the same profile; its histograms
/// decode (or fail with an error) and it merges with itself (or fails with an error).
pub fn check_profile(data: &[u8]) {
    let Ok(profile) = Profile::from_json(data) else {
        return;
    };
    let again = Profile::from_json(profile.to_json().as_bytes())
        .expect("a profile we accepted must accept its own output");
    assert_eq!(profile, again, "profile changed in a JSON round trip");
    for stage in &profile.stages {
        let _ = stage.histogram();
    }
    let _ = Profile::merge("fuzz", &[profile.clone(), profile]);
}

/// A configuration that parses turns into a collector builder or a typed error, never a panic.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml_str(text) {
        let _ = config.builder();
    }
}
