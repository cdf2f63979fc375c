//! A minimal HTTP/1.1 client for the endpoint tests: one request per connection, loopback only,
//! every wait bounded. Included with `#[path]` by the tests that talk HTTP.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long any one exchange may take in all before the client gives up.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

/// A parsed answer.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Connects to `addr` (within 5 s).
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
}

/// Sends `raw` as is and reads the answer until the server closes.
pub fn send(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let mut conn = connect(addr)?;
    conn.write_all(raw)?;
    read_response(&mut conn)
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    send(addr, request("GET", path).as_bytes())
}

/// A request without a body.
pub fn request(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
}

/// Reads until the server closes (at most [`EXCHANGE_LIMIT`]) and parses what came.
pub fn read_response(conn: &mut TcpStream) -> io::Result<Response> {
    let until = Instant::now() + EXCHANGE_LIMIT;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    parse(&bytes)
}

/// Splits an answer into status, head and body (de-chunked if it came in chunks).
pub fn parse(bytes: &[u8]) -> io::Result<Response> {
    let text = String::from_utf8_lossy(bytes);
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {text:?}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut response = Response {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(response)
}

/// The data of a chunked body: `<hex size>\r\n<data>\r\n` ... `0\r\n\r\n`.
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Percent-encodes `s` for a query string.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Calls `probe` every 50 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Names of this process's threads that belong to a metrics server (Linux: `/proc/self/task`).
pub fn server_threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("laptime-http"))
        .collect()
}
