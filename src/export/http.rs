//! A small HTTP endpoint for the Prometheus exposition (feature `http`): `GET /metrics` and
//! `GET /health` (and `HEAD` of both), on `127.0.0.1:9898` by default, served by a few named
//! threads of its own, with every resource a client could use bounded.
//!
//! The server parses requests with [`httparse`] on std's `TcpListener`: no async runtime, no
//! thread per connection, nothing that grows with what clients send.
//!
//! # Bounds
//!
//! | what | bound (default) | past it |
//! |---|---|---|
//! | threads | one acceptor + [`with_workers`](MetricsServerBuilder::with_workers) (2) | — |
//! | open connections, queued or being served | [`with_max_connections`](MetricsServerBuilder::with_max_connections) (32) | `503 Service Unavailable`, the connection closed at once |
//! | request head (request line + headers) | [`with_max_header_bytes`](MetricsServerBuilder::with_max_header_bytes) (8 KiB), 32 headers | `431 Request Header Fields Too Large` |
//! | time from accept to a whole request head | [`with_read_timeout`](MetricsServerBuilder::with_read_timeout) (2 s) | `408 Request Timeout`, closed |
//! | time to write a whole response | [`with_write_timeout`](MetricsServerBuilder::with_write_timeout) (5 s) | closed |
//! | memory | one head buffer per worker; a response is built, written and freed | — |
//!
//! A client that never sends (or drips a byte at a time) holds one worker until its read timeout;
//! one that sends a request and never reads the answer holds it for the read timeout, the render,
//! the write timeout and a 100 ms linger (about 7 s by default). The other workers keep answering.
//! A flood beyond the connection limit is refused by the acceptor with a `503`, without waiting
//! (it reads at most one head buffer that is already there, so the client sees the answer rather
//! than a reset). Nothing here runs on the aggregator thread: a scrape reads what the aggregator
//! published, so no client can slow the aggregator down.
//!
//! What the bounds cost is availability, never the host: a client that keeps opening connections
//! and sending nothing holds the workers and the connection slots, and scrapes meanwhile get `503`,
//! or `408` if they waited in the queue past the read timeout (it counts from accept). That is why
//! the default address is loopback.
//!
//! Answers: `200` for `/metrics` (content type `text/plain; version=0.0.4`) and a healthy
//! `/health`; `503` for an unhealthy one; `400` for a request `httparse` rejects; `404` for any
//! other path; `405` (with `Allow: GET, HEAD`) for other methods; `500` when the exposition fails
//! or panics (the panic is caught and counted; the server carries on). Every answer closes the
//! connection (`Connection: close`).
//!
//! Dropping the [`MetricsServerHandle`] stops the threads and joins them: usually within about
//! 100 ms (waking the acceptor is a loopback connect, itself bounded by 1 s), unless a call into the [`Exposition`] is in progress, which is waited for up to 5 s (a thread
//! still inside it after that is left to finish by itself). An idle server does not wake up: the
//! acceptor blocks in `accept`, the workers on a condition variable.
//!
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use laptime::export::ExportError;
//! use laptime::export::http::{Exposition, MetricsServer};
//!
//! struct Demo;
//!
//! impl Exposition for Demo {
//!     fn metrics(&self) -> Result<String, ExportError> {
//!         Ok("# TYPE demo_up gauge\ndemo_up 1\n".to_owned())
//!     }
//!     fn health(&self) -> Result<String, String> {
//!         Ok("ok\n".to_owned())
//!     }
//! }
//!
//! // Port 0: any free port; the handle says which one it got.
//! let server = MetricsServer::builder()
//!     .with_addr("127.0.0.1:0".parse().unwrap())
//!     .start(Demo)
//!     .expect("a free loopback port");
//! let mut conn = std::net::TcpStream::connect(server.local_addr()).unwrap();
//! conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK"));
//! assert!(answer.ends_with("demo_up 1\n"));
//! drop(server); // stops and joins the server's threads
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::export::ExportError;

/// What the server serves: the text exposition and a liveness verdict. Called on the server's
/// worker threads, one request at a time per worker; a panic inside either is answered with
/// `500` and counted in [`ServerStats::panics`], and the next request calls it again.
pub trait Exposition: Send + Sync + 'static {
    /// The Prometheus text exposition (content type text/plain; version=0.0.4).
    fn metrics(&self) -> Result<String, ExportError>;
    /// Liveness for /health: Ok(body) when healthy, Err(body) when not (503).
    fn health(&self) -> Result<String, String>;
}

impl<T: Exposition + ?Sized> Exposition for Arc<T> {
    fn metrics(&self) -> Result<String, ExportError> {
        (**self).metrics()
    }

    fn health(&self) -> Result<String, String> {
        (**self).health()
    }
}

/// The address a server listens on unless told otherwise: loopback only.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9898,
));

/// Headers a request may carry; more is answered `431`.
pub const MAX_HEADERS: usize = 32;

/// How long the acceptor waits after a failed `accept` (e.g. out of file descriptors) before it
/// tries again, rather than spinning on the error.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// The longest a worker blocks in one read or write before it looks at the stop flag again, and
/// the longest it lingers after an answer (see [`linger`]).
const IO_SLICE: Duration = Duration::from_millis(100);

/// How long dropping the handle waits for a thread still inside an [`Exposition`] call.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Bytes read and discarded after an answer, so the close is a FIN rather than a reset that could
/// destroy the answer before the client reads it.
const LINGER_BYTES: usize = 64 * 1024;

/// Namespace for [`MetricsServer::builder`].
#[derive(Debug)]
pub struct MetricsServer(());

impl MetricsServer {
    /// A builder with the defaults: [`DEFAULT_ADDR`], 2 workers, 32 connections, 8 KiB of request
    /// head, 2 s to receive it, 5 s to write the answer.
    pub fn builder() -> MetricsServerBuilder {
        MetricsServerBuilder::default()
    }
}

/// Configures and starts a [`MetricsServerHandle`]. Every setter has a default; see the module
/// docs for what each bound does.
#[derive(Debug, Clone)]
pub struct MetricsServerBuilder {
    addr: SocketAddr,
    workers: usize,
    max_connections: usize,
    max_header_bytes: usize,
    read_timeout: Duration,
    write_timeout: Duration,
}

impl Default for MetricsServerBuilder {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR,
            workers: 2,
            max_connections: 32,
            max_header_bytes: 8 * 1024,
            read_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
        }
    }
}

impl MetricsServerBuilder {
    /// The address to listen on. Port 0 takes any free port ([`MetricsServerHandle::local_addr`]
    /// tells which). An address other than loopback exposes the metrics to the network.
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Worker threads answering requests (1 to 64): how many clients are served at once, and so
    /// how many stalled clients it takes to delay a scrape by up to the read timeout.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Connections open at once, queued or being served (at least the worker count, at most
    /// 4 096); the acceptor answers `503` to any beyond.
    pub fn with_max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Largest request head (request line and headers), in bytes (256 B to 1 MiB); larger is
    /// answered `431`. Each worker holds one buffer of this size.
    pub fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// How long after its connection is accepted (queueing included) a request head must have
    /// arrived whole (1 ms to 1 h); a client still sending after that is answered `408` and closed.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How long writing one answer may take in all (1 ms to 1 h); a client reading slower than
    /// that is disconnected.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Checks the settings without binding anything.
    pub fn validate(&self) -> Result<(), ServeError> {
        let fail = |reason| Err(ServeError::Config { reason });
        if !(1..=64).contains(&self.workers) {
            return fail("workers must be 1 to 64");
        }
        if self.max_connections < self.workers || self.max_connections > 4096 {
            return fail("max_connections must be at least the worker count and at most 4096");
        }
        if !(256..=1 << 20).contains(&self.max_header_bytes) {
            return fail("max_header_bytes must be 256 B to 1 MiB");
        }
        let sane = Duration::from_millis(1)..=Duration::from_secs(3600);
        if !sane.contains(&self.read_timeout) || !sane.contains(&self.write_timeout) {
            return fail("read and write timeouts must be 1 ms to 1 h");
        }
        Ok(())
    }

    /// Binds the address and starts the acceptor and worker threads (`laptime-http-accept`,
    /// `laptime-http-N`). Fails, without leaving a thread behind, when a setting is out of range,
    /// the address cannot be bound, or a thread cannot be spawned.
    pub fn start(self, exposition: impl Exposition) -> Result<MetricsServerHandle, ServeError> {
        self.validate()?;
        let bind_err = |source| ServeError::Bind {
            addr: self.addr,
            source,
        };
        let listener = TcpListener::bind(self.addr).map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;

        let shared = Arc::new(Shared {
            exposition: Box::new(exposition),
            limits: self.clone(),
            stop: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::with_capacity(self.max_connections)),
            ready: Condvar::new(),
            counters: Arc::default(),
        });
        let mut handle = MetricsServerHandle {
            shared: Arc::clone(&shared),
            local_addr,
            threads: Vec::with_capacity(self.workers + 1),
        };
        for n in 0..self.workers {
            let shared = Arc::clone(&shared);
            handle.spawn(format!("laptime-http-{n}"), move || worker(&shared))?;
        }
        handle.spawn("laptime-http-accept".to_owned(), move || {
            acceptor(&shared, &listener)
        })?;
        Ok(handle)
    }
}

/// Why a server could not start, with what to change.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// A setting is out of range.
    Config {
        /// Which setting, and its range.
        reason: &'static str,
    },
    /// The address could not be bound (in use, not an address of this host, no permission).
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// A server thread could not be spawned.
    Spawn {
        /// What the operating system said.
        source: io::Error,
    },
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { reason } => write!(f, "metrics server configuration: {reason}"),
            Self::Bind { addr, source } => write!(
                f,
                "cannot listen on {addr}: {source}; pick a free port (or port 0 for any) on an \
                 address of this host"
            ),
            Self::Spawn { source } => write!(
                f,
                "cannot spawn a metrics server thread: {source}; lower the worker count or the \
                 process's thread use"
            ),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config { .. } => None,
            Self::Bind { source, .. } | Self::Spawn { source } => Some(source),
        }
    }
}

/// What a server has done since it started, from its own counters. Every answer is counted under
/// its status; an answer whose write then timed out is also counted in `timed_out`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted (answered or refused).
    pub accepted: u64,
    /// `200` answers (`/metrics`, and `/health` when healthy).
    pub ok: u64,
    /// `400`: requests `httparse` could not parse.
    pub bad_request: u64,
    /// `404`: paths other than `/metrics` and `/health`.
    pub not_found: u64,
    /// `405`: methods other than `GET` and `HEAD`.
    pub method_not_allowed: u64,
    /// Requests whose head did not arrive whole within the read timeout (answered `408`), or
    /// whose answer could not be written within the write timeout.
    pub timed_out: u64,
    /// `431`: request heads over the size or header-count limit.
    pub header_too_large: u64,
    /// `500`: the exposition returned an error or panicked.
    pub internal_error: u64,
    /// Panics caught in a worker: inside [`Exposition`] calls (each also answered `500`), or in the
    /// server's own code (the connection is then closed without an answer).
    pub panics: u64,
    /// `503` from `/health`: the exposition reported itself unhealthy.
    pub unhealthy: u64,
    /// `503` from the acceptor: connections refused because the limit was reached.
    pub refused: u64,
    /// Connections the client closed or reset before a whole request arrived.
    pub closed_early: u64,
    /// `accept` calls that failed (e.g. the process ran out of file descriptors).
    pub accept_errors: u64,
    /// Connections open now, queued or being served.
    pub open_connections: usize,
    /// The most connections open at once since start (never above the limit).
    pub peak_connections: usize,
    /// Server threads running now (the acceptor and the workers).
    pub threads: usize,
}

/// A running server. Dropping it stops the acceptor and the workers and joins them (see the
/// module docs for how long that can take).
#[must_use = "dropping the handle stops the server at once"]
pub struct MetricsServerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for MetricsServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsServerHandle")
            .field("local_addr", &self.local_addr)
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl MetricsServerHandle {
    /// The address the server listens on (with the port it was given, if it asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters now.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ServerStats {
            accepted: get(&c.accepted),
            ok: get(&c.ok),
            bad_request: get(&c.bad_request),
            not_found: get(&c.not_found),
            method_not_allowed: get(&c.method_not_allowed),
            timed_out: get(&c.timed_out),
            header_too_large: get(&c.header_too_large),
            internal_error: get(&c.internal_error),
            panics: get(&c.panics),
            unhealthy: get(&c.unhealthy),
            refused: get(&c.refused),
            closed_early: get(&c.closed_early),
            accept_errors: get(&c.accept_errors),
            open_connections: c.open.load(Ordering::Relaxed),
            peak_connections: c.peak_open.load(Ordering::Relaxed),
            threads: c.threads.load(Ordering::Relaxed),
        }
    }

    fn spawn(
        &mut self,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), ServeError> {
        let counters = Arc::clone(&self.shared.counters);
        counters.threads.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let _running = ThreadCount(counters);
            body();
        });
        match spawned {
            Ok(join) => {
                self.threads.push(join);
                Ok(())
            }
            Err(source) => {
                // The closure (and its count guard) never ran. Dropping `self` stops the threads
                // already started.
                self.shared.counters.threads.fetch_sub(1, Ordering::Relaxed);
                Err(ServeError::Spawn { source })
            }
        }
    }
}

impl Drop for MetricsServerHandle {
    fn drop(&mut self) {
        {
            // Set under the queue's lock: a worker checks the flag under it before waiting, so
            // none can miss the wake-up below.
            let _queue = self.shared.queue.lock();
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        self.shared.ready.notify_all();
        // The acceptor blocks in `accept` (no polling while idle); a connection of our own wakes
        // it to see the flag. Should that fail (a firewall on a non-loopback address), the
        // acceptor is left behind below like a stuck worker.
        let _ = TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1));
        let until = Instant::now() + STOP_WAIT;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        for t in self.threads.drain(..) {
            // A thread still inside an exposition call after STOP_WAIT is detached; it exits when
            // the call returns. Joining a finished thread cannot block.
            if t.is_finished() {
                let _ = t.join();
            }
        }
        // Connections still queued are closed unanswered.
        self.shared.queue.lock().clear();
    }
}

/// Where to connect to reach a listener bound to `addr`: the address itself, or loopback for a
/// wildcard address.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Decrements the running-thread count when its thread ends, however it ends.
struct ThreadCount(Arc<Counters>);

impl Drop for ThreadCount {
    fn drop(&mut self) {
        self.0.threads.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shared {
    exposition: Box<dyn Exposition>,
    limits: MetricsServerBuilder,
    stop: AtomicBool,
    /// Accepted connections waiting for a worker. Never longer than `max_connections`: the
    /// acceptor admits a connection only while fewer than that are open.
    queue: Mutex<VecDeque<Conn>>,
    ready: Condvar,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    ok: AtomicU64,
    bad_request: AtomicU64,
    not_found: AtomicU64,
    method_not_allowed: AtomicU64,
    timed_out: AtomicU64,
    header_too_large: AtomicU64,
    internal_error: AtomicU64,
    panics: AtomicU64,
    unhealthy: AtomicU64,
    refused: AtomicU64,
    closed_early: AtomicU64,
    accept_errors: AtomicU64,
    /// Connections admitted and not yet closed. Only the acceptor increments it (so check and
    /// increment need no compare-and-swap); a `Conn` decrements it when dropped.
    open: AtomicUsize,
    peak_open: AtomicUsize,
    threads: AtomicUsize,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// An admitted connection: counted in `open` until dropped.
struct Conn {
    stream: TcpStream,
    accepted: Instant,
    counters: Arc<Counters>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn acceptor(shared: &Shared, listener: &TcpListener) {
    let counters = &shared.counters;
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            // The stop flag is set before the handle's wake-up connection is made, so that
            // connection (or any accepted after the stop) is closed unanswered.
            Ok(_) if shared.stop.load(Ordering::Relaxed) => return,
            Ok((stream, _peer)) => {
                Counters::bump(&counters.accepted);
                admit(shared, stream);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                Counters::bump(&counters.accept_errors);
                std::thread::sleep(ACCEPT_RETRY);
            }
        }
    }
}

fn admit(shared: &Shared, stream: TcpStream) {
    let counters = &shared.counters;
    let open = counters.open.load(Ordering::Relaxed);
    if open >= shared.limits.max_connections {
        Counters::bump(&counters.refused);
        refuse(stream);
        return;
    }
    counters.open.fetch_add(1, Ordering::Relaxed);
    counters.peak_open.fetch_max(open + 1, Ordering::Relaxed);
    let conn = Conn {
        stream,
        accepted: Instant::now(),
        counters: Arc::clone(counters),
    };
    let _ = conn.stream.set_nodelay(true);
    let mut queue = shared.queue.lock();
    queue.push_back(conn);
    drop(queue);
    shared.ready.notify_one();
}

/// Answers `503` on the acceptor thread without ever blocking it: the socket is made
/// non-blocking, whatever already arrived is read (so the close is less likely to be a reset),
/// the answer is written if the socket takes it at once, and the connection is closed.
fn refuse(mut stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut scratch = [0u8; 1024];
    for _ in 0..8 {
        match stream.read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let answer = response(
        Status::Unavailable,
        TEXT,
        "too many connections, try later\n",
        false,
    );
    let _ = stream.write(&answer);
    let _ = stream.shutdown(Shutdown::Write);
}

fn worker(shared: &Shared) {
    let mut buf = vec![0u8; shared.limits.max_header_bytes];
    loop {
        let conn = {
            let mut queue = shared.queue.lock();
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(conn) = queue.pop_front() {
                    break conn;
                }
                shared.ready.wait(&mut queue);
            }
        };
        // `serve` catches the exposition's panics itself; this catches the server's own, so a
        // bug in one answer cannot take a worker away. Nothing shared is left half-updated: the
        // counters are atomics and the buffer is overwritten by the next request.
        if catch_unwind(AssertUnwindSafe(|| serve(shared, &mut buf, conn))).is_err() {
            Counters::bump(&shared.counters.panics);
        }
    }
}

/// What the request head turned out to be.
enum Head {
    /// A method and a path the server knows what to do with.
    Request { method: Method, route: Route },
    /// Over the size or header-count limit.
    TooLarge,
    /// Not HTTP/1.x as `httparse` understands it.
    Malformed,
    /// Not whole within the read timeout.
    TimedOut,
    /// The client went away first.
    Closed,
    /// The server is stopping.
    Stopped,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

#[derive(Clone, Copy)]
enum Route {
    Metrics,
    Health,
    Unknown,
}

fn serve(shared: &Shared, buf: &mut [u8], conn: Conn) {
    let counters = &shared.counters;
    let stream = &conn.stream;
    let head = read_head(
        stream,
        buf,
        conn.accepted + shared.limits.read_timeout,
        &shared.stop,
    );
    let Some(answer) = answer(shared, head) else {
        return;
    };
    let write_deadline = Instant::now() + shared.limits.write_timeout;
    match write_all_by(stream, &answer, write_deadline, &shared.stop) {
        Ok(()) => {
            let _ = stream.shutdown(Shutdown::Write);
            linger(stream, buf, &shared.stop);
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Counters::bump(&counters.timed_out),
        Err(_) => {}
    }
}

/// The bytes to send for `head`, counted under their status; `None` when nothing is to be sent.
fn answer(shared: &Shared, head: Head) -> Option<Vec<u8>> {
    let c = &shared.counters;
    let plain = |counter: &AtomicU64, status, body: &str| {
        Counters::bump(counter);
        Some(response(status, TEXT, body, false))
    };
    let (method, route) = match head {
        Head::Stopped => return None,
        Head::Closed => {
            Counters::bump(&c.closed_early);
            return None;
        }
        Head::TimedOut => {
            return plain(
                &c.timed_out,
                Status::RequestTimeout,
                "request head not received in time\n",
            );
        }
        Head::TooLarge => {
            return plain(
                &c.header_too_large,
                Status::HeaderTooLarge,
                "request head too large\n",
            );
        }
        Head::Malformed => return plain(&c.bad_request, Status::BadRequest, "malformed request\n"),
        Head::Request { method, route } => (method, route),
    };
    let head_only = method == Method::Head;
    if let Route::Unknown = route {
        Counters::bump(&c.not_found);
        return Some(response(
            Status::NotFound,
            TEXT,
            "not found: try /metrics or /health\n",
            head_only,
        ));
    }
    if method == Method::Other {
        return plain(
            &c.method_not_allowed,
            Status::MethodNotAllowed,
            "only GET and HEAD\n",
        );
    }
    let exposition = &*shared.exposition;
    // AssertUnwindSafe: the server keeps nothing a panic could leave half-updated (it only holds
    // the returned string); the exposition's own state is its to keep consistent, and it is
    // called again for the next request.
    let outcome = match route {
        Route::Metrics => catch_unwind(AssertUnwindSafe(|| exposition.metrics()))
            .map(|r| r.map_err(|e| format!("metrics unavailable: {e}\n"))),
        _ => catch_unwind(AssertUnwindSafe(|| exposition.health())),
    };
    let (counter, status, content_type, body) = match (route, outcome) {
        (_, Err(_panic)) => {
            Counters::bump(&c.panics);
            (
                &c.internal_error,
                Status::InternalError,
                TEXT,
                "the exposition panicked\n".to_owned(),
            )
        }
        (Route::Metrics, Ok(Ok(text))) => (&c.ok, Status::Ok, EXPOSITION, text),
        (Route::Metrics, Ok(Err(text))) => (&c.internal_error, Status::InternalError, TEXT, text),
        (_, Ok(Ok(text))) => (&c.ok, Status::Ok, TEXT, text),
        (_, Ok(Err(text))) => (&c.unhealthy, Status::Unavailable, TEXT, text),
    };
    Counters::bump(counter);
    Some(response(status, content_type, &body, head_only))
}

/// The answers the server gives.
#[derive(Clone, Copy)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeaderTooLarge,
    InternalError,
    Unavailable,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Self::Ok => "200 OK",
            Self::BadRequest => "400 Bad Request",
            Self::NotFound => "404 Not Found",
            Self::MethodNotAllowed => "405 Method Not Allowed",
            Self::RequestTimeout => "408 Request Timeout",
            Self::HeaderTooLarge => "431 Request Header Fields Too Large",
            Self::InternalError => "500 Internal Server Error",
            Self::Unavailable => "503 Service Unavailable",
        }
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A whole answer: status line, headers (`Content-Length` always that of `body`, so a `HEAD`
/// answer says what a `GET` would get), and the body unless `head_only`.
fn response(status: Status, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let allow = match status {
        Status::MethodNotAllowed => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    let mut bytes = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        status.line(),
        body.len()
    )
    .into_bytes();
    if !head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

/// Reads until the buffer holds a whole request head, the buffer is full, the deadline passes or
/// the server stops. Each read blocks at most [`IO_SLICE`].
fn read_head(mut stream: &TcpStream, buf: &mut [u8], deadline: Instant, stop: &AtomicBool) -> Head {
    let mut filled = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Head::Stopped;
        }
        let now = Instant::now();
        if now >= deadline {
            return Head::TimedOut;
        }
        if stream
            .set_read_timeout(Some(IO_SLICE.min(deadline - now)))
            .is_err()
        {
            return Head::Closed;
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Head::Closed,
            Ok(n) => filled += n,
            Err(e) if is_retry(&e) => continue,
            Err(_) => return Head::Closed,
        }
        if let Some(head) = parse_head(&buf[..filled], filled == buf.len()) {
            return head;
        }
    }
}

/// What the bytes received so far make of the request head, or `None` to read more. `full`: they
/// fill the head buffer, so no more can come.
fn parse_head(received: &[u8], full: bool) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(received) {
        Ok(httparse::Status::Complete(_)) => {
            let method = match request.method {
                Some("GET") => Method::Get,
                Some("HEAD") => Method::Head,
                _ => Method::Other,
            };
            let path = request.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            let route = match path {
                "/metrics" => Route::Metrics,
                "/health" => Route::Health,
                _ => Route::Unknown,
            };
            Some(Head::Request { method, route })
        }
        Ok(httparse::Status::Partial) if full => Some(Head::TooLarge),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => Some(Head::TooLarge),
        Err(_) => Some(Head::Malformed),
    }
}

/// The answer a worker gives a client that sends `reads` (one element per `read` that returned
/// data) and then closes its side, with a head buffer of `max_header_bytes` and an exposition
/// that answers `/metrics` with `fuzz_metrics 1` and is healthy; `None` when the server sends
/// nothing (the head was not whole when the client closed). Runs the server's own head parsing
/// (`parse_head`, as `read_head` calls it after each read) and answer (`answer`) without a
/// socket.
///
/// It exists for fuzzing (`fuzz/fuzz_targets/http_request.rs`, replayed by
/// `tests/fuzz_regressions.rs`) and is not part of the API.
#[doc(hidden)]
pub fn answer_for_fuzzing(reads: &[&[u8]], max_header_bytes: usize) -> Option<Vec<u8>> {
    struct Fixed;
    impl Exposition for Fixed {
        fn metrics(&self) -> Result<String, ExportError> {
            Ok("fuzz_metrics 1\n".to_owned())
        }
        fn health(&self) -> Result<String, String> {
            Ok("ok\n".to_owned())
        }
    }
    let limits = MetricsServer::builder().with_max_header_bytes(max_header_bytes);
    let mut buf = vec![0u8; limits.max_header_bytes];
    let shared = Shared {
        exposition: Box::new(Fixed),
        limits,
        stop: AtomicBool::new(false),
        queue: Mutex::new(VecDeque::new()),
        ready: Condvar::new(),
        counters: Arc::default(),
    };
    let mut filled = 0;
    let mut head = Head::Closed;
    for read in reads.iter().filter(|r| !r.is_empty()) {
        // A read fills at most what is left of the buffer; what does not fit stays unread.
        let n = read.len().min(buf.len() - filled);
        buf[filled..filled + n].copy_from_slice(&read[..n]);
        filled += n;
        if let Some(parsed) = parse_head(&buf[..filled], filled == buf.len()) {
            head = parsed;
            break;
        }
    }
    answer(&shared, head)
}

/// Writes all of `bytes` before `deadline` (an error of kind `TimedOut` after it), each write
/// blocking at most [`IO_SLICE`].
fn write_all_by(
    mut stream: &TcpStream,
    mut bytes: &[u8],
    deadline: Instant,
    stop: &AtomicBool,
) -> io::Result<()> {
    while !bytes.is_empty() {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(IO_SLICE.min(deadline - now)))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// After the answer and our FIN: reads and discards what the client still sends, until it
/// closes, [`LINGER_BYTES`] or [`IO_SLICE`]. Closing a socket with unread input makes the kernel
/// send a reset, which can destroy the answer in the client's buffers before it is read (a client
/// whose oversized head was cut off at the limit is the usual case).
fn linger(mut stream: &TcpStream, buf: &mut [u8], stop: &AtomicBool) {
    let until = Instant::now() + IO_SLICE;
    let mut discarded = 0;
    while discarded < LINGER_BYTES && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until || stream.set_read_timeout(Some(until - now)).is_err() {
            return;
        }
        match stream.read(buf) {
            Ok(0) => return,
            Ok(n) => discarded += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A read or write that timed out (its slice, not the deadline) or was interrupted: try again.
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
