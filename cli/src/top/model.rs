//! What `top` knows: the last `/stats` document it read ([`Document`], the fields it shows), the
//! p99 history it keeps per stage for the sparklines, the window and sort chosen, and the last
//! failure. No terminal code: the view draws a [`State`], the app loop feeds it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The `/stats` schema version this `top` reads (`laptime::export::stats_json::STATS_VERSION`).
pub const READS_VERSION: u32 = 1;

/// How many p99 readings a stage's sparkline keeps (at one poll a second: two minutes).
pub const HISTORY_LEN: usize = 120;

/// The `/stats` document, the fields `top` shows (others are ignored, as the schema allows).
#[derive(Debug, Clone, Deserialize)]
pub struct Document {
    /// The schema version; [`READS_VERSION`] is the one understood.
    pub version: u32,
    /// The window of every figure but `health`.
    pub window: String,
    /// The windows the process keeps.
    pub windows: Vec<String>,
    /// The aggregator cycle that published the snapshot.
    pub cycle: u64,
    /// Every series with activity in the window.
    pub stages: Vec<StageRow>,
    /// The runtime-labelled families active in the window.
    #[serde(default)]
    pub families: Vec<FamilyRow>,
    /// Guard trips in the window.
    pub guard_trips: Vec<Trip>,
    /// The library's own health.
    pub health: HealthRow,
}

/// One stage or series over the window.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct StageRow {
    pub name: String,
    /// Sorted by label name (the document keeps the stage's order; top shows them sorted, as the
    /// gate report keys stages).
    pub labels: BTreeMap<String, String>,
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub deadline_misses: u64,
    pub sla: Sla,
    #[serde(default)]
    pub family_total: bool,
    /// A family's or a name's total (documents before the field have `family_total` only).
    #[serde(default)]
    pub total: bool,
}

impl StageRow {
    /// The name and labels as one key: `exchange_req{api=batch,verb=post}`, `Σ order_exec` for
    /// a family's or a name's total.
    pub fn key(&self) -> String {
        if self.family_total || self.total {
            return format!("Σ {}", self.name);
        }
        crate::stage_title(
            &self.name,
            self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }
}

/// A stage's SLA state: `ok`, `warning` or `critical`, and the rule that set it.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct Sla {
    pub state: String,
    pub rule: Option<Rule>,
}

/// The rule an active violation broke.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct Rule {
    pub window: String,
    pub metric: String,
    pub unit: String,
    pub threshold: f64,
    pub observed: f64,
}

/// A family and its slowest series by p99.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct FamilyRow {
    pub name: String,
    pub series: usize,
    pub overflowed: u64,
    pub slowest: Vec<SlowSeries>,
}

/// One of a family's slowest series.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct SlowSeries {
    pub labels: BTreeMap<String, String>,
    pub p99_ns: u64,
}

/// Guard trips of one reason.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct Trip {
    pub reason: String,
    pub count: u64,
}

/// The health figures `top` shows.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct HealthRow {
    pub records: u64,
    pub dropped: u64,
    pub in_rings: u64,
    pub rings: usize,
    pub lag_ns: u64,
    pub sampling_rate: f64,
    pub enabled: bool,
}

/// Reads a `/stats` body; the reason (naming the field) when it is not a document this `top`
/// reads.
pub fn parse_document(body: &[u8]) -> Result<Document, String> {
    let doc: Document = serde_json::from_slice(body)
        .map_err(|e| format!("answered something that is not a /stats document: {e}"))?;
    if doc.version != READS_VERSION {
        return Err(format!(
            "speaks /stats version {}; this top reads version {READS_VERSION}",
            doc.version
        ));
    }
    Ok(doc)
}

/// A column of the stage table, which the table can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Column {
    Stage,
    Count,
    P50,
    P99,
    P999,
    Max,
    Misses,
    Sla,
    Trend,
}

impl Column {
    /// Every column, left to right.
    pub const ALL: [Column; 9] = [
        Column::Stage,
        Column::Count,
        Column::P50,
        Column::P99,
        Column::P999,
        Column::Max,
        Column::Misses,
        Column::Sla,
        Column::Trend,
    ];

    /// The heading.
    pub fn title(self) -> &'static str {
        match self {
            Column::Stage => "stage",
            Column::Count => "count",
            Column::P50 => "p50 µs",
            Column::P99 => "p99 µs",
            Column::P999 => "p99.9 µs",
            Column::Max => "max µs",
            Column::Misses => "misses",
            Column::Sla => "sla",
            Column::Trend => "p99 trend",
        }
    }

    /// The figure compared when sorting by this column (the trend sorts by its latest p99).
    fn sort_key(self, row: &StageRow) -> (u64, String) {
        let n = match self {
            Column::Stage => return (0, row.key()),
            Column::Count => row.count,
            Column::P50 => row.p50_ns,
            Column::P99 | Column::Trend => row.p99_ns,
            Column::P999 => row.p999_ns,
            Column::Max => row.max_ns,
            Column::Misses => row.deadline_misses,
            Column::Sla => sla_rank(&row.sla.state),
        };
        (n, String::new())
    }

    fn step(self, by: isize) -> Column {
        let n = Column::ALL.len() as isize;
        let at = Column::ALL.iter().position(|c| *c == self).unwrap_or(0) as isize;
        Column::ALL[(at + by).rem_euclid(n) as usize]
    }
}

/// `critical` above `warning` above `ok` (an unknown state counts as ok).
fn sla_rank(state: &str) -> u64 {
    match state {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

/// How the table is sorted: document order (stage registration order) until a column is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// The column, `None` for document order.
    pub column: Option<Column>,
    /// Largest (or last by name) first.
    pub descending: bool,
}

/// A failed poll: what went wrong, and since when polls have been failing.
#[derive(Debug, Clone)]
pub struct Failure {
    /// One line: no answer, a refusal, garbage.
    pub message: String,
    /// The first failure of this run of failures.
    pub since: Instant,
}

/// Everything the view draws.
#[derive(Debug)]
pub struct State {
    /// Where the stats come from.
    pub url: String,
    /// The window asked for (`None`: the process's default).
    pub window: Option<String>,
    /// The table's order.
    pub sort: Sort,
    /// The last document read, kept while polls fail.
    pub doc: Option<Document>,
    /// When `doc` was read.
    pub read_at: Option<Instant>,
    /// Set while polls fail; cleared by the next good one.
    pub failure: Option<Failure>,
    /// How often the process is asked (and retried when it fails).
    pub poll_every: Duration,
    /// Rows scrolled past at the top of the table.
    pub scroll: usize,
    /// p99 readings per (window, stage key), oldest first.
    history: HashMap<(String, String), VecDeque<u64>>,
}

impl State {
    /// Nothing read yet.
    pub fn new(url: String, window: Option<String>) -> Self {
        State {
            url,
            window,
            sort: Sort {
                column: None,
                descending: true,
            },
            doc: None,
            read_at: None,
            failure: None,
            poll_every: Duration::from_secs(1),
            scroll: 0,
            history: HashMap::new(),
        }
    }

    /// Takes a poll's outcome: a good document replaces the last and extends the histories; a
    /// failure is remembered (the last document stays on screen, marked stale).
    pub fn apply(&mut self, outcome: Result<Vec<u8>, String>, now: Instant) {
        match outcome.and_then(|body| parse_document(&body)) {
            Ok(doc) => {
                self.remember_p99(&doc);
                self.doc = Some(doc);
                self.read_at = Some(now);
                self.failure = None;
            }
            Err(message) => {
                let since = self.failure.as_ref().map_or(now, |f| f.since);
                self.failure = Some(Failure { message, since });
            }
        }
    }

    /// Extends the histories of the document's window; a series gone from it loses its own
    /// (so `top` holds at most the process's series times its windows, however many come and
    /// go).
    fn remember_p99(&mut self, doc: &Document) {
        let present: HashSet<String> = doc.stages.iter().map(StageRow::key).collect();
        self.history
            .retain(|(window, key), _| *window != doc.window || present.contains(key));
        for row in &doc.stages {
            let readings = self
                .history
                .entry((doc.window.clone(), row.key()))
                .or_default();
            if readings.len() == HISTORY_LEN {
                readings.pop_front();
            }
            readings.push_back(row.p99_ns);
        }
    }

    /// The p99 readings kept for `row` in the shown window, oldest first.
    pub fn p99_history(&self, row: &StageRow) -> Vec<u64> {
        let Some(doc) = &self.doc else {
            return Vec::new();
        };
        self.history
            .get(&(doc.window.clone(), row.key()))
            .map_or_else(Vec::new, |h| h.iter().copied().collect())
    }

    /// The rows of the last document in the chosen order.
    pub fn rows(&self) -> Vec<&StageRow> {
        let Some(doc) = &self.doc else {
            return Vec::new();
        };
        let mut rows: Vec<&StageRow> = doc.stages.iter().collect();
        if let Some(column) = self.sort.column {
            // A stable sort: equal figures keep document order.
            rows.sort_by(|a, b| {
                let order = column.sort_key(a).cmp(&column.sort_key(b));
                if self.sort.descending {
                    order.reverse()
                } else {
                    order
                }
            });
        }
        rows
    }

    /// Sorts by the next (`by` 1) or previous (`by` -1) column, from document order.
    pub fn sort_step(&mut self, by: isize) {
        self.sort.column = Some(match self.sort.column {
            Some(c) => c.step(by),
            None if by < 0 => Column::ALL[Column::ALL.len() - 1],
            None => Column::ALL[0],
        });
    }

    /// Scrolls the table by `by` rows (negative: up), within its rows.
    pub fn scroll_by(&mut self, by: isize) {
        let rows = self.doc.as_ref().map_or(0, |d| d.stages.len());
        self.scroll = self
            .scroll
            .saturating_add_signed(by)
            .min(rows.saturating_sub(1));
    }

    /// How old the shown document is.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.read_at.map(|t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(rows: &[(&str, u64, &str)]) -> Vec<u8> {
        let stages: Vec<String> = rows
            .iter()
            .map(|(name, p99, sla)| {
                format!(
                    r#"{{"name":"{name}","labels":{{}},"count":1,"p50_ns":1,"p99_ns":{p99},
                    "p999_ns":1,"max_ns":1,"deadline_misses":0,"sla":{{"state":"{sla}","rule":null}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"version":1,"window":"1s","windows":["1s"],"cycle":1,"stages":[{}],
            "guard_trips":[],"health":{{"records":0,"dropped":0,"in_rings":0,"rings":0,
            "lag_ns":0,"sampling_rate":1.0,"enabled":true}}}}"#,
            stages.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn totals_read_as_sigma_and_series_by_their_labels() {
        let row = |json: &str| -> StageRow {
            serde_json::from_str(&format!(
                r#"{{"name":"req","labels":{{"verb":"post"}},"count":1,"p50_ns":1,"p99_ns":1,
                "p999_ns":1,"max_ns":1,"deadline_misses":0,"sla":{{"state":"ok","rule":null}}{json}}}"#
            ))
            .unwrap()
        };
        assert_eq!(row("").key(), "req{verb=post}");
        assert_eq!(row(r#","total":false"#).key(), "req{verb=post}");
        // A name total (the document's `total`) and a family total both read as Σ.
        assert_eq!(row(r#","total":true"#).key(), "Σ req");
        assert_eq!(row(r#","family_total":true,"total":true"#).key(), "Σ req");
    }

    #[test]
    fn sorting_by_a_column_orders_rows_and_ties_keep_document_order() {
        let mut state = State::new("u".into(), None);
        let now = Instant::now();
        state.apply(
            Ok(doc(&[
                ("a", 5, "ok"),
                ("b", 9, "critical"),
                ("c", 5, "warning"),
            ])),
            now,
        );
        let names = |s: &State| s.rows().iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&state), ["a", "b", "c"]);
        state.sort.column = Some(Column::P99);
        assert_eq!(names(&state), ["b", "a", "c"]);
        state.sort.descending = false;
        assert_eq!(names(&state), ["a", "c", "b"]);
        state.sort.column = Some(Column::Sla);
        assert_eq!(names(&state), ["a", "c", "b"]);
        state.sort_step(-1);
        assert_eq!(state.sort.column, Some(Column::Misses));
    }

    #[test]
    fn a_failure_keeps_the_last_document_and_its_first_time() {
        let mut state = State::new("u".into(), None);
        let t0 = Instant::now();
        state.apply(Ok(doc(&[("a", 5, "ok")])), t0);
        state.apply(Ok(doc(&[("a", 7, "ok")])), t0);
        let t1 = t0 + Duration::from_secs(1);
        state.apply(Err("refused".into()), t1);
        state.apply(Ok(b"{\"version\":2}".to_vec()), t1 + Duration::from_secs(1));
        let failure = state.failure.clone().unwrap();
        assert_eq!(failure.since, t1);
        assert!(
            failure.message.contains("not a /stats document"),
            "{}",
            failure.message
        );
        let row = state.rows()[0].clone();
        assert_eq!(state.p99_history(&row), [5, 7]);
        // A series gone from the window loses its history; one that comes back starts afresh.
        state.apply(Ok(doc(&[("b", 1, "ok")])), t1);
        state.apply(Ok(doc(&[("a", 9, "ok")])), t1);
        assert_eq!(state.p99_history(&row), [9]);
        assert_eq!(state.history.len(), 1);
        assert!(parse_document(br#"{"version":2,"window":"1s","windows":[],"cycle":0,"stages":[],"guard_trips":[],"health":{"records":0,"dropped":0,"in_rings":0,"rings":0,"lag_ns":0,"sampling_rate":1.0,"enabled":true}}"#).unwrap_err().contains("version 2"));
    }
}
