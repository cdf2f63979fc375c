//! The parent: runs every peer's two children one after the other (never two at once: the
//! machine has two vCPUs and the children time things), reads their JSON lines, prints the table.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::table::{self, Row};
use crate::peer::Peer;

/// Runs `peers` and prints the table; false if any child failed.
pub fn run(peers: &[&'static Peer], quick: bool) -> bool {
    let started = Instant::now();
    let load_before = load_average();
    let timeout = Duration::from_secs(if quick { 120 } else { 300 });
    let mut rows = Vec::new();
    for peer in peers {
        eprintln!("perf-compare: {} …", peer.name);
        let run = child(peer.name, quick, false, timeout);
        let rss = child(peer.name, quick, true, timeout);
        if let Err(e) = &run {
            eprintln!("perf-compare: {}: {e}", peer.name);
        }
        if let Err(e) = &rss {
            eprintln!("perf-compare: {} (memory): {e}", peer.name);
        }
        rows.push(Row {
            name: peer.name,
            run,
            rss,
        });
    }
    let machine = table::Machine {
        cpu: cpu_model(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load: format!("{} → {}", load_before, load_average()),
        seconds: started.elapsed().as_secs_f64(),
        quick,
    };
    print!("{}", table::render(&machine, &rows));
    rows.iter().all(|r| r.run.is_ok() && r.rss.is_ok())
}

/// Runs `perf-compare --peer NAME --json [--rss] [--quick]` and parses the last JSON line of its
/// standard output (a library may print its own lines before it).
fn child<T: DeserializeOwned>(
    name: &str,
    quick: bool,
    rss: bool,
    timeout: Duration,
) -> Result<T, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["--peer", name, "--json"]);
    // hotpath serves its figures on a loopback port (6770 unless this variable says otherwise)
    // and reads nothing when another process holds it: give each child a port free right now.
    if let Some(port) = free_port() {
        cmd.env("HOTPATH_METRICS_PORT", port.to_string());
    }
    if rss {
        cmd.arg("--rss");
    }
    if quick {
        cmd.arg("--quick");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    // Read both pipes on their own threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(|e| format!("wait: {e}"))? {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", timeout.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("{status}: {}", tail.join(" | ")));
    }
    out.lines()
        .rev()
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| "no result line on its standard output".to_owned())
}

/// A loopback TCP port nobody listens on at this moment.
fn free_port() -> Option<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).ok()?;
    listener.local_addr().ok().map(|a| a.port())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}
