//! A batch as OTLP's `ExportMetricsServiceRequest`, in the official definitions
//! (`opentelemetry-proto`'s prost types), on the export thread.

use std::time::SystemTime;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exponential_histogram_data_point, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::sink::{Batch, HistogramPoint, StagePoint};

/// The metrics every stage is exported as.
pub const DURATION_METRIC: &str = "laptime.stage.duration";
/// The coordinated-omission-corrected durations of a stage with an expected interval: its values
/// and those the spans a stall held back would have measured.
pub const CORRECTED_DURATION_METRIC: &str = "laptime.stage.duration.corrected";
/// Spans that missed their deadline, per stage (a monotonic cumulative sum).
pub const DEADLINE_MISSES_METRIC: &str = "laptime.stage.deadline_misses";
/// Records lost to a full ring, per stage (a monotonic cumulative sum).
pub const DROPPED_METRIC: &str = "laptime.stage.dropped";

const NS_PER_SECOND: f64 = 1e9;

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn key_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// `stage` = the stage's name, then its labels.
fn attributes(point: &StagePoint) -> Vec<KeyValue> {
    let stage = point.stage;
    std::iter::once(key_value("stage", stage.name()))
        .chain(stage.labels().iter().map(|(k, v)| key_value(k, v)))
        .collect()
}

/// The histogram point: OpenTelemetry numbers a bucket one lower than laptime's exponential
/// counts do (its bucket `k` is `(base^k, base^(k+1)]`, theirs `i` is `(base^(i−1), base^i]`).
fn histogram_point(
    attributes: Vec<KeyValue>,
    p: &HistogramPoint,
    start: u64,
    time: u64,
) -> ExponentialHistogramDataPoint {
    let seconds = |ns: u64| ns as f64 / NS_PER_SECOND;
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: p.count,
        sum: Some(p.sum_ns as f64 / NS_PER_SECOND),
        scale: i32::from(p.buckets.scale),
        zero_count: p.buckets.zero,
        // Durations are never negative: no negative buckets; the zero bucket holds exact zeros.
        positive: Some(exponential_histogram_data_point::Buckets {
            offset: p.buckets.offset - 1,
            bucket_counts: p.buckets.counts.to_vec(),
        }),
        zero_threshold: 0.0,
        min: p.min_max_ns.map(|(min, _)| seconds(min)),
        max: p.min_max_ns.map(|(_, max)| seconds(max)),
        ..Default::default()
    }
}

fn counter_point(p: &StagePoint, value: u64, start: u64, time: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(p),
        start_time_unix_nano: start,
        time_unix_nano: time,
        // A count past i64::MAX is not reachable in practice; saturate rather than wrap.
        value: Some(number_data_point::Value::AsInt(
            i64::try_from(value).unwrap_or(i64::MAX),
        )),
        ..Default::default()
    }
}

fn sum_metric(name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// An exponential histogram metric of the stages' `pick`ed histograms that have values.
fn histogram_metric(
    batch: &Batch,
    name: &str,
    description: &str,
    pick: fn(&StagePoint) -> Option<&HistogramPoint>,
) -> Metric {
    let (start, time) = (unix_nanos(batch.start), unix_nanos(batch.time));
    let data_points = (batch.points.iter())
        .filter_map(|p| Some((p, pick(p).filter(|h| h.count > 0)?)))
        .map(|(p, h)| histogram_point(attributes(p), h, start, time))
        .collect();
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: "s".to_owned(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

fn metrics(batch: &Batch) -> Vec<Metric> {
    let (start, time) = (unix_nanos(batch.start), unix_nanos(batch.time));
    let mut metrics = vec![histogram_metric(
        batch,
        DURATION_METRIC,
        "Duration of each recorded span or value of a laptime stage",
        |p| Some(&p.raw),
    )];
    if batch.points.iter().any(|p| p.corrected.is_some()) {
        metrics.push(histogram_metric(
            batch,
            CORRECTED_DURATION_METRIC,
            "Durations of a laptime stage corrected for coordinated omission",
            |p| p.corrected.as_ref(),
        ));
    }
    let counter = |pick: fn(&StagePoint) -> u64| {
        (batch.points.iter())
            .map(|p| counter_point(p, pick(p), start, time))
            .collect()
    };
    metrics.extend([
        sum_metric(
            DEADLINE_MISSES_METRIC,
            "{span}",
            "Spans of a laptime stage that missed their deadline",
            counter(|p| p.deadline_misses),
        ),
        sum_metric(
            DROPPED_METRIC,
            "{record}",
            "Records of a laptime stage lost to a full ring",
            counter(|p| p.dropped),
        ),
    ]);
    metrics
}

/// The request for `batch`, under `resource`'s attributes.
pub(crate) fn request(batch: &Batch, resource: &[KeyValue]) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.to_vec(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "laptime".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics: metrics(batch),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
