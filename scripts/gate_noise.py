#!/usr/bin/env python3
"""How often the gate fails runs of one build (A/A) and finds a planted 10 % slowdown, on the demo.

Takes POOL runs of the demo and SLOWED runs with `--slow stage_spread=1.10` (2 s each, under
target/gate-noise/), then gates random splits of K runs a side. The figures are in
benches/README.md ("Gate: how often does the gate fail runs of one build?").

    cargo build --release -p laptime-demo --features config,report && cargo build --release -p laptime-cli
    scripts/gate_noise.py --runs-a-side 6 --trials 100
"""
import argparse
import pathlib
import random
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMO = ROOT / "target/release/trading_tick"
LAPTIME = ROOT / "target/release/laptime"
OUT = ROOT / "target/gate-noise"


def take(side, count, extra):
    runs = []
    for i in range(count):
        d = OUT / f"{side}-{i}"
        if not (d / "perf_profile.json").exists():
            subprocess.run([DEMO, "--seconds", "2", "--config", ROOT / "demo/trading_tick.toml",
                            "--artifacts", d, *extra], check=True, stdout=subprocess.DEVNULL)
        runs.append(str(d / "perf_profile.json"))
    return runs


def gate(baseline, current):
    out = subprocess.run([LAPTIME, "gate", "--replicates", "1000", "--baseline", *baseline,
                          "--current", *current], capture_output=True, text=True)
    return out.returncode, out.stdout


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--runs-a-side", type=int, default=6)
    a.add_argument("--trials", type=int, default=100, help="A/A splits")
    a.add_argument("--planted-trials", type=int, default=60)
    a.add_argument("--pool", type=int, default=36)
    a.add_argument("--slowed", type=int, default=18)
    a.add_argument("--seed", type=int, default=1)
    o = a.parse_args()
    k = o.runs_a_side
    pool = take("same", o.pool, [])
    slowed = take("slowed", o.slowed, ["--slow", "stage_spread=1.10"])
    rng = random.Random(o.seed)
    false_alarms = 0
    for _ in range(o.trials):
        pick = rng.sample(pool, 2 * k)
        false_alarms += gate(pick[:k], pick[k:])[0] != 0
    found = 0
    for _ in range(o.planted_trials):
        code, md = gate(rng.sample(pool, k), rng.sample(slowed, k))
        named = any(l.startswith("| stage_spread") and "REGRESSION" in l for l in md.splitlines())
        found += code == 1 and named
    print(f"{k} runs a side: A/A failed {false_alarms} of {o.trials}; "
          f"planted 10 % found {found} of {o.planted_trials}")


if __name__ == "__main__":
    main()
