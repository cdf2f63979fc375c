//! The exporter against a loopback server: what it POSTs is decoded with the official OTLP
//! definitions (`opentelemetry-proto`'s prost types) and every bucket, count, sum, min and max is
//! checked against an exact reference of the values recorded (client_golang's way of finding a
//! bucket, in floating point, shifted to OpenTelemetry's numbering). No real OpenTelemetry
//! Collector is run: none can be installed on the machines these tests were written on.
//!
//! Also: endpoints that refuse, hang, answer garbage or an error status are counted as failures
//! while the host records and flushes as usual, and a full queue drops and counts.

#[path = "../../../tests/common/exponential_reference.rs"]
mod exponential_reference;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use laptime::{Collector, CollectorHandle, Family, Stage, Window};
use laptime_otlp::{OtlpError, OtlpExporter, OtlpStats};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, Metric, NumberDataPoint, metric,
    number_data_point,
};
use prost::Message;

use exponential_reference::{reference_buckets, values};

/// `cargo test` runs a file's tests as threads of one process, and the collector is process-wide.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One request the loopback server received.
struct Received {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// Reads one request (headers, then `Content-Length` bytes) from `conn`; `None` at its end.
fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Received> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(n) = req.parse(buf).expect("an HTTP request") {
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let len: usize = header("content-length").expect("a length").parse().unwrap();
            let (path, content_type) = (req.path.unwrap().to_owned(), header("content-type")?);
            while buf.len() < n + len {
                let mut chunk = [0u8; 65536];
                let got = conn.read(&mut chunk).ok().filter(|&g| g > 0)?;
                buf.extend_from_slice(&chunk[..got]);
            }
            let body = buf[n..n + len].to_vec();
            buf.drain(..n + len);
            return Some(Received {
                path,
                content_type,
                body,
            });
        }
        let mut chunk = [0u8; 65536];
        let got = conn.read(&mut chunk).ok().filter(|&g| g > 0)?;
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// A loopback server that answers every request with `answer` (and closes after it if
/// `close`); each request goes to the channel.
fn server(answer: &'static [u8], close: bool) -> (SocketAddr, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let (mut conn, tx) = (conn.unwrap(), tx.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                while let Some(req) = read_request(&mut conn, &mut buf) {
                    let _ = tx.send(req);
                    if conn.write_all(answer).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Accepts connections and never answers.
fn hanging_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    addr
}

/// A loopback port nothing listens on (bound, then let go).
fn refusing_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/v1/metrics")
}

fn install(builder: laptime::CollectorBuilder) -> CollectorHandle {
    builder.install().unwrap_or_else(|e| panic!("install: {e}"))
}

fn string_of(attrs: &[KeyValue], key: &str) -> Option<String> {
    let kv = attrs.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn metric<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
    let scope = &req.resource_metrics[0].scope_metrics[0];
    assert_eq!(scope.scope.as_ref().unwrap().name, "laptime");
    scope
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn histogram_point<'a>(
    req: &'a ExportMetricsServiceRequest,
    stage: &str,
) -> Option<&'a ExponentialHistogramDataPoint> {
    let m = metric(req, laptime_otlp::DURATION_METRIC);
    assert_eq!(m.unit, "s");
    let Some(metric::Data::ExponentialHistogram(h)) = &m.data else {
        panic!("{} is not an exponential histogram", m.name)
    };
    assert_eq!(
        h.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    (h.data_points.iter()).find(|p| string_of(&p.attributes, "stage").as_deref() == Some(stage))
}

fn sum_point<'a>(
    req: &'a ExportMetricsServiceRequest,
    name: &str,
    stage: &str,
) -> &'a NumberDataPoint {
    let Some(metric::Data::Sum(sum)) = &metric(req, name).data else {
        panic!("{name} is not a sum")
    };
    assert!(sum.is_monotonic, "{name} is monotonic");
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    (sum.data_points.iter())
        .find(|p| string_of(&p.attributes, "stage").as_deref() == Some(stage))
        .unwrap_or_else(|| panic!("no {name} point for {stage}"))
}

fn int_value(p: &NumberDataPoint) -> i64 {
    match p.value {
        Some(number_data_point::Value::AsInt(v)) => v,
        ref other => panic!("not an integer: {other:?}"),
    }
}

/// The first request whose point for `stage` counts `count` values (cumulative: every later
/// one does too), waiting up to 30 s.
fn request_counting(
    rx: &mpsc::Receiver<Received>,
    stage: &str,
    count: u64,
) -> (Received, ExportMetricsServiceRequest) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = rx
            .recv_timeout(left)
            .expect("a request counting every value");
        let req = ExportMetricsServiceRequest::decode(&got.body[..]).expect("an OTLP request");
        if histogram_point(&req, stage).is_some_and(|p| p.count == count) {
            return (got, req);
        }
    }
}

/// OpenTelemetry index → count of the point's positive buckets, empty ones left out.
fn buckets(p: &ExponentialHistogramDataPoint) -> BTreeMap<i32, u64> {
    let b = p.positive.as_ref().expect("positive buckets");
    assert!(
        p.negative
            .as_ref()
            .is_none_or(|n| n.bucket_counts.is_empty())
    );
    (b.bucket_counts.iter().enumerate())
        .filter(|(_, c)| **c > 0)
        .map(|(k, &c)| (b.offset + k as i32, c))
        .collect()
}

/// The reference's buckets in OpenTelemetry's numbering.
fn otel_reference(values: &[u64], scale: i32) -> BTreeMap<i32, u64> {
    reference_buckets(values, scale, 1e9)
        .into_iter()
        .map(|(i, c)| (i - 1, c))
        .collect()
}

/// Everything a point says, against the values recorded into its stage.
fn assert_point_matches(p: &ExponentialHistogramDataPoint, values: &[u64], installed: u64) {
    let total: u128 = values.iter().map(|&v| u128::from(v)).sum();
    let (min, max) = (values.iter().min().unwrap(), values.iter().max().unwrap());
    assert_eq!(p.count, values.len() as u64);
    assert_eq!(p.sum, Some(total as f64 / 1e9));
    assert_eq!(p.min, Some(*min as f64 / 1e9));
    assert_eq!(p.max, Some(*max as f64 / 1e9));
    assert_eq!(
        p.zero_count,
        values.iter().filter(|&&v| v == 0).count() as u64
    );
    assert_eq!(p.zero_threshold, 0.0);
    assert_eq!(
        buckets(p),
        otel_reference(values, p.scale),
        "scale {}",
        p.scale
    );
    assert_eq!(
        p.positive
            .as_ref()
            .unwrap()
            .bucket_counts
            .iter()
            .sum::<u64>()
            + p.zero_count,
        p.count
    );
    assert!(installed <= p.start_time_unix_nano && p.start_time_unix_nano <= p.time_unix_nano);
}

fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn every_bucket_count_sum_min_and_max_match_the_values_recorded() {
    let _s = serial();
    let (addr, rx) = server(OK, false);
    let (lowered_addr, lowered_rx) = server(OK, false);
    // Scale 6 with room for every bucket; and the defaults (scale 8, 160 buckets), which must
    // lower the scale for values from 1 ns to 3 s.
    let exact = OtlpExporter::builder()
        .with_endpoint(url(addr))
        .with_service_name("otlp-test")
        .with_resource_attribute("deployment.environment", "test")
        .with_period(Duration::ZERO)
        .with_scale(6)
        .with_max_size(4096)
        .start()
        .unwrap();
    let lowered = OtlpExporter::builder()
        .with_endpoint(url(lowered_addr))
        .with_period(Duration::ZERO)
        .start()
        .unwrap();
    let before = unix_nanos_now();
    let handle = install(
        Collector::builder()
            .with_ring_capacity(1 << 16)
            .with_sink(exact.sink())
            .with_sink(lowered.sink()),
    );
    let plain = Stage::new("otlp_exact").unwrap();
    plain
        .set_deadline(Some(Duration::from_millis(1)))
        .expect("a deadline");
    let labelled = Stage::with_labels("otlp_labelled", &[("venue", "x")]).unwrap();
    let all = values();
    for &v in &all {
        laptime::record(plain, Duration::from_nanos(v));
    }
    let few = &all[..100];
    let btc = Family::new("otlp_family", &["pair"])
        .unwrap()
        .series(&["BTC-USD"])
        .unwrap();
    for &v in few {
        laptime::record(labelled, Duration::from_nanos(v));
        laptime::record(btc, Duration::from_nanos(v));
    }
    assert!(handle.flush());
    let misses = handle
        .get_stats(plain, Window::Cumulative)
        .unwrap()
        .deadline_misses;
    assert!(misses > 0, "values above 1 ms missed the deadline");

    let (got, req) = request_counting(&rx, "otlp_exact", all.len() as u64);
    assert_eq!(got.path, "/v1/metrics");
    assert_eq!(got.content_type, "application/x-protobuf");
    let resource = req.resource_metrics[0].resource.as_ref().unwrap();
    assert_eq!(
        string_of(&resource.attributes, "service.name").as_deref(),
        Some("otlp-test")
    );
    assert_eq!(
        string_of(&resource.attributes, "deployment.environment").as_deref(),
        Some("test")
    );
    let p = histogram_point(&req, "otlp_exact").unwrap();
    assert_eq!(p.scale, 6, "4096 buckets hold 1 ns to 3 s at scale 6");
    assert_point_matches(p, &all, before);
    let m = sum_point(&req, laptime_otlp::DEADLINE_MISSES_METRIC, "otlp_exact");
    assert_eq!(int_value(m), misses as i64);
    let d = sum_point(&req, laptime_otlp::DROPPED_METRIC, "otlp_exact");
    assert_eq!(int_value(d), 0);
    assert_eq!(m.start_time_unix_nano, p.start_time_unix_nano);

    let (_, req) = request_counting(&rx, "otlp_labelled", few.len() as u64);
    let p = histogram_point(&req, "otlp_labelled").unwrap();
    assert_eq!(string_of(&p.attributes, "venue").as_deref(), Some("x"));
    assert_point_matches(p, few, before);
    // The name's total (its values come through the labelled stage) is not a point of its own.
    let points = |r: &ExportMetricsServiceRequest| {
        let Some(metric::Data::ExponentialHistogram(h)) =
            &metric(r, laptime_otlp::DURATION_METRIC).data
        else {
            unreachable!()
        };
        h.data_points.len()
    };
    let p = histogram_point(&req, "otlp_family").unwrap();
    assert_eq!(string_of(&p.attributes, "pair").as_deref(), Some("BTC-USD"));
    assert_point_matches(p, few, before);
    // Nor is the family's total.
    assert_eq!(
        points(&req),
        3,
        "otlp_exact, otlp_labelled{{venue=x}}, otlp_family{{pair=BTC-USD}}"
    );

    let (_, req) = request_counting(&lowered_rx, "otlp_exact", all.len() as u64);
    let p = histogram_point(&req, "otlp_exact").unwrap();
    assert!(p.scale < 8, "the budget lowered the scale");
    assert!(p.positive.as_ref().unwrap().bucket_counts.len() <= 160);
    assert_point_matches(p, &all, before);
    assert_eq!(
        string_of(
            &req.resource_metrics[0]
                .resource
                .as_ref()
                .unwrap()
                .attributes,
            "service.name"
        )
        .as_deref(),
        Some("unknown_service")
    );

    drop(handle);
    let stats = exact.stats();
    assert!(stats.exports_ok >= 2, "{stats:?}");
    assert_eq!(
        (stats.exports_failed, stats.batches_dropped),
        (0, 0),
        "{stats:?}"
    );
}

#[test]
fn corrected_durations_are_a_histogram_of_their_own_matching_the_reference() {
    let _s = serial();
    let (addr, rx) = server(OK, false);
    let exporter = OtlpExporter::builder()
        .with_endpoint(url(addr))
        .with_period(Duration::ZERO)
        .with_scale(4)
        .with_max_size(1024)
        .start()
        .unwrap();
    let handle = install(
        Collector::builder()
            .with_ring_capacity(1 << 12)
            .with_sink(exporter.sink()),
    );
    let stage = Stage::new("otlp_corrected").unwrap();
    let interval = 100_000u64;
    stage
        .set_expected_interval(Some(Duration::from_nanos(interval)))
        .unwrap();
    let raw: Vec<u64> = (1..=300u64).map(|k| k * 7_001).collect();
    for &v in &raw {
        laptime::record(stage, Duration::from_nanos(v));
    }
    assert!(handle.flush());
    // HdrHistogram's correction: a value `d` adds `d − interval`, `d − 2·interval`, … down to
    // `interval`.
    let mut corrected = raw.clone();
    for &d in &raw {
        corrected.extend(
            (1..)
                .map(|k| d.saturating_sub(k * interval))
                .take_while(|&m| m >= interval),
        );
    }
    let (_, req) = request_counting(&rx, "otlp_corrected", raw.len() as u64);
    let stats = handle.get_stats(stage, Window::Cumulative).unwrap();
    assert_eq!(
        stats.corrected.as_ref().unwrap().count,
        corrected.len() as u64
    );
    let m = metric(&req, laptime_otlp::CORRECTED_DURATION_METRIC);
    let Some(metric::Data::ExponentialHistogram(h)) = &m.data else {
        panic!("not an exponential histogram")
    };
    let p = (h.data_points.iter())
        .find(|p| string_of(&p.attributes, "stage").as_deref() == Some("otlp_corrected"))
        .expect("a corrected point");
    assert_eq!(p.scale, 4);
    assert_point_matches(p, &corrected, 0);
    assert_point_matches(histogram_point(&req, "otlp_corrected").unwrap(), &raw, 0);
    drop(handle);
}

#[test]
fn a_partial_success_counts_the_rejected_points() {
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
    };
    let _s = serial();
    let body = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 2,
            error_message: "two points rejected".to_owned(),
        }),
    }
    .encode_to_vec();
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend(body);
    let (addr, rx) = server(answer.leak(), false);
    let exporter = OtlpExporter::builder()
        .with_endpoint(url(addr))
        .with_period(Duration::ZERO)
        .start()
        .unwrap();
    let handle = install(Collector::builder().with_sink(exporter.sink()));
    let stage = Stage::new("otlp_partial").unwrap();
    record_and_flush(&handle, stage, 1);
    request_counting(&rx, "otlp_partial", 1);
    drop(handle);
    let stats = exporter.stats();
    drop(exporter);
    // Every answer rejected two points, and none was a failure.
    assert!(stats.exports_ok >= 1, "{stats:?}");
    assert_eq!(stats.points_rejected, 2 * stats.exports_ok, "{stats:?}");
    assert_eq!(stats.exports_failed, 0, "{stats:?}");
}

/// Records `n` values into `stage`, each followed by a flush (a cycle, so a batch each); how long
/// that took.
fn record_and_flush(handle: &CollectorHandle, stage: Stage, n: u64) -> Duration {
    let began = Instant::now();
    for k in 1..=n {
        laptime::record(stage, Duration::from_micros(k));
        assert!(handle.flush());
    }
    began.elapsed()
}

/// Waits up to 10 s for `exporter` to count a failure.
fn first_failure(exporter: &OtlpExporter) -> OtlpStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = exporter.stats();
        if stats.exports_failed > 0 || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn refusing_hanging_and_garbage_endpoints_are_counted_and_the_host_carries_on() {
    let _s = serial();
    let (garbage, _rx) = server(b"this is not HTTP\r\n\r\n", true);
    let (unavailable, _rx2) = server(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\noverload!",
        false,
    );
    let start = |addr: SocketAddr| {
        OtlpExporter::builder()
            .with_endpoint(url(addr))
            .with_period(Duration::ZERO)
            .with_timeout(Duration::from_millis(300))
            .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
            .start()
            .unwrap()
    };
    let exporters = [
        start(refusing_address()),
        start(hanging_server()),
        start(garbage),
        start(unavailable),
    ];
    let mut builder = Collector::builder();
    for e in &exporters {
        builder = builder.with_sink(e.sink());
    }
    let handle = install(builder);
    let stage = Stage::new("otlp_faults").unwrap();
    // The host records and flushes as if nothing were wrong: a flush waits for the aggregator,
    // which never waits for the network.
    let took = record_and_flush(&handle, stage, 50);
    assert!(took < Duration::from_secs(5), "50 flushes took {took:?}");
    assert_eq!(
        handle.get_stats(stage, Window::Cumulative).unwrap().count,
        50
    );
    let stats: Vec<OtlpStats> = exporters.iter().map(first_failure).collect();
    for (what, s) in ["refused", "hanging", "garbage", "503"].iter().zip(&stats) {
        assert!(s.exports_failed > 0, "{what}: {s:?}");
        assert_eq!(s.exports_ok, 0, "{what}: {s:?}");
        assert!(s.batches_queued > 0, "{what}: {s:?}");
    }
    let error = |k: usize| stats[k].last_error.clone().unwrap().to_lowercase();
    assert!(error(1).contains("timeout"), "{}", error(1));
    assert!(
        error(3).contains("503") && error(3).contains("overload!"),
        "{}",
        error(3)
    );
    drop(handle);
    // Stopping waits at most a request under way and the last batch's one attempt.
    let began = Instant::now();
    drop(exporters);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}

#[test]
fn a_full_queue_drops_its_oldest_batch_and_counts_it() {
    let _s = serial();
    let exporter = OtlpExporter::builder()
        .with_endpoint(url(hanging_server()))
        .with_period(Duration::ZERO)
        .with_timeout(Duration::from_secs(2))
        .with_queue_capacity(1)
        .start()
        .unwrap();
    let handle = install(Collector::builder().with_sink(exporter.sink()));
    let stage = Stage::new("otlp_full_queue").unwrap();
    let took = record_and_flush(&handle, stage, 20);
    // The thread is stuck in its first request for 2 s: the aggregator was not.
    assert!(took < Duration::from_secs(2), "20 flushes took {took:?}");
    let stats = exporter.stats();
    assert!(stats.batches_queued >= 20, "{stats:?}");
    assert!(stats.batches_dropped >= 15, "{stats:?}");
    drop(handle);
    drop(exporter);
}

#[test]
fn bad_settings_are_refused_with_what_to_change() {
    let refused = |b: laptime_otlp::OtlpExporterBuilder| b.start().expect_err("refused");
    let e = refused(OtlpExporter::builder().with_endpoint("https://otlp.example.com/v1/metrics"));
    assert!(matches!(e, OtlpError::InvalidEndpoint { .. }));
    assert!(e.to_string().contains("TLS"), "{e}");
    let e = refused(OtlpExporter::builder().with_endpoint("localhost:4318"));
    assert!(matches!(e, OtlpError::InvalidEndpoint { .. }), "{e}");
    let e = refused(OtlpExporter::builder().with_scale(9));
    assert!(e.to_string().contains("-4 to 8"), "{e}");
    let e = refused(OtlpExporter::builder().with_max_size(4));
    assert!(matches!(e, OtlpError::MaxSizeTooSmall { max_size: 4 }));
    let e = refused(OtlpExporter::builder().with_queue_capacity(0));
    assert!(matches!(e, OtlpError::InvalidSetting { .. }));
    let e = refused(OtlpExporter::builder().with_timeout(Duration::ZERO));
    assert!(matches!(e, OtlpError::InvalidSetting { .. }));
}
