//! The TrueType font for PNG text: plotters' ab_glyph backend draws only fonts registered with it,
//! and a library should not ship a font, so one is looked up on the system at run time.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::FontStyle;

use super::ReportError;

/// The environment variable that names the font file, overriding the search.
pub(super) const FONT_ENV: &str = "LAPTIME_FONT";

/// Where common systems keep a plain sans-serif TrueType font.
const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", // Debian, Ubuntu: fonts-dejavu-core
    "/usr/share/fonts/TTF/DejaVuSans.ttf",             // Arch: ttf-dejavu
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf", // Fedora: dejavu-sans-fonts
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",          // older Fedora, Alpine
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf", // Debian: fonts-liberation
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf", // Fedora
    "/System/Library/Fonts/Supplemental/Arial.ttf",    // macOS
    "/Library/Fonts/Arial.ttf",                        // older macOS
    "C:\\Windows\\Fonts\\arial.ttf",                   // Windows
];

/// The font registered for this process, once one was.
static REGISTERED: OnceLock<PathBuf> = OnceLock::new();

/// Registers a system font as plotters' `sans-serif` family, once per process.
pub(super) fn ensure_registered() -> Result<(), ReportError> {
    if REGISTERED.get().is_some() {
        return Ok(());
    }
    let candidates: Vec<&Path> = CANDIDATES.iter().map(Path::new).collect();
    let path = find(std::env::var_os(FONT_ENV), &candidates)?;
    let bytes = std::fs::read(&path).map_err(|e| ReportError::Font {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    // plotters keeps registered fonts for the rest of the process and wants `&'static` bytes; the
    // one font is leaked once (a second thread racing here leaks a second copy, harmlessly).
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| {
        ReportError::Font {
            path: path.clone(),
            reason: "not a TrueType or OpenType font".to_string(),
        }
    })?;
    let _ = REGISTERED.set(path);
    Ok(())
}

/// The font to use: the override if given (it must exist: a typo should not silently pick another
/// font), else the first candidate that exists.
fn find(env: Option<OsString>, candidates: &[&Path]) -> Result<PathBuf, ReportError> {
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        if !path.is_file() {
            return Err(ReportError::Font {
                path,
                reason: format!("{FONT_ENV} names no such file"),
            });
        }
        return Ok(path);
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .map(|p| p.to_path_buf())
        .ok_or_else(|| ReportError::NoFont {
            tried: candidates.iter().map(|p| p.to_path_buf()).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_must_exist() {
        let e = find(Some("/nonexistent/font.ttf".into()), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "font /nonexistent/font.ttf: LAPTIME_FONT names no such file; point LAPTIME_FONT at a \
             readable .ttf or .otf file"
        );
    }

    #[test]
    fn no_candidate_says_what_to_install() {
        let e = find(None, &[Path::new("/nonexistent/a.ttf")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no TrueType font for the PNG's text: install DejaVu Sans (Debian/Ubuntu: apt-get \
             install fonts-dejavu-core) or set LAPTIME_FONT=/path/to/font.ttf; looked at \
             /nonexistent/a.ttf"
        );
    }

    #[test]
    fn first_existing_candidate_wins() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let got = find(
            Some(OsString::new()),
            &[Path::new("/nonexistent/a.ttf"), here.as_path()],
        )
        .unwrap();
        assert_eq!(got, here);
    }
}
