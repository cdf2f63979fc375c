//! Perf profiles against references computed here: a collector's profile against the recorded
//! values (sorted), a merge of two runs against one run that recorded both, a typed error naming
//! the field for each kind of bad file, the file round trip, and floats that read back exactly.
// Recording must be compiled in (`enable`, a default feature) for a collector to have figures.
#![cfg(all(feature = "profile", feature = "test-util", feature = "enable"))]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{clock, install, serial, unique};
use laptime::profile::{
    CorrectedCounts, CorrectedProfile, FORMAT, Histogram, Profile, ProfileConfig, ProfileError,
    ProfileMeta, StageCounts, StageProfile, VERSION,
};
use laptime::{Collector, CollectorHandle, Metric, SlaRule, Stage, Window};
use proptest::prelude::*;

const HIGHEST: Duration = Duration::from_secs(10);
const HIGHEST_NS: u64 = 10_000_000_000;
const DEADLINE: Duration = Duration::from_micros(500);

/// A collector on the mock clock that runs cycles only when flushed, with a 10 s histogram and
/// rings large enough that nothing recorded here is dropped.
fn collector(deadline_stage: &'static str) -> CollectorHandle {
    clock();
    install(
        Collector::builder()
            .with_interval(Duration::from_secs(30))
            .with_ring_capacity(1 << 16)
            .with_histogram(3, HIGHEST)
            .with_deadline(deadline_stage, DEADLINE),
    )
}

/// Deterministic, widely spread durations in ns (1 ns to a few seconds).
fn values(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let magnitude = x % 32; // up to 2^31 ns ≈ 2.1 s
            1 + (x >> 8) % (1u64 << magnitude)
        })
        .collect()
}

/// The figures a stage should have, from its values: exact, independent of the library.
struct Reference {
    sorted: Vec<u64>,
}

impl Reference {
    fn new(values: &[u64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        Self { sorted }
    }

    fn at_rank(&self, q: f64) -> u64 {
        self.sorted[laptime::rank(q, self.sorted.len() as u64) as usize - 1]
    }

    fn check(&self, s: &StageProfile, handle: &CollectorHandle, stage: Stage) {
        let n = self.sorted.len() as u64;
        let sum: u64 = self.sorted.iter().sum();
        let key = s.key();
        assert_eq!(s.count, n, "{key}");
        assert_eq!(s.min_ns, self.sorted[0], "{key}");
        assert_eq!(s.max_ns, *self.sorted.last().unwrap(), "{key}");
        assert_eq!(s.sum_ns, sum, "{key}");
        assert_eq!(s.mean_ns, sum as f64 / n as f64, "{key}");
        let reported = [s.p50_ns, s.p90_ns, s.p95_ns, s.p99_ns, s.p999_ns];
        let stats = handle.get_stats(stage, Window::Cumulative).unwrap();
        let from_stats = [stats.p50, stats.p90, stats.p95, stats.p99, stats.p999]
            .map(|d| u64::try_from(d.as_nanos()).unwrap());
        assert_eq!(
            reported, from_stats,
            "{key}: the profile agrees with get_stats"
        );
        for (q, p) in [0.5, 0.9, 0.95, 0.99, 0.999].into_iter().zip(reported) {
            let exact = self.at_rank(q);
            assert!(
                p >= exact && (p - exact) as f64 <= exact as f64 * 0.001,
                "{key} q{q}: {p} vs exact {exact}"
            );
        }
        // The histogram holds exactly the recorded values' buckets.
        let mut reference = Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap();
        for &v in &self.sorted {
            reference.record(v).unwrap();
        }
        assert_eq!(
            recorded(&s.histogram().unwrap().unwrap()),
            recorded(&reference)
        );
    }
}

/// A histogram's (bucket value, count) pairs.
fn recorded(h: &Histogram) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

#[test]
fn a_collectors_profile_matches_the_recorded_values() {
    let _s = serial();
    let clock = clock();
    let plain = unique("profile_plain");
    let spans = unique("profile_spans");
    let watched = unique("profile_watched");
    let sampled = unique("profile_sampled");
    let saturating = unique("profile_saturating");
    let labelled = Stage::with_labels(
        unique("profile_labelled"),
        &[("verb", "post"), ("api", "batch")],
    )
    .unwrap();
    let before_install = std::time::SystemTime::now();
    let handle = collector(watched);

    let plain_values = values(1, 5000);
    for &v in &plain_values {
        laptime::record(plain, Duration::from_nanos(v));
    }
    // Spans timed on the mock clock: exact durations.
    let span_values = values(2, 300);
    for &v in &span_values {
        let span = laptime::start(spans);
        clock.advance(Duration::from_nanos(v));
        drop(span);
    }
    laptime::start(spans).cancel();
    // Around the deadline: some under, some over.
    let watched_values: Vec<u64> = (1..=40).map(|i| i * 25_000).collect(); // 25 µs … 1 ms
    for &v in &watched_values {
        laptime::record(watched, Duration::from_nanos(v));
    }
    let misses = watched_values.iter().filter(|&&v| v > ns(DEADLINE)).count() as u64;
    // Sampled out entirely for 7 calls, then recorded.
    let sampled_stage = Stage::new(sampled).unwrap();
    sampled_stage.set_sampling_rate(Some(0.0)).unwrap();
    for _ in 0..7 {
        laptime::record(sampled, Duration::from_micros(3));
    }
    sampled_stage.set_sampling_rate(None).unwrap();
    let sampled_values = [3_000u64, 4_000, 5_000];
    for &v in &sampled_values {
        laptime::record(sampled, Duration::from_nanos(v));
    }
    // Above the histogram's highest value: saturated, but min, max and sum stay exact.
    laptime::record(saturating, Duration::from_secs(20));
    laptime::record(saturating, Duration::from_millis(1));
    let labelled_values = values(3, 100);
    for &v in &labelled_values {
        laptime::record(labelled, Duration::from_nanos(v));
    }

    let profile = handle.profile("run").expect("the collector answers");
    profile.validate().expect("a collector's profile is valid");
    assert_eq!(
        (profile.format.as_str(), profile.version),
        (FORMAT, VERSION)
    );
    assert_eq!(profile.meta.name, "run");
    assert!(!profile.meta.host.is_empty());
    let since_epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
    };
    assert!(profile.meta.started_unix_ms >= since_epoch(before_install));
    assert!(profile.meta.ended_unix_ms >= profile.meta.started_unix_ms);
    let c = &profile.meta.config;
    assert_eq!(
        (c.significant_digits, c.highest_ns, c.sampling_rate),
        (3, HIGHEST_NS, 1.0)
    );
    assert_eq!((c.interval_ns, c.ring_capacity), (30_000_000_000, 1 << 16));

    // Every stage with activity, in stage-id order, as get_all_stats lists them.
    let keys: Vec<String> = profile.stages.iter().map(StageProfile::key).collect();
    let expected: Vec<String> = handle
        .get_all_stats(Window::Cumulative)
        .iter()
        .map(|s| {
            let mut labels: Vec<_> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.sort();
            if labels.is_empty() {
                s.stage.to_owned()
            } else {
                format!("{}{{{}}}", s.stage, labels.join(","))
            }
        })
        .collect();
    assert_eq!(keys, expected);
    // Six stages recorded into, and the labelled stage's name total.
    assert_eq!(keys.len(), 7);

    let stage = |key: &str| {
        profile
            .stage(key)
            .unwrap_or_else(|| panic!("no stage {key}"))
    };
    Reference::new(&plain_values).check(stage(plain), &handle, Stage::new(plain).unwrap());

    let s = stage(spans);
    Reference::new(&span_values).check(s, &handle, Stage::new(spans).unwrap());
    assert_eq!((s.cancelled, s.calls), (1, 301));

    let s = stage(watched);
    Reference::new(&watched_values).check(s, &handle, Stage::new(watched).unwrap());
    assert_eq!(s.deadline_ns, Some(ns(DEADLINE)));
    assert_eq!((s.deadline_misses, misses), (20, 20));
    assert_eq!(s.deadline_miss_pct, 50.0);
    assert_eq!(stage(plain).deadline_ns, None);

    let s = stage(sampled);
    Reference::new(&sampled_values).check(s, &handle, sampled_stage);
    assert_eq!((s.count, s.sampled_out, s.calls), (3, 7, 10));

    let s = stage(saturating);
    assert_eq!(
        (s.count, s.saturated, s.min_ns, s.max_ns, s.sum_ns),
        (2, 1, 1_000_000, 20_000_000_000, 20_001_000_000)
    );
    let stats = handle.get_stats(saturating, Window::Cumulative).unwrap();
    assert_eq!((s.p50_ns, s.p999_ns), (ns(stats.p50), ns(stats.p999)));

    let key = format!("{}{{api=\"batch\",verb=\"post\"}}", labelled.name());
    let s = stage(&key);
    Reference::new(&labelled_values).check(s, &handle, labelled);
    // Its name's total holds its values alone: the same figures, without labels.
    let total = stage(labelled.name());
    Reference::new(&labelled_values).check(
        total,
        &handle,
        Stage::lookup(labelled.name(), &[]).unwrap(),
    );
    assert!(total.labels.is_empty());
    assert_eq!(
        s.labels,
        BTreeMap::from([
            ("api".to_owned(), "batch".to_owned()),
            ("verb".to_owned(), "post".to_owned())
        ])
    );
    for s in &profile.stages {
        assert_eq!(
            (s.dropped, s.calls),
            (0, s.count + s.sampled_out + s.cancelled)
        );
    }
}

#[test]
fn a_profile_asked_from_an_sla_callback_is_an_error_not_a_deadlock() {
    let _s = serial();
    clock();
    let name = unique("profile_callback");
    // The callback reaches the handle through this slot; taken out before the handle is dropped.
    let slot: Arc<Mutex<Option<CollectorHandle>>> = Arc::default();
    let outcome: Arc<Mutex<Option<Result<Profile, ProfileError>>>> = Arc::default();
    let (from_slot, to_outcome) = (slot.clone(), outcome.clone());
    let handle = install(
        Collector::builder()
            .with_interval(Duration::from_secs(30))
            .with_sla_rule(
                SlaRule::new(name, Window::S1, Metric::Max).with_critical(Duration::from_millis(1)),
            )
            .with_sla_callback(move |_| {
                if let Some(handle) = from_slot.lock().unwrap().as_ref() {
                    *to_outcome.lock().unwrap() = Some(handle.profile("from the callback"));
                }
            }),
    );
    *slot.lock().unwrap() = Some(handle);
    laptime::record(name, Duration::from_millis(2));
    assert!(laptime::flush());
    match outcome.lock().unwrap().take().expect("the callback ran") {
        Err(e @ ProfileError::Collector { .. }) => {
            assert!(e.to_string().contains("SLA callback"), "{e}")
        }
        other => panic!("expected a collector error, got {other:?}"),
    }
    let handle = slot.lock().unwrap().take().unwrap();
    let profile = handle
        .profile("after")
        .expect("other threads are still answered");
    assert_eq!(profile.stage(name).unwrap().count, 1);
}

/// Stages of one name registered with the same labels in another order are one stage in the
/// profile: their spans in one histogram, their counts added.
#[test]
fn stages_with_labels_in_another_order_are_one_profile_stage() {
    let _s = serial();
    clock();
    let name = unique("profile_label_order");
    let ab = Stage::with_labels(name, &[("a", "1"), ("b", "2")]).unwrap();
    let ba = Stage::with_labels(name, &[("b", "2"), ("a", "1")]).unwrap();
    let handle = collector(unique("profile_label_order_deadline"));
    let (first, second) = (values(40, 700), values(41, 300));
    for &v in &first {
        laptime::record(ab, Duration::from_nanos(v));
    }
    for &v in &second {
        laptime::record(ba, Duration::from_nanos(v));
    }
    let profile = handle.profile("order").unwrap();
    assert_eq!(
        handle.get_all_stats(Window::Cumulative).len(),
        3,
        "two stages in the collector, and their name's total"
    );
    let keys: Vec<String> = profile.stages.iter().map(StageProfile::key).collect();
    let key = format!("{name}{{a=\"1\",b=\"2\"}}");
    assert_eq!(keys, [name, key.as_str()]);
    let s = profile.stage(&key).unwrap();
    let all: Vec<u64> = first.iter().chain(&second).copied().collect();
    assert_eq!(
        (s.count, s.min_ns, s.max_ns, s.sum_ns, s.calls),
        (
            1000,
            *all.iter().min().unwrap(),
            *all.iter().max().unwrap(),
            all.iter().sum(),
            1000
        )
    );
    let mut reference = Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap();
    for &v in &all {
        reference.record(v).unwrap();
    }
    assert_eq!(
        recorded(&s.histogram().unwrap().unwrap()),
        recorded(&reference)
    );
    let sorted = Reference::new(&all);
    for (q, p) in [0.5, 0.99].into_iter().zip([s.p50_ns, s.p99_ns]) {
        let exact = sorted.at_rank(q);
        assert!(
            p >= exact && (p - exact) as f64 <= exact as f64 * 0.001,
            "q{q}: {p} vs exact {exact}"
        );
    }
}

/// What the merge test records: set 1 or set 2 of every stage.
fn record_set(set: u64, plain: &'static str, watched: &'static str, labelled: Stage) {
    for v in values(10 + set, 2000) {
        laptime::record(plain, Duration::from_nanos(v));
    }
    for i in 1..=30 {
        laptime::record(watched, Duration::from_micros(i * 20 * set));
    }
    let stage = Stage::new(watched).unwrap();
    stage.set_sampling_rate(Some(0.0)).unwrap();
    for _ in 0..set * 3 {
        laptime::record(watched, Duration::from_micros(1));
    }
    stage.set_sampling_rate(None).unwrap();
    laptime::start(watched).cancel();
    if set == 2 {
        // Only the second run sees this stage.
        for v in values(20, 50) {
            laptime::record(labelled, Duration::from_nanos(v));
        }
    }
}

#[test]
fn merging_two_runs_equals_one_run_of_both() {
    let _s = serial();
    clock();
    let plain = unique("merge_plain");
    let watched = unique("merge_watched");
    let labelled = Stage::with_labels(unique("merge_labelled"), &[("venue", "x")]).unwrap();
    let take = |name: &str, sets: &[u64]| {
        let handle = collector(watched);
        for &set in sets {
            record_set(set, plain, watched, labelled);
        }
        let mut profile = handle.profile(name).unwrap();
        profile.meta.git_revision = Some("abc123".into());
        profile.meta.tags = BTreeMap::from([
            ("env".to_owned(), "ci".to_owned()),
            ("run".to_owned(), name.to_owned()),
        ]);
        profile
    };
    let a = take("a", &[1]);
    let b = take("b", &[2]);
    let both = take("both", &[1, 2]);

    let merged = Profile::merge("a+b", &[a.clone(), b.clone()]).unwrap();
    merged.validate().unwrap();
    // Stages in order of first appearance: `a` never saw the labelled one.
    let keys = |p: &Profile| p.stages.iter().map(StageProfile::key).collect::<Vec<_>>();
    let labelled_key = format!("{}{{venue=\"x\"}}", labelled.name());
    let total = labelled.name();
    assert_eq!(
        keys(&merged),
        [watched, plain, total, labelled_key.as_str()]
    );
    assert_eq!(keys(&both), [total, labelled_key.as_str(), watched, plain]);
    for m in &merged.stages {
        let c = both.stage(&m.key()).unwrap();
        let hist = |s: &StageProfile| recorded(&s.histogram().unwrap().unwrap());
        assert_eq!(hist(m), hist(c), "{}: histograms", m.key());
        // Every figure, the histogram text aside (deflate output may differ between equal
        // histograms recorded in another order).
        let without_text = |s: &StageProfile| {
            let mut s = s.clone();
            s.histogram = None;
            if let Some(c) = &mut s.corrected {
                c.histogram = None;
            }
            s
        };
        assert_eq!(without_text(m), without_text(c), "{}", m.key());
    }
    let w = merged.stage(watched).unwrap();
    // Over 500 µs: 520–600 µs in set 1 (5), 520–1200 µs in set 2 (18).
    assert_eq!(
        (w.count, w.sampled_out, w.cancelled, w.deadline_misses),
        (60, 9, 2, 5 + 18)
    );

    let meta = &merged.meta;
    assert_eq!(meta.name, "a+b");
    assert_eq!(meta.merged_from, ["a", "b"]);
    assert_eq!(meta.started_unix_ms, a.meta.started_unix_ms);
    assert_eq!(meta.ended_unix_ms, b.meta.ended_unix_ms);
    assert_eq!(meta.host, a.meta.host, "one host, named once");
    assert_eq!(meta.git_revision.as_deref(), Some("abc123"));
    assert_eq!(
        meta.tags,
        BTreeMap::from([("env".to_owned(), "ci".to_owned())]),
        "only the tags every input shares"
    );
    assert_eq!(meta.config, a.meta.config);
}

#[test]
fn merge_refuses_what_it_cannot_add() {
    let stage = small_stage("s", &[10, 20, 30]);
    let profile = |digits: u8| {
        Profile::new(
            ProfileMeta::new("p", ProfileConfig::new(digits, HIGHEST_NS)),
            vec![if digits == 3 {
                stage.clone()
            } else {
                let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, digits).unwrap();
                h.record(10).unwrap();
                StageProfile::from_histogram("s", BTreeMap::new(), &h, counts(&[10])).unwrap()
            }],
        )
    };
    let message = |r: Result<Profile, ProfileError>| match r {
        Err(e @ ProfileError::Merge { .. }) => e.to_string(),
        other => panic!("expected a merge error, got {other:?}"),
    };
    assert!(message(Profile::merge("m", &[])).contains("no profiles"));
    let m = message(Profile::merge("m", &[profile(3), profile(2)]));
    assert!(m.contains("significant digits"), "{m}");
    let mut bare = profile(3);
    bare.stages[0].histogram = None;
    let m = message(Profile::merge("m", &[profile(3), bare]));
    assert!(
        m.contains("stage s of input 1") && m.contains("no histogram"),
        "{m}"
    );
}

/// Misses counted against different deadlines cannot be added up: the merge names the stage and
/// both deadlines. Sampling rates that differ merge to the lowest; interval and ring capacity
/// are the first input's.
#[test]
fn merge_refuses_different_deadlines_and_takes_the_lowest_sampling_rate() {
    let with_deadline = |deadline: Option<u64>, rate: f64, interval_ns: u64| {
        let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap();
        for v in [10, 20, 30] {
            h.record(v).unwrap();
        }
        let c = StageCounts {
            deadline_ns: deadline,
            deadline_misses: u64::from(deadline.is_some()),
            ..counts(&[10, 20, 30])
        };
        let stage = StageProfile::from_histogram("s", BTreeMap::new(), &h, c).unwrap();
        let mut config = ProfileConfig::new(3, HIGHEST_NS);
        config.sampling_rate = rate;
        config.interval_ns = interval_ns;
        Profile::new(ProfileMeta::new("p", config), vec![stage])
    };
    let message = |r: Result<Profile, ProfileError>| match r {
        Err(e @ ProfileError::Merge { .. }) => e.to_string(),
        other => panic!("expected a merge error, got {other:?}"),
    };
    let m = message(Profile::merge(
        "m",
        &[
            with_deadline(Some(2_000_000), 1.0, 1),
            with_deadline(Some(2_000_100), 1.0, 1),
        ],
    ));
    assert_eq!(
        m,
        "cannot merge profiles: stage s has deadline 2000000 ns in input 0 (\"p\") but \
         2000100 ns in input 1 (\"p\"): its misses were counted against different deadlines \
         and cannot be added up; merge runs taken with the same deadline, or leave the stage out"
    );
    let m = message(Profile::merge(
        "m",
        &[
            with_deadline(Some(2_000_000), 1.0, 1),
            with_deadline(None, 1.0, 1),
        ],
    ));
    assert!(
        m.contains("2000000 ns in input 0") && m.contains("none in input 1"),
        "{m}"
    );

    let merged = Profile::merge(
        "m",
        &[
            with_deadline(Some(5), 0.5, 10_000_000),
            with_deadline(Some(5), 0.25, 20_000_000),
            with_deadline(Some(5), 1.0, 30_000_000),
        ],
    )
    .unwrap();
    let c = &merged.meta.config;
    assert_eq!((c.sampling_rate, c.interval_ns), (0.25, 10_000_000));
    assert_eq!(merged.stages[0].deadline_ns, Some(5));
    assert_eq!(merged.stages[0].deadline_misses, 3);
}

fn counts(values: &[u64]) -> StageCounts {
    StageCounts {
        min_ns: *values.iter().min().unwrap(),
        max_ns: *values.iter().max().unwrap(),
        sum_ns: values.iter().sum(),
        ..StageCounts::default()
    }
}

fn small_stage(name: &str, values: &[u64]) -> StageProfile {
    let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap();
    for &v in values {
        h.record(v).unwrap();
    }
    StageProfile::from_histogram(name, BTreeMap::new(), &h, counts(values)).unwrap()
}

/// A valid two-stage profile as a JSON value, to break one field at a time.
fn valid_json() -> serde_json::Value {
    let profile = Profile::new(
        ProfileMeta::new("errors", ProfileConfig::new(3, HIGHEST_NS)),
        vec![
            small_stage("first", &[100, 200, 300, 400, 5000]),
            small_stage("second", &[7, 8]),
        ],
    );
    serde_json::from_str(&profile.to_json()).unwrap()
}

fn parse(value: &serde_json::Value) -> ProfileError {
    let text = serde_json::to_string_pretty(value).unwrap();
    Profile::from_json(text.as_bytes()).expect_err("the broken profile must be refused")
}

#[test]
fn the_valid_reference_parses() {
    let text = serde_json::to_string(&valid_json()).unwrap();
    Profile::from_json(text.as_bytes()).unwrap();
}

#[test]
fn a_missing_field_is_named() {
    let mut v = valid_json();
    v["stages"][0].as_object_mut().unwrap().remove("count");
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Field { path, message } if path == "stages[0].count" && message.contains("missing")),
        "{e:?}"
    );
    assert!(e.to_string().contains("`stages[0].count`"), "{e}");
}

#[test]
fn a_wrong_type_is_named() {
    let mut v = valid_json();
    v["stages"][1]["p95_ns"] = "fast".into();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Field { path, message } if path == "stages[1].p95_ns" && message.contains("invalid type")),
        "{e:?}"
    );
}

#[test]
fn an_unknown_field_is_named() {
    let mut v = valid_json();
    v["meta"]["config"]["colour"] = "blue".into();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Field { path, message } if path.starts_with("meta.config") && message.contains("unknown field `colour`")),
        "{e:?}"
    );
}

#[test]
fn another_format_is_named_as_such() {
    let mut v = valid_json();
    v["format"] = "chrome-trace".into();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Format { found } if found == "\"chrome-trace\""),
        "{e:?}"
    );
    assert!(e.to_string().contains("laptime-profile"), "{e}");
    v.as_object_mut().unwrap().remove("format");
    assert!(matches!(parse(&v), ProfileError::Format { .. }));
}

#[test]
fn a_newer_version_is_named_before_its_unknown_fields() {
    let mut v = valid_json();
    v["version"] = 2.into();
    v["stages"][0]["p9999_ns"] = 1.into(); // a field version 2 might add
    let e = parse(&v);
    assert!(
        matches!(
            e,
            ProfileError::Version {
                found: 2,
                supported: 1
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("version 2"), "{e}");
}

#[test]
fn percentiles_out_of_order_are_refused() {
    let mut v = valid_json();
    let p50 = v["stages"][0]["p50_ns"].as_u64().unwrap();
    v["stages"][0]["p95_ns"] = (p50 - 1).into();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Invalid { path, .. } if path == "stages[0].p95_ns"),
        "{e:?}"
    );
}

/// A stage with a histogram carries the percentiles the histogram gives: a hand-edited one is
/// refused, naming the field and the value to write.
#[test]
fn a_percentile_its_histogram_does_not_give_is_refused() {
    let wide: Vec<u64> = (1..=1000).collect();
    let profile = Profile::new(
        ProfileMeta::new("edited", ProfileConfig::new(3, HIGHEST_NS)),
        vec![small_stage("narrow", &[7, 8]), small_stage("wide", &wide)],
    );
    let mut v: serde_json::Value = serde_json::from_str(&profile.to_json()).unwrap();
    // Below 2048 ns, 3 significant digits are exact: the sorted values' nearest ranks.
    let at = |f: &str| v["stages"][1][f].as_u64().unwrap();
    assert_eq!(
        [
            at("p50_ns"),
            at("p90_ns"),
            at("p95_ns"),
            at("p99_ns"),
            at("p999_ns")
        ],
        [500, 900, 950, 990, 999]
    );
    // Still in order (p95 ≤ 991 ≤ p999), so only the histogram can tell.
    v["stages"][1]["p99_ns"] = 991.into();
    let e = parse(&v);
    match &e {
        ProfileError::Invalid { path, message } => {
            assert_eq!(path, "stages[1].p99_ns");
            assert!(
                message.starts_with("p99_ns is 991 but the histogram gives 990"),
                "{message}"
            );
        }
        other => panic!("expected an invalid-field error, got {other:?}"),
    }
    // Without the histogram, hand-written figures are taken as they are.
    v["stages"][1].as_object_mut().unwrap().remove("histogram");
    let p = Profile::from_json(serde_json::to_string(&v).unwrap().as_bytes()).unwrap();
    assert_eq!(p.stages[1].p99_ns, 991);
    // The same check on a profile built in memory.
    let mut edited = profile.clone();
    edited.stages[0].p50_ns = 8;
    assert!(matches!(
        edited.validate(),
        Err(ProfileError::Invalid { path, .. }) if path == "stages[0].p50_ns"
    ));
}

#[test]
fn a_count_the_histogram_does_not_hold_is_refused() {
    let mut v = valid_json();
    // The second stage's histogram (2 values) under the first stage (5 values).
    v["stages"][0]["histogram"] = v["stages"][1]["histogram"].clone();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Invalid { path, message } if path == "stages[0].histogram" && message.contains("holds 2 values but count is 5")),
        "{e:?}"
    );
}

#[test]
fn other_contradictions_are_refused() {
    let cases: [(&str, &str, serde_json::Value); 6] = [
        ("calls", "stages[1].calls", 3.into()),
        ("mean_ns", "stages[1].mean_ns", 7.25.into()),
        (
            "deadline_miss_pct",
            "stages[1].deadline_miss_pct",
            1.0.into(),
        ),
        ("max_ns", "stages[1].max_ns", 7.into()),
        ("saturated", "stages[1].saturated", 3.into()),
        ("name", "stages[1].name", "first".into()),
    ];
    for (field, path, value) in cases {
        let mut v = valid_json();
        v["stages"][1][field] = value;
        let e = parse(&v);
        assert!(
            matches!(&e, ProfileError::Invalid { path: p, .. } if p == path),
            "{field}: {e:?}"
        );
    }
    let mut v = valid_json();
    v["meta"]["config"]["sampling_rate"] = 1.5.into();
    assert!(
        matches!(parse(&v), ProfileError::Invalid { path, .. } if path == "meta.config.sampling_rate")
    );
    let mut v = valid_json();
    v["meta"]["config"]["significant_digits"] = 2.into();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Histogram { path, message } if path == "stages[0].histogram" && message.contains("meta.config")),
        "{e:?}"
    );
}

#[test]
fn a_histogram_that_is_not_base64_is_refused() {
    let mut v = valid_json();
    v["stages"][1]["histogram"] = "not base64!".into();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Histogram { path, message } if path == "stages[1].histogram" && message.contains("base64")),
        "{e:?}"
    );
    // Base64, but not a histogram.
    v["stages"][1]["histogram"] = "aGVsbG8gd29ybGQ=".into();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Histogram { message, .. } if message.contains("cookie")),
        "{e:?}"
    );
}

#[test]
fn truncated_json_is_a_syntax_error_with_its_line() {
    let text = serde_json::to_string_pretty(&valid_json()).unwrap();
    let cut = &text[..text.len() / 2];
    let e = Profile::from_json(cut.as_bytes()).unwrap_err();
    match &e {
        ProfileError::Syntax { line, .. } => assert_eq!(*line, cut.lines().count()),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(e.to_string().contains("line"), "{e}");
    let e = Profile::from_json(b"<profile/>").unwrap_err();
    assert!(
        matches!(
            e,
            ProfileError::Syntax {
                line: 1,
                column: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let e = Profile::from_json(b"[1, 2]").unwrap_err();
    assert!(
        matches!(&e, ProfileError::Field { path, .. } if path.is_empty()),
        "{e:?}"
    );
}

/// A unique directory under the system's temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "laptime-profile-{}-{}",
            std::process::id(),
            unique("dir")
        ));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_written_profile_reads_back_unchanged() {
    let dir = TempDir::new();
    let path = dir.0.join("nested/deeper/run.json");
    let text = serde_json::to_string(&valid_json()).unwrap();
    let profile = Profile::from_json(text.as_bytes()).unwrap();
    profile.write(&path).unwrap();
    assert_eq!(Profile::from_path(&path).unwrap(), profile);
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, profile.to_json());
    assert!(written.ends_with("}\n"));
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["run.json"], "no temporary file left behind");

    // What could not be read back is not written.
    let mut broken = profile.clone();
    broken.stages[0].p50_ns = broken.stages[0].max_ns + 1;
    let refused = dir.0.join("refused.json");
    assert!(matches!(
        broken.write(&refused),
        Err(ProfileError::Invalid { .. })
    ));
    assert!(!refused.exists());

    let missing = dir.0.join("absent.json");
    match Profile::from_path(&missing) {
        Err(e @ ProfileError::Io { .. }) => {
            assert!(e.to_string().contains("absent.json"), "{e}")
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

fn text() -> impl Strategy<Value = String> {
    // Any characters, quotes, backslashes and control characters included; never empty.
    proptest::string::string_regex("(.|\n|\"|\\\\|\u{0}){1,12}").unwrap()
}

prop_compose! {
    fn stage_strategy()(
        name in text(),
        labels in proptest::collection::btree_map(text(), text(), 0..3),
        values in proptest::collection::vec(0u64..HIGHEST_NS, 0..40),
        misses in 0u64..50,
        dropped in 0u64..5,
        sampled_out in 0u64..5,
        cancelled in 0u64..5,
        deadline in proptest::option::of(1u64..1_000_000_000),
    ) -> StageProfile {
        let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap();
        let mut c = StageCounts {
            deadline_ns: deadline,
            deadline_misses: misses,
            dropped,
            sampled_out,
            cancelled,
            ..StageCounts::default()
        };
        if !values.is_empty() {
            c = counts(&values);
            c.deadline_ns = deadline;
            c.deadline_misses = misses;
            c.dropped = dropped;
            c.sampled_out = sampled_out;
            c.cancelled = cancelled;
        }
        for &v in &values {
            h.record(v).unwrap();
        }
        StageProfile::from_histogram(name, labels, &h, c).unwrap()
    }
}

prop_compose! {
    fn profile_strategy()(
        name in text(),
        host in text(),
        git in proptest::option::of(text()),
        tags in proptest::collection::btree_map(text(), text(), 0..3),
        rate in 0.0f64..=1.0,
        started in any::<u64>(),
        stages in proptest::collection::vec(stage_strategy(), 0..4),
    ) -> Profile {
        let mut config = ProfileConfig::new(3, HIGHEST_NS);
        config.sampling_rate = rate;
        let mut meta = ProfileMeta::new(name, config);
        meta.host = host;
        meta.git_revision = git;
        meta.tags = tags;
        meta.started_unix_ms = started;
        // Distinct stages only (a profile holds each key once).
        let mut seen = std::collections::BTreeSet::new();
        let stages = stages.into_iter().filter(|s| seen.insert(s.key())).collect();
        Profile::new(meta, stages)
    }
}

fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("JSON holds finite numbers only", |f| f.is_finite())
}

proptest! {
    #![proptest_config(common::proptest_config("profile"))]

    #[test]
    fn consistent_profiles_survive_the_file_format(profile in profile_strategy()) {
        let again = Profile::from_json(profile.to_json().as_bytes()).unwrap();
        prop_assert_eq!(again, profile);
    }

    /// The serde layer alone (no validation): any finite float reads back bit for bit.
    #[test]
    fn floats_read_back_exactly(mean in finite(), pct in finite(), rate in finite()) {
        let mut profile = Profile::new(
            ProfileMeta::new("floats", ProfileConfig::new(3, HIGHEST_NS)),
            vec![small_stage("s", &[1, 2, 3])],
        );
        profile.meta.config.sampling_rate = rate;
        profile.stages[0].mean_ns = mean;
        profile.stages[0].deadline_miss_pct = pct;
        let again: Profile = serde_json::from_str(&profile.to_json()).unwrap();
        prop_assert_eq!(again.meta.config.sampling_rate.to_bits(), rate.to_bits());
        prop_assert_eq!(again.stages[0].mean_ns.to_bits(), mean.to_bits());
        prop_assert_eq!(again.stages[0].deadline_miss_pct.to_bits(), pct.to_bits());
    }
}

const PERIOD_NS: u64 = 1_000_000;

/// Raw values of a periodic stage: mostly fast, a few stalls of up to 1.5 s (below the 10 s
/// histogram top, so nothing saturates).
fn tick_values(seed: u64, n: usize) -> Vec<u64> {
    values(seed, n)
        .into_iter()
        .map(|v| {
            if v % 50 == 0 {
                v % 1_500_000_000
            } else {
                v % 200_000
            }
        })
        .collect()
}

/// The raw values followed by the values the correction adds for each.
fn corrected_reference(raw: &[u64], interval: u64) -> Vec<u64> {
    let mut all = raw.to_vec();
    for &v in raw {
        all.extend(common::co_added(v, interval));
    }
    all
}

/// A collector's profile of a corrected stage: its `corrected` figures are those
/// `get_stats(stage, Cumulative).corrected` reports, and its histogram and exact figures are
/// those of the raw values plus HdrHistogram's added values, computed here. Other stages carry
/// none; unwound spans and the clock figure are carried too.
#[test]
fn a_corrected_stage_carries_the_figures_get_stats_reports() {
    let _s = serial();
    let clock = clock();
    let tick = unique("profile_co_tick");
    let plain = unique("profile_co_plain");
    let handle = install(
        Collector::builder()
            .with_interval(Duration::from_secs(30))
            .with_ring_capacity(1 << 16)
            .with_histogram(3, HIGHEST)
            .with_expected_interval(tick, Duration::from_nanos(PERIOD_NS)),
    );
    let raw = tick_values(5, 3000);
    for &v in &raw {
        laptime::record(tick, Duration::from_nanos(v));
    }
    laptime::record(plain, Duration::from_millis(50));
    // A span whose guard a panic drops: recorded, and counted as unwound.
    let unwinding = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _span = laptime::start(plain);
        clock.advance(Duration::from_millis(3));
        panic!("planted: a bug inside a span");
    }));
    assert!(unwinding.is_err());

    let profile = handle.profile("co").expect("the collector answers");
    profile.validate().unwrap();
    assert_eq!(
        profile.meta.backwards_spans,
        handle.health().backwards_spans
    );
    let p = profile.stage(plain).unwrap();
    assert_eq!((p.count, p.unwound, p.in_rings), (2, 1, 0));
    assert!(p.corrected.is_none(), "no expected interval, no correction");

    let s = profile.stage(tick).unwrap();
    let c = s.corrected.as_ref().expect("corrected figures");
    let stats = handle.get_stats(tick, Window::Cumulative).unwrap();
    let co = stats.corrected.expect("get_stats has them too");
    assert_eq!(
        [c.p50_ns, c.p90_ns, c.p95_ns, c.p99_ns, c.p999_ns],
        [co.p50, co.p90, co.p95, co.p99, co.p999].map(ns),
        "the profile's corrected percentiles are get_stats'"
    );
    assert_eq!(
        (c.count, c.synthesized, c.truncated, c.min_ns, c.max_ns),
        (
            co.count,
            co.synthesized,
            co.truncated,
            ns(co.min),
            ns(co.max)
        )
    );
    assert_eq!(c.expected_interval_ns, PERIOD_NS);
    assert_eq!(c.mean_ns.floor() as u64, ns(co.mean));

    let all = corrected_reference(&raw, PERIOD_NS);
    assert!(all.len() > raw.len() + 1000, "the stalls add values");
    let sum: u64 = all.iter().sum();
    assert_eq!(
        (c.count, c.synthesized, c.sum_ns),
        (all.len() as u64, (all.len() - raw.len()) as u64, sum)
    );
    assert_eq!(c.min_ns, *all.iter().min().unwrap());
    assert_eq!(c.max_ns, *raw.iter().max().unwrap());
    let mut reference = Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap();
    for &v in &all {
        reference.record(v).unwrap();
    }
    assert_eq!(
        recorded(&c.histogram().unwrap().unwrap()),
        recorded(&reference)
    );
    // The raw figures beside them are untouched.
    Reference::new(&raw).check(s, &handle, Stage::new(tick).unwrap());

    // The file round trip keeps every field.
    let again = Profile::from_json(profile.to_json().as_bytes()).unwrap();
    assert_eq!(again, profile);
    let text = profile.to_json();
    assert_eq!(text.matches("\"corrected\"").count(), 1);
    assert_eq!(text.matches("\"unwound\": 1").count(), 1);
    assert!(!text.contains("in_rings"), "left out when 0");
}

fn co_collector(tick: &'static str, interval_ns: u64) -> CollectorHandle {
    clock();
    install(
        Collector::builder()
            .with_interval(Duration::from_secs(30))
            .with_ring_capacity(1 << 16)
            .with_histogram(3, HIGHEST)
            .with_expected_interval(tick, Duration::from_nanos(interval_ns)),
    )
}

/// Merging two runs of a corrected stage gives the profile of one run that recorded both; runs
/// corrected with different intervals are refused, naming the stage and both intervals.
#[test]
fn merged_corrected_figures_equal_one_run_of_both() {
    let _s = serial();
    let tick = unique("merge_co_tick");
    let take = |name: &str, sets: &[u64], interval_ns: u64| {
        let handle = co_collector(tick, interval_ns);
        for &set in sets {
            for v in tick_values(30 + set, 1500) {
                laptime::record(tick, Duration::from_nanos(v));
            }
        }
        handle.profile(name).unwrap()
    };
    let a = take("a", &[1], PERIOD_NS);
    let b = take("b", &[2], PERIOD_NS);
    let both = take("both", &[1, 2], PERIOD_NS);
    let merged = Profile::merge("a+b", &[a.clone(), b.clone()]).unwrap();
    merged.validate().unwrap();
    let (m, c) = (merged.stage(tick).unwrap(), both.stage(tick).unwrap());
    let (mc, cc) = (m.corrected.clone().unwrap(), c.corrected.clone().unwrap());
    assert_eq!(
        recorded(&mc.histogram().unwrap().unwrap()),
        recorded(&cc.histogram().unwrap().unwrap())
    );
    let without_text = |mut c: CorrectedProfile| {
        c.histogram = None;
        c
    };
    assert_eq!(without_text(mc.clone()), without_text(cc));
    let reference: Vec<u64> = [1, 2]
        .iter()
        .flat_map(|set| corrected_reference(&tick_values(30 + set, 1500), PERIOD_NS))
        .collect();
    assert_eq!(mc.count, reference.len() as u64);
    assert_eq!(mc.sum_ns, reference.iter().sum::<u64>());

    // Another interval: the corrected histograms describe other schedules.
    let other = take("other", &[1], PERIOD_NS / 2);
    match Profile::merge("m", &[a.clone(), b, other]) {
        Err(e @ ProfileError::IntervalMismatch { .. }) => {
            let ProfileError::IntervalMismatch {
                stage,
                first,
                other,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(
                (stage.as_str(), *first, *other),
                (tick, (0, PERIOD_NS), (2, PERIOD_NS / 2))
            );
            let text = e.to_string();
            assert!(
                text.contains(tick) && text.contains("1000000 ns in input 0"),
                "{text}"
            );
        }
        other => panic!("expected an interval mismatch, got {other:?}"),
    }

    // An input that did not correct the stage adds nothing to the corrected figures.
    let mut uncorrected = a.clone();
    uncorrected.meta.name = "uncorrected".into();
    uncorrected.stages[0].corrected = None;
    let merged = Profile::merge("m", &[uncorrected, a.clone()]).unwrap();
    let s = merged.stage(tick).unwrap();
    assert_eq!(s.count, 2 * a.stages[0].count);
    assert_eq!(
        without_text(s.corrected.clone().unwrap()),
        without_text(a.stages[0].corrected.clone().unwrap())
    );
}

/// A valid one-stage profile with corrected figures, as JSON.
fn corrected_json() -> serde_json::Value {
    let raw = [500_000u64, 700_000, 3_500_000, 900_000];
    let all = corrected_reference(&raw, PERIOD_NS);
    let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, 3).unwrap();
    for &v in &all {
        h.record(v).unwrap();
    }
    let corrected = CorrectedProfile::from_histogram(
        &h,
        CorrectedCounts {
            expected_interval_ns: PERIOD_NS,
            min_ns: *all.iter().min().unwrap(),
            max_ns: *all.iter().max().unwrap(),
            sum_ns: all.iter().sum(),
            synthesized: (all.len() - raw.len()) as u64,
            truncated: 0,
            saturated: 0,
        },
    )
    .unwrap();
    assert_eq!((corrected.count, corrected.synthesized), (6, 2));
    let mut stage = small_stage("tick", &raw);
    stage.corrected = Some(corrected);
    let profile = Profile::new(
        ProfileMeta::new("co", ProfileConfig::new(3, HIGHEST_NS)),
        vec![stage],
    );
    serde_json::from_str(&profile.to_json()).unwrap()
}

#[test]
fn a_bad_corrected_field_is_named() {
    let valid = corrected_json();
    Profile::from_json(serde_json::to_string(&valid).unwrap().as_bytes()).unwrap();
    let at = |f: &str| format!("stages[0].corrected.{f}");
    // (field, new value, kind, path)
    let cases: Vec<(&str, serde_json::Value, &str, String)> = vec![
        // Below p95: out of order.
        ("p99_ns", 3_000_000.into(), "invalid", at("p99_ns")),
        // In order, but not what the corrected histogram gives.
        ("p50_ns", 800_000.into(), "invalid", at("p50_ns")),
        ("mean_ns", 1.5.into(), "invalid", at("mean_ns")),
        (
            "expected_interval_ns",
            0.into(),
            "invalid",
            at("expected_interval_ns"),
        ),
        ("synthesized", 7.into(), "invalid", at("synthesized")),
        ("truncated", 5.into(), "invalid", at("truncated")),
        ("sum_ns", 1.into(), "invalid", at("sum_ns")),
        (
            "histogram",
            "not base64!".into(),
            "histogram",
            at("histogram"),
        ),
        ("count", "six".into(), "field", at("count")),
        ("bogus", 1.into(), "field", at("bogus")),
    ];
    for (field, value, kind, path) in cases {
        let mut v = valid.clone();
        v["stages"][0]["corrected"][field] = value;
        let e = parse(&v);
        let (got_kind, got_path) = match &e {
            ProfileError::Invalid { path, .. } => ("invalid", path),
            ProfileError::Histogram { path, .. } => ("histogram", path),
            ProfileError::Field { path, .. } => ("field", path),
            other => panic!("{field}: unexpected {other:?}"),
        };
        assert_eq!(
            (got_kind, got_path.as_str()),
            (kind, path.as_str()),
            "{field}: {e}"
        );
    }
    // The corrected histogram must hold `count` values.
    let mut v = valid.clone();
    v["stages"][0]["corrected"]["histogram"] = v["stages"][0]["histogram"].clone();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Invalid { path, message } if *path == at("histogram") && message.contains("holds 4 values but count is 6")),
        "{e:?}"
    );
    // The corrected spans (count − synthesized) are some of the stage's, never more: a
    // hand-written stage of 3 spans with 4 corrected ones.
    let mut v = valid.clone();
    let stage = &mut v["stages"][0];
    stage.as_object_mut().unwrap().remove("histogram");
    let sum = stage["sum_ns"].as_u64().unwrap();
    stage["count"] = 3.into();
    stage["calls"] = 3.into();
    stage["mean_ns"] = (sum as f64 / 3.0).into();
    let e = parse(&v);
    assert!(
        matches!(&e, ProfileError::Invalid { path, message } if *path == at("count") && message.contains("count − synthesized is 4 spans but the stage recorded only 3")),
        "{e:?}"
    );
    // Hand-written corrected figures: taken as they are, with their own checks.
    let mut v = valid.clone();
    v["stages"][0]["corrected"]
        .as_object_mut()
        .unwrap()
        .remove("histogram");
    v["stages"][0]["corrected"]["p50_ns"] = 800_000.into();
    let p = Profile::from_json(serde_json::to_string(&v).unwrap().as_bytes()).unwrap();
    assert_eq!(p.stages[0].corrected.as_ref().unwrap().p50_ns, 800_000);
}

/// Profiles written before the correction and accounting fields still parse (they are
/// optional), and a profile without them writes none of them.
#[test]
fn profiles_without_the_new_fields_parse_and_write_none() {
    let v = valid_json();
    let text = serde_json::to_string(&v).unwrap();
    for field in ["corrected", "unwound", "in_rings", "backwards_spans"] {
        assert!(
            !text.contains(field),
            "{field} is left out of the reference"
        );
    }
    let p = Profile::from_json(text.as_bytes()).unwrap();
    assert!(
        p.stages
            .iter()
            .all(|s| s.corrected.is_none() && s.unwound == 0 && s.in_rings == 0)
    );
    assert_eq!(p.meta.backwards_spans, 0);
    // in_rings is part of calls.
    let mut v = valid_json();
    v["stages"][1]["in_rings"] = 2.into();
    assert!(matches!(parse(&v), ProfileError::Invalid { path, .. } if path == "stages[1].calls"));
    v["stages"][1]["calls"] = (v["stages"][1]["calls"].as_u64().unwrap() + 2).into();
    Profile::from_json(serde_json::to_string(&v).unwrap().as_bytes()).unwrap();
    // Unwound spans are recorded spans: never more than count.
    let mut v = valid_json();
    v["stages"][1]["unwound"] = 3.into();
    assert!(matches!(parse(&v), ProfileError::Invalid { path, .. } if path == "stages[1].unwound"));
}

/// A profile's text refused with an error of at most a few lines: `e` is expected, and its
/// message must not quote the whole absurd input.
fn refused_briefly(text: &[u8]) -> ProfileError {
    // Not expect_err: its panic would print the whole absurd profile.
    let Err(e) = Profile::from_json(text) else {
        panic!("the absurd profile was accepted");
    };
    let message = e.to_string();
    let start: String = message.chars().take(200).collect();
    assert!(message.len() < 800, "{} bytes: {start}…", message.len());
    e
}

/// Breaks one field of a valid profile's JSON, given a 1 MiB text.
type Breaker = fn(&mut serde_json::Value, &str);

/// Metadata text longer than anyone writes (1 MiB names, hosts, revisions, tag keys and
/// values; 100 000 tags or merged-from entries) is refused naming the field, and the message
/// does not quote it.
#[test]
fn absurd_metadata_is_refused_naming_the_field() {
    let long = "x".repeat(1 << 20);
    let cases: [(&str, Breaker); 7] = [
        ("meta.name", |v, long| v["meta"]["name"] = long.into()),
        ("meta.host", |v, long| v["meta"]["host"] = long.into()),
        ("meta.git_revision", |v, long| {
            v["meta"]["git_revision"] = long.into()
        }),
        ("meta.tags", |v, long| {
            v["meta"]["tags"] = serde_json::json!({ long: "v" })
        }),
        ("meta.tags", |v, long| {
            v["meta"]["tags"] = serde_json::json!({ "k": long })
        }),
        ("meta.tags", |v, _| {
            let many: serde_json::Map<String, serde_json::Value> = (0..100_000)
                .map(|i| (format!("k{i}"), "v".into()))
                .collect();
            v["meta"]["tags"] = many.into();
        }),
        ("meta.merged_from", |v, _| {
            v["meta"]["merged_from"] = vec!["p"; 100_000].into();
        }),
    ];
    for (field, break_it) in cases {
        let mut v = valid_json();
        break_it(&mut v, &long);
        let e = refused_briefly(serde_json::to_string(&v).unwrap().as_bytes());
        assert!(
            matches!(&e, ProfileError::Invalid { path, .. } if path.starts_with(field)),
            "{field}: {e}"
        );
    }
}

/// An unknown key of 1 MiB: named as unknown, not quoted whole.
#[test]
fn a_huge_unknown_key_is_not_quoted_whole() {
    let mut v = valid_json();
    v["meta"]["x".repeat(1 << 20)] = 1.into();
    let e = refused_briefly(serde_json::to_string(&v).unwrap().as_bytes());
    assert!(matches!(e, ProfileError::Field { .. }), "{e}");
}

/// Deep nesting, numbers past u64, a count no histogram holds, text that stops mid-way: typed
/// errors, no panic, no stack overflow.
#[test]
fn absurd_structure_and_numbers_are_typed_errors() {
    let valid = serde_json::to_string(&valid_json()).unwrap();
    let deep = valid.replacen(
        "\"name\":\"errors\"",
        &format!("\"name\":{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        1,
    );
    assert_ne!(deep, valid);
    assert!(matches!(
        refused_briefly(deep.as_bytes()),
        ProfileError::Field { .. } | ProfileError::Syntax { .. }
    ));
    let top = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    assert!(matches!(
        refused_briefly(top.as_bytes()),
        ProfileError::Field { .. } | ProfileError::Syntax { .. }
    ));
    for count in ["1e30", "18446744073709551616", "-1"] {
        let mut v = valid_json();
        v["stages"][0]["count"] = serde_json::from_str(count).unwrap();
        let e = refused_briefly(serde_json::to_string(&v).unwrap().as_bytes());
        assert!(matches!(e, ProfileError::Field { .. }), "{count}: {e}");
    }
    let mut v = valid_json();
    v["stages"][0]["count"] = u64::MAX.into();
    v["stages"][0]["calls"] = u64::MAX.into();
    assert!(matches!(
        refused_briefly(serde_json::to_string(&v).unwrap().as_bytes()),
        ProfileError::Invalid { .. }
    ));
    for cut in [1, valid.len() / 3, valid.len() - 1] {
        assert!(matches!(
            refused_briefly(&valid.as_bytes()[..cut]),
            ProfileError::Syntax { .. }
        ));
    }
}

/// A family's 2-digit series in a profile of 3-digit stages: carried over at their buckets'
/// reported values, so the profile's percentiles are get_stats' and within 1/128 of the exact
/// value; count, min, max and sum stay exact.
#[test]
fn a_family_series_is_profiled_at_its_own_precision() {
    let _s = serial();
    let handle = collector("profile_family_deadline");
    let family = laptime::Family::new(unique("profile_family"), &["pair"]).unwrap();
    let series = family.series(&["BTC-USD"]).unwrap();
    let recorded_values = values(41, 3_000);
    for &v in &recorded_values {
        laptime::record(series, Duration::from_nanos(v));
    }
    assert!(handle.flush());
    let profile = handle.profile("family").unwrap();
    let key = format!("{}{{pair=\"BTC-USD\"}}", family.name());
    let s = profile
        .stage(&key)
        .unwrap_or_else(|| panic!("no {key} in the profile"));
    let reference = Reference::new(&recorded_values);
    assert_eq!(s.count, recorded_values.len() as u64);
    assert_eq!(
        (s.min_ns, s.max_ns),
        (reference.sorted[0], *reference.sorted.last().unwrap())
    );
    let stats = handle.get_stats(series, Window::Cumulative).unwrap();
    for (q, p, from_stats) in [
        (0.5, s.p50_ns, stats.p50),
        (0.99, s.p99_ns, stats.p99),
        (0.999, s.p999_ns, stats.p999),
    ] {
        let exact = reference.at_rank(q);
        assert_eq!(p, ns(from_stats), "q{q}: the profile agrees with get_stats");
        assert!(
            p >= exact && (p - exact) as f64 <= exact as f64 / 128.0,
            "q{q}: {p} vs exact {exact}"
        );
    }
}

/// A corrected stage's values past the range (the raw one and those the correction adds) are
/// counted in its profile, so its corrected percentiles say when they are floors.
#[test]
fn corrected_values_past_the_range_are_counted_in_the_profile() {
    let _s = serial();
    let handle = collector("profile_corrected_saturated_deadline");
    let name = unique("profile_corrected_saturated");
    let stage = Stage::new(name).unwrap();
    stage
        .set_expected_interval(Some(Duration::from_secs(1)))
        .unwrap();
    for _ in 0..30 {
        laptime::record(stage, Duration::from_secs(1));
    }
    // 20 s against a 10 s range and a 1 s interval: 19 s, 18 s, … 1 s are added; 20 s and the
    // nine added values above 10 s are past the range.
    laptime::record(stage, Duration::from_secs(20));
    assert!(handle.flush());
    let profile = handle.profile("corrected").unwrap();
    let s = profile.stage(name).unwrap();
    let c = s.corrected.as_ref().expect("a corrected stage");
    assert_eq!((c.count, c.synthesized, c.saturated), (50, 19, 10));
    let stats = handle.get_stats(stage, Window::Cumulative).unwrap();
    assert_eq!(stats.corrected.unwrap().saturated, c.saturated);
    // Ranks 41–50 of 50 are past the range: p99 (rank 50) is a floor, p50 (rank 25) is not.
    assert!(c.is_saturated(0.99) && !c.is_saturated(0.5));
    // Written and read back, the count stays.
    let text = serde_json::to_string(&profile).unwrap();
    let back: laptime::profile::Profile = serde_json::from_str(&text).unwrap();
    assert_eq!(
        back.stage(name)
            .unwrap()
            .corrected
            .as_ref()
            .unwrap()
            .saturated,
        10
    );
}
