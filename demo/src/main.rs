//! A market maker's tick loop, timed with laptime: the program to copy from.
//!
//! Every tick fetches market data, prices a spread, checks the volatility guards and emits quotes
//! (one exchange request cancels the stale quotes, another posts the new ones). Each stage is
//! simulated by spinning for a drawn duration, tens of microseconds to a few milliseconds. Market
//! data arrives every millisecond, and a tick starts with each update (after a slow tick, the
//! next one starts at once with the latest update; the ones before it are skipped).
//!
//! The story its output tells:
//! 1. a warm-up of half a second with recording off: cold caches and first-time set-up are not
//!    the service's latency;
//! 2. a calm market for the first third of the run: the SLA stays `ok` (a busy machine's
//!    scheduler can still stretch a tick past its deadline now and then: the loop counts and
//!    reports such pauses);
//! 3. a volatile middle third: more late market data (3.5 % of ticks, 2–6 ms each) and guard
//!    trips; p99 and the deadline-miss rate go critical while p95 stays calm, the latency guard
//!    trips and the loop widens its quotes;
//! 4. calm again: the violations clear;
//! 5. a summary of the whole run.
//!
//! Each SLA rule judges the last second only once it holds [`MIN_TICKS`] ticks, so a handful of
//! ticks is never a verdict. The callback prints each change of a rule's state as it happens
//! (started, changed severity, cleared); the table printed every second shows the state as last
//! announced, so the two always agree.
//!
//! What it shows of the library:
//! * the split timer: `lap(TickStage::TickTotal)`, then `split` at each stage boundary (one clock
//!   read each) and `end_with` for the last stage and the total, its stages named by a
//!   `#[derive(laptime::Stage)]` enum so a misspelt stage does not compile;
//! * `#[laptime::measure]` on the exchange-request functions, each a labelled stage
//!   `exchange_req{verb, api}`, and their total `exchange_req` (every request together);
//! * guard trips the application counts itself (`vol_soft`, `vol_hard`) and the latency guard
//!   the collector trips while `tick_total` breaks its SLA;
//! * the market-maker SLA preset scaled to this demo's 40-microsecond ticks, a callback that
//!   prints violations as they start, change and clear, and a table per second read from the
//!   published snapshot;
//! * coordinated-omission correction of `tick_total` (its expected interval, `TICK_PERIOD`): a
//!   slow tick holds back the ticks that should have started while it ran, and the summary shows
//!   the corrected p99 beside the raw one (as do the profile, the report and `/metrics`);
//! * with `--listen` (features `prometheus` and `http`): the Prometheus export under the seeds'
//!   names (`mm_stage_duration_seconds{stage}`, `mm_exchange_req_seconds{verb,api}`,
//!   `mm_guard_trips_total{reason}`, `mm_deadline_miss_total{stage}`, `mm_parallel_symbols`, each
//!   with an `env` label), served on `/metrics` and `/health` while the loop runs, and the
//!   snapshot as JSON on `/stats`, which `laptime top --url http://ADDR` shows live.
//!
//! Run: `cargo run --release -p laptime-demo -- --seconds 10`
//!
//! It is a package of its own (`demo/`) so that it builds the library and nothing more: none of
//! the library's dev-dependencies. Its optional parts are features of the same names as the
//! library's:
//!
//! Scraped: `cargo run --release -p laptime-demo --features http -- --listen 127.0.0.1:9898`
//!
//! With artifacts (a perf profile, golden traces in both forms and an HTML report, as CI keeps
//! them): `cargo run --release -p laptime-demo --features config,report -- --config
//! demo/trading_tick.toml --artifacts target/demo`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use laptime::fmt;
use laptime::{
    Collector, Severity, SlaPreset, Stage, StageStats, Value, Violation, Window, presets,
};

const USAGE: &str = "\
usage: trading_tick [--seconds N] [--warm-up-ms N] [--config FILE] [--artifacts DIR]
                    [--slow STAGE=FACTOR]
                    [--listen ADDR [--env NAME] [--ms] [--native] [--linger N]]
                    [--summary-json]

Warms up for half a second (not recorded), then runs a simulated market-making tick loop for
N seconds, a tick every millisecond, printing per-stage latency percentiles, deadline misses,
SLA state and guard trips every second, then a summary.

options:
  --seconds N      how long to run, in whole seconds (1 to 86400; default 10)
  --warm-up-ms N   the unrecorded warm-up before the run, in milliseconds (0 to 60000; default
                   500). Every series is exported, at zero, from the warm-up on: a scraper whose
                   first sample falls in it sees the run from its start
  --config FILE    take the collector, deadlines, SLA rules and trace settings from a laptime
                   configuration file (demo/trading_tick.toml describes the built-in ones).
                   Needs --features config
  --artifacts DIR  at the end, write DIR/perf_profile.json, the golden traces under DIR/traces/
                   (golden_trace_<tick>.json and chrome_trace.json, which opens in Perfetto) and
                   DIR/report.html. Needs --features config,report (or trace,report)
  --slow STAGE=FACTOR
                   make one tick stage's simulated work FACTOR times longer (0.1 to 10), e.g.
                   stage_spread=1.10: a planted regression for the perf gate to find
  --listen ADDR    serve the Prometheus metrics on http://ADDR/metrics (and /health, /stats) while
                   running, e.g. 127.0.0.1:9898 (port 0: any free port; the address is printed).
                   Needs the demo built with --features http
  --env NAME       the env label on every exported series (default local), e.g. canary
  --ms             export milliseconds under the seeds' _ms names (mm_stage_duration_ms, ...)
                   instead of seconds
  --native         also keep native histograms (schema 6) and serve them as protobuf to a
                   Prometheus started with --enable-feature=native-histograms. Needs --features
                   native
  --linger N       after the run, keep serving the final figures N more seconds (0 to 3600;
                   default 0), so a scraper sees them
  --summary-json   end with one JSON line of the whole-run figures (counts, percentiles in ns,
                   deadline misses, guard trips), once the SLA rules' windows have emptied: what
                   the endpoint's histograms and counters must agree with
  --help           print this help";

/// The market-maker preset budgets a 200 ms tick; this demo's ticks are some 40 µs, and its
/// deadline is 1 000 times shorter than the preset's: 200 µs. Ticks this short spend little time
/// where the OS can preempt them, so a shared machine's scheduler seldom makes a calm second
/// look slow.
const SCALE: u32 = 1000;

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("trading_tick: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let seconds = options.seconds;
    #[cfg(feature = "http")]
    let exporter = match options
        .listen
        .map(|_| export::exporter(&options))
        .transpose()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("trading_tick: {e}");
            return ExitCode::FAILURE;
        }
    };

    let Setup {
        builder,
        sla,
        profile_name,
        tags,
    } = match setup(&options) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("trading_tick: {e}");
            return ExitCode::from(2);
        }
    };
    // Install before the first span, or the default collector starts and this one is refused.
    // The aggregator feeds the exporter after each cycle; a scrape never touches the hot path.
    #[cfg(feature = "http")]
    let builder = match &exporter {
        Some(exporter) => builder.with_prometheus(exporter.clone()),
        None => builder,
    };
    let announced = Announced::default();
    let collector = builder
        .with_sla_callback({
            let announced = announced.clone();
            // Runs on the aggregator thread, with the rules whose state started, changed severity
            // or cleared in its last cycle.
            move |violations| announced.announce(violations)
        })
        .install();
    let collector = match collector {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("trading_tick: {e}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(feature = "http")]
    let served = match (&exporter, options.listen) {
        (Some(exporter), Some(addr)) => match export::serve(exporter, addr) {
            Ok(served) => Some(served),
            Err(e) => {
                eprintln!("trading_tick: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };

    let run = Duration::from_secs(seconds);
    print_banner(&sla, options.warm_up, run);

    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let no_slowdown = Slowdown::default();
    // Warm-up: the same ticks with recording off (each span one load and a branch), so that cold
    // caches, page faults and first-time set-up do not read as the service's latency.
    laptime::set_enabled(false);
    register_stages();
    let warm_until = Instant::now() + options.warm_up;
    let mut schedule = Schedule::new(Instant::now());
    while Instant::now() < warm_until {
        schedule.wait();
        tick(&mut rng, &WARM, false, &no_slowdown);
    }
    laptime::set_enabled(true);

    // The latency guard trips while a critical violation of a tick_total rule holds: one relaxed
    // load per tick tells the hot loop to quote defensively.
    let tick_guard = laptime::stage!("tick_total").latency_breaker();
    let started = Instant::now();
    announced.start(started);
    let volatile = started + run / 3..started + run * 2 / 3;
    let mut schedule = Schedule::new(started);
    let mut quotes = QuoteCounts::default();
    let mut next_report = started + Duration::from_secs(1);
    let mut stalls_shown = STALLS.load(Ordering::Relaxed);
    #[cfg(feature = "http")]
    let mut symbols_shown = f64::NAN;
    loop {
        schedule.wait();
        let now = Instant::now();
        if now >= next_report {
            let stalls = STALLS.load(Ordering::Relaxed);
            let at = next_report.duration_since(started);
            print_live(at, &sla, &announced, stalls - stalls_shown);
            stalls_shown = stalls;
            next_report += Duration::from_secs(1);
        }
        if now >= started + run {
            break;
        }
        let market = if volatile.contains(&now) {
            &VOLATILE
        } else {
            &CALM
        };
        // A gauge write is a Prometheus atomic: done when the market changes, not every tick.
        #[cfg(feature = "http")]
        if let Some(served) = &served
            && market.parallel_symbols != symbols_shown
        {
            served.parallel_symbols.set(market.parallel_symbols);
            symbols_shown = market.parallel_symbols;
        }
        quotes.add(tick(
            &mut rng,
            market,
            tick_guard.is_tripped(),
            &options.slow,
        ));
    }
    let elapsed = started.elapsed();

    // Aggregate what the last ticks wrote before reading the whole-run figures. The same cycle
    // hands the exporter its figures, so /metrics now serves exactly what the summary shows.
    collector.flush();
    print_summary(&collector, &sla, &quotes, elapsed, schedule.skipped);
    if options.summary_json {
        // The SLA rules go on judging their sliding windows until the run's last spans have left
        // them, and a rule turning critical trips `latency_hard`: wait that out, so the figures
        // printed are final and stay what the endpoint serves.
        let judged = sla.rules.iter().filter_map(|rule| match rule.window {
            Window::Last(length) => Some(length),
            Window::Cumulative => None,
        });
        std::thread::sleep(judged.max().unwrap_or_default() + Duration::from_millis(100));
        collector.flush();
        println!("{}", summary_json(&collector));
    }
    #[cfg(feature = "http")]
    if let Some(served) = served {
        if options.linger > 0 {
            println!(
                "trading_tick: serving the final figures on http://{}/metrics for {} s more",
                served.server.local_addr(),
                options.linger
            );
            std::thread::sleep(Duration::from_secs(options.linger));
        }
        // Stops the endpoint's threads and joins them.
        drop(served);
    }
    #[cfg(all(feature = "trace", feature = "report"))]
    if let Some(dir) = &options.artifacts
        && let Err(e) = artifacts::write(&collector, dir, &profile_name, tags)
    {
        eprintln!("trading_tick: {e}");
        return ExitCode::FAILURE;
    }
    #[cfg(not(all(feature = "trace", feature = "report")))]
    let _ = (profile_name, tags);
    // Dropping the handle drains the rings one last time, stops the aggregator and joins it.
    drop(collector);
    ExitCode::SUCCESS
}

/// What the run is set up with.
struct Setup {
    builder: laptime::CollectorBuilder,
    /// The SLA the collector judges (also printed, and judged again on the whole run).
    sla: SlaPreset,
    /// The perf profile's name and tags (`--artifacts`).
    profile_name: String,
    tags: std::collections::BTreeMap<String, String>,
}

/// The built-in settings, or a configuration file's (`--config`); golden traces under
/// `--artifacts`.
fn setup(options: &Options) -> Result<Setup, String> {
    // The profile's tags: the configuration file's, then the command line's (`--env` needs
    // `--listen`, so without it a file's env tag stands).
    let tags = |mut tags: std::collections::BTreeMap<String, String>| {
        if options.listen.is_some() || !tags.contains_key("env") {
            tags.insert("env".to_owned(), options.env.clone());
        }
        if let Some(stage) = options.slow.stage {
            use laptime::StageEnum;
            let planted = format!("{}={}", stage.stage_name(), options.slow.factor);
            tags.insert("planted_slowdown".to_owned(), planted);
        }
        tags
    };
    #[cfg(feature = "config")]
    if let Some(path) = &options.config {
        let mut config = laptime::config::Config::from_path(path).map_err(|e| e.to_string())?;
        let traced = config.trace.is_some();
        if let (Some(dir), Some(trace)) = (&options.artifacts, &mut config.trace) {
            trace.output_dir = Some(dir.join("traces"));
        }
        let sla = config.sla_preset().map_err(|e| e.to_string())?;
        let builder = config.builder().map_err(|e| e.to_string())?;
        #[cfg(all(feature = "trace", feature = "report"))]
        let builder = match &options.artifacts {
            Some(dir) if !traced => builder.with_tracing(artifacts::tracing(dir)),
            _ => builder,
        };
        #[cfg(not(all(feature = "trace", feature = "report")))]
        let _ = traced;
        let profile = config.profile.unwrap_or_default();
        return Ok(Setup {
            builder,
            sla,
            profile_name: profile.name.unwrap_or_else(|| "trading_tick".to_owned()),
            tags: tags(profile.tags),
        });
    }
    let sla = demo_sla();
    let builder = Collector::builder()
        .with_sla_preset(sla.clone())
        .with_expected_interval("tick_total", TICK_PERIOD);
    #[cfg(all(feature = "trace", feature = "report"))]
    let builder = match &options.artifacts {
        Some(dir) => builder.with_tracing(artifacts::tracing(dir)),
        None => builder,
    };
    Ok(Setup {
        builder,
        sla,
        profile_name: "trading_tick".to_owned(),
        tags: tags(Default::default()),
    })
}

/// What `--artifacts` writes: a perf profile, golden traces in both forms, and an HTML report.
#[cfg(all(feature = "trace", feature = "report"))]
mod artifacts {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use laptime::trace::TraceConfig;

    /// The seeds' trace settings with the deadline scaled like the SLA (the same as the
    /// `[trace]` section of demo/trading_tick.toml).
    pub fn tracing(dir: &Path) -> TraceConfig {
        TraceConfig::new("tick_total")
            .with_sample_rate(0.2)
            .with_deadline(Duration::from_millis(200) / super::SCALE)
            .with_golden(true)
            .with_golden_interval(100)
            .with_output_dir(dir.join("traces"))
            .with_metadata("symbols", serde_json::json!(["BTCUSDT", "ETHUSDT"]))
            .with_metadata("parallel_symbols", serde_json::json!(10))
    }

    /// Writes DIR/perf_profile.json, DIR/traces/chrome_trace.json and DIR/report.html (the
    /// aggregator wrote the golden traces into DIR/traces/ as the run went).
    pub fn write(
        collector: &laptime::CollectorHandle,
        dir: &Path,
        name: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<(), String> {
        let mut profile = collector
            .profile(name)
            .map_err(|e| format!("perf profile: {e}"))?;
        profile.meta.tags = tags;
        profile.meta.git_revision = std::env::var("LAPTIME_GIT_REVISION").ok();
        let written = |path: PathBuf| {
            println!("trading_tick: wrote {}", path.display());
        };
        let path = dir.join("perf_profile.json");
        profile.write(&path).map_err(|e| e.to_string())?;
        written(path);
        let path = dir.join("traces").join("chrome_trace.json");
        collector
            .write_chrome_trace(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written(path);
        let html = laptime::report::html(&profile, None).map_err(|e| e.to_string())?;
        let path = dir.join("report.html");
        std::fs::write(&path, html).map_err(|e| format!("{}: {e}", path.display()))?;
        written(path);
        Ok(())
    }
}

/// What the command line asked for.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
struct Options {
    seconds: u64,
    warm_up: Duration,
    listen: Option<std::net::SocketAddr>,
    env: String,
    milliseconds: bool,
    /// Native histograms beside the classic buckets (`--native`).
    #[cfg_attr(not(feature = "native"), allow(dead_code))]
    native: bool,
    linger: u64,
    summary_json: bool,
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    config: Option<std::path::PathBuf>,
    #[cfg_attr(not(all(feature = "trace", feature = "report")), allow(dead_code))]
    artifacts: Option<std::path::PathBuf>,
    slow: Slowdown,
}

/// The Prometheus export and its endpoint (features `prometheus` and `http`).
#[cfg(feature = "http")]
mod export {
    use laptime::export::http::{MetricsServer, MetricsServerHandle};
    use laptime::export::prometheus::{Gauge, PrometheusExporter, Unit};

    /// The endpoint, and the gauge the tick loop sets.
    pub struct Served {
        pub server: MetricsServerHandle,
        pub parallel_symbols: Gauge,
    }

    /// The seeds' namespace `mm`, an `env` label to tell canary from baseline.
    pub fn exporter(options: &super::Options) -> Result<PrometheusExporter, String> {
        let unit = if options.milliseconds {
            Unit::Milliseconds
        } else {
            Unit::Seconds
        };
        let builder = PrometheusExporter::builder()
            .with_namespace("mm")
            .with_unit(unit)
            .with_const_label("env", options.env.as_str());
        #[cfg(feature = "native")]
        let builder = if options.native {
            builder.with_native_histograms(laptime::export::prometheus::NativeHistograms::default())
        } else {
            builder
        };
        builder.build().map_err(|e| e.to_string())
    }

    /// Starts the endpoint on `addr` (loopback unless told otherwise) and prints where it is.
    pub fn serve(
        exporter: &PrometheusExporter,
        addr: std::net::SocketAddr,
    ) -> Result<Served, String> {
        let parallel_symbols = exporter
            .gauge(
                "parallel_symbols",
                "Symbols the market maker quotes in parallel.",
            )
            .map_err(|e| e.to_string())?;
        let server = MetricsServer::builder()
            .with_addr(addr)
            .start(exporter.clone())
            .map_err(|e| e.to_string())?;
        println!(
            "trading_tick: serving http://{0}/metrics and http://{0}/health",
            server.local_addr()
        );
        Ok(Served {
            server,
            parallel_symbols,
        })
    }
}

/// `Ok(None)` for `--help`; an error message for anything it does not understand.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut seconds = 10;
    let mut warm_up = WARM_UP;
    let mut listen = None;
    let mut env = None;
    let mut milliseconds = false;
    let mut native = false;
    let mut linger = None;
    let mut summary_json = false;
    let mut config = None;
    let mut artifacts = None;
    let mut slow = Slowdown::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" => return Ok(None),
            "--listen" => {
                let value = args
                    .next()
                    .ok_or("--listen needs an address, e.g. --listen 127.0.0.1:9898")?;
                if !cfg!(feature = "http") {
                    return Err("--listen needs --features http: cargo run --release -p \
                                laptime-demo --features http -- --listen 127.0.0.1:9898"
                        .to_owned());
                }
                listen = Some(value.parse().map_err(|_| {
                    format!(
                        "--listen takes an IP address and port, e.g. 127.0.0.1:9898, not {value:?}"
                    )
                })?);
            }
            "--env" => {
                env = Some(args.next().ok_or("--env needs a name, e.g. --env canary")?);
            }
            "--ms" => milliseconds = true,
            "--native" => {
                if !cfg!(feature = "native") {
                    return Err("--native needs --features native".to_owned());
                }
                native = true;
            }
            "--linger" => {
                let value = args
                    .next()
                    .ok_or("--linger needs a value, e.g. --linger 30")?;
                linger = match value.parse::<u64>() {
                    Ok(n) if n <= 3600 => Some(n),
                    _ => {
                        return Err(format!(
                            "--linger takes a whole number of seconds from 0 to 3600, not {value:?}"
                        ));
                    }
                };
            }
            "--summary-json" => summary_json = true,
            "--config" => {
                let value = args
                    .next()
                    .ok_or("--config needs a file, e.g. --config demo/trading_tick.toml")?;
                if !cfg!(feature = "config") {
                    return Err("--config needs --features config".to_owned());
                }
                config = Some(value.into());
            }
            "--artifacts" => {
                let value = args
                    .next()
                    .ok_or("--artifacts needs a directory, e.g. --artifacts target/demo")?;
                if !cfg!(all(feature = "trace", feature = "report")) {
                    return Err(
                        "--artifacts needs --features config,report (or trace,report)".to_owned(),
                    );
                }
                artifacts = Some(value.into());
            }
            "--slow" => {
                let value = args
                    .next()
                    .ok_or("--slow needs STAGE=FACTOR, e.g. --slow stage_spread=1.10")?;
                slow = Slowdown::parse(&value)?;
            }
            "--warm-up-ms" => {
                let value = args
                    .next()
                    .ok_or("--warm-up-ms needs a value, e.g. --warm-up-ms 3000")?;
                warm_up = match value.parse::<u64>() {
                    Ok(n) if n <= 60_000 => Duration::from_millis(n),
                    _ => {
                        return Err(format!(
                            "--warm-up-ms takes a whole number of milliseconds from 0 to 60000, not {value:?}"
                        ));
                    }
                };
            }
            "--seconds" => {
                let value = args
                    .next()
                    .ok_or("--seconds needs a value, e.g. --seconds 5")?;
                seconds = match value.parse::<u64>() {
                    Ok(n) if (1..=86_400).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "--seconds takes a whole number of seconds from 1 to 86400, not {value:?}"
                        ));
                    }
                };
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if listen.is_none() && (env.is_some() || milliseconds || native || linger.is_some()) {
        return Err(
            "--env, --ms, --native and --linger shape what --listen serves: add --listen"
                .to_owned(),
        );
    }
    Ok(Some(Options {
        seconds,
        warm_up,
        listen,
        env: env.unwrap_or_else(|| "local".to_owned()),
        milliseconds,
        native,
        linger: linger.unwrap_or(0),
        summary_json,
        config,
        artifacts,
        slow,
    }))
}

/// How often a tick starts: market data arrives once a millisecond, and a tick's work (about
/// 40 µs at the median) fits well within it. Also the expected interval of `tick_total`'s
/// coordinated-omission correction (as in demo/trading_tick.toml): a tick longer than twice this
/// held back the ticks due meanwhile.
const TICK_PERIOD: Duration = Duration::from_millis(1);

/// The warm-up before the recorded run, recording off (`--warm-up-ms` sets another).
const WARM_UP: Duration = Duration::from_millis(500);

/// Ticks an SLA rule's window must hold before the rule judges it: half a second's worth, so
/// that a few ticks (the first ones of a run, say) are never a verdict.
const MIN_TICKS: u64 = 500;

/// Tick starts on a fixed schedule: market data arrives every [`TICK_PERIOD`], and a tick starts
/// with each update, at once if the loop is late for it. Updates wait in a queue one deep: of
/// those that arrive while a tick runs (or while the OS holds the loop off its core), the latest
/// starts the next tick and the others are skipped (and counted). So a slow tick holds back the
/// ticks due while it ran, which the coordinated-omission correction counts, and the loop never
/// runs a backlog of ticks back to back.
struct Schedule {
    next: Instant,
    skipped: u64,
}

impl Schedule {
    fn new(first: Instant) -> Self {
        Self {
            next: first,
            skipped: 0,
        }
    }

    /// Waits for the next update (none if one is waiting already).
    fn wait(&mut self) {
        let now = Instant::now();
        if now < self.next {
            // The sleep's overshoot (tens of µs) delays the tick's start, not its timing.
            std::thread::sleep(self.next - now);
            self.next += TICK_PERIOD;
            return;
        }
        // Late: the latest update that arrived starts this tick; the ones before it are skipped.
        let older = (now - self.next).as_nanos() / TICK_PERIOD.as_nanos();
        self.skipped += older as u64;
        self.next += TICK_PERIOD * (older as u32 + 1);
    }
}

/// The SLA state as the callback last announced it, rule by rule: what the per-second table's
/// SLA column and its "SLA now" lines show. The callback updates it and prints its line under
/// the lock, and a table reads it and prints under the same lock, so a table never shows a
/// state whose announcement is not above it, nor misses one that is.
#[derive(Clone, Default)]
struct Announced(Arc<Mutex<AnnouncedState>>);

#[derive(Default)]
struct AnnouncedState {
    /// The start of the recorded run (after the warm-up): the callback lines' time 0.
    started: Option<Instant>,
    /// Each rule whose violation is in force: its severity and when it was announced.
    rules: BTreeMap<RuleKey, (Severity, Duration)>,
}

/// A rule as its violations name it: stage, labels, and `metric over window` as text.
type RuleKey = (&'static str, laptime::Labels, String);

fn rule_key(v: &Violation) -> RuleKey {
    (v.stage, v.labels, format!("{} over {}", v.metric, v.window))
}

impl Announced {
    fn lock(&self) -> MutexGuard<'_, AnnouncedState> {
        // A panic while printing leaves the state whole: carry on with it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, at: Instant) {
        self.lock().started = Some(at);
    }

    /// The callback: records each change and prints it, e.g.
    /// `[  3.51s] SLA critical tick_total p99 over 1s: 3.12ms > 250µs`.
    fn announce(&self, violations: &[Violation]) {
        let mut state = self.lock();
        let at = state.started.map_or(Duration::ZERO, |s| s.elapsed());
        for v in violations {
            if v.cleared {
                state.rules.remove(&rule_key(v));
            } else {
                state.rules.insert(rule_key(v), (v.severity, at));
            }
            println!("[{:6.2}s] SLA {v}", at.as_secs_f64());
        }
    }
}

impl AnnouncedState {
    /// The worst severity in force for the stage with these labels.
    fn worst(&self, stage: &str, labels: laptime::Labels) -> Option<Severity> {
        (self.rules.iter())
            .filter(|((s, l, _), _)| *s == stage && *l == labels)
            .map(|(_, (severity, _))| *severity)
            .max()
    }
}

/// The seeds' market-maker preset (200 ms deadline on `tick_total`; P95 160/200 ms, P99 200/250 ms
/// and a deadline-miss rate of 1 %/2 % as warning/critical over 60 s), scaled to this demo: every
/// duration divided by [`SCALE`], judged over the last second, the window the table shows, once
/// it holds [`MIN_TICKS`] ticks.
fn demo_sla() -> SlaPreset {
    let mut sla = presets::market_maker();
    for (_, deadline) in &mut sla.deadlines {
        *deadline /= SCALE;
    }
    for rule in &mut sla.rules {
        rule.window = Window::S1;
        rule.min_count = MIN_TICKS;
        for threshold in [&mut rule.warning, &mut rule.critical]
            .into_iter()
            .flatten()
        {
            if let Value::Latency(d) = threshold {
                *d /= SCALE;
            }
        }
    }
    sla
}

/// How the simulated market behaves.
struct Market {
    /// Chance that a tick's market data arrives late (2–6 ms, far past the 200 µs deadline, and
    /// long enough to hold back the next ticks).
    slow_tick: f64,
    /// Chance of a soft volatility trip (quotes widened).
    vol_soft: f64,
    /// Chance of a hard volatility trip (quotes pulled).
    vol_hard: f64,
    /// Chance that the venue's batch endpoint is throttled and the stale quotes are cancelled one
    /// request each (`exchange_req{api="cancel"}` beside `{api="batch-cancel"}`).
    single_cancel: f64,
    /// Symbols quoted in parallel (the exported `parallel_symbols` gauge): fewer when volatile.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    parallel_symbols: f64,
}

/// The warm-up's market: the ticks' usual work, nothing late, no guard trips.
const WARM: Market = Market {
    slow_tick: 0.0,
    vol_soft: 0.0,
    vol_hard: 0.0,
    single_cancel: 0.1,
    parallel_symbols: 10.0,
};

const CALM: Market = Market {
    slow_tick: 0.002,
    vol_soft: 0.02,
    vol_hard: 0.001,
    single_cancel: 0.1,
    parallel_symbols: 10.0,
};

/// Slow ticks stay under 5 %, so P95 stays calm while P99 and the miss rate go critical.
const VOLATILE: Market = Market {
    slow_tick: 0.035,
    vol_soft: 0.15,
    vol_hard: 0.02,
    single_cancel: 0.3,
    parallel_symbols: 4.0,
};

/// What a tick did with its quotes.
#[derive(Clone, Copy)]
enum Quotes {
    Normal,
    /// Widened: a soft volatility trip, or the latency guard was tripped.
    Wide,
    /// Pulled: a hard volatility trip; the stale quotes are cancelled and none are posted.
    Pulled,
}

/// The tick's stages: `tick_total`, `stage_fetch_md`, ... (the variants' names in snake_case).
#[derive(Debug, Clone, Copy, PartialEq, laptime::Stage)]
enum TickStage {
    TickTotal,
    StageFetchMd,
    StageSpread,
    StageGuards,
    StageEmit,
}

/// A planted regression (`--slow STAGE=FACTOR`): one tick stage's own simulated work made
/// `factor` times longer, for the perf gate to catch.
#[derive(Clone, Copy)]
struct Slowdown {
    stage: Option<TickStage>,
    factor: f64,
}

impl Default for Slowdown {
    fn default() -> Self {
        Self {
            stage: None,
            factor: 1.0,
        }
    }
}

impl Slowdown {
    fn parse(arg: &str) -> Result<Self, String> {
        use laptime::StageEnum;
        let stages = "stage_fetch_md, stage_spread, stage_guards or stage_emit";
        let (name, factor) = arg.split_once('=').ok_or_else(|| {
            format!("--slow takes STAGE=FACTOR, e.g. stage_spread=1.10, not {arg:?}")
        })?;
        let stage = TickStage::ALL
            .iter()
            .copied()
            .filter(|s| *s != TickStage::TickTotal)
            .find(|s| s.stage_name() == name)
            .ok_or_else(|| format!("--slow: {name:?} is not a tick stage; use {stages}"))?;
        let factor = factor
            .parse::<f64>()
            .ok()
            .filter(|f| (0.1..=10.0).contains(f))
            .ok_or_else(|| {
                format!("--slow: the factor is a number from 0.1 to 10, not {factor:?}")
            })?;
        Ok(Self {
            stage: Some(stage),
            factor,
        })
    }

    /// Spins for `d`, stretched when `stage` is the slowed one.
    fn work(&self, stage: TickStage, d: Duration) {
        work(if self.stage == Some(stage) {
            d.mul_f64(self.factor)
        } else {
            d
        });
    }
}

/// One tick: four stages timed by the split timer, the exchange requests by `#[measure]`.
fn tick(rng: &mut Rng, market: &Market, latency_guard_tripped: bool, slow: &Slowdown) -> Quotes {
    use TickStage::*;
    let mut lap = laptime::lap(TickTotal);

    // Market data: usually about 12 µs; now and then the feed is late.
    slow.work(StageFetchMd, rng.latency(12.0, 0.35));
    if rng.chance(market.slow_tick) {
        slow.work(
            StageFetchMd,
            rng.between(Duration::from_millis(2), Duration::from_millis(6)),
        );
    }
    lap.split(StageFetchMd);

    // Fair value and spread.
    slow.work(StageSpread, rng.latency(3.5, 0.25));
    lap.split(StageSpread);

    // Volatility guards: a hard trip pulls the quotes, a soft one widens them.
    slow.work(StageGuards, rng.latency(1.5, 0.2));
    let vol = rng.unit();
    let quotes = if vol < market.vol_hard {
        laptime::record_trip("vol_hard");
        Quotes::Pulled
    } else if vol < market.vol_hard + market.vol_soft {
        laptime::record_trip("vol_soft");
        Quotes::Wide
    } else if latency_guard_tripped {
        Quotes::Wide
    } else {
        Quotes::Normal
    };
    lap.split(StageGuards);

    // Emit: build the orders, cancel the stale quotes (in one request, or one request per quote
    // when the batch endpoint is throttled), post the new ones in another.
    slow.work(StageEmit, rng.latency(2.5, 0.3));
    if rng.chance(market.single_cancel) {
        for _quote in 0..2 {
            cancel_one(rng);
        }
    } else {
        cancel_batch(rng);
    }
    if !matches!(quotes, Quotes::Pulled) {
        post_orders(rng);
    }
    // The last stage and the tick's total share one clock read.
    lap.end_with(StageEmit);
    quotes
}

// The exchange requests: every call is one span of its `exchange_req{verb, api}` series.

/// Every stage the run records, registered before the warm-up: each series is exported, at zero,
/// from the first cycle on, so a scraper's first sample is the start of the run and `rate()`
/// over the run counts every record (a series that first appears with counts already in it
/// hides them from `rate()`).
fn register_stages() {
    for stage in <TickStage as laptime::StageEnum>::ALL {
        let _ = laptime::IntoStage::into_stage(*stage);
    }
    // The same stages #[measure] resolves below: a name and its labels make one stage.
    let requests: [&'static [(&str, &str)]; 3] = [
        &[("verb", "delete"), ("api", "cancel")],
        &[("verb", "post"), ("api", "batch-cancel")],
        &[("verb", "post"), ("api", "batch-orders")],
    ];
    for labels in requests {
        let _ = laptime::Stage::with_labels("exchange_req", labels);
    }
}

#[laptime::measure(name = "exchange_req", labels(verb = "delete", api = "cancel"))]
fn cancel_one(rng: &mut Rng) {
    work(rng.latency(6.0, 0.4));
}

#[laptime::measure(name = "exchange_req", labels(verb = "post", api = "batch-cancel"))]
fn cancel_batch(rng: &mut Rng) {
    work(rng.latency(9.0, 0.4));
}

#[laptime::measure(name = "exchange_req", labels(verb = "post", api = "batch-orders"))]
fn post_orders(rng: &mut Rng) {
    work(rng.latency(11.0, 0.4));
}

/// Simulated work: spins for `d`, as computing code would (a sleep would give the core away).
/// A gap of more than [`STALL`] between two reads of the clock is the OS running something else
/// on the core: counted in [`STALLS`].
fn work(d: Duration) {
    let mut last = Instant::now();
    let until = last + d;
    while last < until {
        std::hint::spin_loop();
        let now = Instant::now();
        if now - last > STALL {
            STALLS.fetch_add(1, Ordering::Relaxed);
        }
        last = now;
    }
}

/// A pause in the simulated work long enough to be the scheduler's, not the loop's.
const STALL: Duration = Duration::from_micros(500);

/// Times the loop lost its core for more than [`STALL`] in the middle of its work: the busy
/// machine's part of the figures (a service is preempted too; this one can tell).
static STALLS: AtomicU64 = AtomicU64::new(0);

/// xorshift64*: enough randomness for a simulation, and no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        low + (high - low).mul_f64(self.unit())
    }

    /// A service time around `median_us` with a long right tail (log-normal with shape `sigma`).
    fn latency(&mut self, median_us: f64, sigma: f64) -> Duration {
        // Box–Muller: a standard normal draw from two uniform ones.
        let normal =
            (-2.0 * (1.0 - self.unit()).ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
        Duration::from_secs_f64(median_us * (sigma * normal).exp() / 1e6)
    }
}

#[derive(Default)]
struct QuoteCounts {
    normal: u64,
    wide: u64,
    pulled: u64,
}

impl QuoteCounts {
    fn add(&mut self, quotes: Quotes) {
        match quotes {
            Quotes::Normal => self.normal += 1,
            Quotes::Wide => self.wide += 1,
            Quotes::Pulled => self.pulled += 1,
        }
    }
}

/// What the run will do, and the rules it is judged by.
fn print_banner(sla: &SlaPreset, warm_up: Duration, run: Duration) {
    let at = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    println!(
        "trading_tick: a {} warm-up (not recorded), then {} of ticks on market data every {}: \
         a calm market until {}, volatile until {}, calm again to the end",
        fmt::duration(warm_up),
        at(run),
        fmt::duration(TICK_PERIOD),
        at(run / 3),
        at(run * 2 / 3)
    );
    for (stage, deadline) in &sla.deadlines {
        println!("  deadline {stage} {}", fmt::duration(*deadline));
    }
    for rule in &sla.rules {
        let threshold = |t: Option<Value>| t.map_or("-".to_owned(), |v| v.to_string());
        println!(
            "  rule {} {} over {}: warning above {}, critical above {}, judged from {} ticks",
            rule.stage,
            rule.metric,
            rule.window,
            threshold(rule.warning),
            threshold(rule.critical),
            rule.min_count
        );
    }
}

/// The table printed every second: the last second's figures from the latest snapshot, and the
/// SLA state as the callback last announced it.
fn print_live(at: Duration, sla: &SlaPreset, announced: &Announced, stalls: u64) {
    let stats = laptime::get_all_stats(Window::S1);
    let trips = laptime::trip_counts(Window::S1);
    let health = laptime::health();
    // Under the callback's lock from the SLA column to the print: see `Announced`.
    let state = announced.lock();
    let mut out = format!("\n── {} s ── last second ──\n", at.as_secs());
    write_table(&mut out, &stats, sla, |s| state.worst(s.stage, s.labels));
    write_guard_trips(&mut out, &trips);
    for ((stage, _, rule), (severity, since)) in &state.rules {
        let since = since.as_secs_f64();
        let _ = writeln!(
            out,
            "SLA now: {severity} {stage} {rule} (since {since:.2} s)"
        );
    }
    if let Some(h) = health {
        let _ = writeln!(
            out,
            "health: {} records, {} dropped, {} in rings, lag {}",
            h.records,
            h.dropped,
            h.in_rings,
            fmt::duration(h.lag)
        );
    }
    if stalls > 0 {
        let _ = writeln!(
            out,
            "busy machine: the OS paused the loop's work for more than {} {} this second",
            fmt::duration(STALL),
            times(stalls)
        );
    }
    // One write, so the SLA callback's lines never land inside the table.
    print!("{out}");
}

fn print_summary(
    collector: &laptime::CollectorHandle,
    sla: &SlaPreset,
    quotes: &QuoteCounts,
    elapsed: Duration,
    skipped: u64,
) {
    // The rules, judged once more on the whole run's figures.
    let broken: Vec<Violation> = sla
        .rules
        .iter()
        .filter_map(|rule| {
            let stats = collector.get_stats(rule.stage, Window::Cumulative)?;
            let mut whole_run = rule.clone();
            whole_run.window = Window::Cumulative;
            whole_run.judge(&stats)
        })
        .collect();

    let mut out = String::from("\n══ whole run ══\n");
    let all = collector.get_all_stats(Window::Cumulative);
    write_table(&mut out, &all, sla, |s| {
        (broken.iter())
            .filter(|v| v.stage == s.stage && v.labels == s.labels)
            .map(|v| v.severity)
            .max()
    });
    if let Some(ticks) = all.iter().find(|s| s.stage == "tick_total") {
        let _ = writeln!(
            out,
            "ticks: {} in {:.2} s, {:.0} a second, market data every {} ({skipped} updates \
             skipped: a newer one arrived while the loop was busy)",
            ticks.count,
            elapsed.as_secs_f64(),
            ticks.count as f64 / elapsed.as_secs_f64(),
            fmt::duration(TICK_PERIOD),
        );
    }
    for s in collector.get_all_stats(Window::Cumulative) {
        let Some(c) = &s.corrected else {
            continue;
        };
        let _ = writeln!(
            out,
            "coordinated omission: {} expected every {}: p99 {} raw, {} corrected; p99.9 {} raw, \
             {} corrected ({} values added for ticks held back by slower ones)",
            s.stage,
            fmt::duration(c.expected_interval),
            fmt::duration(s.p99),
            fmt::duration(c.p99),
            fmt::duration(s.p999),
            fmt::duration(c.p999),
            c.synthesized
        );
    }
    let snapshot = collector.snapshot();
    write_guard_trips(&mut out, &snapshot.trip_counts(Window::Cumulative));
    let _ = writeln!(
        out,
        "quotes: {} normal, {} widened, {} pulled",
        quotes.normal, quotes.wide, quotes.pulled
    );
    if broken.is_empty() {
        let _ = writeln!(out, "SLA over the whole run: every rule met");
    }
    for v in &broken {
        let _ = writeln!(out, "SLA over the whole run: {v}");
    }

    let stalls = STALLS.load(Ordering::Relaxed);
    if stalls > 0 {
        let _ = writeln!(
            out,
            "busy machine: the OS paused the loop's work for more than {} {} in the run, and \
             each pause is in the figures above",
            fmt::duration(STALL),
            times(stalls)
        );
    }
    let h = collector.health();
    let _ = writeln!(
        out,
        "health: produced {} = {} aggregated + {} dropped + {} in rings; {} aggregator cycles, \
         last {}; {} KiB of histograms",
        h.produced,
        h.records,
        h.dropped,
        h.in_rings,
        h.cycles,
        fmt::duration(h.last_cycle),
        h.histogram_bytes / 1024
    );
    print!("{out}");
}

/// The whole run's figures as one JSON line, from one snapshot: per stage (name and labels) the
/// cumulative count, p50/p95/p99/max in nanoseconds and deadline misses, and whether it is a
/// name's total (`exchange_req` without labels: not exported, its labelled stages are); guard
/// trips per reason; records aggregated and dropped. `tests/prometheus_live.rs` compares
/// Prometheus' view with it.
fn summary_json(collector: &laptime::CollectorHandle) -> String {
    let snapshot = collector.snapshot();
    let ns = |d: Duration| d.as_nanos();
    let stages: Vec<String> = snapshot
        .all(Window::Cumulative)
        .map(|s| {
            let total = Stage::lookup(s.stage, s.labels).is_some_and(Stage::is_total);
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
                .collect();
            format!(
                "{{\"stage\":{},\"labels\":{{{}}},\"total\":{total},\"count\":{},\"p50_ns\":{},\
                 \"p95_ns\":{},\"p99_ns\":{},\"max_ns\":{},\"deadline_misses\":{}}}",
                json_str(s.stage),
                labels.join(","),
                s.count,
                ns(s.p50),
                ns(s.p95),
                ns(s.p99),
                ns(s.max),
                s.deadline_misses
            )
        })
        .collect();
    let trips: Vec<String> = snapshot
        .trip_counts(Window::Cumulative)
        .iter()
        .map(|(reason, n)| format!("{}:{n}", json_str(reason)))
        .collect();
    format!(
        "{{\"summary\":{{\"stages\":[{}],\"guard_trips\":{{{}}},\"records\":{},\"dropped\":{}}}}}",
        stages.join(","),
        trips.join(","),
        snapshot.health.records,
        snapshot.health.dropped
    )
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One row per stage: count, percentiles, deadline misses, and the SLA state `state` gives
/// (`CRIT`, `WARN`, `ok` for a stage with rules, `-` without).
fn write_table(
    out: &mut String,
    stats: &[StageStats],
    sla: &SlaPreset,
    state: impl Fn(&StageStats) -> Option<Severity>,
) {
    // A name with labelled stages: its row without labels is their total.
    let labelled: Vec<&str> = (stats.iter())
        .filter(|s| !s.labels.is_empty())
        .map(|s| s.stage)
        .collect();
    let mut rows: Vec<&StageStats> = stats.iter().collect();
    // The tick's stages first, then the exchange requests' total and each of them; id order
    // within each group.
    rows.sort_by_key(
        |s| match (s.labels.is_empty(), labelled.contains(&s.stage)) {
            (true, false) => 0,
            (true, true) => 1,
            (false, _) => 2,
        },
    );
    let names: Vec<String> = rows.iter().map(|s| stage_name(s)).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let _ = writeln!(
        out,
        "{:<width$} {:>7} {:>7} {:>7} {:>7} {:>7} {:>10}  SLA",
        "stage", "count", "p50", "p95", "p99", "p99.9", "misses"
    );
    for (s, name) in rows.iter().zip(&names) {
        let misses = if s.deadline.is_some() {
            format!(
                "{} ({:.1}%)",
                s.deadline_misses,
                s.deadline_miss_rate() * 100.0
            )
        } else {
            "-".to_owned()
        };
        let ruled = sla
            .rules
            .iter()
            .any(|r| r.stage == s.stage && r.labels == s.labels);
        let status = match state(s) {
            Some(Severity::Critical) => "CRIT",
            Some(Severity::Warning) => "WARN",
            None if ruled => "ok",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{name:<width$} {:>7} {:>7} {:>7} {:>7} {:>7} {misses:>10}  {status}",
            s.count,
            fmt::duration(s.p50),
            fmt::duration(s.p95),
            fmt::duration(s.p99),
            fmt::duration(s.p999),
        );
    }
}

/// `once`, `twice`, `3 times`.
fn times(n: u64) -> String {
    match n {
        1 => "once".to_owned(),
        2 => "twice".to_owned(),
        n => format!("{n} times"),
    }
}

fn write_guard_trips(out: &mut String, trips: &[(&str, u64)]) {
    let list: Vec<String> = trips.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let list = if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    };
    let _ = writeln!(out, "guard trips: {list}");
}

/// `exchange_req{verb=post,api=batch-cancel}`, or just the name for a stage without labels.
fn stage_name(s: &StageStats) -> String {
    if s.labels.is_empty() {
        return s.stage.to_owned();
    }
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}{{{}}}", s.stage, labels.join(","))
}
