//! Fault injection, end to end: a panic inside measured code, inside an SLA callback and inside
//! the aggregator; scrapers that hang; a clock that jumps forward and steps back. Each fault must
//! be survived (the collector goes on: `flush()` answers and what is recorded afterwards is counted
//! exactly), counted (the right counter moves by exactly the expected amount), reported (in
//! `Health`/`StageStats` and in the Prometheus exposition) and must lose nothing recorded (every
//! record produced is aggregated, dropped or still in a ring; every call the test made to a stage
//! is in its count, drops, sampled-out or cancelled figures).
//!
//! The mock clock makes every duration exact; no assertion is on elapsed time, and every wait is
//! bounded.
#![cfg(all(feature = "test-util", feature = "prometheus", feature = "enable"))]

mod common;
#[path = "common/http_client.rs"]
mod http_client;

use std::panic::catch_unwind;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{clock, install, serial, unique};
use laptime::export::prometheus::PrometheusExporter;
use laptime::{
    Collector, CollectorBuilder, CollectorHandle, Health, Metric, Severity, SlaRule, Stage,
    StageStats, Window,
};

const US: Duration = Duration::from_micros(1);
const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const SLIDING: [Window; 3] = [Window::S1, Window::S5, Window::S60];

fn exporter() -> PrometheusExporter {
    PrometheusExporter::builder()
        .build()
        .expect("the default exporter configuration is valid")
}

/// A collector on the mock clock that runs cycles only when flushed (or woken by a fault), feeding
/// `exporter`.
fn builder(exporter: &PrometheusExporter) -> CollectorBuilder {
    clock();
    Collector::builder()
        .with_interval(Duration::from_secs(60))
        .with_prometheus(exporter.clone())
}

/// The value of sample `series` (name and labels exactly as rendered, e.g.
/// `laptime_callback_panics_total` or `laptime_spans_unwound_total{stage="s"}`) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
    })
}

/// [`sample`] of the exporter's current exposition, failing with the exposition if it is absent.
fn exposed(exporter: &PrometheusExporter, series: &str) -> f64 {
    let text = exporter.render().expect("the exposition renders");
    sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// `series{stage="<stage>"}`.
fn of_stage(series: &str, stage: &str) -> String {
    format!("{series}{{stage=\"{stage}\"}}")
}

/// Nothing recorded is lost unseen: every record pushed or dropped is aggregated, dropped or still
/// in a ring, and a flush with no producer running leaves none in the rings.
fn assert_health_accounted(h: &Health) {
    assert_eq!(h.produced, h.records + h.dropped + h.in_rings, "{h:?}");
    assert_eq!(
        h.in_rings, 0,
        "nothing is left in a ring after a flush: {h:?}"
    );
}

/// Every one of the `calls` the test made to the stage is accounted for, after a flush.
fn assert_stage_accounted(s: &StageStats, calls: u64) {
    assert_eq!(
        s.count + s.dropped + s.sampled_out + s.cancelled + s.in_rings,
        calls,
        "{s:?}"
    );
    assert_eq!(s.in_rings, 0, "{s:?}");
    assert_eq!(
        s.produced,
        s.count + s.dropped + s.cancelled + s.in_rings,
        "{s:?}"
    );
}

fn cumulative(handle: &CollectorHandle, stage: &str) -> StageStats {
    handle
        .get_stats(stage, Window::Cumulative)
        .unwrap_or_else(|| panic!("stage {stage} recorded nothing"))
}

/// A span of `work` on the mock clock.
fn span(stage: &'static str, work: Duration) {
    let _span = laptime::start(stage);
    clock().advance(work);
}

#[laptime::measure(name = "faults_measured_panics")]
fn measured_then_panics(work: Duration) {
    clock().advance(work);
    panic!("a bug inside a #[measure] function, as the test asked");
}

fn plain_then_panics(stage: &'static str, work: Duration) {
    let _span = laptime::start(stage);
    clock().advance(work);
    panic!("a bug inside a plain span, as the test asked");
}

#[test]
fn a_panic_inside_measured_code_is_recorded_counted_as_unwound_and_its_ring_reclaimed() {
    let _s = serial();
    let exporter = exporter();
    let handle = install(builder(&exporter));
    let measured = "faults_measured_panics";
    let plain = unique("faults_plain");

    span(plain, 2 * MS);
    // Caught on the same thread.
    assert!(catch_unwind(|| measured_then_panics(3 * MS)).is_err());
    assert!(catch_unwind(|| plain_then_panics(plain, 4 * MS)).is_err());
    // Uncaught: each thread dies of its panic, and with it its ring's producer.
    let died = std::thread::spawn(|| measured_then_panics(5 * MS)).join();
    assert!(died.is_err(), "the thread died of its panic");
    let died = std::thread::spawn(move || plain_then_panics(plain, 6 * MS)).join();
    assert!(died.is_err(), "the thread died of its panic");
    assert!(handle.flush(), "the collector survived the panics");

    let m = cumulative(&handle, measured);
    assert_eq!((m.count, m.unwound), (2, 2), "{m:?}");
    assert_eq!((m.min, m.max, m.mean), (3 * MS, 5 * MS, 4 * MS), "{m:?}");
    assert_stage_accounted(&m, 2);
    let p = cumulative(&handle, plain);
    assert_eq!((p.count, p.unwound), (3, 2), "{p:?}");
    assert_eq!((p.min, p.max, p.mean), (2 * MS, 6 * MS, 4 * MS), "{p:?}");
    assert_stage_accounted(&p, 3);
    let h = handle.health();
    assert_eq!(
        (h.rings_reclaimed, h.rings),
        (2, 1),
        "the dead threads' rings are reclaimed, the test thread's is live: {h:?}"
    );
    assert_health_accounted(&h);

    // Spans after the faults are counted exactly, and none of them counts as unwound.
    for _ in 0..3 {
        span(plain, 7 * MS);
    }
    assert!(handle.flush());
    let p = cumulative(&handle, plain);
    assert_eq!((p.count, p.unwound, p.max), (6, 2, 7 * MS), "{p:?}");
    assert_eq!(
        p.mean,
        Duration::from_micros(5500),
        "(2 + 4 + 6 + 3·7) / 6 ms"
    );
    assert_stage_accounted(&p, 6);
    let h = handle.health();
    assert_eq!(
        (h.records, h.dropped, h.rings_reclaimed),
        (8, 0, 2),
        "{h:?}"
    );
    assert_health_accounted(&h);

    let unwound = "laptime_spans_unwound_total";
    assert_eq!(exposed(&exporter, &of_stage(unwound, measured)), 2.0);
    assert_eq!(exposed(&exporter, &of_stage(unwound, plain)), 2.0);
    let count = "laptime_stage_duration_seconds_count";
    assert_eq!(exposed(&exporter, &of_stage(count, measured)), 2.0);
    assert_eq!(exposed(&exporter, &of_stage(count, plain)), 6.0);
    let produced = "laptime_spans_produced_total";
    assert_eq!(exposed(&exporter, &of_stage(produced, plain)), 6.0);
    assert_eq!(
        exposed(&exporter, &of_stage("laptime_spans_in_rings", plain)),
        0.0
    );
    assert_eq!(exposed(&exporter, "laptime_records_aggregated_total"), 8.0);
}

#[test]
fn a_panicking_sla_callback_is_counted_every_time_and_the_rules_go_on() {
    let _s = serial();
    let clock = clock();
    let exporter = exporter();
    let name = unique("faults_callback");
    let reason = unique("faults_latency_guard");
    // (severity, cleared) of every violation the callback was handed.
    let seen: Arc<Mutex<Vec<(Severity, bool)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let handle = install(
        builder(&exporter)
            .with_breaker_trip_reason(reason)
            .with_sla_rule(
                SlaRule::new(name, Window::S1, Metric::Max)
                    .with_warning(10 * MS)
                    .with_critical(20 * MS),
            )
            .with_sla_callback(move |v| {
                sink.lock()
                    .unwrap()
                    .extend(v.iter().map(|v| (v.severity, v.cleared)));
                panic!("a bug inside an SLA callback, as the test asked");
            }),
    );
    let guard = Stage::new(name).unwrap().latency_breaker();
    let trips = laptime::TripReason::new(reason).unwrap();
    // (value recorded, severity in force after the cycle, callbacks so far)
    let steps = [
        (5 * MS, None, 0),
        (15 * MS, Some(Severity::Warning), 1),
        (25 * MS, Some(Severity::Critical), 2),
    ];
    let mut calls = 0;
    for (value, severity, callbacks) in steps {
        laptime::record(name, value);
        calls += 1;
        assert!(handle.flush());
        let h = handle.health();
        assert_eq!(h.callback_panics, callbacks, "{h:?}");
        assert_eq!(seen.lock().unwrap().len() as u64, callbacks);
        let v = handle.check_sla_violations(Window::S1);
        assert_eq!(v.iter().map(|v| v.severity).max(), severity, "{v:?}");
        assert_eq!(guard.is_tripped(), severity == Some(Severity::Critical));
        // The snapshot of this cycle was published despite the panic after it.
        assert_eq!(cumulative(&handle, name).count, calls);
    }
    // The window empties: the critical state clears, the guard with it, and the callback is
    // told (a third panic).
    clock.advance(Duration::from_secs(2));
    assert!(handle.flush());
    assert!(handle.check_sla_violations(Window::S1).is_empty());
    assert!(!guard.is_tripped());
    assert_eq!(handle.health().callback_panics, 3);
    // A new episode: a fourth change of severity, a fourth panic.
    laptime::record(name, 30 * MS);
    calls += 1;
    assert!(handle.flush());
    assert!(guard.is_tripped());
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (Severity::Warning, false),
            (Severity::Critical, false),
            (Severity::Critical, true),
            (Severity::Critical, false)
        ]
    );
    // An unchanged severity calls nobody, so nothing more panics; the figures still move.
    laptime::record(name, MS);
    calls += 1;
    let cycles = handle.health().cycles;
    assert!(handle.flush());
    let h = handle.health();
    assert_eq!((h.callback_panics, h.aggregator_restarts), (4, 0), "{h:?}");
    assert!(h.cycles > cycles, "{h:?}");
    assert_eq!(
        trips.trips(),
        2,
        "the guard tripped once per critical episode"
    );
    let s = cumulative(&handle, name);
    assert_eq!((s.count, s.min, s.max), (calls, MS, 30 * MS), "{s:?}");
    assert_stage_accounted(&s, calls);
    assert_health_accounted(&h);
    assert_eq!(h.records, calls);

    assert_eq!(exposed(&exporter, "laptime_callback_panics_total"), 4.0);
    assert_eq!(exposed(&exporter, "laptime_aggregator_restarts_total"), 0.0);
    let trips_series = format!("laptime_guard_trips_total{{reason=\"{reason}\"}}");
    assert_eq!(exposed(&exporter, &trips_series), 2.0);
}

#[test]
fn aggregator_panics_give_up_no_record_in_the_rings_and_are_counted() {
    let _s = serial();
    let exporter = exporter();
    let handle = install(builder(&exporter));
    let name = unique("faults_aggregator");
    let mut calls = 0u64;
    let mut record = |n: u64| {
        for _ in 0..n {
            calls += 1;
            laptime::record(name, Duration::from_micros(calls));
        }
    };

    record(10);
    assert!(handle.flush());
    let before = handle.health();
    assert_eq!(before.records, 10);

    // 100 records wait in the ring when the aggregator panics at the start of its next cycle.
    record(100);
    handle.inject_aggregator_panic();
    let h = http_client::wait_for(Duration::from_secs(10), || {
        let h = handle.health();
        (h.aggregator_restarts == 1).then_some(h)
    })
    .expect("the injected panic is caught and published");
    // The panicking cycle drained nothing: what it published carries the figures of the last
    // whole cycle. That is the flush's, unless the flush's wake-up reached the aggregator while
    // a cycle was running and so bought one more cycle, which may have drained some of the 100.
    if h.cycles == before.cycles {
        assert_eq!(h.records, 10, "{h:?}");
    }
    assert!(h.records <= 110, "{h:?}");
    assert_eq!(exposed(&exporter, "laptime_aggregator_restarts_total"), 1.0);

    record(50);
    assert!(handle.flush(), "the aggregator carries on after the panic");
    let s = cumulative(&handle, name);
    assert_eq!((s.count, s.min, s.max), (160, US, 160 * US), "{s:?}");
    assert_stage_accounted(&s, 160);

    // Again, flushing at once: the flush is answered whether or not the panicking cycle is the
    // one that answers it, and a second flush needs a cycle after it.
    record(20);
    handle.inject_aggregator_panic();
    assert!(handle.flush());
    assert!(handle.flush());
    let h = handle.health();
    assert_eq!(h.aggregator_restarts, 2, "{h:?}");
    assert_eq!((h.records, h.dropped), (180, 0), "{h:?}");
    assert_health_accounted(&h);
    let s = cumulative(&handle, name);
    assert_eq!((s.count, s.max), (180, 180 * US), "{s:?}");
    // The mean is exact: (1 + … + 180) µs / 180.
    assert_eq!(s.mean, Duration::from_nanos(90_500));
    assert_stage_accounted(&s, 180);

    assert_eq!(exposed(&exporter, "laptime_aggregator_restarts_total"), 2.0);
    assert_eq!(
        exposed(&exporter, "laptime_records_aggregated_total"),
        180.0
    );
    assert_eq!(exposed(&exporter, "laptime_records_produced_total"), 180.0);
    let count = of_stage("laptime_stage_duration_seconds_count", name);
    assert_eq!(exposed(&exporter, &count), 180.0);
    let produced = of_stage("laptime_spans_produced_total", name);
    assert_eq!(exposed(&exporter, &produced), 180.0);
}

#[test]
fn a_clock_jump_forward_saturates_the_open_span_and_empties_the_sliding_windows() {
    let _s = serial();
    let clock = clock();
    let exporter = exporter();
    let handle = install(builder(&exporter).with_histogram(3, HOUR));
    let name = unique("faults_jump");
    for _ in 0..10 {
        span(name, MS);
    }
    assert!(handle.flush());
    for w in SLIDING {
        assert_eq!(handle.get_stats(name, w).map(|s| s.count), Some(10), "{w}");
    }
    let cycles = handle.health().cycles;

    let open = laptime::start(name);
    clock.advance(MS);
    assert!(handle.flush());
    // Between two cycles, with the span open, the clock jumps an hour.
    clock.advance(HOUR);
    assert!(handle.flush(), "the aggregator answers after the jump");
    for w in SLIDING {
        assert_eq!(
            handle.get_stats(name, w),
            None,
            "{w}: what ended before the jump is out of every sliding window"
        );
    }
    assert_eq!(
        cumulative(&handle, name).count,
        10,
        "the cumulative keeps it"
    );

    clock.advance(MS);
    drop(open);
    assert!(handle.flush());
    let long = HOUR + 2 * MS;
    let s = cumulative(&handle, name);
    assert_eq!(
        (s.count, s.saturated, s.min, s.max),
        (11, 1, MS, long),
        "{s:?}"
    );
    for w in SLIDING {
        let s = handle.get_stats(name, w).unwrap();
        assert_eq!((s.count, s.saturated, s.max), (1, 1, long), "{w}: {s:?}");
    }
    assert_eq!(handle.health().saturated, 1);

    // Spans after the jump are counted exactly.
    for _ in 0..5 {
        span(name, 3 * MS);
    }
    assert!(handle.flush());
    for w in SLIDING {
        let s = handle.get_stats(name, w).unwrap();
        assert_eq!((s.count, s.min, s.max), (6, 3 * MS, long), "{w}: {s:?}");
    }
    // Another jump with nothing open: the sliding windows empty, the cumulative keeps everything.
    clock.advance(HOUR);
    assert!(handle.flush());
    for w in SLIDING {
        assert_eq!(handle.get_stats(name, w), None, "{w}");
    }
    let s = cumulative(&handle, name);
    assert_eq!((s.count, s.saturated, s.max), (16, 1, long), "{s:?}");
    assert_stage_accounted(&s, 16);
    let h = handle.health();
    assert_eq!((h.records, h.saturated), (16, 1), "{h:?}");
    assert!(h.cycles >= cycles + 5, "every flush ran a cycle: {h:?}");
    assert_health_accounted(&h);

    assert_eq!(exposed(&exporter, "laptime_values_saturated_total"), 1.0);
    let count = of_stage("laptime_stage_duration_seconds_count", name);
    assert_eq!(exposed(&exporter, &count), 16.0);
}

#[test]
fn a_clock_stepping_back_under_an_open_span_records_zero_and_is_counted() {
    let _s = serial();
    let clock = clock();
    let exporter = exporter();
    let handle = install(builder(&exporter));
    let name = unique("faults_backwards");
    span(name, 4 * MS);
    clock.advance(10 * MS);

    let open = laptime::start(name);
    let started = clock.now();
    // `MockClock::set` refuses to go back; installing the mock clock again sets its time as is.
    laptime::clock::MockClock::install(started - 5_000_000);
    assert_eq!(
        clock.now(),
        started - 5_000_000,
        "the mock clock stepped back"
    );
    drop(open); // ends 5 ms before it started
    assert!(handle.flush());
    let s = cumulative(&handle, name);
    assert_eq!(
        (s.count, s.min, s.max),
        (2, Duration::ZERO, 4 * MS),
        "{s:?}"
    );
    let h = handle.health();
    assert_eq!(h.backwards_spans, 1, "{h:?}");

    // Spans after the step back are counted exactly.
    for _ in 0..3 {
        span(name, 2 * MS);
    }
    assert!(handle.flush());
    let s = cumulative(&handle, name);
    assert_eq!(
        (s.count, s.min, s.max),
        (5, Duration::ZERO, 4 * MS),
        "{s:?}"
    );
    assert_eq!(s.mean, Duration::from_micros(2000), "(0 + 4 + 3·2) / 5 ms");
    assert_stage_accounted(&s, 5);
    let h = handle.health();
    assert_eq!((h.records, h.backwards_spans), (5, 1), "{h:?}");
    assert_health_accounted(&h);

    assert_eq!(
        exposed(&exporter, "laptime_spans_clock_backwards_total"),
        1.0
    );
    let count = of_stage("laptime_stage_duration_seconds_count", name);
    assert_eq!(exposed(&exporter, &count), 5.0);
}

/// Bytes the kernel may hold for one loopback connection whose client never reads: the server's
/// largest send buffer plus the client's initial receive buffer (which grows only as the client
/// reads). From the host's settings, or Linux's defaults where they cannot be read.
#[cfg(feature = "http")]
fn socket_buffering() -> usize {
    let setting = |path: &str, field: usize, default: usize| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(field)?.parse().ok())
            .unwrap_or(default)
    };
    setting("/proc/sys/net/ipv4/tcp_wmem", 2, 4 << 20)
        + setting("/proc/sys/net/ipv4/tcp_rmem", 1, 128 << 10)
}

#[cfg(feature = "http")]
#[test]
fn hanging_scrapers_time_out_while_scrapes_and_the_aggregator_go_on() {
    use std::io::Write;

    use http_client::{connect, get, request, wait_for};
    use laptime::export::http::MetricsServer;

    let _s = serial();
    // 256 buckets a stage make a large exposition from few stages.
    let exporter = PrometheusExporter::builder()
        .with_buckets((1..=256).map(|i| i * US))
        .build()
        .expect("256 increasing bounds are valid");
    let handle = install(builder(&exporter));
    let count = "laptime_stage_duration_seconds_count";
    let size = |stages: &[&'static str]| {
        for stage in stages {
            laptime::record(*stage, US);
        }
        assert!(handle.flush());
        exporter.render().unwrap().len()
    };
    // Enough stages that the answer cannot fit in the sockets' buffers, so a client that does
    // not read makes the server's write block until its timeout.
    let first: Vec<&'static str> = (0..11).map(|_| unique("faults_big")).collect();
    let one = size(&first[..1]);
    let per_stage = (size(&first[1..]) - one) / 10;
    let need = 2 * socket_buffering();
    let more: Vec<&'static str> = (0..need / per_stage)
        .map(|_| unique("faults_big"))
        .collect();
    let text_len = size(&more);
    assert!(
        text_len > need,
        "{text_len} bytes of exposition, {need} wanted"
    );
    let marker = of_stage(count, first[0]);

    let server = MetricsServer::builder()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .with_workers(4)
        .with_read_timeout(Duration::from_secs(1))
        .with_write_timeout(Duration::from_secs(3))
        .start(exporter.clone())
        .unwrap_or_else(|e| panic!("server failed to start: {e}"));
    let addr = server.local_addr();

    // Connects and never sends.
    let mut silent = connect(addr).unwrap();
    // Sends half a request head and stalls.
    let mut half = connect(addr).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n")
        .unwrap();
    // Sends a whole request and never reads the answer.
    let mut stuck = connect(addr).unwrap();
    stuck
        .write_all(request("GET", "/metrics").as_bytes())
        .unwrap();
    // Sends a few bytes and hangs up.
    connect(addr).unwrap().write_all(b"GET /met").unwrap();
    wait_for(Duration::from_secs(10), || {
        (server.stats().accepted == 4).then_some(())
    })
    .unwrap_or_else(|| panic!("not all accepted: {:?}", server.stats()));

    // Meanwhile a scraper is served in full...
    const SCRAPES: u64 = 3;
    let scraper = std::thread::spawn(move || {
        (0..SCRAPES)
            .map(|_| {
                let r = get(addr, "/metrics").expect("a scrape is answered");
                let length = r.header("content-length").and_then(|l| l.parse().ok());
                (
                    r.status,
                    length == Some(r.body.len()),
                    sample(&r.body, &marker),
                )
            })
            .collect::<Vec<_>>()
    });
    // ...and the aggregator goes on cycling and counting.
    let work = unique("faults_work");
    let cycles = handle.health().cycles;
    for _ in 0..5 {
        span(work, MS);
        assert!(handle.flush());
    }
    assert!(handle.health().cycles >= cycles + 5);
    let scrapes = scraper.join().expect("the scraper thread");
    assert_eq!(
        scrapes,
        vec![(200, true, Some(1.0)); SCRAPES as usize],
        "(status, whole body, marker sample) of each scrape"
    );

    let stats = wait_for(Duration::from_secs(20), || {
        let s = server.stats();
        (s.open_connections == 0).then_some(s)
    })
    .unwrap_or_else(|| panic!("connections still open: {:?}", server.stats()));
    // The silent and the half-sent request were answered 408; the stuck client's 200 was counted,
    // then its write timed out; the hang-up was counted as closed early.
    assert_eq!(stats.accepted, 4 + SCRAPES, "{stats:?}");
    assert_eq!(
        (stats.ok, stats.timed_out, stats.closed_early),
        (SCRAPES + 1, 3, 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.refused, stats.panics, stats.bad_request),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.threads, 5, "{stats:?}");
    for conn in [&mut silent, &mut half] {
        let r = http_client::read_response(conn).unwrap();
        assert_eq!(r.status, 408, "{}", r.head);
    }
    // What reached the stuck client is a cut-off answer (or, if the kernel gave up on the
    // orphaned socket, a reset).
    match http_client::read_response(&mut stuck) {
        Ok(r) => {
            assert_eq!(r.status, 200, "{}", r.head);
            let length: usize = r.header("content-length").unwrap().parse().unwrap();
            assert!(r.body.len() < length, "{} of {length} bytes", r.body.len());
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }

    let s = cumulative(&handle, work);
    assert_eq!((s.count, s.min, s.max), (5, MS, MS), "{s:?}");
    assert_stage_accounted(&s, 5);
    let h = handle.health();
    let big = (first.len() + more.len()) as u64;
    assert_eq!((h.records, h.aggregator_restarts), (big + 5, 0), "{h:?}");
    assert_health_accounted(&h);

    drop(server);
    assert!(
        http_client::server_threads().is_empty(),
        "joined: {:?}",
        http_client::server_threads()
    );
    assert!(connect(addr).is_err(), "nothing listens any more");
}
