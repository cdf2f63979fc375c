//! The library behind the `laptime` command: the performance gate ([`gate`]) and its statistics
//! ([`interval`]), so tests and other tools call them directly; `main.rs` only parses arguments.
//!
//! * `laptime gate --baseline B --current C [--report R.md]`: compares two perf profiles stage by
//!   stage (p95, p99, deadline-miss %, and the coordinated-omission-corrected p95 and p99 of the
//!   stages both profiles corrected) and exits 0 (pass), 1 (regression) or 2 (error). By default
//!   a regression is called only when the whole confidence interval of the change is above the
//!   threshold (bootstrap over the stages' histograms); `--strict` compares the point values.
//! * `laptime merge -o OUT.json A.json B.json …`: [`Profile::merge`](laptime::profile::Profile::merge).
//! * `laptime report P.json [--baseline B.json] -o report.html|.svg|.png`: [`laptime::report`].
//! * `laptime top --url http://127.0.0.1:9898 [--once | --json]`: [`top`], a live view of a
//!   running process's stages from its `/stats` endpoint.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod dashboard;
pub mod gate;
pub mod interval;
pub mod promql;
pub mod rules;
pub mod top;

use std::fmt;
use std::path::{Path, PathBuf};

use laptime::profile::{Profile, ProfileError};

/// A stage as the CLI's outputs name it: `name{k=v,k=v}` with the labels in the order given, the
/// name alone when it has none (the gate report, the dashboard, `top`).
pub fn stage_title<'a>(name: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let labels: Vec<String> = labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if labels.is_empty() {
        return name.to_owned();
    }
    format!("{name}{{{}}}", labels.join(","))
}

/// A profile file that could not be read or parsed.
#[derive(Debug)]
pub struct LoadError {
    /// What the file was for (`baseline`, `current`, `input`), so the message says which.
    pub role: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why it could not be used; names the field when the file does not parse.
    pub source: ProfileError,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            // Already names the file: "profile file PATH: …".
            ProfileError::Io { .. } | ProfileError::TooLarge { .. } => {
                write!(f, "{} {}", self.role, self.source)
            }
            _ => write!(
                f,
                "{} profile {}: {}",
                self.role,
                self.path.display(),
                self.source
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Reads the profile at `path`, refusing a file larger than `max_bytes`
/// ([`laptime::profile::DEFAULT_MAX_BYTES`] unless `--max-input-bytes` says otherwise); the error
/// names the file, its `role` and the profile error.
pub fn load_profile(role: &'static str, path: &Path, max_bytes: u64) -> Result<Profile, LoadError> {
    Profile::from_path_with_limit(path, max_bytes).map_err(|source| LoadError {
        role,
        path: path.to_path_buf(),
        source,
    })
}
