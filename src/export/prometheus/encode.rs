//! Building the prometheus crate's protobuf values: a metric of each kind, a family, a label pair.

use std::sync::Arc;

use ::prometheus::proto::{self, MetricFamily, MetricType};

use super::Unit;
use super::buckets::{Exemplars, StageExport};

/// One series of a histogram family before it is written: its labels and its published counts.
pub(super) struct HistSeries {
    pub(super) labels: Arc<SeriesLabels>,
    pub(super) export: Arc<StageExport>,
    /// Golden-trace exemplars by bucket (raw histograms only).
    pub(super) exemplars: Option<Exemplars>,
}

/// A histogram series' labels, and the same as the text formats write them (`name="value",…`,
/// values escaped). A stage's labels never change, so the exporter keeps these across scrapes
/// (`Core::series_labels`): at 20 000 series, building and escaping them again for every scrape
/// was a fifth of a render.
pub(super) struct SeriesLabels {
    pub(super) pairs: Vec<proto::LabelPair>,
    pub(super) text: String,
}

impl SeriesLabels {
    pub(super) fn new(pairs: Vec<proto::LabelPair>) -> Arc<Self> {
        let mut text = String::new();
        super::text::label_text(&mut text, &pairs);
        Arc::new(Self { pairs, text })
    }
}

/// A histogram family before it is written: name, help, the unit its exporter writes, and series.
pub(super) struct HistFamily {
    pub(super) name: String,
    pub(super) help: &'static str,
    /// Its own exporter's: two exporters may share a registry.
    pub(super) unit: Unit,
    pub(super) series: Vec<HistSeries>,
}

/// The order a gather puts a family's series in: by label values, in label order (the prometheus
/// crate's registry sorts this way; the text writer must match it).
pub(super) fn label_order(a: &[proto::LabelPair], b: &[proto::LabelPair]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.value().cmp(y.value()))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    })
}

pub(super) fn histogram_metric(
    labels: Vec<proto::LabelPair>,
    e: &StageExport,
    unit: Unit,
) -> proto::Metric {
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(e.bounds.len + 1);
    for (bound, count) in e.bounds.as_slice().iter().zip(e.counts.iter()) {
        cumulative += count;
        let mut b = proto::Bucket::default();
        b.set_upper_bound(unit.of_ns(*bound));
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    // `+Inf` is written by the encoder, as `_count` (an explicit infinite bound would be printed
    // as `inf`); `StageBuckets::export` asserts that our counts add up to it.
    let mut h = proto::Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(e.count);
    h.set_sample_sum(e.sum_ns as f64 / unit.ns_per_unit());
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_histogram(h);
    m
}

pub(super) fn counter_metric(labels: Vec<proto::LabelPair>, value: f64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_counter(c);
    m
}

pub(super) fn gauge_metric(labels: Vec<proto::LabelPair>, value: f64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_gauge(g);
    m
}

pub(super) fn family(
    name: &str,
    help: &str,
    ty: MetricType,
    metrics: Vec<proto::Metric>,
) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(ty);
    f.set_metric(metrics);
    f
}

pub(super) fn pair(name: &str, value: &str) -> proto::LabelPair {
    let mut p = proto::LabelPair::default();
    p.set_name(name.to_owned());
    p.set_value(value.to_owned());
    p
}
