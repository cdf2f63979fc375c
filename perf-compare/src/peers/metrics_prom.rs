//! The metrics facade with metrics-exporter-prometheus as its recorder (default features off:
//! no HTTP listener, no push gateway, no tokio), the way its docs show it without a runtime:
//! `PrometheusBuilder::install_recorder` once, and a thread that calls `run_upkeep` at the
//! builder's default 5 s upkeep interval (the crate leaves that to the user in this mode).
//!
//! Measured code times itself with `std::time::Instant` (metrics has no clock) and records the
//! `Duration` (in seconds, as metrics does) through `histogram!` handles created once, after the
//! recorder is installed. The tick's stages share their boundaries: 5 clock reads for 4 stages.
//!
//! The report is the exporter's own text rendering. With no buckets configured every histogram
//! is a summary: a rolling DDSketch (relative error 0.0001, 3 × 20 s of data) rendered at the
//! exporter's default quantiles 0, 0.5, 0.9, 0.95, 0.99, 0.999 and 1 — p50, p99 and p99.9 are
//! among them; `_count` is every sample since the start.
//!
//! Those quantiles are not always right: the sketch (sketches-ddsketch 0.3, through metrics-util)
//! folds low bins too eagerly while it grows, a known upstream bug (readysettech/readyset#251,
//! traced there to rust-sketches-ddsketch PR #5). Values recorded in rising order show it most: a
//! 1 µs → 1 ms ramp renders p50 ≈ 0.98 ms. The accuracy rows measure it as it is.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Histogram, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::peer::{Peer, Reported};

pub static PEER: Peer = Peer {
    name: "metrics+prometheus-exporter",
    setup,
    empty_span,
    tick,
    spin_span,
    record_value,
    flush,
    report,
};

const METRIC: &str = "perf_compare_stage_seconds";

struct Handles {
    exporter: PrometheusHandle,
    span: Histogram,
    spin: Histogram,
    value: Histogram,
    stages: [Histogram; 4],
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

fn setup() {
    HANDLES.get_or_init(|| {
        let exporter = PrometheusBuilder::new()
            .install_recorder()
            .unwrap_or_else(|e| panic!("metrics-exporter-prometheus recorder: {e}"));
        let upkeep = exporter.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("spawn the upkeep thread");
        Handles {
            exporter,
            span: histogram!(METRIC, "stage" => "span"),
            spin: histogram!(METRIC, "stage" => "spin"),
            value: histogram!(METRIC, "stage" => "value"),
            stages: [
                histogram!(METRIC, "stage" => "fetch"),
                histogram!(METRIC, "stage" => "spread"),
                histogram!(METRIC, "stage" => "guards"),
                histogram!(METRIC, "stage" => "emit"),
            ],
        }
    });
}

fn handles() -> &'static Handles {
    HANDLES.get().expect("setup ran")
}

fn empty_span() {
    let start = Instant::now();
    handles().span.record(start.elapsed());
}

fn tick(work: fn(usize)) {
    let h = handles();
    let mut last = Instant::now();
    for (i, stage) in h.stages.iter().enumerate() {
        work(i);
        let now = Instant::now();
        stage.record(now - last);
        last = now;
    }
}

fn spin_span(ns: u64) {
    let start = Instant::now();
    crate::peer::spin(ns);
    handles().spin.record(start.elapsed());
}

fn record_value(ns: u64) -> bool {
    handles().value.record(Duration::from_nanos(ns));
    true
}

/// Upkeep drains the histograms' pending samples into their summaries (rendering does too).
fn flush() {
    handles().exporter.run_upkeep();
}

fn report(stage: &str) -> Reported {
    let text = handles().exporter.render();
    let (mut count, mut p50, mut p99, mut p999) = (None, None, None, None);
    let stage_label = format!("stage=\"{stage}\"");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        if !labels
            .split(',')
            .any(|l| l.trim_end_matches('}') == stage_label)
        {
            continue;
        }
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let ns = Some((v * 1e9).round() as u64);
        if name == format!("{METRIC}_count") {
            count = Some(v as u64);
        } else if name == METRIC {
            match labels
                .split(',')
                .find_map(|l| l.strip_prefix("quantile=\""))
            {
                Some(q) if q.starts_with("0.5\"") => p50 = ns,
                Some(q) if q.starts_with("0.99\"") => p99 = ns,
                Some(q) if q.starts_with("0.999\"") => p999 = ns,
                _ => {}
            }
        }
    }
    Reported {
        // Not rendered at all: nothing was recorded for this stage.
        count: Some(count.unwrap_or(0)),
        p50_ns: p50,
        p99_ns: p99,
        p999_ns: p999,
    }
}
