//! The cardinality run's judge: a table of small checks over what the run measured and what the
//! producers recorded themselves.

use std::collections::BTreeSet;
use std::time::Instant;

use laptime::{CollectorHandle, Rank, Snapshot, StageStats, Window};

use super::produce::Plan;
use super::{CardinalityArgs, Ended, Monitor, Query, Sample, Targets, ms, time_queries};
use crate::reference::nearest_rank;
use crate::report::{Report, ns, percentile};
use crate::rss;

/// Runs every check and files the figures.
pub(super) fn judge(
    args: &CardinalityArgs,
    plan: &Plan,
    handle: &CollectorHandle,
    monitor: Monitor<'_>,
    ended: &Ended<'_>,
    report: &mut Report,
) {
    report.samples(&serde_json::json!({
        "seconds": &monitor.samples,
        "queries": &monitor.queries,
    }));
    let mut targets = TargetChecks {
        mode: args.targets,
        missed: Vec::new(),
    };
    memory(args, plan, &monitor.samples, ended, &mut targets, report);
    aggregator(args, &monitor, &mut targets, report);
    queries(args, &monitor, &mut targets, report);
    let snap = handle.snapshot();
    health(plan, &snap, &mut targets, report);
    targets.finish(report);
    rate(args, ended, report);
    counts(plan, &snap, ended, report);
    lookups(plan, ended, report);
    percentiles(args, plan, &snap, ended, report);
    top_k(plan, &snap, report);
}

/// The targets: a check each under `--targets enforce`, a reported figure otherwise.
struct TargetChecks {
    mode: Targets,
    missed: Vec<String>,
}

impl TargetChecks {
    /// `measured <= bound` (a NaN, nothing measured, misses).
    fn at_most(
        &mut self,
        report: &mut Report,
        name: &str,
        measured: f64,
        bound: f64,
        unit: &str,
        detail: Option<String>,
    ) {
        let passed = measured <= bound;
        report.figure(name, measured);
        if self.mode == Targets::Enforce {
            report.check(name, passed, measured, format!("<= {bound} {unit}"), detail);
        } else if !passed {
            println!(
                "  target missed (reported, not checked): {name} = {measured} (bound <= {bound} {unit})"
            );
            self.missed.push(name.to_owned());
        }
    }

    fn finish(self, report: &mut Report) {
        if self.mode == Targets::Report {
            report.figure("targets_missed", self.missed);
        }
    }
}

/// Peak memory within the bound, flat over the second half, and what a series costs.
fn memory(
    args: &CardinalityArgs,
    plan: &Plan,
    samples: &[Sample],
    ended: &Ended<'_>,
    targets: &mut TargetChecks,
    report: &mut Report,
) {
    let hwm = samples.iter().map(|s| s.mem.hwm_kib).max().unwrap_or(0);
    let hwm_mib = (hwm as f64 / 102.4).round() / 10.0;
    targets.at_most(
        report,
        "vm_hwm_mib",
        hwm_mib,
        args.max_rss_mib as f64,
        "MiB",
        None,
    );
    let half = samples.last().map_or(0.0, |s| s.t_secs / 2.0);
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t_secs >= half)
        .map(|s| (s.t_secs, s.mem.rss_kib as f64))
        .collect();
    let slope = rss::slope(&points).map_or(f64::NAN, |s| (s * 600.0).round() / 10.0);
    targets.at_most(
        report,
        "rss_slope_second_half_kib_per_min",
        slope,
        args.max_rss_slope_kib_per_min,
        "KiB/min",
        Some(format!("{} samples from {half:.0} s", points.len())),
    );
    let b = ended.baseline;
    let last = samples.last().map_or(b.before, |s| s.mem);
    let series = plan.series().max(1) as f64;
    let per_series =
        |kib: u64, base: u64| (kib.saturating_sub(base) as f64 / series * 100.0).round() / 100.0;
    report.figure("rss_before_series_kib", b.before.rss_kib);
    report.figure("rss_series_resolved_kib", b.resolved.rss_kib);
    report.figure("rss_last_kib", last.rss_kib);
    report.figure(
        "rss_per_series_kib",
        per_series(last.rss_kib, b.before.rss_kib),
    );
    report.figure(
        "rss_per_empty_series_kib",
        per_series(b.resolved.rss_kib, b.before.rss_kib),
    );
    let heap_last = samples.last().map_or(0, |s| s.heap_live_kib);
    report.figure(
        "heap_per_series_kib",
        per_series(heap_last, b.heap_before as u64 / 1024),
    );
    report.figure(
        "heap_per_empty_series_kib",
        per_series(b.heap_resolved as u64 / 1024, b.heap_before as u64 / 1024),
    );
}

/// Cycle time and lag at p99 over every cycle of the run.
fn aggregator(
    args: &CardinalityArgs,
    monitor: &Monitor<'_>,
    targets: &mut TargetChecks,
    report: &mut Report,
) {
    let interval_ms = args.interval_ms as f64;
    let mut c = monitor
        .cycles
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    report.figure("cycles_seen", c.cycle_us.len());
    report.figure("cycles_unrecorded", c.unrecorded);
    let max_cycle = c.cycle_us.iter().copied().max().unwrap_or(0);
    let max_lag = c.lag_us.iter().copied().max().unwrap_or(0);
    let cycle_p99 = percentile(&mut c.cycle_us, 990).unwrap_or(0) as f64 / 1_000.0;
    let lag_p99 = percentile(&mut c.lag_us, 990).unwrap_or(0) as f64 / 1_000.0;
    report.figure(
        "cycle_p50_ms",
        percentile(&mut c.cycle_us, 500).unwrap_or(0) as f64 / 1_000.0,
    );
    report.figure(
        "lag_p50_ms",
        percentile(&mut c.lag_us, 500).unwrap_or(0) as f64 / 1_000.0,
    );
    report.figure("cycle_max_ms", max_cycle as f64 / 1_000.0);
    report.figure("lag_max_ms", max_lag as f64 / 1_000.0);
    let cycle_bound = args.max_cycle_p99_ms.unwrap_or(interval_ms);
    targets.at_most(report, "cycle_p99_ms", cycle_p99, cycle_bound, "ms", None);
    let lag_bound = args.max_lag_p99_ms.unwrap_or(2.0 * interval_ms);
    targets.at_most(report, "lag_p99_ms", lag_p99, lag_bound, "ms", None);
}

/// `get_all_stats` and the exposition under load (median of the timings) and once quiet.
fn queries(
    args: &CardinalityArgs,
    monitor: &Monitor<'_>,
    targets: &mut TargetChecks,
    report: &mut Report,
) {
    let median = |f: fn(&Query) -> f64| {
        let mut us: Vec<u64> = monitor
            .queries
            .iter()
            .map(|q| (f(q) * 1e3) as u64)
            .collect();
        percentile(&mut us, 500).map_or(f64::NAN, |v| v as f64 / 1e3)
    };
    let max = |f: fn(&Query) -> f64| monitor.queries.iter().map(f).fold(0.0, f64::max);
    report.figure("query_timings", monitor.queries.len());
    let stats = median(|q| q.get_all_stats_ms);
    let n = Some(format!(
        "median of {} timings under load",
        monitor.queries.len()
    ));
    targets.at_most(
        report,
        "get_all_stats_ms_p50",
        stats,
        args.max_get_all_stats_ms,
        "ms",
        n.clone(),
    );
    report.figure("get_all_stats_ms_max", max(|q| q.get_all_stats_ms));
    let quiet = time_queries(monitor.handle, monitor.exporter, Instant::now());
    report.figure("get_all_stats_ms_quiet", quiet.get_all_stats_ms);
    if monitor.exporter.is_none() {
        return;
    }
    let render = median(|q| q.render_ms);
    targets.at_most(report, "render_ms_p50", render, args.max_render_ms, "ms", n);
    report.figure("render_ms_max", max(|q| q.render_ms));
    report.figure("render_ms_quiet", quiet.render_ms);
    report.figure("render_bytes", quiet.render_bytes);
}

/// The producers kept their schedule: the run is the load it claims.
fn rate(args: &CardinalityArgs, ended: &Ended<'_>, report: &mut Report) {
    let sent: u64 = ended
        .produced
        .iter()
        .map(|p| p.counts.iter().sum::<u64>())
        .sum();
    let skipped: u64 = ended.produced.iter().map(|p| p.skipped).sum();
    let per_sec = (sent as f64 / ended.elapsed.as_secs_f64()).round();
    report.figure("records_sent", sent);
    report.figure("records_skipped_behind_schedule", skipped);
    let floor = (args.rate as f64 * 0.95).round();
    report.check(
        "records_per_sec",
        per_sec >= floor,
        per_sec,
        format!(">= {floor} (95 % of --rate)"),
        None,
    );
    let resolve = ended
        .produced
        .iter()
        .map(|p| p.resolve)
        .max()
        .unwrap_or_default();
    report.figure("series_resolve_ms", ms(resolve));
}

/// The library's own accounting after the final flush.
fn health(plan: &Plan, snap: &Snapshot, targets: &mut TargetChecks, report: &mut Report) {
    let h = &snap.health;
    targets.at_most(report, "dropped", h.dropped as f64, 0.0, "records", None);
    report.equal("final.in_rings", h.in_rings, 0);
    report.equal(
        "final.produced",
        h.produced,
        h.records + h.dropped + h.in_rings,
    );
    report.equal("final.series", h.series as u64, plan.series() as u64);
    report.equal("final.series_overflowed", h.series_overflowed, 0);
    report.figure("records_aggregated", h.records);
    // After the final flush: every series refreshed (a cycle's own figure may lag for series
    // not yet visited).
    report.figure("histogram_bytes", h.histogram_bytes);
    report.figure(
        "histogram_bytes_per_series",
        (h.histogram_bytes as f64 / plan.series().max(1) as f64).round(),
    );
}

/// Every record a producer sent is in its series' cumulative count or counted as dropped there,
/// and each family total holds the sum.
fn counts(plan: &Plan, snap: &Snapshot, ended: &Ended<'_>, report: &mut Report) {
    let stages = plan.families.len();
    let mut totals = vec![0u64; stages];
    let (mut wrong, mut checked, mut first) = (0u64, 0u64, None);
    for p in ended.produced {
        for (h, (&stage, &count)) in p.handles.iter().zip(&p.counts).enumerate() {
            totals[h % stages] += count;
            checked += 1;
            let (got, dropped) = snap
                .stats(stage, Window::Cumulative)
                .map_or((0, 0), |s| (s.count, s.dropped));
            if got + dropped != count {
                wrong += 1;
                first.get_or_insert_with(|| {
                    format!("{stage}: count {got} + dropped {dropped}, sent {count}")
                });
            }
        }
    }
    report.check(
        "every_series_count_plus_dropped_eq_sent",
        wrong == 0 && checked == plan.series() as u64,
        format!("{wrong} of {checked} series differ"),
        format!("0 of {} differ", plan.series()),
        first,
    );
    for (family, total) in plan.families.iter().zip(totals) {
        let got = snap
            .stats(family.total(), Window::Cumulative)
            .map_or(0, |s| s.count + s.dropped);
        report.equal(
            &format!("final.{}.total_count_plus_dropped", family.name()),
            got,
            total,
        );
    }
}

/// Every series found again from its label value (the uncached lookup), and what that costs.
fn lookups(plan: &Plan, ended: &Ended<'_>, report: &mut Report) {
    let stages = plan.families.len();
    let (mut found, mut n) = (0u64, 0u64);
    let t = Instant::now();
    for p in ended.produced {
        for (h, &stage) in p.handles.iter().enumerate() {
            let pair = plan.symbols[p.own[h / stages]].as_str();
            n += 1;
            found += u64::from(plan.families[h % stages].series(&[pair]) == Ok(stage));
        }
    }
    let took = t.elapsed();
    report.equal("every_series_found_by_label_value", found, n);
    report.figure(
        "uncached_lookup_ns_mean_one_cold_pass",
        (ns(took) as f64 / n.max(1) as f64).round(),
    );
}

/// Sampled series: min and max exact, each percentile within the stated relative error of the
/// nearest-rank value of the series' sorted values.
fn percentiles(
    args: &CardinalityArgs,
    plan: &Plan,
    snap: &Snapshot,
    ended: &Ended<'_>,
    report: &mut Report,
) {
    let stages = plan.families.len();
    let (mut worst, mut figures, mut extremes_wrong, mut first) = (0.0f64, 0u64, 0u64, None);
    // A series that dropped records holds an unknown subset of the values sent: no reference.
    let mut with_drops = 0u64;
    for p in ended.produced {
        for (index, values) in &p.values {
            let j = p.own.iter().position(|&s| s == index / stages).unwrap_or(0);
            let stage = p.handles[j * stages + index % stages];
            let Some(s) = snap.stats(stage, Window::Cumulative) else {
                extremes_wrong += 1;
                continue;
            };
            if s.dropped > 0 {
                with_drops += 1;
                continue;
            }
            let mut sorted: Vec<u64> = values.iter().map(|&v| u64::from(v)).collect();
            sorted.sort_unstable();
            if sorted.is_empty() {
                continue;
            }
            let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
            if (ns(s.min), ns(s.max)) != (min, max) {
                extremes_wrong += 1;
                first.get_or_insert_with(|| {
                    format!(
                        "{stage}: min/max {:?}/{:?}, sorted {min}/{max} ns",
                        s.min, s.max
                    )
                });
            }
            for (per_mille, got) in quantiles(s) {
                let exact = sorted[nearest_rank(per_mille, sorted.len() as u64) as usize - 1];
                let error = (ns(got) as f64 - exact as f64).abs() / exact.max(1) as f64;
                worst = worst.max(error);
                figures += 1;
            }
        }
    }
    if figures == 0 && with_drops > 0 {
        first.get_or_insert_with(|| {
            format!("all {with_drops} sampled series dropped records: nothing to compare with")
        });
    }
    report.check(
        "sampled_min_max_exact",
        extremes_wrong == 0 && figures > 0,
        format!("{extremes_wrong} series differ ({figures} percentiles compared)"),
        "0 differ, at least 1 percentile compared",
        first,
    );
    report.figure("sampled_percentiles_compared", figures);
    report.figure("sampled_series_left_out_for_drops", with_drops);
    report.at_most(
        "sampled_worst_relative_error",
        worst,
        args.max_relative_error,
        "(relative)",
    );
}

fn quantiles(s: &StageStats) -> [(u64, std::time::Duration); 5] {
    [
        (500, s.p50),
        (900, s.p90),
        (950, s.p95),
        (990, s.p99),
        (999, s.p999),
    ]
}

/// Each family's top-k by p99 (k = the slow symbols) names exactly the slow symbols.
fn top_k(plan: &Plan, snap: &Snapshot, report: &mut Report) {
    let slow: BTreeSet<&str> = plan
        .symbols
        .iter()
        .zip(&plan.slow)
        .filter(|(_, slow)| **slow)
        .map(|(s, _)| s.as_str())
        .collect();
    if slow.is_empty() {
        println!("note: no slow symbol (--slow-every above --symbols): the top-k is not checked");
        return;
    }
    for family in &plan.families {
        let t = Instant::now();
        let top = family.top(snap, Window::Cumulative, Rank::Quantile(0.99), slow.len());
        report.figure(&format!("{}.top_k_ms", family.name()), ms(t.elapsed()));
        let named: BTreeSet<&str> = top
            .iter()
            .filter_map(|s| s.labels.first().map(|(_, v)| *v))
            .collect();
        report.check(
            format!(
                "{}.top_{}_by_p99_are_the_slow_symbols",
                family.name(),
                slow.len()
            ),
            named == slow,
            named.iter().copied().collect::<Vec<_>>().join(","),
            format!("== {}", slow.iter().copied().collect::<Vec<_>>().join(",")),
            None,
        );
    }
}
