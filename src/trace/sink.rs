//! Tracing's side of the seam: a [`Sink`] that reads every drained record, rebuilds kept ticks
//! and publishes them for the handle.

use std::collections::HashMap;
use std::sync::Arc;

use super::tracer::{RingTrace, Store, Tracer};
use super::{Trace, TraceConfig, TraceHealth};
use crate::sink::{Cycle, Install, Interest, RecordBatch, Sink};
use crate::{CollectorBuilder, CollectorHandle, ConfigError, InstallErrorKind, SinkError};

impl CollectorBuilder {
    /// Traces ticks as `config` says (feature `trace`): the aggregator rebuilds kept ticks' nested
    /// spans from the records it drains (nothing changes on the hot path), keeps the latest for
    /// [`CollectorHandle::traces`] and writes golden and slow ones to the output directory. See
    /// [`crate::trace`].
    pub fn with_tracing(self, config: TraceConfig) -> Self {
        let store = config
            .enabled()
            .then(|| Arc::new(Store::new(config.keep())));
        let builder = match &store {
            Some(store) => self.with_extension(store.clone()),
            None => self,
        };
        builder.with_sink(TraceSink {
            config,
            store,
            tracer: None,
            rings: HashMap::new(),
        })
    }
}

impl CollectorHandle {
    /// The latest kept traces, oldest first (feature `trace`; at most `TraceConfig::with_keep`);
    /// empty when tracing is off. Traces are kept as the aggregator drains: call
    /// [`flush`](Self::flush) first to include ticks that just ended.
    pub fn traces(&self) -> Vec<Trace> {
        self.extension::<Store>()
            .map_or_else(Vec::new, |store| store.traces())
    }

    /// Tracing's own figures as of the aggregator's last cycle (feature `trace`; all zero when
    /// tracing is off).
    pub fn trace_health(&self) -> TraceHealth {
        self.extension::<Store>()
            .map_or_else(TraceHealth::default, |store| *store.health.lock())
    }

    /// Writes [`traces`](Self::traces) to `path` as Chrome trace-event JSON (feature `trace`; see
    /// [`crate::trace::chrome_json`]): open it in <https://ui.perfetto.dev> or `chrome://tracing`.
    /// Missing parent directories are created; the file is written whole (a temporary file
    /// renamed into place).
    pub fn write_chrome_trace(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        crate::fs::write_atomic(path.as_ref(), super::chrome_json(&self.traces()).as_bytes())
    }
}

/// The tracer and each ring's spans since its last tick.
struct TraceSink {
    config: TraceConfig,
    /// `None` when the configuration turns tracing off: then the sink only validates it.
    store: Option<Arc<Store>>,
    /// Started by `install`.
    tracer: Option<Tracer>,
    rings: HashMap<u64, RingTrace>,
}

impl Sink for TraceSink {
    fn name(&self) -> &'static str {
        "trace"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.config
            .validate()
            .map_err(|e| ConfigError::Sink(SinkError::new(self.name(), e)))
    }

    fn start(&mut self, install: &Install) -> Result<(), InstallErrorKind> {
        if let Some(store) = &self.store {
            self.tracer = Some(Tracer::start(
                &self.config,
                store.clone(),
                install.generation,
            )?);
        }
        Ok(())
    }

    fn interest(&self) -> Interest {
        if self.store.is_some() {
            Interest::RECORDS
        } else {
            Interest::NONE
        }
    }

    fn records(&mut self, batch: &RecordBatch<'_>) {
        let Some(tracer) = &mut self.tracer else {
            return;
        };
        let ring = self
            .rings
            .entry(batch.ring_id())
            .or_insert_with(|| RingTrace::new(batch.ring_id(), batch.thread_name()));
        for r in batch.records() {
            tracer.observe(ring, r, batch.clock);
        }
        if batch.is_last() {
            self.rings.remove(&batch.ring_id());
        }
    }

    fn cycle(&mut self, _cycle: &Cycle<'_>) {
        if let Some(tracer) = &self.tracer {
            tracer.report();
        }
    }
}
