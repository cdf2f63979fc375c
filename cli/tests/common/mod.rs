//! Synthetic profiles for the CLI tests: stages of seeded log-normal (or exponential) latencies
//! recorded into HdrHistograms, and a runner for the real binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use laptime::profile::{Histogram, Profile, ProfileConfig, ProfileMeta, StageCounts, StageProfile};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};

/// The profiles' histogram range: 1 ns to 1 hour.
pub const HIGHEST_NS: u64 = 3_600_000_000_000;

/// What one synthetic stage looks like.
#[derive(Clone)]
pub struct Spec {
    pub name: &'static str,
    pub labels: Vec<(&'static str, &'static str)>,
    /// Log-normal median, in ns.
    pub median_ns: f64,
    /// Log-normal shape.
    pub sigma: f64,
    /// Every sample is multiplied by this (1.10 = a 10 % slowdown).
    pub scale: f64,
    pub n: usize,
    /// The deadline and how many spans missed it.
    pub deadline: Option<(u64, u64)>,
}

impl Spec {
    pub fn new(name: &'static str, median_ns: f64, sigma: f64) -> Spec {
        Spec {
            name,
            labels: Vec::new(),
            median_ns,
            sigma,
            scale: 1.0,
            n: 20_000,
            deadline: None,
        }
    }
}

/// Four stages shaped like the demo's tick.
pub fn tick_specs() -> Vec<Spec> {
    vec![
        Spec::new("tick_total", 420_000.0, 0.35),
        Spec::new("stage_fetch_md", 120_000.0, 0.5),
        Spec::new("stage_spread", 35_000.0, 0.3),
        Spec {
            labels: vec![("api", "batch-cancel"), ("verb", "post")],
            ..Spec::new("exchange_req", 90_000.0, 0.45)
        },
    ]
}

/// A stage's profile from `values` (ns) with the given digits.
pub fn stage_from_values(
    name: &str,
    labels: &[(&str, &str)],
    values: &[u64],
    digits: u8,
    deadline: Option<(u64, u64)>,
) -> StageProfile {
    let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, digits).unwrap();
    for &v in values {
        h.record(v).unwrap();
    }
    let counts = StageCounts {
        min_ns: values.iter().copied().min().unwrap_or(0),
        max_ns: values.iter().copied().max().unwrap_or(0),
        sum_ns: values.iter().sum(),
        deadline_ns: deadline.map(|d| d.0),
        deadline_misses: deadline.map_or(0, |d| d.1),
        ..StageCounts::default()
    };
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    StageProfile::from_histogram(name, labels, &h, counts).unwrap()
}

/// `spec.n` seeded log-normal samples, scaled, as whole ns (at least 1).
pub fn lognormal_values(spec: &Spec, seed: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = LogNormal::new(spec.median_ns.ln(), spec.sigma).unwrap();
    (0..spec.n)
        .map(|_| ((d.sample(&mut rng) * spec.scale).round() as u64).max(1))
        .collect()
}

/// `n` seeded exponential samples of mean `mean_ns`.
pub fn exponential_values(n: usize, mean_ns: f64, seed: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = Exp::new(1.0 / mean_ns).unwrap();
    (0..n)
        .map(|_| (d.sample(&mut rng).round() as u64).max(1))
        .collect()
}

pub fn stage(spec: &Spec, seed: u64, digits: u8) -> StageProfile {
    // Each stage draws from its own stream.
    let seed = spec
        .name
        .bytes()
        .fold(seed.wrapping_mul(0x100_0000_01b3), |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    stage_from_values(
        spec.name,
        &spec.labels,
        &lognormal_values(spec, seed),
        digits,
        spec.deadline,
    )
}

pub fn profile(name: &str, digits: u8, stages: Vec<StageProfile>) -> Profile {
    let mut meta = ProfileMeta::new(name, ProfileConfig::new(digits, HIGHEST_NS));
    meta.host = "test-host".to_string();
    meta.started_unix_ms = 1_767_225_600_000;
    meta.ended_unix_ms = 1_767_225_660_000;
    Profile::new(meta, stages)
}

/// A profile of `specs`, each stage sampled with `seed`.
pub fn synthetic(name: &str, specs: &[Spec], seed: u64) -> Profile {
    profile(name, 3, specs.iter().map(|s| stage(s, seed, 3)).collect())
}

/// A fresh directory for one test.
pub fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("laptime-cli")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn write(dir: &Path, file: &str, p: &Profile) -> PathBuf {
    let path = dir.join(file);
    p.write(&path).unwrap();
    path
}

/// Runs the `laptime` binary.
pub fn laptime<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_laptime"))
        .args(args)
        .output()
        .expect("the laptime binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that a bootstrap shortcut's interval ends are each within 10 % of the classical
/// interval's width of the classical ends.
pub fn assert_same_interval(shortcut: (f64, f64), classical: (f64, f64)) {
    let width = classical.1 - classical.0;
    assert!(
        (shortcut.0 - classical.0).abs() < 0.1 * width
            && (shortcut.1 - classical.1).abs() < 0.1 * width,
        "shortcut {shortcut:?} vs classical {classical:?}"
    );
}

/// The `metric` row of `stage` in a gate report.
pub fn row<'a>(
    report: &'a laptime_cli::gate::GateReport,
    stage: &str,
    metric: laptime_cli::gate::Metric,
) -> &'a laptime_cli::gate::MetricRow {
    report
        .rows()
        .find(|(s, r)| *s == stage && r.metric == metric)
        .unwrap_or_else(|| panic!("no {metric:?} row for {stage}"))
        .1
}

/// A configuration file's text with `[prometheus] native = true`.
pub fn with_native(config: &str) -> String {
    if config.contains("[prometheus]\n") {
        config.replacen("[prometheus]\n", "[prometheus]\nnative = true\n", 1)
    } else {
        format!("{config}\n[prometheus]\nnative = true\n")
    }
}

/// The series a native-histogram configuration must never query: the `_bucket`, `_count` and
/// `_sum` of every stage histogram family its exporter sends as native (the shared stage family,
/// the corrected one, and each own family of a labelled stage, listed or named by a rule).
pub fn classic_series_of_native_families(config: &laptime::config::Config) -> Vec<String> {
    let p = &config.prometheus;
    let n = laptime::export::prometheus::MetricNames::new(&p.namespace, p.unit.into());
    let mut families = vec![
        n.stage_duration().to_owned(),
        n.stage_duration_corrected().to_owned(),
    ];
    let labelled = config
        .sla
        .iter()
        .filter(|r| !r.labels.is_empty())
        .map(|r| &r.stage);
    for stage in p.labelled_stages.iter().chain(labelled) {
        families.push(n.labelled_stage(stage));
    }
    let mut out = Vec::new();
    for f in families {
        for suffix in ["_bucket", "_count", "_sum"] {
            out.push(format!("{f}{suffix}"));
        }
    }
    out
}

/// The identifiers of a PromQL expression outside its string literals (metric, label and
/// function names): what to look a series name up in.
pub fn promql_identifiers(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut start = None;
    let bytes = expr.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'"' && (i == 0 || bytes[i - 1] != b'\\') {
            in_string = !in_string;
            start = None;
            continue;
        }
        let ident = !in_string && (b.is_ascii_alphanumeric() || b == b'_' || b == b':');
        match (ident, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(&expr[s..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(&expr[s..]);
    }
    out
}
