//! [`PrometheusBuilder`]: the exporter's settings, validated and registered by `build`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
use ::prometheus::core::Desc;
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

#[cfg(doc)]
use super::MAX_BUCKETS;
use super::buckets::{Bounds, bounds_ns, default_buckets};
use super::encode::pair;
use super::families::StageCollector;
use super::registry::register;
#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
use super::registry::{WithConstLabels, unregister_all};
use super::{
    Config, Core, MetricNames, PrometheusExporter, RESERVED_LABELS, Registry, Shared, Unit,
    is_label_name, is_metric_name,
};
use crate::export::ExportError;

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
    #[cfg(feature = "prometheus-native")]
    native: Option<super::NativeHistograms>,
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
            #[cfg(feature = "prometheus-native")]
            native: None,
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

    /// Also keeps every stage histogram (raw and corrected, every series of a family) in native
    /// buckets, exported beside the classic ones in the protobuf exposition
    /// ([`PrometheusExporter::render_protobuf`]) that a Prometheus started with
    /// `--enable-feature=native-histograms` asks for. Text scrapes still get the classic buckets.
    /// Prometheus 2.42 then stores these families as native histograms only (no `_bucket`,
    /// `_count` or `_sum` series): generate native rules (`laptime rules --native`). Default off.
    /// Needs a registry the exporter owns (the default).
    #[cfg(feature = "prometheus-native")]
    pub fn with_native_histograms(mut self, native: super::NativeHistograms) -> Self {
        self.native = Some(native);
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
        let core = Arc::new(Core {
            config: self.config()?,
            state: ArcSwapOption::empty(),
            gauge_names: Mutex::new(HashSet::new()),
            series_labels: Mutex::new(Vec::new()),
            owners: Mutex::new(None),
        });
        let owns_registry = self.registry.is_none();
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
            core.config.names.stage_duration(),
        )?;
        #[cfg(all(feature = "prometheus-process", target_os = "linux"))]
        if self.process
            && let Err(e) = register_process(&registry, &core.config, &mut registered)
        {
            unregister_all(&registry, &registered);
            return Err(e);
        }
        Ok(PrometheusExporter {
            shared: Arc::new(Shared {
                registry,
                owns_registry,
                core,
                gauges: Mutex::new(HashMap::new()),
                registered: Mutex::new(registered),
            }),
        })
    }

    /// The settings, validated, as the collector reads them. Checked in this order: namespace,
    /// const labels, default buckets, per-stage buckets.
    fn config(&self) -> Result<Config, ExportError> {
        if !is_metric_name(&self.namespace) {
            return Err(ExportError::InvalidNamespace {
                namespace: self.namespace.clone(),
            });
        }
        let const_labels = self.const_labels()?;
        let default_bounds = bounds_ns(&self.buckets, None)?;
        let stage_bounds = self.stage_bounds()?;
        #[cfg(feature = "prometheus-native")]
        let native = self.native_config()?;
        Ok(Config {
            namespace: self.namespace.clone(),
            unit: self.unit,
            default_bounds,
            stage_bounds,
            const_pairs: const_labels.iter().map(|(k, v)| pair(k, v)).collect(),
            const_labels,
            window_quantiles: self.window_quantiles,
            names: MetricNames::new(&self.namespace, self.unit),
            #[cfg(feature = "prometheus-native")]
            native,
        })
    }

    /// The native settings, checked, with the bucket table for their schema and the unit.
    #[cfg(feature = "prometheus-native")]
    fn native_config(&self) -> Result<Option<super::NativeConfig>, ExportError> {
        let Some(native) = self.native else {
            return Ok(None);
        };
        native.validate()?;
        if self.registry.is_some() {
            return Err(ExportError::NativeNeedsOwnRegistry);
        }
        Ok(Some(super::NativeConfig {
            // `validate` held the schema in range, and a unit is whole nanoseconds.
            index: Arc::new(
                crate::exponential::ExponentialIndex::new(native.schema(), self.unit.ns_per_unit())
                    .expect("a validated schema and a unit of whole nanoseconds"),
            ),
            max_buckets: native.max_buckets(),
        }))
    }

    /// The const labels, each a label name the export does not set itself, with a value, once.
    fn const_labels(&self) -> Result<Vec<(String, String)>, ExportError> {
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
        Ok(const_labels)
    }

    /// The per-stage bucket lists, by stage name: valid names, valid lists, one list a stage.
    fn stage_bounds(&self) -> Result<HashMap<String, Arc<Bounds>>, ExportError> {
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
        Ok(stage_bounds)
    }
}

/// Registers the prometheus crate's process collector with the const labels, and adds its
/// descriptors to `registered`.
#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
fn register_process(
    registry: &Registry,
    config: &Config,
    registered: &mut Vec<Vec<Desc>>,
) -> Result<(), ExportError> {
    let inner = ::prometheus::process_collector::ProcessCollector::for_self();
    let process = WithConstLabels::new(inner, &config.const_labels)?;
    let descs = process.descs.clone();
    register(registry, Box::new(process), "process_cpu_seconds_total")?;
    registered.push(descs);
    Ok(())
}
