//! Reports of perf profiles (feature `report`): one self-contained HTML file, or an SVG or PNG
//! image of the stages' percentile distributions.
//!
//! The plots follow HdrHistogram's percentile-distribution style: x is the percentile on a
//! "nines" axis (it plots `log10(1 / (1 − q))`, so 90 %, 99 %, 99.9 % … are evenly spaced and the
//! tail gets the room), y is the latency on a log axis; a baseline, when given, is drawn over the
//! current profile with a legend. A stage without a histogram (a hand-written profile) is drawn
//! through its summary percentiles. A stage with coordinated-omission-corrected figures
//! ([`crate::profile::CorrectedProfile`]) also gets its corrected curve, dashed, in its
//! profile's colour.
//!
//! * [`html`]: the stats table (with the baseline's figures and the changes when given; with
//!   `CO` columns of the corrected percentiles when a stage has them) and one inline SVG plot
//!   per stage; inline CSS, no scripts, nothing fetched. Names and labels from the files are
//!   escaped. At most [`MAX_HTML_STAGES`] stages, those with the highest p99, with a note of
//!   what was left out ([`html_top`] takes another bound).
//! * [`svg`] and [`png`]: one image, of every stage (a grid) or of one.
//!
//! PNG text is drawn with a TrueType font found at run time: `LAPTIME_FONT` if set, else DejaVu
//! Sans or Liberation Sans at their usual paths on Debian, Ubuntu, Fedora and Arch, or Arial on
//! macOS and Windows ([`ReportError::NoFont`] says what to install). SVG and HTML leave the text to
//! the viewer and need no font.
//!
//! ```no_run
//! use laptime::profile::Profile;
//!
//! let current = Profile::from_path("run.json")?;
//! let baseline = Profile::from_path("baseline.json")?;
//! std::fs::write("report.html", laptime::report::html(&current, Some(&baseline))?)?;
//! laptime::report::png(&current, Some(&baseline), Some("tick_total"), "tick_total.png".as_ref())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod font;
mod html;
mod plot;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::profile::{Profile, ProfileError};

pub use html::{MAX_HTML_STAGES, html, html_top};

/// Why a report could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReportError {
    /// A stage's histogram could not be decoded.
    Profile(ProfileError),
    /// The stage asked for is in neither profile.
    UnknownStage {
        /// The key asked for.
        stage: String,
        /// The keys the profiles have.
        available: Vec<String>,
    },
    /// The name asked for (without labels) names several stages.
    AmbiguousStage {
        /// The name asked for.
        stage: String,
        /// The keys of the stages with that name.
        matches: Vec<String>,
    },
    /// More stages than one image holds ([`MAX_IMAGE_STAGES`]).
    TooManyStages {
        /// The stages to draw.
        stages: usize,
        /// The most one image holds.
        limit: usize,
    },
    /// Neither profile has a stage to draw.
    NoStages,
    /// No TrueType font for a PNG's text was found at the usual paths.
    NoFont {
        /// The paths looked at.
        tried: Vec<PathBuf>,
    },
    /// The font file given (`LAPTIME_FONT`) or found could not be read or is not a font.
    Font {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The plotting library (or the PNG encoder) failed.
    Draw {
        /// The output (a path, or `SVG`).
        output: String,
        /// The library's message.
        reason: String,
    },
    /// The PNG file could not be written (by the rule of [`crate::fs::write_file`]).
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system (or the write rule) said.
        source: std::io::Error,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Profile(e) => write!(f, "{e}"),
            ReportError::UnknownStage { stage, available } => write!(
                f,
                "no stage {stage:?} in the profiles; pass one of: {}",
                available.join(", ")
            ),
            ReportError::AmbiguousStage { stage, matches } => write!(
                f,
                "{stage:?} names {} stages; pass one of their keys: {}",
                matches.len(),
                matches.join(", ")
            ),
            ReportError::TooManyStages { stages, limit } => write!(
                f,
                "{stages} stages are too many for one image (at most {limit}): pass --stage NAME \
                 to draw one, or use the HTML report (-o report.html), which draws each on its own"
            ),
            ReportError::NoStages => f.write_str("the profiles have no stages to draw"),
            ReportError::NoFont { tried } => {
                write!(
                    f,
                    "no TrueType font for the PNG's text: install DejaVu Sans (Debian/Ubuntu: \
                     apt-get install fonts-dejavu-core) or set LAPTIME_FONT=/path/to/font.ttf; \
                     looked at "
                )?;
                let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                f.write_str(&tried.join(", "))
            }
            ReportError::Font { path, reason } => write!(
                f,
                "font {}: {reason}; point LAPTIME_FONT at a readable .ttf or .otf file",
                path.display()
            ),
            ReportError::Draw { output, reason } => write!(f, "cannot draw {output}: {reason}"),
            ReportError::Write { path, source } => write!(
                f,
                "cannot write {}: {source}{}",
                path.display(),
                crate::fs::io_hint(source)
            ),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Profile(e) => Some(e),
            ReportError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ProfileError> for ReportError {
    fn from(e: ProfileError) -> Self {
        ReportError::Profile(e)
    }
}

/// A duration in nanoseconds to three significant digits, as reports show it:
/// [`crate::fmt::duration`] of `ns` nanoseconds.
///
/// ```
/// use laptime::report::format_ns;
/// assert_eq!(format_ns(950), "950ns");
/// assert_eq!(format_ns(250_400), "250µs");
/// assert_eq!(format_ns(4_114_000), "4.11ms");
/// assert_eq!(format_ns(1_500_000_000), "1.50s");
/// ```
pub fn format_ns(ns: u64) -> String {
    crate::fmt::duration(Duration::from_nanos(ns))
}

/// The most stages one [`svg`] or [`png`] image draws: a grid of two columns of 720 × 420 cells,
/// so 64 stages make a 1440 × 13 440 image (a 58 MB bitmap for a PNG). More is refused with
/// [`ReportError::TooManyStages`]; the [`html`] report draws up to [`MAX_HTML_STAGES`], one
/// image per stage.
pub const MAX_IMAGE_STAGES: usize = 64;

/// One image (SVG text) of the percentile distributions: of `stage` alone when given, else of
/// every stage in a grid (at most [`MAX_IMAGE_STAGES`]). Needs no font.
///
/// `stage` is a stage's key as [`StageProfile::key`](crate::profile::StageProfile::key) writes
/// it: `name`, or `name{k="v",k2="v2"}` with the labels sorted by key; or a name alone, when
/// only one stage has it.
pub fn svg(
    current: &Profile,
    baseline: Option<&Profile>,
    stage: Option<&str>,
) -> Result<String, ReportError> {
    let keys = plot::stage_keys(current, baseline, stage)?;
    plot::image_size(keys.len())?;
    plot::svg_grid(&plot::stage_plots(current, baseline, keys)?)
}

/// Draws the same image as [`svg`] as a PNG file at `path`, with the same choice of `stage`
/// and limit. Its text needs a TrueType font (see the module docs).
pub fn png(
    current: &Profile,
    baseline: Option<&Profile>,
    stage: Option<&str>,
    path: &Path,
) -> Result<(), ReportError> {
    let keys = plot::stage_keys(current, baseline, stage)?;
    plot::image_size(keys.len())?;
    font::ensure_registered()?;
    let output = path.display().to_string();
    let png = plot::png_grid(&plot::stage_plots(current, baseline, keys)?, &output)?;
    crate::fs::write_file(path, &png).map_err(|source| ReportError::Write {
        path: path.to_owned(),
        source,
    })
}
