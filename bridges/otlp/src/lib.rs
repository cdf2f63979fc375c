//! Pushes laptime's stages to an OpenTelemetry collector over OTLP/HTTP (protobuf): each stage's
//! cumulative exponential histogram, counted exactly from every value recorded, and its deadline
//! misses and drops as monotonic sums.
//!
//! # Guarantees
//!
//! * **The aggregator never waits on the network**: a [`Sink`](laptime::sink::Sink) counts each
//!   recorded value into its stage's buckets on the aggregator thread (plain integers; never on
//!   the hot path) and, each export period, copies the figures into a bounded queue. A full queue
//!   drops its oldest batch and counts it ([`OtlpStats::batches_dropped`]); a push takes a lock
//!   held for a few pointer moves only.
//! * **Exact buckets**: a value's bucket is decided in integer nanoseconds
//!   ([`laptime::exponential`], the Prometheus export's native histograms' counting), and a
//!   point's count, sum, min and max are the engine's exact tallies of the same values.
//! * **An endpoint that refuses, hangs or answers garbage is counted**, never a panic or a block
//!   of the host: each request has a timeout, a failure waits a doubling backoff, and
//!   [`OtlpExporter::stats`] shows exports ok and failed, batches dropped and the last error.
//!
//! # Quickstart
//!
//! ```no_run
//! use std::time::Duration;
//! use laptime_otlp::OtlpExporter;
//!
//! let exporter = OtlpExporter::builder()
//!     .with_endpoint("http://127.0.0.1:4318/v1/metrics")
//!     .with_service_name("trader")
//!     .with_resource_attribute("deployment.environment", "prod")
//!     .with_period(Duration::from_secs(10))
//!     .start()
//!     .unwrap();
//! let handle = laptime::Collector::builder()
//!     .with_sink(exporter.sink())
//!     .install()
//!     .unwrap();
//! // … the service runs …
//! drop(handle); // the last figures are queued
//! let stats = exporter.stats();
//! drop(exporter); // sends them (one attempt), stops and joins the export thread
//! # let _ = stats;
//! ```
//!
//! # What is sent
//!
//! One `ExportMetricsServiceRequest` per export, to the endpoint as given (OTLP/HTTP's path is
//! `/v1/metrics`), `Content-Type: application/x-protobuf`, with the resource's attributes
//! (`service.name` and those given), scope `laptime`, and per stage (attributes `stage` = its name
//! and its labels; totals of families and labelled names are left out: the backend sums their
//! series):
//!
//! | metric | type | unit |
//! |---|---|---|
//! | [`DURATION_METRIC`] | `ExponentialHistogram`, cumulative; zero bucket = values of 0 ns | `s` |
//! | [`CORRECTED_DURATION_METRIC`] | the same, of the coordinated-omission-corrected values (stages with an expected interval) | `s` |
//! | [`DEADLINE_MISSES_METRIC`] | `Sum`, monotonic, cumulative, integer | `{span}` |
//! | [`DROPPED_METRIC`] | `Sum`, monotonic, cumulative, integer | `{record}` |
//!
//! Every point starts when the collector was installed. The histogram starts at
//! [`with_scale`](OtlpExporterBuilder::with_scale) and lowers its scale (merging neighbouring
//! buckets exactly) while its values would span more than
//! [`with_max_size`](OtlpExporterBuilder::with_max_size) buckets, as OpenTelemetry's SDKs do.
//!
//! # Caveats
//!
//! * Plain `http://` only: this crate carries no TLS stack. Send to a collector on the host or
//!   its network, which forwards over TLS.
//! * Tested against a loopback server that decodes the request with the official definitions;
//!   no real OpenTelemetry Collector was run (none can be installed on the machines this was
//!   written on).
//! * Guard trips are not exported (they are counted per reason, not per stage).
//! * This crate depends on laptime without its `enable` feature: the final binary turns it on.

mod encode;
mod export;
mod queue;
mod sink;
mod stats;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use laptime::exponential::{ExponentialError, ExponentialIndex, MAX_SCALE};

pub use encode::{
    CORRECTED_DURATION_METRIC, DEADLINE_MISSES_METRIC, DROPPED_METRIC, DURATION_METRIC,
};
pub use export::CONTENT_TYPE;
pub use sink::OtlpSink;
pub use stats::OtlpStats;

use queue::Queue;
use sink::Batch;
use stats::Counters;

/// What the sink and the export thread share.
pub(crate) struct Shared {
    pub(crate) queue: Queue<Batch>,
    pub(crate) counters: Counters,
}

/// Why an exporter could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum OtlpError {
    /// The endpoint is not an `http://` URL.
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scale is out of range.
    Scale(ExponentialError),
    /// The bucket budget is below [`OtlpExporterBuilder::MIN_MAX_SIZE`].
    MaxSizeTooSmall {
        /// The budget given.
        max_size: usize,
    },
    /// A queue of 0 batches, a zero timeout or a zero backoff, or a first backoff above the
    /// ceiling.
    InvalidSetting {
        /// The setting.
        setting: &'static str,
    },
    /// The export thread could not be spawned.
    Spawn(std::io::Error),
}

impl std::fmt::Display for OtlpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidEndpoint { endpoint, reason } => write!(
                f,
                "OTLP endpoint {endpoint:?} cannot be used ({reason}): give an http:// URL, such as http://127.0.0.1:4318/v1/metrics"
            ),
            Self::Scale(e) => write!(f, "OTLP exporter: {e}"),
            Self::MaxSizeTooSmall { max_size } => write!(
                f,
                "OTLP exporter: a budget of {max_size} buckets is too small: use at least {}",
                OtlpExporterBuilder::MIN_MAX_SIZE
            ),
            Self::InvalidSetting { setting } => write!(
                f,
                "OTLP exporter: {setting} must be above zero (and the first backoff at most the ceiling)"
            ),
            Self::Spawn(e) => write!(f, "OTLP exporter: the export thread did not start: {e}"),
        }
    }
}

impl std::error::Error for OtlpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Scale(e) => Some(e),
            Self::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// Settings of an [`OtlpExporter`]; [`OtlpExporter::builder`].
#[derive(Debug, Clone)]
pub struct OtlpExporterBuilder {
    endpoint: String,
    service_name: String,
    resource: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    period: Duration,
    scale: i8,
    max_size: usize,
    timeout: Duration,
    queue_capacity: usize,
    backoff: (Duration, Duration),
}

impl Default for OtlpExporterBuilder {
    fn default() -> Self {
        Self {
            endpoint: Self::DEFAULT_ENDPOINT.to_owned(),
            service_name: "unknown_service".to_owned(),
            resource: Vec::new(),
            headers: Vec::new(),
            period: Duration::from_secs(10),
            scale: MAX_SCALE,
            max_size: 160,
            timeout: Duration::from_secs(10),
            queue_capacity: 4,
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

impl OtlpExporterBuilder {
    /// A collector's OTLP/HTTP metrics endpoint on this host.
    pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318/v1/metrics";
    /// The smallest bucket budget: at the lowest scale every `u64` nanosecond value fits in 5.
    pub const MIN_MAX_SIZE: usize = 8;

    /// The URL requests are POSTed to, path included (default [`Self::DEFAULT_ENDPOINT`]).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// The resource's `service.name` (default `unknown_service`, as OpenTelemetry's SDKs).
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// A resource attribute besides `service.name` (a later one of the same key wins).
    pub fn with_resource_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.resource.push((key.into(), value.into()));
        self
    }

    /// An HTTP header on every request (an API key a backend asks for).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// How often a batch is handed to the export thread (default 10 s; checked after each
    /// aggregator cycle, so at least one cycle apart; zero: every cycle).
    pub fn with_period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// The scale histograms start at (−4 to 8, default 8: buckets 0.27 % apart).
    pub fn with_scale(mut self, scale: i8) -> Self {
        self.scale = scale;
        self
    }

    /// The widest run of buckets one histogram keeps, empty ones between included (default 160,
    /// OpenTelemetry's `max_size`); a value past it lowers that histogram's scale.
    pub fn with_max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// The limit on one request: connect, send and the answer (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Batches waiting for the export thread (default 4).
    pub fn with_queue_capacity(mut self, batches: usize) -> Self {
        self.queue_capacity = batches;
        self
    }

    /// The wait after a failed request, doubled after each further failure up to `max`
    /// (default 1 s to 60 s); a success resets it.
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max);
        self
    }

    fn check_endpoint(&self) -> Result<(), OtlpError> {
        let invalid = |reason: &str| OtlpError::InvalidEndpoint {
            endpoint: self.endpoint.clone(),
            reason: reason.to_owned(),
        };
        let uri: ureq::http::Uri = self.endpoint.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(invalid("https needs TLS, which this crate leaves out")),
            _ => return Err(invalid("not http://")),
        }
        if uri.host().is_none() {
            return Err(invalid("no host"));
        }
        Ok(())
    }

    fn check(&self) -> Result<ExponentialIndex, OtlpError> {
        self.check_endpoint()?;
        let index = ExponentialIndex::new(self.scale, 1e9).map_err(OtlpError::Scale)?;
        if self.max_size < Self::MIN_MAX_SIZE {
            return Err(OtlpError::MaxSizeTooSmall {
                max_size: self.max_size,
            });
        }
        let zero = [
            (self.queue_capacity == 0, "the queue capacity"),
            (self.timeout.is_zero(), "the timeout"),
            (
                self.backoff.0.is_zero() || self.backoff.0 > self.backoff.1,
                "the backoff",
            ),
        ];
        match zero.into_iter().find(|(bad, _)| *bad) {
            Some((_, setting)) => Err(OtlpError::InvalidSetting { setting }),
            None => Ok(index),
        }
    }

    /// Checks the settings and starts the export thread (`laptime-otlp`).
    pub fn start(self) -> Result<OtlpExporter, OtlpError> {
        let index = Arc::new(self.check()?);
        let shared = Arc::new(Shared {
            queue: Queue::new(self.queue_capacity),
            counters: Counters::default(),
        });
        let mut resource = vec![encode::key_value("service.name", &self.service_name)];
        for (k, v) in &self.resource {
            resource.retain(|kv| &kv.key != k);
            resource.push(encode::key_value(k, v));
        }
        let sender = export::Sender {
            agent: export::Sender::agent(self.timeout),
            endpoint: self.endpoint,
            headers: self.headers,
            resource,
            backoff: self.backoff,
        };
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("laptime-otlp".to_owned())
            .spawn(move || sender.run(for_thread))
            .map_err(OtlpError::Spawn)?;
        Ok(OtlpExporter {
            shared,
            index,
            max_size: self.max_size,
            period: self.period,
            thread: Some(thread),
        })
    }
}

/// The OTLP exporter's handle: owns the export thread. Give the collector its
/// [`sink`](Self::sink); read its [`stats`](Self::stats). Dropping it sends the newest queued
/// batch (one attempt, at most one timeout besides a request under way), stops the thread and
/// joins it; batches the sink hands over later are not sent.
pub struct OtlpExporter {
    shared: Arc<Shared>,
    index: Arc<ExponentialIndex>,
    max_size: usize,
    period: Duration,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// The settings, with their defaults.
    pub fn builder() -> OtlpExporterBuilder {
        OtlpExporterBuilder::default()
    }

    /// A sink for `CollectorBuilder::with_sink`: one per collector. Its counts start when that
    /// collector is installed.
    pub fn sink(&self) -> OtlpSink {
        OtlpSink::new(
            self.shared.clone(),
            self.index.clone(),
            self.max_size,
            self.period,
        )
    }

    /// What was exported, dropped and failed so far.
    pub fn stats(&self) -> OtlpStats {
        self.shared.counters.snapshot()
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        self.shared.queue.close();
        if let Some(thread) = self.thread.take() {
            // The thread catches nothing: a panic in it (a bug) is not the host's to rethrow.
            let _ = thread.join();
        }
    }
}
