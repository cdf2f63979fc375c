#!/usr/bin/env bash
# The perf gate on real profiles, as a pipeline would run it: runs of the demo from one build must
# pass the noise-aware gate against each other (A/A, exit 0), and runs with one stage's work made
# 10 % slower must fail it (exit 1) with that stage named as the regression.
#
# The gate's intervals cover sampling noise, not drift between runs (another process waking up on
# this 2-core machine slows everything after it). So the runs are interleaved, baseline, current,
# slowed, baseline, ..., and each side's runs are merged with `laptime merge`, as a pipeline would
# merge the profiles of several processes: drift then lands on every side alike.
# Everything (profiles, golden traces, reports, gate reports) stays under target/demo-gate/.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/demo-gate
seconds=${DEMO_GATE_SECONDS:-3}
rounds=${DEMO_GATE_ROUNDS:-2}
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
for round in $(seq "$rounds"); do
  run baseline "$round"
  run current "$round"
  run slowed "$round" --slow "$slowed=1.10"
done
for side in baseline current slowed; do
  "$laptime" merge --name "demo-$side" -o "$out/$side.json" "$out/$side"-*/perf_profile.json
done
echo "demo: $rounds interleaved rounds of $seconds s per side, merged into $out/{baseline,current,slowed}.json"

gate() { # name, baseline, current -> prints the exit code
  local status=0
  "$laptime" gate --baseline "$out/$2.json" --current "$out/$3.json" --report "$out/gate-$1.md" \
    >/dev/null || status=$?
  echo "$status"
}

status=$(gate aa baseline current)
if [ "$status" != 0 ]; then
  echo "FAIL: the A/A comparison of two sets of runs of one build exited $status, not 0:" >&2
  cat "$out/gate-aa.md" >&2
  exit 1
fi
echo "A/A gate: pass (exit 0), report $out/gate-aa.md"

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

"$laptime" report "$out/slowed.json" --baseline "$out/baseline.json" -o "$out/report-planted.html"
echo "report with both sides overlaid: $out/report-planted.html"
