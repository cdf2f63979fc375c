//! The clients that attacked the `/metrics` endpoint, and the scraper it must still serve: shared
//! by `tests/http.rs` (bounded runs that assert success counts) and the `endpoint` stress run
//! (`stress/src/endpoint.rs`, figures). Each client runs on the calling thread until `stop` is
//! set or `until` passes; every exchange is bounded by [`EXCHANGE`]. Loopback only.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long one scrape (or connect) may take before it counts as failed: half a Prometheus
/// scrape timeout's default.
pub const EXCHANGE: Duration = Duration::from_secs(5);

/// One scrape as a well-behaved scraper makes it: connect, send the whole request at once, read
/// the answer until the server closes, all within [`EXCHANGE`]. Whether it got a `200`.
pub fn scrape_ok(addr: SocketAddr) -> bool {
    let exchange = || -> std::io::Result<bool> {
        let until = Instant::now() + EXCHANGE;
        let mut conn = TcpStream::connect_timeout(&addr, EXCHANGE)?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: scraper\r\n\r\n")?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            conn.set_read_timeout(Some(left))?;
            match conn.read(&mut chunk)? {
                0 => break,
                n => answer.extend_from_slice(&chunk[..n]),
            }
        }
        Ok(answer.starts_with(b"HTTP/1.1 200 "))
    };
    exchange().unwrap_or(false)
}

/// Sends a request head that never ends, one byte every `every`, on `conn` (or a connection of
/// its own); when the server closes it, opens a new one if `reconnect`, else returns.
pub fn drip(
    addr: SocketAddr,
    conn: Option<TcpStream>,
    every: Duration,
    reconnect: bool,
    stop: &AtomicBool,
    until: Instant,
) {
    let head = b"GET /metrics HTTP/1.1\r\nX-Drip: ";
    let mut conn = conn.map(|c| (c, 0usize));
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        let (stream, sent) = match &mut conn {
            Some(c) => c,
            None => match TcpStream::connect_timeout(&addr, EXCHANGE) {
                Ok(s) => conn.insert((s, 0)),
                Err(_) => continue,
            },
        };
        let byte = head.get(*sent).copied().unwrap_or(b'a');
        if stream.write_all(&[byte]).is_ok() {
            *sent += 1;
        } else if reconnect {
            conn = None;
            continue;
        } else {
            return;
        }
        // In slices, so a stop is seen within 50 ms.
        let next = Instant::now() + every;
        while !stop.load(Ordering::Relaxed) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
        }
    }
}

/// Connects and sends nothing; reconnects as soon as the server closes the connection (or
/// answers: a `503` comes before the close).
pub fn idle(addr: SocketAddr, stop: &AtomicBool, until: Instant) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        let Ok(mut conn) = TcpStream::connect_timeout(&addr, EXCHANGE) else {
            continue;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            match conn.read(&mut buf) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                _ => break,
            }
        }
    }
}

/// Scrapes in a tight loop.
pub fn flood(addr: SocketAddr, stop: &AtomicBool, until: Instant) {
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        scrape_ok(addr);
    }
}
