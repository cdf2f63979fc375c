//! What does the Prometheus export cost: on the hot path, per drained record in the aggregator, and
//! per scrape?
//!
//! Every question is answered A/B in one process: the same bench runs on a collector without an
//! exporter and on one with an exporter attached (`CollectorBuilder::with_prometheus`), in that
//! order (`LAPTIME_BENCH_EXPORTER_FIRST=1` swaps it), and each group also times a bare TSC pair,
//! so the figures compare as ratios in the same run (the two vCPUs are shared and noisy). Compare
//! with `benches/hot_path.rs` and `benches/aggregator.rs`, built without the feature, in the same
//! session. Figures, machine and commands: `benches/README.md`, "Prometheus export".
//!
//! * `span`: `let _g = laptime::start(stage)`, in chunks with an untimed flush between chunks
//!   (`common::timed_in_chunks`, as in `hot_path.rs`), so every record is kept. The exporter adds
//!   nothing here by design: the recorder never sees it.
//! * `drain`: write `N` records over 64 stages (untimed), then time `laptime::flush()`, one full
//!   aggregation cycle (as in `aggregator.rs`). With an exporter, each record also costs a bucket
//!   lookup (a table lookup and a comparison) and one counter, and each cycle hands the exporter
//!   the stages that moved. Throughput is `N`, so criterion prints records/s. `drain_one_window`
//!   is the same with one 1 s window of one slice.
//! * `scrape`: `exporter.render()` of 64 stages (histograms, counters, health), with and without
//!   windowed quantiles, beside `render_openmetrics()` and (feature `prometheus-native`)
//!   `render_protobuf()` of the same figures; and of 20 000 series (4 families × 5 000 symbols, ~20 values each)
//!   beside the prometheus crate's own path for the same registry (`gather` then its
//!   `TextEncoder`), which the export used before it wrote its histograms itself.

use std::hint::black_box;
use std::time::{Duration, Instant};

mod common;

use common::{DrainLoad, stages, timed_flushes, timed_in_chunks, tsc};
use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use laptime::export::prometheus::PrometheusExporter;
use laptime::{Collector, CollectorBuilder, CollectorHandle, Stage, Window, WindowSpec};

/// Stages the drain and scrape groups spread records over.
const STAGES: usize = 64;
/// Records per timed flush: 1 000 per stage, below the aggregator's per-ring batch (16 384 per
/// visit, visited again while full) and far below half a ring, so one flush drains them all and no
/// early wake-up runs a cycle for us.
const N: usize = 64_000;
/// Ring capacity, in records.
const RING: usize = 1 << 20;

/// Installs the process's collector, with `exporter` attached if given.
fn install(exporter: Option<&PrometheusExporter>, interval: Duration) -> CollectorHandle {
    install_with(exporter, interval, Collector::builder())
}

/// [`install`] from `builder`.
fn install_with(
    exporter: Option<&PrometheusExporter>,
    interval: Duration,
    builder: CollectorBuilder,
) -> CollectorHandle {
    let builder = builder.with_ring_capacity(RING).with_interval(interval);
    let builder = match exporter {
        Some(e) => builder.with_prometheus(e.clone()),
        None => builder,
    };
    builder
        .install()
        .expect("the bench installs one collector at a time")
}

fn exporter(window_quantiles: bool) -> PrometheusExporter {
    exporter_with(window_quantiles, false)
}

/// With `native` (feature `prometheus-native`), native histograms at the default schema beside
/// the classic buckets.
fn exporter_with(window_quantiles: bool, native: bool) -> PrometheusExporter {
    let builder = PrometheusExporter::builder()
        .with_namespace("mm")
        .with_const_label("env", "bench")
        .with_window_quantiles(window_quantiles);
    #[cfg(feature = "prometheus-native")]
    let builder = if native {
        builder.with_native_histograms(laptime::export::prometheus::NativeHistograms::default())
    } else {
        builder
    };
    assert!(
        !native || cfg!(feature = "prometheus-native"),
        "native histograms need feature prometheus-native"
    );
    builder.build().expect("valid exporter configuration")
}

/// Deterministic durations spread log-uniformly over 1 µs – 10 ms (xorshift64*): every bucket
/// of the 1-2-5 ladder in that range is hit, so the bucket lookup is not always the same one.
fn durations(n: usize, seed: u64) -> Vec<Duration> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let u = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            Duration::from_nanos((1_000.0 * 1e4f64.powf(u)) as u64)
        })
        .collect()
}

/// Without an exporter, then with one; `LAPTIME_BENCH_EXPORTER_FIRST=1` swaps the order, to see
/// how much of a difference is the order the variants run in (a warmer heap, a busier sibling).
fn variants() -> [bool; 2] {
    if std::env::var_os("LAPTIME_BENCH_EXPORTER_FIRST").is_some() {
        [true, false]
    } else {
        [false, true]
    }
}

/// The two clock baselines, first in every group.
fn baselines(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.bench_function("baseline/tsc_pair", |b| {
        b.iter(|| (black_box(tsc()), black_box(tsc())))
    });
    g.bench_function("baseline/instant_pair", |b| {
        b.iter(|| (black_box(Instant::now()), black_box(Instant::now())))
    });
}

/// The cumulative count of `stage` in the exporter's text: the sanity check that the exporter is
/// really fed.
fn exported_count(exporter: &PrometheusExporter, stage: Stage) -> u64 {
    let text = exporter.render().expect("render");
    let prefix = format!("mm_stage_duration_seconds_count{{stage=\"{stage}\",env=\"bench\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.parse().expect("a count"))
}

/// `let _g = laptime::start(stage)` without and with an exporter attached.
fn span(c: &mut Criterion) {
    let stage = Stage::new("bench_prom_span").expect("valid name");
    let timed = |iters: u64| {
        timed_in_chunks(iters, 1, || {
            let _g = laptime::start(black_box(stage));
        })
    };
    let mut g = c.benchmark_group("span");
    baselines(&mut g);
    for with in variants() {
        let exporter = exporter(false);
        let handle = install(with.then_some(&exporter), Duration::from_millis(10));
        for _ in 0..100 {
            let _g = laptime::start(stage);
        }
        assert!(handle.flush());
        assert_eq!(
            handle.get_stats(stage, Window::Cumulative).map(|s| s.count),
            Some(100),
            "the spans are recorded"
        );
        assert_eq!(exported_count(&exporter, stage), if with { 100 } else { 0 });
        let name = if with {
            "guard/stage/exporter"
        } else {
            "guard/stage/no_exporter"
        };
        g.bench_function(name, |b| b.iter_custom(timed));
        drop(handle);
    }
    g.finish();
}

/// One aggregation cycle draining `N` records into 64 stages, without and with an exporter, with
/// the default windows (`drain`, as in `aggregator.rs`).
fn drain(c: &mut Criterion) {
    drain_group(c, "drain", Collector::builder);
}

/// The same with a single 1 s window of one slice (`drain_one_window`): the windows' slices then
/// no longer fill (and allocate) one after another while the bench runs, which makes the
/// wide-values figure noisy; what is left is closer to the exporter's own cost per record.
fn drain_one_window(c: &mut Criterion) {
    drain_group(c, "drain_one_window", || {
        Collector::builder().with_windows([WindowSpec::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
        )])
    });
}

fn drain_group(c: &mut Criterion, group: &str, builder: fn() -> CollectorBuilder) {
    let load = DrainLoad::new(stages("bench_prom_drain", STAGES), durations(N, 99));
    let mut g = c.benchmark_group(group);
    baselines(&mut g);
    for with in variants() {
        let exporter = exporter(false);
        let handle = install_with(
            with.then_some(&exporter),
            Duration::from_secs(60),
            builder(),
        );
        // Sanity: one flush drains all N records, and the exporter (if any) counts them all.
        load.assert_one_flush_drains_all();
        let per_stage = 2 * (N / STAGES) as u64;
        assert_eq!(
            exported_count(&exporter, load.stages[0]),
            if with { per_stage } else { 0 }
        );
        let tag = if with { "exporter" } else { "no_exporter" };
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("cycle_empty/{tag}"), |b| {
            b.iter_custom(|iters| timed_flushes(iters, &|| ()))
        });
        g.throughput(Throughput::Elements(N as u64));
        g.bench_function(format!("values_64_stages/{tag}"), |b| {
            b.iter_custom(|iters| timed_flushes(iters, &|| load.write_values()))
        });
        g.bench_function(format!("spans_64_stages/{tag}"), |b| {
            b.iter_custom(|iters| timed_flushes(iters, &|| load.write_spans()))
        });
        drop(handle);
    }
    g.finish();
}

/// `exporter.render()` of 64 active stages.
fn scrape(c: &mut Criterion) {
    let stages = stages("bench_prom_scrape", STAGES);
    let mut g = c.benchmark_group("scrape");
    baselines(&mut g);
    let mut variants = vec![(false, false), (true, false)];
    // Native histograms where the feature is on: their protobuf carries both kinds of buckets.
    if cfg!(feature = "prometheus-native") {
        variants.push((false, true));
    }
    for (window_quantiles, native) in variants {
        let exporter = exporter_with(window_quantiles, native);
        let handle = install(Some(&exporter), Duration::from_secs(60));
        for (i, d) in durations(N, 7).into_iter().enumerate() {
            laptime::record(stages[i % STAGES], d);
        }
        assert!(handle.flush());
        let text = exporter.render().expect("render");
        assert_eq!(exported_count(&exporter, stages[0]), (N / STAGES) as u64);
        let om = exporter.render_openmetrics().expect("render");
        assert!(om.ends_with("# EOF\n"));
        #[cfg(feature = "prometheus-native")]
        let protobuf = exporter.render_protobuf().expect("render").len();
        #[cfg(not(feature = "prometheus-native"))]
        let protobuf = 0;
        println!(
            "scrape, 64 stages, window quantiles {window_quantiles}, native {native}: text {} bytes, {} lines; \
             OpenMetrics {} bytes, {} lines; protobuf {protobuf} bytes",
            text.len(),
            text.lines().count(),
            om.len(),
            om.lines().count(),
        );
        let stages = match (window_quantiles, native) {
            (true, _) => "64_stages_window_quantiles",
            (false, true) => "64_stages_native",
            (false, false) => "64_stages",
        };
        g.bench_function(format!("render/{stages}"), |b| {
            b.iter(|| black_box(exporter.render()))
        });
        g.bench_function(format!("render_openmetrics/{stages}"), |b| {
            b.iter(|| black_box(exporter.render_openmetrics()))
        });
        #[cfg(feature = "prometheus-native")]
        g.bench_function(format!("render_protobuf/{stages}"), |b| {
            b.iter(|| black_box(exporter.render_protobuf()))
        });
        drop(handle);
    }
    g.finish();
}

/// `exporter.render()` of 20 000 series, and the prometheus crate's encoder on the same registry.
fn scrape_series(c: &mut Criterion) {
    use prometheus::Encoder;
    let mut g = c.benchmark_group("scrape_series");
    g.sample_size(10);
    let exporter = exporter(false);
    let handle = install(Some(&exporter), Duration::from_secs(60));
    let symbols: Vec<String> = (0..5_000).map(|i| format!("S{i:05}-USD")).collect();
    for name in [
        "bench_md_decode",
        "bench_risk_check",
        "bench_order_route",
        "bench_order_ack",
    ] {
        let family = laptime::Family::new(name, &["pair"]).expect("a new family");
        for (i, symbol) in symbols.iter().enumerate() {
            let series = family.series(&[symbol.as_str()]).expect("under the cap");
            for d in durations(20, i as u64) {
                laptime::record(series, d);
            }
        }
        assert!(handle.flush());
    }
    let text = exporter.render().expect("render");
    println!(
        "scrape, 20 000 series: {} bytes, {} lines",
        text.len(),
        text.lines().count()
    );
    g.bench_function("render/20000_series", |b| {
        b.iter(|| black_box(exporter.render()))
    });
    g.bench_function("prometheus_crate_encoder/20000_series", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(text.len());
            let families = exporter.registry().gather();
            prometheus::TextEncoder::new()
                .encode(&families, &mut out)
                .expect("encode");
            black_box(out)
        })
    });
    drop(handle);
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for group in [span, drain, drain_one_window, scrape, scrape_series] {
        group(&mut c);
    }
    c.final_summary();
}
