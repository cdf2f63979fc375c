//! The collector registered in the registry, and the metric families it renders from what the
//! aggregator last published.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use ::prometheus::core::{Collector as PromCollector, Desc};
use ::prometheus::proto::{self, MetricFamily, MetricType};

use super::encode::{counter_metric, family, gauge_metric, histogram_metric, pair};
use super::{Core, MetricNames, RESERVED_LABELS};
use crate::export::ExportError;
use crate::stats::Window;

/// The quantiles exported per sliding window, with the `percentile` label value each carries.
const WINDOW_QUANTILES: [(f64, &str); 4] =
    [(0.5, "50"), (0.95, "95"), (0.99, "99"), (0.999, "99.9")];

/// The collector registered in the registry: renders the last published figures.
pub(super) struct StageCollector {
    core: Arc<Core>,
    pub(super) descs: Vec<Desc>,
}

impl StageCollector {
    pub(super) fn new(core: Arc<Core>) -> Result<Self, ExportError> {
        let c = &core.config;
        let labels: HashMap<String, String> = c.const_labels.iter().cloned().collect();
        let mut descs = Vec::new();
        let mut desc = |name: &str, help: &str, vars: &[&str]| -> Result<(), ExportError> {
            let d = Desc::new(
                name.to_owned(),
                help.to_owned(),
                vars.iter().map(|v| (*v).to_owned()).collect(),
                labels.clone(),
            )
            .map_err(|e| ExportError::Registry {
                message: e.to_string(),
            })?;
            descs.push(d);
            Ok(())
        };
        let n = &c.names;
        desc(n.stage_duration(), STAGE_HIST_HELP, &["stage"])?;
        if c.window_quantiles {
            desc(
                n.window_quantile(),
                WINDOW_QUANTILE_HELP,
                &["stage", "window", "percentile"],
            )?;
        }
        desc(n.deadline_miss(), DEADLINE_MISS_HELP, &["stage"])?;
        desc(n.guard_trips(), GUARD_TRIPS_HELP, &["reason"])?;
        desc(n.dropped(), DROPPED_HELP, &["stage"])?;
        desc(n.sampled_out(), SAMPLED_OUT_HELP, &["stage"])?;
        desc(n.cancelled(), CANCELLED_HELP, &["stage"])?;
        desc(n.produced(), PRODUCED_HELP, &["stage"])?;
        desc(n.in_rings(), IN_RINGS_HELP, &["stage"])?;
        desc(n.unwound(), UNWOUND_HELP, &["stage"])?;
        desc(
            n.stage_duration_corrected(),
            CORRECTED_HIST_HELP,
            &["stage"],
        )?;
        desc(n.expected_interval(), EXPECTED_INTERVAL_HELP, &["stage"])?;
        desc(n.synthesized(), SYNTHESIZED_HELP, &["stage"])?;
        if c.window_quantiles {
            desc(
                n.window_quantile_corrected(),
                CORRECTED_QUANTILE_HELP,
                &["stage", "window", "percentile"],
            )?;
        }
        for (name, m) in &n.health {
            desc(name, m.help, &[])?;
        }
        Ok(Self { core, descs })
    }
}

const STAGE_HIST_HELP: &str = "Stage durations since the collector started, cumulative (labelled stages have their own family).";
const WINDOW_QUANTILE_HELP: &str = "Percentile of a stage's durations over one sliding window of this process (not aggregatable: use the histogram across instances).";
const DEADLINE_MISS_HELP: &str =
    "Spans that ran past their stage's deadline, counted once each (while stuck or when they end).";
const GUARD_TRIPS_HELP: &str = "Guard trips by reason, since the collector started.";
const DROPPED_HELP: &str = "Records lost to full rings, by stage.";
const SAMPLED_OUT_HELP: &str = "Calls skipped by sampling, by stage (counted exactly).";
const CANCELLED_HELP: &str = "Spans abandoned before they ended (cancelled guards, dropped tokens and async futures), by stage.";
const PRODUCED_HELP: &str = "Span outcomes (ends, values, cancellations) that passed sampling, by stage; produced = the stage's histogram _count + records_dropped_total + spans_cancelled_total + spans_in_rings.";
const IN_RINGS_HELP: &str = "A stage's span outcomes pushed into rings and not yet aggregated at the last publish (the in-flight part of spans_produced_total).";
const UNWOUND_HELP: &str = "Spans that ended while their thread was unwinding from a panic (almost always a guard the panic dropped), by stage (recorded as durations too, so also in the histogram's _count).";
const CORRECTED_HIST_HELP: &str = "Stage durations with coordinated-omission correction, cumulative: the raw durations plus, for each span at least twice the stage's expected interval, the latencies of the spans it held back (HdrHistogram's expected-interval rule). Only stages with an expected interval.";
const CORRECTED_QUANTILE_HELP: &str = "Percentile of a stage's coordinated-omission-corrected durations over one sliding window of this process (beside the raw stage_window_quantile; not aggregatable).";
const EXPECTED_INTERVAL_HELP: &str = "The interval a corrected stage's spans are expected to start at: the period of its coordinated-omission correction.";
const SYNTHESIZED_HELP: &str = "Values the coordinated-omission correction added for spans held back by a slower one, by stage (the corrected histogram's _count is the spans recorded since the correction was on plus these).";

impl PromCollector for StageCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A scrape must not take the host down; a bug here costs one scrape's stage families.
        catch_unwind(AssertUnwindSafe(|| self.core.families())).unwrap_or_default()
    }
}

impl Core {
    fn families(&self) -> Vec<MetricFamily> {
        let Some(p) = self.state.load_full() else {
            return Vec::new();
        };
        let c = &self.config;
        let n = &c.names;
        let unit = c.unit;
        let snap = &p.snapshot;
        let gauge_names = self.gauge_names.lock().clone();
        let taken = |name: &String| n.fixed().any(|f| f == name) || gauge_names.contains(name);

        let mut hists: BTreeMap<String, Vec<proto::Metric>> = BTreeMap::new();
        let mut owners: HashMap<String, &'static str> = HashMap::new();
        let (mut misses, mut dropped, mut sampled, mut cancelled, mut quantiles) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut produced, mut waiting, mut unwound) = (Vec::new(), Vec::new(), Vec::new());
        let (mut corrected_hists, mut corrected_quantiles, mut intervals, mut synthesized) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let windows: Vec<Window> = snap
            .windows
            .iter()
            .copied()
            .filter(|w| *w != Window::Cumulative)
            .collect();

        // A family name two labelled stages map to belongs to the one with the lower id, decided
        // over every stage (idle ones too), so which stage owns it never changes between scrapes.
        for f in p.stages.iter().flatten() {
            if !f.raw.stage.labels().is_empty() {
                let own = MetricNames::own_family(&c.namespace, unit, f.raw.stage.name());
                owners.entry(own).or_insert(f.raw.stage.name());
            }
        }
        for f in p.stages.iter().flatten() {
            let e = &f.raw;
            let stage = e.stage;
            let deadline = stage.deadline();
            let cumulative = snap.stats(stage, Window::Cumulative);
            let in_rings = cumulative.map_or(0, |s| s.in_rings);
            let active = e.count > 0
                || e.misses > 0
                || e.dropped > 0
                || e.sampled_out > 0
                || e.cancelled > 0
                || in_rings > 0;
            if !active && deadline.is_none() {
                continue;
            }
            let own_labels: Vec<proto::LabelPair> = stage
                .labels()
                .iter()
                .map(|(k, v)| {
                    if c.const_labels.iter().any(|(ck, _)| ck == k) || RESERVED_LABELS.contains(k) {
                        pair(&format!("exported_{k}"), v)
                    } else {
                        pair(k, v)
                    }
                })
                .collect();
            let with_stage = |extra: &[proto::LabelPair]| {
                let mut l = Vec::with_capacity(2 + own_labels.len() + c.const_pairs.len());
                l.push(pair("stage", stage.name()));
                l.extend(own_labels.iter().cloned());
                l.extend(extra.iter().cloned());
                l.extend(c.const_pairs.iter().cloned());
                l
            };

            let mut family = n.stage_duration().to_owned();
            let mut labels = None;
            if !own_labels.is_empty() {
                let own = MetricNames::own_family(&c.namespace, unit, stage.name());
                let owner = *owners.entry(own.clone()).or_insert(stage.name());
                if owner == stage.name() && !taken(&own) {
                    family = own;
                    let mut l = own_labels.clone();
                    l.extend(c.const_pairs.iter().cloned());
                    labels = Some(l);
                }
            }
            let labels = labels.unwrap_or_else(|| with_stage(&[]));
            hists
                .entry(family)
                .or_default()
                .push(histogram_metric(labels, e, unit));

            if deadline.is_some() || e.misses > 0 {
                misses.push(counter_metric(with_stage(&[]), e.misses as f64));
            }
            dropped.push(counter_metric(with_stage(&[]), e.dropped as f64));
            sampled.push(counter_metric(with_stage(&[]), e.sampled_out as f64));
            cancelled.push(counter_metric(with_stage(&[]), e.cancelled as f64));
            // The stage's side of the accounting identity, from the snapshot published in the
            // same cycle as the histogram: produced = _count + dropped + cancelled + in rings.
            let (made, unwinds) = cumulative.map_or((0, 0), |s| (s.produced, s.unwound));
            produced.push(counter_metric(with_stage(&[]), made as f64));
            waiting.push(gauge_metric(with_stage(&[]), in_rings as f64));
            unwound.push(counter_metric(with_stage(&[]), unwinds as f64));

            // Corrected figures only for a stage that has them: absent, not zero, otherwise.
            if let Some(ce) = &f.corrected {
                corrected_hists.push(histogram_metric(with_stage(&[]), ce, unit));
            }
            if let Some(co) = cumulative.and_then(|s| s.corrected.as_ref()) {
                let ns = u64::try_from(co.expected_interval.as_nanos()).unwrap_or(u64::MAX);
                intervals.push(gauge_metric(with_stage(&[]), unit.of_ns(ns)));
                synthesized.push(counter_metric(with_stage(&[]), co.synthesized as f64));
            }

            if c.window_quantiles {
                for &w in &windows {
                    let Some(s) = snap.stats(stage, w).filter(|s| s.count > 0) else {
                        continue;
                    };
                    let window = pair("window", &w.to_string());
                    for (q, label) in WINDOW_QUANTILES {
                        let v = s.quantile(q).unwrap_or_default();
                        let ns = u64::try_from(v.as_nanos()).unwrap_or(u64::MAX);
                        let l = with_stage(&[window.clone(), pair("percentile", label)]);
                        quantiles.push(gauge_metric(l, unit.of_ns(ns)));
                    }
                    let Some(co) = s.corrected.as_ref().filter(|co| co.count > 0) else {
                        continue;
                    };
                    for (q, label) in WINDOW_QUANTILES {
                        let v = co.quantile(q).unwrap_or_default();
                        let ns = u64::try_from(v.as_nanos()).unwrap_or(u64::MAX);
                        let l = with_stage(&[window.clone(), pair("percentile", label)]);
                        corrected_quantiles.push(gauge_metric(l, unit.of_ns(ns)));
                    }
                }
            }
        }

        let mut out = Vec::new();
        for (name, metrics) in hists {
            let help = if name == n.stage_duration() {
                STAGE_HIST_HELP
            } else {
                "Durations of a labelled stage since the collector started, cumulative."
            };
            out.push(family(&name, help, MetricType::HISTOGRAM, metrics));
        }
        out.push(family(
            n.stage_duration_corrected(),
            CORRECTED_HIST_HELP,
            MetricType::HISTOGRAM,
            corrected_hists,
        ));
        out.push(family(
            n.window_quantile(),
            WINDOW_QUANTILE_HELP,
            MetricType::GAUGE,
            quantiles,
        ));
        out.push(family(
            n.window_quantile_corrected(),
            CORRECTED_QUANTILE_HELP,
            MetricType::GAUGE,
            corrected_quantiles,
        ));
        out.push(family(
            n.expected_interval(),
            EXPECTED_INTERVAL_HELP,
            MetricType::GAUGE,
            intervals,
        ));
        out.push(family(
            n.synthesized(),
            SYNTHESIZED_HELP,
            MetricType::COUNTER,
            synthesized,
        ));
        out.push(family(
            n.deadline_miss(),
            DEADLINE_MISS_HELP,
            MetricType::COUNTER,
            misses,
        ));
        out.push(family(
            n.dropped(),
            DROPPED_HELP,
            MetricType::COUNTER,
            dropped,
        ));
        out.push(family(
            n.sampled_out(),
            SAMPLED_OUT_HELP,
            MetricType::COUNTER,
            sampled,
        ));
        out.push(family(
            n.cancelled(),
            CANCELLED_HELP,
            MetricType::COUNTER,
            cancelled,
        ));
        out.push(family(
            n.produced(),
            PRODUCED_HELP,
            MetricType::COUNTER,
            produced,
        ));
        out.push(family(
            n.in_rings(),
            IN_RINGS_HELP,
            MetricType::GAUGE,
            waiting,
        ));
        out.push(family(
            n.unwound(),
            UNWOUND_HELP,
            MetricType::COUNTER,
            unwound,
        ));
        let trips = snap
            .guard_trips
            .iter()
            .map(|g| {
                let mut l = vec![pair("reason", g.reason)];
                l.extend(c.const_pairs.iter().cloned());
                counter_metric(l, g.counts.last().copied().unwrap_or(0) as f64)
            })
            .collect();
        out.push(family(
            n.guard_trips(),
            GUARD_TRIPS_HELP,
            MetricType::COUNTER,
            trips,
        ));
        for (name, m) in &n.health {
            let labels = c.const_pairs.clone();
            let value = (m.read)(&p);
            let (ty, metric) = if m.counter {
                (MetricType::COUNTER, counter_metric(labels, value))
            } else {
                (MetricType::GAUGE, gauge_metric(labels, value))
            };
            out.push(family(name, m.help, ty, vec![metric]));
        }
        out.retain(|f| !f.get_metric().is_empty());
        out
    }
}
