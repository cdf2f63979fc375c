//! What a run prints and writes: a progress line per sample, every check with its measured figure
//! beside its bound, and the JSON summary.

use std::fmt::Display;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};

/// One assertion: what was measured, what it was held to, and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is asserted, e.g. `rss_slope_kib_per_min`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The measured figure.
    pub measured: Value,
    /// The bound or the exact value expected, as printed (`<= 512 KiB/min`, `== 4000`).
    pub bound: String,
    /// More on a failure (the first failing sample, the stage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A check made at every sample: how many samples it failed and the first failure.
#[derive(Debug)]
pub struct Tally {
    name: String,
    samples: u64,
    failures: u64,
    first: Option<String>,
}

impl Tally {
    /// A check named `name`, not yet observed.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            samples: 0,
            failures: 0,
            first: None,
        }
    }

    /// One sample: `ok` whether it held; `detail` describes a failure (built only then).
    pub fn observe(&mut self, ok: bool, detail: impl FnOnce() -> String) {
        self.samples += 1;
        if !ok {
            self.failures += 1;
            if self.first.is_none() {
                let detail = detail();
                println!("  ! {}: {detail}", self.name);
                self.first = Some(detail);
            }
        }
    }
}

/// The summary of one run, built as it goes.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The subcommand.
    pub command: &'static str,
    /// Whether every check held.
    pub passed: bool,
    /// Where it ran.
    pub machine: Machine,
    /// The run's settings, flags and bounds included.
    pub params: Value,
    /// Measured figures that are reported but not asserted, and the asserted ones again by name.
    pub figures: Map<String, Value>,
    /// Every assertion.
    pub checks: Vec<Check>,
    /// One entry per progress sample.
    pub samples: Value,
    /// Wall-clock seconds the run took.
    pub elapsed_secs: f64,
    #[serde(skip)]
    started: Instant,
}

/// The machine a run's figures belong to.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// `std::thread::available_parallelism`.
    pub cores: usize,
    /// `/proc/cpuinfo`'s first `model name`, if readable.
    pub cpu: Option<String>,
    /// `std::env::consts::OS`/`ARCH`.
    pub target: String,
}

impl Machine {
    fn current() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        Self {
            cores: cores(),
            cpu,
            target: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// Cores this process may run on (1 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Report {
    /// A report for `command` run with `params`.
    pub fn new(command: &'static str, params: &impl Serialize) -> Self {
        let params = serde_json::to_value(params).unwrap_or(Value::Null);
        let machine = Machine::current();
        println!(
            "laptime-stress {command} on {} cores ({}): {params}",
            machine.cores,
            machine.cpu.as_deref().unwrap_or("unknown cpu")
        );
        Self {
            command,
            passed: true,
            machine,
            params,
            figures: Map::new(),
            checks: Vec::new(),
            samples: Value::Array(Vec::new()),
            elapsed_secs: 0.0,
            started: Instant::now(),
        }
    }

    /// A reported figure.
    pub fn figure(&mut self, name: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.figures.insert(name.to_owned(), value);
    }

    /// The progress samples for the JSON (the caller prints its own lines as it goes, and keeps
    /// the samples typed until the end: a run's own bookkeeping must not show as heap growth).
    pub fn samples(&mut self, samples: &impl Serialize) {
        self.samples = serde_json::to_value(samples).unwrap_or(Value::Null);
    }

    /// Records a check as given.
    pub fn check(
        &mut self,
        name: impl Into<String>,
        passed: bool,
        measured: impl Serialize,
        bound: impl Into<String>,
        detail: Option<String>,
    ) {
        let check = Check {
            name: name.into(),
            passed,
            measured: serde_json::to_value(measured).unwrap_or(Value::Null),
            bound: bound.into(),
            detail,
        };
        self.passed &= passed;
        self.checks.push(check);
    }

    /// `measured <= bound`, in `unit`.
    pub fn at_most<T>(&mut self, name: &str, measured: T, bound: T, unit: &str)
    where
        T: PartialOrd + Display + Serialize,
    {
        let passed = measured <= bound;
        self.figure(name, &measured);
        self.check(name, passed, measured, format!("<= {bound} {unit}"), None);
    }

    /// `measured == expected`.
    pub fn equal<T>(&mut self, name: &str, measured: T, expected: T)
    where
        T: PartialEq + Display + Serialize,
    {
        let passed = measured == expected;
        self.check(name, passed, measured, format!("== {expected}"), None);
    }

    /// A per-sample check: it holds when no sample failed.
    pub fn tally(&mut self, tally: Tally) {
        let measured = format!("{} of {} samples failed", tally.failures, tally.samples);
        self.check(
            tally.name,
            tally.failures == 0 && tally.samples > 0,
            measured,
            "0 failed, at least 1 sample",
            tally.first,
        );
    }

    /// Prints every check and the verdict, writes the JSON to `json` if given, and returns the
    /// exit code: 0 when every check held, 1 otherwise (or when the JSON cannot be written).
    pub fn finish(mut self, json: Option<&Path>) -> ExitCode {
        self.elapsed_secs = self.started.elapsed().as_secs_f64();
        println!("\nchecks ({}):", self.command);
        for c in &self.checks {
            let verdict = if c.passed { "ok  " } else { "FAIL" };
            let measured = match &c.measured {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            print!("  {verdict} {}: {measured} (bound {})", c.name, c.bound);
            match &c.detail {
                Some(d) => println!(" — {d}"),
                None => println!(),
            }
        }
        println!("figures ({}):", self.command);
        for (name, value) in &self.figures {
            println!("  {name} = {value}");
        }
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        let mut code = if failed.is_empty() {
            println!(
                "laptime-stress {}: PASS, {} checks held ({:.1} s)",
                self.command,
                self.checks.len(),
                self.elapsed_secs
            );
            ExitCode::SUCCESS
        } else {
            println!(
                "laptime-stress {}: FAIL, {} of {} checks failed: {}",
                self.command,
                failed.len(),
                self.checks.len(),
                failed.join(", ")
            );
            ExitCode::FAILURE
        };
        if let Some(path) = json {
            match write_json(path, &self) {
                Ok(()) => println!("summary written to {}", path.display()),
                Err(e) => {
                    eprintln!("laptime-stress: cannot write {}: {e}", path.display());
                    code = ExitCode::FAILURE;
                }
            }
        }
        code
    }
}

/// Checks up front that `path` can be written (its directory is created), so a bad `--json` is a
/// usage error before a ten-minute run rather than a lost summary after it.
pub fn prepare_json(path: &Path) -> io::Result<PathBuf> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, b"{}\n")?;
    Ok(path.to_path_buf())
}

fn write_json(path: &Path, report: &Report) -> io::Result<()> {
    let mut text = serde_json::to_string_pretty(report).map_err(io::Error::other)?;
    text.push('\n');
    std::fs::write(path, text)
}

/// Nanoseconds of a duration, saturated.
pub fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The value at nearest rank ⌈q·n⌉ of an unsorted series (sorted here), `None` when empty.
pub fn percentile(values: &mut [u64], per_mille: u64) -> Option<u64> {
    values.sort_unstable();
    let n = values.len() as u64;
    let rank = crate::reference::nearest_rank(per_mille, n);
    values
        .get(usize::try_from(rank).ok()?.checked_sub(1)?)
        .copied()
}
