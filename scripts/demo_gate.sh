#!/usr/bin/env bash
# The perf gate on real profiles, as a pipeline would run it: runs of the demo from one build must
# pass the noise-aware gate against each other (A/A, exit 0), and runs with one stage's work made
# 10 % slower must fail it (exit 1) with that stage named as the regression.
#
# Runs of one build differ from each other far more than the values inside one run say: on a
# 2-core machine another process wakes up or a thread lands on the busy core, and a run's p95
# moves by 10-45 %. So each side is several runs, given to the gate as runs (`--baseline a b c`):
# its two-level bootstrap resamples the runs, and their spread widens the intervals. The runs are
# also interleaved, baseline, current, slowed, baseline, ..., so slow drift lands on every side.
#
# Even so an A/A comparison of six runs a side fails about 2 % of the time here (100 random
# six-against-six splits of 36 runs of one build; benches/README.md): now and then one side draws
# most of the runs that a busy neighbour slowed, and no statistic can tell that from a regression
# that slows some runs. So a failed A/A is confirmed on fresh runs before it fails the step, as a
# pipeline would retry a suspected regression; a gate that fails A/A for a real reason fails both.
# Everything (profiles, golden traces, reports, gate reports) stays under target/demo-gate/.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/demo-gate
seconds=${DEMO_GATE_SECONDS:-2}
rounds=${DEMO_GATE_ROUNDS:-6}
slowed=stage_spread

cargo build --release --quiet -p laptime-demo --features config,report
cargo build --release --quiet -p laptime-cli
demo=target/release/trading_tick
laptime=target/release/laptime
rm -rf "$out" && mkdir -p "$out"

run() { # side, round, extra demo arguments...
  local side=$1 round=$2
  shift 2
  "$demo" --seconds "$seconds" --config demo/trading_tick.toml \
    --artifacts "$out/$side-$round" "$@" >"$out/$side-$round.log"
}
rounds_of() { # side names (a side named slowed gets the planted slowdown)
  for round in $(seq "$rounds"); do
    for side in "$@"; do
      if [ "$side" = slowed ]; then
        run "$side" "$round" --slow "$slowed=1.10"
      else
        run "$side" "$round"
      fi
    done
  done
}
rounds_of baseline current slowed
echo "demo: $rounds interleaved rounds of $seconds s per side under $out/"

gate() { # name, baseline side, current side -> prints the exit code
  local status=0
  "$laptime" gate --baseline "$out/$2"-*/perf_profile.json --current "$out/$3"-*/perf_profile.json \
    --report "$out/gate-$1.md" >/dev/null || status=$?
  echo "$status"
}

status=$(gate aa baseline current)
if [ "$status" != 0 ]; then
  echo "A/A gate: exited $status on the first set of runs; confirming on fresh runs. Its report:"
  grep -E '^\*\*|REGRESSION' "$out/gate-aa.md" || true
  rounds_of again_baseline again_current
  status=$(gate aa-again again_baseline again_current)
  if [ "$status" != 0 ]; then
    echo "FAIL: two A/A comparisons of sets of runs of one build exited $status, not 0:" >&2
    cat "$out/gate-aa-again.md" >&2
    exit 1
  fi
  echo "A/A gate: pass on the fresh runs (exit 0), report $out/gate-aa-again.md"
else
  echo "A/A gate: pass (exit 0), report $out/gate-aa.md"
fi

status=$(gate planted baseline slowed)
if [ "$status" != 1 ]; then
  echo "FAIL: the gate exited $status, not 1, on runs with $slowed 10 % slower:" >&2
  cat "$out/gate-planted.md" >&2
  exit 1
fi
if ! grep -E "^\| *\`?$slowed\`? .*REGRESSION" "$out/gate-planted.md" >/dev/null; then
  echo "FAIL: the gate failed the slowed runs but did not name $slowed as a regression:" >&2
  cat "$out/gate-planted.md" >&2
  exit 1
fi
echo "planted gate: regression in $slowed found (exit 1), report $out/gate-planted.md"

for side in baseline slowed; do
  "$laptime" merge --name "demo-$side" -o "$out/$side.json" "$out/$side"-*/perf_profile.json
done
"$laptime" report "$out/slowed.json" --baseline "$out/baseline.json" -o "$out/report-planted.html"
echo "report with both sides overlaid: $out/report-planted.html"
