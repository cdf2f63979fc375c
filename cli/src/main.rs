//! The `laptime` command: `gate`, `merge` and `report` over perf profiles; `rules` from a
//! configuration file; `top`, a live view of a running process. Exit codes: 0 success
//! (gate: pass), 1 regression (gate only), 2 error (bad arguments, unreadable or malformed files).
//! Every input is read through a limit (`--max-input-bytes`); every output is written by the
//! library's one rule, [`laptime::fs::write_file`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use laptime::profile::Profile;
use laptime_cli::gate::{GateError, GateOptions, gate_runs};
use laptime_cli::load_profile;
use laptime_cli::top::{self, TopOptions, client::Endpoint};

#[derive(Parser)]
#[command(
    name = "laptime",
    version,
    about = "Gate, merge and draw laptime perf profiles; watch a running process (top)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare a profile with a baseline: exit 0 pass, 1 regression, 2 error.
    Gate(GateArgs),
    /// Merge profiles (of one build, from several processes or hosts) into one.
    Merge {
        /// The merged profile to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The merged profile's name (default: the first input's).
        #[arg(long)]
        name: Option<String>,
        /// The profiles to merge.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[command(flatten)]
        limit: InputLimit,
    },
    /// Draw a profile (and a baseline) as one HTML file, or as an SVG or PNG image.
    Report {
        /// The profile to draw.
        profile: PathBuf,
        /// A baseline to overlay and compare with.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// The output file; its extension chooses the format: .html, .svg or .png.
        #[arg(short, long)]
        output: PathBuf,
        /// Draw only this stage (SVG and PNG; needed above 64 stages). Give its key, the name
        /// followed by its labels sorted by label name, as in the gate report:
        /// `exchange_req{api="batch-orders",verb="post"}` (quote it for the shell); or the name
        /// alone when only one stage has it.
        #[arg(long, value_name = "STAGE")]
        stage: Option<String>,
        /// The most stages the HTML report shows (default 200): those with the highest p99,
        /// with a note of how many were left out.
        #[arg(
            long,
            value_name = "N",
            value_parser = clap::value_parser!(u64).range(1..),
            allow_negative_numbers = true
        )]
        max_stages: Option<u64>,
        #[command(flatten)]
        limit: InputLimit,
    },
    /// Generate Prometheus alert and recording rules (with promtool unit tests) and a Grafana
    /// dashboard from a configuration file: DIR/prometheus/rules.yml,
    /// DIR/prometheus/rules_test.yml, DIR/grafana/dashboard.json.
    Rules {
        /// The configuration file (`laptime::config`), the one the process loads.
        #[arg(long)]
        config: PathBuf,
        /// The directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Query the stage histograms as Prometheus native histograms (`histogram_quantile`,
        /// `histogram_count`, `histogram_sum` over the family itself), as `[prometheus] native =
        /// true` does; without either, as classic `_bucket`/`_count`/`_sum` series.
        #[arg(long)]
        native: bool,
        #[command(flatten)]
        limit: InputLimit,
    },
    /// Watch a running process's stages live, from its /stats endpoint (`q` quits).
    Top(TopArgs),
}

#[derive(clap::Args)]
struct TopArgs {
    /// The process's endpoint (`laptime::export::http`, feature `http`).
    #[arg(long, default_value = "http://127.0.0.1:9898")]
    url: String,
    /// The window to show first: 1s, 5s, 60s, cumulative or another kept window (default: the
    /// process's first).
    #[arg(long)]
    window: Option<String>,
    /// How often to ask the process (and to retry when it does not answer), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000), allow_negative_numbers = true)]
    interval_ms: u64,
    /// The most one request may take, connect to last byte, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(10..=60_000), allow_negative_numbers = true)]
    timeout_ms: u64,
    /// Print one frame as plain text and exit (for scripts and CI logs).
    #[arg(long, conflicts_with = "json")]
    once: bool,
    /// Print the endpoint's JSON document as it came and exit.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct InputLimit {
    /// Refuse an input file larger than this many bytes (default: 268435456, 256 MiB, for a
    /// profile; 16777216, 16 MiB, for a configuration). A wrong path (/dev/zero, a log) then
    /// costs at most this much memory.
    #[arg(
        long,
        value_name = "BYTES",
        value_parser = clap::value_parser!(u64).range(1..),
        allow_negative_numbers = true
    )]
    max_input_bytes: Option<u64>,
}

impl InputLimit {
    fn profile(&self) -> u64 {
        self.max_input_bytes
            .unwrap_or(laptime::profile::DEFAULT_MAX_BYTES)
    }
}

#[derive(clap::Args)]
struct GateArgs {
    /// The baseline profile; several (`--baseline a.json b.json`, or the option repeated) are
    /// runs of one build, merged, and their spread widens the intervals.
    #[arg(long, required = true, num_args = 1.., action = clap::ArgAction::Append)]
    baseline: Vec<PathBuf>,
    /// The profile to judge; several are runs of one build, as for `--baseline`.
    #[arg(long, required = true, num_args = 1.., action = clap::ArgAction::Append)]
    current: Vec<PathBuf>,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    // Negative numbers are taken as values (`--p95 -5` as `--p95=-5`), so both forms reach
    // `GateOptions::validate` and get its message.
    /// Largest allowed p95 increase, in percent (raw and CO-corrected).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    p95: f64,
    /// Largest allowed p99 increase, in percent (raw and CO-corrected).
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    p99: f64,
    /// Largest allowed deadline-miss increase, in percentage points.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    deadline_miss: f64,
    /// Judge point values only (no confidence intervals).
    #[arg(long)]
    strict: bool,
    /// Bootstrap seed (the same seed gives the same report).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Confidence of the intervals.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    confidence: f64,
    /// Bootstrap replicates per metric.
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true)]
    replicates: usize,
    /// Stages with fewer spans on either side are not judged.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
    min_count: u64,
    #[command(flatten)]
    limit: InputLimit,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("laptime: error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the message already
/// holds (the typed errors quote their sources).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.replace('\n', " ")
}

fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Gate(a) => run_gate(a),
        Command::Top(a) => run_top(a),
        Command::Merge {
            output,
            name,
            inputs,
            limit,
        } => {
            let profiles = inputs
                .iter()
                .map(|p| load_profile("input", p, limit.profile()))
                .collect::<Result<Vec<_>, _>>()?;
            let name = name.unwrap_or_else(|| profiles[0].meta.name.clone());
            let merged = Profile::merge(&name, &profiles)?;
            merged
                .write(&output)
                .with_context(|| format!("cannot write {}", output.display()))?;
            Ok(0)
        }
        Command::Report {
            profile,
            baseline,
            output,
            stage,
            max_stages,
            limit,
        } => {
            let current = load_profile("current", &profile, limit.profile())?;
            let baseline = baseline
                .map(|p| load_profile("baseline", &p, limit.profile()))
                .transpose()?;
            let shown = Shown {
                stage: stage.as_deref(),
                max_stages: max_stages.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            };
            write_report(&current, baseline.as_ref(), &output, shown)?;
            Ok(0)
        }
        Command::Rules {
            config,
            out,
            native,
            limit,
        } => {
            let max = limit
                .max_input_bytes
                .unwrap_or(laptime::config::DEFAULT_MAX_BYTES);
            let mut config = laptime::config::Config::from_path_with_limit(&config, max)?;
            // The flag turns native on; it never turns off a file's `native = true`.
            config.prometheus.native |= native;
            let written = laptime_cli::rules::write_rules(&config, &out)
                .with_context(|| format!("cannot write under {}", out.display()))?;
            let dashboard = out.join("grafana").join("dashboard.json");
            let json = laptime_cli::dashboard::dashboard(&config);
            let mut text = serde_json::to_string_pretty(&json)?;
            text.push('\n');
            write_file(&dashboard, text.as_bytes())?;
            for path in written.iter().chain([&dashboard]) {
                println!("wrote {}", path.display());
            }
            Ok(0)
        }
    }
}

fn run_top(a: TopArgs) -> anyhow::Result<u8> {
    let options = TopOptions {
        endpoint: Endpoint::parse(&a.url).map_err(anyhow::Error::msg)?,
        window: a.window,
        interval: Duration::from_millis(a.interval_ms),
        timeout: Duration::from_millis(a.timeout_ms),
    };
    if a.json {
        let body = top::fetch(&options).map_err(anyhow::Error::msg)?;
        let mut out = std::io::stdout().lock();
        out.write_all(&body)?;
        out.write_all(b"\n")?;
    } else if a.once {
        print!("{}", top::once(&options).map_err(anyhow::Error::msg)?);
    } else {
        top::app::run(&options).map_err(anyhow::Error::msg)?;
    }
    Ok(0)
}

fn run_gate(a: GateArgs) -> anyhow::Result<u8> {
    let mut options = GateOptions::default();
    options.p95_pct = a.p95;
    options.p99_pct = a.p99;
    options.deadline_miss_points = a.deadline_miss;
    options.strict = a.strict;
    options.seed = a.seed;
    options.confidence = a.confidence;
    options.replicates = a.replicates;
    options.min_count = a.min_count;
    options.validate()?;
    let load = |side, paths: &[PathBuf]| -> anyhow::Result<Vec<Profile>> {
        let limit = a.limit.profile();
        paths
            .iter()
            .map(|p| Ok(load_profile(side, p, limit)?))
            .collect()
    };
    let baseline = load("baseline", &a.baseline)?;
    let current = load("current", &a.current)?;
    // Nothing judged is an error (exit 2), but its report still shows what each side holds.
    let (mut report, error) = match gate_runs(&baseline, &current, &options) {
        Ok(report) => (report, None),
        Err(e) => {
            let message = e.to_string();
            match e {
                GateError::NothingJudged { report } => (*report, Some(message)),
                e => return Err(e.into()),
            }
        }
    };
    report.baseline_source = sources(&a.baseline);
    report.current_source = sources(&a.current);
    let md = report.to_markdown();
    print!("{md}");
    if let Some(path) = &a.report {
        write_file(path, md.as_bytes())?;
    }
    match error {
        Some(message) => bail!("{message}"),
        None => Ok(report.exit_code()),
    }
}

/// A side's files as the report names them: `a.json, b.json`.
fn sources(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// Which stages a report shows: `--stage` (an image of one), `--max-stages` (the HTML report's
/// bound).
struct Shown<'a> {
    stage: Option<&'a str>,
    max_stages: Option<usize>,
}

fn write_report(
    current: &Profile,
    baseline: Option<&Profile>,
    output: &Path,
    shown: Shown<'_>,
) -> anyhow::Result<()> {
    let Shown { stage, max_stages } = shown;
    let ext = output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => {
            if stage.is_some() {
                bail!(
                    "--stage applies to .svg and .png outputs; the HTML report has every stage \
                     (up to --max-stages)"
                );
            }
            let max = max_stages.unwrap_or(laptime::report::MAX_HTML_STAGES);
            let html = laptime::report::html_top(current, baseline, max)?;
            write_file(output, html.as_bytes())?;
        }
        Some("svg" | "png") if max_stages.is_some() => {
            bail!("--max-stages applies to the HTML report; an image draws at most 64 stages")
        }
        Some("svg") => {
            let svg = laptime::report::svg(current, baseline, stage)?;
            write_file(output, svg.as_bytes())?;
        }
        Some("png") => laptime::report::png(current, baseline, stage, output)?,
        _ => bail!(
            "-o {}: unknown output format; name the file .html, .svg or .png",
            output.display()
        ),
    }
    Ok(())
}

/// Writes an output by the library's rule, the error naming the file.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    laptime::fs::write_file(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
