//! The performance gate: exit codes through the real binary, the judgement and the bootstrap's
//! statistics through the library.

mod common;

use common::{Spec, dir, laptime, row, stderr, stdout, synthetic, tick_specs, write};
use laptime_cli::gate::{GateError, GateOptions, Metric, StageResult, Verdict, gate};
use laptime_cli::interval::{QuantileSampler, RunSamplers, bootstrap_relative_pct};
use rand::{Rng, SeedableRng};

/// Runs `laptime gate --baseline B --current C` plus `extra` arguments.
fn gate_cli(
    baseline: impl AsRef<std::path::Path>,
    current: impl AsRef<std::path::Path>,
    extra: &[&std::ffi::OsStr],
) -> std::process::Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "gate".as_ref(),
        "--baseline".as_ref(),
        baseline.as_ref().as_os_str(),
        "--current".as_ref(),
        current.as_ref().as_os_str(),
    ];
    args.extend_from_slice(extra);
    laptime(args)
}

/// Two independent samples of the same distributions: no regression, exit 0.
#[test]
fn same_distribution_passes() {
    let specs = tick_specs();
    let (base, cur) = (synthetic("base", &specs, 1), synthetic("cur", &specs, 2));
    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    assert!(report.passed(), "{}", report.to_markdown());
    assert_eq!(report.rows().count(), 2 * specs.len());

    let d = dir("same_distribution_passes");
    let out = gate_cli(
        write(&d, "base.json", &base),
        write(&d, "cur.json", &cur),
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let md = stdout(&out);
    assert!(md.lines().last().unwrap().starts_with("**PASS**"), "{md}");
    assert!(!md.contains("REGRESSION"), "{md}");
}

/// One stage 10 % slower: that stage's p95 and p99 regress, the others pass, exit 1, and the
/// Markdown report names it.
#[test]
fn ten_percent_slowdown_of_one_stage_fails() {
    let specs = tick_specs();
    let mut slow = specs.clone();
    slow[1].scale = 1.10; // stage_fetch_md
    let (base, cur) = (synthetic("base", &specs, 1), synthetic("cur", &slow, 2));
    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    for (stage, r) in report.rows() {
        let want = if stage == "stage_fetch_md" {
            Verdict::Regression
        } else {
            Verdict::Pass
        };
        assert_eq!(r.verdict, want, "{stage} {:?}: {r:?}", r.metric);
    }
    let p95 = row(&report, "stage_fetch_md", Metric::P95);
    // The interval covers the true change and excludes the threshold.
    let (lo, hi) = p95.interval.unwrap();
    assert!(lo > 3.0 && lo < 10.0 && hi > 10.0, "{p95:?}");

    let d = dir("ten_percent_slowdown_of_one_stage_fails");
    let report_path = d.join("gate.md");
    let out = gate_cli(
        write(&d, "base.json", &base),
        write(&d, "cur.json", &cur),
        &["--report".as_ref(), report_path.as_os_str()],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let md = stdout(&out);
    assert_eq!(std::fs::read_to_string(&report_path).unwrap(), md);
    let regressed: Vec<&str> = md
        .lines()
        .filter(|l| l.contains("**REGRESSION**"))
        .collect();
    assert_eq!(regressed.len(), 2, "{md}");
    assert!(
        regressed
            .iter()
            .all(|l| l.starts_with("| stage_fetch_md | p9")),
        "{md}"
    );
    let summary = md.lines().last().unwrap();
    assert!(
        summary.starts_with("**FAIL**: 2 regressions: stage_fetch_md p95 +"),
        "{summary}"
    );
}

/// A 4 % p95 change on the very same samples: strict mode flags it (above +3 %); noise-aware
/// mode calls it within noise, since two independent runs of 20 000 spans differ that much.
#[test]
fn strict_flags_a_four_percent_p95_change() {
    let spec = Spec::new("tick_total", 420_000.0, 0.35);
    let values = common::lognormal_values(&spec, 7);
    let faster: Vec<u64> = values
        .iter()
        .map(|&v| (v as f64 * 1.04).round() as u64)
        .collect();
    let base = common::profile(
        "base",
        3,
        vec![common::stage_from_values(
            "tick_total",
            &[],
            &values,
            3,
            None,
        )],
    );
    let cur = common::profile(
        "cur",
        3,
        vec![common::stage_from_values(
            "tick_total",
            &[],
            &faster,
            3,
            None,
        )],
    );

    let mut strict = GateOptions::default();
    strict.strict = true;
    let report = gate(&base, &cur, &strict).unwrap();
    let p95 = row(&report, "tick_total", Metric::P95);
    // 4 % within the histogram's resolution (3 significant digits: 0.1 % per value).
    assert!((p95.delta - 4.0).abs() < 0.25, "{p95:?}");
    assert_eq!(p95.verdict, Verdict::Regression);
    assert_eq!(
        row(&report, "tick_total", Metric::P99).verdict,
        Verdict::Pass
    );
    assert_eq!(report.exit_code(), 1);

    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    assert_eq!(
        row(&report, "tick_total", Metric::P95).verdict,
        Verdict::WithinNoise
    );
    assert_eq!(report.exit_code(), 0);

    let d = dir("strict_flags_a_four_percent_p95_change");
    let (b, c) = (write(&d, "b.json", &base), write(&d, "c.json", &cur));
    let args = |extra: &[&str]| {
        let mut a = vec![
            "gate".to_string(),
            "--baseline".into(),
            b.display().to_string(),
        ];
        a.extend(["--current".into(), c.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    assert_eq!(laptime(args(&["--strict"])).status.code(), Some(1));
    assert_eq!(laptime(args(&[])).status.code(), Some(0));
    // A looser threshold lets the strict gate pass.
    assert_eq!(
        laptime(args(&["--strict", "--p95", "4.5"])).status.code(),
        Some(0)
    );
}

/// Deadline misses from 1 % to 3 % of 20 000 spans (+2 points, threshold +1) regress; to 1.5 %
/// they do not.
#[test]
fn deadline_miss_increase_fails() {
    let mut base_spec = Spec::new("tick_total", 420_000.0, 0.35);
    base_spec.deadline = Some((2_000_000, 200));
    let mut cur_spec = base_spec.clone();
    cur_spec.deadline = Some((2_000_000, 600));
    let base = synthetic("base", &[base_spec], 1);
    let cur = synthetic("cur", std::slice::from_ref(&cur_spec), 2);
    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    let r = row(&report, "tick_total", Metric::DeadlineMiss);
    assert_eq!((r.baseline, r.current, r.delta), (1.0, 3.0, 2.0));
    let (lo, hi) = r.interval.unwrap();
    assert!(lo > 1.0 && lo < 2.0 && hi > 2.0 && hi < 3.0, "{r:?}");
    assert_eq!(r.verdict, Verdict::Regression);
    assert_eq!(
        row(&report, "tick_total", Metric::P95).verdict,
        Verdict::Pass
    );

    cur_spec.deadline = Some((2_000_000, 300));
    let cur = synthetic("cur", &[cur_spec], 2);
    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    assert_eq!(
        row(&report, "tick_total", Metric::DeadlineMiss).verdict,
        Verdict::Pass
    );

    let d = dir("deadline_miss_increase_fails");
    let cur = synthetic(
        "cur",
        &[Spec {
            deadline: Some((2_000_000, 600)),
            ..Spec::new("tick_total", 420_000.0, 0.35)
        }],
        2,
    );
    let out = gate_cli(
        write(&d, "base.json", &base),
        write(&d, "cur.json", &cur),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out)
            .contains("| tick_total | deadline miss | 1.00 % | 3.00 % | +2.00 pts | +1.00 pts |"),
        "{}",
        stdout(&out)
    );
}

/// Stages in one profile only are listed, stages with too few spans are not judged; neither fails.
#[test]
fn added_removed_and_sparse_stages_are_listed() {
    let gone = Spec::new("stage_legacy", 50_000.0, 0.3);
    let new = Spec::new("stage_batch", 70_000.0, 0.3);
    let rare = Spec {
        n: 12,
        ..Spec::new("stage_rare", 900_000.0, 0.3)
    };
    let kept = Spec::new("tick_total", 420_000.0, 0.35);
    let base = synthetic("base", &[kept.clone(), gone, rare.clone()], 1);
    let cur = synthetic("cur", &[new, kept, rare], 2);
    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    assert!(report.passed());
    assert_eq!(report.added(), ["stage_batch"]);
    assert_eq!(report.removed(), ["stage_legacy"]);
    let rare = report
        .stages
        .iter()
        .find(|s| s.stage == "stage_rare")
        .unwrap();
    assert_eq!(
        rare.result,
        StageResult::TooFewSamples {
            baseline_count: 12,
            current_count: 12
        }
    );

    let d = dir("added_removed_and_sparse_stages_are_listed");
    let out = gate_cli(
        write(&d, "base.json", &base),
        write(&d, "cur.json", &cur),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(
        md.contains("| stage_batch | – | | | | | | added (only in current) |"),
        "{md}"
    );
    assert!(
        md.contains("| stage_legacy | – | | | | | | removed (only in baseline) |"),
        "{md}"
    );
    assert!(
        md.contains("| stage_rare | – | 12 spans | 12 spans | | | | too few samples, not judged |"),
        "{md}"
    );
    assert!(
        md.lines()
            .last()
            .unwrap()
            .ends_with("; stages: 1 added, 1 removed (stage_legacy), 1 with too few samples."),
        "the summary names the removed stage: {md}"
    );
}

/// Runs `laptime gate` on two profiles written to a fresh directory.
fn gate_binary(
    test: &str,
    base: &laptime::profile::Profile,
    cur: &laptime::profile::Profile,
) -> std::process::Output {
    let d = dir(test);
    let report = d.join("gate.md");
    let out = gate_cli(
        write(&d, "base.json", base),
        write(&d, "cur.json", cur),
        &["--report".as_ref(), report.as_os_str()],
    );
    assert_eq!(
        std::fs::read_to_string(&report).unwrap(),
        stdout(&out),
        "the report is written as printed"
    );
    out
}

/// An empty current profile (the workload recorded nothing) judges nothing: an error, exit 2,
/// that says what to check; the report still lists the baseline's stages as removed.
#[test]
fn an_empty_current_profile_exits_2() {
    let base = synthetic("base", &tick_specs(), 1);
    let empty = common::profile("cur", 3, Vec::new());
    let e = gate(&base, &empty, &GateOptions::default()).unwrap_err();
    let GateError::NothingJudged { report } = &e else {
        panic!("expected NothingJudged, got {e:?}");
    };
    assert_eq!(report.removed().len(), 4);
    assert_eq!((report.judged(), report.exit_code()), (0, 2));
    assert!(!report.passed());

    let out = gate_binary("an_empty_current_profile_exits_2", &base, &empty);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "laptime: error: no stage was judged, so the gate cannot pass: the current profile has \
         no stages (the baseline has 4): did the workload run and record anything? Check that a \
         collector is installed before it runs, that the profile is taken after it, and that \
         laptime's `enable` feature is on\n"
    );
    let md = stdout(&out);
    let summary = md.lines().last().unwrap();
    assert!(
        summary.starts_with("**ERROR**: no stage was judged"),
        "{summary}"
    );
    assert!(
        summary.ends_with(
            "; stages: 0 added, 4 removed (tick_total, stage_fetch_md, stage_spread and 1 more), \
             0 with too few samples."
        ),
        "{summary}"
    );
    assert!(!md.contains("PASS"), "{md}");
}

/// Every stage renamed: no stage in both profiles, so nothing is judged: exit 2, naming both
/// sides' stages and suggesting a rename.
#[test]
fn all_stages_renamed_exits_2() {
    let base = synthetic(
        "base",
        &[
            Spec::new("tick_total", 420_000.0, 0.35),
            Spec::new("stage_fetch_md", 120_000.0, 0.5),
        ],
        1,
    );
    let cur = synthetic(
        "cur",
        &[
            Spec::new("tick", 420_000.0, 0.35),
            Spec::new("fetch_md", 120_000.0, 0.5),
        ],
        2,
    );
    let e = gate(&base, &cur, &GateOptions::default()).unwrap_err();
    assert!(matches!(e, GateError::NothingJudged { .. }), "{e:?}");
    let out = gate_binary("all_stages_renamed_exits_2", &base, &cur);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "laptime: error: no stage was judged, so the gate cannot pass: no stage is in both \
         profiles (only in the baseline: tick_total, stage_fetch_md; only in the current \
         profile: tick, fetch_md): were the stages renamed or relabelled? Stages are matched by \
         name and labels; gate against a baseline taken with the current names\n"
    );
    let md = stdout(&out);
    assert!(
        md.contains("| tick | – | | | | | | added (only in current) |"),
        "{md}"
    );

    // Stages in both profiles, but all too sparse: nothing judged either.
    let sparse = |name: &str, seed: u64| {
        synthetic(
            name,
            &[Spec {
                n: 12,
                ..Spec::new("stage_rare", 900_000.0, 0.3)
            }],
            seed,
        )
    };
    let e = gate(
        &sparse("base", 1),
        &sparse("cur", 2),
        &GateOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no stage was judged, so the gate cannot pass: the stage in both profiles (stage_rare) \
         had fewer than 30 spans on one side: run the workload longer, or lower --min-count"
    );
}

/// The point values come from the histograms by the bootstrap's rule, so the delta and its
/// interval agree even for a profile built in memory with an edited (unvalidated) p99.
#[test]
fn point_values_come_from_the_histograms() {
    let spec = Spec::new("tick_total", 420_000.0, 0.35);
    let base = synthetic("base", std::slice::from_ref(&spec), 1);
    let cur = synthetic("cur", std::slice::from_ref(&spec), 2);
    let mut edited = cur.clone();
    edited.stages[0].p99_ns = cur.stages[0].p99_ns * 2;
    let report = gate(&base, &edited, &GateOptions::default()).unwrap();
    let p99 = row(&report, "tick_total", Metric::P99);
    assert_eq!(
        (p99.baseline, p99.current),
        (base.stages[0].p99_ns as f64, cur.stages[0].p99_ns as f64)
    );
    assert_eq!(p99.verdict, Verdict::Pass);

    // Edited in the file, the profile is refused, naming the field.
    let d = dir("point_values_come_from_the_histograms");
    let json = cur.to_json();
    let p99_text = format!("\"p99_ns\": {}", cur.stages[0].p99_ns);
    assert!(json.contains(&p99_text), "{json}");
    let bad = d.join("edited.json");
    std::fs::write(
        &bad,
        json.replacen(
            &p99_text,
            &format!("\"p99_ns\": {}", cur.stages[0].p999_ns),
            1,
        ),
    )
    .unwrap();
    let out = gate_cli(write(&d, "base.json", &base), &bad, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "laptime: error: current profile {}: profile field `stages[0].p99_ns`: p99_ns is {} \
             but the histogram gives {}",
            bad.display(),
            cur.stages[0].p999_ns,
            cur.stages[0].p99_ns
        )),
        "{err}"
    );
}

/// Different precision on the two sides is compared and noted, not refused.
#[test]
fn different_significant_digits_are_compared_and_noted() {
    let specs = tick_specs();
    let base = synthetic("base", &specs, 1);
    let cur = common::profile(
        "cur",
        2,
        specs.iter().map(|s| common::stage(s, 2, 2)).collect(),
    );
    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    assert!(report.passed(), "{}", report.to_markdown());
    assert_eq!(report.rows().count(), 2 * specs.len());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("baseline 3 significant digits, current 2")),
        "{:?}",
        report.notes
    );
}

/// A hand-written stage without a histogram is judged on its point values, with a note.
#[test]
fn stage_without_histogram_is_judged_on_points() {
    let spec = Spec::new("tick_total", 420_000.0, 0.35);
    let base = synthetic("base", std::slice::from_ref(&spec), 1);
    let mut cur = synthetic(
        "cur",
        &[Spec {
            scale: 1.04,
            ..spec
        }],
        2,
    );
    cur.stages[0].histogram = None;
    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    let p95 = row(&report, "tick_total", Metric::P95);
    assert_eq!(p95.interval, None);
    assert_eq!(
        p95.verdict,
        if p95.delta > 3.0 {
            Verdict::Regression
        } else {
            Verdict::Pass
        }
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("no histogram in the current profile"))
    );
}

/// The same inputs and seed give the same report; another seed moves only the intervals.
#[test]
fn seeded_reports_are_reproducible() {
    let specs = tick_specs();
    let (base, cur) = (synthetic("base", &specs, 1), synthetic("cur", &specs, 2));
    let a = gate(&base, &cur, &GateOptions::default()).unwrap();
    let b = gate(&base, &cur, &GateOptions::default()).unwrap();
    assert_eq!(a.to_markdown(), b.to_markdown());
    let mut other = GateOptions::default();
    other.seed = 99;
    let c = gate(&base, &cur, &other).unwrap();
    let deltas = |r: &laptime_cli::gate::GateReport| -> Vec<f64> {
        r.rows().map(|(_, r)| r.delta).collect()
    };
    assert_eq!(deltas(&a), deltas(&c));
    assert_ne!(
        a.rows().map(|(_, r)| r.interval).collect::<Vec<_>>(),
        c.rows().map(|(_, r)| r.interval).collect::<Vec<_>>()
    );
}

/// The bootstrap's interval against the analytic order-statistic standard error. For an
/// exponential distribution the sample q-quantile of n values has standard error
/// sqrt(q(1−q)/n) / f(x_q), with f(x_q)·x_q = (1−q)·ln(1/(1−q)), so the relative change between
/// two independent samples has standard error sqrt(2q / ((1−q)·n)) / ln(1/(1−q)), and a 95 %
/// interval is 2 × 1.96 of that wide. One pair's bootstrap width scatters by about ±8 % around it
/// at n = 50 000 (the bootstrap's quantile variance converges slowly, as n^(-1/4)); the mean over
/// eight pairs must be within 10 % (measured: +5 % at p95, +0.2 % at p99).
#[test]
fn bootstrap_width_matches_the_order_statistic_standard_error() {
    let n = 50_000usize;
    for q in [0.95, 0.99] {
        let analytic =
            2.0 * 1.959_963_984_540_054 * 100.0 * (2.0 * q / ((1.0 - q) * n as f64)).sqrt()
                / (1.0 / (1.0 - q)).ln();
        let mut widths = Vec::new();
        for pair in 0..8u64 {
            let sampler = |seed: u64| {
                let v = common::exponential_values(n, 100_000.0, seed);
                let s = common::stage_from_values("s", &[], &v, 3, None);
                let h = s.histogram().unwrap().unwrap();
                RunSamplers::from(QuantileSampler::new(&h, s.min_ns, s.max_ns))
            };
            let (b, c) = (sampler(100 + pair), sampler(200 + pair));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(pair);
            let (lo, hi) = bootstrap_relative_pct(&b, &c, q, 0.95, 4000, &mut rng);
            widths.push(hi - lo);
        }
        let mean = widths.iter().sum::<f64>() / widths.len() as f64;
        assert!(
            (mean / analytic - 1.0).abs() < 0.10,
            "q {q}: bootstrap width {mean:.3} % (each {widths:?}) vs analytic {analytic:.3} %"
        );
    }
}

/// A profile the gate cannot read: exit 2 and one stderr line naming the file.
#[test]
fn missing_file_exits_2() {
    let d = dir("missing_file_exits_2");
    let base = write(&d, "base.json", &synthetic("base", &tick_specs()[..1], 1));
    let missing = d.join("no-such-profile.json");
    let out = gate_cli(&base, &missing, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "laptime: error: current profile file {}: ",
            missing.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("os error").count(), 1, "each cause once: {err}");
    assert!(stdout(&out).is_empty());
}

/// Malformed JSON: exit 2, naming the file and the field.
#[test]
fn malformed_profile_exits_2_naming_the_field() {
    let d = dir("malformed_profile_exits_2_naming_the_field");
    let base = synthetic("base", &tick_specs()[..2], 1);
    let b = write(&d, "base.json", &base);
    let json = base.to_json();
    let p95 = format!("\"p95_ns\": {}", base.stages[1].p95_ns);
    assert!(json.contains(&p95), "{json}");
    let bad = d.join("bad.json");
    std::fs::write(&bad, json.replacen(&p95, "\"p95_ns\": \"fast\"", 1)).unwrap();
    let out = gate_cli(&b, &bad, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "laptime: error: current profile {}: ",
            bad.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("stages[1].p95_ns").count(), 1, "{err}");
}

/// Out-of-range options are errors (exit 2) naming the option.
#[test]
fn bad_options_exit_2() {
    let d = dir("bad_options_exit_2");
    let b = write(&d, "b.json", &synthetic("b", &tick_specs()[..1], 1));
    let out = gate_cli(&b, &b, &["--confidence".as_ref(), "95".as_ref()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "laptime: error: --confidence 95: must be a number between 0 and 1, such as 0.95\n"
    );
    let out = laptime(["gate", "--baseline", "x.json"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage errors exit 2 too");
    assert!(stderr(&out).contains("--current"), "{}", stderr(&out));
}

/// The Beta shortcut against the classical bootstrap that really resamples the raw values and
/// sorts them: same values (all below 2048 ns, where 3 significant digits are exact), same
/// interval up to the replicates' Monte-Carlo noise (measured: 2.5 % of its width here).
#[test]
fn beta_shortcut_matches_classical_resampling() {
    let n = 1_000usize;
    let q = 0.95;
    let k = laptime::rank(q, n as u64) as usize;
    let b: Vec<u64> = common::exponential_values(n, 250.0, 11)
        .into_iter()
        .map(|v| v.min(2047))
        .collect();
    let c: Vec<u64> = common::exponential_values(n, 250.0, 12)
        .into_iter()
        .map(|v| v.min(2047))
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let replicates = 2_000;
    let mut deltas = Vec::with_capacity(replicates);
    let mut buf = vec![0u64; n];
    for _ in 0..replicates {
        let mut resampled_quantile = |values: &[u64]| {
            for x in buf.iter_mut() {
                *x = values[rng.random_range(0..n)];
            }
            *buf.select_nth_unstable(k - 1).1 as f64
        };
        let (qb, qc) = (resampled_quantile(&b), resampled_quantile(&c));
        deltas.push(100.0 * (qc - qb) / qb);
    }
    deltas.sort_by(f64::total_cmp);
    let classical = (deltas[49], deltas[1949]);

    let sampler = |v: &[u64]| {
        let s = common::stage_from_values("s", &[], v, 3, None);
        let h = s.histogram().unwrap().unwrap();
        RunSamplers::from(QuantileSampler::new(&h, s.min_ns, s.max_ns))
    };
    let mut sorted = b.clone();
    sorted.sort_unstable();
    assert_eq!(
        sampler(&b).quantile(q),
        sorted[k - 1],
        "the histogram is exact here"
    );
    let shortcut = bootstrap_relative_pct(&sampler(&b), &sampler(&c), q, 0.95, 4_000, &mut rng);
    common::assert_same_interval(shortcut, classical);
}

/// Counters from a crafted file near `u64::MAX` are judged, not added up into an overflow.
#[test]
fn huge_miss_counts_do_not_overflow() {
    let values = common::lognormal_values(&Spec::new("tick_total", 420_000.0, 0.35), 3);
    let mut stage = common::stage_from_values("tick_total", &[], &values, 3, None);
    stage.deadline_misses = u64::MAX / 2 + 1;
    stage.deadline_miss_pct = 100.0;
    let profile = common::profile("huge", 3, vec![stage]);
    profile.validate().unwrap();
    let report = gate(&profile, &profile, &GateOptions::default()).unwrap();
    let r = row(&report, "tick_total", Metric::DeadlineMiss);
    assert_eq!((r.baseline, r.current, r.delta), (100.0, 100.0, 0.0));
}

/// HdrHistogram's expected-interval loop: the values a span of `d` adds with interval `i`.
fn added(d: u64, i: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut missing = d.saturating_sub(i);
    while d > i && missing >= i {
        out.push(missing);
        missing -= i;
    }
    out
}

const PERIOD_NS: u64 = 1_000_000;

/// A tick stage of 20 000 log-normal spans (seeded) in which every 250th span is a stall of
/// `stall_ns` (+ up to 400 µs), with its coordinated-omission-corrected figures at a 1 ms interval
/// computed here from the values.
fn stalled_tick(seed: u64, stall_ns: u64) -> laptime::profile::StageProfile {
    use laptime::profile::{CorrectedCounts, CorrectedProfile, Histogram};
    let mut raw = common::lognormal_values(&Spec::new("tick_total", 420_000.0, 0.35), seed);
    for (i, v) in raw.iter_mut().enumerate().filter(|(i, _)| i % 250 == 0) {
        *v = stall_ns + (i as u64 % 5) * 100_000;
    }
    let mut all = raw.clone();
    for &v in &raw {
        all.extend(added(v, PERIOD_NS));
    }
    let mut h = Histogram::new_with_bounds(1, common::HIGHEST_NS, 3).unwrap();
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
    let mut stage = common::stage_from_values("tick_total", &[], &raw, 3, None);
    stage.corrected = Some(corrected);
    stage
}

/// Stalls three times as long, as often: the raw p95/p99 do not move (80 stalls in 20 000
/// spans), the corrected p99 does, and the gate fails on it alone, labelled as corrected.
#[test]
fn longer_stalls_fail_the_corrected_p99_only() {
    let profile = |name: &str, seed: u64, stall_ns: u64| {
        common::profile(name, 3, vec![stalled_tick(seed, stall_ns)])
    };
    let base = profile("base", 1, 8_000_000);
    // Same stalls, another sample: nothing regresses.
    let same = profile("same", 2, 8_000_000);
    let report = gate(&base, &same, &GateOptions::default()).unwrap();
    assert!(report.passed(), "{}", report.to_markdown());
    assert_eq!(report.rows().count(), 4, "p95, p99 and both corrected");

    let stalled = profile("stalled", 2, 24_000_000);
    let report = gate(&base, &stalled, &GateOptions::default()).unwrap();
    for metric in [Metric::P95, Metric::P99] {
        assert_eq!(
            row(&report, "tick_total", metric).verdict,
            Verdict::Pass,
            "{}",
            report.to_markdown()
        );
    }
    let r = row(&report, "tick_total", Metric::CorrectedP99);
    assert_eq!(r.verdict, Verdict::Regression, "{}", report.to_markdown());
    // The point values are the corrected histograms' p99, as the profiles write them.
    let (b, c) = (
        base.stages[0].corrected.as_ref().unwrap(),
        stalled.stages[0].corrected.as_ref().unwrap(),
    );
    assert_eq!((r.baseline, r.current), (b.p99_ns as f64, c.p99_ns as f64));
    assert_eq!(r.threshold, GateOptions::default().p99_pct);
    assert_eq!(report.exit_code(), 1);

    let md = report.to_markdown();
    assert!(
        md.lines()
            .any(|l| l.starts_with("| tick_total | p99 (CO-corrected) |")
                && l.ends_with("| **REGRESSION** |")),
        "{md}"
    );
    assert!(md.contains("tick_total p99 (CO-corrected) +"), "{md}");

    // Through the binary: exit 1.
    let d = dir("longer_stalls_fail_the_corrected_p99_only");
    let out = gate_cli(
        write(&d, "base.json", &base),
        write(&d, "stalled.json", &stalled),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("p99 (CO-corrected)"));
}

/// A stage corrected on one side only is judged on its raw figures, with a note saying so.
#[test]
fn a_stage_corrected_on_one_side_is_judged_raw_with_a_note() {
    let base = common::profile("base", 3, vec![stalled_tick(1, 8_000_000)]);
    let mut cur = common::profile("cur", 3, vec![stalled_tick(2, 8_000_000)]);
    cur.stages[0].corrected = None;
    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    assert_eq!(report.rows().count(), 2, "{}", report.to_markdown());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("corrected for coordinated omission in the baseline profile only")),
        "{:?}",
        report.notes
    );
}

/// Corrected with different expected intervals: the corrected figures describe different
/// schedules (`laptime merge` refuses them), so they are listed in a note and not judged — even
/// when the corrected p99 is far apart.
#[test]
fn corrected_figures_of_different_intervals_are_not_judged() {
    let base = common::profile("base", 3, vec![stalled_tick(1, 8_000_000)]);
    let mut cur = common::profile("cur", 3, vec![stalled_tick(2, 24_000_000)]);
    cur.stages[0]
        .corrected
        .as_mut()
        .unwrap()
        .expected_interval_ns = PERIOD_NS / 2;
    let report = gate(&base, &cur, &GateOptions::default()).unwrap();
    assert_eq!(report.rows().count(), 2, "{}", report.to_markdown());
    assert!(report.passed(), "{}", report.to_markdown());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("different expected intervals") && n.contains("not judged")),
        "{:?}",
        report.notes
    );
}

/// A stage of 1 000 spans whose `saturated` longest ran past the histogram's highest trackable
/// value (recorded as it, as the collector does), the rest between 100 and 200 µs.
fn saturating_stage(saturated: u64, seed: u64) -> laptime::profile::StageProfile {
    use laptime::profile::{Histogram, StageCounts, StageProfile};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let inside: Vec<u64> = (0..1_000 - saturated)
        .map(|_| rng.random_range(100_000..200_000))
        .collect();
    let mut h = Histogram::new_with_bounds(1, common::HIGHEST_NS, 3).unwrap();
    for &v in &inside {
        h.record(v).unwrap();
    }
    h.record_n(common::HIGHEST_NS, saturated).unwrap();
    // The true values, 2 h each: exact in min, max and sum, as a collector keeps them.
    let long = 2 * common::HIGHEST_NS;
    let counts = StageCounts {
        min_ns: *inside.iter().min().unwrap(),
        max_ns: if saturated > 0 {
            long
        } else {
            *inside.iter().max().unwrap()
        },
        sum_ns: inside.iter().sum::<u64>() + saturated * long,
        saturated,
        ..StageCounts::default()
    };
    StageProfile::from_histogram("tick_total", Default::default(), &h, counts).unwrap()
}

/// A p99 past the range on both sides read 0 % change (both the range's top) and passed; now
/// the row fails and says why, and a saturated baseline alone passes with the change as a bound.
/// The reference: p95 is rank 950 and p99 rank 990 of 1 000, so 15 saturated spans reach p99
/// (990 > 985) and not p95.
#[test]
fn a_saturated_percentile_is_never_called_fine() {
    let o = GateOptions::default();
    let (fine, saturated) = (saturating_stage(0, 1), saturating_stage(15, 2));
    assert!(saturated.is_saturated(0.99) && !saturated.is_saturated(0.95));
    assert!(!fine.is_saturated(0.99));
    let both = gate(
        &common::profile("b", 3, vec![saturating_stage(15, 3)]),
        &common::profile("c", 3, vec![saturated.clone()]),
        &o,
    )
    .unwrap();
    let p99 = row(&both, "tick_total", Metric::P99);
    assert_eq!(
        (p99.saturated.baseline, p99.saturated.current),
        (true, true)
    );
    assert_eq!(p99.verdict, Verdict::Regression, "{}", both.to_markdown());
    assert_eq!(p99.interval, None, "no interval resampled from floors");
    let p95 = row(&both, "tick_total", Metric::P95);
    assert_eq!(
        (p95.saturated.baseline, p95.saturated.current),
        (false, false)
    );
    assert!(!both.passed());
    let md = both.to_markdown();
    assert!(
        md.contains("| unknown |") && md.contains("REGRESSION** (saturated)"),
        "{md}"
    );
    assert!(md.contains("p99 is saturated in both profiles"), "{md}");
    assert!(md.contains("CollectorBuilder::with_histogram"), "{md}");

    let only_baseline = gate(
        &common::profile("b", 3, vec![saturated]),
        &common::profile("c", 3, vec![fine]),
        &o,
    )
    .unwrap();
    let p99 = row(&only_baseline, "tick_total", Metric::P99);
    assert_eq!(
        (p99.saturated.baseline, p99.saturated.current),
        (true, false)
    );
    assert_eq!(p99.verdict, Verdict::Pass);
    assert!(p99.delta < 0.0);
    let md = only_baseline.to_markdown();
    assert!(md.contains("≥ ") && md.contains("≤ -"), "{md}");
    assert!(only_baseline.passed(), "{md}");
}

/// The CO-corrected rows follow the raw ones: a corrected p99 whose rank falls among values past
/// the range fails its row and is not resampled, while its p95 is judged as usual.
#[test]
fn a_saturated_corrected_percentile_is_never_called_fine() {
    let baseline = stalled_tick(1, 20 * PERIOD_NS);
    let mut current = stalled_tick(1, 20 * PERIOD_NS);
    let corrected = current.corrected.as_mut().unwrap();
    // 2 % of the corrected values past the range: rank 99 % is among them, rank 95 % is not.
    corrected.saturated = corrected.count / 50;
    assert!(corrected.is_saturated(0.99) && !corrected.is_saturated(0.95));
    let report = gate(
        &common::profile("b", 3, vec![baseline]),
        &common::profile("c", 3, vec![current]),
        &GateOptions::default(),
    )
    .unwrap();
    let p99 = row(&report, "tick_total", Metric::CorrectedP99);
    assert_eq!(
        (p99.saturated.baseline, p99.saturated.current),
        (false, true)
    );
    assert_eq!(p99.verdict, Verdict::Regression, "{}", report.to_markdown());
    assert_eq!(p99.interval, None, "no interval resampled from floors");
    let p95 = row(&report, "tick_total", Metric::CorrectedP95);
    assert!(!p95.saturated.current);
    assert_eq!(p95.verdict, Verdict::Pass);
    assert!(!report.passed());
}
