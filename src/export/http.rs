//! A small HTTP endpoint for the Prometheus exposition (feature `http`): `GET /metrics`,
//! `GET /health` and `GET /stats?window=…` (and `HEAD` of each), on `127.0.0.1:9898` by default,
//! served by a few named threads of its own, with every resource a client could use bounded.
//!
//! `/stats` is the structured view `laptime top` reads: one window of the last published
//! [`Snapshot`] as JSON with a `version` field (the schema is [`stats_json`]'s,
//! described in `docs/stats-endpoint.md`). `window` is `1s`, `5s`, `60s`, `cumulative` or another
//! kept window's length; without it, the first window the process keeps. A query it does not
//! understand (another parameter, a window given twice or not kept) is answered `400` with the
//! reason.
//!
//! The server parses requests with [`httparse`] on one event loop ([`mio`], the acceptor
//! thread) that accepts, reads every request head and writes every answer without blocking on any
//! one client; the workers only call the [`Exposition`]. No async runtime, no thread per
//! connection, nothing that grows with what clients send beyond the bounds below.
//!
//! # Bounds
//!
//! | what | bound (default) | past it |
//! |---|---|---|
//! | threads | one acceptor (the event loop) + [`with_workers`](MetricsServerBuilder::with_workers) (2) | — |
//! | open connections, being read, answered or lingering | [`with_max_connections`](MetricsServerBuilder::with_max_connections) (32) | the oldest connection without a whole request (and open at least 50 ms) is evicted with a `503`; if none is, new connections wait in the kernel's listen queue until one is answered or grows old enough |
//! | requests answered | [`with_request_rate`](MetricsServerBuilder::with_request_rate) (200 a second, after a burst of the connection limit) | the request waits for its turn, its connection open |
//! | request head (request line + headers) | [`with_max_header_bytes`](MetricsServerBuilder::with_max_header_bytes) (8 KiB), 32 headers | `431 Request Header Fields Too Large` |
//! | time from accept to a whole request head | [`with_read_timeout`](MetricsServerBuilder::with_read_timeout) (2 s) | `408 Request Timeout`, closed |
//! | time to write a whole response | [`with_write_timeout`](MetricsServerBuilder::with_write_timeout) (5 s) | closed |
//! | renders of the exposition | one at a time; once per [`generation`](Exposition::generation) (for the Prometheus exporter: once per aggregator cycle), at least once a second | later scrapes wait for the render in progress and share its bytes |
//! | renders of `/stats` | one at a time; once per published snapshot and window | later requests wait for the render in progress and share its bytes |
//! | memory | per open connection, the head bytes received so far; one rendered exposition and one `/stats` document per kept window, shared by every answer being written | — |
//!
//! Every connection is read as its bytes arrive, from the moment it is accepted, so its read
//! timeout counts only its own slowness: a scraper that sends its request at once is answered at
//! once however many slow, silent or dripping clients are open, and a slow client holds a slot in
//! the connection table, never a thread. When the table is full, a new connection takes the
//! place of the one that has waited longest without sending a whole request (a connection that
//! was answered and only lingers goes first), so clients that connect and send nothing, or drip,
//! cannot keep a well-behaved scraper out. A client that never reads its answer holds its slot
//! for the write timeout, no thread. Nothing here runs on the aggregator thread: a scrape reads
//! what the aggregator published, so no client can slow the aggregator down.
//!
//! What the bounds cost is availability, never the host: a flood of clients that each send a
//! whole request is answered at the request rate, the rest waiting (in the table, then in the
//! kernel's listen queue) without costing a cycle, so a scraper among them waits its turn (about
//! a second behind 200 flooding clients) and the host keeps its CPU. That is why the default
//! address is loopback.
//!
//! Answers: `200` for `/metrics` (content type `text/plain; version=0.0.4`, or the format the
//! request's `Accept` header weighs highest of those the [`Exposition`] offers: the
//! [`PrometheusExporter`](crate::export::prometheus::PrometheusExporter) offers OpenMetrics and,
//! with feature `prometheus-native`, protobuf), a healthy
//! `/health` and `/stats` (`application/json`); `503` for an unhealthy one, and for `/stats` while
//! no snapshot is published; `400` for a request `httparse` rejects and a `/stats` query it
//! cannot answer (the body says why); `404` for any other path; `405` (with `Allow: GET, HEAD`)
//! for other methods; `500` when the exposition fails or panics (the panic is caught and counted;
//! the server carries on). Every answer closes the connection (`Connection: close`).
//!
//! Dropping the [`MetricsServerHandle`] stops the threads and joins them, usually within a few
//! milliseconds, unless a call into the [`Exposition`] is in progress, which is waited for up to
//! 5 s (a thread still inside it after that is left to finish by itself). Connections still open
//! are closed unanswered. An idle server does not wake up: the event loop blocks in `poll` with
//! no timeout while no connection is open, the workers on a condition variable.
//!
//! A request target in absolute form (`GET http://127.0.0.1:9898/metrics`, RFC 9112 §3.2.2) is
//! served when its authority is this server's address (or `localhost` on loopback; any host on a
//! wildcard address), with this server's port or none; another authority is `404`.
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
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::{Condvar, Mutex};

use crate::export::ExportError;
use crate::export::format::Accept;
pub use crate::export::format::Format;
use crate::export::stats_json;
use crate::stats::{Snapshot, Window};

/// What the server serves: the text exposition and a liveness verdict. Called on the server's
/// worker threads, one request at a time per worker (and `metrics` on one worker at a time); a panic inside either is answered with
/// `500` and counted in [`ServerStats::panics`], and the next request calls it again.
pub trait Exposition: Send + Sync + 'static {
    /// The Prometheus text exposition (content type text/plain; version=0.0.4).
    fn metrics(&self) -> Result<String, ExportError>;

    /// The formats besides text this exposition can render; `/metrics` answers in the one the
    /// request's `Accept` header weighs highest (text on a tie, and when it names none of them).
    /// Default: none. Called once, when the server starts.
    fn formats(&self) -> Vec<Format> {
        Vec::new()
    }

    /// The exposition in `format` ([`Format::Text`] or one of [`formats`](Self::formats)).
    /// Default: [`metrics`](Self::metrics)' text.
    fn metrics_in(&self, format: Format) -> Result<Vec<u8>, ExportError> {
        let _ = format;
        self.metrics().map(String::into_bytes)
    }
    /// Liveness for /health: Ok(body) when healthy, Err(body) when not (503).
    fn health(&self) -> Result<String, String>;

    /// A number that changes whenever [`metrics`](Self::metrics) would render other text (figures
    /// taken at scrape time aside), or `None` (the default) when there is none. With `Some`, the
    /// server renders once per value and serves those bytes to every scrape while the value
    /// stays the same, for at most a second; with `None` it renders for every scrape. Called on
    /// every scrape, on the server's threads: keep it to a load.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// The snapshot `/stats` reads, or `None` while there is none (answered `503`). The default
    /// is the current collector's last published one ([`crate::snapshot`]): one atomic load, no
    /// lock. Called on every `/stats` request, on the server's threads: keep it to a load.
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        crate::snapshot()
    }
}

impl<T: Exposition + ?Sized> Exposition for Arc<T> {
    fn metrics(&self) -> Result<String, ExportError> {
        (**self).metrics()
    }

    fn formats(&self) -> Vec<Format> {
        (**self).formats()
    }

    fn metrics_in(&self, format: Format) -> Result<Vec<u8>, ExportError> {
        (**self).metrics_in(format)
    }

    fn health(&self) -> Result<String, String> {
        (**self).health()
    }

    fn generation(&self) -> Option<u64> {
        (**self).generation()
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        (**self).snapshot()
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
/// A connection younger than this is never evicted to make room: it may be a client between its
/// connect and its request's write (a scraper that connected a moment ago is not "silent").
/// Eviction then waits for the oldest silent connection to reach it.
const EVICT_GRACE: Duration = Duration::from_millis(50);

/// The longest a connection lingers after its answer (see [`State::Lingering`]).
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
    request_rate: u32,
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
            request_rate: 200,
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

    /// Worker threads calling the exposition (1 to 64): how many `/metrics` and `/health`
    /// requests are answered at once (renders of `/metrics` still run one at a time). Reading
    /// requests and writing answers is the event loop's, so a slow client holds no worker.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Connections open at once, being read, answered or lingering (at least the worker count,
    /// at most 4 096). Past it the one that has waited longest without a whole request is evicted
    /// with a `503`, or the newcomer is answered `503` when every one has a request.
    pub fn with_max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Largest request head (request line and headers), in bytes (256 B to 1 MiB); larger is
    /// answered `431`. Each open connection holds what it sent of its head, up to this size.
    pub fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// How long after its connection is accepted a request head must have arrived whole (1 ms to
    /// 1 h); a client still sending after that is answered `408` and closed. Every connection is
    /// read from the moment it is accepted, so no one waits here for another client.
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

    /// Requests answered per second at most (1 to 100 000), after a first burst of as many as
    /// the connection limit: requests beyond it wait, connection open, for their turn, and when
    /// every open connection holds one, new connections wait in the kernel's listen queue. This
    /// bounds the CPU a flood of valid requests can take from the host (each request costs the
    /// server and the client tens of microseconds) while one that scrapes a few times a second
    /// never waits.
    pub fn with_request_rate(mut self, per_second: u32) -> Self {
        self.request_rate = per_second;
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
        if !(1..=100_000).contains(&self.request_rate) {
            return fail("request_rate must be 1 to 100 000 a second");
        }
        let sane = Duration::from_millis(1)..=Duration::from_secs(3600);
        if !sane.contains(&self.read_timeout) || !sane.contains(&self.write_timeout) {
            return fail("read and write timeouts must be 1 ms to 1 h");
        }
        Ok(())
    }

    /// Binds the address and starts the event loop and worker threads (`laptime-http-accept`,
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
        listener.set_nonblocking(true).map_err(bind_err)?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let poll = Poll::new().map_err(|source| ServeError::Spawn { source })?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(bind_err)?;
        let waker =
            Waker::new(poll.registry(), WAKER).map_err(|source| ServeError::Spawn { source })?;

        let shared = Arc::new(Shared::new(
            Box::new(exposition),
            self.clone(),
            local_addr,
            Some(waker),
        ));
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
            EventLoop::new(&shared, poll, listener).run();
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
    /// `400`: requests `httparse` could not parse, and `/stats` queries that ask for something
    /// it cannot answer.
    pub bad_request: u64,
    /// `404`: paths other than `/metrics`, `/health` and `/stats`.
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
    /// Panics caught: inside [`Exposition`] calls (each also answered `500`), or in the server's
    /// own code on a worker (the connection is then closed without an answer) or in the event
    /// loop (which goes on).
    pub panics: u64,
    /// `503` from `/health`: the exposition reported itself unhealthy.
    pub unhealthy: u64,
    /// `503` from the acceptor: connections refused, or evicted to make room, because the limit
    /// was reached.
    pub refused: u64,
    /// Of `refused`: open connections that had not sent a whole request, closed (with a `503`) to
    /// make room for a newer one.
    pub evicted: u64,
    /// Calls of [`Exposition::metrics`] (each scrape, or once per
    /// [`generation`](Exposition::generation) when the exposition has them).
    pub renders: u64,
    /// `/metrics` answers served from the bytes rendered for the same generation.
    pub cached: u64,
    /// `/stats` documents built (one per published snapshot and window asked for).
    pub stats_renders: u64,
    /// `/stats` answers served from the document built for the same snapshot and window.
    pub stats_cached: u64,
    /// Requests that waited for their turn under the request rate.
    pub paced: u64,
    /// Connections the client closed or reset before a whole request arrived.
    pub closed_early: u64,
    /// `accept` calls that failed (e.g. the process ran out of file descriptors).
    pub accept_errors: u64,
    /// Connections open now: being read, answered or lingering.
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
            evicted: get(&c.evicted),
            renders: get(&c.renders),
            cached: get(&c.cached),
            stats_renders: get(&c.stats_renders),
            stats_cached: get(&c.stats_cached),
            paced: get(&c.paced),
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
            // Set under the jobs' lock: a worker checks the flag under it before waiting, so
            // none can miss the wake-up below.
            let _jobs = self.shared.jobs.lock();
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        self.shared.ready.notify_all();
        self.shared.wake_loop();
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
        self.shared.jobs.lock().clear();
    }
}

/// Decrements the running-thread count when its thread ends, however it ends.
struct ThreadCount(Arc<Counters>);

impl Drop for ThreadCount {
    fn drop(&mut self) {
        self.0.threads.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The poll token of the listening socket.
const LISTENER: Token = Token(usize::MAX);
/// The poll token of the workers' (and the handle's) wake-ups.
const WAKER: Token = Token(usize::MAX - 1);

/// Most connections the event loop accepts in one turn before it reads what the open ones sent:
/// a connection that sent its request at once is read before a burst of newer ones can push it
/// out as the oldest silent one.
const ACCEPT_BURST: usize = 32;

/// The oldest cached exposition served, even while its generation is unchanged: figures taken at
/// scrape time (the last-drain age, application gauges) are never older than this.
const CACHE_MAX_AGE: Duration = Duration::from_secs(1);

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 4096;

struct Shared {
    exposition: Box<dyn Exposition>,
    /// The formats besides text the exposition renders (asked once, at start).
    formats: Vec<Format>,
    limits: MetricsServerBuilder,
    /// Where the server listens: an absolute-form request target must name it.
    local_addr: SocketAddr,
    stop: AtomicBool,
    /// Requests that need the exposition, waiting for a worker. Never longer than
    /// `max_connections`: each is an open connection the event loop holds until it is answered.
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// Answers the workers made, for the event loop to write (`None`: close unanswered).
    answers: Mutex<Vec<(Token, Option<Answer>)>>,
    /// Wakes the event loop when an answer is ready or the server stops; `None` only for
    /// [`answer_for_fuzzing`], which has no loop.
    waker: Option<Waker>,
    /// The last exposition rendered in each format, for its generation.
    cache: Mutex<Vec<Rendered>>,
    /// Held while rendering: one render at a time, however many scrapes arrive.
    rendering: Mutex<()>,
    /// The `/stats` documents built from the last snapshot, one per window asked for (at most
    /// as many as the snapshot keeps).
    stats_cache: Mutex<Option<StatsRendered>>,
    /// Held while building a `/stats` document: one at a time.
    stats_rendering: Mutex<()>,
    counters: Arc<Counters>,
}

impl Shared {
    fn new(
        exposition: Box<dyn Exposition>,
        limits: MetricsServerBuilder,
        local_addr: SocketAddr,
        waker: Option<Waker>,
    ) -> Self {
        let formats = catch_unwind(AssertUnwindSafe(|| exposition.formats())).unwrap_or_default();
        Self {
            exposition,
            formats,
            jobs: Mutex::new(VecDeque::with_capacity(limits.max_connections)),
            limits,
            local_addr,
            stop: AtomicBool::new(false),
            ready: Condvar::new(),
            answers: Mutex::new(Vec::new()),
            waker,
            cache: Mutex::new(Vec::new()),
            rendering: Mutex::new(()),
            stats_cache: Mutex::new(None),
            stats_rendering: Mutex::new(()),
            counters: Arc::default(),
        }
    }

    fn wake_loop(&self) {
        if let Some(waker) = &self.waker {
            // A failed wake-up (out of memory in the kernel) leaves the answer until the next
            // event or deadline; nothing is lost.
            let _ = waker.wake();
        }
    }

    /// The exposition's generation now; `None` when it has none or the call panicked (then
    /// nothing is served from the cache).
    fn generation(&self) -> Option<u64> {
        catch_unwind(AssertUnwindSafe(|| self.exposition.generation())).unwrap_or(None)
    }

    /// The cached exposition in `format`, if it was rendered for `generation` less than
    /// [`CACHE_MAX_AGE`] ago.
    fn cached(&self, generation: Option<u64>, format: Format) -> Option<Body> {
        let generation = generation?;
        let cache = self.cache.lock();
        let hit = cache.iter().find(|c| {
            c.format == format && c.generation == generation && c.at.elapsed() < CACHE_MAX_AGE
        })?;
        Counters::bump(&self.counters.cached);
        Some(Arc::clone(&hit.body))
    }

    /// The exposition's snapshot now; `None` when it has none or the call panicked.
    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        catch_unwind(AssertUnwindSafe(|| self.exposition.snapshot())).unwrap_or(None)
    }

    /// The `/stats` document of `window` already built from `snapshot`, if there is one.
    fn stats_cached(&self, snapshot: &Arc<Snapshot>, window: Window) -> Option<Body> {
        let cache = self.stats_cache.lock();
        let built = cache
            .as_ref()
            .filter(|c| Arc::ptr_eq(&c.snapshot, snapshot))?;
        let body = built.bodies.iter().find(|(w, _)| *w == window)?;
        Counters::bump(&self.counters.stats_cached);
        Some(Arc::clone(&body.1))
    }
}

/// The `/stats` documents built from one snapshot (held, so its address is not reused while it
/// keys the cache).
struct StatsRendered {
    snapshot: Arc<Snapshot>,
    bodies: Vec<(Window, Body)>,
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
    evicted: AtomicU64,
    renders: AtomicU64,
    cached: AtomicU64,
    stats_renders: AtomicU64,
    stats_cached: AtomicU64,
    paced: AtomicU64,
    closed_early: AtomicU64,
    accept_errors: AtomicU64,
    /// Connections admitted and not yet closed. Only the event loop changes it (so check and
    /// increment need no compare-and-swap): [`Open`] increments it and decrements it on drop.
    open: AtomicUsize,
    peak_open: AtomicUsize,
    threads: AtomicUsize,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One admitted connection's place in `open`, given back when dropped.
struct Open(Arc<Counters>);

impl Open {
    fn take(counters: &Arc<Counters>) -> Self {
        let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
        counters.peak_open.fetch_max(open, Ordering::Relaxed);
        Self(Arc::clone(counters))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request for the workers: it needs the exposition.
struct Job {
    token: Token,
    method: Method,
    route: Route,
}

/// An answer's body, shared between answers. A `Vec` inside, not a slice: a rendered exposition
/// (~40 MB at 20 000 series) becomes a body without being copied.
type Body = Arc<Vec<u8>>;

/// An exposition rendered for one generation.
struct Rendered {
    format: Format,
    generation: u64,
    at: Instant,
    body: Body,
}

/// The bytes of one answer: its head, and a body that may be shared with other answers (the
/// cached exposition).
struct Answer {
    head: Vec<u8>,
    body: Body,
}

impl Answer {
    fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// The bytes from `sent` on, up to the end of the part `sent` falls in.
    fn rest(&self, sent: usize) -> &[u8] {
        match sent.checked_sub(self.head.len()) {
            None => &self.head[sent..],
            Some(in_body) => &self.body[in_body..],
        }
    }
}

/// An admitted connection, owned by the event loop.
struct Conn {
    stream: TcpStream,
    accepted: Instant,
    state: State,
    _open: Open,
}

enum State {
    /// Receiving the request head, until `accepted + read_timeout`. The buffer grows with what
    /// arrives, up to `max_header_bytes`.
    Reading(Vec<u8>),
    /// A worker is making the answer.
    Waiting,
    /// Sending the answer, until `deadline`; then lingering (the write side shut).
    Writing {
        answer: Answer,
        sent: usize,
        deadline: Instant,
    },
    /// Answered: reading and discarding what the client still sends until it closes, until
    /// [`LINGER_BYTES`] or the instant given, so the close is a FIN and not a reset that could
    /// destroy the answer before the client reads it.
    Lingering { until: Instant, discarded: usize },
}

/// What a connection's state machine asks the event loop to do next.
enum Step {
    Keep,
    Close,
    Decided(Head),
}

impl Conn {
    fn deadline(&self, read_timeout: Duration) -> Option<Instant> {
        match &self.state {
            State::Reading(_) => Some(self.accepted + read_timeout),
            State::Waiting => None,
            State::Writing { deadline, .. } => Some(*deadline),
            State::Lingering { until, .. } => Some(*until),
        }
    }

    /// Moves the connection on as far as its socket allows without blocking.
    fn advance(&mut self, shared: &Shared, scratch: &mut [u8]) -> Step {
        let limit = shared.limits.max_header_bytes;
        match &mut self.state {
            State::Reading(buf) => {
                read_more(&mut self.stream, buf, limit, shared.local_addr, scratch)
                    .map_or(Step::Keep, Step::Decided)
            }
            State::Waiting => Step::Keep,
            State::Writing { answer, sent, .. } => {
                match write_more(&mut self.stream, answer, sent) {
                    Ok(false) => Step::Keep,
                    Ok(true) => {
                        let _ = self.stream.shutdown(Shutdown::Write);
                        self.state = State::Lingering {
                            until: Instant::now() + IO_SLICE,
                            discarded: 0,
                        };
                        self.advance(shared, scratch)
                    }
                    Err(_) => Step::Close,
                }
            }
            State::Lingering { discarded, .. } => discard(&mut self.stream, discarded, scratch),
        }
    }

    fn write(&mut self, answer: Answer, write_timeout: Duration) {
        self.state = State::Writing {
            answer,
            sent: 0,
            deadline: Instant::now() + write_timeout,
        };
    }
}

/// Reads what has arrived (until the socket would block); `Some` once the bytes, an end of input
/// or an error decide what the request is.
fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: usize,
    local: SocketAddr,
    scratch: &mut [u8],
) -> Option<Head> {
    loop {
        // Never 0: a full buffer decides (431) before another read.
        let room = (limit - buf.len()).min(scratch.len());
        match stream.read(&mut scratch[..room]) {
            Ok(0) => return Some(Head::Closed),
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                if let Some(head) = parse_head(buf, buf.len() == limit, local) {
                    return Some(head);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(Head::Closed),
        }
    }
}

/// Writes what the socket takes; `Ok(true)` once all of `answer` is sent.
fn write_more(stream: &mut TcpStream, answer: &Answer, sent: &mut usize) -> io::Result<bool> {
    while *sent < answer.len() {
        match stream.write(answer.rest(*sent)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads and discards what the client still sends after the answer; `Close` once it closed, an
/// error came or [`LINGER_BYTES`] were discarded.
fn discard(stream: &mut TcpStream, discarded: &mut usize, scratch: &mut [u8]) -> Step {
    loop {
        match stream.read(scratch) {
            Ok(0) => return Step::Close,
            Ok(n) => {
                *discarded += n;
                if *discarded >= LINGER_BYTES {
                    return Step::Close;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
}

/// The acceptor thread: accepts, reads every request head, writes every answer and lingers, all
/// without blocking on any one client, so a slow or silent client costs a slot in the connection
/// table and a buffer, never a thread. Only what calls the exposition goes to the workers.
struct EventLoop<'a> {
    shared: &'a Shared,
    poll: Poll,
    listener: mio::net::TcpListener,
    /// Open connections by token; a `None` slot is free.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    scratch: Box<[u8]>,
    /// When to accept again without waiting for the listener's next event: after a burst cut
    /// short, or after a failed `accept`.
    accept_again: Option<Instant>,
    budget: Budget,
    /// Decided requests waiting for the budget, oldest first (their connections `Waiting`).
    paced: VecDeque<(usize, Head)>,
    /// A connection accepted when every open one held a request: admitted as soon as one is
    /// answered. Accepting pauses while it waits, so later ones wait in the listen queue.
    parked: Option<TcpStream>,
}

/// A token bucket kept in time: a request costs `1 s / per_second` of credit; credit accrues with
/// time up to `burst` requests' worth. Durations, not floats, so a token is due exactly when its
/// time has passed.
struct Budget {
    cost: Duration,
    most: Duration,
    credit: Duration,
    at: Instant,
}

impl Budget {
    fn new(per_second: u32, burst: usize) -> Self {
        let cost = Duration::from_secs(1) / per_second.max(1);
        let most = cost * u32::try_from(burst.max(1)).unwrap_or(u32::MAX);
        Self {
            cost,
            most,
            credit: most,
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        self.credit = (self.credit + now.saturating_duration_since(self.at)).min(self.most);
        self.at = self.at.max(now);
        let ok = self.credit >= self.cost;
        if ok {
            self.credit -= self.cost;
        }
        ok
    }

    /// When the next request may be answered.
    fn next(&self) -> Instant {
        self.at + self.cost.saturating_sub(self.credit)
    }
}

impl<'a> EventLoop<'a> {
    fn new(shared: &'a Shared, poll: Poll, listener: mio::net::TcpListener) -> Self {
        Self {
            shared,
            poll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            accept_again: None,
            budget: Budget::new(shared.limits.request_rate, shared.limits.max_connections),
            paced: VecDeque::new(),
            parked: None,
        }
    }

    /// Runs until the stop flag is set. An idle server (no connection open) blocks in `poll`
    /// without a timeout.
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut next = None;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let timeout = next.map(|at: Instant| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(ACCEPT_RETRY);
                }
                continue;
            }
            if self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            // A bug in one turn must not take the server's only reader away: the panic is
            // counted and the loop goes on (the connection it was handling may be left to its
            // deadline).
            match catch_unwind(AssertUnwindSafe(|| self.turn(&events))) {
                Ok(deadline) => next = deadline,
                Err(_) => {
                    Counters::bump(&self.shared.counters.panics);
                    next = Some(Instant::now() + ACCEPT_RETRY);
                }
            }
        }
    }

    /// Handles one poll's events, then what is due; returns when the loop must look again.
    fn turn(&mut self, events: &Events) -> Option<Instant> {
        for event in events {
            match event.token() {
                LISTENER => self.accept_burst(),
                WAKER => {}
                Token(slot) => self.drive(slot),
            }
        }
        self.take_answers();
        self.release_paced(Instant::now());
        self.unpark();
        if self.accept_again.is_some_and(|at| at <= Instant::now()) {
            self.accept_burst();
        }
        self.expire(Instant::now())
    }

    fn accept_burst(&mut self) {
        self.accept_again = None;
        for _ in 0..ACCEPT_BURST {
            if self.parked.is_some() {
                // Paused until a request is answered; `unpark` resumes.
                return;
            }
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    Counters::bump(&self.shared.counters.accepted);
                    self.admit(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Out of file descriptors, say: try again a little later rather than spin.
                    Counters::bump(&self.shared.counters.accept_errors);
                    self.accept_again = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
        // More may be waiting: read the open connections first, then accept again.
        self.accept_again = Some(Instant::now());
    }

    /// Makes room for a new connection if the table is full (or parks it), reads what it already
    /// sent, and takes it in.
    /// When a parked connection may find room: the earliest time a connection being read grows
    /// old enough to be evicted.
    fn room_at(&self) -> Option<Instant> {
        self.parked.as_ref()?;
        self.conns
            .iter()
            .flatten()
            .filter(|c| matches!(c.state, State::Reading(_)))
            .map(|c| c.accepted + EVICT_GRACE)
            .min()
    }

    fn admit(&mut self, mut stream: TcpStream) {
        if !self.has_room() {
            self.parked = Some(stream);
            return;
        }
        let _ = stream.set_nodelay(true);
        let mut buf = Vec::new();
        let limit = self.shared.limits.max_header_bytes;
        let local = self.shared.local_addr;
        let head = read_more(&mut stream, &mut buf, limit, local, &mut self.scratch);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.free.push(slot);
            return;
        }
        self.conns[slot] = Some(Conn {
            stream,
            accepted: Instant::now(),
            state: State::Reading(buf),
            _open: Open::take(&self.shared.counters),
        });
        if let Some(head) = head {
            self.decided(slot, head);
        }
    }

    /// Admits the parked connection once there is room, and accepts again.
    fn unpark(&mut self) {
        if let Some(stream) = self.parked.take() {
            self.admit(stream);
            if self.parked.is_none() {
                self.accept_again = Some(Instant::now());
            }
        }
    }

    fn has_room(&mut self) -> bool {
        self.shared.counters.open.load(Ordering::Relaxed) < self.shared.limits.max_connections
            || self.make_room()
    }

    /// Frees a place in a full table: closes a connection that was answered and lingers, or else
    /// evicts (with a `503`) the one that has waited longest without sending a whole request.
    /// The newest connection is the last to go, so a scraper whose request is on its way keeps
    /// its place however many silent or dripping clients come after it. `false` when every open
    /// connection has a request being answered.
    fn make_room(&mut self) -> bool {
        let now = Instant::now();
        // Each round either frees a place or moves a connection out of `Reading`: bounded.
        for _ in 0..=self.conns.len() {
            let victim = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(slot, c)| {
                    let c = c.as_ref()?;
                    let rank = match &c.state {
                        State::Lingering { .. } => 0,
                        State::Reading(_) if now >= c.accepted + EVICT_GRACE => 1,
                        _ => return None,
                    };
                    Some(((rank, c.accepted), slot))
                })
                .min()
                .map(|(_, slot)| slot);
            let Some(slot) = victim else {
                return false;
            };
            let Some(conn) = self.conns[slot].as_mut() else {
                return false;
            };
            if matches!(conn.state, State::Lingering { .. }) {
                self.close(slot);
                return true;
            }
            // It may have sent its request since it was last read: then it is served instead.
            match conn.advance(self.shared, &mut self.scratch) {
                Step::Keep => {}
                Step::Close => {
                    Counters::bump(&self.shared.counters.closed_early);
                    self.close(slot);
                    return true;
                }
                Step::Decided(head) => {
                    self.decided(slot, head);
                    continue;
                }
            }
            if let Some(conn) = self.take(slot) {
                Counters::bump(&self.shared.counters.refused);
                Counters::bump(&self.shared.counters.evicted);
                refuse(conn.stream);
            }
            return true;
        }
        false
    }

    /// Handles a readiness event (or a wake-up of its own) for the connection in `slot`.
    fn drive(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        match conn.advance(self.shared, &mut self.scratch) {
            Step::Keep => {}
            Step::Close => self.close(slot),
            Step::Decided(head) => self.decided(slot, head),
        }
    }

    /// The request head in `slot` is decided: answer it now if the budget allows (a timeout or
    /// a close always does), else when its turn comes.
    fn decided(&mut self, slot: usize, head: Head) {
        let asked = matches!(
            head,
            Head::Request { .. } | Head::Malformed | Head::TooLarge | Head::BadQuery(_)
        );
        if asked && !(self.paced.is_empty() && self.budget.take(Instant::now())) {
            Counters::bump(&self.shared.counters.paced);
            if let Some(conn) = self.conns[slot].as_mut() {
                conn.state = State::Waiting;
            }
            self.paced.push_back((slot, head));
            return;
        }
        self.respond(slot, head);
    }

    /// Answers the paced requests whose turn has come.
    fn release_paced(&mut self, now: Instant) {
        while !self.paced.is_empty() && self.budget.take(now) {
            if let Some((slot, head)) = self.paced.pop_front() {
                self.respond(slot, head);
            }
        }
    }

    /// Answers the decided head in `slot`: here, from the cache, or by a worker.
    fn respond(&mut self, slot: usize, head: Head) {
        let shared = self.shared;
        let answer = match classify(&shared.counters, head) {
            Reply::Nothing => return self.close(slot),
            Reply::Now(answer) => answer,
            Reply::Exposition { method, route } => match cached_answer(shared, method, route) {
                Some(answer) => answer,
                None => {
                    if let Some(conn) = self.conns[slot].as_mut() {
                        conn.state = State::Waiting;
                    }
                    shared.jobs.lock().push_back(Job {
                        token: Token(slot),
                        method,
                        route,
                    });
                    shared.ready.notify_one();
                    return;
                }
            },
        };
        self.answer(slot, answer);
    }

    fn answer(&mut self, slot: usize, answer: Answer) {
        if let Some(conn) = self.conns[slot].as_mut() {
            conn.write(answer, self.shared.limits.write_timeout);
            self.drive(slot);
        }
    }

    /// Starts writing the answers the workers made.
    fn take_answers(&mut self) {
        let answers = std::mem::take(&mut *self.shared.answers.lock());
        for (Token(slot), answer) in answers {
            match answer {
                Some(answer) => self.answer(slot, answer),
                None => self.close(slot),
            }
        }
    }

    /// Answers `408` to heads not whole in time, drops answers not written in time and ends
    /// lingers; returns the next deadline of an open connection (or of accepting again).
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let limits = &self.shared.limits;
        let mut next = self.accept_again;
        if !self.paced.is_empty() {
            let turn = self.budget.next();
            next = Some(next.map_or(turn, |n| n.min(turn)));
        }
        // A parked connection looks for room again when a silent one may be evicted.
        if let Some(at) = self.room_at() {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_ref() else {
                continue;
            };
            let Some(deadline) = conn.deadline(limits.read_timeout) else {
                continue;
            };
            if deadline > now {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                continue;
            }
            match conn.state {
                State::Reading(_) => {
                    self.respond(slot, Head::TimedOut);
                    // Its answer's write deadline is now the one to wait for.
                    if let Some(d) = self.conns[slot]
                        .as_ref()
                        .and_then(|c| c.deadline(limits.read_timeout))
                    {
                        next = Some(next.map_or(d, |n| n.min(d)));
                    }
                }
                State::Writing { .. } => {
                    Counters::bump(&self.shared.counters.timed_out);
                    self.close(slot);
                }
                _ => self.close(slot),
            }
        }
        next
    }

    fn take(&mut self, slot: usize) -> Option<Conn> {
        let conn = self.conns.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(conn)
    }

    /// Closes the connection in `slot` (closing the socket also removes it from the poll set).
    fn close(&mut self, slot: usize) {
        drop(self.take(slot));
    }
}

/// Answers `503` to a connection evicted to make room, without ever blocking: whatever already
/// arrived is read (so the close is less likely to be a reset), the answer is written if the
/// socket takes it at once, and the connection is closed.
fn refuse(mut stream: TcpStream) {
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
        Arc::new(b"too many connections, try later\n".to_vec()),
        false,
    );
    let _ = stream.write(&answer.head);
    let _ = stream.write(&answer.body);
    let _ = stream.shutdown(Shutdown::Write);
}

fn worker(shared: &Shared) {
    loop {
        let job = {
            let mut jobs = shared.jobs.lock();
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(job) = jobs.pop_front() {
                    break job;
                }
                shared.ready.wait(&mut jobs);
            }
        };
        // `exposition_answer` catches the exposition's panics itself; this catches the server's
        // own, so a bug in one answer cannot take a worker away (the connection is then closed
        // unanswered).
        let answer = catch_unwind(AssertUnwindSafe(|| {
            exposition_answer(shared, job.method, job.route)
        }))
        .map_err(|_| Counters::bump(&shared.counters.panics))
        .ok();
        shared.answers.lock().push((job.token, answer));
        shared.wake_loop();
    }
}

/// What the request head turned out to be.
enum Head {
    /// A method and a path the server knows what to do with.
    Request { method: Method, route: Route },
    /// `/stats` with a query it cannot answer: the reason.
    BadQuery(String),
    /// Over the size or header-count limit.
    TooLarge,
    /// Not HTTP/1.x as `httparse` understands it.
    Malformed,
    /// Not whole within the read timeout.
    TimedOut,
    /// The client went away first.
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

#[derive(Clone, Copy)]
enum Route {
    /// `/metrics`, in the format the request accepts best.
    Metrics(Accept),
    Health,
    /// `/stats`, for this window (`None`: the snapshot's first).
    Stats(Option<Window>),
    Unknown,
}

/// What to do with a decided head.
enum Reply {
    /// Close without an answer.
    Nothing,
    /// This answer, already counted.
    Now(Answer),
    /// An answer only the exposition can give.
    Exposition { method: Method, route: Route },
}

/// The answer for `head` when it does not need the exposition, counted under its status.
fn classify(c: &Counters, head: Head) -> Reply {
    let plain = |counter: &AtomicU64, status, body: &[u8]| {
        Counters::bump(counter);
        Reply::Now(response(status, TEXT, Arc::new(body.to_vec()), false))
    };
    let (method, route) = match head {
        Head::Closed => {
            Counters::bump(&c.closed_early);
            return Reply::Nothing;
        }
        Head::TimedOut => {
            return plain(
                &c.timed_out,
                Status::RequestTimeout,
                b"request head not received in time\n",
            );
        }
        Head::TooLarge => {
            return plain(
                &c.header_too_large,
                Status::HeaderTooLarge,
                b"request head too large\n",
            );
        }
        Head::Malformed => {
            return plain(&c.bad_request, Status::BadRequest, b"malformed request\n");
        }
        Head::BadQuery(reason) => {
            return plain(
                &c.bad_request,
                Status::BadRequest,
                format!("bad /stats query: {reason}\n").as_bytes(),
            );
        }
        Head::Request { method, route } => (method, route),
    };
    let head_only = method == Method::Head;
    if let Route::Unknown = route {
        Counters::bump(&c.not_found);
        return Reply::Now(response(
            Status::NotFound,
            TEXT,
            Arc::new(b"not found: try /metrics, /health or /stats\n".to_vec()),
            head_only,
        ));
    }
    if method == Method::Other {
        return plain(
            &c.method_not_allowed,
            Status::MethodNotAllowed,
            b"only GET and HEAD\n",
        );
    }
    Reply::Exposition { method, route }
}

/// The `/metrics` answer from the cache, if it holds the exposition's current generation, or the
/// `/stats` answer, if the document for the current snapshot and the window is built.
fn cached_answer(shared: &Shared, method: Method, route: Route) -> Option<Answer> {
    let (body, content_type) = match route {
        Route::Metrics(accept) => {
            let format = accept.choose(&shared.formats);
            let body = shared.cached(shared.generation(), format)?;
            (body, format.content_type())
        }
        Route::Stats(window) => {
            let snapshot = shared.snapshot()?;
            let window = window.or_else(|| snapshot.windows.first().copied())?;
            (shared.stats_cached(&snapshot, window)?, JSON)
        }
        _ => return None,
    };
    Counters::bump(&shared.counters.ok);
    Some(response(
        Status::Ok,
        content_type,
        body,
        method == Method::Head,
    ))
}

/// What `/stats` answers for `window` (`None`: the snapshot's first).
enum StatsOutcome {
    Ok(Body),
    /// No snapshot yet (or the exposition panicked giving one): `503`.
    NoSnapshot,
    /// A window the snapshot does not keep: `400` with the reason.
    NotKept(String),
    /// The document could not be encoded: `500` with the reason.
    Failed(String),
}

/// The `/stats` document for `window` of the exposition's snapshot now: the one already built
/// for that snapshot and window, else a new one (one at a time: a request that arrives during a
/// build waits for it and, if the snapshot is still the same, takes its bytes). `Err(())` when
/// the exposition panicked.
fn render_stats(shared: &Shared, window: Option<Window>) -> Result<StatsOutcome, ()> {
    let snapshot =
        catch_unwind(AssertUnwindSafe(|| shared.exposition.snapshot())).map_err(|_| ())?;
    let Some(snapshot) = snapshot else {
        return Ok(StatsOutcome::NoSnapshot);
    };
    let Some(window) = window.or_else(|| snapshot.windows.first().copied()) else {
        return Ok(StatsOutcome::NoSnapshot);
    };
    if let Err(reason) = stats_json::check_kept(&snapshot, window) {
        return Ok(StatsOutcome::NotKept(reason));
    }
    if let Some(body) = shared.stats_cached(&snapshot, window) {
        return Ok(StatsOutcome::Ok(body));
    }
    let _one = shared.stats_rendering.lock();
    if let Some(body) = shared.stats_cached(&snapshot, window) {
        return Ok(StatsOutcome::Ok(body));
    }
    Counters::bump(&shared.counters.stats_renders);
    let text = match stats_json::render(&snapshot, window) {
        Ok(text) => text,
        Err(reason) => return Ok(StatsOutcome::Failed(reason)),
    };
    let body: Body = Arc::new(text.into_bytes());
    store_stats(shared, snapshot, window, Arc::clone(&body));
    Ok(StatsOutcome::Ok(body))
}

/// Keeps `body` as the `/stats` document of `window` for `snapshot` (a new snapshot replaces the
/// documents of the last).
fn store_stats(shared: &Shared, snapshot: Arc<Snapshot>, window: Window, body: Body) {
    let mut cache = shared.stats_cache.lock();
    match cache.as_mut() {
        Some(c) if Arc::ptr_eq(&c.snapshot, &snapshot) => c.bodies.push((window, body)),
        _ => {
            *cache = Some(StatsRendered {
                snapshot,
                bodies: vec![(window, body)],
            });
        }
    }
}

/// The answer to `/metrics` or `/health` (on a worker thread), counted under its status.
fn exposition_answer(shared: &Shared, method: Method, route: Route) -> Answer {
    let c = &shared.counters;
    // AssertUnwindSafe: the server keeps nothing a panic could leave half-updated (it only holds
    // the returned text); the exposition's own state is its to keep consistent, and it is
    // called again for the next request.
    if let Route::Stats(window) = route {
        return stats_answer(shared, method, window);
    }
    let format = match route {
        Route::Metrics(accept) => accept.choose(&shared.formats),
        _ => Format::Text,
    };
    let outcome = match route {
        Route::Metrics(_) => {
            render(shared, format).map(|r| r.map_err(|e| format!("metrics unavailable: {e}\n")))
        }
        _ => catch_unwind(AssertUnwindSafe(|| shared.exposition.health()))
            .map(|r| r.map(|t| Arc::new(t.into_bytes())))
            .map_err(|_| ()),
    };
    let (counter, status, content_type, body): (_, _, _, Body) = match (route, outcome) {
        (_, Err(())) => {
            Counters::bump(&c.panics);
            (
                &c.internal_error,
                Status::InternalError,
                TEXT,
                Arc::new(b"the exposition panicked\n".to_vec()),
            )
        }
        (Route::Metrics(_), Ok(Ok(body))) => (&c.ok, Status::Ok, format.content_type(), body),
        (Route::Metrics(_), Ok(Err(text))) => (
            &c.internal_error,
            Status::InternalError,
            TEXT,
            Arc::new(text.into_bytes()),
        ),
        (_, Ok(Ok(text))) => (&c.ok, Status::Ok, TEXT, text),
        (_, Ok(Err(text))) => (
            &c.unhealthy,
            Status::Unavailable,
            TEXT,
            Arc::new(text.into_bytes()),
        ),
    };
    Counters::bump(counter);
    response(status, content_type, body, method == Method::Head)
}

/// The answer to `/stats` (on a worker thread), counted under its status.
fn stats_answer(shared: &Shared, method: Method, window: Option<Window>) -> Answer {
    let c = &shared.counters;
    let text = |s: String| -> Body { Arc::new(s.into_bytes()) };
    let (counter, status, content_type, body) = match render_stats(shared, window) {
        Err(()) => {
            Counters::bump(&c.panics);
            (
                &c.internal_error,
                Status::InternalError,
                TEXT,
                text("the exposition panicked\n".to_owned()),
            )
        }
        Ok(StatsOutcome::Ok(body)) => (&c.ok, Status::Ok, JSON, body),
        Ok(StatsOutcome::NoSnapshot) => (
            &c.unhealthy,
            Status::Unavailable,
            TEXT,
            text("no snapshot published yet: is a collector installed and running?\n".to_owned()),
        ),
        Ok(StatsOutcome::NotKept(reason)) => (
            &c.bad_request,
            Status::BadRequest,
            TEXT,
            text(format!("bad /stats query: {reason}\n")),
        ),
        Ok(StatsOutcome::Failed(reason)) => (
            &c.internal_error,
            Status::InternalError,
            TEXT,
            text(format!("stats unavailable: {reason}\n")),
        ),
    };
    Counters::bump(counter);
    response(status, content_type, body, method == Method::Head)
}

/// The exposition's text: the cached bytes while its generation is unchanged, else a new render
/// (one at a time: a scrape that arrives during a render waits for it and, if the generation
/// still matches, takes its bytes). `Err(())` when the exposition panicked.
fn render(shared: &Shared, format: Format) -> Result<Result<Body, ExportError>, ()> {
    let generation = shared.generation();
    if let Some(body) = shared.cached(generation, format) {
        return Ok(Ok(body));
    }
    let _one = shared.rendering.lock();
    let generation = shared.generation();
    if let Some(body) = shared.cached(generation, format) {
        return Ok(Ok(body));
    }
    Counters::bump(&shared.counters.renders);
    let rendered = catch_unwind(AssertUnwindSafe(|| match format {
        Format::Text => shared.exposition.metrics().map(String::into_bytes),
        other => shared.exposition.metrics_in(other),
    }))
    .map_err(|_| ())?;
    Ok(rendered.map(|bytes| {
        let body: Body = Arc::new(bytes);
        if let Some(generation) = generation {
            let mut cache = shared.cache.lock();
            cache.retain(|c| c.format != format);
            cache.push(Rendered {
                format,
                generation,
                at: Instant::now(),
                body: Arc::clone(&body),
            });
        }
        body
    }))
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
const JSON: &str = "application/json";

/// A whole answer: status line, headers (`Content-Length` always that of `body`, so a `HEAD`
/// answer says what a `GET` would get), and the body unless `head_only`.
fn response(status: Status, content_type: &str, body: Body, head_only: bool) -> Answer {
    let allow = match status {
        Status::MethodNotAllowed => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        status.line(),
        body.len()
    )
    .into_bytes();
    let body = if head_only { Body::default() } else { body };
    Answer { head, body }
}

/// What the bytes received so far make of the request head, or `None` to read more. `full`: they
/// fill the head buffer, so no more can come.
fn parse_head(received: &[u8], full: bool, local: SocketAddr) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(received) {
        Ok(httparse::Status::Complete(_)) => {
            let method = match request.method {
                Some("GET") => Method::Get,
                Some("HEAD") => Method::Head,
                _ => Method::Other,
            };
            let route = match origin_target(request.path.unwrap_or(""), local) {
                Some(("/metrics", _)) => Route::Metrics(accept(request.headers)),
                Some(("/health", _)) => Route::Health,
                Some(("/stats", query)) => match stats_json::parse_query(query) {
                    Ok(window) => Route::Stats(window),
                    Err(reason) => return Some(Head::BadQuery(reason)),
                },
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

/// What the request's `Accept` header asks for (the first one, if it sends several).
fn accept(headers: &[httparse::Header<'_>]) -> Accept {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("accept"))
        .map_or_else(Accept::default, |h| Accept::parse(h.value))
}

/// The path of a request target, without its query: the target itself in origin form
/// (`/metrics?x`), or what follows the authority in absolute form (`http://127.0.0.1:9898/metrics`),
/// which RFC 9112 §3.2.2 says a server must accept. `None` for an absolute form whose authority
/// is not this server (`local`), or any other form.
#[cfg(test)]
fn origin_path(target: &str, local: SocketAddr) -> Option<&str> {
    origin_target(target, local).map(|(path, _)| path)
}

/// [`origin_path`] and the query (what follows the first `?`, empty when there is none).
fn origin_target(target: &str, local: SocketAddr) -> Option<(&str, &str)> {
    let path = if target.starts_with('/') {
        target
    } else {
        let scheme = target
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))?;
        let rest = &target[scheme.len()..];
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if !names_this_server(authority, local) {
            return None;
        }
        path
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    Some((if path.is_empty() { "/" } else { path }, query))
}

/// Whether the authority of an absolute-form target (`host[:port]`) is this server listening on
/// `local`: its IP address (any host when it listens on every address, `localhost` too when on
/// loopback), with its port or none (a client that names no port means this one).
fn names_this_server(authority: &str, local: SocketAddr) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => return false,
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if port.is_some_and(|p| p != local.port().to_string()) {
        return false;
    }
    let ip = local.ip();
    ip.is_unspecified()
        || host.parse::<IpAddr>().is_ok_and(|h| h == ip)
        || (ip.is_loopback() && host.eq_ignore_ascii_case("localhost"))
}

/// The answer a server gives a client that sends `reads` (one element per `read` that returned
/// data) and then closes its side, with a head buffer of `max_header_bytes` and an exposition
/// that answers `/metrics` with `fuzz_metrics 1`, is healthy and has no snapshot for `/stats`;
/// `None` when the server sends
/// nothing (the head was not whole when the client closed). Runs the server's own head parsing
/// (`parse_head`, as the event loop calls it after each read) and answers (`classify`, then
/// `exposition_answer` as a worker does) without a socket.
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
        // No snapshot, whatever collector the process has: a good `/stats` query is a `503`.
        fn snapshot(&self) -> Option<Arc<Snapshot>> {
            None
        }
    }
    let limits = MetricsServer::builder().with_max_header_bytes(max_header_bytes);
    let mut buf = vec![0u8; limits.max_header_bytes];
    let shared = Shared::new(Box::new(Fixed), limits, DEFAULT_ADDR, None);
    let mut filled = 0;
    let mut head = Head::Closed;
    for read in reads.iter().filter(|r| !r.is_empty()) {
        // A read fills at most what is left of the buffer; what does not fit stays unread.
        let n = read.len().min(buf.len() - filled);
        buf[filled..filled + n].copy_from_slice(&read[..n]);
        filled += n;
        if let Some(parsed) = parse_head(&buf[..filled], filled == buf.len(), DEFAULT_ADDR) {
            head = parsed;
            break;
        }
    }
    let answer = match classify(&shared.counters, head) {
        Reply::Nothing => return None,
        Reply::Now(answer) => answer,
        Reply::Exposition { method, route } => exposition_answer(&shared, method, route),
    };
    let mut bytes = answer.head;
    bytes.extend_from_slice(&answer.body);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: SocketAddr = DEFAULT_ADDR;

    #[test]
    fn origin_form_targets_are_their_own_path() {
        assert_eq!(origin_path("/metrics", LOCAL), Some("/metrics"));
        assert_eq!(origin_path("/metrics?x=1", LOCAL), Some("/metrics"));
        assert_eq!(origin_path("*", LOCAL), None);
        assert_eq!(origin_path("metrics", LOCAL), None);
    }

    #[test]
    fn absolute_form_targets_naming_this_server_are_routed_by_their_path() {
        for target in [
            "http://127.0.0.1:9898/metrics",
            "HTTP://127.0.0.1:9898/metrics?q",
            "http://127.0.0.1/metrics",
            "http://LocalHost:9898/metrics",
        ] {
            assert_eq!(origin_path(target, LOCAL), Some("/metrics"), "{target}");
        }
        assert_eq!(origin_path("http://127.0.0.1:9898", LOCAL), Some("/"));
        assert_eq!(origin_path("http://127.0.0.1:9898?x", LOCAL), Some("/"));
        for target in [
            "http://x/metrics",
            "http://127.0.0.1:9899/metrics",
            "http://127.0.0.1:09898/metrics",
            "http://127.0.0.1:/metrics",
            "http://user@127.0.0.1/metrics",
            "https://127.0.0.1:9898/metrics",
            "http://[::1]:9898/metrics",
            "http://127.0.0.2:9898/metrics",
        ] {
            assert_eq!(origin_path(target, LOCAL), None, "{target}");
        }
    }

    #[test]
    fn a_wildcard_or_ipv6_listener_names_itself_as_it_should() {
        let any: SocketAddr = "0.0.0.0:9898".parse().unwrap();
        assert_eq!(
            origin_path("http://metrics.example:9898/health", any),
            Some("/health")
        );
        assert_eq!(origin_path("http://metrics.example:1/health", any), None);
        let v6: SocketAddr = "[::1]:9898".parse().unwrap();
        assert_eq!(
            origin_path("http://[::1]:9898/metrics", v6),
            Some("/metrics")
        );
        assert_eq!(origin_path("http://[::1]/metrics", v6), Some("/metrics"));
        assert_eq!(
            origin_path("http://localhost/metrics", v6),
            Some("/metrics")
        );
        assert_eq!(origin_path("http://[::1/metrics", v6), None);
    }

    #[test]
    fn the_budget_gives_a_burst_then_the_rate() {
        let mut budget = Budget::new(100, 3);
        let t0 = budget.at;
        assert!((0..3).all(|_| budget.take(t0)));
        assert!(!budget.take(t0));
        // One token every 10 ms; the next is due then.
        assert_eq!(budget.next(), t0 + Duration::from_millis(10));
        assert!(!budget.take(t0 + Duration::from_millis(9)));
        assert!(budget.take(t0 + Duration::from_millis(10)));
        // Never more than the burst, however long it rested.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| budget.take(later)).count(), 3);
    }
}
