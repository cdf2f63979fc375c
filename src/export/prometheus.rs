//! Prometheus export: the aggregator's figures as Prometheus metric families, in a registry of your
//! own or one the exporter owns, rendered in the text exposition format.
//!
//! Nothing here touches the hot path. The aggregator keeps each stage's bucket counts as plain
//! `u64`s (a table lookup and a comparison per drained record, with the same nanosecond
//! value the library records), and after each cycle hands the exporter an immutable picture:
//! those counts, the snapshot every query reads, and the cumulative count and exact sum of each
//! stage. A scrape renders that picture; it never waits on the aggregator, and the aggregator never
//! waits on a scrape.
//!
//! ```
//! use std::time::Duration;
//! use laptime::export::prometheus::PrometheusExporter;
//!
//! let exporter = PrometheusExporter::builder()
//!     .with_namespace("mm")
//!     .with_const_label("env", "canary")
//!     .build()
//!     .expect("valid namespace and labels");
//! let handle = laptime::Collector::builder()
//!     .with_prometheus(exporter.clone())
//!     .install()
//!     .expect("first collector of the process");
//!
//! laptime::record("stage_spread", Duration::from_micros(42));
//! exporter.gauge("parallel_symbols", "Symbols quoted in parallel.")?.set(4.0);
//! handle.flush();
//!
//! let text = exporter.render()?;
//! assert!(text.contains(r#"mm_stage_duration_seconds_count{stage="stage_spread",env="canary"} 1"#));
//! assert!(text.contains(r#"mm_parallel_symbols{env="canary"} 4"#));
//! # Ok::<(), laptime::export::ExportError>(())
//! ```
//!
//! # What is exported
//!
//! With namespace `ns` (default `laptime`) and the default unit (seconds; `<unit>` below is
//! `seconds`, or `ms` with [`Unit::Milliseconds`]):
//!
//! | metric | type | labels | from |
//! |---|---|---|---|
//! | `ns_stage_duration_<unit>` | histogram | `stage` | every unlabelled stage, cumulative since the collector started |
//! | `ns_<stage name>_<unit>` | histogram | the stage's own labels | every stage that has static labels (e.g. `mm_exchange_req_ms{verb,api}`) |
//! | `ns_stage_window_quantile_<unit>` | gauge | `stage`, `window`, `percentile` (+ stage labels) | p50/p95/p99/p99.9 per sliding window, opt-in ([`PrometheusBuilder::with_window_quantiles`]) |
//! | `ns_deadline_miss_total` | counter | `stage` (+ stage labels) | [`crate::StageStats::deadline_misses`], for stages with a deadline or a miss |
//! | `ns_guard_trips_total` | counter | `reason` | [`crate::guard_trips`] over [`crate::Window::Cumulative`] |
//! | `ns_records_dropped_total`, `ns_records_sampled_out_total`, `ns_spans_cancelled_total` | counter | `stage` (+ stage labels) | [`crate::StageStats::dropped`], [`crate::StageStats::sampled_out`], [`crate::StageStats::cancelled`] |
//! | `ns_spans_produced_total`, `ns_spans_unwound_total` | counter | `stage` (+ stage labels) | [`crate::StageStats::produced`], [`crate::StageStats::unwound`] of the cumulative window |
//! | `ns_spans_in_rings` | gauge | `stage` (+ stage labels) | [`crate::StageStats::in_rings`] |
//! | `ns_stage_duration_corrected_<unit>` | histogram | `stage` (+ stage labels) | stages with an expected interval ([`crate::Stage::set_expected_interval`]): the coordinated-omission-corrected durations, cumulative |
//! | `ns_stage_window_quantile_corrected_<unit>` | gauge | `stage`, `window`, `percentile` (+ stage labels) | [`crate::StageStats::corrected`] per sliding window, with the window quantiles |
//! | `ns_stage_expected_interval_<unit>` | gauge | `stage` (+ stage labels) | [`crate::CorrectedStats::expected_interval`] |
//! | `ns_stage_values_synthesized_total` | counter | `stage` (+ stage labels) | [`crate::CorrectedStats::synthesized`] |
//! | `ns_records_aggregated_total`, `ns_records_produced_total`, `ns_values_saturated_total`, `ns_spans_clock_backwards_total`, `ns_aggregator_cycles_total`, `ns_aggregator_restarts_total`, `ns_callback_panics_total`, `ns_rejected_calls_total`, `ns_spans_abandoned_total` | counter | | [`crate::Health`] |
//! | `ns_aggregator_lag_seconds`, `ns_aggregator_last_cycle_seconds`, `ns_aggregator_last_drain_age_seconds`, `ns_sampling_rate`, `ns_adaptive_sampling_engaged`, `ns_enabled`, `ns_ring_high_water_records`, `ns_ring_capacity_records`, `ns_records_in_rings`, `ns_spans_in_flight`, `ns_aggregator_memory_bytes` | gauge | | [`crate::Health`]; the drain age is measured at scrape time |
//! | `ns_<name>` | gauge | | [`PrometheusExporter::gauge`] |
//! | `process_*` | | | feature `prometheus-process`, [`PrometheusBuilder::with_process_metrics`] |
//!
//! Every series also carries the const labels ([`PrometheusBuilder::with_const_label`]), e.g.
//! `env="canary"` beside `env="baseline"` from another process.
//!
//! **Labelled stages** get a family of their own, named after the stage, because a stage's
//! static labels are its own dimensions: `Stage::with_labels("exchange_req", &[("verb", "post"),
//! ("api", "batch-cancel")])` comes out as `mm_exchange_req_seconds{verb="post",api="batch-cancel"}`
//! (or `mm_exchange_req_ms{..}` in milliseconds, the seeds' name). Characters of the stage name
//! that a metric name cannot hold (`.`, `:`, `/`, `-`) become `_`. If two stage names map to the
//! same family name, or the family name is one the export already uses (or a gauge's), the later
//! stage goes under `ns_stage_duration_<unit>` instead, with a `stage` label beside its own. A
//! stage label whose name is also a const label, or one the export sets itself (`reason`,
//! `percentile`), is exported as `exported_<name>`.
//!
//! **Exactness.** Each drained duration lands in exactly one bucket (`le` is inclusive; a value
//! above every bound is counted in `+Inf` only); `_count` is the library's cumulative count and
//! `_sum` its exact nanosecond sum, converted to the unit once when rendered. Values above the
//! collector's highest trackable value are bucketed by what was measured, as `_sum` counts them.
//!
//! **Accounting.** Per stage, `ns_spans_produced_total` = the stage's histogram `_count` +
//! `ns_records_dropped_total` + `ns_spans_cancelled_total` + `ns_spans_in_rings`, every figure
//! from the same aggregator cycle: a span outcome that passed sampling is aggregated, dropped,
//! cancelled or still in a ring, and nothing else happens to it. Over all stages,
//! `ns_records_produced_total` = `ns_records_aggregated_total` + dropped + `ns_records_in_rings`
//! (records include the starts of deadline-watched spans, so the totals are not the per-stage sums).
//!
//! **Coordinated omission.** A stage with an expected interval gets a second histogram,
//! `ns_stage_duration_corrected_<unit>`, with the same buckets: the raw durations plus the values
//! HdrHistogram's `recordValueWithExpectedInterval` adds for the spans a slow one held back. Its
//! `_count` is the spans recorded since the correction was turned on plus
//! `ns_stage_values_synthesized_total`. The raw histogram is unchanged. Stages without an expected
//! interval have none of the corrected families (absent, not zero).
//!
//! **Windowed quantiles are not histograms.** `ns_stage_window_quantile_<unit>{window="60s",
//! percentile="99"}` reports what
//! [`crate::get_stats`] reports for each sliding window of *this* process; averaging or summing
//! them across instances means nothing. Use `histogram_quantile` over `rate()` of the histogram's
//! buckets to aggregate.
//!
//! **Milliseconds.** [`Unit::Milliseconds`] keeps dashboards built on the seeds' `_ms` names
//! working. `promtool check metrics` reports those names ("metric names should not contain
//! abbreviated units"); the exposition is otherwise the same.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::prometheus::core::{Collector as PromCollector, Desc};
use ::prometheus::proto::{self, MetricFamily, MetricType};
use ::prometheus::{Encoder, Opts, TextEncoder};
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

pub use ::prometheus::{Gauge, Registry};

use super::ExportError;
use crate::aggregator::window::Tally;
use crate::stage::Stage;
use crate::stats::{Snapshot, Window};

/// Most bounds one bucket list may have.
pub const MAX_BUCKETS: usize = 256;

/// Label names the export sets itself; neither const labels nor stage labels may use them.
const RESERVED_LABELS: [&str; 6] = ["stage", "le", "quantile", "window", "reason", "percentile"];

/// The quantiles exported per sliding window, with the `percentile` label value each carries.
const WINDOW_QUANTILES: [(f64, &str); 4] =
    [(0.5, "50"), (0.95, "95"), (0.99, "99"), (0.999, "99.9")];

/// The unit stage durations are exported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Unit {
    /// Seconds, Prometheus' base unit: `<ns>_stage_duration_seconds`.
    #[default]
    Seconds,
    /// Milliseconds under the seeds' names (`<ns>_stage_duration_ms`, `<ns>_exchange_req_ms`), so
    /// existing dashboards keep working. Not Prometheus convention: `promtool check metrics`
    /// flags the abbreviated unit.
    Milliseconds,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Milliseconds => "ms",
        }
    }

    /// Nanoseconds per unit.
    fn ns_per_unit(self) -> f64 {
        match self {
            Unit::Seconds => 1e9,
            Unit::Milliseconds => 1e6,
        }
    }

    fn of_ns(self, ns: u64) -> f64 {
        ns as f64 / self.ns_per_unit()
    }
}

/// The default bucket bounds: a 1-2-5 ladder from 1 µs to 10 s (22 bounds), so sub-microsecond
/// stages and multi-second stalls both resolve. The prometheus crate's own defaults start at 5 ms.
pub fn default_buckets() -> Vec<Duration> {
    let mut bounds = Vec::with_capacity(22);
    let mut decade = Duration::from_micros(1);
    while decade < Duration::from_secs(10) {
        bounds.extend([decade, decade * 2, decade * 5]);
        decade *= 10;
    }
    bounds.push(Duration::from_secs(10));
    bounds
}

/// Configures a [`PrometheusExporter`]. Every setter has a default; [`build`](Self::build)
/// validates everything and registers the export's collector.
pub struct PrometheusBuilder {
    registry: Option<Registry>,
    namespace: String,
    unit: Unit,
    buckets: Vec<Duration>,
    stage_buckets: Vec<(String, Vec<Duration>)>,
    const_labels: Vec<(String, String)>,
    window_quantiles: bool,
    #[cfg(feature = "prometheus-process")]
    process: bool,
}

impl std::fmt::Debug for PrometheusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusBuilder")
            .field("own_registry", &self.registry.is_none())
            .field("namespace", &self.namespace)
            .field("unit", &self.unit)
            .field("buckets", &self.buckets.len())
            .field("stage_buckets", &self.stage_buckets.len())
            .field("const_labels", &self.const_labels)
            .field("window_quantiles", &self.window_quantiles)
            .finish_non_exhaustive()
    }
}

impl Default for PrometheusBuilder {
    fn default() -> Self {
        Self {
            registry: None,
            namespace: "laptime".to_owned(),
            unit: Unit::Seconds,
            buckets: default_buckets(),
            stage_buckets: Vec::new(),
            const_labels: Vec::new(),
            window_quantiles: false,
            #[cfg(feature = "prometheus-process")]
            process: false,
        }
    }
}

impl PrometheusBuilder {
    /// Registers into `registry` (e.g. the one the application already serves) instead of a
    /// registry the exporter owns. [`PrometheusExporter::render`] then renders all of it.
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The prefix of every metric name (default `laptime`; the seeds use `mm`).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The unit of stage durations (default [`Unit::Seconds`]).
    pub fn with_unit(mut self, unit: Unit) -> Self {
        self.unit = unit;
        self
    }

    /// The bucket upper bounds of every stage without a list of its own (default
    /// [`default_buckets`]). Strictly increasing, 1 to [`MAX_BUCKETS`] bounds; `+Inf` is added.
    pub fn with_buckets(mut self, bounds: impl IntoIterator<Item = Duration>) -> Self {
        self.buckets = bounds.into_iter().collect();
        self
    }

    /// The bucket upper bounds of every stage named `stage` (whatever its labels).
    pub fn with_stage_buckets(
        mut self,
        stage: &str,
        bounds: impl IntoIterator<Item = Duration>,
    ) -> Self {
        self.stage_buckets
            .push((stage.to_owned(), bounds.into_iter().collect()));
        self
    }

    /// A label on every exported series, e.g. `env` = `canary`, `instance`, `version`. (A
    /// Prometheus server keeps its own `instance` target label and stores an exposed one as
    /// `exported_instance`, unless the scrape job sets `honor_labels: true`.)
    pub fn with_const_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.const_labels.push((name.into(), value.into()));
        self
    }

    /// Also exports p50/p95/p99/p99.9 of every stage over every sliding window, as gauges
    /// `<ns>_stage_window_quantile_<unit>{stage, window="60s", percentile="99"}` (default off; the
    /// label is not `quantile`, which Prometheus keeps for summaries). They describe
    /// this process only: do not aggregate them across instances.
    pub fn with_window_quantiles(mut self, on: bool) -> Self {
        self.window_quantiles = on;
        self
    }

    /// Also exports the process's own figures through the prometheus crate's process collector:
    /// `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_threads`,
    /// `process_open_fds` and more, with the const labels (default off; Linux only, elsewhere it
    /// adds nothing).
    #[cfg(feature = "prometheus-process")]
    pub fn with_process_metrics(mut self, on: bool) -> Self {
        self.process = on;
        self
    }

    /// Validates the configuration and registers the export's collector (and the process
    /// collector, if asked for) into the registry.
    pub fn build(self) -> Result<PrometheusExporter, ExportError> {
        if !is_metric_name(&self.namespace) {
            return Err(ExportError::InvalidNamespace {
                namespace: self.namespace,
            });
        }
        let mut const_labels: Vec<(String, String)> = Vec::new();
        for (name, value) in &self.const_labels {
            if !is_label_name(name) || RESERVED_LABELS.contains(&name.as_str()) {
                return Err(ExportError::InvalidLabelName {
                    label: name.clone(),
                });
            }
            if value.is_empty() {
                return Err(ExportError::EmptyLabelValue {
                    label: name.clone(),
                });
            }
            if const_labels.iter().any(|(n, _)| n == name) {
                return Err(ExportError::DuplicateLabel {
                    label: name.clone(),
                });
            }
            const_labels.push((name.clone(), value.clone()));
        }
        let default_bounds = bounds_ns(&self.buckets, None)?;
        let mut stage_bounds = HashMap::new();
        for (stage, bounds) in &self.stage_buckets {
            if crate::stage::valid_name(stage).is_err() {
                return Err(ExportError::InvalidStageName {
                    name: stage.clone(),
                });
            }
            let bounds = bounds_ns(bounds, Some(stage))?;
            if stage_bounds.insert(stage.clone(), bounds).is_some() {
                return Err(ExportError::DuplicateStageBuckets {
                    stage: stage.clone(),
                });
            }
        }
        let names = MetricNames::new(&self.namespace, self.unit);
        let const_pairs: Vec<proto::LabelPair> =
            const_labels.iter().map(|(k, v)| pair(k, v)).collect();
        let core = Arc::new(Core {
            config: Config {
                namespace: self.namespace,
                unit: self.unit,
                default_bounds,
                stage_bounds,
                const_labels,
                const_pairs,
                window_quantiles: self.window_quantiles,
                names,
            },
            state: ArcSwapOption::empty(),
            gauge_names: Mutex::new(HashSet::new()),
        });
        let registry = self.registry.unwrap_or_default();
        let collector = StageCollector::new(core.clone())?;
        #[cfg_attr(
            not(all(feature = "prometheus-process", target_os = "linux")),
            allow(unused_mut)
        )]
        let mut registered = vec![collector.descs.clone()];
        register(
            &registry,
            Box::new(collector),
            &core.config.names.stage_duration,
        )?;
        #[cfg(all(feature = "prometheus-process", target_os = "linux"))]
        if self.process {
            let inner = ::prometheus::process_collector::ProcessCollector::for_self();
            let process = WithConstLabels::new(inner, &core.config.const_labels);
            let result = match process {
                Ok(c) => {
                    let descs = c.descs.clone();
                    register(&registry, Box::new(c), "process_cpu_seconds_total")
                        .map(|()| registered.push(descs))
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                unregister_all(&registry, &registered);
                return Err(e);
            }
        }
        Ok(PrometheusExporter {
            shared: Arc::new(Shared {
                registry,
                core,
                gauges: Mutex::new(HashMap::new()),
                registered: Mutex::new(registered),
            }),
        })
    }
}

/// Exports one collector's figures to Prometheus. Cheap to clone (one `Arc`); give a clone to
/// [`crate::CollectorBuilder::with_prometheus`] and keep one to render or serve.
///
/// When the last clone is dropped, the export's metrics are removed from the registry.
#[derive(Clone)]
pub struct PrometheusExporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PrometheusExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.shared.core.config;
        f.debug_struct("PrometheusExporter")
            .field("namespace", &c.namespace)
            .field("unit", &c.unit)
            .field("const_labels", &c.const_labels)
            .field("attached", &self.shared.core.state.load().is_some())
            .finish_non_exhaustive()
    }
}

impl PrometheusExporter {
    /// A builder with the defaults: an owned registry, namespace `laptime`, seconds, the 1-2-5
    /// ladder of [`default_buckets`], no const labels, no windowed quantiles.
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::default()
    }

    /// The registry the export is registered in.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The text exposition (`text/plain; version=0.0.4`) of the whole registry, from the figures
    /// the aggregator last published. Never panics: a panic inside a collector of the registry is
    /// caught and returned as [`ExportError::Encode`].
    pub fn render(&self) -> Result<String, ExportError> {
        let registry = &self.shared.registry;
        let rendered = catch_unwind(AssertUnwindSafe(|| {
            let families = registry.gather();
            let mut buf = Vec::with_capacity(16 * 1024);
            TextEncoder::new()
                .encode(&families, &mut buf)
                .map_err(|e| e.to_string())?;
            String::from_utf8(buf).map_err(|e| e.to_string())
        }));
        match rendered {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(message)) => Err(ExportError::Encode { message }),
            Err(_) => Err(ExportError::Encode {
                message: "a collector in the registry panicked while gathering".to_owned(),
            }),
        }
    }

    /// An application gauge `<ns>_<name>` with the const labels, e.g. the number of symbols quoted
    /// in parallel. Registered on first use; later calls with the same name return the same
    /// gauge (the first help text stays). Setting it is a Prometheus atomic in the caller's
    /// thread: keep it off the hot path.
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, ExportError> {
        if !is_metric_name(name) {
            return Err(ExportError::InvalidMetricName {
                name: name.to_owned(),
            });
        }
        let config = &self.shared.core.config;
        let full = format!("{}_{}", config.namespace, name);
        let mut gauges = self.shared.gauges.lock();
        if let Some(g) = gauges.get(&full) {
            return Ok(g.clone());
        }
        if help.is_empty() {
            return Err(ExportError::EmptyHelp { name: full });
        }
        if config.names.fixed().any(|n| *n == full) {
            return Err(ExportError::AlreadyRegistered { name: full });
        }
        let opts = Opts::new(name, help)
            .namespace(config.namespace.clone())
            .const_labels(config.const_labels.iter().cloned().collect());
        let gauge = Gauge::with_opts(opts).map_err(|e| ExportError::Registry {
            message: e.to_string(),
        })?;
        let descs = gauge.desc().into_iter().cloned().collect();
        register(&self.shared.registry, Box::new(gauge.clone()), &full)?;
        self.shared.registered.lock().push(descs);
        self.shared.core.gauge_names.lock().insert(full.clone());
        gauges.insert(full, gauge.clone());
        Ok(gauge)
    }

    /// Liveness: `Ok` with a one-line summary while a collector feeds this exporter and its last
    /// cycle is recent (within 10 aggregator intervals, at least 2 s); `Err` with the reason when
    /// no collector ever fed it, its collector stopped, or the aggregator is stuck.
    pub fn health(&self) -> Result<String, String> {
        let Some(p) = self.shared.core.state.load_full() else {
            return Err(
                "unhealthy: no collector feeds this exporter (CollectorBuilder::with_prometheus)\n"
                    .to_owned(),
            );
        };
        if !p.running {
            return Err("unhealthy: the collector feeding this exporter has stopped\n".to_owned());
        }
        let age = p.at.elapsed();
        let limit = (p.interval * 10).max(Duration::from_secs(2));
        let h = &p.snapshot.health;
        if age > limit {
            return Err(format!(
                "unhealthy: the aggregator last published {age:?} ago (limit {limit:?}); cycle {}\n",
                h.cycles
            ));
        }
        Ok(format!(
            "ok: cycle {} published {age:?} ago, lag {:?}, {} records, {} dropped, {} restarts\n",
            h.cycles, h.lag, h.records, h.dropped, h.aggregator_restarts
        ))
    }

    /// The bucket counters the aggregator keeps for `stage`.
    pub(crate) fn stage_buckets(&self, stage: Stage) -> StageBuckets {
        let config = &self.shared.core.config;
        let bounds = config
            .stage_bounds
            .get(stage.name())
            .unwrap_or(&config.default_bounds)
            .clone();
        StageBuckets {
            counts: vec![0; bounds.len + 1].into_boxed_slice(),
            bounds,
            published: None,
        }
    }

    /// Called by the aggregator after each cycle: the figures a scrape renders from now on.
    pub(crate) fn publish(
        &self,
        snapshot: Arc<Snapshot>,
        stages: Vec<Option<StageFigures>>,
        interval: Duration,
    ) {
        self.shared.core.state.store(Some(Arc::new(Published {
            snapshot,
            stages,
            at: Instant::now(),
            interval,
            running: true,
        })));
    }

    /// Called by the aggregator after a caught panic: new health figures, the same statistics.
    pub(crate) fn republish(&self, snapshot: Arc<Snapshot>) {
        let core = &self.shared.core;
        if let Some(old) = core.state.load_full() {
            core.state.store(Some(Arc::new(Published {
                snapshot,
                stages: old.stages.clone(),
                // Not now: nothing was drained, so the last-drain age keeps growing and an
                // aggregator that panics on every cycle shows as stuck.
                at: old.at,
                interval: old.interval,
                running: old.running,
            })));
        }
    }

    /// Called by the aggregator as it exits: the figures stay, [`health`](Self::health) fails.
    pub(crate) fn detach(&self) {
        let core = &self.shared.core;
        if let Some(old) = core.state.load_full() {
            core.state.store(Some(Arc::new(Published {
                snapshot: old.snapshot.clone(),
                stages: old.stages.clone(),
                at: old.at,
                interval: old.interval,
                running: false,
            })));
        }
    }
}

/// What [`crate::export::http::MetricsServer`] serves: [`PrometheusExporter::render`] on
/// `/metrics`, [`PrometheusExporter::health`] on `/health`.
#[cfg(feature = "http")]
impl crate::export::http::Exposition for PrometheusExporter {
    fn metrics(&self) -> Result<String, ExportError> {
        self.render()
    }

    fn health(&self) -> Result<String, String> {
        PrometheusExporter::health(self)
    }

    /// Changes with every publication (each has its own snapshot time) and when the collector
    /// stops: the server renders once per aggregator cycle.
    fn generation(&self) -> Option<u64> {
        let published = self.shared.core.state.load();
        Some(published.as_ref().map_or(0, |p| {
            (p.snapshot.taken_at.as_nanos() as u64) << 1 | u64::from(p.running)
        }))
    }
}

/// What the clones of one exporter share.
struct Shared {
    registry: Registry,
    core: Arc<Core>,
    gauges: Mutex<HashMap<String, Gauge>>,
    /// The descriptors of every collector this exporter registered: the registry finds a
    /// collector to unregister by its descriptors.
    registered: Mutex<Vec<Vec<Desc>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        unregister_all(&self.registry, &self.registered.lock());
    }
}

/// What the registered collector reads: the configuration and the last published figures. Kept
/// apart from [`Shared`] so the registry (which holds the collector) does not hold itself.
struct Core {
    config: Config,
    state: ArcSwapOption<Published>,
    /// Full names of the application gauges, which labelled stages' families must not take.
    gauge_names: Mutex<HashSet<String>>,
}

struct Config {
    namespace: String,
    unit: Unit,
    default_bounds: Arc<Bounds>,
    stage_bounds: HashMap<String, Arc<Bounds>>,
    const_labels: Vec<(String, String)>,
    const_pairs: Vec<proto::LabelPair>,
    window_quantiles: bool,
    names: MetricNames,
}

/// The metric family names the export uses, for a namespace and a unit: the one source of truth
/// for names, used by the exporter itself and by whatever writes queries against it (the
/// `laptime rules` generator of alert and recording rules and dashboards).
///
/// ```
/// use laptime::export::prometheus::{MetricNames, Unit};
///
/// let n = MetricNames::new("mm", Unit::Seconds);
/// assert_eq!(n.stage_duration(), "mm_stage_duration_seconds");
/// assert_eq!(n.labelled_stage("exchange_req"), "mm_exchange_req_seconds");
/// assert_eq!(n.health("aggregator_lag_seconds").as_deref(), Some("mm_aggregator_lag_seconds"));
/// assert_eq!(n.health("no_such_figure"), None);
/// assert_eq!(n.unit_seconds(), 1.0);
/// assert_eq!(MetricNames::new("mm", Unit::Milliseconds).unit_seconds(), 1e-3);
/// ```
#[derive(Debug, Clone)]
pub struct MetricNames {
    namespace: String,
    unit: Unit,
    stage_duration: String,
    window_quantile: String,
    deadline_miss: String,
    guard_trips: String,
    dropped: String,
    sampled_out: String,
    cancelled: String,
    produced: String,
    in_rings: String,
    unwound: String,
    stage_duration_corrected: String,
    window_quantile_corrected: String,
    expected_interval: String,
    synthesized: String,
    health: Vec<(String, HealthMetric)>,
}
/// One figure of [`crate::Health`] (or the exporter's own drain age).
#[derive(Debug, Clone, Copy)]
struct HealthMetric {
    suffix: &'static str,
    help: &'static str,
    counter: bool,
    read: fn(&Published) -> f64,
}

const HEALTH: [HealthMetric; 20] = [
    HealthMetric {
        suffix: "records_aggregated_total",
        help: "Records the aggregator took out of the rings (span ends, values, deadline starts).",
        counter: true,
        read: |p| p.snapshot.health.records as f64,
    },
    HealthMetric {
        suffix: "records_produced_total",
        help: "Records pushed into the rings plus records dropped (produced = aggregated + dropped + in rings).",
        counter: true,
        read: |p| p.snapshot.health.produced as f64,
    },
    HealthMetric {
        suffix: "records_in_rings",
        help: "Records waiting in the rings when the aggregator last published.",
        counter: false,
        read: |p| p.snapshot.health.in_rings as f64,
    },
    HealthMetric {
        suffix: "values_saturated_total",
        help: "Durations above the highest trackable value (recorded as that value in the quantiles).",
        counter: true,
        read: |p| p.snapshot.health.saturated as f64,
    },
    HealthMetric {
        suffix: "spans_clock_backwards_total",
        help: "Spans whose end tick read earlier than their start (a clock stepped back, or TSCs not synchronised across cores), recorded as 0 ns.",
        counter: true,
        read: |p| p.snapshot.health.backwards_spans as f64,
    },
    HealthMetric {
        suffix: "rejected_calls_total",
        help: "Calls naming a stage that could not be registered (invalid name or stage cap reached).",
        counter: true,
        read: |p| p.snapshot.health.rejected as f64,
    },
    HealthMetric {
        suffix: "aggregator_cycles_total",
        help: "Aggregation cycles run.",
        counter: true,
        read: |p| p.snapshot.health.cycles as f64,
    },
    HealthMetric {
        suffix: "aggregator_restarts_total",
        help: "Panics caught inside the aggregator (it carries on after each).",
        counter: true,
        read: |p| p.snapshot.health.aggregator_restarts as f64,
    },
    HealthMetric {
        suffix: "callback_panics_total",
        help: "Panics caught inside SLA callbacks.",
        counter: true,
        read: |p| p.snapshot.health.callback_panics as f64,
    },
    HealthMetric {
        suffix: "spans_abandoned_total",
        help: "Deadline-watched spans given up on in flight (their end never arrived).",
        counter: true,
        read: |p| p.snapshot.health.abandoned as f64,
    },
    HealthMetric {
        suffix: "aggregator_lag_seconds",
        help: "Age of the oldest record drained in the last cycle.",
        counter: false,
        read: |p| p.snapshot.health.lag.as_secs_f64(),
    },
    HealthMetric {
        suffix: "aggregator_last_cycle_seconds",
        help: "Time the aggregator's previous cycle took.",
        counter: false,
        read: |p| p.snapshot.health.last_cycle.as_secs_f64(),
    },
    HealthMetric {
        suffix: "aggregator_last_drain_age_seconds",
        help: "Time since the aggregator last drained the rings and published, at scrape time.",
        counter: false,
        read: |p| p.at.elapsed().as_secs_f64(),
    },
    HealthMetric {
        suffix: "sampling_rate",
        help: "The global sampling rate in force, in [0, 1].",
        counter: false,
        read: |p| p.snapshot.health.sampling_rate,
    },
    HealthMetric {
        suffix: "adaptive_sampling_engaged",
        help: "1 while adaptive sampling holds the rate down, else 0.",
        counter: false,
        read: |p| f64::from(u8::from(p.snapshot.health.adaptive_engaged)),
    },
    HealthMetric {
        suffix: "enabled",
        help: "1 while recording is globally enabled, else 0.",
        counter: false,
        read: |p| f64::from(u8::from(p.snapshot.health.enabled)),
    },
    HealthMetric {
        suffix: "ring_high_water_records",
        help: "The fullest any ring was seen, in records, since the collector started.",
        counter: false,
        read: |p| p.snapshot.health.ring_high_water as f64,
    },
    HealthMetric {
        suffix: "ring_capacity_records",
        help: "Capacity of each thread's ring, in records.",
        counter: false,
        read: |p| p.snapshot.health.ring_capacity as f64,
    },
    HealthMetric {
        suffix: "spans_in_flight",
        help: "Deadline-watched spans started and not yet ended.",
        counter: false,
        read: |p| p.snapshot.health.in_flight as f64,
    },
    HealthMetric {
        suffix: "aggregator_memory_bytes",
        help: "Heap bytes held by the aggregator's latency histograms.",
        counter: false,
        read: |p| p.snapshot.health.histogram_bytes as f64,
    },
];

impl MetricNames {
    /// The names for namespace `ns` (the builder's [`PrometheusBuilder::with_namespace`]) and
    /// `unit`. The namespace is not validated here; [`PrometheusBuilder::build`] does that.
    pub fn new(ns: &str, unit: Unit) -> Self {
        let u = unit.suffix();
        Self {
            namespace: ns.to_owned(),
            unit,
            stage_duration: format!("{ns}_stage_duration_{u}"),
            window_quantile: format!("{ns}_stage_window_quantile_{u}"),
            deadline_miss: format!("{ns}_deadline_miss_total"),
            guard_trips: format!("{ns}_guard_trips_total"),
            dropped: format!("{ns}_records_dropped_total"),
            sampled_out: format!("{ns}_records_sampled_out_total"),
            cancelled: format!("{ns}_spans_cancelled_total"),
            produced: format!("{ns}_spans_produced_total"),
            in_rings: format!("{ns}_spans_in_rings"),
            unwound: format!("{ns}_spans_unwound_total"),
            stage_duration_corrected: format!("{ns}_stage_duration_corrected_{u}"),
            window_quantile_corrected: format!("{ns}_stage_window_quantile_corrected_{u}"),
            expected_interval: format!("{ns}_stage_expected_interval_{u}"),
            synthesized: format!("{ns}_stage_values_synthesized_total"),
            health: HEALTH
                .iter()
                .map(|m| (format!("{ns}_{}", m.suffix), *m))
                .collect(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The unit of stage durations.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Seconds per exported unit (1 for seconds, 0.001 for milliseconds): a threshold `d` is
    /// `d.as_secs_f64() / unit_seconds()` in the exported unit.
    pub fn unit_seconds(&self) -> f64 {
        self.unit.ns_per_unit() / 1e9
    }

    /// A duration in the exported unit.
    pub fn in_unit(&self, d: Duration) -> f64 {
        d.as_nanos() as f64 / self.unit.ns_per_unit()
    }

    /// `<ns>_stage_duration_<unit>`: histogram of unlabelled stages, label `stage`.
    pub fn stage_duration(&self) -> &str {
        &self.stage_duration
    }

    /// `<ns>_stage_window_quantile_<unit>`: gauge, labels `stage`, `window`, `percentile`.
    pub fn window_quantile(&self) -> &str {
        &self.window_quantile
    }

    /// `<ns>_deadline_miss_total`: counter, label `stage`.
    pub fn deadline_miss(&self) -> &str {
        &self.deadline_miss
    }

    /// `<ns>_guard_trips_total`: counter, label `reason`.
    pub fn guard_trips(&self) -> &str {
        &self.guard_trips
    }

    /// `<ns>_records_dropped_total`: counter, label `stage`.
    pub fn dropped(&self) -> &str {
        &self.dropped
    }

    /// `<ns>_records_sampled_out_total`: counter, label `stage`.
    pub fn sampled_out(&self) -> &str {
        &self.sampled_out
    }

    /// `<ns>_spans_cancelled_total`: counter, label `stage`.
    pub fn cancelled(&self) -> &str {
        &self.cancelled
    }

    /// `<ns>_spans_produced_total`: counter, label `stage` ([`crate::StageStats::produced`] of
    /// the cumulative window). Per stage, `produced = <histogram>_count + dropped + cancelled +`
    /// [`in_rings`](Self::in_rings).
    pub fn produced(&self) -> &str {
        &self.produced
    }

    /// `<ns>_spans_in_rings`: gauge, label `stage` ([`crate::StageStats::in_rings`]).
    pub fn in_rings(&self) -> &str {
        &self.in_rings
    }

    /// `<ns>_spans_unwound_total`: counter, label `stage` ([`crate::StageStats::unwound`]).
    pub fn unwound(&self) -> &str {
        &self.unwound
    }

    /// `<ns>_stage_duration_corrected_<unit>`: histogram of every stage with an expected
    /// interval, coordinated-omission corrected, label `stage` (and the stage's own labels).
    pub fn stage_duration_corrected(&self) -> &str {
        &self.stage_duration_corrected
    }

    /// `<ns>_stage_window_quantile_corrected_<unit>`: gauge, labels `stage`, `window`,
    /// `percentile`, from [`crate::StageStats::corrected`].
    pub fn window_quantile_corrected(&self) -> &str {
        &self.window_quantile_corrected
    }

    /// `<ns>_stage_expected_interval_<unit>`: gauge, label `stage`, for corrected stages.
    pub fn expected_interval(&self) -> &str {
        &self.expected_interval
    }

    /// `<ns>_stage_values_synthesized_total`: counter, label `stage`, for corrected stages
    /// ([`crate::CorrectedStats::synthesized`]).
    pub fn synthesized(&self) -> &str {
        &self.synthesized
    }

    /// The own histogram family of a stage with static labels, e.g. `mm_exchange_req_seconds`
    /// for stage `exchange_req` (characters a metric name cannot hold become `_`). A stage whose
    /// family name collides goes under [`stage_duration`](Self::stage_duration) instead (see the
    /// module documentation).
    pub fn labelled_stage(&self, stage: &str) -> String {
        Self::own_family(&self.namespace, self.unit, stage)
    }

    /// The full name of one of the library's health figures, by its suffix: counters
    /// `records_aggregated_total`, `records_produced_total`, `values_saturated_total`,
    /// `spans_clock_backwards_total`, `rejected_calls_total`, `aggregator_cycles_total`, `aggregator_restarts_total`,
    /// `callback_panics_total`, `spans_abandoned_total`; gauges `records_in_rings`,
    /// `aggregator_lag_seconds`, `aggregator_last_cycle_seconds`,
    /// `aggregator_last_drain_age_seconds`, `sampling_rate`, `adaptive_sampling_engaged`,
    /// `enabled`, `ring_high_water_records`, `ring_capacity_records`, `spans_in_flight`,
    /// `aggregator_memory_bytes`. `None` for any other suffix.
    pub fn health(&self, suffix: &str) -> Option<String> {
        self.health
            .iter()
            .find(|(_, m)| m.suffix == suffix)
            .map(|(n, _)| n.clone())
    }

    /// The health suffixes [`health`](Self::health) knows, in export order.
    pub fn health_suffixes() -> impl Iterator<Item = &'static str> {
        HEALTH.iter().map(|m| m.suffix)
    }

    fn fixed(&self) -> impl Iterator<Item = &String> {
        [
            &self.stage_duration,
            &self.window_quantile,
            &self.deadline_miss,
            &self.guard_trips,
            &self.dropped,
            &self.sampled_out,
            &self.cancelled,
            &self.produced,
            &self.in_rings,
            &self.unwound,
            &self.stage_duration_corrected,
            &self.window_quantile_corrected,
            &self.expected_interval,
            &self.synthesized,
        ]
        .into_iter()
        .chain(self.health.iter().map(|(n, _)| n))
    }

    /// The family of a labelled stage: the namespace, the stage name with the characters a
    /// metric name cannot hold replaced by `_`, and the unit.
    fn own_family(ns: &str, unit: Unit, stage: &str) -> String {
        let name: String = stage
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{ns}_{name}_{}", unit.suffix())
    }
}

/// A bucket list in nanoseconds, with what finds a value's bucket in a few instructions.
///
/// A value's bucket is the number of bounds below it. For a value in octave `k` (`2^k ..
/// 2^(k+1)`; 0 and 1 in octave 0) that number is at least `first[k]` (the bounds below the
/// octave) and at most `steps` more (the most bounds any octave holds): a 1-2-5 ladder has at most
/// one bound per octave, so one comparison after a table lookup settles it, where a binary search
/// over 22 bounds chains five dependent loads. In `benches/prometheus.rs` that took the exporter's
/// added drain cost from 2–12 ns to 0–7 ns per record (`benches/README.md`, "Prometheus export").
/// Lists with more than [`MAX_STEPS`] bounds in one octave use the binary search.
pub(crate) struct Bounds {
    /// The bounds, strictly increasing, then one `u64::MAX`: no value is above it, so the stepping
    /// stops there at the latest.
    ns: Box<[u64]>,
    /// How many bounds (without the padding).
    len: usize,
    /// `first[k]`: how many bounds are below the octave `k`'s lowest value.
    first: [u16; 64],
    /// The most bounds one octave holds.
    steps: usize,
}

/// Octaves holding more bounds than this are searched by bisection instead.
const MAX_STEPS: usize = 4;

impl Bounds {
    fn new(ns: Vec<u64>) -> Self {
        debug_assert!(ns.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        let len = ns.len();
        let below = |x: u128| ns.iter().filter(|&&b| u128::from(b) < x).count();
        let mut first = [0u16; 64];
        let mut steps = 0;
        for (k, f) in first.iter_mut().enumerate() {
            let low = if k == 0 { 0 } else { 1u128 << k };
            let next = 1u128 << (k + 1);
            // At most MAX_BUCKETS (256) bounds: fits.
            *f = u16::try_from(below(low)).unwrap_or(u16::MAX);
            steps = steps.max(below(next) - below(low));
        }
        let mut padded = ns;
        padded.push(u64::MAX);
        Self {
            ns: padded.into_boxed_slice(),
            len,
            first,
            steps,
        }
    }

    /// The bounds, in nanoseconds.
    fn as_slice(&self) -> &[u64] {
        &self.ns[..self.len]
    }

    /// The bucket of `v`: how many bounds are below it (`le` is inclusive).
    #[inline]
    fn bucket(&self, v: u64) -> usize {
        if self.steps > MAX_STEPS {
            return self.as_slice().partition_point(|&b| b < v);
        }
        let octave = 63 - (v | 1).leading_zeros() as usize;
        let mut j = usize::from(self.first[octave]);
        for _ in 0..self.steps {
            // Stops at the padding at the latest: no value is above u64::MAX.
            j += usize::from(self.ns.get(j).is_some_and(|&b| b < v));
        }
        j
    }
}

/// One stage's bucket counts, kept by the aggregator: plain integers, no atomics.
pub(crate) struct StageBuckets {
    bounds: Arc<Bounds>,
    /// Records per bucket (not cumulative); the last one counts values above every bound.
    counts: Box<[u64]>,
    published: Option<Arc<StageExport>>,
}

impl StageBuckets {
    /// Counts one duration, in nanoseconds: the bucket is the first bound at or above it.
    #[inline]
    pub(crate) fn record(&mut self, ns: u64) {
        // At most `bounds.len`, the last index of `counts`.
        if let Some(c) = self.counts.get_mut(self.bounds.bucket(ns)) {
            *c += 1;
        }
    }

    /// Counts the `n` durations `highest`, `highest − step`, … (a coordinated-omission
    /// correction's added values) bucket by bucket: at most one step per bucket, not per value.
    pub(crate) fn record_sequence(&mut self, highest: u64, step: u64, n: u64) {
        let (mut v, mut left) = (highest, n);
        while left > 0 {
            let bucket = self.bounds.bucket(v);
            // Bucket `b` holds (bound b−1, bound b]; the last one everything above the bounds.
            let below = bucket.checked_sub(1).map_or(0, |b| self.bounds.ns[b]);
            let here = ((v - below - 1) / step.max(1) + 1).min(left);
            if let Some(c) = self.counts.get_mut(bucket) {
                *c += here;
            }
            left -= here;
            v = v.saturating_sub(here * step);
        }
    }

    /// This stage's figures for the exporter, shared with the previous cycle's if nothing moved.
    pub(crate) fn export(&mut self, stage: Stage, tally: &Tally) -> Arc<StageExport> {
        if let Some(p) = &self.published
            && p.count == tally.count
            && p.misses == tally.misses
            && p.dropped == tally.dropped
            && p.sampled_out == tally.sampled_out
            && p.cancelled == tally.cancelled
        {
            return p.clone();
        }
        debug_assert_eq!(
            self.counts.iter().sum::<u64>(),
            tally.count,
            "every recorded duration is in exactly one bucket"
        );
        let export = Arc::new(StageExport {
            stage,
            bounds: self.bounds.clone(),
            counts: self.counts.clone(),
            count: tally.count,
            sum_ns: tally.sum,
            misses: tally.misses,
            dropped: tally.dropped,
            sampled_out: tally.sampled_out,
            cancelled: tally.cancelled,
        });
        self.published = Some(export.clone());
        export
    }
}

/// One stage's exported histograms as of a cycle: the raw one, and the coordinated-omission
/// corrected one when the stage has an expected interval.
#[derive(Clone)]
pub(crate) struct StageFigures {
    pub(crate) raw: Arc<StageExport>,
    pub(crate) corrected: Option<Arc<StageExport>>,
}

/// One stage's cumulative figures as of a cycle.
pub(crate) struct StageExport {
    stage: Stage,
    bounds: Arc<Bounds>,
    counts: Box<[u64]>,
    count: u64,
    sum_ns: u128,
    misses: u64,
    dropped: u64,
    sampled_out: u64,
    cancelled: u64,
}

/// What a scrape renders: everything one aggregator cycle published.
struct Published {
    snapshot: Arc<Snapshot>,
    /// By stage id; `None` for stages this collector has no state for.
    stages: Vec<Option<StageFigures>>,
    at: Instant,
    interval: Duration,
    /// False once the collector stopped.
    running: bool,
}

/// The collector registered in the registry: renders the last published figures.
struct StageCollector {
    core: Arc<Core>,
    descs: Vec<Desc>,
}

impl StageCollector {
    fn new(core: Arc<Core>) -> Result<Self, ExportError> {
        let c = &core.config;
        let labels: HashMap<String, String> = c.const_labels.iter().cloned().collect();
        let mut descs = Vec::new();
        let mut desc = |name: &str, help: &str, vars: &[&str]| -> Result<(), ExportError> {
            let d = Desc::new(
                name.to_owned(),
                help.to_owned(),
                vars.iter().map(|v| (*v).to_owned()).collect(),
                labels.clone(),
            )
            .map_err(|e| ExportError::Registry {
                message: e.to_string(),
            })?;
            descs.push(d);
            Ok(())
        };
        let n = &c.names;
        desc(&n.stage_duration, STAGE_HIST_HELP, &["stage"])?;
        if c.window_quantiles {
            desc(
                &n.window_quantile,
                WINDOW_QUANTILE_HELP,
                &["stage", "window", "percentile"],
            )?;
        }
        desc(&n.deadline_miss, DEADLINE_MISS_HELP, &["stage"])?;
        desc(&n.guard_trips, GUARD_TRIPS_HELP, &["reason"])?;
        desc(&n.dropped, DROPPED_HELP, &["stage"])?;
        desc(&n.sampled_out, SAMPLED_OUT_HELP, &["stage"])?;
        desc(&n.cancelled, CANCELLED_HELP, &["stage"])?;
        desc(&n.produced, PRODUCED_HELP, &["stage"])?;
        desc(&n.in_rings, IN_RINGS_HELP, &["stage"])?;
        desc(&n.unwound, UNWOUND_HELP, &["stage"])?;
        desc(&n.stage_duration_corrected, CORRECTED_HIST_HELP, &["stage"])?;
        desc(&n.expected_interval, EXPECTED_INTERVAL_HELP, &["stage"])?;
        desc(&n.synthesized, SYNTHESIZED_HELP, &["stage"])?;
        if c.window_quantiles {
            desc(
                &n.window_quantile_corrected,
                CORRECTED_QUANTILE_HELP,
                &["stage", "window", "percentile"],
            )?;
        }
        for (name, m) in &n.health {
            desc(name, m.help, &[])?;
        }
        Ok(Self { core, descs })
    }
}

const STAGE_HIST_HELP: &str = "Stage durations since the collector started, cumulative (labelled stages have their own family).";
const WINDOW_QUANTILE_HELP: &str = "Percentile of a stage's durations over one sliding window of this process (not aggregatable: use the histogram across instances).";
const DEADLINE_MISS_HELP: &str =
    "Spans that ran past their stage's deadline, counted once each (while stuck or when they end).";
const GUARD_TRIPS_HELP: &str = "Guard trips by reason, since the collector started.";
const DROPPED_HELP: &str = "Records lost to full rings, by stage.";
const SAMPLED_OUT_HELP: &str = "Calls skipped by sampling, by stage (counted exactly).";
const CANCELLED_HELP: &str = "Spans abandoned before they ended (cancelled guards, dropped tokens and async futures), by stage.";
const PRODUCED_HELP: &str = "Span outcomes (ends, values, cancellations) that passed sampling, by stage; produced = the stage's histogram _count + records_dropped_total + spans_cancelled_total + spans_in_rings.";
const IN_RINGS_HELP: &str = "A stage's span outcomes pushed into rings and not yet aggregated at the last publish (the in-flight part of spans_produced_total).";
const UNWOUND_HELP: &str = "Spans that ended while their thread was unwinding from a panic (almost always a guard the panic dropped), by stage (recorded as durations too, so also in the histogram's _count).";
const CORRECTED_HIST_HELP: &str = "Stage durations with coordinated-omission correction, cumulative: the raw durations plus, for each span at least twice the stage's expected interval, the latencies of the spans it held back (HdrHistogram's expected-interval rule). Only stages with an expected interval.";
const CORRECTED_QUANTILE_HELP: &str = "Percentile of a stage's coordinated-omission-corrected durations over one sliding window of this process (beside the raw stage_window_quantile; not aggregatable).";
const EXPECTED_INTERVAL_HELP: &str = "The interval a corrected stage's spans are expected to start at: the period of its coordinated-omission correction.";
const SYNTHESIZED_HELP: &str = "Values the coordinated-omission correction added for spans held back by a slower one, by stage (the corrected histogram's _count is the spans recorded since the correction was on plus these).";

impl PromCollector for StageCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A scrape must not take the host down; a bug here costs one scrape's stage families.
        catch_unwind(AssertUnwindSafe(|| self.core.families())).unwrap_or_default()
    }
}

impl Core {
    fn families(&self) -> Vec<MetricFamily> {
        let Some(p) = self.state.load_full() else {
            return Vec::new();
        };
        let c = &self.config;
        let n = &c.names;
        let unit = c.unit;
        let snap = &p.snapshot;
        let gauge_names = self.gauge_names.lock().clone();
        let taken = |name: &String| n.fixed().any(|f| f == name) || gauge_names.contains(name);

        let mut hists: BTreeMap<String, Vec<proto::Metric>> = BTreeMap::new();
        let mut owners: HashMap<String, &'static str> = HashMap::new();
        let (mut misses, mut dropped, mut sampled, mut cancelled, mut quantiles) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut produced, mut waiting, mut unwound) = (Vec::new(), Vec::new(), Vec::new());
        let (mut corrected_hists, mut corrected_quantiles, mut intervals, mut synthesized) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let windows: Vec<Window> = snap
            .windows
            .iter()
            .copied()
            .filter(|w| *w != Window::Cumulative)
            .collect();

        // A family name two labelled stages map to belongs to the one with the lower id, decided
        // over every stage (idle ones too), so which stage owns it never changes between scrapes.
        for f in p.stages.iter().flatten() {
            if !f.raw.stage.labels().is_empty() {
                let own = MetricNames::own_family(&c.namespace, unit, f.raw.stage.name());
                owners.entry(own).or_insert(f.raw.stage.name());
            }
        }
        for f in p.stages.iter().flatten() {
            let e = &f.raw;
            let stage = e.stage;
            let deadline = stage.deadline();
            let cumulative = snap.stats(stage, Window::Cumulative);
            let in_rings = cumulative.map_or(0, |s| s.in_rings);
            let active = e.count > 0
                || e.misses > 0
                || e.dropped > 0
                || e.sampled_out > 0
                || e.cancelled > 0
                || in_rings > 0;
            if !active && deadline.is_none() {
                continue;
            }
            let own_labels: Vec<proto::LabelPair> = stage
                .labels()
                .iter()
                .map(|(k, v)| {
                    if c.const_labels.iter().any(|(ck, _)| ck == k) || RESERVED_LABELS.contains(k) {
                        pair(&format!("exported_{k}"), v)
                    } else {
                        pair(k, v)
                    }
                })
                .collect();
            let with_stage = |extra: &[proto::LabelPair]| {
                let mut l = Vec::with_capacity(2 + own_labels.len() + c.const_pairs.len());
                l.push(pair("stage", stage.name()));
                l.extend(own_labels.iter().cloned());
                l.extend(extra.iter().cloned());
                l.extend(c.const_pairs.iter().cloned());
                l
            };

            let mut family = n.stage_duration.clone();
            let mut labels = None;
            if !own_labels.is_empty() {
                let own = MetricNames::own_family(&c.namespace, unit, stage.name());
                let owner = *owners.entry(own.clone()).or_insert(stage.name());
                if owner == stage.name() && !taken(&own) {
                    family = own;
                    let mut l = own_labels.clone();
                    l.extend(c.const_pairs.iter().cloned());
                    labels = Some(l);
                }
            }
            let labels = labels.unwrap_or_else(|| with_stage(&[]));
            hists
                .entry(family)
                .or_default()
                .push(histogram_metric(labels, e, unit));

            if deadline.is_some() || e.misses > 0 {
                misses.push(counter_metric(with_stage(&[]), e.misses as f64));
            }
            dropped.push(counter_metric(with_stage(&[]), e.dropped as f64));
            sampled.push(counter_metric(with_stage(&[]), e.sampled_out as f64));
            cancelled.push(counter_metric(with_stage(&[]), e.cancelled as f64));
            // The stage's side of the accounting identity, from the snapshot published in the
            // same cycle as the histogram: produced = _count + dropped + cancelled + in rings.
            let (made, unwinds) = cumulative.map_or((0, 0), |s| (s.produced, s.unwound));
            produced.push(counter_metric(with_stage(&[]), made as f64));
            waiting.push(gauge_metric(with_stage(&[]), in_rings as f64));
            unwound.push(counter_metric(with_stage(&[]), unwinds as f64));

            // Corrected figures only for a stage that has them: absent, not zero, otherwise.
            if let Some(ce) = &f.corrected {
                corrected_hists.push(histogram_metric(with_stage(&[]), ce, unit));
            }
            if let Some(co) = cumulative.and_then(|s| s.corrected.as_ref()) {
                let ns = u64::try_from(co.expected_interval.as_nanos()).unwrap_or(u64::MAX);
                intervals.push(gauge_metric(with_stage(&[]), unit.of_ns(ns)));
                synthesized.push(counter_metric(with_stage(&[]), co.synthesized as f64));
            }

            if c.window_quantiles {
                for &w in &windows {
                    let Some(s) = snap.stats(stage, w).filter(|s| s.count > 0) else {
                        continue;
                    };
                    let window = pair("window", &w.to_string());
                    for (q, label) in WINDOW_QUANTILES {
                        let v = s.quantile(q).unwrap_or_default();
                        let ns = u64::try_from(v.as_nanos()).unwrap_or(u64::MAX);
                        let l = with_stage(&[window.clone(), pair("percentile", label)]);
                        quantiles.push(gauge_metric(l, unit.of_ns(ns)));
                    }
                    let Some(co) = s.corrected.as_ref().filter(|co| co.count > 0) else {
                        continue;
                    };
                    for (q, label) in WINDOW_QUANTILES {
                        let v = co.quantile(q).unwrap_or_default();
                        let ns = u64::try_from(v.as_nanos()).unwrap_or(u64::MAX);
                        let l = with_stage(&[window.clone(), pair("percentile", label)]);
                        corrected_quantiles.push(gauge_metric(l, unit.of_ns(ns)));
                    }
                }
            }
        }

        let mut out = Vec::new();
        for (name, metrics) in hists {
            let help = if name == n.stage_duration {
                STAGE_HIST_HELP
            } else {
                "Durations of a labelled stage since the collector started, cumulative."
            };
            out.push(family(&name, help, MetricType::HISTOGRAM, metrics));
        }
        out.push(family(
            &n.stage_duration_corrected,
            CORRECTED_HIST_HELP,
            MetricType::HISTOGRAM,
            corrected_hists,
        ));
        out.push(family(
            &n.window_quantile,
            WINDOW_QUANTILE_HELP,
            MetricType::GAUGE,
            quantiles,
        ));
        out.push(family(
            &n.window_quantile_corrected,
            CORRECTED_QUANTILE_HELP,
            MetricType::GAUGE,
            corrected_quantiles,
        ));
        out.push(family(
            &n.expected_interval,
            EXPECTED_INTERVAL_HELP,
            MetricType::GAUGE,
            intervals,
        ));
        out.push(family(
            &n.synthesized,
            SYNTHESIZED_HELP,
            MetricType::COUNTER,
            synthesized,
        ));
        out.push(family(
            &n.deadline_miss,
            DEADLINE_MISS_HELP,
            MetricType::COUNTER,
            misses,
        ));
        out.push(family(
            &n.dropped,
            DROPPED_HELP,
            MetricType::COUNTER,
            dropped,
        ));
        out.push(family(
            &n.sampled_out,
            SAMPLED_OUT_HELP,
            MetricType::COUNTER,
            sampled,
        ));
        out.push(family(
            &n.cancelled,
            CANCELLED_HELP,
            MetricType::COUNTER,
            cancelled,
        ));
        out.push(family(
            &n.produced,
            PRODUCED_HELP,
            MetricType::COUNTER,
            produced,
        ));
        out.push(family(
            &n.in_rings,
            IN_RINGS_HELP,
            MetricType::GAUGE,
            waiting,
        ));
        out.push(family(
            &n.unwound,
            UNWOUND_HELP,
            MetricType::COUNTER,
            unwound,
        ));
        let trips = snap
            .guard_trips
            .iter()
            .map(|g| {
                let mut l = vec![pair("reason", g.reason)];
                l.extend(c.const_pairs.iter().cloned());
                counter_metric(l, g.counts.last().copied().unwrap_or(0) as f64)
            })
            .collect();
        out.push(family(
            &n.guard_trips,
            GUARD_TRIPS_HELP,
            MetricType::COUNTER,
            trips,
        ));
        for (name, m) in &n.health {
            let labels = c.const_pairs.clone();
            let value = (m.read)(&p);
            let (ty, metric) = if m.counter {
                (MetricType::COUNTER, counter_metric(labels, value))
            } else {
                (MetricType::GAUGE, gauge_metric(labels, value))
            };
            out.push(family(name, m.help, ty, vec![metric]));
        }
        out.retain(|f| !f.get_metric().is_empty());
        out
    }
}

fn histogram_metric(labels: Vec<proto::LabelPair>, e: &StageExport, unit: Unit) -> proto::Metric {
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(e.bounds.len + 1);
    for (bound, count) in e.bounds.as_slice().iter().zip(e.counts.iter()) {
        cumulative += count;
        let mut b = proto::Bucket::default();
        b.set_upper_bound(unit.of_ns(*bound));
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    // `+Inf` is written by the encoder, as `_count` (an explicit infinite bound would be printed
    // as `inf`); `StageBuckets::export` asserts that our counts add up to it.
    let mut h = proto::Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(e.count);
    h.set_sample_sum(e.sum_ns as f64 / unit.ns_per_unit());
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_histogram(h);
    m
}

fn counter_metric(labels: Vec<proto::LabelPair>, value: f64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_counter(c);
    m
}

fn gauge_metric(labels: Vec<proto::LabelPair>, value: f64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_gauge(g);
    m
}

fn family(name: &str, help: &str, ty: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(ty);
    f.set_metric(metrics);
    f
}

fn pair(name: &str, value: &str) -> proto::LabelPair {
    let mut p = proto::LabelPair::default();
    p.set_name(name.to_owned());
    p.set_value(value.to_owned());
    p
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: a metric name without colons (those are for recording rules).
fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A label name: a metric name not starting with `__` (reserved for Prometheus' own labels).
fn is_label_name(s: &str) -> bool {
    is_metric_name(s) && !s.starts_with("__")
}

/// Checks a bucket list and converts it to nanoseconds.
fn bounds_ns(bounds: &[Duration], stage: Option<&String>) -> Result<Arc<Bounds>, ExportError> {
    let stage = || stage.cloned();
    if bounds.is_empty() {
        return Err(ExportError::EmptyBuckets { stage: stage() });
    }
    if bounds.len() > MAX_BUCKETS {
        return Err(ExportError::TooManyBuckets {
            stage: stage(),
            count: bounds.len(),
            max: MAX_BUCKETS,
        });
    }
    if let Some(w) = bounds.windows(2).find(|w| w[1] <= w[0]) {
        return Err(ExportError::UnsortedBuckets {
            stage: stage(),
            bound: w[1],
        });
    }
    let ns: Vec<u64> = bounds
        .iter()
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .collect();
    if let Some(w) = ns.windows(2).find(|w| w[1] <= w[0]) {
        // Two bounds past u64::MAX ns (584 years) collapse into one.
        return Err(ExportError::UnsortedBuckets {
            stage: stage(),
            bound: Duration::from_nanos(w[1]),
        });
    }
    Ok(Arc::new(Bounds::new(ns)))
}

/// Registers `collector`, turning the registry's refusals into typed errors.
fn register(
    registry: &Registry,
    collector: Box<dyn PromCollector>,
    name: &str,
) -> Result<(), ExportError> {
    registry.register(collector).map_err(|e| match e {
        ::prometheus::Error::AlreadyReg => ExportError::AlreadyRegistered {
            name: name.to_owned(),
        },
        other => ExportError::Registry {
            message: other.to_string(),
        },
    })
}

/// Unregisters the collectors with these descriptors (best effort: on drop nothing can be
/// reported).
fn unregister_all(registry: &Registry, registered: &[Vec<Desc>]) {
    for descs in registered {
        let _ = registry.unregister(Box::new(DescOnly(descs.clone())));
    }
}

/// Stands for a registered collector when unregistering it: the registry compares descriptors.
struct DescOnly(Vec<Desc>);

impl PromCollector for DescOnly {
    fn desc(&self) -> Vec<&Desc> {
        self.0.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        Vec::new()
    }
}

/// Another collector's metrics with the export's const labels added (the process collector has
/// none of its own), so canary and baseline processes compare on every series.
#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
struct WithConstLabels<C> {
    inner: C,
    descs: Vec<Desc>,
    labels: Vec<proto::LabelPair>,
}

#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
impl<C: PromCollector> WithConstLabels<C> {
    fn new(inner: C, labels: &[(String, String)]) -> Result<Self, ExportError> {
        let map: HashMap<String, String> = labels.iter().cloned().collect();
        let descs = inner
            .desc()
            .into_iter()
            .map(|d| {
                Desc::new(
                    d.fq_name.clone(),
                    d.help.clone(),
                    d.variable_labels.clone(),
                    map.clone(),
                )
                .map_err(|e| ExportError::Registry {
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner,
            descs,
            labels: labels.iter().map(|(k, v)| pair(k, v)).collect(),
        })
    }
}

#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
impl<C: PromCollector> PromCollector for WithConstLabels<C> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(mut families) = catch_unwind(AssertUnwindSafe(|| self.inner.collect())) else {
            return Vec::new();
        };
        for f in &mut families {
            for m in f.mut_metric().iter_mut() {
                let mut labels = m.take_label();
                labels.extend(self.labels.iter().cloned());
                m.set_label(labels);
            }
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_buckets_are_a_1_2_5_ladder_from_1us_to_10s() {
        let b = default_buckets();
        assert_eq!(b.len(), 22);
        assert_eq!(b[0], Duration::from_micros(1));
        assert_eq!(b[1], Duration::from_micros(2));
        assert_eq!(b[2], Duration::from_micros(5));
        assert_eq!(*b.last().unwrap(), Duration::from_secs(10));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_value_lands_in_the_first_bucket_at_or_above_it() {
        let bounds = Arc::new(Bounds::new(vec![10, 20, 50]));
        let mut b = StageBuckets {
            counts: vec![0; 4].into_boxed_slice(),
            bounds,
            published: None,
        };
        for v in [0, 10, 11, 20, 21, 50, 51, u64::MAX] {
            b.record(v);
        }
        assert_eq!(&*b.counts, &[2, 2, 2, 2]);
    }

    /// The octave lookup against a plain count of the bounds below each value, for lists with one
    /// bound per octave (the ladder), several, a zero bound, bounds at the top of the range, and
    /// lists dense enough to take the bisection path.
    #[test]
    fn octave_lookup_equals_counting_the_bounds_below() {
        let ladder: Vec<u64> = default_buckets()
            .iter()
            .map(|d| d.as_nanos() as u64)
            .collect();
        let lists: Vec<Vec<u64>> = vec![
            ladder,
            vec![0],
            vec![0, 1, 2, 3],
            vec![1, 3, 5, 7, 9, 1 << 40],
            vec![100, 101, 102, 200, 300],
            (1..=100).map(|i| i * 1_000).collect(),
            vec![u64::MAX - 1, u64::MAX],
            vec![u64::MAX],
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for list in lists {
            let b = Bounds::new(list.clone());
            let mut probes: Vec<u64> = vec![0, 1, 2, 3, u64::MAX, u64::MAX - 1];
            for &bound in &list {
                probes.extend([bound.saturating_sub(1), bound, bound.saturating_add(1)]);
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                probes.push(x >> (x % 64));
            }
            for v in probes {
                let want = list.iter().filter(|&&bound| bound < v).count();
                assert_eq!(b.bucket(v), want, "{list:?} at {v}");
            }
        }
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(is_metric_name("mm"));
        assert!(is_metric_name("_x1"));
        assert!(!is_metric_name(""));
        assert!(!is_metric_name("1x"));
        assert!(!is_metric_name("a:b"));
        assert!(!is_metric_name("a-b"));
        assert!(is_label_name("env"));
        assert!(!is_label_name("__env"));
        assert_eq!(
            MetricNames::own_family("mm", Unit::Milliseconds, "exchange.req/v2-x"),
            "mm_exchange_req_v2_x_ms"
        );
    }
}
