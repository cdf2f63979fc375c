//! hotpath with its profiling feature (`hotpath`) on, the way its docs show it: one guard built
//! with `HotpathGuardBuilder` and kept alive for the whole process (`build_with_shutdown(ZERO)`
//! hands it to hotpath's `hp-guard` thread until exit), `#[hotpath::measure]` on the measured
//! functions and `hotpath::measure_block!` around the tick's sequential stages.
//!
//! What it reports is read while the guard lives, the way hotpath's own TUI reads it: the
//! `/functions_timing` JSON of its metrics server (127.0.0.1, port 6770 or
//! `HOTPATH_METRICS_PORT`), parsed with hotpath's public `json::JsonFunctionsList` and
//! `parse_duration`. Its histograms are HDR with 3 significant digits, but the JSON prints
//! durations with 2 decimals ("12.34 µs", "1.23 ms"): exact below 1 µs, 10 ns steps below 1 ms,
//! 10 µs steps above. The guard's own report is never printed: the guard is not dropped before
//! the process exits.
//!
//! hotpath has no way to take a known value: `record_value` returns false.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use hotpath::json::JsonFunctionsList;

use crate::peer::{Peer, Reported};

pub static PEER: Peer = Peer {
    name: "hotpath",
    setup,
    empty_span,
    tick,
    spin_span,
    record_value,
    flush,
    report,
};

/// The guard's caller name, unique to this process: a metrics server of another process on the
/// same port (hotpath then skips starting its own) answers with its name, and is not read.
static CALLER: OnceLock<&'static str> = OnceLock::new();

fn setup() {
    CALLER.get_or_init(|| {
        let name: &'static str =
            Box::leak(format!("perf-compare-{}", std::process::id()).into_boxed_str());
        hotpath::HotpathGuardBuilder::new(name)
            .percentiles(&[50.0, 99.0, 99.9])
            .functions_limit(0)
            .build_with_shutdown(Duration::ZERO);
        name
    });
}

#[hotpath::measure(label = "span")]
fn measured_empty() {}

fn empty_span() {
    measured_empty();
}

fn tick(work: fn(usize)) {
    hotpath::measure_block!("fetch", work(0));
    hotpath::measure_block!("spread", work(1));
    hotpath::measure_block!("guards", work(2));
    hotpath::measure_block!("emit", work(3));
}

#[hotpath::measure(label = "spin")]
fn measured_spin(ns: u64) {
    crate::peer::spin(ns);
}

fn spin_span(ns: u64) {
    measured_spin(ns);
}

fn record_value(_ns: u64) -> bool {
    false
}

/// hotpath's worker sweeps the per-thread queues every 50 ms, and once more before answering a
/// query, at most 65 536 events per queue per sweep. Asking until two answers agree drains
/// everything that was recorded before the call. Each answer is an HTTP exchange and a JSON
/// document (about 95 allocations on this side each), which the process allocation count
/// includes.
fn flush() {
    let mut last = None;
    for _ in 0..200 {
        let Some(list) = functions() else {
            return; // unreadable: `report` says so with `None`
        };
        let total = Some(list.data.iter().map(|e| e.calls).sum::<u64>());
        if total == last {
            return;
        }
        last = total;
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn report(stage: &str) -> Reported {
    let Some(list) = functions() else {
        return Reported::default();
    };
    let Some(entry) = list.data.iter().find(|e| e.name == stage) else {
        // hotpath lists every name it saw: absent means nothing of it arrived.
        return Reported {
            count: Some(0),
            ..Reported::default()
        };
    };
    let pct = |key: &str| {
        entry
            .percentiles
            .get(key)
            .and_then(|v| hotpath::parse_duration(v))
    };
    Reported {
        count: Some(entry.calls),
        p50_ns: pct("p50"),
        p99_ns: pct("p99"),
        p999_ns: pct("p99.9"),
    }
}

/// The worker's current snapshot, or `None` when this process' metrics server cannot be read.
fn functions() -> Option<JsonFunctionsList> {
    let caller = *CALLER.get()?;
    let port = std::env::var("HOTPATH_METRICS_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(6770);
    // The server thread binds right after the guard is built: allow it a moment.
    for _ in 0..50 {
        match get(port, "/functions_timing") {
            Some(body) => {
                let list: JsonFunctionsList = serde_json::from_slice(&body).ok()?;
                return (list.caller_name == caller).then_some(list);
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    None
}

/// One HTTP/1.1 GET on loopback; the body of a 200 answer.
fn get(port: u16, path: &str) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..head_end]).ok()?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(answer[head_end + 4..].to_vec())
}
