//! Every fixed bound of the library in one place: what a setting may be, and how much of a
//! resource the process may take.

/// Largest per-thread ring, in records (32 bytes each).
pub const MAX_RING_CAPACITY: usize = 1 << 24;
/// Shortest aggregator interval: below it the aggregator would spin (a ring passing half full
/// wakes it early anyway, so a shorter interval buys nothing).
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);
/// Shortest window slice: a slice is where a record's end time lands, and a window of slices
/// shorter than a microsecond would expire before any record could reach it.
pub const MIN_SLICE: std::time::Duration = std::time::Duration::from_micros(1);
/// Most slices one window may be split into.
pub const MAX_SLICES_PER_WINDOW: u64 = 1000;
/// Default cap on the number of stages in a process.
pub const DEFAULT_MAX_STAGES: usize = 1024;
/// The largest cap [`crate::CollectorBuilder::with_max_stages`] accepts.
pub const MAX_STAGES_LIMIT: usize = 64 * 1024;
/// Default cap on the runtime-labelled series of all families together
/// ([`crate::CollectorBuilder::with_max_series`]).
pub const DEFAULT_MAX_SERIES: usize = 64 * 1024;
/// Default cap on one family's series ([`crate::FamilyOptions::max_series`]).
pub const DEFAULT_MAX_SERIES_PER_FAMILY: usize = 16 * 1024;
/// Default significant digits of a family's histograms ([`crate::FamilyOptions::significant_digits`]):
/// every percentile of a series within 1 % of the exact value (HdrHistogram's 2 digits: buckets
/// 1/128 of their value wide). A series then holds a few KiB where a 3-digit stage holds tens;
/// choose 3 for 0.1 %.
pub const DEFAULT_FAMILY_DIGITS: u8 = 2;
/// The largest series cap, per family or for the process.
pub const MAX_SERIES_LIMIT: usize = 1024 * 1024;
/// Most families in a process.
pub const MAX_FAMILIES: usize = 4096;
/// Most label names one family may have.
pub const MAX_FAMILY_LABELS: usize = 8;
/// Every label value of a family's overflow series: where calls go past a cap or with a value
/// laptime cannot carry. Refused as a value of one's own.
pub const OVERFLOW_VALUE: &str = "__overflow__";
/// Longest stage name, label name or label value, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Most distinct trip reasons in a process.
pub const MAX_TRIP_REASONS: usize = 64;
/// Longest text in a profile's metadata (its name, git revision, each tag key and value, each
/// `merged_from` entry), in bytes: a profile is refused past it rather than carried into every
/// report and gate message.
pub const MAX_PROFILE_TEXT_LEN: usize = 4096;
/// Longest `host` of a profile, in bytes: longer than the other texts, since a merge joins its
/// inputs' distinct hosts with `,`.
pub const MAX_PROFILE_HOST_LEN: usize = 64 * 1024;
/// Most tags one profile may carry.
pub const MAX_PROFILE_TAGS: usize = 1024;
/// Most entries in a profile's `merged_from` (the inputs of a merge).
pub const MAX_PROFILE_MERGED_FROM: usize = 64 * 1024;
/// Longest field path or parser message a profile error carries, in bytes: an unknown key of
/// 1 MiB is named by its first bytes, not quoted whole.
pub const MAX_PROFILE_ERROR_TEXT: usize = 256;
