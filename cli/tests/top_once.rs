//! `laptime top --once` and `--json` against a process's `/stats`, served here in-process from
//! one recorded snapshot (the scenario of `tests/common/stats_scenario.rs`, under a frozen mock
//! clock so `get_all_stats` keeps answering from the same figures): every row's count and
//! percentiles equal `get_all_stats`, to the nanosecond; and a process that answers garbage,
//! answers nothing or is not there makes `top` say so and exit 2 instead of hanging.

#[path = "../../tests/common/stats_scenario.rs"]
mod stats_scenario;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use laptime::export::http::{MetricsServer, MetricsServerHandle};
use laptime::{StageStats, Window};
use stats_scenario::Served;

/// `cargo test` runs this file's tests as threads of one process, which has one collector.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `laptime top ARGS`, killing it (and failing) if it has not exited within a minute.
fn top(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_laptime"))
        .arg("top")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the laptime binary runs");
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("laptime top {args:?} did not exit within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The recorded scenario served on a loopback port, and the snapshot served.
fn serve_scenario() -> (stats_scenario::Scenario, MetricsServerHandle) {
    laptime::clock::MockClock::install(1_000_000_000);
    let scenario = stats_scenario::record();
    let served = Arc::new(Served::default());
    served.set(scenario.handle.snapshot());
    let server = MetricsServer::builder()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .start(served)
        .unwrap_or_else(|e| panic!("server failed to start: {e}"));
    (scenario, server)
}

/// `12.345` (µs) as 12345 (ns): the text parsed back, not formatted again.
fn ns_of(micros: &str) -> u64 {
    let (whole, frac) = micros.split_once('.').expect("µs with 3 decimals");
    assert_eq!(frac.len(), 3, "{micros}");
    whole.parse::<u64>().unwrap() * 1000 + frac.parse::<u64>().unwrap()
}

/// One table row of `--once`: the stage key, then count, p50, p99, p99.9, max, misses, sla and
/// the trend, separated by runs of spaces.
struct Printed {
    key: String,
    count: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    sla: String,
}

fn rows(frame: &str) -> Vec<Printed> {
    let table = frame
        .lines()
        .skip_while(|l| !l.starts_with("stage "))
        .skip(1)
        .take_while(|l| !l.starts_with("guard trips"));
    table
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let n = words.len();
            assert!(n >= 9, "{line}");
            Printed {
                key: words[..n - 8].join(" "),
                count: words[n - 8].parse().unwrap(),
                p50: ns_of(words[n - 7]),
                p99: ns_of(words[n - 6]),
                p999: ns_of(words[n - 5]),
                max: ns_of(words[n - 4]),
                sla: words[n - 2].to_owned(),
            }
        })
        .collect()
}

/// The key `top` shows for a reference row, built from the scenario's own names.
fn key(s: &StageStats) -> String {
    // The family's total, and the name total of REQ (only ever used with labels).
    let totals = [stats_scenario::FAMILY, stats_scenario::REQ];
    if totals.contains(&s.stage) && s.labels.is_empty() {
        return format!("Σ {}", s.stage);
    }
    let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    match labels.is_empty() {
        true => s.stage.to_owned(),
        false => format!("{}{{{}}}", s.stage, labels.join(",")),
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

#[test]
fn once_prints_what_get_all_stats_says_to_the_nanosecond() {
    let _serial = serial();
    let (scenario, server) = serve_scenario();
    let url = format!("http://{}", server.local_addr());
    for window in [Window::S1, Window::S5, Window::S60, Window::Cumulative] {
        let out = top(&["--url", &url, "--once", "--window", &window.to_string()]);
        let frame = text(&out.stdout);
        assert!(out.status.success(), "{window}: {}", text(&out.stderr));
        let reference = laptime::get_all_stats(window);
        let served: Vec<StageStats> = scenario.handle.snapshot().all(window).cloned().collect();
        assert_eq!(reference, served, "the frozen clock keeps the figures");
        let printed = rows(&frame);
        assert_eq!(printed.len(), reference.len(), "{frame}");
        for (p, s) in printed.iter().zip(&reference) {
            assert_eq!(p.key, key(s), "{frame}");
            let figures = (p.count, p.p50, p.p99, p.p999, p.max);
            let expected = (s.count, ns(s.p50), ns(s.p99), ns(s.p999), ns(s.max));
            assert_eq!(figures, expected, "{} in {window}:\n{frame}", p.key);
            let sla = if s.stage == stats_scenario::SLOW {
                "critical"
            } else {
                "ok"
            };
            assert_eq!(p.sla, sla, "{}", p.key);
        }
        assert!(frame.contains(&format!("window {window}")), "{frame}");
        let trips = format!("{} {}", stats_scenario::REASON, stats_scenario::TRIPS);
        assert!(frame.contains(&trips), "{frame}");
        let slowest = scenario.family.top(
            &scenario.handle.snapshot(),
            window,
            laptime::Rank::Quantile(0.99),
            5,
        );
        let family_line = format!(
            "family {} (3 series, 0 overflowed): slowest p99 pair=CCC {}.{:03} µs",
            stats_scenario::FAMILY,
            ns(slowest[0].p99) / 1000,
            ns(slowest[0].p99) % 1000
        );
        assert!(frame.contains(&family_line), "{family_line}\n{frame}");
        let slow_max = laptime::get_stats(stats_scenario::SLOW, Window::S1)
            .unwrap()
            .max;
        let sla_line = format!(
            "sla critical: {} max over 1s: {}.{:03} µs > {}.000 µs",
            stats_scenario::SLOW,
            ns(slow_max) / 1000,
            ns(slow_max) % 1000,
            ns(stats_scenario::THRESHOLD) / 1000
        );
        assert!(frame.contains(&sla_line), "{sla_line}\n{frame}");
    }
}

#[test]
fn json_passes_the_document_through_unchanged() {
    let _serial = serial();
    let (_scenario, server) = serve_scenario();
    let url = format!("http://{}", server.local_addr());
    let out = top(&["--url", &url, "--json", "--window", "5s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut conn = std::net::TcpStream::connect(server.local_addr()).unwrap();
    conn.write_all(b"GET /stats?window=5s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(text(&out.stdout), format!("{body}\n"));
    // A window the process does not keep: its reason, exit 2.
    let out = top(&["--url", &url, "--once", "--window", "2s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("answered 400: bad /stats query: window 2s is not kept"));
}

/// What a fake server sends on each connection: bytes, or `None` for nothing at all.
type Answer = fn() -> Option<&'static [u8]>;

/// A loopback listener whose every connection gets `answer(request)` (then closed), or nothing
/// at all while `answer` returns `None` (the connection is held open until the test ends).
fn fake_server(answer: Answer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            match answer() {
                Some(bytes) => drop(conn.write_all(bytes)),
                None => held.push(conn),
            }
        }
    });
    addr
}

#[test]
fn garbage_silence_and_absence_are_named_and_never_hang() {
    let cases: [(Answer, &str); 4] = [
        (
            || Some(b"\x00\x01 garbage\r\n\r\n"),
            "answered something that is not HTTP",
        ),
        (
            || Some(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            "not a /stats document",
        ),
        (
            || Some(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"version\"" as &[u8]),
            "not a /stats document",
        ),
        (|| None, "no answer in time"),
    ];
    for (answer, said) in cases {
        let addr = fake_server(answer);
        let url = format!("http://{addr}");
        let out = top(&["--url", &url, "--once", "--timeout-ms", "300"]);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(
            text(&out.stderr).contains(said),
            "{said}: {}",
            text(&out.stderr)
        );
    }
    // Nobody listens: the port of a listener just closed.
    let gone = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = top(&["--url", &format!("http://{gone}"), "--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        text(&out.stderr)
    );
}
