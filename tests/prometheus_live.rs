//! The demo's endpoint scraped by a real Prometheus server (Debian's `/usr/bin/prometheus`).
//!
//! The demo (`examples/trading_tick.rs`) runs a few seconds of ticks with `--listen 127.0.0.1:0`,
//! prints its whole-run figures as one JSON line, and keeps serving those final figures
//! (`--linger`). Prometheus scrapes it every second. Once a scrape has seen the final state (its
//! `_count` equals the library's count), the test asks Prometheus' HTTP API for:
//!
//! * `histogram_quantile(0.95, <bucket counters>)` of each stage, with no `rate()`: at a fixed
//!   state the cumulative buckets *are* the run's distribution, so the estimate and the library's
//!   own cumulative p95 must fall in the same bucket (the rank ⌈0.95·n⌉ the library uses and the
//!   rank 0.95·n Prometheus uses pick the same bucket; the library may report up to HDR's 0.1 %
//!   above a bucket's bound, as its value is the top of its HDR counter);
//! * every stage's `_count`, every guard-trip counter and every deadline-miss counter, which must
//!   equal the library's.
//!
//! It also runs `promtool check metrics` on what the endpoint serves.
//!
//! Both processes are started here, bound to 127.0.0.1, given bounded lifetimes, and killed by
//! their own PID when the test ends, however it ends. Without Prometheus the test prints SKIP,
//! unless `CI` is set (`.ci/run` sets it and installs Prometheus): then it fails.
#![cfg(feature = "http")]

#[path = "common/http_client.rs"]
mod http_client;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http_client::{encode, get, wait_for};
use serde_json::Value;

/// How long the demo ticks.
const RUN_SECONDS: u64 = 4;
/// How long it serves its final figures afterwards, at most (the test kills it sooner).
const LINGER_SECONDS: u64 = 180;
/// Prometheus' first successful scrape takes about 6 s here (service discovery's update
/// throttle), whatever the scrape interval: wait well beyond it.
const FIRST_SCRAPE: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "mm";
const ENV: &str = "live-test";

#[test]
fn prometheus_sees_what_the_library_counts() {
    let Some(prometheus) = find_tool("prometheus") else {
        skip_or_fail("no prometheus binary (apt-get install prometheus)");
        return;
    };
    let work = TempDir::new("laptime-prometheus-live");

    // The demo, on any free loopback port; it prints the address it got.
    let demo_bin = demo_binary();
    let mut demo = Reaped::spawn(
        Command::new(&demo_bin)
            .args(["--seconds", &RUN_SECONDS.to_string()])
            .args(["--listen", "127.0.0.1:0", "--env", ENV])
            .args(["--linger", &LINGER_SECONDS.to_string(), "--summary-json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
        "demo",
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
        .unwrap_or_else(|| panic!("the demo never said where it serves: {:?}", lines.seen()));

    // Prometheus, scraping the demo every second.
    let prom_addr = free_loopback_port();
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: laptime-demo\n    static_configs:\n      \
             - targets: ['{endpoint}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(work.path().join("prometheus.log")).unwrap();
    let mut prom = Reaped::spawn(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--web.enable-lifecycle")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
        "prometheus",
    );
    prom.quit_url = Some(prom_addr);
    let prom_log =
        || std::fs::read_to_string(work.path().join("prometheus.log")).unwrap_or_default();

    let up = wait_for(FIRST_SCRAPE, || {
        if let Some(status) = prom.exited() {
            panic!("prometheus exited ({status}):\n{}", prom_log());
        }
        let up = query(prom_addr, "up{job=\"laptime-demo\"}").ok()?;
        (up.first()?.1 == 1.0).then_some(())
    });
    if up.is_none() {
        skip_or_fail(&format!(
            "prometheus did not scrape the demo within {FIRST_SCRAPE:?}:\n{}",
            prom_log()
        ));
        return;
    }

    // The library's own figures, after the run's final aggregation.
    let summary: Value = lines
        .wait_for_line(Duration::from_secs(RUN_SECONDS + 60), |l| {
            serde_json::from_str::<Value>(l)
                .ok()?
                .get("summary")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no summary line from the demo: {:?}", lines.seen()));
    let stages = summary["stages"].as_array().expect("stages");
    let tick = stages
        .iter()
        .find(|s| s["stage"] == "tick_total")
        .expect("tick_total in the summary");

    // Wait until a scrape has seen the final state: the demo no longer records, so every
    // later scrape returns the same figures.
    let tick_count = tick["count"].as_f64().unwrap();
    let final_seen = wait_for(Duration::from_secs(30), || {
        let n = query(prom_addr, &series(tick, "_count")).ok()?;
        (n.first()?.1 == tick_count).then_some(())
    });
    assert!(
        final_seen.is_some(),
        "prometheus never saw tick_total's final count {tick_count}: {:?}",
        query(prom_addr, &series(tick, "_count"))
    );

    let mut compared = 0;
    for stage in stages {
        let name = describe(stage);
        let count = stage["count"].as_f64().unwrap();
        let exported = single(prom_addr, &series(stage, "_count"));
        assert_eq!(
            exported, count,
            "{name}: _count in Prometheus vs the library"
        );

        // The bucket that holds the 0.95 rank, from the bucket counters Prometheus stored.
        let buckets = buckets(prom_addr, &series(stage, "_bucket"));
        assert_eq!(
            buckets.last().map(|b| b.1),
            Some(count),
            "{name}: +Inf bucket"
        );
        let rank = 0.95 * count;
        let at = buckets.iter().position(|b| b.1 >= rank).unwrap();
        let lower = if at == 0 { 0.0 } else { buckets[at - 1].0 };
        let upper = buckets[at].0;

        let estimate = single(
            prom_addr,
            &format!("histogram_quantile(0.95, {})", series(stage, "_bucket")),
        );
        let library = stage["p95_ns"].as_f64().unwrap() / 1e9;
        assert!(
            (lower..=upper).contains(&estimate),
            "{name}: Prometheus' p95 {estimate} s outside the bucket ({lower}, {upper}]"
        );
        assert!(
            library > lower && library <= upper * 1.001 + 1e-9,
            "{name}: the library's p95 {library} s is not in Prometheus' bucket ({lower}, {upper}] \
             (estimate {estimate} s)"
        );
        println!(
            "{name}: n={count} p95 library {library:.6} s, Prometheus {estimate:.6} s, \
             bucket ({lower}, {upper}]"
        );
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} stages compared");

    // Guard trips, reason by reason, both ways.
    let trips = summary["guard_trips"].as_object().expect("guard_trips");
    let exported: BTreeMap<String, f64> = query(
        prom_addr,
        &format!("{NAMESPACE}_guard_trips_total{{env=\"{ENV}\"}}"),
    )
    .unwrap()
    .into_iter()
    .map(|(labels, v)| (labels["reason"].as_str().unwrap().to_owned(), v))
    .collect();
    let library: BTreeMap<String, f64> = trips
        .iter()
        .map(|(r, n)| (r.clone(), n.as_f64().unwrap()))
        .collect();
    assert_eq!(exported, library, "guard trips: Prometheus vs the library");
    assert!(
        library.get("vol_soft").is_some_and(|&n| n > 0.0),
        "{library:?}"
    );

    // Deadline misses: every exported series equals the library's count for its stage, and
    // every stage with a deadline (tick_total) is exported.
    let misses = query(
        prom_addr,
        &format!("{NAMESPACE}_deadline_miss_total{{env=\"{ENV}\"}}"),
    )
    .unwrap();
    assert!(
        misses.iter().any(|(l, _)| l["stage"] == "tick_total"),
        "no tick_total deadline-miss series: {misses:?}"
    );
    for (labels, value) in &misses {
        let stage = stages
            .iter()
            .find(|s| {
                s["stage"] == labels["stage"]
                    && s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v))
            })
            .unwrap_or_else(|| panic!("a miss series for a stage the library lacks: {labels:?}"));
        assert_eq!(
            *value,
            stage["deadline_misses"].as_f64().unwrap(),
            "deadline misses of {}",
            describe(stage)
        );
    }

    // What the endpoint serves is clean by promtool's lint, and the endpoint says it is healthy.
    let metrics = get(endpoint, "/metrics").expect("GET /metrics");
    assert_eq!(metrics.status, 200);
    match find_tool("promtool") {
        Some(promtool) => promtool_check(&promtool, &metrics.body),
        None => skip_or_fail("no promtool to lint the exposition with"),
    }
    assert_eq!(get(endpoint, "/health").expect("GET /health").status, 200);
    println!(
        "prometheus agreed with the library on {compared} stages, {} guard reasons, {} miss series",
        library.len(),
        misses.len()
    );
}

/// Fails under CI (where `.ci/run` installs Prometheus), prints SKIP elsewhere.
fn skip_or_fail(why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !ci,
        "CI is set and the live Prometheus test cannot run: {why}"
    );
    println!("SKIP prometheus_live: {why}");
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The example as the test run built it (`cargo test` and nextest build examples beside the test
/// binaries, with the same features); built here if it is missing or lacks the endpoint.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/prometheus_live-<hash> -> target/<profile>/examples/trading_tick
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let demo = profile_dir.join("examples").join("trading_tick");
    // A demo built with the endpoint parses `--listen` and stops at the bad `--seconds`; one built
    // without it (or before it existed) refuses `--listen`.
    let serves = |p: &Path| {
        Command::new(p)
            .args(["--listen", "127.0.0.1:0", "--seconds", "x"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("--seconds takes"))
    };
    if demo.is_file() && serves(&demo) {
        return demo;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let status = Command::new(cargo)
        .args(["build", "--example", "trading_tick", "--features", "http"])
        .args(release.then_some("--release"))
        .arg("--target-dir")
        .arg(profile_dir.parent().unwrap())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo to build the demo");
    assert!(status.success(), "building the demo failed");
    assert!(serves(&demo), "{} does not serve /metrics", demo.display());
    demo
}

/// A loopback port nobody listens on right now.
fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

/// `mm_stage_duration_seconds<suffix>{stage="x",env=".."}` for an unlabelled stage,
/// `mm_<name>_seconds<suffix>{k="v",..,env=".."}` for a labelled one.
fn series(stage: &Value, suffix: &str) -> String {
    let name = stage["stage"].as_str().unwrap();
    let labels = stage["labels"].as_object().unwrap();
    let mut matchers: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}")) // a JSON string is a valid PromQL string here
        .collect();
    matchers.push(format!("env=\"{ENV}\""));
    if labels.is_empty() {
        matchers.insert(0, format!("stage=\"{name}\""));
        format!(
            "{NAMESPACE}_stage_duration_seconds{suffix}{{{}}}",
            matchers.join(",")
        )
    } else {
        format!(
            "{NAMESPACE}_{name}_seconds{suffix}{{{}}}",
            matchers.join(",")
        )
    }
}

fn describe(stage: &Value) -> String {
    format!("{}{}", stage["stage"].as_str().unwrap(), stage["labels"])
}

/// One series of an instant query's result: its labels and value.
type Sample = (serde_json::Map<String, Value>, f64);

/// An instant query's result.
fn query(prom: SocketAddr, promql: &str) -> Result<Vec<Sample>, String> {
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
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("no value in {series}"))?;
            Ok((labels, value))
        })
        .collect()
}

/// The value of a query that must return exactly one series.
fn single(prom: SocketAddr, promql: &str) -> f64 {
    let result = query(prom, promql).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.len(), 1, "{promql}: {result:?}");
    result[0].1
}

/// A histogram's cumulative buckets as Prometheus stored them: (upper bound, count), by bound.
fn buckets(prom: SocketAddr, bucket_series: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = query(prom, bucket_series)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(labels, count)| {
            let le = labels["le"].as_str().unwrap();
            (le.parse::<f64>().unwrap(), count)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 1, "{bucket_series}: {buckets:?}");
    buckets
}

fn promtool_check(promtool: &Path, exposition: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed (by its PID) and waited for when dropped.
struct Reaped {
    child: Child,
    name: &'static str,
    /// Asked to quit over HTTP first (Prometheus' `/-/quit`), so its storage closes cleanly.
    quit_url: Option<SocketAddr>,
}

impl Reaped {
    fn spawn(command: &mut Command, name: &'static str) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Reaped {
            child,
            name,
            quit_url: None,
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The child's stdout, line by line, read on a thread of its own.
    fn lines(&mut self) -> Lines {
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
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
}

impl Lines {
    /// The first line (from now on) `pick` accepts, waiting at most `limit`.
    fn wait_for_line<T>(
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

    fn seen(&self) -> Vec<String> {
        let seen = self.seen.borrow();
        seen[seen.len().saturating_sub(40)..].to_vec()
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
