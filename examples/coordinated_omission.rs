//! Why coordinated-omission correction matters, on the real clock.
//!
//! A tick loop is scheduled every `--period-us` (1 ms) for `--slots` slots (5 000). Each tick
//! spins `--work-us` (20 µs) inside a span; one tick, `--stall-slot`, stalls for `--stall-ms`
//! (200 ms) instead. Like a periodic timer that skips missed ticks, the loop then goes on with the
//! next slot still ahead, so the slots that fell inside the stall never run a tick of their own:
//! the raw span figures see one slow value among thousands of fast ones.
//!
//! The schedule-based latency of every slot is measured independently of laptime, from
//! `Instant`s: from the slot's scheduled time to the end of the first tick that ran at or after
//! it (a skipped slot is served by the tick that ran once the stall was over). laptime's
//! corrected figures (`with_expected_interval`) are compared with it. The correction counts a
//! skipped slot's wait from the stall's end, the schedule from the end of the tick that served
//! it (the next slot boundary plus that tick's work), so the two agree to within one period plus
//! one tick's work, whereas the raw figures are off by the whole stall.
//!
//! ```text
//! cargo run --release --example coordinated_omission [-- --period-us 1000 --work-us 20 --slots 5000 --stall-slot 2000 --stall-ms 200]
//! ```

use std::time::{Duration, Instant};

use laptime::{Collector, Window};

struct Args {
    period: Duration,
    work: Duration,
    slots: u64,
    stall_slot: u64,
    stall: Duration,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        period: Duration::from_millis(1),
        work: Duration::from_micros(20),
        slots: 5_000,
        stall_slot: 2_000,
        stall: Duration::from_millis(200),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|e| format!("{flag}: {v:?} is not a whole number ({e})"))
        };
        match flag.as_str() {
            "--period-us" => a.period = Duration::from_micros(number(value()?)?),
            "--work-us" => a.work = Duration::from_micros(number(value()?)?),
            "--slots" => a.slots = number(value()?)?,
            "--stall-slot" => a.stall_slot = number(value()?)?,
            "--stall-ms" => a.stall = Duration::from_millis(number(value()?)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.period.is_zero() || a.work >= a.period || a.stall_slot >= a.slots {
        return Err("need 0 < --work-us < --period-us and --stall-slot < --slots".into());
    }
    Ok(a)
}

/// Nearest-rank percentile of a sorted slice.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("coordinated_omission: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let handle = Collector::builder()
        .with_ring_capacity(8192)
        .with_expected_interval("co_tick", args.period)
        .install()
        .expect("install the collector");

    let start = Instant::now() + Duration::from_millis(10);
    let slot_at = |k: u64| start + args.period * k as u32;
    // By slot: the end of the tick that served it.
    let mut served: Vec<Instant> = Vec::with_capacity(args.slots as usize);
    let mut slot = 0;
    while slot < args.slots {
        while Instant::now() < slot_at(slot) {
            std::hint::spin_loop();
        }
        {
            let _span = laptime::start("co_tick");
            if slot == args.stall_slot {
                std::thread::sleep(args.stall);
            } else {
                spin(args.work);
            }
        }
        let ended = Instant::now();
        // This tick serves its own slot and every earlier one not yet served (the skipped ones).
        while (served.len() as u64) <= slot {
            served.push(ended);
        }
        // Skip the slots already past: the next tick runs at the next slot still ahead.
        let elapsed = ended.saturating_duration_since(start).as_nanos() as u64;
        slot = (elapsed / args.period.as_nanos() as u64 + 1).max(slot + 1);
    }
    // Slots skipped at the very end (none unless the stall is last) were never served.
    let mut schedule: Vec<u64> = served
        .iter()
        .enumerate()
        .map(|(k, end)| end.saturating_duration_since(slot_at(k as u64)).as_nanos() as u64)
        .collect();
    schedule.sort_unstable();
    assert!(handle.flush(), "the aggregator did not answer");
    let s = handle
        .get_stats("co_tick", Window::Cumulative)
        .expect("co_tick recorded");
    let c = s.corrected.clone().expect("corrected figures");

    println!(
        "{} slots every {:?}, {:?} of work, one stall of {:?} at slot {}",
        args.slots, args.period, args.work, args.stall, args.stall_slot
    );
    println!(
        "ticks run: {} (raw count), corrected count: {} ({} added), slots: {}",
        s.count,
        c.count,
        c.synthesized,
        schedule.len()
    );
    println!(
        "{:>7} {:>14} {:>14} {:>14}",
        "", "raw", "corrected", "schedule"
    );
    let rows = [
        ("p50", 0.5, s.p50, c.p50),
        ("p90", 0.9, s.p90, c.p90),
        ("p95", 0.95, s.p95, c.p95),
        ("p99", 0.99, s.p99, c.p99),
        ("p99.9", 0.999, s.p999, c.p999),
        ("max", 1.0, s.max, c.max),
    ];
    for (name, q, raw, corrected) in rows {
        let truth = Duration::from_nanos(percentile(&schedule, q));
        println!("{name:>7} {raw:>14.3?} {corrected:>14.3?} {truth:>14.3?}");
    }
    std::process::ExitCode::SUCCESS
}
