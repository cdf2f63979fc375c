//! Native histograms in the protobuf exposition, decoded with Prometheus' own definitions
//! (`io.prometheus.client`, as prometheus-client generates them) and checked bucket by bucket
//! against the values recorded, counted by an independent reference: client_golang's way of
//! finding a value's bucket (`frexp` of the value in seconds, then a search of the schema's
//! bounds), in floating point, where the exporter uses integer tables.
//!
//! Also: a bucket budget lowers the schema and loses no count; `/metrics` answers protobuf to a
//! request that asks for it (Prometheus' own `Accept` header) and text to one that does not.
#![cfg(all(feature = "prometheus-native", feature = "http"))]

#[path = "common/exponential_reference.rs"]
mod exponential_reference;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use laptime::export::http::MetricsServer;
use laptime::export::prometheus::{NativeHistograms, PrometheusExporter};
use laptime::{Collector, Stage};
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;
use prost::Message;

use exponential_reference::{reference_buckets, reference_index, values};

/// What Debian's Prometheus 2.42 sends with `--enable-feature=native-histograms`.
const PROMETHEUS_NATIVE_ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// What it sends without the flag.
const PROMETHEUS_TEXT_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The native buckets of `h`: index to count, empty ones left out.
fn native_buckets(h: &pb::Histogram) -> BTreeMap<i32, u64> {
    let mut out = BTreeMap::new();
    let (mut index, mut count, mut deltas) = (0i32, 0i64, h.positive_delta.iter());
    for (k, span) in h.positive_span.iter().enumerate() {
        index += span.offset;
        for _ in 0..span.length {
            count += deltas.next().expect("a delta for every bucket of a span");
            if count > 0 {
                out.insert(index, count as u64);
            }
            index += 1;
        }
        assert!(k > 0 || span.length > 0 || h.positive_span.len() == 1);
    }
    assert!(deltas.next().is_none(), "no delta outside the spans");
    out
}

fn decode(mut body: &[u8]) -> Vec<pb::MetricFamily> {
    let mut families = Vec::new();
    while !body.is_empty() {
        families.push(pb::MetricFamily::decode_length_delimited(&mut body).expect("a family"));
    }
    families
}

/// The histogram of stage `stage` in family `family`.
fn histogram<'a>(families: &'a [pb::MetricFamily], family: &str, stage: &str) -> &'a pb::Histogram {
    let f = families
        .iter()
        .find(|f| f.name == family)
        .unwrap_or_else(|| panic!("no family {family}"));
    assert_eq!(f.r#type, pb::MetricType::Histogram as i32);
    f.metric
        .iter()
        .find(|m| {
            m.label
                .iter()
                .any(|l| l.name == "stage" && l.value == stage)
        })
        .and_then(|m| m.histogram.as_ref())
        .unwrap_or_else(|| panic!("no series of {stage} in {family}"))
}

/// `GET /metrics` with `accept` (or none); the content type and the body's bytes.
fn scrape(addr: SocketAddr, accept: Option<&str>) -> (String, Vec<u8>) {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: test\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    conn.read_to_end(&mut bytes).unwrap();
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap()
        .to_owned();
    (content_type, bytes[end + 4..].to_vec())
}

#[test]
fn native_buckets_hold_exactly_the_values_recorded() {
    let started = SystemTime::now();
    let exporter = PrometheusExporter::builder()
        .with_native_histograms(NativeHistograms::default())
        .build()
        .unwrap();
    // A budget of 16 for values spanning 1 ns to 3 s (31 doublings): lowered to schema -1.
    let tight = PrometheusExporter::builder()
        .with_namespace("tight")
        .with_native_histograms(NativeHistograms::default().with_max_buckets(16))
        .build()
        .unwrap();
    let _collector = Collector::builder()
        .with_ring_capacity(1 << 17)
        .with_prometheus(exporter.clone())
        .with_prometheus(tight.clone())
        .install()
        .expect("the test's only collector");
    let stage = Stage::new("exact").unwrap();
    let values = values();
    for &v in &values {
        laptime::record(stage, Duration::from_nanos(v));
    }
    assert!(laptime::flush());
    assert_eq!(laptime::health().unwrap().dropped, 0);

    let families = decode(&exporter.render_protobuf().unwrap());
    let h = histogram(&families, "laptime_stage_duration_seconds", "exact");
    assert_eq!(
        h.schema,
        i32::from(NativeHistograms::DEFAULT_SCHEMA),
        "1 ns to 3 s, 31 doublings, fit the default budget at the default schema"
    );
    assert_eq!(h.sample_count, values.len() as u64);
    let sum_s = values.iter().map(|&v| u128::from(v)).sum::<u128>() as f64 / 1e9;
    assert!(
        (h.sample_sum - sum_s).abs() <= sum_s * 1e-12,
        "{} {sum_s}",
        h.sample_sum
    );
    assert_eq!(
        h.zero_count,
        values.iter().filter(|&&v| v == 0).count() as u64
    );
    assert!(
        h.zero_threshold > 0.0 && h.zero_threshold < 1e-9,
        "holds 0 ns only"
    );
    assert_eq!(native_buckets(h), reference_buckets(&values, h.schema, 1e9));
    // The classic buckets travel beside the native ones, cumulative up to the count.
    let mut sorted = values.clone();
    sorted.sort_unstable();
    for b in &h.bucket {
        let at_or_below = sorted.partition_point(|&v| v as f64 / 1e9 <= b.upper_bound);
        assert_eq!(
            b.cumulative_count, at_or_below as u64,
            "le {}",
            b.upper_bound
        );
    }
    let start = h.start_timestamp.expect("the collector's install time");
    let start = SystemTime::UNIX_EPOCH + Duration::new(start.seconds as u64, start.nanos as u32);
    assert!(start >= started - Duration::from_secs(1) && start <= SystemTime::now());

    let families = decode(&tight.render_protobuf().unwrap());
    let h = histogram(&families, "tight_stage_duration_seconds", "exact");
    assert_eq!(
        h.schema, -1,
        "the widest schema whose run of buckets fits 16"
    );
    let buckets = native_buckets(h);
    assert!(buckets.keys().last().unwrap() - buckets.keys().next().unwrap() < 16);
    assert_eq!(buckets, reference_buckets(&values, -1, 1e9));
    assert_eq!(
        buckets.values().sum::<u64>() + h.zero_count,
        values.len() as u64
    );

    // Content negotiation on the endpoint.
    let server = MetricsServer::builder()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .start(exporter)
        .unwrap();
    let addr = server.local_addr();
    let (ty, body) = scrape(addr, Some(PROMETHEUS_NATIVE_ACCEPT));
    assert_eq!(
        ty,
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    let served = decode(&body);
    let h = histogram(&served, "laptime_stage_duration_seconds", "exact");
    assert_eq!(native_buckets(h), reference_buckets(&values, h.schema, 1e9));
    for accept in [Some(PROMETHEUS_TEXT_ACCEPT), Some("text/plain"), None] {
        let (ty, body) = scrape(addr, accept);
        assert!(
            ty.starts_with("text/plain; version=0.0.4")
                || ty.starts_with("application/openmetrics-text"),
            "{accept:?}: {ty}"
        );
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(&format!(
            "laptime_stage_duration_seconds_count{{stage=\"exact\"}} {}",
            values.len()
        )));
    }
}

/// Milliseconds put the bounds at powers of two of a millisecond: the same values land in other
/// buckets, which the reference finds in the same unit.
#[test]
fn native_buckets_follow_the_unit() {
    let exporter = PrometheusExporter::builder()
        .with_unit(laptime::export::prometheus::Unit::Milliseconds)
        .with_native_histograms(NativeHistograms::default().with_schema(8))
        .build()
        .unwrap();
    let _collector = Collector::builder()
        .with_ring_capacity(1 << 17)
        .with_prometheus(exporter.clone())
        .install()
        .expect("the test's only collector");
    let stage = Stage::new("in_ms").unwrap();
    let values = values();
    for &v in &values {
        laptime::record(stage, Duration::from_nanos(v));
    }
    assert!(laptime::flush());
    let families = decode(&exporter.render_protobuf().unwrap());
    let h = histogram(&families, "laptime_stage_duration_ms", "in_ms");
    // 1 ns to 3 s is 31 doublings: 7 936 buckets at schema 8, past the budget of 2 048; the
    // exporter keeps the highest schema whose run of buckets fits.
    let positive: Vec<f64> = values
        .iter()
        .filter(|&&v| v > 0)
        .map(|&v| v as f64 / 1e6)
        .collect();
    let (low, high) = positive
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
    let fits = (-4..=8)
        .rev()
        .find(|&s| reference_index(high, s) - reference_index(low, s) < 2048)
        .unwrap();
    assert_eq!(h.schema, fits);
    assert!(fits < 8);
    assert_eq!(native_buckets(h), reference_buckets(&values, fits, 1e6));
}

#[test]
fn bad_native_settings_are_refused_with_what_to_change() {
    let err = |n: NativeHistograms| {
        PrometheusExporter::builder()
            .with_native_histograms(n)
            .build()
            .unwrap_err()
            .to_string()
    };
    assert!(err(NativeHistograms::default().with_schema(9)).contains("use -4 to 8"));
    assert!(err(NativeHistograms::default().with_schema(-5)).contains("use -4 to 8"));
    assert!(err(NativeHistograms::default().with_max_buckets(7)).contains("use 8 or more"));
    let with_registry = PrometheusExporter::builder()
        .with_registry(laptime::export::prometheus::Registry::new())
        .with_native_histograms(NativeHistograms::default())
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        with_registry.contains("registry the exporter owns"),
        "{with_registry}"
    );
}

/// A collector installed again (after the first stopped) counts from zero, and says so with a
/// later start: what a scraper's `rate()` needs to tell a restart from a drop in the counts.
#[test]
fn a_new_collector_starts_the_counts_again_from_a_later_start() {
    let exporter = PrometheusExporter::builder()
        .with_namespace("again")
        .with_native_histograms(NativeHistograms::default())
        .build()
        .unwrap();
    let stage = Stage::new("again").unwrap();
    let mut seen = Vec::new();
    for values in [3u64, 1] {
        let collector = Collector::builder()
            .with_prometheus(exporter.clone())
            .install()
            .expect("one collector at a time");
        for v in 0..values {
            laptime::record(stage, Duration::from_micros(10 + v));
        }
        assert!(collector.flush());
        let families = decode(&exporter.render_protobuf().unwrap());
        let h = histogram(&families, "again_stage_duration_seconds", "again");
        let start = h.start_timestamp.expect("a start");
        seen.push((
            h.sample_count,
            native_buckets(h).values().sum::<u64>(),
            start,
        ));
        drop(collector);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!((seen[0].0, seen[0].1), (3, 3));
    assert_eq!(
        (seen[1].0, seen[1].1),
        (1, 1),
        "the second collector counts from zero"
    );
    let at = |t: &prost_types::Timestamp| (t.seconds, t.nanos);
    assert!(at(&seen[1].2) > at(&seen[0].2), "{:?}", seen);
}
