//! The seeds' PromQL against the demo's `--ms` export, under Debian's Prometheus: every row of
//! `docs/export.md`'s table "The seeds' queries against `Unit::Milliseconds`" is run twice, the
//! query as the seed writes it (which must answer what the table says: data, no data, or a parse
//! error) and the form the table gives (which must return data). The table is read from the doc,
//! so the doc and the test cannot drift apart.
//!
//! The demo and Prometheus run on 127.0.0.1 with bounded lifetimes and are stopped by their own
//! PIDs. Without Prometheus the test prints SKIP, unless `CI` is set: then it fails.
#![cfg(feature = "http")]

#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/live.rs"]
mod live;

use std::path::Path;
use std::time::Duration;

use http_client::wait_for;
use live::{Prometheus, TempDir, find_tool, query, skip_or_fail, start_demo};

/// One row of the table: the seed's query, what Prometheus answers, the working form.
struct Row {
    seed: String,
    answer: String,
    working: String,
}

/// The rows of the table under `heading` in `docs/export.md`.
fn table(heading: &str) -> Vec<Row> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/export.md"))
        .unwrap();
    let section = doc
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in docs/export.md"))
        .1;
    let code = |cell: &str| cell.trim().trim_matches('`').to_owned();
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and rule
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            assert_eq!(cells.len(), 3, "a row of three cells: {l}");
            Row {
                seed: code(cells[0]),
                answer: cells[1].trim().to_owned(),
                working: code(cells[2]),
            }
        })
        .collect()
}

#[test]
fn the_seeds_queries_answer_what_the_docs_say() {
    let rows = table("### The seeds' queries against `Unit::Milliseconds`");
    assert!(rows.len() >= 8, "{} rows", rows.len());
    let Some(prometheus) = find_tool("prometheus") else {
        skip_or_fail("no prometheus binary (apt-get install prometheus)");
        return;
    };
    let (_demo, _lines, endpoint) =
        start_demo(&["--seconds", "6", "--ms", "--linger", "120"], "demo --ms");
    let work = TempDir::new("laptime-seed-queries");
    let Some(prom) = Prometheus::scraping(&prometheus, work.path(), "seeds", endpoint) else {
        return;
    };
    // rate() needs two scrapes of each series; the working forms all rate or read counters.
    let ready = wait_for(Duration::from_secs(30), || {
        let r = query(prom.addr, &rows[0].working).ok()?;
        (!r.is_empty()).then_some(())
    });
    assert!(
        ready.is_some(),
        "no tick_total p95 from {}",
        rows[0].working
    );

    let mut wrong = Vec::new();
    for row in &rows {
        let seed = query(prom.addr, &row.seed);
        let as_documented = match (row.answer.split(':').next().unwrap(), &seed) {
            ("works as written", Ok(r)) => !r.is_empty(),
            ("no data", Ok(r)) => r.is_empty(),
            ("parse error", Err(e)) => e.contains("parse error"),
            _ => false,
        };
        if !as_documented {
            wrong.push(format!(
                "{}: documented {:?}, got {seed:?}",
                row.seed, row.answer
            ));
        }
        match query(prom.addr, &row.working) {
            Ok(r) if !r.is_empty() => {}
            other => wrong.push(format!("working form {}: {other:?}", row.working)),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
