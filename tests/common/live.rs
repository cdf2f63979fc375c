//! Helpers of the tests that run the demo against a real Prometheus server (Debian's
//! `/usr/bin/prometheus`): finding tools, building the demo with its endpoint, starting child
//! processes that are killed by their own PID however the test ends, and Prometheus' query API.
//! Included with `#[path]`; the including test also includes `common/http_client.rs` as
//! `mod http_client` at its root.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http_client::{self, encode, get, wait_for};

/// Prometheus' first successful scrape takes about 6 s here (service discovery's update
/// throttle), whatever the scrape interval: wait well beyond it.
pub const FIRST_SCRAPE: Duration = Duration::from_secs(60);

/// Whether `CI` is set (`.ci/run` sets it and installs Prometheus).
fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Fails under CI, prints SKIP elsewhere.
pub fn skip_or_fail(why: &str) {
    let test = env!("CARGO_CRATE_NAME");
    assert!(!ci(), "CI is set and {test} cannot run: {why}");
    println!("SKIP {test}: {why}");
}

/// `name` on `PATH`, or in `/usr/bin`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The demo's features these tests need: the endpoint with native histograms (`native`, which
/// brings `http`), `--config` (`config`) and `--artifacts` (`report`).
const DEMO_FEATURES: &str = "native,config,report";

/// The demo (package `laptime-demo`, binary `trading_tick`), built here with [`DEMO_FEATURES`]
/// into the test run's own target directory and profile: the test run does not build another
/// package's binary, and cargo does nothing if it is up to date. Every live test asks for the
/// same features, so two of them running at once never rebuild it in turn.
pub fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/trading_tick
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let demo = profile_dir.join("trading_tick");
    // A demo built with the features parses `--listen`, `--native` and `--config` and stops at
    // the bad `--seconds`; one built without them refuses one of those options first.
    let capable = |p: &Path| {
        Command::new(p)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--native",
                "--config",
                "x",
                "--seconds",
                "x",
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("--seconds takes"))
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let status = Command::new(cargo)
        // The CLI's tests build it too, from the CLI's directory: `-p` names it in the workspace.
        .args([
            "build",
            "-p",
            "laptime-demo",
            "--bin",
            "trading_tick",
            "--features",
            DEMO_FEATURES,
        ])
        .args(release.then_some("--release"))
        .arg("--target-dir")
        .arg(profile_dir.parent().unwrap())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo to build the demo");
    assert!(status.success(), "building the demo failed");
    assert!(
        capable(&demo),
        "{} lacks --listen, --native or --config (features {DEMO_FEATURES})",
        demo.display()
    );
    demo
}

/// A loopback port nobody listens on right now.
pub fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

/// Starts the demo with `args` (plus `--listen 127.0.0.1:0`) and returns it, its stdout lines and
/// the address it serves on (it prints it).
pub fn start_demo(args: &[&str], name: &'static str) -> (Reaped, Lines, SocketAddr) {
    start_demo_on("127.0.0.1:0".parse().unwrap(), args, name)
}

/// [`start_demo`] listening on `addr` (a port chosen before the scraper that targets it starts).
pub fn start_demo_on(
    addr: SocketAddr,
    args: &[&str],
    name: &'static str,
) -> (Reaped, Lines, SocketAddr) {
    let mut demo = Reaped::spawn(
        Command::new(demo_binary())
            .args(["--listen", &addr.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
        name,
    );
    let lines = demo.lines();
    let endpoint: SocketAddr = lines
        .wait_for_line(Duration::from_secs(60), |l| {
            l.strip_prefix("trading_tick: serving http://")?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{name} never said where it serves: {:?}", lines.seen()));
    (demo, lines, endpoint)
}

/// A Prometheus server on a free loopback port, with its storage and log in `dir`, asked to quit
/// (then killed) when dropped.
pub struct Prometheus {
    /// The process.
    pub process: Reaped,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `binary` with `config` (the text of a prometheus.yml) written into `dir`.
    pub fn start(binary: &Path, dir: &Path, config: &str) -> Self {
        Self::start_with(binary, dir, config, &[])
    }

    /// [`start`](Self::start) with more command-line flags, e.g.
    /// `--enable-feature=native-histograms` or `--enable-feature=exemplar-storage`.
    pub fn start_with(binary: &Path, dir: &Path, config: &str, flags: &[&str]) -> Self {
        let addr = free_loopback_port();
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut process = Reaped::spawn(
            Command::new(binary)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--web.enable-lifecycle")
                .args(flags)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
            "prometheus",
        );
        process.quit_url = Some(addr);
        Prometheus { process, addr, log }
    }

    /// Starts `binary` scraping `target` every second as job `job`, and waits until it is up;
    /// `None` (after `skip_or_fail` with the log) when it never scrapes the target.
    pub fn scraping(binary: &Path, dir: &Path, job: &str, target: SocketAddr) -> Option<Self> {
        Self::scraping_with(binary, dir, job, target, &[])
    }

    /// [`scraping`](Self::scraping) with more command-line flags.
    pub fn scraping_with(
        binary: &Path,
        dir: &Path,
        job: &str,
        target: SocketAddr,
        flags: &[&str],
    ) -> Option<Self> {
        let mut prom = Self::start_with(
            binary,
            dir,
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
            flags,
        );
        if prom.wait_up(job, 1) {
            return Some(prom);
        }
        skip_or_fail(&format!(
            "prometheus did not scrape {target} within {FIRST_SCRAPE:?}:\n{}",
            prom.log()
        ));
        None
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most [`FIRST_SCRAPE`]) until `up` is 1 for `targets` targets of `job`; false if
    /// it never is. Panics with the log if Prometheus exits.
    pub fn wait_up(&mut self, job: &str, targets: usize) -> bool {
        let addr = self.addr;
        wait_for(FIRST_SCRAPE, || {
            if let Some(status) = self.process.exited() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            let up = query(addr, &format!("up{{job=\"{job}\"}} == 1")).ok()?;
            (up.len() == targets).then_some(())
        })
        .is_some()
    }
}

/// Now, in unix seconds: what Prometheus' API and OpenMetrics timestamps are in.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// One series of an instant query's result: its labels and value.
pub type Sample = (serde_json::Map<String, Value>, f64);

/// An instant query's result.
pub fn query(prom: SocketAddr, promql: &str) -> Result<Vec<Sample>, String> {
    let r =
        get(prom, &format!("/api/v1/query?query={}", encode(promql))).map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
    if r.status != 200 || body["status"] != "success" {
        return Err(format!("{promql}: {} {}", r.status, r.body));
    }
    let result = body["data"]["result"].as_array().ok_or("no result")?;
    result
        .iter()
        .map(|series| {
            let labels = series["metric"].as_object().cloned().unwrap_or_default();
            // "NaN" parses too: a sample whose value is NaN is still a sample.
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("no value in {series}"))?;
            Ok((labels, value))
        })
        .collect()
}

/// The value of a query that must return exactly one series.
pub fn single(prom: SocketAddr, promql: &str) -> f64 {
    let result = query(prom, promql).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.len(), 1, "{promql}: {result:?}");
    result[0].1
}

/// A child process killed (by its PID) and waited for when dropped.
pub struct Reaped {
    child: Child,
    name: &'static str,
    /// Asked to quit over HTTP first (Prometheus' `/-/quit`), so its storage closes cleanly.
    pub quit_url: Option<SocketAddr>,
}

impl Reaped {
    /// Starts `command`, panicking with `name` if it cannot.
    pub fn spawn(command: &mut Command, name: &'static str) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Reaped {
            child,
            name,
            quit_url: None,
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The child's stdout, line by line, read on a thread of its own.
    pub fn lines(&mut self) -> Lines {
        let stdout = self.child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: std::cell::RefCell::new(Vec::new()),
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(addr) = self.quit_url {
            let _ = http_client::send(addr, http_client::request("POST", "/-/quit").as_bytes());
            let _ = wait_for(Duration::from_secs(5), || self.exited());
        }
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        match self.child.wait() {
            Ok(status) => eprintln!("{} (pid {}) ended: {status}", self.name, self.child.id()),
            Err(e) => eprintln!("{} (pid {}): {e}", self.name, self.child.id()),
        }
    }
}

/// Lines from a child's stdout, kept for failure messages.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
}

impl Lines {
    /// The first line (from now on) `pick` accepts, waiting at most `limit`.
    pub fn wait_for_line<T>(
        &self,
        limit: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).ok()?;
            let picked = pick(&line);
            self.seen.borrow_mut().push(line);
            if picked.is_some() {
                return picked;
            }
        }
    }

    /// The last 40 lines read.
    pub fn seen(&self) -> Vec<String> {
        let seen = self.seen.borrow();
        seen[seen.len().saturating_sub(40)..].to_vec()
    }
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system's temp dir.
    pub fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
