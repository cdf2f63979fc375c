//! The collector: its configuration, the handle that owns its aggregator thread, and the process's
//! current collector.
//!
//! One collector is current per process. It starts by itself, with [`CollectorBuilder::default`],
//! on the first span when nobody installed one, and runs until the process ends or an install
//! replaces it: [`CollectorBuilder::install`] stops that default collector and carries what it
//! recorded into its own cumulative figures (its sliding windows start at the install). An
//! installed collector's [`CollectorHandle`] runs a final drain on drop, stops the aggregator
//! thread and joins it; spans then record nothing until another collector is installed, and a
//! second install while it runs fails.

mod builder;
mod globals;
mod install;
mod query;
mod shared;

pub(crate) use builder::Extensions;
pub use builder::{AdaptiveSampling, Collector, CollectorBuilder, SlaCallback, WindowSpec};
pub(crate) use globals::{current_or_default, set_adaptive_ceiling, set_base_sampling};
pub use install::CollectorHandle;
pub use query::{
    IntoStageQuery, check_sla_violations, flush, get_all_stats, get_stats, health, snapshot,
};
pub(crate) use shared::CollectorShared;
