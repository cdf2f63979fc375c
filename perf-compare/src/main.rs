//! Head-to-head: laptime beside other Rust latency libraries, measured the same way in one run.
//!
//! ```text
//! perf-compare [--quick] [--peers a,b]      every peer (or those named), each in its own child
//!                                           processes; prints one table
//! perf-compare --peer NAME [--rss] [--json] [--quick]
//!                                           one peer in this process (what the parent runs)
//! perf-compare --list                       the peers' names
//! ```
//!
//! Each peer is a module of `src/peers/` behind the function pointers of [`peer::Peer`]; the
//! workloads are in `src/harness/workloads.rs`. Method and figures: `benches/README.md`
//! ("Head-to-head").
#![deny(unsafe_code)]

mod clock;
mod harness;
mod peer;
mod peers;

use std::process::ExitCode;

use harness::Sizes;

#[global_allocator]
static ALLOCATOR: harness::alloc::Counting = harness::alloc::Counting;

const USAGE: &str =
    "usage: perf-compare [--quick] [--peers a,b] | --peer NAME [--rss] [--json] [--quick] | --list";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut quick = false;
    let mut json = false;
    let mut rss = false;
    let mut list = false;
    let mut one: Option<String> = None;
    let mut some: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--json" => json = true,
            "--rss" => rss = true,
            "--list" => list = true,
            "--peer" => one = it.next().cloned(),
            "--peers" => some = it.next().cloned(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("perf-compare: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if list {
        for p in peers::all() {
            println!("{}", p.name);
        }
        return ExitCode::SUCCESS;
    }
    let sizes = if quick { Sizes::QUICK } else { Sizes::FULL };

    if let Some(name) = one {
        let Some(peer) = peers::find(&name) else {
            eprintln!("perf-compare: no peer {name:?} (see --list)");
            return ExitCode::from(2);
        };
        let line = if rss {
            let r = harness::workloads::run_rss(peer, sizes);
            to_json(&r, json)
        } else {
            let r = harness::workloads::run(peer, sizes, quick);
            to_json(&r, json)
        };
        println!("{line}");
        return ExitCode::SUCCESS;
    }

    let chosen = match some {
        None => peers::all(),
        Some(list) => {
            let mut chosen = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match peers::find(name) {
                    Some(p) => chosen.push(p),
                    None => {
                        eprintln!("perf-compare: no peer {name:?} (see --list)");
                        return ExitCode::from(2);
                    }
                }
            }
            chosen
        }
    };
    if harness::driver::run(&chosen, quick) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn to_json<T: serde::Serialize>(value: &T, one_line: bool) -> String {
    let r = if one_line {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    r.expect("results serialise")
}
