//! A small recorded scenario for the `/stats` tests (`tests/stats_endpoint.rs`, and the CLI's
//! `cli/tests/top_once.rs`, which includes this file with `#[path]`): a plain stage whose max
//! breaks a critical SLA rule, a labelled stage, a runtime-labelled family of three series whose
//! p99s are known in advance, and guard trips; plus an exposition that serves one fixed snapshot,
//! so a test compares what the endpoint says with exactly the snapshot it was built from.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use laptime::export::ExportError;
use laptime::export::http::Exposition;
use laptime::{Collector, CollectorHandle, Family, Metric, SlaRule, Snapshot, Stage, Window};

/// The stage whose 1 s max is over its critical threshold.
pub const SLOW: &str = "scenario_slow";
/// The labelled stage (no rule: its SLA state is `ok`).
pub const REQ: &str = "scenario_req";
pub const REQ_LABELS: &[(&str, &str)] = &[("verb", "post"), ("api", "batch")];
/// The family and its label.
pub const FAMILY: &str = "scenario_exec";
pub const PAIRS: [&str; 3] = ["AAA", "BBB", "CCC"];
/// The guard reason tripped, and how often.
pub const REASON: &str = "scenario_guard";
pub const TRIPS: u64 = 3;
/// The SLA rule's threshold on the slow stage's max, and the slowest value recorded there.
pub const THRESHOLD: Duration = Duration::from_millis(1);
pub const SLOWEST: Duration = Duration::from_millis(2);

/// The recorded scenario; the collector stays installed while this lives.
pub struct Scenario {
    pub handle: CollectorHandle,
    pub family: Family,
    /// The family's series, in `PAIRS` order: series `i` records only `(i + 1) * 10 µs`.
    pub series: Vec<Stage>,
    pub req: Stage,
}

/// Installs a collector with the scenario's rule, records the scenario and flushes it.
pub fn record() -> Scenario {
    let handle = Collector::builder()
        .with_sla_rule(SlaRule::new(SLOW, Window::S1, Metric::Max).with_critical(THRESHOLD))
        .install()
        .unwrap_or_else(|e| panic!("install failed: {e}"));
    for us in [100, 200, 300] {
        laptime::record(SLOW, Duration::from_micros(us));
    }
    laptime::record(SLOW, SLOWEST);
    let req = Stage::with_labels(REQ, REQ_LABELS).unwrap();
    for us in 1..=50 {
        laptime::record(req, Duration::from_micros(us * 7));
    }
    let family = Family::new(FAMILY, &["pair"]).unwrap();
    let series: Vec<Stage> = PAIRS
        .iter()
        .map(|p| family.series(&[*p]).unwrap())
        .collect();
    for (i, s) in series.iter().enumerate() {
        for _ in 0..=i {
            laptime::record(*s, Duration::from_micros(10 * (i as u64 + 1)));
        }
    }
    for _ in 0..TRIPS {
        laptime::record_trip(REASON);
    }
    assert!(handle.flush(), "the collector did not flush");
    Scenario {
        handle,
        family,
        series,
        req,
    }
}

/// Serves one snapshot on `/stats` (none until set); `/metrics` is empty.
#[derive(Default)]
pub struct Served(pub Mutex<Option<Arc<Snapshot>>>);

impl Served {
    /// Serves `snapshot` from now on.
    pub fn set(&self, snapshot: Arc<Snapshot>) {
        *self.0.lock().unwrap() = Some(snapshot);
    }
}

impl Exposition for Served {
    fn metrics(&self) -> Result<String, ExportError> {
        Ok(String::new())
    }

    fn health(&self) -> Result<String, String> {
        Ok("ok\n".to_owned())
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.0.lock().unwrap().clone()
    }
}
