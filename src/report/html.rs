//! The self-contained HTML report: inline CSS, the stats table, one inline SVG plot per stage; no
//! scripts and nothing fetched, so it can be attached to a CI run or mailed as one file.
//! It is also well-formed XML (void elements self-closed), so tools and tests can parse it.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{ReportError, format_ns, plot};
use crate::profile::{CorrectedProfile, Profile, ProfileMeta, StageProfile};

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1500px;\
padding:0 1em;color:#222;background:#fff}\
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}\
h3{font-family:ui-monospace,monospace;font-size:1em;margin:.2em 0}\
.meta{color:#555;margin:.1em 0}\
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.92em}\
th,td{padding:.3em .6em;border-bottom:1px solid #eee;text-align:right;vertical-align:top}\
th{background:#f5f5f5;position:sticky;top:0}th:first-child{text-align:left}\
td.stage{text-align:left;font-family:ui-monospace,monospace}\
.base{display:block;color:#777;font-size:.85em}\
.up{color:#b00020}.down{color:#137333}.tag{color:#777;font-style:italic}\
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:1em}\
.plot{border:1px solid #eee;padding:.5em}.plot svg{width:100%;height:auto;display:block}\
footer{margin-top:2em;color:#999;font-size:.85em}";

/// The most stages [`html`] shows. Each plot is about 10 kB of SVG: a report of all 20 000 stages
/// of a profile was a 209 MB file that took 38 s to write and that no browser opens.
pub const MAX_HTML_STAGES: usize = 200;

/// The report as one HTML document: `current`'s stats table (with `baseline`'s figures and the
/// changes when given) and one percentile plot per stage, for at most [`MAX_HTML_STAGES`]
/// stages (see [`html_top`]).
pub fn html(current: &Profile, baseline: Option<&Profile>) -> Result<String, ReportError> {
    html_top(current, baseline, MAX_HTML_STAGES)
}

/// [`html`] with room for `max_stages` stages: when the profiles have more, the report shows the
/// `max_stages` with the highest p99 (the current one, or the baseline's for a stage only the
/// baseline has), in their order, and says above the table how many were left out and the
/// highest p99 among them.
pub fn html_top(
    current: &Profile,
    baseline: Option<&Profile>,
    max_stages: usize,
) -> Result<String, ReportError> {
    let mut rows = rows(current, baseline);
    let left_out = keep_top(&mut rows, max_stages);
    let mut h = String::new();
    let title = format!("laptime report: {}", current.meta.name);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    meta_lines(&mut h, "current", &current.meta);
    if let Some(b) = baseline {
        meta_lines(&mut h, "baseline", &b.meta);
    }

    h.push_str("<h2>Stages</h2>\n");
    left_out_note(&mut h, rows.len(), &left_out);
    if baseline.is_some() {
        h.push_str(
            "<p class=\"meta\">Each cell: the current figure; under it the baseline's and the \
             change (red: slower or more, green: faster or fewer).</p>\n",
        );
    }
    // The corrected columns only when some stage has corrected figures: a report of profiles
    // without them looks as it always did.
    let corrected = std::iter::once(current)
        .chain(baseline)
        .any(|p| p.stages.iter().any(|s| s.corrected.is_some()));
    if corrected {
        h.push_str(
            "<p class=\"meta\">CO columns: the figures corrected for coordinated omission \
             (HdrHistogram's expected-interval rule: a span at least twice its stage's expected \
             interval also counts the spans it held back), beside the raw ones; the dashed curves \
             in the plots. Interval: the expected interval, and how many values the correction \
             added.</p>\n",
        );
    }
    stage_table(&mut h, &rows, baseline.is_some(), corrected);

    h.push_str(
        "<h2>Percentile distributions</h2>\n<p class=\"meta\">x: percentile on a nines axis \
         (90 %, 99 %, 99.9 % … evenly spaced); y: latency, log scale.</p>\n<div class=\"plots\">\n",
    );
    if rows.is_empty() && left_out.is_empty() {
        h.push_str("<p>No stages recorded.</p>\n");
    }
    let keys = rows.into_iter().map(|r| r.key).collect();
    for p in &plot::stage_plots(current, baseline, keys)? {
        let _ = write!(
            h,
            "<section class=\"plot\">\n<h3>{}</h3>\n{}\n</section>\n",
            escape(&p.key),
            plot::svg_one(p)?
        );
    }
    let _ = write!(
        h,
        "</div>\n<footer>laptime {}</footer>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    Ok(h)
}

/// The stages' table: one row per stage, the CO columns when `corrected`, and under each
/// figure the baseline's when `compared` (a stage the baseline lacks is marked new).
fn stage_table(h: &mut String, rows: &[Row<'_>], compared: bool, corrected: bool) {
    h.push_str(
        "<table>\n<thead><tr><th>stage</th><th>spans</th><th>p50</th>\
                <th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th>",
    );
    if corrected {
        h.push_str(
            "<th>CO p50</th><th>CO p90</th><th>CO p95</th><th>CO p99</th><th>CO p99.9</th>\
             <th>CO interval</th>",
        );
    }
    h.push_str(
        "<th>deadline misses</th><th>dropped</th><th>saturated</th></tr></thead>\n<tbody>\n",
    );
    for row in rows {
        match (row.current, row.baseline) {
            (Some(s), base) => stage_row(h, s, base, compared && base.is_none(), corrected),
            (None, Some(b)) => removed_row(h, b, corrected),
            (None, None) => {}
        }
    }
    h.push_str("</tbody>\n</table>\n");
}

/// One stage of the report: its key and its figures in each profile.
struct Row<'a> {
    key: String,
    current: Option<&'a StageProfile>,
    baseline: Option<&'a StageProfile>,
}

impl Row<'_> {
    /// What the report ranks by: the current p99, or the baseline's for a removed stage.
    fn p99(&self) -> u64 {
        self.current.or(self.baseline).map_or(0, |s| s.p99_ns)
    }
}

/// Every stage of either profile: the current ones in their order, then those only the baseline
/// has. Matched through one index, not a search per stage, which made 20 000 stages quadratic.
fn rows<'a>(current: &'a Profile, baseline: Option<&'a Profile>) -> Vec<Row<'a>> {
    let mut base: HashMap<String, &StageProfile> = baseline
        .map(|b| b.stages.iter().map(|s| (s.key(), s)).collect())
        .unwrap_or_default();
    let mut rows: Vec<Row<'a>> = current
        .stages
        .iter()
        .map(|s| {
            let key = s.key();
            let baseline = base.remove(&key);
            Row {
                key,
                current: Some(s),
                baseline,
            }
        })
        .collect();
    for s in baseline.map_or(&[][..], |b| &b.stages[..]) {
        if let Some((key, s)) = base.remove_entry(&s.key()) {
            rows.push(Row {
                key,
                current: None,
                baseline: Some(s),
            });
        }
    }
    rows
}

/// Keeps the `max` rows with the highest p99, in their order; returns the others.
fn keep_top<'a>(rows: &mut Vec<Row<'a>>, max: usize) -> Vec<Row<'a>> {
    if rows.len() <= max {
        return Vec::new();
    }
    let mut by_p99: Vec<usize> = (0..rows.len()).collect();
    by_p99.sort_by_key(|&i| (std::cmp::Reverse(rows[i].p99()), i));
    let mut keep = vec![false; rows.len()];
    for &i in &by_p99[..max] {
        keep[i] = true;
    }
    let (kept, left): (Vec<_>, Vec<_>) = rows.drain(..).zip(keep).partition(|(_, k)| *k);
    *rows = kept.into_iter().map(|(r, _)| r).collect();
    left.into_iter().map(|(r, _)| r).collect()
}

/// Says what a report bounded by `html_top` left out, and how to see it.
fn left_out_note(h: &mut String, shown: usize, left_out: &[Row<'_>]) {
    let Some(highest) = left_out.iter().map(Row::p99).max() else {
        return;
    };
    let _ = writeln!(
        h,
        "<p class=\"meta\"><b>{} of {} stages left out</b>: this report shows the {shown} with \
         the highest p99; each one left out has a p99 of at most {}. Show more with \
         <code>laptime report --max-stages N</code>, or draw one stage with \
         <code>laptime report --stage KEY -o stage.svg</code>.</p>",
        left_out.len(),
        shown + left_out.len(),
        format_ns(highest)
    );
}

fn meta_lines(h: &mut String, role: &str, m: &ProfileMeta) {
    let mut line = format!(
        "<b>{role}</b>: {} on {}, {} to {} UTC",
        escape(&m.name),
        escape(&m.host),
        utc(m.started_unix_ms),
        utc(m.ended_unix_ms)
    );
    if let Some(rev) = &m.git_revision {
        let _ = write!(line, ", revision {}", escape(rev));
    }
    for (k, v) in &m.tags {
        let _ = write!(line, ", {}={}", escape(k), escape(v));
    }
    if !m.merged_from.is_empty() {
        let names: Vec<String> = m.merged_from.iter().map(|n| escape(n)).collect();
        let _ = write!(line, ", merged from {}", names.join(", "));
    }
    let c = &m.config;
    let _ = write!(
        line,
        "; histograms: {} significant digits up to {}, sampling rate {}",
        c.significant_digits,
        format_ns(c.highest_ns),
        c.sampling_rate
    );
    let _ = writeln!(h, "<p class=\"meta\">{line}</p>");
}

/// A cell with the current figure and, under it, the baseline's and the change (coloured when
/// higher is worse).
fn cell(h: &mut String, cur: String, base: Option<(String, f64, f64)>, colour: bool) {
    let _ = write!(h, "<td>{cur}");
    if let Some((text, b, c)) = base {
        let change = if b == 0.0 {
            String::new()
        } else {
            let pct = 100.0 * (c - b) / b;
            let class = if !colour {
                ""
            } else if pct > 0.05 {
                "up"
            } else if pct < -0.05 {
                "down"
            } else {
                ""
            };
            format!(" <span class=\"{class}\">{pct:+.1}&#8239;%</span>")
        };
        let _ = write!(h, "<span class=\"base\">{text}{change}</span>");
    }
    h.push_str("</td>");
}

/// A stage's p50, p90, p95, p99, p99.9 and max, each with its text: a saturated percentile (one
/// past the histogram's range, [`StageProfile::is_saturated`]) is shown as the floor it is,
/// `≥ 3601.33 s`.
fn latency(s: &StageProfile) -> [(u64, String); 6] {
    let figures = [s.p50_ns, s.p90_ns, s.p95_ns, s.p99_ns, s.p999_ns, s.max_ns];
    let quantiles = [0.5, 0.9, 0.95, 0.99, 0.999, 1.0];
    std::array::from_fn(|i| {
        let text = format_ns(figures[i]);
        let text = if s.is_saturated(quantiles[i]) {
            format!("&#8805;&#8239;{text}")
        } else {
            text
        };
        (figures[i], text)
    })
}

fn stage_row(
    h: &mut String,
    s: &StageProfile,
    base: Option<&StageProfile>,
    added: bool,
    corrected_columns: bool,
) {
    let _ = write!(h, "<tr><td class=\"stage\">{}", escape(&s.key()));
    if added {
        h.push_str(" <span class=\"tag\">(added)</span>");
    }
    h.push_str("</td>");
    cell(
        h,
        s.count.to_string(),
        base.map(|b| (b.count.to_string(), b.count as f64, s.count as f64)),
        false,
    );
    let cur = latency(s);
    let old = base.map(latency);
    for (i, (v, text)) in cur.into_iter().enumerate() {
        cell(
            h,
            text,
            old.as_ref()
                .map(|o| (o[i].1.clone(), o[i].0 as f64, v as f64)),
            true,
        );
    }
    cell(
        h,
        format_ns(s.mean_ns.round() as u64),
        base.map(|b| (format_ns(b.mean_ns.round() as u64), b.mean_ns, s.mean_ns)),
        true,
    );
    if corrected_columns {
        corrected_cells(
            h,
            s.corrected.as_ref(),
            base.and_then(|b| b.corrected.as_ref()),
        );
    }
    let misses =
        |s: &StageProfile| format!("{} ({:.2}&#8239;%)", s.deadline_misses, s.deadline_miss_pct);
    let has_deadline = |s: &StageProfile| s.deadline_ns.is_some() || s.deadline_misses > 0;
    // Percentage points, not a relative change: shown as the two figures side by side.
    let _ = write!(
        h,
        "<td>{}{}</td>",
        if has_deadline(s) {
            misses(s)
        } else {
            "–".to_string()
        },
        base.filter(|b| has_deadline(b))
            .map(|b| format!("<span class=\"base\">{}</span>", misses(b)))
            .unwrap_or_default()
    );
    for (c, b) in [
        (s.dropped, base.map(|b| b.dropped)),
        (s.saturated, base.map(|b| b.saturated)),
    ] {
        let _ = write!(
            h,
            "<td>{c}{}</td>",
            b.map(|b| format!("<span class=\"base\">{b}</span>"))
                .unwrap_or_default()
        );
    }
    h.push_str("</tr>\n");
}

fn removed_row(h: &mut String, s: &StageProfile, corrected_columns: bool) {
    let _ = write!(
        h,
        "<tr><td class=\"stage\">{} <span class=\"tag\">(removed: baseline only)</span></td>\
         <td><span class=\"base\">{}</span></td>",
        escape(&s.key()),
        s.count
    );
    for (_, text) in latency(s) {
        let _ = write!(h, "<td><span class=\"base\">{text}</span></td>");
    }
    let _ = write!(
        h,
        "<td><span class=\"base\">{}</span></td>",
        format_ns(s.mean_ns.round() as u64)
    );
    if corrected_columns {
        match &s.corrected {
            Some(c) => {
                for v in [c.p50_ns, c.p90_ns, c.p95_ns, c.p99_ns, c.p999_ns] {
                    let _ = write!(h, "<td><span class=\"base\">{}</span></td>", format_ns(v));
                }
                let _ = write!(h, "<td><span class=\"base\">{}</span></td>", interval(c));
            }
            None => h.push_str(&"<td>–</td>".repeat(6)),
        }
    }
    let _ = writeln!(h, "<td></td><td></td><td></td></tr>");
}

/// The CO columns of a stage: its corrected percentiles (with the baseline's and the change when
/// the baseline has them too) and its expected interval; `–` for a stage without correction.
fn corrected_cells(h: &mut String, c: Option<&CorrectedProfile>, base: Option<&CorrectedProfile>) {
    let Some(c) = c else {
        h.push_str(&"<td>–</td>".repeat(6));
        return;
    };
    let percentiles = |c: &CorrectedProfile| [c.p50_ns, c.p90_ns, c.p95_ns, c.p99_ns, c.p999_ns];
    let old = base.map(percentiles);
    for (i, v) in percentiles(c).iter().enumerate() {
        cell(
            h,
            format_ns(*v),
            old.map(|o| (format_ns(o[i]), o[i] as f64, *v as f64)),
            true,
        );
    }
    let _ = write!(
        h,
        "<td>{}{}</td>",
        interval(c),
        base.map(|b| format!("<span class=\"base\">{}</span>", interval(b)))
            .unwrap_or_default()
    );
}

/// `1.00ms, +999 added`: the expected interval and the values the correction added.
fn interval(c: &CorrectedProfile) -> String {
    format!(
        "{}, +{} added",
        format_ns(c.expected_interval_ns),
        c.synthesized
    )
}

/// Text from profile files goes into HTML text and attribute values: escape all five.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC), by Howard Hinnant's
/// days-to-civil algorithm (proleptic Gregorian calendar).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert(\"x\" & 'y')</script>"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }

    /// 15 of 1 000 spans past the range: p99 (rank 990 > 985) and p99.9 are floors and say so;
    /// p50–p95 and the exact max do not.
    #[test]
    fn saturated_percentiles_are_shown_as_floors() {
        let highest = 3_600_000_000_000;
        let mut h = crate::profile::Histogram::new_with_bounds(1, highest, 3).unwrap();
        h.record_n(1_000, 985).unwrap();
        h.record_n(highest, 15).unwrap();
        let counts = crate::profile::StageCounts {
            min_ns: 1_000,
            max_ns: 2 * highest,
            sum_ns: 985 * 1_000 + 15 * 2 * highest,
            saturated: 15,
            ..Default::default()
        };
        let s = StageProfile::from_histogram("s", Default::default(), &h, counts).unwrap();
        let marked: Vec<bool> = latency(&s)
            .iter()
            .map(|(_, text)| text.starts_with("&#8805;"))
            .collect();
        assert_eq!(marked, [false, false, false, true, true, false]);
    }

    /// References from `date -u -d @SECONDS`.
    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_767_225_599_999), "2025-12-31 23:59:59");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56");
    }
}
