//! The collector: its configuration, the handle that owns its aggregator thread, and the process's
//! current collector.
//!
//! One collector is current per process. It starts by itself, with [`CollectorBuilder::default`],
//! on the first span when nobody installed one, and then runs for the life of the process; or it is
//! installed explicitly with [`CollectorBuilder::install`], which returns a [`CollectorHandle`]
//! whose drop runs a final drain, stops the aggregator thread and joins it. After that, spans
//! record nothing until another collector is installed.

mod builder;
mod globals;
mod install;
mod query;
mod shared;

pub use builder::{AdaptiveSampling, Collector, CollectorBuilder, SlaCallback, WindowSpec};
pub(crate) use globals::{current_or_default, set_adaptive_ceiling, set_base_sampling};
pub use install::CollectorHandle;
pub use query::{
    IntoStageQuery, check_sla_violations, flush, get_all_stats, get_stats, health, snapshot,
};
pub(crate) use shared::CollectorShared;
