//! The one table (markdown, so it pastes into benches/README.md as printed) and, under it, the
//! details a row cannot hold.

use std::fmt::Write;

use super::{Accuracy, PeerRun, RssRun};

/// One peer's two children.
pub struct Row {
    pub name: &'static str,
    pub run: Result<PeerRun, String>,
    pub rss: Result<RssRun, String>,
}

/// Where and how the run happened.
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    pub load: String,
    pub seconds: f64,
    pub quick: bool,
}

fn pct(v: f64) -> String {
    if v.abs() < 0.005 {
        "0.00 %".to_owned()
    } else {
        format!("{v:+.2} %").replace('-', "−")
    }
}

fn kept(reported: Option<u64>, produced: u64) -> String {
    match reported {
        Some(r) if produced > 0 => {
            let p = 100.0 * r as f64 / produced as f64;
            if r == produced {
                "100 %".to_owned()
            } else {
                format!("{p:.2} %")
            }
        }
        Some(_) => "–".to_owned(),
        None => "can't tell".to_owned(),
    }
}

fn p99(a: Option<&Accuracy>) -> String {
    match a {
        None => "–".to_owned(),
        Some(a) => a.error_pct[1].map_or_else(|| "none".to_owned(), pct),
    }
}

fn cells(run: &PeerRun, rss: Option<&RssRun>) -> Vec<String> {
    let ns = |c: &super::Cost| format!("{:.1} ({:.1}–{:.1})", c.median_ns, c.min_ns, c.max_ns);
    let (kept_pct, unknown) = run.kept_pct();
    let kept_cell = match (kept_pct, unknown) {
        (None, _) => "can't tell".to_owned(),
        (Some(100.0), false) => "100 %".to_owned(),
        (Some(p), false) => format!("{p:.2} %"),
        (Some(p), true) => format!("{p:.2} % (some stages: can't tell)"),
    };
    let allocs = |v: f64| {
        if v == 0.0 {
            "0".to_owned()
        } else {
            format!("{v:.3}")
        }
    };
    vec![
        run.peer.clone(),
        ns(&run.span_1),
        format!("{:.2} ×", run.span_1.ratio),
        ns(&run.span_2),
        format!("{:.2} ×", run.span_2.ratio),
        format!(
            "{} ({:+.0} ns)",
            pct(run.tick.overhead_pct),
            run.tick.overhead_ns
        )
        .replace('-', "−"),
        format!(
            "{} ({})",
            allocs(run.allocs.thread_per_span),
            allocs(run.allocs.process_per_span)
        ),
        rss.map_or("failed".to_owned(), |r| {
            format!("{:.1} MiB", r.hwm_kib as f64 / 1024.0)
        }),
        kept_cell,
        rss.map_or("failed".to_owned(), |r| {
            kept(r.burst_reported, r.burst_spans)
        }),
        rss.map_or("failed".to_owned(), |r| {
            let rate = r.flood_spans as f64 / r.flood_seconds.max(1e-9) / 1e6;
            format!("{} ({rate:.1} M/s)", kept(r.flood_reported, r.flood_spans))
        }),
        format!("{} / {}", p99(run.values.as_ref()), p99(Some(&run.spins))),
    ]
}

const HEADER: [&str; 12] = [
    "peer",
    "ns/span, 1 thread: median (min–max)",
    "÷ TSC pair",
    "ns/span, 2 threads",
    "÷ TSC pair",
    "4-stage tick of 10 µs",
    "allocs/span: hot path (process)",
    "peak RSS, 10 M spans",
    "samples kept",
    "kept of a 1 M burst",
    "kept of a flood: 2 s, 20 ms with --quick (spans made/s)",
    "p99 error: values / spins",
];

/// The whole report: header lines, the table, the details.
pub fn render(machine: &Machine, rows: &[Row]) -> String {
    let mut s = String::new();
    let first = rows.iter().find_map(|r| r.run.as_ref().ok());
    let _ = writeln!(
        s,
        "perf-compare{}: {} ({} CPUs), Linux {}, clock {} at {:.3} GHz, load {}, {:.0} s",
        if machine.quick {
            " --quick (figures meaningless)"
        } else {
            ""
        },
        machine.cpu,
        machine.cpus,
        machine.kernel,
        first.map_or("?", |r| r.clock.as_str()),
        first.map_or(0.0, |r| r.ticks_per_ns),
        machine.load,
        machine.seconds,
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| {} |", HEADER.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(HEADER.len()));
    for row in rows {
        match &row.run {
            Ok(run) => {
                let _ = writeln!(s, "| {} |", cells(run, row.rss.as_ref().ok()).join(" | "));
            }
            Err(e) => {
                let mut c = vec![row.name.to_owned(), format!("failed: {e}")];
                c.resize(HEADER.len(), String::new());
                let _ = writeln!(s, "| {} |", c.join(" | ").replace('\n', " "));
            }
        }
    }
    let _ = writeln!(s);
    details(&mut s, rows);
    s
}

fn details(s: &mut String, rows: &[Row]) {
    for row in rows {
        let Ok(run) = &row.run else { continue };
        let mut notes = Vec::new();
        let acc = |a: &Accuracy| {
            let e = |i: usize| a.error_pct[i].map_or_else(|| "none".to_owned(), pct);
            format!(
                "p50 {} · p99 {} · p99.9 {} (exact {} / {} / {} ns, {} samples)",
                e(0),
                e(1),
                e(2),
                a.exact_ns[0],
                a.exact_ns[1],
                a.exact_ns[2],
                a.samples
            )
        };
        if let Some(v) = &run.values {
            notes.push(format!("values {}", acc(v)));
        }
        notes.push(format!("spins {}", acc(&run.spins)));
        let short: Vec<String> = run
            .stages
            .iter()
            .filter(|st| st.reported != Some(st.produced))
            .map(|st| {
                format!(
                    "{} {} of {}",
                    st.stage,
                    st.reported.map_or("?".into(), |r| r.to_string()),
                    st.produced
                )
            })
            .collect();
        if !short.is_empty() {
            notes.push(format!("reported vs produced: {}", short.join(", ")));
        }
        notes.push(format!(
            "hot-path bytes/span {:.1}; TSC pair {:.1} ns (1 thread), {:.1} ns (2 threads); tick {:.0} vs {:.0} ns bare",
            run.allocs.thread_bytes_per_span,
            run.span_1.tsc_median_ns,
            run.span_2.tsc_median_ns,
            run.tick.peer_ns,
            run.tick.bare_ns
        ));
        if let Ok(r) = &row.rss {
            notes.push(format!(
                "memory: {:.1} MiB after setup, {:.1} MiB after {} spans ({} reported), {:.1} s",
                r.hwm_setup_kib as f64 / 1024.0,
                r.hwm_kib as f64 / 1024.0,
                r.spans,
                r.reported.map_or("?".into(), |c| c.to_string()),
                r.seconds
            ));
        }
        let _ = writeln!(
            s,
            "- **{}** ({:.1} s): {}",
            run.peer,
            run.seconds,
            notes.join("; ")
        );
    }
    for row in rows {
        if let Err(e) = &row.rss
            && row.run.is_ok()
        {
            let _ = writeln!(s, "- **{}** memory run failed: {e}", row.name);
        }
    }
}
