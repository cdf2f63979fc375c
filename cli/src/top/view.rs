//! Drawing a [`State`]: as a ratatui frame (the live view) and as plain text (`--once`). Both are
//! built from the same lines and cells, so the two views cannot disagree.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Text};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::model::{Column, Document, StageRow, State};

/// The keys, as the bottom line says them.
pub const HELP: &str = "q quit · 1 5 6 c window 1s/5s/60s/cumulative · ←/→ or s/S sort column · \
                        r reverse · o order · ↑/↓ PgUp/PgDn scroll";

/// How many p99 readings a sparkline cell shows (the newest).
const TREND_WIDTH: usize = 20;

/// Nanoseconds as microseconds, exact to the nanosecond: `1234.567`.
pub fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// Readings as a line of block characters, lowest to highest of those shown.
pub fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let shown = &values[values.len().saturating_sub(TREND_WIDTH)..];
    let (lo, hi) = shown
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let span = hi.saturating_sub(lo).max(1);
    shown
        .iter()
        .map(|v| BARS[((v - lo) as u128 * 7 / span as u128) as usize])
        .collect()
}

/// One row's cells, left to right as [`Column::ALL`].
pub fn cells(state: &State, row: &StageRow) -> Vec<String> {
    Column::ALL
        .iter()
        .map(|c| match c {
            Column::Stage => row.key(),
            Column::Count => row.count.to_string(),
            Column::P50 => micros(row.p50_ns),
            Column::P99 => micros(row.p99_ns),
            Column::P999 => micros(row.p999_ns),
            Column::Max => micros(row.max_ns),
            Column::Misses => row.deadline_misses.to_string(),
            Column::Sla => row.sla.state.clone(),
            Column::Trend => sparkline(&state.p99_history(row)),
        })
        .collect()
}

/// The headings, the sorted one marked ▼ (largest first) or ▲.
pub fn headings(state: &State) -> Vec<String> {
    Column::ALL
        .iter()
        .map(|c| match state.sort.column {
            Some(s) if s == *c => {
                format!(
                    "{}{}",
                    c.title(),
                    if state.sort.descending { "▼" } else { "▲" }
                )
            }
            _ => c.title().to_owned(),
        })
        .collect()
}

/// Where, which window, which cycle, how sorted.
pub fn header_line(state: &State) -> String {
    let window = state.doc.as_ref().map_or_else(
        || state.window.clone().unwrap_or_else(|| "default".into()),
        |d| d.window.clone(),
    );
    let cycle = state
        .doc
        .as_ref()
        .map_or_else(|| "-".to_owned(), |d| d.cycle.to_string());
    let sorted = state.sort.column.map_or("document order", Column::title);
    let rows = state.doc.as_ref().map_or(0, |d| d.stages.len());
    let rows = match state.scroll {
        0 => format!("{rows} rows"),
        from => format!("rows {}-{rows} of {rows}", from + 1),
    };
    format!(
        "laptime top · {} · window {window} · cycle {cycle} · {rows} · sorted by {sorted}",
        state.url
    )
}

/// While polls fail: what went wrong, that top retries, how old the figures shown are.
pub fn status_line(state: &State, now: Instant) -> Option<String> {
    let failure = state.failure.as_ref()?;
    let failing = now.saturating_duration_since(failure.since).as_secs();
    let shown = match state.age(now) {
        Some(age) => format!("figures below are {}s old", age.as_secs()),
        None => "nothing read yet".to_owned(),
    };
    Some(format!(
        "NO DATA: {} · retrying every {:?} (failing for {failing}s; {shown})",
        failure.message, state.poll_every
    ))
}

/// The library's health: records, drops, rings, lag, sampling.
pub fn health_line(doc: &Document) -> String {
    let h = &doc.health;
    format!(
        "health: records {} · dropped {} · in rings {} · rings {} · lag {} µs · sampling {}% · {}",
        h.records,
        h.dropped,
        h.in_rings,
        h.rings,
        micros(h.lag_ns),
        h.sampling_rate * 100.0,
        if h.enabled { "enabled" } else { "DISABLED" }
    )
}

/// Guard trips in the window, by reason.
pub fn trips_line(doc: &Document) -> String {
    let trips: Vec<String> = doc
        .guard_trips
        .iter()
        .map(|t| format!("{} {}", t.reason, t.count))
        .collect();
    let trips = if trips.is_empty() {
        "none".to_owned()
    } else {
        trips.join(", ")
    };
    format!("guard trips ({}): {trips}", doc.window)
}

/// One line per family: its size and its slowest series by p99.
pub fn family_lines(doc: &Document) -> Vec<String> {
    doc.families
        .iter()
        .map(|f| {
            let slowest: Vec<String> = f
                .slowest
                .iter()
                .map(|s| {
                    let labels: Vec<String> =
                        s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{} {} µs", labels.join(","), micros(s.p99_ns))
                })
                .collect();
            format!(
                "family {} ({} series, {} overflowed): slowest p99 {}",
                f.name,
                f.series,
                f.overflowed,
                slowest.join(" · ")
            )
        })
        .collect()
}

/// One line per stage out of its SLA: the rule that set its state and what was observed.
pub fn violation_lines(doc: &Document) -> Vec<String> {
    let figure = |unit: &str, v: f64| match unit {
        "ns" => format!("{} µs", micros(v as u64)),
        _ => format!("{:.2}%", v * 100.0),
    };
    doc.stages
        .iter()
        .filter_map(|row| {
            let rule = row.sla.rule.as_ref()?;
            Some(format!(
                "sla {}: {} {} over {}: {} > {}",
                row.sla.state,
                row.key(),
                rule.metric,
                rule.window,
                figure(&rule.unit, rule.observed),
                figure(&rule.unit, rule.threshold)
            ))
        })
        .collect()
}

/// The lines above the table: header, failure (if any), health.
fn top_lines(state: &State, now: Instant) -> Vec<String> {
    let mut lines = vec![header_line(state)];
    lines.extend(status_line(state, now));
    lines.extend(state.doc.as_ref().map(health_line));
    lines
}

/// The lines below the table: trips and families.
fn bottom_lines(state: &State) -> Vec<String> {
    let Some(doc) = &state.doc else {
        return Vec::new();
    };
    let mut lines = vec![trips_line(doc)];
    lines.extend(violation_lines(doc));
    lines.extend(family_lines(doc));
    lines
}

/// The whole frame as plain text (`--once`): columns padded to their widest cell, the stage
/// name left-aligned and the figures right-aligned.
pub fn text_frame(state: &State, now: Instant) -> String {
    let mut table = vec![headings(state)];
    table.extend(state.rows().into_iter().map(|r| cells(state, r)));
    let widths: Vec<usize> = (0..Column::ALL.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out: Vec<String> = top_lines(state, now);
    for row in &table {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| match i {
                0 => format!("{cell:<w$}"),
                _ => format!("{cell:>w$}"),
            })
            .collect();
        out.push(padded.join("  ").trim_end().to_owned());
    }
    out.extend(bottom_lines(state));
    out.join("\n") + "\n"
}

/// The colour of an SLA state: green, yellow, red.
fn sla_style(state: &str) -> Style {
    match state {
        "critical" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        "warning" => Style::new().fg(Color::Yellow),
        "ok" => Style::new().fg(Color::Green),
        _ => Style::new(),
    }
}

/// A column's width: the stage column at least as wide as its longest key, the figures as
/// their widest usual value, the trend what is left (up to its readings).
fn column_width(c: Column, stage_width: u16) -> Constraint {
    match c {
        Column::Stage => Constraint::Min(stage_width),
        Column::Count | Column::Misses | Column::Sla => Constraint::Length(8),
        Column::Trend => Constraint::Fill(1),
        _ => Constraint::Length(11),
    }
}

fn cell(column: Column, text: String, row: &StageRow) -> Cell<'static> {
    match column {
        Column::Stage => Cell::from(text),
        Column::Sla => Cell::from(text).style(sla_style(&row.sla.state)),
        // Right-aligned like the figures, and so a narrow terminal cuts the oldest readings.
        _ => Cell::from(Text::from(text).alignment(Alignment::Right)),
    }
}

fn table(state: &State) -> Table<'static> {
    let rows = state.rows();
    let stage_width = rows
        .iter()
        .map(|r| r.key().chars().count())
        .chain([Column::Stage.title().len()])
        .max()
        .unwrap_or(0);
    let stage_width = u16::try_from(stage_width).unwrap_or(u16::MAX);
    let body = rows.into_iter().skip(state.scroll).map(|r| {
        let cells = Column::ALL
            .into_iter()
            .zip(cells(state, r))
            .map(|(c, text)| cell(c, text, r));
        Row::new(cells.collect::<Vec<_>>())
    });
    let header = Column::ALL
        .into_iter()
        .zip(headings(state))
        .map(|(c, text)| match c {
            Column::Stage | Column::Sla => Cell::from(text),
            _ => Cell::from(Text::from(text).alignment(Alignment::Right)),
        });
    let header =
        Row::new(header.collect::<Vec<_>>()).style(Style::new().add_modifier(Modifier::BOLD));
    let widths = Column::ALL.map(|c| column_width(c, stage_width));
    Table::new(body.collect::<Vec<_>>(), widths).header(header)
}

/// Draws the live view: the top lines, the table, the bottom lines, the keys.
pub fn draw(frame: &mut Frame, state: &State, now: Instant) {
    let top = top_lines(state, now);
    let bottom = bottom_lines(state);
    let [top_area, table_area, bottom_area, help_area] = Layout::vertical([
        Constraint::Length(top.len() as u16),
        Constraint::Min(3),
        Constraint::Length(bottom.len() as u16),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let failing = state.failure.is_some();
    let top: Vec<Line> = top
        .into_iter()
        .enumerate()
        .map(|(i, l)| match i {
            1 if failing => Line::styled(l, Style::new().fg(Color::White).bg(Color::Red)),
            _ => Line::raw(l),
        })
        .collect();
    frame.render_widget(Paragraph::new(top), top_area);
    frame.render_widget(table(state), table_area);
    let bottom: Vec<Line> = bottom.into_iter().map(Line::raw).collect();
    frame.render_widget(Paragraph::new(bottom), bottom_area);
    frame.render_widget(
        Paragraph::new(HELP).style(Style::new().add_modifier(Modifier::DIM)),
        help_area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_are_exact_and_sparklines_span_low_to_high() {
        assert_eq!(micros(3_141_631), "3141.631");
        assert_eq!(micros(7), "0.007");
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[5, 5]), "▁▁");
        assert_eq!(sparkline(&[10, 20, 80]), "▁▂█");
        assert_eq!(sparkline(&[1; 30]).chars().count(), TREND_WIDTH);
    }
}
