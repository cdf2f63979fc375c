//! The `/metrics` endpoint under good and bad clients: malformed and oversized requests, clients
//! that never send or drip, floods of connections, other methods and paths, a panicking
//! exposition. After each, the endpoint must still answer, its own counters must show every
//! connection and thread bounded, and a collector's aggregator must still be cycling. Under the
//! attacks of issue 20 (slow clients ahead of a scraper, 40 dripping clients, 1 000 reconnecting
//! idle ones, a burst past the connection limit) a well-behaved scraper must still be served.
//!
//! Every wait is bounded; no assertion is on elapsed time.
#![cfg(feature = "http")]

mod common;
#[path = "common/http_attacks.rs"]
mod http_attacks;
#[path = "common/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_attacks::scrape_ok;
use http_client::{get, request, send, wait_for};
use laptime::export::ExportError;
use laptime::export::http::{
    Exposition, MetricsServer, MetricsServerBuilder, MetricsServerHandle, ServeError, ServerStats,
};

/// An exposition the tests steer: it renders the current collector's health, and can be told to
/// fail, panic or report itself unhealthy on its next call.
#[derive(Default)]
struct Steered {
    calls: AtomicU64,
    panic_next: AtomicBool,
    fail_next: AtomicBool,
    unhealthy: AtomicBool,
}

impl Exposition for Steered {
    fn metrics(&self) -> Result<String, ExportError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.panic_next.swap(false, Ordering::Relaxed) {
            panic!("the exposition panics, as a test asked");
        }
        if self.fail_next.swap(false, Ordering::Relaxed) {
            return Err(ExportError::Encode {
                message: "the test asked for a failure".to_owned(),
            });
        }
        // Reading the published snapshot is what a real exporter does on a scrape.
        let cycles = laptime::health().map_or(0, |h| h.cycles);
        Ok(format!("# TYPE test_cycles gauge\ntest_cycles {cycles}\n"))
    }

    fn health(&self) -> Result<String, String> {
        if self.unhealthy.load(Ordering::Relaxed) {
            Err("unhealthy: as the test asked\n".to_owned())
        } else {
            Ok("ok\n".to_owned())
        }
    }
}

fn loopback() -> MetricsServerBuilder {
    MetricsServer::builder().with_addr("127.0.0.1:0".parse().unwrap())
}

fn start(builder: MetricsServerBuilder) -> (MetricsServerHandle, Arc<Steered>) {
    let exposition = Arc::new(Steered::default());
    let server = builder
        .start(Arc::clone(&exposition))
        .unwrap_or_else(|e| panic!("server failed to start: {e}"));
    (server, exposition)
}

/// `GET /metrics` answers 200 with the exposition, within the bounded client wait.
fn assert_serves(addr: SocketAddr) {
    let r = get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\ntest_cycles "), "{r:?}");
}

/// Waits (bounded) until every connection is closed, and returns the counters then.
fn settled(server: &MetricsServerHandle) -> ServerStats {
    wait_for(Duration::from_secs(20), || {
        let s = server.stats();
        (s.open_connections == 0).then_some(s)
    })
    .unwrap_or_else(|| panic!("connections still open: {:?}", server.stats()))
}

#[test]
fn serves_metrics_health_and_head() {
    let _serial = common::serial();
    let (server, exposition) = start(loopback());
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let r = get(addr, "/metrics").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("content-length"), Some(&*r.body.len().to_string()));
    assert!(r.body.starts_with("# TYPE test_cycles gauge\n"));

    // A query string does not change the route.
    assert_eq!(get(addr, "/metrics?name[]=x").unwrap().status, 200);

    // HEAD: the same head, no body.
    let r = send(addr, request("HEAD", "/metrics").as_bytes()).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );

    let r = get(addr, "/health").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    exposition.unhealthy.store(true, Ordering::Relaxed);
    let r = get(addr, "/health").unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "unhealthy: as the test asked\n")
    );

    // HTTP/1.0 is served too.
    let r = send(addr, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);

    let s = settled(&server);
    assert_eq!((s.ok, s.unhealthy, s.accepted), (5, 1, 6), "{s:?}");
    assert_eq!(exposition.calls.load(Ordering::Relaxed), 4);
}

#[test]
fn bind_failure_and_bad_settings_are_typed_errors() {
    let _serial = common::serial();
    let (server, _) = start(loopback());
    let taken = server.local_addr();
    match loopback().with_addr(taken).start(Steered::default()) {
        Err(ServeError::Bind { addr, source }) => {
            assert_eq!(addr, taken);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    // Not an address of this host.
    let foreign: SocketAddr = "192.0.2.1:0".parse().unwrap();
    assert!(matches!(
        loopback().with_addr(foreign).start(Steered::default()),
        Err(ServeError::Bind { .. })
    ));
    for bad in [
        loopback().with_workers(0),
        loopback().with_workers(4).with_max_connections(3),
        loopback().with_max_header_bytes(10),
        loopback().with_read_timeout(Duration::ZERO),
        loopback().with_write_timeout(Duration::from_secs(7200)),
    ] {
        let err = bad.start(Steered::default()).unwrap_err();
        assert!(matches!(err, ServeError::Config { .. }), "{err:?}");
        assert!(!err.to_string().is_empty());
    }
    // The failed starts left no thread behind (a new thread names itself once it runs, hence the
    // bounded wait), and the first server still serves.
    wait_for(Duration::from_secs(10), || {
        (http_client::server_threads().len() == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", http_client::server_threads()));
    assert_serves(taken);
}

#[test]
fn malformed_requests_get_400_and_the_server_goes_on() {
    let _serial = common::serial();
    let (server, _) = start(loopback());
    let addr = server.local_addr();
    let garbage: [&[u8]; 7] = [
        b"GARBAGE\r\n\r\n",
        b"GET /metrics\r\n\r\n",          // no version (HTTP/0.9)
        b"GET /metrics HTTP/9.9\r\n\r\n", // unknown version
        b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", // header without a colon
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", // a TLS hello
        b"\0\0\0\0\0\0\0\0\r\n\r\n",
        b"GET /met\x01rics HTTP/1.1\r\n\r\n",
    ];
    for raw in garbage {
        let r = send(addr, raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(r.status, 400, "{raw:?} -> {r:?}");
    }
    assert_serves(addr);
    let s = settled(&server);
    assert_eq!(s.bad_request, garbage.len() as u64, "{s:?}");
    assert_eq!(s.ok, 1);
}

#[test]
fn unknown_paths_get_404_and_other_methods_405() {
    let _serial = common::serial();
    let (server, exposition) = start(loopback());
    let addr = server.local_addr();
    for path in [
        "/",
        "/metrics/",
        "/metricsx",
        "/../metrics",
        "/favicon.ico",
        "http://x/metrics",
    ] {
        let r = get(addr, path).unwrap();
        assert_eq!(r.status, 404, "{path} -> {r:?}");
    }
    for method in [
        "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "BREW",
    ] {
        for path in ["/metrics", "/health"] {
            let r = send(addr, request(method, path).as_bytes()).unwrap();
            assert_eq!(r.status, 405, "{method} {path} -> {r:?}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
        }
    }
    // A POST with a body: answered, and the unread body does not turn the close into a reset.
    let mut post = b"POST /metrics HTTP/1.1\r\nContent-Length: 5000\r\n\r\n".to_vec();
    post.extend_from_slice(&[b'x'; 5000]);
    let r = send(addr, &post).unwrap();
    assert_eq!(r.status, 405);
    let s = settled(&server);
    assert_eq!((s.not_found, s.method_not_allowed), (6, 17), "{s:?}");
    // Neither rendered anything.
    assert_eq!(exposition.calls.load(Ordering::Relaxed), 0);
    assert_serves(addr);
}

#[test]
fn oversized_heads_get_431() {
    let _serial = common::serial();
    let (server, _) = start(loopback().with_max_header_bytes(8 * 1024));
    let addr = server.local_addr();

    // One header longer than the limit, complete.
    let long = format!(
        "GET /metrics HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(send(addr, long.as_bytes()).unwrap().status, 431);
    // A head that never ends, cut at the limit.
    let endless = format!("GET /metrics HTTP/1.1\r\nX-Long: {}", "a".repeat(8200));
    assert_eq!(send(addr, endless.as_bytes()).unwrap().status, 431);
    // More headers than the server keeps, each short.
    let many: String = (0..40).map(|i| format!("X-{i}: {i}\r\n")).collect();
    let many = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
    assert!(many.len() < 8 * 1024);
    assert_eq!(send(addr, many.as_bytes()).unwrap().status, 431);

    // A client that streams 4 MiB of header: the server answers and closes; the client may see
    // its writes fail; the server reads no more than it must.
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut flooded = 0;
    let _ = conn.write_all(b"GET /metrics HTTP/1.1\r\nX-Flood: ");
    for _ in 0..(4 << 20) / 65536 {
        if conn.write_all(&[b'a'; 65536]).is_err() {
            break;
        }
        flooded += 65536;
    }
    drop(conn);

    assert_serves(addr);
    let s = settled(&server);
    assert_eq!(s.header_too_large, 4, "{s:?} after {flooded} bytes");
    assert_eq!(s.ok, 1);
}

#[test]
fn silent_and_dripping_clients_do_not_block_others() {
    let _serial = common::serial();
    let (server, _) = start(
        loopback()
            .with_workers(2)
            .with_read_timeout(Duration::from_secs(1)),
    );
    let addr = server.local_addr();

    // Holds one worker until its read timeout.
    let mut silent = TcpStream::connect(addr).unwrap();
    // Let the server take it before the next one (bounded wait on the server's own counter).
    wait_for(Duration::from_secs(10), || {
        (server.stats().accepted == 1).then_some(())
    })
    .expect("the silent connection was accepted");

    // Meanwhile the other worker answers.
    assert_serves(addr);

    // The silent client is answered 408 and closed once its read timeout has passed.
    let r = http_client::read_response(&mut silent).unwrap();
    assert_eq!(r.status, 408, "{r:?}");

    // A client that drips its request one byte at a time never completes the head in time.
    let mut drip = TcpStream::connect(addr).unwrap();
    let head = request("GET", "/metrics");
    let dripper = std::thread::spawn(move || {
        // At most 40 s of dripping, whatever happens.
        for &b in head.as_bytes().iter().cycle().take(400) {
            if drip.write_all(&[b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut rest = Vec::new();
        drip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = drip.read_to_end(&mut rest);
        String::from_utf8_lossy(&rest).into_owned()
    });
    let answer = dripper.join().unwrap();
    // Either the 408 arrived, or the close came as a reset while bytes were still dripping in;
    // the server's count says which it sent.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert_serves(addr);
    let s = settled(&server);
    assert_eq!(s.timed_out, 2, "{s:?}");
    assert_eq!(s.ok, 2);
}

#[test]
fn a_panicking_or_failing_exposition_answers_500_and_the_server_goes_on() {
    let _serial = common::serial();
    let (server, exposition) = start(loopback().with_workers(1));
    let addr = server.local_addr();

    for _ in 0..3 {
        exposition.panic_next.store(true, Ordering::Relaxed);
        let r = get(addr, "/metrics").unwrap();
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(r.body, "the exposition panicked\n");
        // The one worker survived the panic and answers the next request.
        assert_serves(addr);
    }
    exposition.fail_next.store(true, Ordering::Relaxed);
    let r = get(addr, "/metrics").unwrap();
    assert_eq!(r.status, 500);
    assert!(r.body.contains("the test asked for a failure"), "{r:?}");

    let s = settled(&server);
    assert_eq!((s.panics, s.internal_error, s.ok), (3, 4, 3), "{s:?}");
    assert_eq!(s.threads, 2, "the acceptor and the one worker");
}

#[test]
fn a_flood_of_connections_stays_bounded_and_the_aggregator_keeps_cycling() {
    const CLIENTS: usize = 200;
    const LIMIT: usize = 16;
    const WORKERS: usize = 2;
    let _serial = common::serial();
    let collector =
        common::install(laptime::Collector::builder().with_interval(Duration::from_millis(5)));
    // A producer recording spans the whole time.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let producing = Arc::clone(&producing);
        std::thread::spawn(move || {
            let mut spans = 0u64;
            while producing.load(Ordering::Relaxed) {
                let _span = laptime::start("http_test_work");
                spans += 1;
                if spans.is_multiple_of(1024) {
                    std::thread::yield_now();
                }
            }
            spans
        })
    };
    assert!(collector.flush());
    let cycles_before = collector.health().cycles;

    let (server, _) = start(
        loopback()
            .with_workers(WORKERS)
            .with_max_connections(LIMIT)
            // Long enough that no admitted connection times out while the flood is opened.
            .with_read_timeout(Duration::from_secs(60)),
    );
    let addr = server.local_addr();

    // Open every connection first, so they are all open at once, then send on each.
    let mut conns: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Every connection accepted and then either held open or refused: `accepted` is counted
    // before the refusal of the last one, so a read between the two sees one refusal short.
    wait_for(Duration::from_secs(20), || {
        let s = server.stats();
        let settled = s.refused + s.open_connections as u64 == s.accepted;
        (s.accepted == CLIENTS as u64 && settled).then_some(())
    })
    .unwrap_or_else(|| panic!("not all accepted and settled: {:?}", server.stats()));
    let during = server.stats();
    assert_eq!(during.threads, WORKERS + 1, "{during:?}");
    assert!(during.peak_connections <= LIMIT, "{during:?}");
    assert_eq!(during.refused, (CLIENTS - LIMIT) as u64, "{during:?}");

    let head = request("GET", "/metrics");
    let mut answered = [0usize; 6]; // 200, 503, other status, reset, timeout, unparsable
    for conn in &mut conns {
        let _ = conn.write_all(head.as_bytes());
    }
    for conn in &mut conns {
        match http_client::read_response(conn) {
            Ok(r) if r.status == 200 => answered[0] += 1,
            Ok(r) if r.status == 503 => answered[1] += 1,
            Ok(_) => answered[2] += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => answered[3] += 1,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => answered[4] += 1,
            Err(_) => answered[5] += 1,
        }
    }
    drop(conns);
    // Every admitted connection was served; every other one was refused (503, or a reset when
    // the request arrived after the refusal closed the socket); none hung.
    assert_eq!(answered[0], LIMIT, "{answered:?}");
    assert_eq!(answered[2] + answered[4], 0, "{answered:?}");
    assert_eq!(
        answered[1] + answered[3] + answered[5],
        CLIENTS - LIMIT,
        "{answered:?}"
    );

    let s = settled(&server);
    assert_eq!(s.ok, LIMIT as u64, "{s:?}");
    assert!(s.peak_connections <= LIMIT, "{s:?}");
    assert_eq!(s.threads, WORKERS + 1, "{s:?}");
    assert_serves(addr);

    // The aggregator went on cycling through the flood, and still answers a flush.
    assert!(collector.flush());
    let h = collector.health();
    assert!(
        h.cycles > cycles_before,
        "{} -> {}",
        cycles_before,
        h.cycles
    );
    producing.store(false, Ordering::Relaxed);
    let spans = producer.join().unwrap();
    assert!(collector.flush());
    let h = collector.health();
    assert_eq!(h.produced, h.records + h.dropped + h.in_rings, "{h:?}");
    assert!(spans > 0 && h.records > 0);
    assert_eq!(h.aggregator_restarts, 0);
}

#[test]
fn dropping_the_handle_stops_and_joins_every_thread() {
    let _serial = common::serial();
    assert!(
        http_client::server_threads().is_empty(),
        "{:?}",
        http_client::server_threads()
    );
    let (server, _) = start(loopback().with_workers(3));
    let addr = server.local_addr();
    // Even with a connection that never sends holding a worker.
    let _silent = TcpStream::connect(addr).unwrap();
    wait_for(Duration::from_secs(10), || {
        (server.stats().accepted == 1).then_some(())
    })
    .expect("accepted");
    assert_eq!(server.stats().threads, 4);
    wait_for(Duration::from_secs(10), || {
        (http_client::server_threads().len() == 4).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}", http_client::server_threads()));
    drop(server);
    // Joined: no server thread is left.
    assert!(
        http_client::server_threads().is_empty(),
        "{:?}",
        http_client::server_threads()
    );
    // And nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

/// `count` scrapes at once, one thread each; how many got a `200`.
fn scrapes_at_once(addr: SocketAddr, count: usize) -> usize {
    let scrapers: Vec<_> = (0..count)
        .map(|_| std::thread::spawn(move || scrape_ok(addr)))
        .collect();
    scrapers
        .into_iter()
        .map(|s| s.join().is_ok_and(|ok| ok))
        .filter(|ok| *ok)
        .count()
}

/// Scrapes a server under attack: starts `attack` (client threads that run until the flag they
/// are given is set), waits until they fill the connection table (`full` connections open),
/// scrapes [`SCRAPES`] times 300 ms apart, then stops and joins the attackers. Asserts that at
/// least 90 % of the scrapes got a `200` and the table never held more than `full`; returns the
/// server's counters.
fn scrapes_under(
    server: &MetricsServerHandle,
    full: usize,
    attack: impl FnOnce(Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>>,
) -> ServerStats {
    let stop = Arc::new(AtomicBool::new(false));
    let attackers = attack(Arc::clone(&stop));
    let filled = wait_for(Duration::from_secs(10), || {
        (server.stats().open_connections == full).then_some(())
    });
    let ok = (0..SCRAPES)
        .filter(|_| {
            let ok = scrape_ok(server.local_addr());
            std::thread::sleep(Duration::from_millis(300));
            ok
        })
        .count();
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let s = server.stats();
    assert!(filled.is_some(), "the attack did not fill the table: {s:?}");
    assert!(
        ok * 10 >= SCRAPES * 9,
        "{ok} of {SCRAPES} scrapes answered 200: {s:?}"
    );
    assert!(s.peak_connections <= full, "{s:?}");
    s
}

/// Scrapes per attack in [`scrapes_under`]; at least 90 % must get a `200`.
const SCRAPES: usize = 10;

/// How long any attacking client runs at most, whatever happens.
const ATTACK_LIMIT: Duration = Duration::from_secs(60);

/// `count` clients dripping a never-ending head (see [`http_attacks::drip`]), each connected
/// before this returns.
fn drippers(
    addr: SocketAddr,
    count: usize,
    every: Duration,
    reconnect: bool,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let until = Instant::now() + ATTACK_LIMIT;
    (0..count)
        .map(|_| {
            let conn = TcpStream::connect(addr).unwrap();
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                http_attacks::drip(addr, Some(conn), every, reconnect, &stop, until);
            })
        })
        .collect()
}

/// `count` clients that connect, send nothing and reconnect as soon as closed (see
/// [`http_attacks::idle`]), on small stacks.
fn idlers(
    addr: SocketAddr,
    count: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let until = Instant::now() + ATTACK_LIMIT;
    (0..count)
        .map(|_| {
            let stop = Arc::clone(stop);
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || http_attacks::idle(addr, &stop, until))
                .expect("an idle client thread")
        })
        .collect()
}

#[test]
fn a_scraper_queued_behind_as_many_slow_clients_as_workers_is_served() {
    const WORKERS: usize = 2;
    let _serial = common::serial();
    let (server, _) = start(
        loopback()
            .with_workers(WORKERS)
            .with_read_timeout(Duration::from_secs(1)),
    );
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    // Connected before the scraper, so they are accepted (and, one per worker, read) first; they
    // drip until their read timeout and on through the answer.
    let slow = drippers(addr, WORKERS, Duration::from_millis(10), false, &stop);
    let ok = scrape_ok(addr);
    stop.store(true, Ordering::Relaxed);
    for d in slow {
        d.join().unwrap();
    }
    let s = settled(&server);
    assert!(ok, "the scrape behind the slow clients failed: {s:?}");
    assert_eq!(s.ok, 1, "{s:?}");
}

#[test]
fn forty_dripping_clients_leave_room_for_a_scraper() {
    let _serial = common::serial();
    // The default workers, connection limit (32) and read timeout.
    let (server, _) = start(loopback());
    let addr = server.local_addr();
    // 40 clients, a byte each every 1.5 s (about 27 bytes a second in all), each reconnecting as
    // soon as it finds its connection closed.
    scrapes_under(&server, 32, |stop| {
        drippers(addr, 40, Duration::from_millis(1500), true, &stop)
    });
}

#[test]
fn a_thousand_reconnecting_idle_clients_leave_room_for_a_scraper() {
    let _serial = common::serial();
    let (server, _) = start(loopback());
    let addr = server.local_addr();
    let s = scrapes_under(&server, 32, |stop| idlers(addr, 1000, &stop));
    assert_eq!(s.threads, 3, "{s:?}");
}

#[test]
fn absolute_form_targets_naming_this_server_are_served() {
    let _serial = common::serial();
    let (server, _) = start(loopback());
    let addr = server.local_addr();
    let port = addr.port();
    for target in [
        format!("http://127.0.0.1:{port}/metrics"),
        format!("HTTP://127.0.0.1:{port}/metrics?x=1"),
        "http://127.0.0.1/metrics".to_owned(),
        format!("http://localhost:{port}/health"),
    ] {
        let r = get(addr, &target).unwrap();
        assert_eq!(r.status, 200, "{target} -> {r:?}");
    }
    // Another server's authority, or another port of this host: not found here.
    for target in [
        "http://example.invalid/metrics".to_owned(),
        format!("http://127.0.0.1:{}/metrics", port.wrapping_add(1).max(1)),
        format!("https://127.0.0.1:{port}/metrics"),
        format!("http://user@127.0.0.1:{port}/metrics"),
    ] {
        let r = get(addr, &target).unwrap();
        assert_eq!(r.status, 404, "{target} -> {r:?}");
    }
}

/// An exposition whose text changes only with its generation, slow to render, that counts the
/// renders running at once.
#[derive(Default)]
struct Slow {
    generation: Option<u64>,
    running: AtomicU64,
    most_at_once: AtomicU64,
}

impl Exposition for Slow {
    fn metrics(&self) -> Result<String, ExportError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok("# TYPE slow gauge\nslow 1\n".to_owned())
    }

    fn health(&self) -> Result<String, String> {
        Ok("ok\n".to_owned())
    }

    fn generation(&self) -> Option<u64> {
        self.generation
    }
}

/// 16 scrapes at once on 4 workers: `(renders, most renders at once, 200 answers)`.
fn concurrent_scrapes(exposition: Slow) -> (u64, u64, usize) {
    let exposition = Arc::new(exposition);
    let server = loopback()
        .with_workers(4)
        .start(Arc::clone(&exposition))
        .unwrap();
    let addr = server.local_addr();
    let ok = scrapes_at_once(addr, 16);
    let s = settled(&server);
    (
        s.renders,
        exposition.most_at_once.load(Ordering::SeqCst),
        ok,
    )
}

#[test]
fn scrapes_share_one_render_per_generation_and_renders_never_overlap() {
    let _serial = common::serial();
    // One generation throughout: rendered once, every scrape served those bytes.
    let (renders, at_once, ok) = concurrent_scrapes(Slow {
        generation: Some(7),
        ..Slow::default()
    });
    assert_eq!((renders, at_once, ok), (1, 1, 16));
    // No generation: rendered for every scrape, one at a time on 4 workers.
    let (renders, at_once, ok) = concurrent_scrapes(Slow::default());
    assert_eq!((renders, at_once, ok), (16, 1, 16));
}

#[test]
fn requests_past_the_rate_wait_their_turn_instead_of_being_refused() {
    const CLIENTS: usize = 12;
    let _serial = common::serial();
    let (server, _) = start(
        loopback()
            .with_workers(2)
            .with_max_connections(4)
            .with_request_rate(20),
    );
    let addr = server.local_addr();
    // Three times the connection limit, all at once: the first 4 are answered at once, the rest
    // wait (in the table, then in the listen queue) for the rate, and none is refused.
    let ok = scrapes_at_once(addr, CLIENTS);
    let s = settled(&server);
    assert_eq!(ok, CLIENTS, "{s:?}");
    assert_eq!((s.ok, s.refused), (CLIENTS as u64, 0), "{s:?}");
    assert!(s.paced > 0 && s.peak_connections <= 4, "{s:?}");
}

#[test]
fn the_prometheus_export_is_rendered_once_per_cycle_and_never_served_stale() {
    use laptime::export::prometheus::PrometheusExporter;

    let _serial = common::serial();
    let exporter = PrometheusExporter::builder().build().unwrap();
    // Cycles only when flushed: one generation until the test moves it on.
    let collector = common::install(
        laptime::Collector::builder()
            .with_interval(Duration::from_secs(60))
            .with_prometheus(exporter.clone()),
    );
    assert!(collector.flush());
    let server = loopback().with_workers(4).start(exporter).unwrap();
    let addr = server.local_addr();

    // One cycle: 20 scrapes at once share a render (or two, if one crossed the cache's age).
    assert_eq!(scrapes_at_once(addr, 20), 20);
    let s = settled(&server);
    assert!(s.renders <= 2 && s.cached >= 18, "{s:?}");

    // A new cycle is a new generation: what it published is served at once.
    laptime::record("http_cache_probe", Duration::from_micros(5));
    assert!(collector.flush());
    let r = get(addr, "/metrics").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("stage=\"http_cache_probe\""), "{}", r.body);
    assert_eq!(settled(&server).renders, s.renders + 1);
}
