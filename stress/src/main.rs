//! Stress runs for laptime: `soak` (minutes at a steady rate: flat memory, exact statistics),
//! `flood` (every core overrunning small rings: the hot path never blocks, drops are counted
//! exactly, the aggregator recovers) and `churn` (100 000 short-lived threads: every ring
//! reclaimed, memory back to its baseline) and `endpoint` (the `/metrics` server under slow,
//! idle and flooding clients: a once-a-second scraper still served, the host's tick unharmed)
//! and `cardinality` (a desk's per-symbol latency: 5 000 symbols × 4 stage families at
//! 200 000 records/s in bounded memory, cycle and lag within the interval, no drops, every
//! series' count exact, the slow symbols named by the top-k).
//!
//! Each prints a progress line per sample, then every check with its measured figure beside its
//! bound, and writes a JSON summary with `--json PATH`. Exit status: 0 when every check held, 1
//! when one failed (or the run could not be carried out), 2 on bad arguments.
//!
//! ```text
//! cargo build --release -p laptime-stress
//! target/release/laptime-stress soak --secs 30 --json target/stress/soak.json
//! target/release/laptime-stress flood --secs 10 --json target/stress/flood.json
//! target/release/laptime-stress churn --threads 100000 --json target/stress/churn.json
//! target/release/laptime-stress endpoint --phase-secs 10 --json target/stress/endpoint.json
//! target/release/laptime-stress cardinality --secs 60 --json target/stress/cardinality.json
//! target/release/laptime-stress cardinality --symbols 25000 --max-series 100000 --rate 200000
//! ```
// Unsafe only in `heap`, the counting allocator.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod cardinality;
mod churn;
mod endpoint;
mod flood;
mod heap;
mod reference;
mod report;
mod rss;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: heap::Counting = heap::Counting;

#[derive(Debug, Parser)]
#[command(name = "laptime-stress", about, long_about = None)]
struct Cli {
    /// Write the JSON summary here (its directory is created).
    #[arg(long, global = true, value_name = "PATH")]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A steady demo-shaped workload: flat RSS, health identity at every sample, statistics
    /// equal to the producers' own references.
    Soak(soak::SoakArgs),
    /// Every core floods small rings: progress in every bucket of time, exact drop accounting,
    /// recovery after the flood.
    Flood(flood::FloodArgs),
    /// Per-symbol latency at scale: 5 000 symbols × 4 stage families, 200 000 records/s from
    /// 2 threads: memory, cycle time and lag, no drops, every series' count exact, the slow
    /// symbols named by the top-k, query and exposition times.
    Cardinality(cardinality::CardinalityArgs),
    /// Short-lived threads in batches: every ring reclaimed, every span counted, RSS back down.
    Churn(churn::ChurnArgs),
    /// The `/metrics` server under 40 slow, 1 000 idle-reconnecting and 200 flooding clients: a
    /// once-a-second scraper's success share, and the host's tick p99 against a quiet phase.
    Endpoint(endpoint::EndpointArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match cli.json.as_deref().map(report::prepare_json).transpose() {
        Ok(json) => json,
        Err(e) => {
            eprintln!(
                "laptime-stress: cannot write the --json file {}: {e}; give a writable path",
                cli.json.as_deref().unwrap_or_else(|| "".as_ref()).display()
            );
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Soak(args) => soak::run(args),
        Command::Flood(args) => flood::run(args),
        Command::Cardinality(args) => cardinality::run(args),
        Command::Churn(args) => churn::run(args),
        Command::Endpoint(args) => endpoint::run(args),
    };
    match result {
        Ok(report) => report.finish(json.as_deref()),
        Err(e) => {
            eprintln!("laptime-stress: {e}");
            if let Some(path) = &json {
                let text = serde_json::json!({ "passed": false, "error": e });
                if let Err(e) = std::fs::write(path, format!("{text:#}\n")) {
                    eprintln!("laptime-stress: cannot write {}: {e}", path.display());
                }
            }
            ExitCode::FAILURE
        }
    }
}
