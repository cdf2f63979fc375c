//! Percentile-distribution plots with plotters: x on a "nines" axis, y on a log latency axis.
//!
//! Text is placed at fixed offsets (no `caption()`, `titled()` or series-label legend, which
//! measure text with the font backend), so the SVG backend, which leaves text to the viewer,
//! needs no font.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::{ReportError, format_ns};
use crate::profile::{CorrectedProfile, Histogram, Profile, ProfileError, StageProfile};

/// One cell's size in pixels.
pub(super) const CELL: (u32, u32) = (720, 420);
/// Points per decade of the nines axis: fine enough that the curve looks smooth at `CELL` width.
const STEPS_PER_NINE: f64 = 50.0;

const CURRENT: RGBColor = RGBColor(31, 119, 180);
const BASELINE: RGBColor = RGBColor(230, 85, 13);
/// The corrected curves' dashes: length and gap, in pixels.
const DASH: (i32, i32) = (8, 5);

/// One profile's curve of one stage.
pub(super) struct Series {
    label: String,
    color: RGBColor,
    /// The coordinated-omission-corrected curve, drawn dashed in its profile's colour.
    dashed: bool,
    /// (nines, ns), nines = log10(1 / (1 − q)), ascending in both.
    points: Vec<(f64, f64)>,
}

/// What one plot shows: a stage's curves, the baseline's first so the current one is drawn on top.
pub(super) struct StagePlot {
    pub(super) key: String,
    series: Vec<Series>,
}

/// The keys of the stages to draw: `stage` (a key, or a name that only one stage has), or every
/// stage: the current profile's order, then stages only in the baseline.
pub(super) fn stage_keys(
    current: &Profile,
    baseline: Option<&Profile>,
    stage: Option<&str>,
) -> Result<Vec<String>, ReportError> {
    // (key, name) of every stage of either profile, once.
    let mut stages: Vec<(String, &str)> = current
        .stages
        .iter()
        .map(|s| (s.key(), s.name.as_str()))
        .collect();
    if let Some(b) = baseline {
        // One set of the current keys, not a search per stage (quadratic in 20 000 stages).
        let known: std::collections::HashSet<String> =
            stages.iter().map(|(k, _)| k.clone()).collect();
        for s in &b.stages {
            let k = s.key();
            if !known.contains(&k) {
                stages.push((k, &s.name));
            }
        }
    }
    if stages.is_empty() {
        return Err(ReportError::NoStages);
    }
    let Some(want) = stage else {
        return Ok(stages.into_iter().map(|(k, _)| k).collect());
    };
    if stages.iter().any(|(k, _)| k == want) {
        return Ok(vec![want.to_string()]);
    }
    let named: Vec<String> = stages
        .iter()
        .filter(|(_, name)| *name == want)
        .map(|(k, _)| k.clone())
        .collect();
    match named.len() {
        1 => Ok(named),
        0 => Err(ReportError::UnknownStage {
            stage: want.to_string(),
            available: stages.into_iter().map(|(k, _)| k).collect(),
        }),
        _ => Err(ReportError::AmbiguousStage {
            stage: want.to_string(),
            matches: named,
        }),
    }
}

/// The plots of the stages `keys` (from [`stage_keys`]): each profile's curve, and beside it,
/// dashed in the same colour, its coordinated-omission-corrected curve when the stage has one.
pub(super) fn stage_plots(
    current: &Profile,
    baseline: Option<&Profile>,
    keys: Vec<String>,
) -> Result<Vec<StagePlot>, ReportError> {
    keys.into_iter()
        .map(|key| {
            let mut series = Vec::new();
            let sides = [
                baseline.map(|b| ("baseline", b, BASELINE)),
                Some(("current", current, CURRENT)),
            ];
            for (role, profile, color) in sides.into_iter().flatten() {
                let Some(s) = profile.stage(&key) else {
                    continue;
                };
                let label = format!("{role}: {}", profile.meta.name);
                series.push(Series {
                    label: label.clone(),
                    color,
                    dashed: false,
                    points: curve(Figures::raw(s)?),
                });
                if let Some(c) = &s.corrected {
                    series.push(Series {
                        label: format!(
                            "{label}, CO-corrected ({} interval)",
                            format_ns(c.expected_interval_ns)
                        ),
                        color,
                        dashed: true,
                        points: curve(Figures::corrected(c)?),
                    });
                }
            }
            Ok(StagePlot { key, series })
        })
        .collect()
}

/// What a curve is drawn from: a stage's raw figures or its corrected ones.
struct Figures {
    count: u64,
    min_ns: u64,
    max_ns: u64,
    /// p50, p90, p95, p99, p99.9.
    percentiles: [u64; 5],
    histogram: Option<Histogram>,
}

impl Figures {
    fn raw(s: &StageProfile) -> Result<Self, ProfileError> {
        Ok(Figures {
            count: s.count,
            min_ns: s.min_ns,
            max_ns: s.max_ns,
            percentiles: [s.p50_ns, s.p90_ns, s.p95_ns, s.p99_ns, s.p999_ns],
            histogram: s.histogram()?,
        })
    }

    fn corrected(c: &CorrectedProfile) -> Result<Self, ProfileError> {
        Ok(Figures {
            count: c.count,
            min_ns: c.min_ns,
            max_ns: c.max_ns,
            percentiles: [c.p50_ns, c.p90_ns, c.p95_ns, c.p99_ns, c.p999_ns],
            histogram: c.histogram()?,
        })
    }
}

/// `log10(1 / (1 − q))`: 0 at the minimum, 1 at p90, 2 at p99, 3 at p99.9.
fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// A percentile curve: from the histogram when there is one, else through the summary
/// percentiles. The last point is the maximum, at the nines of `count` (the quantile resolution
/// of that many values). Values are at least 1 ns: the log axis has no place for 0.
fn curve(s: Figures) -> Vec<(f64, f64)> {
    if s.count == 0 {
        return Vec::new();
    }
    let end = (s.count as f64).log10();
    let clamp = |v: u64| v.clamp(s.min_ns, s.max_ns.max(s.min_ns)).max(1) as f64;
    let mut points = Vec::new();
    match &s.histogram {
        Some(h) if !h.is_empty() => {
            let steps = (end * STEPS_PER_NINE).ceil() as u64;
            for i in 0..steps {
                let x = i as f64 / STEPS_PER_NINE;
                let q = 1.0 - 10f64.powf(-x);
                points.push((x, clamp(h.value_at_quantile(q))));
            }
        }
        _ => {
            points.push((0.0, clamp(s.min_ns)));
            for (q, v) in [0.5, 0.9, 0.95, 0.99, 0.999].into_iter().zip(s.percentiles) {
                if nines(q) < end {
                    points.push((nines(q), clamp(v)));
                }
            }
        }
    }
    points.push((end, clamp(s.max_ns)));
    points
}

/// A log latency axis labelled at the sparsest of 1, 1–3, 1–2–5, 1–9, 1.0–9.9 (× powers of ten)
/// that gives at least three labels, with a light grid line at every 1–9 multiple. plotters' own log
/// axis labels only the powers of ten, or every 1–9 multiple when asked for ten labels per decade:
/// too few labels for the usual one- or two-decade latency range, or too many.
struct LatencyAxis(LogCoord<f64>);

impl LatencyAxis {
    /// The values `m × 10^k` within the axis's range, for each `m` in `multiples`, ascending.
    fn points(&self, multiples: &[f64]) -> Vec<f64> {
        let Range { start, end } = self.0.range();
        let mut out = Vec::new();
        for decade in start.log10().floor() as i32..=end.log10().ceil() as i32 {
            for m in multiples {
                let v = m * 10f64.powi(decade);
                if v >= start && v <= end {
                    out.push(v);
                }
            }
        }
        out
    }
}

impl Ranged for LatencyAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.0.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        const NINE: [f64; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        if hint.weight().allow_light_points() {
            return self.points(&NINE);
        }
        // The last set (1.0, 1.1, … 9.9) is for ranges narrower than the gap between two 1–9
        // multiples; the plots' padding makes every range at least 1.56× wide, which holds four.
        let tenths: Vec<f64> = (10..100).map(|m| f64::from(m) / 10.0).collect();
        let sets: [&[f64]; 5] = [&[1.0], &[1.0, 3.0], &[1.0, 2.0, 5.0], &NINE, &tenths];
        let fitting: Vec<Vec<f64>> = sets
            .iter()
            .map(|m| self.points(m))
            .filter(|p| p.len() <= hint.max_num_points())
            .collect();
        fitting
            .iter()
            .find(|p| p.len() >= 3)
            .or(fitting.last())
            .cloned()
            .unwrap_or_default()
    }

    fn range(&self) -> Range<f64> {
        self.0.range()
    }
}

/// `0%`, `90%`, `99%`, `99.9%`, `99.99%` … for 0, 1, 2, 3, 4 … nines.
fn nines_label(x: f64) -> String {
    match x.round() as u32 {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace(".%", "%"),
    }
}

fn draw_error<E: std::error::Error + Send + Sync>(
    output: &str,
) -> impl FnOnce(DrawingAreaErrorKind<E>) -> ReportError + '_ {
    move |e| ReportError::Draw {
        output: output.to_string(),
        reason: e.to_string(),
    }
}

/// One stage's plot in the HTML report (its heading is HTML, so no caption here).
pub(super) fn svg_one(plot: &StagePlot) -> Result<String, ReportError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, CELL).into_drawing_area();
        draw_cell(&root, plot, false)
            .and_then(|()| root.present())
            .map_err(draw_error("SVG"))?;
    }
    Ok(out)
}

/// Columns of a grid of `n` plots.
fn grid(n: usize) -> (usize, usize) {
    let cols = if n > 1 { 2 } else { 1 };
    (n.div_ceil(cols), cols)
}

/// The size of an image of `n` plots, refusing more than [`MAX_IMAGE_STAGES`](super::MAX_IMAGE_STAGES).
pub(super) fn image_size(n: usize) -> Result<(u32, u32), ReportError> {
    let too_many = || ReportError::TooManyStages {
        stages: n,
        limit: super::MAX_IMAGE_STAGES,
    };
    if n > super::MAX_IMAGE_STAGES {
        return Err(too_many());
    }
    let (rows, cols) = grid(n);
    let side = |cell: u32, k: usize| u32::try_from(k).ok().and_then(|k| cell.checked_mul(k));
    side(CELL.0, cols)
        .zip(side(CELL.1, rows))
        .ok_or_else(too_many)
}

pub(super) fn svg_grid(plots: &[StagePlot]) -> Result<String, ReportError> {
    let (rows, cols) = grid(plots.len());
    let size = image_size(plots.len())?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        draw_grid(&root, plots, rows, cols).map_err(draw_error("SVG"))?;
    }
    Ok(out)
}

/// The PNG file's bytes: drawn into memory and encoded there, so the file is written by the
/// library's one write rule ([`crate::fs::write_file`]) like every other output.
pub(super) fn png_grid(plots: &[StagePlot], output: &str) -> Result<Vec<u8>, ReportError> {
    use image::ImageEncoder as _;
    let (rows, cols) = grid(plots.len());
    let size = image_size(plots.len())?;
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw_grid(&root, plots, rows, cols).map_err(draw_error(output))?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, size.0, size.1, image::ColorType::Rgb8)
        .map_err(|e| ReportError::Draw {
            output: output.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(png)
}

fn draw_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plots: &[StagePlot],
    rows: usize,
    cols: usize,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    for (cell, plot) in root.split_evenly((rows, cols)).iter().zip(plots) {
        draw_cell(cell, plot, true)?;
    }
    root.present()
}

/// The plot's x extent (whole nines, at least 1) and its y range: the curves' latencies with a
/// quarter of margin on the log scale, a factor of 2 around a single value, 1 ns – 1 µs for no
/// data.
fn axis_ranges(plot: &StagePlot) -> (f64, (f64, f64)) {
    let all = || plot.series.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.0).fold(1.0f64, f64::max).ceil();
    let y_min = all().map(|p| p.1).fold(f64::INFINITY, f64::min).max(1.0);
    let y_max = all().map(|p| p.1).fold(0.0f64, f64::max);
    let y = if y_min.is_finite() && y_max > y_min {
        (y_min / 1.25, y_max * 1.25)
    } else if y_min.is_finite() {
        (y_min / 2.0, y_min * 2.0)
    } else {
        (1.0, 1000.0)
    };
    (x_max, y)
}

fn draw_cell<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plot: &StagePlot,
    caption: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    area.fill(&WHITE)?;
    if caption {
        area.draw(&Text::new(
            plot.key.clone(),
            (12, 8),
            ("sans-serif", 18).into_font().color(&BLACK),
        ))?;
    }
    let (x_max, (y_lo, y_hi)) = axis_ranges(plot);

    let mut chart = ChartBuilder::on(area)
        .margin_top(if caption { 36 } else { 12 })
        .margin_right(24)
        .margin_left(8)
        .margin_bottom(8)
        .x_label_area_size(44)
        .y_label_area_size(76)
        .build_cartesian_2d(0.0..x_max, LatencyAxis((y_lo..y_hi).log_scale().into()))?;
    chart
        .configure_mesh()
        // x_max + 1 labels on [0, x_max]: plotters' nice steps then fall on the whole nines.
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| format_ns(*y as u64))
        .y_labels(10)
        .x_desc("percentile")
        .y_desc("latency")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    for s in &plot.series {
        let style = s.color.stroke_width(2);
        if s.dashed {
            chart.draw_series(DashedLineSeries::new(
                s.points.iter().copied(),
                DASH.0,
                DASH.1,
                style,
            ))?;
        } else {
            chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?;
        }
    }
    // The legend sits in the top-left corner, which the rising curves leave empty.
    for (i, s) in plot.series.iter().enumerate() {
        let y = 14 + 20 * i as i32;
        let at = EmptyElement::at((0.0, y_hi));
        let text = Text::new(
            s.label.clone(),
            (48, y - 7),
            ("sans-serif", 14).into_font().color(&BLACK),
        );
        let line = vec![(12, y), (40, y)];
        let style = s.color.stroke_width(3);
        if s.dashed {
            chart
                .plotting_area()
                .draw(&(at + DashedPathElement::new(line, DASH.0, DASH.1, style) + text))?;
        } else {
            chart
                .plotting_area()
                .draw(&(at + PathElement::new(line, style) + text))?;
        }
    }
    if plot.series.iter().all(|s| s.points.is_empty()) {
        chart.plotting_area().draw(&Text::new(
            "no spans recorded",
            (x_max / 3.0, (y_lo * y_hi).sqrt()),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::coord::ranged1d::{BoldPoints, LightPoints};

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.9) - 1.0).abs() < 1e-12);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        let labels: Vec<String> = (0..6).map(|x| nines_label(f64::from(x))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn latency_axis_labels() {
        let axis = LatencyAxis((12_000.0..1_300_000.0).log_scale().into());
        // Powers of ten alone give two labels; 1–3 gives four.
        assert_eq!(
            axis.key_points(BoldPoints(10)),
            [30_000.0, 100_000.0, 300_000.0, 1_000_000.0]
        );
        // At most two labels allowed: the powers of ten.
        assert_eq!(axis.key_points(BoldPoints(2)), [100_000.0, 1_000_000.0]);
        // The light grid: every 1–9 multiple, 20 µs to 1 ms.
        let light = axis.key_points(LightPoints::new(10, 100));
        assert_eq!(light.len(), 8 + 9 + 1);
        assert_eq!((light[0], light[17]), (20_000.0, 1_000_000.0));
        // A range with no 1–9 multiple inside still gets labels.
        let narrow = LatencyAxis((110_000.0..170_000.0).log_scale().into());
        let got: Vec<u64> = narrow
            .key_points(BoldPoints(10))
            .iter()
            .map(|v| v.round() as u64)
            .collect();
        assert_eq!(
            got,
            [
                110_000, 120_000, 130_000, 140_000, 150_000, 160_000, 170_000
            ]
        );
    }

    #[test]
    fn grid_shapes() {
        assert_eq!(grid(1), (1, 1));
        assert_eq!(grid(2), (1, 2));
        assert_eq!(grid(5), (3, 2));
    }

    #[test]
    fn image_sizes_are_capped() {
        assert_eq!(image_size(1).unwrap(), (720, 420));
        assert_eq!(image_size(5).unwrap(), (1440, 1260));
        assert_eq!(image_size(64).unwrap(), (1440, 32 * 420));
        for n in [65, 10_000, usize::MAX] {
            assert!(
                matches!(image_size(n), Err(ReportError::TooManyStages { stages, limit: 64 }) if stages == n),
                "{n}"
            );
        }
    }
}
