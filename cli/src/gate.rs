//! The performance gate: compares a current perf profile with a baseline, stage by stage, and
//! says whether p95, p99 or the deadline-miss percentage regressed.
//!
//! Thresholds (the CI gate's defaults): p95 +3 %, p99 +5 % (relative to the baseline), deadline
//! misses +1 percentage point. In the default noise-aware mode a change is a regression only when
//! the whole confidence interval of the change lies above the threshold:
//!
//! * p95 and p99: a bootstrap over both stages' histograms ([`crate::interval`]); a stage without
//!   a histogram on either side (a hand-written profile) is judged on its point values;
//! * deadline misses: Newcombe's hybrid score interval for the difference of two proportions
//!   ([`crate::interval::newcombe_difference`]), where a stage's proportion is
//!   `misses / max(count, misses)`, as in the profile's `deadline_miss_pct`.
//!
//! A stage that both profiles corrected for coordinated omission (their `corrected` figures,
//! [`laptime::profile::CorrectedProfile`]) is also judged on its corrected p95 and p99, with the
//! same thresholds and the same bootstrap over the corrected histograms; the report labels those
//! rows `p95 (CO-corrected)` and `p99 (CO-corrected)`, and a regression there fails the gate like
//! any other. A stage corrected on one side only is judged on its raw figures, with a note.
//!
//! Each side may be several runs ([`gate_runs`]; `laptime gate --baseline a.json b.json`): the
//! side's figures are its runs merged, and the intervals come from a two-level bootstrap (runs,
//! then values or misses within them), so they cover the spread between runs, which one run per
//! side cannot show ([`RunSamplers`]).
//!
//! `strict` judges the point values alone (the interval is still shown). Stages present in one
//! profile only are listed as added or removed (the summary line names the removed ones); stages
//! with fewer than `min_count` spans on either side are listed as not judged. Neither fails the
//! gate, but when no stage at all is judged (the current profile is empty, every stage was
//! renamed, or none has enough spans) the gate cannot pass: [`gate`] returns
//! [`GateError::NothingJudged`] and the command exits 2.
//!
//! ```no_run
//! use laptime_cli::gate::{gate, GateOptions};
//! use laptime::profile::DEFAULT_MAX_BYTES;
//! use laptime_cli::load_profile;
//!
//! let baseline = load_profile("baseline", "base.json".as_ref(), DEFAULT_MAX_BYTES)?;
//! let current = load_profile("current", "cur.json".as_ref(), DEFAULT_MAX_BYTES)?;
//! let report = gate(&baseline, &current, &GateOptions::default())?;
//! println!("{}", report.to_markdown());
//! std::process::exit(report.exit_code().into());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Write as _};

use laptime::profile::{
    CorrectedProfile, DistributionProfile, Histogram, Profile, ProfileConfig, ProfileError,
    StageProfile,
};
use laptime::report::format_ns;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::interval::{
    QuantileSampler, RunSamplers, bootstrap_miss_difference, bootstrap_relative_pct,
    newcombe_difference, relative_pct,
};

/// How the gate judges.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GateOptions {
    /// Largest allowed p95 increase, in percent of the baseline (default 3).
    pub p95_pct: f64,
    /// Largest allowed p99 increase, in percent of the baseline (default 5).
    pub p99_pct: f64,
    /// Largest allowed deadline-miss increase, in percentage points (default 1).
    pub deadline_miss_points: f64,
    /// Judge point values only, not intervals (default false).
    pub strict: bool,
    /// Seed of the bootstrap: the same inputs and seed give the same report (default 1).
    pub seed: u64,
    /// Confidence of the intervals, in (0, 1) (default 0.95).
    pub confidence: f64,
    /// Bootstrap replicates per metric (default 2000).
    pub replicates: usize,
    /// Stages with fewer spans than this on either side are not judged (default 30).
    pub min_count: u64,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            p95_pct: 3.0,
            p99_pct: 5.0,
            deadline_miss_points: 1.0,
            strict: false,
            seed: 1,
            confidence: 0.95,
            replicates: 2000,
            min_count: 30,
        }
    }
}

impl GateOptions {
    /// Checks every option; the error names the one to change.
    pub fn validate(&self) -> Result<(), GateError> {
        let bad = |option: &'static str, value: String, expected: &'static str| {
            Err(GateError::InvalidOption {
                option,
                value,
                expected,
            })
        };
        for (option, v) in [
            ("--p95", self.p95_pct),
            ("--p99", self.p99_pct),
            ("--deadline-miss", self.deadline_miss_points),
        ] {
            // A negative threshold calls a regression when nothing changed.
            if !(v.is_finite() && v >= 0.0) {
                return bad(
                    option,
                    fmt_given(v),
                    "a finite number ≥ 0 (the largest increase allowed), such as 3",
                );
            }
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return bad(
                "--confidence",
                fmt_given(self.confidence),
                "a number between 0 and 1, such as 0.95",
            );
        }
        if self.min_count == 0 {
            return bad(
                "--min-count",
                "0".to_owned(),
                "at least 1: a stage with no spans has no percentiles to compare",
            );
        }
        if !(100..=1_000_000).contains(&self.replicates) {
            return bad(
                "--replicates",
                self.replicates.to_string(),
                "between 100 and 1000000",
            );
        }
        Ok(())
    }
}

/// Why the gate could not judge (the command exits with 2).
#[derive(Debug)]
#[non_exhaustive]
pub enum GateError {
    /// An option is out of range.
    InvalidOption {
        /// The command-line option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// No stage is in both profiles with enough spans, so nothing was compared: the current
    /// profile is empty, its stages were renamed, or none has `min_count` spans. The report
    /// (every stage added, removed or with too few samples) says which.
    NothingJudged {
        /// What the gate found, to show with the error.
        report: Box<GateReport>,
    },
    /// A side was given no profile at all.
    NoRuns {
        /// `baseline` or `current`.
        side: &'static str,
    },
    /// A side's runs could not be merged into one profile (different histogram settings or
    /// expected intervals: the runs do not measure the same thing).
    Merge {
        /// `baseline` or `current`.
        side: &'static str,
        /// Why the merge refused.
        source: ProfileError,
    },
    /// A stage's histogram could not be decoded.
    Histogram {
        /// `baseline` or `current`.
        side: &'static str,
        /// The stage's key.
        stage: String,
        /// The decoding error.
        source: ProfileError,
    },
}

impl fmt::Display for GateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateError::InvalidOption {
                option,
                value,
                expected,
            } => write!(f, "{option} {value}: must be {expected}"),
            GateError::NothingJudged { report } => f.write_str(&report.nothing_judged()),
            GateError::NoRuns { side } => write!(f, "no {side} profile given: give at least one"),
            GateError::Merge { side, source } => write!(
                f,
                "the {side} runs cannot be merged into one side ({source}): every run of a side \
                 must measure the same stages the same way"
            ),
            GateError::Histogram {
                side,
                stage,
                source,
            } => write!(f, "{side} profile, stage {stage}: {source}"),
        }
    }
}

impl std::error::Error for GateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GateError::Histogram { source, .. } | GateError::Merge { source, .. } => Some(source),
            GateError::InvalidOption { .. }
            | GateError::NothingJudged { .. }
            | GateError::NoRuns { .. } => None,
        }
    }
}

/// A gated metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// The 95th percentile (values in ns, change in percent).
    P95,
    /// The 99th percentile (values in ns, change in percent).
    P99,
    /// The 95th percentile of the coordinated-omission-corrected figures.
    CorrectedP95,
    /// The 99th percentile of the coordinated-omission-corrected figures.
    CorrectedP99,
    /// Deadline misses (values in percent, change in percentage points).
    DeadlineMiss,
}

impl Metric {
    /// The name shown in the report.
    pub fn name(self) -> &'static str {
        match self {
            Metric::P95 => "p95",
            Metric::P99 => "p99",
            Metric::CorrectedP95 => "p95 (CO-corrected)",
            Metric::CorrectedP99 => "p99 (CO-corrected)",
            Metric::DeadlineMiss => "deadline miss",
        }
    }
}

/// How a row's interval was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntervalMethod {
    /// Order-statistic bootstrap over both histograms.
    Bootstrap,
    /// Newcombe's hybrid score interval for two proportions.
    Newcombe,
    /// Two-level bootstrap: runs resampled, then values (or misses) within them
    /// ([`gate_runs`] with several runs on a side).
    RunBootstrap,
}

/// A row's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the threshold.
    Pass,
    /// The point change is above the threshold but the interval reaches below it (noise-aware
    /// mode only): not a regression.
    WithinNoise,
    /// A regression: fails the gate.
    Regression,
}

/// One metric of one stage.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MetricRow {
    /// The metric.
    pub metric: Metric,
    /// The baseline's value: ns for percentiles, percent for deadline misses.
    pub baseline: f64,
    /// The current value, in the same unit.
    pub current: f64,
    /// The change: percent of the baseline for percentiles, percentage points for deadline misses.
    pub delta: f64,
    /// The largest change allowed, in the unit of `delta`.
    pub threshold: f64,
    /// The confidence interval of `delta`, when it could be computed.
    pub interval: Option<(f64, f64)>,
    /// How `interval` was computed.
    pub method: Option<IntervalMethod>,
    /// The verdict.
    pub verdict: Verdict,
    /// Which side's percentile is saturated (all false for deadline misses).
    pub saturated: Saturated,
}

/// Which side of a percentile row is saturated: its rank falls among the values past the
/// histogram's highest trackable value, so the figure is a floor of the true percentile and the
/// change computed from it is not the true change. A saturated current side fails the row (the
/// true value may be any larger); a saturated baseline alone passes it (the current value is
/// below the range's top, the true baseline above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Saturated {
    /// The baseline's figure is a floor.
    pub baseline: bool,
    /// The current figure is a floor.
    pub current: bool,
}

/// What the gate made of one stage.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StageResult {
    /// Judged: one row per metric.
    Judged(Vec<MetricRow>),
    /// Fewer spans than `min_count` on one side: not judged.
    TooFewSamples {
        /// Spans in the baseline.
        baseline_count: u64,
        /// Spans in the current profile.
        current_count: u64,
    },
    /// Only in the current profile.
    Added,
    /// Only in the baseline.
    Removed,
}

/// One stage of the report.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's key (`name` or `name{k="v"}`).
    pub stage: String,
    /// What the gate made of it.
    pub result: StageResult,
}

/// The gate's findings.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GateReport {
    /// Every stage of both profiles: the baseline's order, then stages only in the current one.
    pub stages: Vec<StageReport>,
    /// Things worth knowing that do not fail the gate (different histogram settings, stages judged
    /// without a histogram).
    pub notes: Vec<String>,
    /// The options the gate ran with.
    pub options: GateOptions,
    /// How the report names the baseline (its profile name; the CLI puts the file's path).
    pub baseline_source: String,
    /// How the report names the current profile.
    pub current_source: String,
    /// How many runs (profiles) the baseline side held.
    pub baseline_runs: usize,
    /// How many runs the current side held.
    pub current_runs: usize,
}

impl GateReport {
    /// Every judged row with its stage.
    pub fn rows(&self) -> impl Iterator<Item = (&str, &MetricRow)> {
        self.stages.iter().flat_map(|s| match &s.result {
            StageResult::Judged(rows) => rows.iter().map(|r| (s.stage.as_str(), r)).collect(),
            _ => Vec::new(),
        })
    }

    /// The rows that fail the gate.
    pub fn regressions(&self) -> impl Iterator<Item = (&str, &MetricRow)> {
        self.rows()
            .filter(|(_, r)| r.verdict == Verdict::Regression)
    }

    /// Whether at least one stage was judged and no row regressed.
    pub fn passed(&self) -> bool {
        self.judged() > 0 && self.regressions().next().is_none()
    }

    /// The command's exit code: 0 passed, 1 regression, 2 nothing judged.
    pub fn exit_code(&self) -> u8 {
        if self.judged() == 0 {
            2
        } else if self.passed() {
            0
        } else {
            1
        }
    }

    /// Stages judged on both sides.
    pub fn judged(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| matches!(s.result, StageResult::Judged(_)))
            .count()
    }

    /// The stages with the given result kind.
    fn stages_where(&self, f: impl Fn(&StageResult) -> bool) -> Vec<&str> {
        self.stages
            .iter()
            .filter(|s| f(&s.result))
            .map(|s| s.stage.as_str())
            .collect()
    }

    /// Stages only in the current profile.
    pub fn added(&self) -> Vec<&str> {
        self.stages_where(|r| matches!(r, StageResult::Added))
    }

    /// Stages only in the baseline.
    pub fn removed(&self) -> Vec<&str> {
        self.stages_where(|r| matches!(r, StageResult::Removed))
    }

    /// The report as Markdown: a header, one table row per stage and metric, notes, and a
    /// summary line starting with `**PASS**`, `**FAIL**` or (nothing judged) `**ERROR**`.
    pub fn to_markdown(&self) -> String {
        let conf = fmt_num(self.options.confidence * 100.0);
        let mut md = String::new();
        self.markdown_header(&mut md, &conf);
        let _ = writeln!(
            md,
            "| stage | metric | baseline | current | delta | threshold | {conf} % interval | verdict |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|");
        for s in &self.stages {
            let stage = escape_md(&s.stage);
            match &s.result {
                StageResult::Judged(rows) => {
                    for r in rows {
                        markdown_row(&mut md, &stage, r);
                    }
                }
                StageResult::TooFewSamples {
                    baseline_count,
                    current_count,
                } => {
                    let _ = writeln!(
                        md,
                        "| {stage} | – | {baseline_count} spans | {current_count} spans | | | | \
                         too few samples, not judged |"
                    );
                }
                StageResult::Added => {
                    let _ = writeln!(md, "| {stage} | – | | | | | | added (only in current) |");
                }
                StageResult::Removed => {
                    let _ = writeln!(md, "| {stage} | – | | | | | | removed (only in baseline) |");
                }
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "\nNotes:\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {}", escape_md(n));
            }
        }
        md.push('\n');
        md.push_str(&self.summary());
        md.push('\n');
        md
    }

    /// The Markdown report's title and the list of what was compared, how and against what
    /// thresholds (`conf`: the confidence in percent, as written).
    fn markdown_header(&self, md: &mut String, conf: &str) {
        let o = &self.options;
        let _ = writeln!(md, "# laptime performance gate\n");
        let runs = |n: usize| match n {
            1 => String::new(),
            n => format!(" ({n} runs, merged)"),
        };
        let (b, c) = (&self.baseline_source, &self.current_source);
        let _ = writeln!(
            md,
            "- baseline: {}{}",
            escape_md(b),
            runs(self.baseline_runs)
        );
        let _ = writeln!(md, "- current: {}{}", escape_md(c), runs(self.current_runs));
        let mode = if o.strict {
            "strict (point values)".to_string()
        } else if self.baseline_runs > 1 || self.current_runs > 1 {
            format!(
                "noise-aware: a regression needs the whole {conf} % interval above the threshold \
                 (two-level bootstrap: runs resampled, then values within them, so the intervals \
                 cover the spread between runs; {} replicates, seed {})",
                o.replicates, o.seed
            )
        } else {
            format!(
                "noise-aware: a regression needs the whole {conf} % interval above the threshold \
                 (percentiles: order-statistic bootstrap, {} replicates, seed {}; deadline misses: \
                 Newcombe score interval). One run per side: the intervals cover the noise within \
                 a run, not drift between runs; give several runs per side to cover it",
                o.replicates, o.seed
            )
        };
        let _ = writeln!(md, "- mode: {mode}");
        let _ = writeln!(
            md,
            "- thresholds: p95 {} %, p99 {} %, deadline misses {} points; stages with fewer than {} \
             spans are not judged\n",
            fmt_signed(o.p95_pct),
            fmt_signed(o.p99_pct),
            fmt_signed(o.deadline_miss_points),
            o.min_count
        );
    }

    /// Why nothing was judged and what to check, for a report that judged no stage.
    fn nothing_judged(&self) -> String {
        let (added, removed) = (self.added(), self.removed());
        let too_few = self.stages_where(|r| matches!(r, StageResult::TooFewSamples { .. }));
        let in_baseline = removed.len() + too_few.len();
        let in_current = added.len() + too_few.len();
        let record_hint = "did the workload run and record anything? Check that a collector is \
                           installed before it runs, that the profile is taken after it, and \
                           that laptime's `enable` feature is on";
        let why = if in_baseline == 0 && in_current == 0 {
            format!("neither profile has a stage: {record_hint}")
        } else if in_current == 0 {
            format!(
                "the current profile has no stages (the baseline has {in_baseline}): {record_hint}"
            )
        } else if in_baseline == 0 {
            format!(
                "the baseline profile has no stages (the current one has {in_current}): take the \
                 baseline again from a run that recorded something"
            )
        } else if too_few.is_empty() {
            format!(
                "no stage is in both profiles (only in the baseline: {}; only in the current \
                 profile: {}): were the stages renamed or relabelled? Stages are matched by name \
                 and labels; gate against a baseline taken with the current names",
                some(&removed),
                some(&added)
            )
        } else {
            format!(
                "the stage{} in both profiles ({}) had fewer than {} spans on one side: run the \
                 workload longer, or lower --min-count",
                plural(too_few.len()),
                some(&too_few),
                self.options.min_count
            )
        };
        format!("no stage was judged, so the gate cannot pass: {why}")
    }

    /// The summary line: `**PASS** …`, `**FAIL** …`, or `**ERROR** …` when no stage was judged.
    pub fn summary(&self) -> String {
        let judged = self.judged();
        let checks = self.rows().count();
        let noise = self
            .rows()
            .filter(|(_, r)| r.verdict == Verdict::WithinNoise)
            .count();
        let too_few = self.stages_where(|r| matches!(r, StageResult::TooFewSamples { .. }));
        let removed = self.removed();
        let tail = format!(
            "{} added, {} removed{}, {} with too few samples",
            self.added().len(),
            removed.len(),
            if removed.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape_md(&some(&removed)))
            },
            too_few.len()
        );
        let regressions: Vec<String> = self
            .regressions()
            .map(|(stage, r)| {
                format!(
                    "{} {} {}",
                    escape_md(stage),
                    r.metric.name(),
                    fmt_delta(r.metric, r.delta)
                )
            })
            .collect();
        if judged == 0 {
            format!(
                "**ERROR**: {}; stages: {tail}.",
                escape_md(&self.nothing_judged())
            )
        } else if regressions.is_empty() {
            format!(
                "**PASS**: {checks} check{} on {judged} stage{} within thresholds ({noise} above \
                 the threshold but within noise); stages: {tail}.",
                plural(checks),
                plural(judged)
            )
        } else {
            format!(
                "**FAIL**: {} regression{}: {}; stages: {tail}.",
                regressions.len(),
                plural(regressions.len()),
                regressions.join(", ")
            )
        }
    }
}

/// Compares `current` with `baseline` under `options`: one run per side, so the intervals cover
/// the sampling noise within a run, not drift between runs ([`gate_runs`] covers both).
pub fn gate(
    baseline: &Profile,
    current: &Profile,
    options: &GateOptions,
) -> Result<GateReport, GateError> {
    gate_runs(
        std::slice::from_ref(baseline),
        std::slice::from_ref(current),
        options,
    )
}

/// Compares the runs of `current` with the runs of `baseline` (one profile per process, round
/// or machine) under `options`.
///
/// Each side's figures are those of its runs merged ([`Profile::merge`]). With several runs on
/// a side, its intervals come from a two-level bootstrap ([`RunSamplers`]): runs resampled,
/// then values within them, so a spread between runs of one build widens the interval instead
/// of failing the gate. Two runs per side see little of that spread; five see most of it.
pub fn gate_runs(
    baselines: &[Profile],
    currents: &[Profile],
    options: &GateOptions,
) -> Result<GateReport, GateError> {
    options.validate()?;
    let baseline = merged_side("baseline", baselines)?;
    let current = merged_side("current", currents)?;
    let mut notes = settings_notes(&baseline.meta.config, &current.meta.config);
    if (baselines.len() == 1) != (currents.len() == 1) {
        let (one, many) = if baselines.len() == 1 {
            ("baseline", "current")
        } else {
            ("current", "baseline")
        };
        notes.push(format!(
            "the {one} side is one run: the intervals hold the {many} side's spread between \
             runs but not the {one} side's; give several {one} runs"
        ));
    }
    let runs = [stage_index(baselines), stage_index(currents)];
    let highest = [
        baseline.meta.config.highest_ns,
        current.meta.config.highest_ns,
    ];

    // Stages matched through one index: a search of the other profile per stage made 20 000
    // stages quadratic.
    let mut current_by_key: HashMap<String, &StageProfile> =
        current.stages.iter().map(|c| (c.key(), c)).collect();
    let mut stages = Vec::new();
    for b in &baseline.stages {
        let key = b.key();
        let result = match current_by_key.remove(&key) {
            None => StageResult::Removed,
            Some(c) if b.count < options.min_count || c.count < options.min_count => {
                StageResult::TooFewSamples {
                    baseline_count: b.count,
                    current_count: c.count,
                }
            }
            Some(c) => {
                let sides = [
                    SideStage::new(b, &runs[0], &key),
                    SideStage::new(c, &runs[1], &key),
                ];
                StageResult::Judged(judge_stage(&key, sides, highest, options, &mut notes)?)
            }
        };
        stages.push(StageReport { stage: key, result });
    }
    // What is left of the index is only in the current profile: added, in the current order.
    for c in &current.stages {
        if let Some((key, _)) = current_by_key.remove_entry(&c.key()) {
            stages.push(StageReport {
                stage: key,
                result: StageResult::Added,
            });
        }
    }
    let report = GateReport {
        stages,
        notes,
        options: options.clone(),
        baseline_source: baseline.meta.name.clone(),
        current_source: current.meta.name.clone(),
        baseline_runs: baselines.len(),
        current_runs: currents.len(),
    };
    if report.judged() == 0 {
        return Err(GateError::NothingJudged {
            report: Box::new(report),
        });
    }
    Ok(report)
}

/// A side's runs as one profile: the run itself when there is one, else their merge.
fn merged_side<'a>(side: &'static str, runs: &'a [Profile]) -> Result<Cow<'a, Profile>, GateError> {
    match runs {
        [] => Err(GateError::NoRuns { side }),
        [one] => Ok(Cow::Borrowed(one)),
        many => {
            let name = many[0].meta.name.clone();
            Profile::merge(&name, many)
                .map(Cow::Owned)
                .map_err(|source| GateError::Merge { side, source })
        }
    }
}

/// Notes on histogram settings that differ between the sides (they do not fail the gate).
fn settings_notes(bc: &ProfileConfig, cc: &ProfileConfig) -> Vec<String> {
    let mut notes = Vec::new();
    if bc.significant_digits != cc.significant_digits {
        notes.push(format!(
            "the histograms have different precision (baseline {} significant digits, current {}): \
             values are compared as they are, each within its own resolution",
            bc.significant_digits, cc.significant_digits
        ));
    }
    if bc.highest_ns != cc.highest_ns {
        notes.push(format!(
            "the histograms have different ranges (baseline up to {}, current up to {}): compare \
             the saturated counts",
            format_ns(bc.highest_ns),
            format_ns(cc.highest_ns)
        ));
    }
    if bc.sampling_rate != cc.sampling_rate {
        notes.push(format!(
            "the sampling rates differ (baseline {}, current {})",
            bc.sampling_rate, cc.sampling_rate
        ));
    }
    notes
}

/// Each run's stages by key; empty for a side of one run (its merged profile is the run).
fn stage_index(runs: &[Profile]) -> Vec<HashMap<String, &StageProfile>> {
    if runs.len() < 2 {
        return Vec::new();
    }
    runs.iter()
        .map(|run| run.stages.iter().map(|s| (s.key(), s)).collect())
        .collect()
}

/// One side of a judged stage: its merged figures and the stage in each run that recorded it.
struct SideStage<'a> {
    merged: &'a StageProfile,
    runs: Vec<&'a StageProfile>,
}

impl<'a> SideStage<'a> {
    fn new(
        merged: &'a StageProfile,
        index: &[HashMap<String, &'a StageProfile>],
        key: &str,
    ) -> Self {
        // A run where the stage recorded nothing has no values to resample: a replicate of
        // such runs alone would read 0 ns (a change of −100 % or +∞).
        let runs = if index.is_empty() {
            vec![merged]
        } else {
            index
                .iter()
                .filter_map(|run| run.get(key).copied())
                .filter(|s| s.count > 0)
                .collect()
        };
        SideStage { merged, runs }
    }
}

/// One stage's two sides under judgement, and the notes its checks leave.
struct StagePair<'a> {
    key: &'a str,
    /// Each side's figures, its runs merged.
    b: &'a StageProfile,
    c: &'a StageProfile,
    /// The stage in each run of a side (the merged figures alone for a side of one run).
    b_runs: &'a [&'a StageProfile],
    c_runs: &'a [&'a StageProfile],
    /// Each side's highest trackable value, in ns.
    b_highest: u64,
    c_highest: u64,
    o: &'a GateOptions,
    notes: &'a mut Vec<String>,
}

/// A check of a judged stage: the rows it judged (none when it does not apply).
type StageCheck = fn(&mut StagePair<'_>) -> Result<Vec<MetricRow>, GateError>;

/// The checks of a judged stage, in the order of the report's rows.
const STAGE_CHECKS: [StageCheck; 3] = [raw_percentiles, corrected_percentiles, deadline_misses];

/// One stage's rows: `[baseline, current]` with each side's highest trackable value.
fn judge_stage(
    key: &str,
    [b, c]: [SideStage<'_>; 2],
    [b_highest, c_highest]: [u64; 2],
    o: &GateOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<MetricRow>, GateError> {
    let mut pair = StagePair {
        key,
        b: b.merged,
        c: c.merged,
        b_runs: &b.runs,
        c_runs: &c.runs,
        b_highest,
        c_highest,
        o,
        notes,
    };
    let mut rows = Vec::new();
    for check in STAGE_CHECKS {
        rows.extend(check(&mut pair)?);
    }
    Ok(rows)
}

/// A side's decoded histogram, or the error naming the side and the stage.
fn decoded<H>(
    side: &'static str,
    key: &str,
    histogram: Result<Option<H>, ProfileError>,
) -> Result<Option<H>, GateError> {
    histogram.map_err(|source| GateError::Histogram {
        side,
        stage: key.to_string(),
        source,
    })
}

/// The p95 and p99 rows of one kind of figures (`metrics`, raw or corrected), from the two
/// sides' distributions `[baseline, current]` and their samplers when both have a histogram.
fn p95_p99_rows(
    p: &StagePair<'_>,
    [m95, m99]: [Metric; 2],
    [b, c]: [&DistributionProfile; 2],
    samplers: Option<&(RunSamplers, RunSamplers)>,
) -> Vec<MetricRow> {
    let (p95, p99) = ((b.p95_ns, c.p95_ns), (b.p99_ns, c.p99_ns));
    [(m95, 0.95, p95, p.o.p95_pct), (m99, 0.99, p99, p.o.p99_pct)]
        .into_iter()
        .map(|(metric, q, values, threshold)| {
            percentile_row(p.key, metric, q, values, threshold, samplers, p.o)
        })
        .collect()
}

/// p95 and p99, bootstrapped over both sides' histograms, or on the point values (with a note)
/// when a side has none.
fn raw_percentiles(p: &mut StagePair<'_>) -> Result<Vec<MetricRow>, GateError> {
    let (key, b, c) = (p.key, p.b, p.c);
    // Every run's values are clamped to the side's merged range, so the pooled quantile is the
    // merged profile's figure.
    let raw = |run: &StageProfile, merged: &StageProfile| {
        let h = run.histogram()?;
        Ok(h.map(|h| QuantileSampler::new(&h, merged.min_ns, merged.max_ns)))
    };
    let samplers = match (
        run_samplers("baseline", key, (b, p.b_runs), raw)?,
        run_samplers("current", key, (c, p.c_runs), raw)?,
    ) {
        (Some(sb), Some(sc)) => Some((sb, sc)),
        _ => {
            p.notes.push(format!(
                "{key}: no histogram in {}; its percentiles are judged on the point values",
                match (
                    p.b_runs.iter().any(|r| r.histogram.is_none()),
                    p.c_runs.iter().any(|r| r.histogram.is_none()),
                ) {
                    (true, true) => "either profile",
                    (true, false) => "the baseline",
                    _ => "the current profile",
                }
            ));
            None
        }
    };
    let figures = [&b.distribution, &c.distribution];
    let mut rows = p95_p99_rows(p, [Metric::P95, Metric::P99], figures, samplers.as_ref());
    mark_saturated_rows(p, &mut rows, |q| Saturated {
        baseline: b.is_saturated(q),
        current: c.is_saturated(q),
    });
    Ok(rows)
}

/// [`mark_saturated`] on a p95 row and a p99 row, with each side's saturation for a quantile.
fn mark_saturated_rows(
    p: &mut StagePair<'_>,
    rows: &mut [MetricRow],
    saturated: impl Fn(f64) -> Saturated,
) {
    for (row, q) in rows.iter_mut().zip([0.95, 0.99]) {
        mark_saturated(p, row, saturated(q));
    }
}

/// Marks a percentile row whose side is saturated: no interval (it would resample floors), a
/// current side that fails the row, and a note that says what to change.
fn mark_saturated(p: &mut StagePair<'_>, row: &mut MetricRow, saturated: Saturated) {
    row.saturated = saturated;
    if !(saturated.baseline || saturated.current) {
        return;
    }
    row.interval = None;
    row.method = None;
    if saturated.current {
        row.verdict = Verdict::Regression;
    }
    let side = match (saturated.baseline, saturated.current) {
        (true, true) => "both profiles",
        (false, true) => "the current profile",
        _ => "the baseline",
    };
    let highest = if saturated.current {
        p.c_highest
    } else {
        p.b_highest
    };
    p.notes.push(format!(
        "{}: {} is saturated in {side} (its rank falls among values above the histogram's \
         highest trackable value, {}): the figure is a floor, not the percentile{}; raise the \
         collector's highest trackable value (CollectorBuilder::with_histogram) and take the \
         profile again",
        p.key,
        row.metric.name(),
        format_ns(highest),
        if saturated.current {
            ", so the row fails"
        } else {
            ""
        }
    ));
}

/// The CO-corrected p95 and p99 of a stage both sides corrected on the same schedule; a note
/// when only one side corrected it or their schedules differ.
fn corrected_percentiles(p: &mut StagePair<'_>) -> Result<Vec<MetricRow>, GateError> {
    let key = p.key;
    let (bc, cc) = match (&p.b.corrected, &p.c.corrected) {
        (Some(bc), Some(cc)) if bc.expected_interval_ns != cc.expected_interval_ns => {
            // `laptime merge` refuses these as incomparable; a gate must not fail on them either.
            p.notes.push(format!(
                "{key}: corrected with different expected intervals (baseline {}, current {}): \
                 the CO-corrected figures describe different schedules and are not judged",
                format_ns(bc.expected_interval_ns),
                format_ns(cc.expected_interval_ns)
            ));
            return Ok(Vec::new());
        }
        (Some(bc), Some(cc)) => (bc, cc),
        (None, None) => return Ok(Vec::new()),
        (bc, _) => {
            p.notes.push(format!(
                "{key}: corrected for coordinated omission in the {} profile only; judged on its \
                 raw figures",
                if bc.is_some() { "baseline" } else { "current" }
            ));
            return Ok(Vec::new());
        }
    };
    let corrected = |run: &StageProfile, merged: &StageProfile| {
        let (Some(c), Some(range)) = (&run.corrected, &merged.corrected) else {
            return Ok(None);
        };
        Ok(c.histogram()?.map(|h| corrected_sampler(&h, c, range)))
    };
    let samplers = match (
        run_samplers("baseline", key, (p.b, p.b_runs), corrected)?,
        run_samplers("current", key, (p.c, p.c_runs), corrected)?,
    ) {
        (Some(sb), Some(sc)) => Some((sb, sc)),
        _ => {
            p.notes.push(format!(
                "{key}: no corrected histogram on both sides; its CO-corrected percentiles are \
                 judged on the point values"
            ));
            None
        }
    };
    let metrics = [Metric::CorrectedP95, Metric::CorrectedP99];
    let figures = [&bc.distribution, &cc.distribution];
    let mut rows = p95_p99_rows(p, metrics, figures, samplers.as_ref());
    mark_saturated_rows(p, &mut rows, |q| Saturated {
        baseline: bc.is_saturated(q),
        current: cc.is_saturated(q),
    });
    Ok(rows)
}

/// A run's sampler, given the run's stage and the side's merged stage.
type RunSampler = fn(&StageProfile, &StageProfile) -> Result<Option<QuantileSampler>, ProfileError>;

/// The samplers of a side's runs (`(merged, runs)`), or `None` when a run has no histogram (then
/// the side is judged on its point values).
fn run_samplers(
    side: &'static str,
    key: &str,
    (merged, runs): (&StageProfile, &[&StageProfile]),
    sampler: RunSampler,
) -> Result<Option<RunSamplers>, GateError> {
    let mut samplers = Vec::with_capacity(runs.len());
    for run in runs {
        match decoded(side, key, sampler(run, merged))? {
            Some(s) => samplers.push(s),
            None => return Ok(None),
        }
    }
    Ok(Some(RunSamplers::new(samplers)))
}

/// A sampler of a corrected histogram, its values clamped to `range`'s: only the spans really
/// measured are independent draws (see `QuantileSampler::with_independent`).
fn corrected_sampler(
    h: &Histogram,
    c: &CorrectedProfile,
    range: &CorrectedProfile,
) -> QuantileSampler {
    QuantileSampler::new(h, range.min_ns, range.max_ns)
        .with_independent(c.count.saturating_sub(c.synthesized))
}

/// The deadline-miss percentage, with Newcombe's interval of its change, when either side has
/// a deadline or a miss.
fn deadline_misses(p: &mut StagePair<'_>) -> Result<Vec<MetricRow>, GateError> {
    let (b, c, o) = (p.b, p.c, p.o);
    if b.deadline_ns.is_none()
        && c.deadline_ns.is_none()
        && b.deadline_misses == 0
        && c.deadline_misses == 0
    {
        return Ok(Vec::new());
    }
    let delta = c.deadline_miss_pct - b.deadline_miss_pct;
    let misses = |s: &&StageProfile| (s.deadline_misses, s.count.max(s.deadline_misses));
    let (method, (lo, hi)) = if p.b_runs.len() > 1 || p.c_runs.len() > 1 {
        let runs = |side: &[&StageProfile]| side.iter().map(misses).collect::<Vec<_>>();
        let mut rng = ChaCha8Rng::seed_from_u64(row_seed(o.seed, p.key, Metric::DeadlineMiss));
        let (b_runs, c_runs) = (runs(p.b_runs), runs(p.c_runs));
        let interval =
            bootstrap_miss_difference(&b_runs, &c_runs, o.confidence, o.replicates, &mut rng);
        (IntervalMethod::RunBootstrap, interval)
    } else {
        let ((xb, nb), (xc, nc)) = (misses(&b), misses(&c));
        let interval = newcombe_difference(xb, nb, xc, nc, o.confidence);
        (IntervalMethod::Newcombe, interval)
    };
    let interval = Some((100.0 * lo, 100.0 * hi));
    Ok(vec![MetricRow {
        metric: Metric::DeadlineMiss,
        baseline: b.deadline_miss_pct,
        current: c.deadline_miss_pct,
        delta,
        threshold: o.deadline_miss_points,
        interval,
        method: Some(method),
        verdict: verdict(delta, o.deadline_miss_points, interval, o.strict),
        saturated: Saturated::default(),
    }])
}

/// One percentile row: the point values (from the histograms when both sides have one, by the
/// rule the bootstrap resamples, so the delta and its interval always agree, even for a profile
/// built in memory whose fields were never validated) and the bootstrap interval of the change.
fn percentile_row(
    key: &str,
    metric: Metric,
    q: f64,
    (base, cur): (u64, u64),
    threshold: f64,
    samplers: Option<&(RunSamplers, RunSamplers)>,
    o: &GateOptions,
) -> MetricRow {
    let (base, cur) = samplers.map_or((base, cur), |(sb, sc)| (sb.quantile(q), sc.quantile(q)));
    let delta = relative_pct(base as f64, cur as f64);
    let interval = samplers.map(|(sb, sc)| {
        let mut rng = ChaCha8Rng::seed_from_u64(row_seed(o.seed, key, metric));
        bootstrap_relative_pct(sb, sc, q, o.confidence, o.replicates, &mut rng)
    });
    MetricRow {
        metric,
        baseline: base as f64,
        current: cur as f64,
        delta,
        threshold,
        interval,
        method: samplers.map(|(sb, sc)| {
            if sb.runs() > 1 || sc.runs() > 1 {
                IntervalMethod::RunBootstrap
            } else {
                IntervalMethod::Bootstrap
            }
        }),
        verdict: verdict(delta, threshold, interval, o.strict),
        saturated: Saturated::default(),
    }
}

fn verdict(delta: f64, threshold: f64, interval: Option<(f64, f64)>, strict: bool) -> Verdict {
    match interval {
        Some((lo, _)) if !strict => {
            if lo > threshold {
                Verdict::Regression
            } else if delta > threshold {
                Verdict::WithinNoise
            } else {
                Verdict::Pass
            }
        }
        _ if delta > threshold => Verdict::Regression,
        _ => Verdict::Pass,
    }
}

/// One generator per stage and metric (FNV-1a of the key mixed into the seed), so a row's interval
/// does not change when stages are added to or removed from either profile.
fn row_seed(seed: u64, key: &str, metric: Metric) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain(metric.name().bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ seed
}

/// One judged row of the Markdown table.
fn markdown_row(md: &mut String, stage: &str, r: &MetricRow) {
    let _ = writeln!(
        md,
        "| {stage} | {} | {} | {} | {} | {} | {} | {} |",
        r.metric.name(),
        fmt_floor(r.saturated.baseline, fmt_value(r.metric, r.baseline)),
        fmt_floor(r.saturated.current, fmt_value(r.metric, r.current)),
        fmt_row_delta(r),
        fmt_delta(r.metric, r.threshold),
        r.interval.map_or("–".to_string(), |(lo, hi)| format!(
            "[{}, {}]",
            fmt_delta(r.metric, lo),
            fmt_delta(r.metric, hi)
        )),
        match r.verdict {
            _ if r.saturated.current => "**REGRESSION** (saturated)",
            Verdict::Pass => "pass",
            Verdict::WithinNoise => "pass (within noise)",
            Verdict::Regression => "**REGRESSION**",
        }
    );
}

/// Up to three names, then how many more: `a, b, c and 7 more`.
fn some(names: &[&str]) -> String {
    const SHOWN: usize = 3;
    let mut out = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        let _ = write!(out, " and {} more", names.len() - SHOWN);
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A number as it would be typed (`95`, `-5`, `0.001`, `NaN`), but `1e308` rather than 309
/// digits past 10^15.
fn fmt_given(v: f64) -> String {
    if v.abs() < 1e15 {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

/// Two decimals at most; past 10^15 (or for NaN and infinities) Rust's shortest form, `1e308`,
/// not 309 digits.
fn fmt_num(v: f64) -> String {
    if v.abs() < 1e15 {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:?}")
    }
}

fn fmt_signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", fmt_num(v))
    } else {
        fmt_num(v)
    }
}

fn fmt_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::DeadlineMiss => format!("{v:.2} %"),
        _ => format_ns(v as u64),
    }
}

/// A saturated figure is shown as the floor it is: `≥ 3601.33 s`.
fn fmt_floor(saturated: bool, shown: String) -> String {
    if saturated {
        format!("≥ {shown}")
    } else {
        shown
    }
}

/// A row's change; with a saturated side, the bound it is (`≥` for the current side, `≤` for
/// the baseline's) or `unknown` for both.
fn fmt_row_delta(r: &MetricRow) -> String {
    let delta = fmt_delta(r.metric, r.delta);
    match (r.saturated.baseline, r.saturated.current) {
        (false, false) => delta,
        (false, true) => format!("≥ {delta}"),
        (true, false) => format!("≤ {delta}"),
        (true, true) => "unknown".to_string(),
    }
}

fn fmt_delta(metric: Metric, v: f64) -> String {
    let sign = if v >= 0.0 { "+" } else { "" };
    match metric {
        _ if v.is_infinite() => format!("{sign}∞ %"),
        Metric::DeadlineMiss => format!("{sign}{v:.2} pts"),
        _ => format!("{sign}{v:.1} %"),
    }
}

/// Stage names and labels come from files: keep them from breaking the table or turning into
/// markup.
fn escape_md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '|' | '\\' | '`' | '*' | '[' | ']' | '<' | '>' | '#' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(4.0, 3.0, None, false), Verdict::Regression);
        assert_eq!(
            verdict(4.0, 3.0, Some((2.0, 6.0)), false),
            Verdict::WithinNoise
        );
        assert_eq!(
            verdict(4.0, 3.0, Some((3.5, 6.0)), false),
            Verdict::Regression
        );
        assert_eq!(
            verdict(4.0, 3.0, Some((2.0, 6.0)), true),
            Verdict::Regression
        );
        assert_eq!(verdict(3.0, 3.0, Some((2.0, 4.0)), true), Verdict::Pass);
        assert_eq!(verdict(1.0, 3.0, Some((-1.0, 3.5)), false), Verdict::Pass);
    }

    #[test]
    fn markdown_escapes_stage_names() {
        assert_eq!(escape_md("a|b<script>"), "a\\|b\\<script\\>");
        assert_eq!(escape_md("req{verb=\"post\"}"), "req{verb=\"post\"}");
    }

    #[test]
    fn number_formats() {
        assert_eq!(fmt_signed(3.0), "+3");
        assert_eq!(fmt_signed(0.5), "+0.5");
        assert_eq!(fmt_num(95.0), "95");
        assert_eq!(fmt_delta(Metric::P95, 10.04), "+10.0 %");
        assert_eq!(fmt_delta(Metric::P95, -2.0), "-2.0 %");
        assert_eq!(fmt_delta(Metric::DeadlineMiss, 2.0), "+2.00 pts");
        assert_eq!(fmt_delta(Metric::P99, f64::INFINITY), "+∞ %");
    }

    #[test]
    fn options_are_checked() {
        let ok = GateOptions::default();
        assert!(ok.validate().is_ok());
        let e = GateOptions {
            confidence: 1.5,
            ..ok.clone()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--confidence 1.5: must be a number between 0 and 1, such as 0.95"
        );
        let e = GateOptions {
            p95_pct: f64::NAN,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().starts_with("--p95 NaN"), "{e}");
    }
}
