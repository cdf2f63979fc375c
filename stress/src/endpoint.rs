//! `endpoint`: the `/metrics` server under the attacks that once starved it, in process, while a
//! host "tick" loop runs and a scraper asks once a second. Phases, each `--phase-secs` long:
//! quiet (only the scraper), 40 slow clients dripping a never-ending head, 1 000 idle clients
//! reconnecting as soon as closed, and 200 clients scraping in a tight loop. Each phase reports
//! the share of the scraper's requests answered `200` within 5 s (the clients are those of
//! `tests/http.rs`, in `tests/common/http_attacks.rs`), the tick's p99, and what the
//! server and its event loop did; the checks hold the scraper's share under the slow and idle
//! attacks, and the tick's p99 under the flood against quiet rounds run between the flood's own
//! (`--flood-rounds`, each half a phase).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use laptime::export::http::{MetricsServer, MetricsServerHandle, ServerStats};
use laptime::export::prometheus::PrometheusExporter;
use serde::Serialize;

use crate::report::{Report, ns, percentile};

#[path = "../../tests/common/http_attacks.rs"]
mod http_attacks;

/// The host's stages, each about a quarter of the tick's work.
const STAGES: [&str; 4] = ["tick_md", "tick_signal", "tick_quote", "tick_risk"];

/// `endpoint`'s flags.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct EndpointArgs {
    /// Length of each phase (quiet, slow, idle, flood), in seconds: the scraper asks once a
    /// second, so this many scrapes a phase.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3_600))]
    pub phase_secs: u64,
    /// Clients dripping a never-ending request head, a byte each every 1.5 s.
    #[arg(long, default_value_t = 40)]
    pub slow_clients: usize,
    /// Clients that connect, send nothing and reconnect as soon as closed.
    #[arg(long, default_value_t = 1_000)]
    pub idle_clients: usize,
    /// Clients scraping `/metrics` in a tight loop.
    #[arg(long, default_value_t = 200)]
    pub flood_clients: usize,
    /// The host's tick period, in µs (a tick is ~10 µs of work in 4 stages).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(20..=1_000_000))]
    pub tick_every_us: u64,
    /// Lowest share of the scraper's requests answered 200 under the slow and idle attacks.
    #[arg(long, default_value_t = 0.9)]
    pub min_scrape_share: f64,
    /// Highest ratio of the tick's p99 under the flood to its p99 in quiet rounds run between
    /// the flood's rounds.
    #[arg(long, default_value_t = 1.5)]
    pub max_tick_p99_ratio: f64,
    /// Rounds of (quiet, flood), each half a phase long, over which the flood's tick p99 is
    /// compared with the quiet one's.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub flood_rounds: u32,
}

/// The server's counters moved in a phase.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Moved {
    accepted: u64,
    refused: u64,
    evicted: u64,
    timed_out: u64,
    ok: u64,
    paced: u64,
    renders: u64,
    cached: u64,
}

impl Moved {
    fn between(before: &ServerStats, after: &ServerStats) -> Self {
        Self {
            accepted: after.accepted - before.accepted,
            refused: after.refused - before.refused,
            evicted: after.evicted - before.evicted,
            timed_out: after.timed_out - before.timed_out,
            ok: after.ok - before.ok,
            paced: after.paced - before.paced,
            renders: after.renders - before.renders,
            cached: after.cached - before.cached,
        }
    }

    fn add(&mut self, o: Self) {
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.evicted += o.evicted;
        self.timed_out += o.timed_out;
        self.ok += o.ok;
        self.paced += o.paced;
        self.renders += o.renders;
        self.cached += o.cached;
    }
}

/// What runs of a phase gathered (one, or several rounds merged).
#[derive(Default)]
struct Raw {
    /// Each scrape's time when it got a `200`.
    scrapes: Vec<Option<Duration>>,
    /// Each tick's duration, ns.
    ticks: Vec<u64>,
    /// CPU seconds of the whole process and of the server's event loop.
    cpu: (f64, f64),
    moved: Moved,
}

impl Raw {
    fn merge(&mut self, other: Raw) {
        self.scrapes.extend(other.scrapes);
        self.ticks.extend(other.ticks);
        self.cpu = (self.cpu.0 + other.cpu.0, self.cpu.1 + other.cpu.1);
        self.moved.add(other.moved);
    }
}

/// What one phase measured.
#[derive(Debug, Serialize)]
struct Phase {
    name: &'static str,
    scrapes: usize,
    scrapes_ok: usize,
    /// The slowest successful scrape, in ms.
    slowest_scrape_ms: f64,
    ticks: usize,
    tick_p50_us: f64,
    tick_p99_us: f64,
    /// CPU seconds used in the phase by the whole process and by the server's event loop.
    process_cpu_secs: f64,
    event_loop_cpu_secs: f64,
    #[serde(flatten)]
    moved: Moved,
}

impl Phase {
    fn new(name: &'static str, mut raw: Raw) -> Self {
        let us = |ns: Option<u64>| ns.unwrap_or(0) as f64 / 1e3;
        let ok = raw.scrapes.iter().flatten();
        let phase = Self {
            name,
            scrapes: raw.scrapes.len(),
            scrapes_ok: ok.clone().count(),
            slowest_scrape_ms: ok.map(|d| d.as_secs_f64() * 1e3).fold(0.0, f64::max),
            ticks: raw.ticks.len(),
            tick_p50_us: us(percentile(&mut raw.ticks, 500)),
            tick_p99_us: us(percentile(&mut raw.ticks, 990)),
            process_cpu_secs: raw.cpu.0,
            event_loop_cpu_secs: raw.cpu.1,
            moved: raw.moved,
        };
        phase.print();
        phase
    }

    fn print(&self) {
        let m = &self.moved;
        println!(
            "  {:>20}: {}/{} scrapes ok (slowest {:.1} ms), tick p50 {:.1} µs p99 {:.1} µs over \
             {} ticks, CPU-s: event loop {:.2} process {:.2}; {} accepted, {} evicted, {} paced, \
             {} renders, {} cached",
            self.name,
            self.scrapes_ok,
            self.scrapes,
            self.slowest_scrape_ms,
            self.tick_p50_us,
            self.tick_p99_us,
            self.ticks,
            self.event_loop_cpu_secs,
            self.process_cpu_secs,
            m.accepted,
            m.evicted,
            m.paced,
            m.renders,
            m.cached
        );
    }
}

/// One attacking client: runs until the flag is set or the instant passes.
type Attack = fn(SocketAddr, &AtomicBool, Instant);

/// No attack: the scraper alone.
const QUIET: Attack = |_, _, _| {};

/// Runs the phases and checks them.
pub fn run(args: &EndpointArgs) -> Result<Report, String> {
    let mut report = Report::new("endpoint", args);
    let exporter = PrometheusExporter::builder()
        .build()
        .map_err(|e| format!("cannot build the exporter: {e}"))?;
    let _collector = laptime::Collector::builder()
        .with_prometheus(exporter.clone())
        .install()
        .map_err(|e| format!("cannot install the collector: {e}"))?;
    let server = MetricsServer::builder()
        .with_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .start(exporter)
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let length = Duration::from_secs(args.phase_secs);
    let host = Host::start(Duration::from_micros(args.tick_every_us));
    let run = |attack: Attack, count: usize, length: Duration| {
        let addr = server.local_addr();
        // Each attacker stops by itself a while after its phase should have ended.
        let limit = length + Duration::from_secs(30);
        run_phase(&server, &host, length, |stop| {
            clients(count, stop, limit, move |stop, until| {
                attack(addr, stop, until)
            })
        })
    };
    let slow: Attack = |addr, stop, until| {
        let every = Duration::from_millis(1500);
        http_attacks::drip(addr, None, every, true, stop, until);
    };
    let mut phases = vec![
        Phase::new("quiet", run(QUIET, 0, length)),
        Phase::new("slow", run(slow, args.slow_clients, length)),
        Phase::new("idle", run(http_attacks::idle, args.idle_clients, length)),
    ];
    // The flood is judged against quiet rounds run between its own: on a shared machine the
    // background load changes over seconds, so both are sampled over the same stretch.
    let (mut between, mut flood) = (Raw::default(), Raw::default());
    for _ in 0..args.flood_rounds {
        between.merge(run(QUIET, 0, length / 2));
        let flooded = run(http_attacks::flood, args.flood_clients, length / 2);
        flood.merge(flooded);
    }
    phases.push(Phase::new("quiet_between_floods", between));
    phases.push(Phase::new("flood", flood));
    host.stop();
    judge(&mut report, args, &phases);
    report.samples(&phases);
    Ok(report)
}

fn judge(report: &mut Report, args: &EndpointArgs, phases: &[Phase]) {
    let by_name = |name| phases.iter().find(|p| p.name == name);
    for p in phases {
        let share = p.scrapes_ok as f64 / p.scrapes.max(1) as f64;
        report.figure(&format!("{}_scrape_share", p.name), share);
        report.figure(&format!("{}_tick_p99_us", p.name), p.tick_p99_us);
        if matches!(p.name, "slow" | "idle") {
            let ok = share >= args.min_scrape_share;
            let bound = format!(">= {}", args.min_scrape_share);
            report.check(format!("{}_scrape_share", p.name), ok, share, bound, None);
        }
    }
    if let (Some(quiet), Some(flood)) = (by_name("quiet_between_floods"), by_name("flood")) {
        let ratio = flood.tick_p99_us / quiet.tick_p99_us.max(f64::MIN_POSITIVE);
        report.figure("flood_tick_p99_ratio", ratio);
        let ok = ratio <= args.max_tick_p99_ratio;
        let bound = format!("<= {}", args.max_tick_p99_ratio);
        report.check("flood_tick_p99_ratio", ok, ratio, bound, None);
    }
}

/// Starts the attack, scrapes once a second for `length`, stops the attack; what it gathered.
fn run_phase(
    server: &MetricsServerHandle,
    host: &Host,
    length: Duration,
    attack: impl FnOnce(&Arc<AtomicBool>) -> Vec<JoinHandle<()>>,
) -> Raw {
    let stop = Arc::new(AtomicBool::new(false));
    let attackers = attack(&stop);
    // Let the attack take hold (fill the table) before the measured part.
    thread::sleep(Duration::from_millis(500));
    let before = server.stats();
    let cpu_before = (cpu_secs("self"), event_loop_cpu());
    host.take_ticks();
    let started = Instant::now();
    let mut scrapes = Vec::new();
    while started.elapsed() < length {
        let at = Instant::now();
        scrapes.push(http_attacks::scrape_ok(server.local_addr()).then(|| at.elapsed()));
        thread::sleep(Duration::from_secs(1).saturating_sub(at.elapsed()));
    }
    let ticks = host.take_ticks();
    let after = server.stats();
    let cpu = (
        cpu_secs("self") - cpu_before.0,
        event_loop_cpu() - cpu_before.1,
    );
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.join();
    }
    Raw {
        scrapes,
        ticks,
        cpu,
        moved: Moved::between(&before, &after),
    }
}

/// Spawns `count` client threads running `client` until `stop` is set, at most `limit` (small
/// stacks: there may be a thousand).
fn clients(
    count: usize,
    stop: &Arc<AtomicBool>,
    limit: Duration,
    client: impl Fn(&AtomicBool, Instant) + Clone + Send + 'static,
) -> Vec<JoinHandle<()>> {
    let until = Instant::now() + limit;
    (0..count)
        .filter_map(|i| {
            let stop = Arc::clone(stop);
            let client = client.clone();
            thread::Builder::new()
                .name(format!("attacker-{i}"))
                .stack_size(64 * 1024)
                .spawn(move || client(&stop, until))
                .ok()
        })
        .collect()
}

/// The host: a thread that runs a tick of 4 measured stages (~10 µs of work) every period and
/// keeps each tick's duration.
struct Host {
    stop: Arc<AtomicBool>,
    ticks: Arc<std::sync::Mutex<Vec<u64>>>,
    thread: JoinHandle<()>,
}

impl Host {
    fn start(every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(std::sync::Mutex::new(Vec::with_capacity(1 << 16)));
        let spins = spins_for(Duration::from_nanos(2_500));
        let thread = {
            let (stop, ticks) = (Arc::clone(&stop), Arc::clone(&ticks));
            thread::Builder::new()
                .name("host-tick".to_owned())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let began = Instant::now();
                        let mut lap = laptime::lap("tick_total");
                        for stage in STAGES {
                            work(spins);
                            lap.split(stage);
                        }
                        drop(lap);
                        let took = ns(began.elapsed());
                        ticks.lock().unwrap_or_else(|e| e.into_inner()).push(took);
                        // A tick missed (the thread was not scheduled in time) is skipped, not
                        // run late back to back: a burst of catch-up ticks would flatter the p99.
                        next = (next + every).max(Instant::now());
                        thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                })
                .expect("the host thread")
        };
        Self {
            stop,
            ticks,
            thread,
        }
    }

    /// The tick durations kept since the last call (ns).
    fn take_ticks(&self) -> Vec<u64> {
        std::mem::take(&mut *self.ticks.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Busy work the optimizer keeps: `spins` rounds of an xorshift.
fn work(spins: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..spins {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

/// Rounds of [`work`] that take about `target` on this machine (the median of a few tries).
fn spins_for(target: Duration) -> u64 {
    let probe = 100_000;
    let mut per_round: Vec<u64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            work(probe);
            ns(t.elapsed()).max(1)
        })
        .collect();
    let took = percentile(&mut per_round, 500).unwrap_or(1);
    (ns(target) * probe / took).max(1)
}

/// CPU seconds (user + system) of a process or task under `/proc/<path>/stat`; 0 if unknown.
fn cpu_secs(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{path}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) end with ')'; utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after it.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of the server's event loop thread (`laptime-http-accept`).
fn event_loop_cpu() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                // Linux keeps 15 bytes of a thread's name: `laptime-http-ac`.
                .is_ok_and(|c| "laptime-http-accept".starts_with(c.trim()) && c.trim().len() >= 15)
        })
        .map(|t| cpu_secs(&format!("self/task/{}", t.file_name().to_string_lossy())))
        .sum()
}
