//! The protobuf exposition (`application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;
//! encoding=delimited`): each metric family as Prometheus' own `MetricFamily` message, prost's
//! encoding of the official definitions, each preceded by its length as a varint.
//!
//! Stage histograms carry their classic buckets and, when the exporter keeps them, their native
//! buckets side by side, with the time the collector was installed as their start. The other
//! collectors' families (counters, gauges, the process collector's) are converted from what the
//! prometheus crate gathers.

use std::time::SystemTime;

use ::prometheus::Registry;
use ::prometheus::proto::{self as crate_proto, MetricType};
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;
use prost::Message;

use super::Unit;
use super::buckets::{Exemplar, StageExport};
use super::encode::{HistFamily, label_order};
use super::native::spans;
use crate::exponential::ExponentialCounts;

/// The content type of this exposition.
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// The zero bucket's upper bound, in the exported unit: below a nanosecond in seconds or
/// milliseconds, so it holds exactly the values of 0 ns. Not 0: Prometheus 2.42 takes a
/// histogram with no observation and a zero threshold of 0 for a classic one.
const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39; // 2^-128, client_golang's default.

/// The whole registry, length-delimited `MetricFamily` messages in name order. A registry the
/// exporter does not own is gathered plainly (its prefix and common labels are the gather's to
/// add), so its stage histograms carry classic buckets only.
pub(super) fn render(registry: &Registry, owned: bool, created: Option<SystemTime>) -> Vec<u8> {
    let (others, ours) = if owned {
        super::text::gather_split(registry)
    } else {
        (registry.gather(), Vec::new())
    };
    let start = created.map(timestamp);
    let mut families: Vec<pb::MetricFamily> = others.iter().map(family).collect();
    families.extend(ours.into_iter().map(|f| histogram_family(f, start)));
    families.sort_by(|a, b| a.name.cmp(&b.name));
    let room = families.iter().map(|f| f.encoded_len() + 10).sum();
    let mut out = Vec::with_capacity(room);
    for f in &families {
        // Writing into a Vec that grows as needed cannot fail.
        let _ = f.encode_length_delimited(&mut out);
    }
    out
}

fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        // Below 10^9: fits.
        nanos: since.subsec_nanos() as i32,
    }
}

fn labels(pairs: &[crate_proto::LabelPair]) -> Vec<pb::LabelPair> {
    pairs
        .iter()
        .map(|p| pb::LabelPair {
            name: p.name().to_owned(),
            value: p.value().to_owned(),
        })
        .collect()
}

/// A family the prometheus crate gathered, as the official message.
fn family(f: &crate_proto::MetricFamily) -> pb::MetricFamily {
    let ty = match f.get_field_type() {
        MetricType::COUNTER => pb::MetricType::Counter,
        MetricType::GAUGE => pb::MetricType::Gauge,
        MetricType::SUMMARY => pb::MetricType::Summary,
        MetricType::UNTYPED => pb::MetricType::Untyped,
        MetricType::HISTOGRAM => pb::MetricType::Histogram,
    };
    pb::MetricFamily {
        name: f.name().to_owned(),
        help: f.help().to_owned(),
        r#type: ty as i32,
        metric: (f.get_metric().iter())
            .map(|m| metric(m, f.get_field_type()))
            .collect(),
        ..Default::default()
    }
}

/// One series of a family of type `ty`, its value read from the field that type uses.
fn metric(m: &crate_proto::Metric, ty: MetricType) -> pb::Metric {
    let mut out = pb::Metric {
        label: labels(m.get_label()),
        timestamp_ms: m.timestamp_ms(),
        ..Default::default()
    };
    match ty {
        MetricType::COUNTER => {
            out.counter = Some(pb::Counter {
                value: m.get_counter().get_value(),
                ..Default::default()
            });
        }
        MetricType::GAUGE => {
            out.gauge = Some(pb::Gauge {
                value: m.get_gauge().get_value(),
            })
        }
        // The crate marks the getter deprecated (protobuf-specific), yet still fills it in.
        #[allow(deprecated)]
        MetricType::UNTYPED => {
            out.untyped = Some(pb::Untyped {
                value: m.get_untyped().get_value(),
            })
        }
        MetricType::SUMMARY => {
            let s = m.get_summary();
            out.summary = Some(pb::Summary {
                sample_count: s.sample_count(),
                sample_sum: s.sample_sum(),
                quantile: (s.get_quantile().iter())
                    .map(|q| pb::Quantile {
                        quantile: q.quantile(),
                        value: q.value(),
                    })
                    .collect(),
                ..Default::default()
            });
        }
        MetricType::HISTOGRAM => {
            let h = m.get_histogram();
            out.histogram = Some(pb::Histogram {
                sample_count: h.get_sample_count(),
                sample_sum: h.get_sample_sum(),
                bucket: (h.get_bucket().iter())
                    .map(|b| pb::Bucket {
                        cumulative_count: b.cumulative_count(),
                        upper_bound: b.upper_bound(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            });
        }
    }
    out
}

/// One of the export's histogram families, each series with its classic and native buckets.
fn histogram_family(mut f: HistFamily, start: Option<prost_types::Timestamp>) -> pb::MetricFamily {
    f.series
        .sort_by(|a, b| label_order(&a.labels.pairs, &b.labels.pairs));
    pb::MetricFamily {
        name: f.name,
        help: f.help.to_owned(),
        r#type: pb::MetricType::Histogram as i32,
        metric: (f.series.iter())
            .map(|s| pb::Metric {
                label: labels(&s.labels.pairs),
                histogram: Some(histogram(
                    &s.export,
                    s.exemplars.as_deref().map(Vec::as_slice),
                    f.unit,
                    start,
                )),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A stage histogram with its classic buckets (each with its exemplar, if it has one: the one
/// of values above every bound has no bucket here, `+Inf` being implied by the count) and its
/// native ones.
pub(super) fn histogram(
    e: &StageExport,
    exemplars: Option<&[Option<Exemplar>]>,
    unit: Unit,
    start: Option<prost_types::Timestamp>,
) -> pb::Histogram {
    let mut cumulative = 0u64;
    let bucket = (e.bounds.as_slice().iter().zip(e.counts.iter()).enumerate())
        .map(|(i, (bound, n))| {
            cumulative += n;
            pb::Bucket {
                cumulative_count: cumulative,
                upper_bound: unit.of_ns(*bound),
                exemplar: exemplars
                    .and_then(|all| all.get(i)?.as_ref())
                    .map(|x| exemplar(x, unit)),
                ..Default::default()
            }
        })
        .collect();
    let mut h = pb::Histogram {
        sample_count: e.count,
        sample_sum: e.sum_ns as f64 / unit.ns_per_unit(),
        bucket,
        start_timestamp: start,
        ..Default::default()
    };
    if let Some(native) = &e.native {
        add_native(&mut h, native);
    }
    h
}

fn exemplar(x: &Exemplar, unit: Unit) -> pb::Exemplar {
    pb::Exemplar {
        label: vec![pb::LabelPair {
            name: "trace_id".to_owned(),
            value: format!("tick_{}", x.tick),
        }],
        value: unit.of_ns(x.value_ns),
        timestamp: Some(timestamp(x.at)),
    }
}

fn add_native(h: &mut pb::Histogram, native: &ExponentialCounts) {
    let (spans, deltas) = spans(native);
    h.schema = i32::from(native.scale);
    h.zero_threshold = ZERO_THRESHOLD;
    h.zero_count = native.zero;
    h.positive_span = spans
        .into_iter()
        .map(|(offset, length)| pb::BucketSpan { offset, length })
        .collect();
    if h.positive_span.is_empty() {
        // No observation yet: the no-op span that marks a native histogram.
        h.positive_span.push(pb::BucketSpan {
            offset: 0,
            length: 0,
        });
    }
    h.positive_delta = deltas;
}
