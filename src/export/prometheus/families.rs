//! The collector registered in the registry, and the metric families it renders from what the
//! aggregator last published.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use ::prometheus::core::{Collector as PromCollector, Desc};
use ::prometheus::proto::{self, MetricFamily, MetricType};

use super::buckets::StageFigures;
use super::encode::{
    HistFamily, HistSeries, SeriesLabels, counter_metric, family, gauge_metric, histogram_metric,
    pair,
};
use super::{
    Config, Core, LabelCache, MetricNames, Owners, Published, RESERVED_LABELS, Unit, text,
};
use crate::export::ExportError;
use crate::stage::Stage;
use crate::stats::{Snapshot, StageStats, Window};

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
        desc(n.family_series(), FAMILY_SERIES_HELP, &["family"])?;
        desc(n.family_series_max(), FAMILY_SERIES_MAX_HELP, &["family"])?;
        desc(n.family_overflowed(), FAMILY_OVERFLOWED_HELP, &["family"])?;
        for (name, m) in &n.health {
            desc(name, m.help, &[])?;
        }
        Ok(Self { core, descs })
    }
}

const STAGE_HIST_HELP: &str = "Stage durations since the collector started, cumulative (labelled stages have their own family).";
const WINDOW_QUANTILE_HELP: &str = "Percentile of a stage's durations over one sliding window of this process (not aggregatable: use the histogram across instances); +Inf when saturated (past the histogram's highest trackable value).";
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
const LABELLED_HIST_HELP: &str =
    "Durations of a labelled stage since the collector started, cumulative.";
const FAMILY_SERIES_HELP: &str = "Series a family holds (its overflow series aside).";
const FAMILY_SERIES_MAX_HELP: &str =
    "A family's cap on series: past it, calls go to its series whose every label is __overflow__.";
const FAMILY_OVERFLOWED_HELP: &str = "Calls sent to a family's overflow series: past its cap or the process's, or with label values laptime cannot carry.";
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
    /// Every family of one scrape, from what the aggregator last published: the per-stage
    /// families stage by stage, then guard trips and health. Families without series are left out.
    fn families(&self) -> Vec<MetricFamily> {
        let Some(p) = self.state.load_full() else {
            return Vec::new();
        };
        let c = &self.config;
        let owners = self.family_owners(&p);
        let gauge_names = self.gauge_names.lock().clone();
        let windows: Vec<Window> = p
            .snapshot
            .windows
            .iter()
            .copied()
            .filter(|w| *w != Window::Cumulative)
            .collect();
        let mut series = StageSeries::default();
        let mut homes = Homes::default();
        let mut cache = self.series_labels.lock();
        for f in p.stages.iter() {
            let Some(s) = StageScrape::new(c, f, &p.snapshot) else {
                continue;
            };
            let stage = s.stage();
            // A family's series: its histogram and deadline misses, by its labels. The family
            // total: the accounting and window percentiles for the family as a whole, but no
            // histogram (the backend sums the series'). Thousands of series then cost one
            // histogram each, not a dozen families each.
            let is_total = stage.is_family_total();
            let is_series = !is_total && stage.family().is_some();
            if !is_total {
                let home = histogram_home(c, &s, &owners, &gauge_names, &mut homes);
                let labels = series_labels(&mut cache, &s, home.1);
                series.add_histogram(home.0, labels, &s);
                series.add_misses(&s);
                series.add_corrected(&s, c.unit);
            }
            if !is_series {
                series.add_accounting(&s);
                if c.window_quantiles {
                    series.add_window_quantiles(&s, &p.snapshot, &windows, c.unit);
                }
            }
        }
        let mut out = series.into_families(&c.names, c.unit);
        out.extend(family_figures(c));
        out.push(guard_trips(c, &p.snapshot));
        out.extend(health(c, &p));
        out.retain(|f| !f.get_metric().is_empty());
        out
    }
}

impl Core {
    /// [`family_owners`], worked out again only when the published stages are not the ones it
    /// was last worked out from. Stages are never removed and each collector publishes every
    /// stage registered before it, so as many stages, up to the same highest id, are the same
    /// stages. At 20 000 series, reading every stage's name and labels each scrape was a tenth
    /// of a render under load (two cache misses a stage).
    fn family_owners(&self, p: &Published) -> Arc<Owners> {
        let key = (
            p.stages.iter().count(),
            p.stages.iter().last().map(|f| f.raw.stage.id()),
        );
        let mut cached = self.owners.lock();
        match &*cached {
            Some((k, owners)) if *k == key => owners.clone(),
            _ => {
                let owners = Arc::new(family_owners(&self.config, p));
                *cached = Some((key, owners.clone()));
                owners
            }
        }
    }
}

/// Who owns each labelled stage's own family name: when two stages map to one name, the one with
/// the lower id, decided over every stage (idle ones too), so the owner never changes between
/// scrapes.
fn family_owners(c: &Config, p: &Published) -> Owners {
    let mut owners = HashMap::new();
    // A family's thousands of series share one name: its family name is worked out once.
    let mut seen = HashSet::new();
    for f in p.stages.iter() {
        let stage = f.raw.stage;
        if !stage.labels().is_empty() && seen.insert(stage.name()) {
            let own = MetricNames::own_family(&c.namespace, c.unit, stage.name());
            owners.entry(own).or_insert(stage.name());
        }
    }
    owners
}

/// The family a stage's histogram goes in, and whether that is its own: a labelled stage's own
/// family when the stage owns the name and neither the export nor an application gauge uses it,
/// else the shared `stage_duration` family (with a `stage` label).
fn histogram_home(
    c: &Config,
    s: &StageScrape<'_>,
    owners: &HashMap<String, &'static str>,
    gauge_names: &HashSet<String>,
    homes: &mut Homes,
) -> (Arc<str>, bool) {
    let stage = s.stage();
    if !stage.labels().is_empty() {
        let home = homes.get(stage.name(), || {
            let own = MetricNames::own_family(&c.namespace, c.unit, stage.name());
            let owner = owners.get(&own).copied().unwrap_or(stage.name());
            let taken = c.names.fixed().any(|f| *f == own) || gauge_names.contains(&own);
            (owner == stage.name() && !taken).then(|| own.into())
        });
        if let Some(own) = home {
            return (own, true);
        }
    }
    (c.names.stage_duration().into(), false)
}

/// Where each labelled name's histograms go in one scrape, decided once per name: a family's
/// series all go where its first one goes.
#[derive(Default)]
struct Homes {
    by_name: HashMap<&'static str, Option<Arc<str>>>,
    /// The last name asked for: a family's series come one after another (ids in creation
    /// order), so most lookups are this one and need no hashing of the name.
    last: Option<(&'static str, Option<Arc<str>>)>,
}

impl Homes {
    fn get(
        &mut self,
        name: &'static str,
        decide: impl FnOnce() -> Option<Arc<str>>,
    ) -> Option<Arc<str>> {
        if let Some((last, home)) = &self.last
            && std::ptr::eq(*last, name)
        {
            return home.clone();
        }
        let home = self.by_name.entry(name).or_insert_with(decide).clone();
        self.last = Some((name, home.clone()));
        home
    }
}

/// The labels of a stage's histogram series: in its own family, its own labels and the const
/// ones; in `stage_duration`, the `stage` label first. Kept per stage id across scrapes (a
/// stage's labels never change; where its histogram goes may, when an application gauge takes
/// its family's name).
fn series_labels(cache: &mut LabelCache, s: &StageScrape<'_>, own_home: bool) -> Arc<SeriesLabels> {
    let id = s.stage().id() as usize;
    if let Some(Some((own, labels))) = cache.get(id)
        && *own == own_home
    {
        return labels.clone();
    }
    let labels = SeriesLabels::new(match own_home {
        true => {
            let mut labels = s.own_labels();
            labels.extend(s.const_pairs.iter().cloned());
            labels
        }
        false => s.with_stage(&[]),
    });
    if cache.len() <= id {
        cache.resize(id + 1, None);
    }
    cache[id] = Some((own_home, labels.clone()));
    labels
}

/// One stage as a scrape sees it: the figures its sink published, and its cumulative statistics
/// from the snapshot of the same cycle.
struct StageScrape<'a> {
    figures: &'a StageFigures,
    snapshot: &'a Snapshot,
    /// Looked up when first needed: a family's series rarely need it, and at 20 000 series the
    /// lookups were cache misses a render paid for nothing.
    cumulative: OnceCell<Option<&'a StageStats>>,
    config: &'a Config,
    const_pairs: &'a [proto::LabelPair],
}

impl<'a> StageScrape<'a> {
    /// Every stage the process registered, recorded into or not: a series exported at zero
    /// before its first record is what lets `rate()` count that record (a series that first
    /// appears with counts in it has no earlier sample to subtract). Register stages at start
    /// (`Stage::new`, `stage!`) to have them from the first scrape. The exception, `None`: a
    /// family's overflow series (every label `__overflow__`) before anything went to it, which
    /// every family registers at its declaration and most never use.
    fn new(c: &'a Config, figures: &'a StageFigures, snap: &'a Snapshot) -> Option<Self> {
        let stage = figures.raw.stage;
        let scrape = Self {
            figures,
            snapshot: snap,
            cumulative: OnceCell::new(),
            config: c,
            const_pairs: &c.const_pairs,
        };
        let e = &figures.raw;
        let idle = e.count == 0
            && e.misses == 0
            && e.dropped == 0
            && e.sampled_out == 0
            && e.cancelled == 0
            && scrape.cumulative().is_none_or(|s| s.in_rings == 0);
        if idle && stage.family().is_some_and(|f| f.overflow() == stage) {
            return None;
        }
        Some(scrape)
    }

    /// The stage's cumulative statistics in the snapshot of the same cycle.
    fn cumulative(&self) -> Option<&'a StageStats> {
        *(self.cumulative).get_or_init(|| self.snapshot.stats(self.stage(), Window::Cumulative))
    }

    fn stage(&self) -> Stage {
        self.figures.raw.stage
    }

    /// The stage's static labels, a name the export uses itself (or a const label's) exported
    /// as `exported_<name>`. Built when asked: a family's series find theirs in the exporter's
    /// cache ([`series_labels`]).
    fn own_labels(&self) -> Vec<proto::LabelPair> {
        let c = self.config;
        (self.stage().labels().iter())
            .map(|(k, v)| {
                if c.const_labels.iter().any(|(ck, _)| ck == k) || RESERVED_LABELS.contains(k) {
                    pair(&format!("exported_{k}"), v)
                } else {
                    pair(k, v)
                }
            })
            .collect()
    }

    /// The labels of a per-stage series: `stage`, the stage's own, `extra`, the const labels.
    fn with_stage(&self, extra: &[proto::LabelPair]) -> Vec<proto::LabelPair> {
        let own = self.own_labels();
        let mut l = Vec::with_capacity(2 + own.len() + self.const_pairs.len());
        l.push(pair("stage", self.stage().name()));
        l.extend(own);
        l.extend(extra.iter().cloned());
        l.extend(self.const_pairs.iter().cloned());
        l
    }
}

/// The per-stage series of one scrape, one list per family, in stage order.
#[derive(Default)]
struct StageSeries {
    /// By family name: the shared `stage_duration` family and the labelled stages' own.
    hists: BTreeMap<Arc<str>, Vec<HistSeries>>,
    corrected_hists: Vec<HistSeries>,
    quantiles: Vec<proto::Metric>,
    corrected_quantiles: Vec<proto::Metric>,
    intervals: Vec<proto::Metric>,
    synthesized: Vec<proto::Metric>,
    misses: Vec<proto::Metric>,
    dropped: Vec<proto::Metric>,
    sampled_out: Vec<proto::Metric>,
    cancelled: Vec<proto::Metric>,
    produced: Vec<proto::Metric>,
    in_rings: Vec<proto::Metric>,
    unwound: Vec<proto::Metric>,
}

impl StageSeries {
    /// The stage's cumulative histogram, in `family` (see [`histogram_home`]).
    fn add_histogram(&mut self, family: Arc<str>, labels: Arc<SeriesLabels>, s: &StageScrape<'_>) {
        let series = HistSeries {
            labels,
            export: s.figures.raw.clone(),
            exemplars: s.figures.exemplars.clone(),
        };
        self.hists.entry(family).or_default().push(series);
    }

    /// Deadline misses, for a stage with a deadline or a miss.
    fn add_misses(&mut self, s: &StageScrape<'_>) {
        let e = &s.figures.raw;
        if s.stage().deadline().is_some() || e.misses > 0 {
            self.misses
                .push(counter_metric(s.with_stage(&[]), e.misses as f64));
        }
    }

    /// Drops, sampling, cancellations and the stage's side of the accounting identity.
    fn add_accounting(&mut self, s: &StageScrape<'_>) {
        let e = &s.figures.raw;
        let labels = s.with_stage(&[]);
        self.dropped
            .push(counter_metric(labels.clone(), e.dropped as f64));
        self.sampled_out
            .push(counter_metric(labels.clone(), e.sampled_out as f64));
        self.cancelled
            .push(counter_metric(labels.clone(), e.cancelled as f64));
        // From the snapshot published in the same cycle as the histogram:
        // produced = _count + dropped + cancelled + in rings.
        let (made, in_rings, unwound) = s
            .cumulative()
            .map_or((0, 0, 0), |c| (c.produced, c.in_rings, c.unwound));
        self.produced
            .push(counter_metric(labels.clone(), made as f64));
        self.in_rings
            .push(gauge_metric(labels.clone(), in_rings as f64));
        self.unwound.push(counter_metric(labels, unwound as f64));
    }

    /// The coordinated-omission figures, only for a stage that has them: absent, not zero,
    /// otherwise.
    fn add_corrected(&mut self, s: &StageScrape<'_>, unit: Unit) {
        // The sink exports corrected buckets exactly for the stages whose cycle view had the
        // corrected pair, the view the snapshot's corrected figures came from: a stage without
        // them has no corrected statistics either, and needs no snapshot lookup.
        debug_assert!(
            s.figures.corrected.is_some() || s.cumulative().is_none_or(|c| c.corrected.is_none()),
            "corrected statistics without corrected buckets"
        );
        let Some(export) = &s.figures.corrected else {
            return;
        };
        self.corrected_hists.push(HistSeries {
            labels: SeriesLabels::new(s.with_stage(&[])),
            export: export.clone(),
            exemplars: None,
        });
        if let Some(co) = s.cumulative().and_then(|c| c.corrected.as_ref()) {
            let ns = u64::try_from(co.expected_interval.as_nanos()).unwrap_or(u64::MAX);
            self.intervals
                .push(gauge_metric(s.with_stage(&[]), unit.of_ns(ns)));
            self.synthesized
                .push(counter_metric(s.with_stage(&[]), co.synthesized as f64));
        }
    }

    /// The exported quantiles of every sliding window with values: the raw ones, and the
    /// corrected ones where the window has corrected values.
    fn add_window_quantiles(
        &mut self,
        s: &StageScrape<'_>,
        snap: &Snapshot,
        windows: &[Window],
        unit: Unit,
    ) {
        for &w in windows {
            let Some(stats) = snap.stats(s.stage(), w).filter(|st| st.count > 0) else {
                continue;
            };
            let window = pair("window", &w.to_string());
            // A saturated percentile is only a floor: +Inf, as histogram_quantile gives for a
            // quantile in the +Inf bucket, rather than the range's top shown as a value.
            let raw = |q| {
                (!stats.is_saturated(q))
                    .then(|| stats.quantile(q))
                    .flatten()
            };
            quantile_gauges(&mut self.quantiles, raw, s, &window, unit);
            if let Some(co) = stats.corrected.as_ref().filter(|co| co.count > 0) {
                let corrected = |q| (!co.is_saturated(q)).then(|| co.quantile(q)).flatten();
                quantile_gauges(&mut self.corrected_quantiles, corrected, s, &window, unit);
            }
        }
    }

    /// The families, in the order the export writes them. The histograms go to the text writer
    /// when a text render is gathering on this thread ([`text::offer`]), else into protobuf.
    fn into_families(self, n: &MetricNames, unit: Unit) -> Vec<MetricFamily> {
        let mut hists: Vec<_> = self
            .hists
            .into_iter()
            .map(|(name, series)| {
                let help = if &*name == n.stage_duration() {
                    STAGE_HIST_HELP
                } else {
                    LABELLED_HIST_HELP
                };
                HistFamily {
                    name: name.to_string(),
                    help,
                    unit,
                    series,
                }
            })
            .collect();
        hists.push(HistFamily {
            name: n.stage_duration_corrected().to_owned(),
            help: CORRECTED_HIST_HELP,
            unit,
            series: self.corrected_hists,
        });
        let mut out: Vec<MetricFamily> = text::offer(hists)
            .unwrap_or_default()
            .into_iter()
            .map(|f| {
                let metrics = f
                    .series
                    .into_iter()
                    .map(|s| histogram_metric(s.labels.pairs.clone(), &s.export, unit))
                    .collect();
                family(&f.name, f.help, MetricType::HISTOGRAM, metrics)
            })
            .collect();
        let (gauge, counter) = (MetricType::GAUGE, MetricType::COUNTER);
        let per_stage = [
            (
                n.window_quantile(),
                WINDOW_QUANTILE_HELP,
                gauge,
                self.quantiles,
            ),
            (
                n.window_quantile_corrected(),
                CORRECTED_QUANTILE_HELP,
                gauge,
                self.corrected_quantiles,
            ),
            (
                n.expected_interval(),
                EXPECTED_INTERVAL_HELP,
                gauge,
                self.intervals,
            ),
            (n.synthesized(), SYNTHESIZED_HELP, counter, self.synthesized),
            (n.deadline_miss(), DEADLINE_MISS_HELP, counter, self.misses),
            (n.dropped(), DROPPED_HELP, counter, self.dropped),
            (n.sampled_out(), SAMPLED_OUT_HELP, counter, self.sampled_out),
            (n.cancelled(), CANCELLED_HELP, counter, self.cancelled),
            (n.produced(), PRODUCED_HELP, counter, self.produced),
            (n.in_rings(), IN_RINGS_HELP, gauge, self.in_rings),
            (n.unwound(), UNWOUND_HELP, counter, self.unwound),
        ];
        out.extend(
            per_stage
                .into_iter()
                .map(|(name, help, ty, metrics)| family(name, help, ty, metrics)),
        );
        out
    }
}

/// One gauge per exported quantile of one window, in the unit; a quantile without a value (a
/// saturated one) is +Inf.
fn quantile_gauges(
    out: &mut Vec<proto::Metric>,
    quantile: impl Fn(f64) -> Option<Duration>,
    s: &StageScrape<'_>,
    window: &proto::LabelPair,
    unit: Unit,
) {
    for (q, label) in WINDOW_QUANTILES {
        let value = quantile(q).map_or(f64::INFINITY, |v| {
            unit.of_ns(u64::try_from(v.as_nanos()).unwrap_or(u64::MAX))
        });
        let l = s.with_stage(&[window.clone(), pair("percentile", label)]);
        out.push(gauge_metric(l, value));
    }
}

/// Per family: its series, its cap and the calls its overflow series took.
fn family_figures(c: &Config) -> [MetricFamily; 3] {
    let families = crate::Family::all();
    let by_family = |value: &dyn Fn(crate::Family) -> f64, counter: bool| {
        families
            .iter()
            .map(|f| {
                let mut l = vec![pair("family", f.name())];
                l.extend(c.const_pairs.iter().cloned());
                if counter {
                    counter_metric(l, value(*f))
                } else {
                    gauge_metric(l, value(*f))
                }
            })
            .collect()
    };
    let n = &c.names;
    [
        family(
            n.family_series(),
            FAMILY_SERIES_HELP,
            MetricType::GAUGE,
            by_family(&|f| f.len() as f64, false),
        ),
        family(
            n.family_series_max(),
            FAMILY_SERIES_MAX_HELP,
            MetricType::GAUGE,
            by_family(&|f| f.max_series() as f64, false),
        ),
        family(
            n.family_overflowed(),
            FAMILY_OVERFLOWED_HELP,
            MetricType::COUNTER,
            by_family(&|f| f.overflowed() as f64, true),
        ),
    ]
}

/// Guard trips by reason, over the cumulative window.
fn guard_trips(c: &Config, snap: &Snapshot) -> MetricFamily {
    let trips = snap
        .guard_trips
        .iter()
        .map(|g| {
            let mut l = vec![pair("reason", g.reason)];
            l.extend(c.const_pairs.iter().cloned());
            counter_metric(l, g.counts.last().copied().unwrap_or(0) as f64)
        })
        .collect();
    family(
        c.names.guard_trips(),
        GUARD_TRIPS_HELP,
        MetricType::COUNTER,
        trips,
    )
}

/// One family per health figure, with the const labels only.
fn health<'a>(c: &'a Config, p: &'a Published) -> impl Iterator<Item = MetricFamily> + 'a {
    c.names.health.iter().map(move |(name, m)| {
        let labels = c.const_pairs.clone();
        let value = (m.read)(p);
        let (ty, metric) = if m.counter {
            (MetricType::COUNTER, counter_metric(labels, value))
        } else {
            (MetricType::GAUGE, gauge_metric(labels, value))
        };
        family(name, m.help, ty, vec![metric])
    })
}
