//! How stages are read from a file: flat mirrors of [`StageProfile`] and [`CorrectedProfile`],
//! field for field the format the module docs describe.
//!
//! Both write their [`DistributionProfile`] inline through serde's `flatten`, which serializes
//! byte for byte as the flat fields did. Reading through `flatten` would not do: serde buffers
//! the fields it cannot place, so a bad file's error loses the field's path
//! (`stages[2].p95_ns` becomes `stages[2]`) and an unknown field's message the list of the
//! fields expected. These mirrors keep those errors what they were; each converts into its
//! public type without a check (validation runs on the whole profile afterwards).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{CorrectedProfile, DistributionProfile, StageProfile};

/// [`StageProfile`] as its file holds it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StageWire {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    count: u64,
    calls: u64,
    min_ns: u64,
    max_ns: u64,
    sum_ns: u64,
    mean_ns: f64,
    p50_ns: u64,
    p90_ns: u64,
    p95_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    #[serde(default)]
    deadline_ns: Option<u64>,
    deadline_misses: u64,
    deadline_miss_pct: f64,
    dropped: u64,
    sampled_out: u64,
    cancelled: u64,
    saturated: u64,
    #[serde(default)]
    histogram: Option<String>,
    #[serde(default)]
    unwound: u64,
    #[serde(default)]
    in_rings: u64,
    #[serde(default)]
    corrected: Option<CorrectedProfile>,
}

/// [`CorrectedProfile`] as its file holds it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CorrectedWire {
    expected_interval_ns: u64,
    count: u64,
    synthesized: u64,
    truncated: u64,
    #[serde(default)]
    saturated: u64,
    min_ns: u64,
    max_ns: u64,
    sum_ns: u64,
    mean_ns: f64,
    p50_ns: u64,
    p90_ns: u64,
    p95_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    #[serde(default)]
    histogram: Option<String>,
}

impl From<StageWire> for StageProfile {
    fn from(w: StageWire) -> Self {
        StageProfile {
            name: w.name,
            labels: w.labels,
            count: w.count,
            calls: w.calls,
            distribution: DistributionProfile {
                min_ns: w.min_ns,
                max_ns: w.max_ns,
                sum_ns: w.sum_ns,
                mean_ns: w.mean_ns,
                p50_ns: w.p50_ns,
                p90_ns: w.p90_ns,
                p95_ns: w.p95_ns,
                p99_ns: w.p99_ns,
                p999_ns: w.p999_ns,
            },
            deadline_ns: w.deadline_ns,
            deadline_misses: w.deadline_misses,
            deadline_miss_pct: w.deadline_miss_pct,
            dropped: w.dropped,
            sampled_out: w.sampled_out,
            cancelled: w.cancelled,
            saturated: w.saturated,
            histogram: w.histogram,
            unwound: w.unwound,
            in_rings: w.in_rings,
            corrected: w.corrected,
        }
    }
}

impl From<CorrectedWire> for CorrectedProfile {
    fn from(w: CorrectedWire) -> Self {
        CorrectedProfile {
            expected_interval_ns: w.expected_interval_ns,
            count: w.count,
            synthesized: w.synthesized,
            truncated: w.truncated,
            saturated: w.saturated,
            distribution: DistributionProfile {
                min_ns: w.min_ns,
                max_ns: w.max_ns,
                sum_ns: w.sum_ns,
                mean_ns: w.mean_ns,
                p50_ns: w.p50_ns,
                p90_ns: w.p90_ns,
                p95_ns: w.p95_ns,
                p99_ns: w.p99_ns,
                p999_ns: w.p999_ns,
            },
            histogram: w.histogram,
        }
    }
}
