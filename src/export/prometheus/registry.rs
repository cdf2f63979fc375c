//! Registering into and unregistering from a [`Registry`], and the process collector with the
//! const labels added.

#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
use std::collections::HashMap;
#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
use std::panic::{AssertUnwindSafe, catch_unwind};

use ::prometheus::Registry;
use ::prometheus::core::{Collector as PromCollector, Desc};
#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
use ::prometheus::proto;
use ::prometheus::proto::MetricFamily;

#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
use super::encode::pair;
use crate::export::ExportError;

/// Registers `collector`, turning the registry's refusals into typed errors.
pub(super) fn register(
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
pub(super) fn unregister_all(registry: &Registry, registered: &[Vec<Desc>]) {
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
pub(super) struct WithConstLabels<C> {
    inner: C,
    pub(super) descs: Vec<Desc>,
    labels: Vec<proto::LabelPair>,
}

#[cfg(all(feature = "prometheus-process", target_os = "linux"))]
impl<C: PromCollector> WithConstLabels<C> {
    pub(super) fn new(inner: C, labels: &[(String, String)]) -> Result<Self, ExportError> {
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
