//! [`MetricNames`]: every family name the export uses, and the health figures behind the
//! unlabelled gauges and counters.

use std::time::Duration;

#[cfg(doc)]
use super::PrometheusBuilder;
use super::{Published, Unit};

/// The metric family names the export uses, for a namespace and a unit: the one source of truth
/// for names, used by the exporter itself and by whatever writes queries against it (the
/// `laptime rules` generator of alert and recording rules and dashboards).
///
/// ```
/// use laptime::export::prometheus::{MetricNames, Unit};
///
/// let n = MetricNames::new("mm", Unit::Seconds);
/// assert_eq!(n.stage_duration(), "mm_stage_duration_seconds");
/// assert_eq!(n.labelled_stage("exchange_req"), "mm_exchange_req_seconds");
/// assert_eq!(n.health("aggregator_lag_seconds").as_deref(), Some("mm_aggregator_lag_seconds"));
/// assert_eq!(n.health("no_such_figure"), None);
/// assert_eq!(n.unit_seconds(), 1.0);
/// assert_eq!(MetricNames::new("mm", Unit::Milliseconds).unit_seconds(), 1e-3);
/// ```
#[derive(Debug, Clone)]
pub struct MetricNames {
    namespace: String,
    unit: Unit,
    stage_duration: String,
    window_quantile: String,
    deadline_miss: String,
    guard_trips: String,
    dropped: String,
    sampled_out: String,
    cancelled: String,
    produced: String,
    in_rings: String,
    unwound: String,
    stage_duration_corrected: String,
    window_quantile_corrected: String,
    expected_interval: String,
    synthesized: String,
    family_series: String,
    family_series_max: String,
    family_overflowed: String,
    pub(super) health: Vec<(String, HealthMetric)>,
}
/// One figure of [`crate::Health`] (or the exporter's own drain age).
#[derive(Debug, Clone, Copy)]
pub(super) struct HealthMetric {
    suffix: &'static str,
    pub(super) help: &'static str,
    pub(super) counter: bool,
    pub(super) read: fn(&Published) -> f64,
}

const HEALTH: [HealthMetric; 20] = [
    HealthMetric {
        suffix: "records_aggregated_total",
        help: "Records the aggregator took out of the rings (span ends, values, deadline starts).",
        counter: true,
        read: |p| p.snapshot.health.records as f64,
    },
    HealthMetric {
        suffix: "records_produced_total",
        help: "Records pushed into the rings plus records dropped (produced = aggregated + dropped + in rings).",
        counter: true,
        read: |p| p.snapshot.health.produced as f64,
    },
    HealthMetric {
        suffix: "records_in_rings",
        help: "Records waiting in the rings when the aggregator last published.",
        counter: false,
        read: |p| p.snapshot.health.in_rings as f64,
    },
    HealthMetric {
        suffix: "values_saturated_total",
        help: "Durations above the highest trackable value (recorded as that value in the quantiles).",
        counter: true,
        read: |p| p.snapshot.health.saturated as f64,
    },
    HealthMetric {
        suffix: "spans_clock_backwards_total",
        help: "Spans whose end tick read earlier than their start (a clock stepped back, or TSCs not synchronised across cores), recorded as 0 ns.",
        counter: true,
        read: |p| p.snapshot.health.backwards_spans as f64,
    },
    HealthMetric {
        suffix: "rejected_calls_total",
        help: "Calls naming a stage that could not be registered (invalid name or stage cap reached).",
        counter: true,
        read: |p| p.snapshot.health.rejected as f64,
    },
    HealthMetric {
        suffix: "aggregator_cycles_total",
        help: "Aggregation cycles run.",
        counter: true,
        read: |p| p.snapshot.health.cycles as f64,
    },
    HealthMetric {
        suffix: "aggregator_restarts_total",
        help: "Panics caught inside the aggregator (it carries on after each).",
        counter: true,
        read: |p| p.snapshot.health.aggregator_restarts as f64,
    },
    HealthMetric {
        suffix: "callback_panics_total",
        help: "Panics caught inside SLA callbacks.",
        counter: true,
        read: |p| p.snapshot.health.callback_panics as f64,
    },
    HealthMetric {
        suffix: "spans_abandoned_total",
        help: "Deadline-watched spans given up on in flight (their end never arrived).",
        counter: true,
        read: |p| p.snapshot.health.abandoned as f64,
    },
    HealthMetric {
        suffix: "aggregator_lag_seconds",
        help: "Age of the oldest record drained in the last cycle.",
        counter: false,
        read: |p| p.snapshot.health.lag.as_secs_f64(),
    },
    HealthMetric {
        suffix: "aggregator_last_cycle_seconds",
        help: "Time the aggregator's previous cycle took.",
        counter: false,
        read: |p| p.snapshot.health.last_cycle.as_secs_f64(),
    },
    HealthMetric {
        suffix: "aggregator_last_drain_age_seconds",
        help: "Time since the aggregator last drained the rings and published, at scrape time.",
        counter: false,
        read: |p| p.at.elapsed().as_secs_f64(),
    },
    HealthMetric {
        suffix: "sampling_rate",
        help: "The global sampling rate in force, in [0, 1].",
        counter: false,
        read: |p| p.snapshot.health.sampling_rate,
    },
    HealthMetric {
        suffix: "adaptive_sampling_engaged",
        help: "1 while adaptive sampling holds the rate down, else 0.",
        counter: false,
        read: |p| f64::from(u8::from(p.snapshot.health.adaptive_engaged)),
    },
    HealthMetric {
        suffix: "enabled",
        help: "1 while recording is globally enabled, else 0.",
        counter: false,
        read: |p| f64::from(u8::from(p.snapshot.health.enabled)),
    },
    HealthMetric {
        suffix: "ring_high_water_records",
        help: "The fullest any ring was seen, in records, since the collector started.",
        counter: false,
        read: |p| p.snapshot.health.ring_high_water as f64,
    },
    HealthMetric {
        suffix: "ring_capacity_records",
        help: "Capacity of each thread's ring, in records.",
        counter: false,
        read: |p| p.snapshot.health.ring_capacity as f64,
    },
    HealthMetric {
        suffix: "spans_in_flight",
        help: "Deadline-watched spans started and not yet ended.",
        counter: false,
        read: |p| p.snapshot.health.in_flight as f64,
    },
    HealthMetric {
        suffix: "aggregator_memory_bytes",
        help: "Heap bytes held by the aggregator's latency histograms.",
        counter: false,
        read: |p| p.snapshot.health.histogram_bytes as f64,
    },
];

impl MetricNames {
    /// The names for namespace `ns` (the builder's [`PrometheusBuilder::with_namespace`]) and
    /// `unit`. The namespace is not validated here; [`PrometheusBuilder::build`] does that.
    pub fn new(ns: &str, unit: Unit) -> Self {
        let u = unit.suffix();
        Self {
            namespace: ns.to_owned(),
            unit,
            stage_duration: format!("{ns}_stage_duration_{u}"),
            window_quantile: format!("{ns}_stage_window_quantile_{u}"),
            deadline_miss: format!("{ns}_deadline_miss_total"),
            guard_trips: format!("{ns}_guard_trips_total"),
            dropped: format!("{ns}_records_dropped_total"),
            sampled_out: format!("{ns}_records_sampled_out_total"),
            cancelled: format!("{ns}_spans_cancelled_total"),
            produced: format!("{ns}_spans_produced_total"),
            in_rings: format!("{ns}_spans_in_rings"),
            unwound: format!("{ns}_spans_unwound_total"),
            stage_duration_corrected: format!("{ns}_stage_duration_corrected_{u}"),
            window_quantile_corrected: format!("{ns}_stage_window_quantile_corrected_{u}"),
            expected_interval: format!("{ns}_stage_expected_interval_{u}"),
            synthesized: format!("{ns}_stage_values_synthesized_total"),
            family_series: format!("{ns}_family_series"),
            family_series_max: format!("{ns}_family_series_max"),
            family_overflowed: format!("{ns}_family_overflowed_total"),
            health: HEALTH
                .iter()
                .map(|m| (format!("{ns}_{}", m.suffix), *m))
                .collect(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The unit of stage durations.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Seconds per exported unit (1 for seconds, 0.001 for milliseconds): a threshold `d` is
    /// `d.as_secs_f64() / unit_seconds()` in the exported unit.
    pub fn unit_seconds(&self) -> f64 {
        self.unit.ns_per_unit() / 1e9
    }

    /// A duration in the exported unit.
    pub fn in_unit(&self, d: Duration) -> f64 {
        d.as_nanos() as f64 / self.unit.ns_per_unit()
    }

    /// `<ns>_stage_duration_<unit>`: histogram of unlabelled stages, label `stage`.
    pub fn stage_duration(&self) -> &str {
        &self.stage_duration
    }

    /// `<ns>_stage_window_quantile_<unit>`: gauge, labels `stage`, `window`, `percentile`.
    pub fn window_quantile(&self) -> &str {
        &self.window_quantile
    }

    /// `<ns>_deadline_miss_total`: counter, label `stage`.
    pub fn deadline_miss(&self) -> &str {
        &self.deadline_miss
    }

    /// `<ns>_guard_trips_total`: counter, label `reason`.
    pub fn guard_trips(&self) -> &str {
        &self.guard_trips
    }

    /// `<ns>_records_dropped_total`: counter, label `stage`.
    pub fn dropped(&self) -> &str {
        &self.dropped
    }

    /// `<ns>_records_sampled_out_total`: counter, label `stage`.
    pub fn sampled_out(&self) -> &str {
        &self.sampled_out
    }

    /// `<ns>_spans_cancelled_total`: counter, label `stage`.
    pub fn cancelled(&self) -> &str {
        &self.cancelled
    }

    /// `<ns>_spans_produced_total`: counter, label `stage` ([`crate::StageStats::produced`] of
    /// the cumulative window). Per stage, `produced = <histogram>_count + dropped + cancelled +`
    /// [`in_rings`](Self::in_rings).
    pub fn produced(&self) -> &str {
        &self.produced
    }

    /// `<ns>_spans_in_rings`: gauge, label `stage` ([`crate::StageStats::in_rings`]).
    pub fn in_rings(&self) -> &str {
        &self.in_rings
    }

    /// `<ns>_spans_unwound_total`: counter, label `stage` ([`crate::StageStats::unwound`]).
    pub fn unwound(&self) -> &str {
        &self.unwound
    }

    /// `<ns>_stage_duration_corrected_<unit>`: histogram of every stage with an expected
    /// interval, coordinated-omission corrected, label `stage` (and the stage's own labels).
    pub fn stage_duration_corrected(&self) -> &str {
        &self.stage_duration_corrected
    }

    /// `<ns>_stage_window_quantile_corrected_<unit>`: gauge, labels `stage`, `window`,
    /// `percentile`, from [`crate::StageStats::corrected`].
    pub fn window_quantile_corrected(&self) -> &str {
        &self.window_quantile_corrected
    }

    /// `<ns>_stage_expected_interval_<unit>`: gauge, label `stage`, for corrected stages.
    pub fn expected_interval(&self) -> &str {
        &self.expected_interval
    }

    /// `<ns>_stage_values_synthesized_total`: counter, label `stage`, for corrected stages
    /// ([`crate::CorrectedStats::synthesized`]).
    pub fn synthesized(&self) -> &str {
        &self.synthesized
    }

    /// `<ns>_family_series`: gauge, label `family`: the series a [`crate::Family`] holds (its
    /// overflow series aside).
    pub fn family_series(&self) -> &str {
        &self.family_series
    }

    /// `<ns>_family_series_max`: gauge, label `family`: the family's cap on series.
    pub fn family_series_max(&self) -> &str {
        &self.family_series_max
    }

    /// `<ns>_family_overflowed_total`: counter, label `family`: calls sent to the family's
    /// overflow series (past a cap, or with label values laptime cannot carry).
    pub fn family_overflowed(&self) -> &str {
        &self.family_overflowed
    }

    /// The own histogram family of a stage with static labels, e.g. `mm_exchange_req_seconds`
    /// for stage `exchange_req` (characters a metric name cannot hold become `_`). A stage whose
    /// family name collides goes under [`stage_duration`](Self::stage_duration) instead (see the
    /// module documentation).
    pub fn labelled_stage(&self, stage: &str) -> String {
        Self::own_family(&self.namespace, self.unit, stage)
    }

    /// The full name of one of the library's health figures, by its suffix: counters
    /// `records_aggregated_total`, `records_produced_total`, `values_saturated_total`,
    /// `spans_clock_backwards_total`, `rejected_calls_total`, `aggregator_cycles_total`, `aggregator_restarts_total`,
    /// `callback_panics_total`, `spans_abandoned_total`; gauges `records_in_rings`,
    /// `aggregator_lag_seconds`, `aggregator_last_cycle_seconds`,
    /// `aggregator_last_drain_age_seconds`, `sampling_rate`, `adaptive_sampling_engaged`,
    /// `enabled`, `ring_high_water_records`, `ring_capacity_records`, `spans_in_flight`,
    /// `aggregator_memory_bytes`. `None` for any other suffix.
    pub fn health(&self, suffix: &str) -> Option<String> {
        self.health
            .iter()
            .find(|(_, m)| m.suffix == suffix)
            .map(|(n, _)| n.clone())
    }

    /// The health suffixes [`health`](Self::health) knows, in export order.
    pub fn health_suffixes() -> impl Iterator<Item = &'static str> {
        HEALTH.iter().map(|m| m.suffix)
    }

    pub(super) fn fixed(&self) -> impl Iterator<Item = &String> {
        [
            &self.stage_duration,
            &self.window_quantile,
            &self.in_rings,
            &self.stage_duration_corrected,
            &self.window_quantile_corrected,
            &self.expected_interval,
            &self.family_series,
            &self.family_series_max,
            &self.family_overflowed,
        ]
        .into_iter()
        .chain(self.stage_counters())
        .chain(self.health.iter().map(|(n, _)| n))
    }

    /// The per-stage counters, each counting from the collector's install.
    fn stage_counters(&self) -> [&String; 8] {
        [
            &self.deadline_miss,
            &self.guard_trips,
            &self.dropped,
            &self.sampled_out,
            &self.cancelled,
            &self.produced,
            &self.unwound,
            &self.synthesized,
        ]
    }

    /// Whether the export's counter `name` counts from the collector's install (OpenMetrics'
    /// `_created`): every one but the family overflow and rejected-call counts, which the
    /// process keeps across collectors.
    pub(super) fn since_install(&self, name: &str) -> bool {
        self.stage_counters().into_iter().any(|n| n == name)
            || (self.health.iter())
                .any(|(n, m)| n == name && m.counter && m.suffix != "rejected_calls_total")
    }

    /// The family of a labelled stage: the namespace, the stage name with the characters a
    /// metric name cannot hold replaced by `_`, and the unit.
    pub(super) fn own_family(ns: &str, unit: Unit, stage: &str) -> String {
        let name: String = stage
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{ns}_{name}_{}", unit.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::prometheus::{is_label_name, is_metric_name};

    #[test]
    fn names_follow_the_rules() {
        assert!(is_metric_name("mm"));
        assert!(is_metric_name("_x1"));
        assert!(!is_metric_name(""));
        assert!(!is_metric_name("1x"));
        assert!(!is_metric_name("a:b"));
        assert!(!is_metric_name("a-b"));
        assert!(is_label_name("env"));
        assert!(!is_label_name("__env"));
        assert_eq!(
            MetricNames::own_family("mm", Unit::Milliseconds, "exchange.req/v2-x"),
            "mm_exchange_req_v2_x_ms"
        );
    }
}
