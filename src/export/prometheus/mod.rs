//! Prometheus export: the aggregator's figures as Prometheus metric families, in a registry of your
//! own or one the exporter owns, rendered as Prometheus text, OpenMetrics or (feature
//! `prometheus-native`) protobuf.
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
//! # Formats
//!
//! | render | content type | adds |
//! |---|---|---|
//! | [`PrometheusExporter::render`] | `text/plain; version=0.0.4` | |
//! | [`PrometheusExporter::render_openmetrics`] | `application/openmetrics-text; version=1.0.0` | `_created`, exemplars, `# EOF` |
//! | `PrometheusExporter::render_protobuf` (`prometheus-native`) | [`crate::export::Format::Protobuf`]'s | native histograms, start time, exemplars |
//!
//! The `/metrics` endpoint (feature `http`) answers in the one the scraper's `Accept`
//! header weighs highest (text on a tie or for a client that names none): Prometheus 2.42 asks
//! for OpenMetrics first, or protobuf first with `--enable-feature=native-histograms`.
//!
//! **OpenMetrics** carries the same families and values as the text, as OpenMetrics writes them
//! (a counter `x_total` is the family `x`, untyped is `unknown`, no `# UNIT`), `le` as canonical
//! numbers (`1e-06`, `1.0`: a Prometheus 2.x switching a target from text stores those buckets
//! under new series), and `_created` on every counter and histogram series: the install time of
//! the collector, when every count started (not on `family_overflowed_total` and
//! `rejected_calls_total`, which count across collectors).
//!
//! **Exemplars.** With golden traces (feature `trace`, `laptime::trace`), each stage histogram
//! bucket carries the latest value of a kept trace that falls in it,
//! `… # {trace_id="tick_2911"} 0.000312 <unix seconds>`: the trace's own duration for the stage,
//! and a trace the user can open (with an output directory, `golden_trace_2911.json`; without,
//! one `CollectorHandle::traces` returned). The trace sink offers kept ticks' values;
//! this exporter's sink, on the same aggregator thread, makes each the exemplar of its bucket.
//! The protobuf exposition carries them on its classic buckets. A registry the exporter does not
//! own gets neither `_created` nor exemplars. More: `docs/export.md`, "Formats".
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
//! | `ns_<family>_<unit>` | histogram | the family's label names | every series of a [`crate::Family`] (its overflow series too, every label `__overflow__`) |
//! | `ns_family_series`, `ns_family_series_max` | gauge | `family` | [`crate::Family::len`], [`crate::Family::max_series`] |
//! | `ns_family_overflowed_total` | counter | `family` | [`crate::Family::overflowed`] |
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
//! **Families** come out as one metric family named after the family, with its label names:
//! `laptime::family!("order_exec", ["pair", "side"])` is `mm_order_exec_seconds{pair, side}`,
//! one histogram per series. Per series the export writes only that histogram (and deadline
//! misses, for a series with a deadline or a miss): the accounting counters and window
//! quantiles are written once for the family, under `stage="order_exec"`, from the family
//! total. The total's own histogram is left out: `sum by (le) (rate(..._bucket[5m]))` over the
//! series is the family's. So 20 000 series cost 20 000 histograms, not twelve families each.
//!
//! **Exactness.** Each drained duration lands in exactly one bucket (`le` is inclusive; a value
//! above every bound is counted in `+Inf` only); `_count` is the library's cumulative count and
//! `_sum` its exact nanosecond sum, converted to the unit once when rendered. Values above the
//! collector's highest trackable value are bucketed by what was measured, as `_sum` counts them.
//!
//! **Accounting.** Per stage (per family: over its series' `_count`s), `ns_spans_produced_total` = the stage's histogram `_count` +
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
//! **Native histograms** (feature `prometheus-native`,
//! `PrometheusBuilder::with_native_histograms`): every stage histogram (raw, corrected, each
//! series of a family) is also counted into Prometheus' sparse exponential buckets, exactly,
//! from the same nanosecond values, and `PrometheusExporter::render_protobuf` writes both kinds
//! side by side in the protobuf exposition that `/metrics` serves a scraper asking for it.
//! `histogram_quantile` over them is within one bucket's width (1.09 % at the default schema)
//! of the true quantile, summed across any number of processes. Prometheus 2.42 then stores those
//! families as native only (no `_bucket`, `_count`, `_sum`): use `laptime rules --native`.
//!
//! **Milliseconds.** [`Unit::Milliseconds`] exports the seeds' `_ms` names
//! (`mm_stage_duration_ms`, `mm_exchange_req_ms`). Of the seeds' own queries only the guard-trip
//! rates and the gauge work as written: the histogram and deadline-miss queries need the forms
//! `docs/export.md` gives (its table "The seeds' queries", checked against a real Prometheus).
//! `promtool check metrics` reports those names ("metric names should not contain abbreviated
//! units"); the exposition is otherwise the same.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ::prometheus::core::{Collector as PromCollector, Desc};
use ::prometheus::proto;
use ::prometheus::{Encoder, Opts, TextEncoder};
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

pub use ::prometheus::{Gauge, Registry};

mod buckets;
mod builder;
mod encode;
#[cfg(feature = "trace")]
mod exemplars;
mod families;
mod names;
#[cfg(feature = "prometheus-native")]
mod native;
mod openmetrics;
#[cfg(feature = "prometheus-native")]
mod protobuf;
mod registry;
mod sink;
mod text;

pub use buckets::{MAX_BUCKETS, default_buckets, geometric_buckets};
pub use builder::PrometheusBuilder;
pub use names::MetricNames;
#[cfg(feature = "prometheus-native")]
pub use native::NativeHistograms;
#[cfg(feature = "prometheus-native")]
pub use protobuf::CONTENT_TYPE as PROTOBUF_CONTENT_TYPE;

/// The name rules the export checks namespaces, gauges and labels with, for tools that write
/// names against it.
pub use crate::prom_name::{is_label_name, is_metric_name};

use super::ExportError;
use crate::stage::Stage;
use crate::stats::Snapshot;
use crate::stats::table::SharedTable;
use buckets::{Bounds, StageBuckets, StageFigures};
use registry::{register, unregister_all};

/// Label names the export sets itself; neither const labels nor stage labels may use them.
const RESERVED_LABELS: [&str; 6] = ["stage", "le", "quantile", "window", "reason", "percentile"];

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
            if self.shared.owns_registry {
                return text::render(registry);
            }
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

    /// The OpenMetrics 1.0 text exposition of the whole registry (content type
    /// `application/openmetrics-text; version=1.0.0; charset=utf-8`,
    /// [`crate::export::Format::OpenMetrics`]), ending in `# EOF`: what a Prometheus without the
    /// native-histograms flag asks for first. Counters and histograms of the export carry a
    /// `_created` sample (the collector's install time), and stage histogram buckets an exemplar
    /// naming a kept golden trace (feature `trace`) whose value they hold. Never panics, as
    /// [`render`](Self::render).
    pub fn render_openmetrics(&self) -> Result<String, ExportError> {
        let created = self.shared.core.state.load().as_ref().map(|p| p.created);
        let (registry, owned) = (&self.shared.registry, self.shared.owns_registry);
        let names = &self.shared.core.config.names;
        catch_unwind(AssertUnwindSafe(|| {
            openmetrics::render(registry, owned, created, names)
        }))
        .map_err(|_| ExportError::Encode {
            message: "a collector in the registry panicked while gathering".to_owned(),
        })
    }

    /// The protobuf exposition of the whole registry (feature `prometheus-native`; content type
    /// [`PROTOBUF_CONTENT_TYPE`]): what a Prometheus started with
    /// `--enable-feature=native-histograms` asks for. Stage histograms carry their native buckets
    /// (with [`PrometheusBuilder::with_native_histograms`]) beside the classic ones, and the
    /// install time of the collector as their start. Never panics, as [`render`](Self::render).
    #[cfg(feature = "prometheus-native")]
    pub fn render_protobuf(&self) -> Result<Vec<u8>, ExportError> {
        let created = self.shared.core.state.load().as_ref().map(|p| p.created);
        let registry = &self.shared.registry;
        let owned = self.shared.owns_registry;
        catch_unwind(AssertUnwindSafe(|| {
            protobuf::render(registry, owned, created)
        }))
        .map_err(|_| ExportError::Encode {
            message: "a collector in the registry panicked while gathering".to_owned(),
        })
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
        let buckets = StageBuckets::new(bounds);
        #[cfg(feature = "prometheus-native")]
        if let Some(n) = &config.native {
            let native =
                crate::exponential::ExponentialBuckets::new(n.index.clone(), n.max_buckets);
            return buckets.with_native(native);
        }
        buckets
    }

    /// Called by the aggregator after each cycle: the figures a scrape renders from now on.
    pub(crate) fn publish(
        &self,
        snapshot: Arc<Snapshot>,
        stages: SharedTable<StageFigures>,
        interval: Duration,
        created: SystemTime,
    ) {
        let core = &self.shared.core;
        core.state.store(Some(Arc::new(Published {
            generation: core.next_generation(),
            snapshot,
            stages,
            at: Instant::now(),
            interval,
            created,
            running: true,
        })));
    }

    /// Called by the aggregator after a caught panic: new health figures, the same statistics.
    pub(crate) fn republish(&self, snapshot: Arc<Snapshot>) {
        let core = &self.shared.core;
        if let Some(old) = core.state.load_full() {
            core.state.store(Some(Arc::new(Published {
                generation: old.generation + 1,
                snapshot,
                stages: old.stages.clone(),
                // Not now: nothing was drained, so the last-drain age keeps growing and an
                // aggregator that panics on every cycle shows as stuck.
                at: old.at,
                interval: old.interval,
                created: old.created,
                running: old.running,
            })));
        }
    }

    /// Called by the aggregator as it exits: the figures stay, [`health`](Self::health) fails.
    pub(crate) fn detach(&self) {
        let core = &self.shared.core;
        if let Some(old) = core.state.load_full() {
            core.state.store(Some(Arc::new(Published {
                generation: old.generation + 1,
                snapshot: old.snapshot.clone(),
                stages: old.stages.clone(),
                at: old.at,
                interval: old.interval,
                created: old.created,
                running: false,
            })));
        }
    }
}

/// What [`crate::export::http::MetricsServer`] serves: on `/metrics`
/// [`PrometheusExporter::render`], [`PrometheusExporter::render_openmetrics`] or
/// [`PrometheusExporter::render_protobuf`] as the request's `Accept` header asks;
/// [`PrometheusExporter::health`] on `/health`.
#[cfg(feature = "http")]
impl crate::export::http::Exposition for PrometheusExporter {
    fn metrics(&self) -> Result<String, ExportError> {
        self.render()
    }

    fn formats(&self) -> Vec<crate::export::Format> {
        use crate::export::Format;
        #[cfg(feature = "prometheus-native")]
        return vec![Format::OpenMetrics, Format::Protobuf];
        #[cfg(not(feature = "prometheus-native"))]
        vec![Format::OpenMetrics]
    }

    fn metrics_in(&self, format: crate::export::Format) -> Result<Vec<u8>, ExportError> {
        match format {
            crate::export::Format::OpenMetrics => self.render_openmetrics().map(String::into_bytes),
            #[cfg(feature = "prometheus-native")]
            crate::export::Format::Protobuf => self.render_protobuf(),
            _ => self.render().map(String::into_bytes),
        }
    }

    fn health(&self) -> Result<String, String> {
        PrometheusExporter::health(self)
    }

    /// Changes with every publication (a cycle, a health-only republish, the stop): the server
    /// renders once per aggregator cycle.
    fn generation(&self) -> Option<u64> {
        let published = self.shared.core.state.load();
        Some(published.as_ref().map_or(0, |p| p.generation))
    }
}

/// What the clones of one exporter share.
struct Shared {
    registry: Registry,
    /// The registry is the exporter's own (no prefix, no common labels): the stage histograms
    /// can be written as text directly ([`text`]).
    owns_registry: bool,
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
    /// By stage id, the labels its histogram series was last exported with and whether that was
    /// in its own family: kept across scrapes (see `families::series_labels`).
    series_labels: Mutex<LabelCache>,
    /// The owners of labelled stages' family names, with the (number of stages, highest id) they
    /// were worked out from (see `Core::family_owners`).
    owners: Mutex<Option<(StagesSeen, Arc<Owners>)>>,
}

/// By stage id: whether its histogram went to its own family, and the labels it had there.
type LabelCache = Vec<Option<(bool, Arc<encode::SeriesLabels>)>>;

/// How many stages a publication holds and the highest id among them.
type StagesSeen = (usize, Option<u32>);

/// Own family name → the name of the stage that owns it.
type Owners = HashMap<String, &'static str>;

impl Core {
    /// The generation of the next publication: one more than the last one's.
    fn next_generation(&self) -> u64 {
        self.state.load().as_ref().map_or(1, |p| p.generation + 1)
    }
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
    #[cfg(feature = "prometheus-native")]
    native: Option<NativeConfig>,
}

/// Native histograms as an exporter keeps them: the bucket table of the starting schema, shared
/// by every stage, and each histogram's budget.
#[cfg(feature = "prometheus-native")]
struct NativeConfig {
    index: Arc<crate::exponential::ExponentialIndex>,
    max_buckets: usize,
}

/// What a scrape renders: everything one aggregator cycle published.
struct Published {
    /// Counts publications (1 for the first): what `Exposition::generation` reports.
    generation: u64,
    snapshot: Arc<Snapshot>,
    /// By stage id; none for stages this collector has no state for.
    stages: SharedTable<StageFigures>,
    at: Instant,
    interval: Duration,
    /// When the collector feeding these figures was installed: every cumulative count started
    /// from zero then (a new collector starts them again). OpenMetrics' `_created`.
    created: SystemTime,
    /// False once the collector stopped.
    running: bool,
}
