//! Nonsense in files refused with a message that says what to change and stays readable: stage
//! names and labels longer than a collector registers, and numbers at the edge of `f64` printed
//! as `1.7976931348623157e308`, not as 309 digits.
#![cfg(all(feature = "profile", feature = "config"))]

use std::collections::BTreeMap;

use laptime::MAX_NAME_LEN;
use laptime::config::Config;
use laptime::profile::{
    Histogram, Profile, ProfileConfig, ProfileError, ProfileMeta, StageCounts, StageProfile,
};

const HIGHEST_NS: u64 = 3_600_000_000_000;

/// A valid one-stage profile as a JSON value, to break one field at a time.
fn valid_json(name: &str, labels: &[(&str, &str)]) -> serde_json::Value {
    let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap();
    for v in [100, 200, 300] {
        h.record(v).unwrap();
    }
    let counts = StageCounts {
        min_ns: 100,
        max_ns: 300,
        sum_ns: 600,
        ..StageCounts::default()
    };
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stage = StageProfile::from_histogram(name, labels, &h, counts).unwrap();
    let profile = Profile::new(
        ProfileMeta::new("nonsense", ProfileConfig::new(3, HIGHEST_NS)),
        vec![stage],
    );
    serde_json::from_str(&profile.to_json()).unwrap()
}

fn parse(value: &serde_json::Value) -> Result<Profile, ProfileError> {
    Profile::from_json(serde_json::to_string(value).unwrap().as_bytes())
}

/// The longest run of digits in `text`.
fn longest_number(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[test]
fn a_stage_name_longer_than_a_collector_registers_is_refused_without_quoting_it() {
    let longest = "n".repeat(MAX_NAME_LEN);
    parse(&valid_json(&longest, &[])).expect("a name of the longest length is fine");
    let mut v = valid_json("tick_total", &[]);
    v["stages"][0]["name"] = "n".repeat(1 << 20).into();
    let e = parse(&v).unwrap_err();
    assert!(
        matches!(&e, ProfileError::Invalid { path, .. } if path == "stages[0].name"),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("1048576 bytes, more than the 128 a collector registers: shorten it"),
        "{text}"
    );
    assert!(
        text.len() < 400,
        "the message quotes the name: {} bytes",
        text.len()
    );
}

#[test]
fn labels_longer_than_a_collector_registers_are_refused() {
    let longest = "v".repeat(MAX_NAME_LEN);
    parse(&valid_json("tick_total", &[("api", &longest)])).expect("the longest value is fine");
    let too_long = "v".repeat(MAX_NAME_LEN + 1);
    let mut v = valid_json("tick_total", &[("api", "batch")]);
    v["stages"][0]["labels"]["api"] = too_long.clone().into();
    let e = parse(&v).unwrap_err();
    assert!(
        matches!(&e, ProfileError::Invalid { path, message } if path == "stages[0].labels" && message.contains("label \"api\"")),
        "{e:?}"
    );
    let mut v = valid_json("tick_total", &[]);
    v["stages"][0]["labels"] = serde_json::json!({ too_long: "x" });
    let e = parse(&v).unwrap_err();
    assert!(e.to_string().contains("a label name"), "{e}");
}

#[test]
fn numbers_at_the_edge_of_f64_print_readably() {
    for field in ["mean_ns", "deadline_miss_pct"] {
        let mut v = valid_json("tick_total", &[]);
        v["stages"][0][field] = f64::MAX.into();
        let text = parse(&v).unwrap_err().to_string();
        assert!(text.contains("1.7976931348623157e308"), "{field}: {text}");
        assert!(longest_number(&text) < 20, "{field}: {text}");
    }
    let mut v = valid_json("tick_total", &[]);
    v["meta"]["config"]["sampling_rate"] = 1e300.into();
    let text = parse(&v).unwrap_err().to_string();
    assert!(text.contains("1e300 is not in [0, 1]"), "{text}");

    let e = Config::from_toml_str("[sampling]\nrate = 1e308\n").unwrap_err();
    let text = e.to_string();
    assert!(longest_number(&text) < 20, "{text}");
    assert!(text.contains("1e308"), "{text}");
}
