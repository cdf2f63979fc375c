#!/usr/bin/env bash
# The heavy checks: too long for every CI run, meant for a nightly job or before a release.
#
#   scripts/heavy.sh                 every step below, in this order
#   scripts/heavy.sh tsan fuzz       only the steps named
#
# | step   | what                                                                    | time, warm |
# |--------|-------------------------------------------------------------------------|------------|
# | soak   | laptime-stress soak: steady load, memory slope, drops, aggregator lag   | SOAK_SECS  |
# | flood  | laptime-stress flood: producers far faster than the aggregator          | FLOOD_SECS |
# | churn  | laptime-stress churn: CHURN_THREADS short-lived threads, rings reclaimed | 10-20 s    |
# | endpoint | laptime-stress endpoint: /metrics under slow, idle and flooding clients | ~1 min   |
# | cardinality | laptime-stress cardinality: 5 000 symbols x 4 families, 200 000 rec/s | CARDINALITY_SECS |
# | stop   | tests/stop.rs 10 times: stops under 4 busy threads lose no admitted span | ~10 s      |
# | faults | tests/faults.rs and the suite's panic/hang/flood/clock-fault tests      | 30 s       |
# | tsan   | the library's tests under ThreadSanitizer (scripts/sanitize.sh thread)  | 1 min      |
# | asan   | ... under AddressSanitizer + LeakSanitizer (scripts/sanitize.sh address)| 1 min      |
# | loom   | every interleaving of the ring and handoff models (loom.sh --full)      | 8 min      |
# | miri   | ring + handoff two-thread tests under MIRI_SEEDS seeds (miri.sh --wide) | 3 min      |
# | fuzz   | cargo-fuzz: parse_profile, parse_config, http_request, FUZZ_SECS each   | 3 x FUZZ_SECS |
#
# Knobs (environment): SOAK_SECS=600, FLOOD_SECS=60, CHURN_THREADS=100000, CARDINALITY_SECS=60,
# FUZZ_SECS=180 (per target), MIRI_SEEDS=64. Times are on 2 cores with warm caches, about 35 min in all; a cold
# first run adds about 15 min of builds (std rebuilt for tsan, asan and miri, the fuzz targets,
# the release stress binary). RELIABILITY.md has a recorded run.
#
# Each step logs to target/heavy/<step>.log and prints one line: verdict (PASS, FAIL, or SKIP when
# a nightly component cannot be installed or a part is not in the tree), time and key figure;
# a summary table closes the run. Exits 1 if any step failed, 2 on a bad step name.
set -uo pipefail
cd "$(dirname "$0")/.."

export SOAK_SECS="${SOAK_SECS:-600}"
export FLOOD_SECS="${FLOOD_SECS:-60}"
export CHURN_THREADS="${CHURN_THREADS:-100000}"
export CARDINALITY_SECS="${CARDINALITY_SECS:-60}"
export FUZZ_SECS="${FUZZ_SECS:-180}"
export MIRI_SEEDS="${MIRI_SEEDS:-64}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The live Prometheus/Chromium tests skip without CI (they need tools this script does not set
# up); with CI set they would fail instead.
unset CI

out=target/heavy
mkdir -p "$out"
all=(soak flood churn endpoint cardinality stop faults tsan asan loom miri fuzz)
fuzz_targets=(parse_profile parse_config http_request)

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=("${all[@]}")
for s in "${steps[@]}"; do
  if [[ " ${all[*]} " != *" $s "* ]]; then
    echo "heavy: unknown step '$s'; steps are: ${all[*]}" >&2
    exit 2
  fi
done

stress_bin="${CARGO_TARGET_DIR:-target}/release/laptime-stress"

# laptime-stress <cmd> <args...>: builds it (a no-op after the first step), runs it with --json.
stress() {
  local cmd=$1
  shift
  if [[ ! -f stress/Cargo.toml ]]; then
    echo "SKIP: stress/ (the laptime-stress package) is not in the tree"
    return 0
  fi
  # A summary left by an earlier run must not stand in for this one's.
  rm -f "$out/$cmd.json"
  cargo build --release -p laptime-stress
  "$stress_bin" "$cmd" "$@" --json "$out/$cmd.json"
}

step_soak() { stress soak --secs "$SOAK_SECS"; }
step_flood() { stress flood --secs "$FLOOD_SECS"; }
step_churn() { stress churn --threads "$CHURN_THREADS"; }
step_endpoint() { stress endpoint; }
# Issue 15's target, every bound enforced.
step_cardinality() { stress cardinality --secs "$CARDINALITY_SECS"; }
# The lossless stop (issue 20) is a rare race: the test's 20 stops, ten times over.
step_stop() {
  local i
  for i in $(seq 10); do
    cargo nextest run --all-features --no-fail-fast -E 'binary(stop)' || return 1
  done
}

step_faults() {
  # The suite's own fault tests: panics in the aggregator, callbacks and measured code; hanging,
  # silent and flooding HTTP clients; clock jumps; stalls ("install" is not one); failures to
  # bind or create files.
  local filter='test(/panic|(^|[_:])hang|silent|flood|clock_(jump|stepping)|(^|[_:])stall|cannot_be_created|bind_failure|drops_health/)'
  if [[ -f tests/faults.rs ]]; then
    filter="binary(faults) or $filter"
  else
    echo "heavy: tests/faults.rs is not in the tree: running the suite's fault tests only"
  fi
  cargo nextest run --all-features --no-fail-fast -E "$filter"
}

step_tsan() { scripts/sanitize.sh thread; }
step_asan() { scripts/sanitize.sh address; }
step_loom() { scripts/loom.sh --full; }
step_miri() { scripts/miri.sh --wide; }

step_fuzz() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    echo "SKIP: cargo-fuzz needs the nightly toolchain, which is not installed"
    return 0
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    if ! cargo install cargo-fuzz --locked; then
      echo "SKIP: cargo install cargo-fuzz --locked failed"
      return 0
    fi
  fi
  local failed=0
  for t in "${fuzz_targets[@]}"; do
    echo "heavy: fuzz $t for $FUZZ_SECS s"
    mkdir -p "fuzz/corpus/$t"
    # New inputs go to the first directory (the corpus, not committed); the regressions seed it.
    # -timeout: an input that takes 10 s is reported as a hang.
    # Absolute paths: cargo fuzz runs the target from fuzz/.
    if ! cargo +nightly fuzz run "$t" "$PWD/fuzz/corpus/$t" "$PWD/fuzz/regressions/$t" -- \
      -max_total_time="$FUZZ_SECS" -timeout=10 -print_final_stats=1; then
      echo "heavy: FUZZ FAILURE in $t: the input is in fuzz/artifacts/$t/ (see above)"
      failed=1
    fi
  done
  return $failed
}

# The one figure that sums a step up, from its log.
figure() {
  local s=$1 log=$out/$1.log
  case $s in
    soak | flood | churn | endpoint | cardinality)
      # laptime-stress's summary: how many checks held, and the step's headline figures.
      local wanted
      case $s in
        soak) wanted='["rss_slope_kib_per_min", "dropped_total", "lag_p99_us", "lag_max_us"]' ;;
        flood) wanted='["calls_per_sec", "drop_fraction", "recovery_ms", "heartbeat_p99_us"]' ;;
        churn) wanted='["threads_per_sec", "rss_growth_kib", "heap_live_growth_kib"]' ;;
        endpoint) wanted='[]' ;;
        cardinality) wanted='["vm_hwm_mib", "rss_per_series_kib", "cycle_p99_ms", "lag_p99_ms", "dropped", "get_all_stats_ms_p50", "render_ms_p50"]' ;;
      esac
      if [[ -f $out/$s.json ]]; then
        jq -r --argjson wanted "$wanted" '
          (.figures + (reduce .checks[] as $c ({}; .[$c.name] = $c.measured))) as $all
          | "\([.checks[] | select(.passed)] | length)/\(.checks | length) checks held; "
            + ([$wanted[] | select($all[.] != null) | "\(.) \($all[.] | if type == "number"
                 then (. * 100 | round / 100) else . end)"] | join(", "))' "$out/$s.json"
      else
        tail -n1 "$log"
      fi
      ;;
    faults | tsan | asan | stop) grep -E '^ +Summary' "$log" | tail -n1 | sed 's/^ *Summary *//' ;;
    loom)
      grep -oE '[0-9]+ interleavings' "$log" |
        awk '{n++; s+=$1} END {if (n) printf "%d models, %d interleavings in all\n", n, s}'
      ;;
    miri)
      # Seeds run on both cores and their output interleaves: count the markers, not the lines.
      echo "$(grep -c '^miri: ok:' "$log") passes; $(grep -o 'Trying seed: [0-9]*' "$log" | wc -l)" \
        "seeded runs ($MIRI_SEEDS each on the ring and the handoff), tree borrows included"
      ;;
    fuzz)
      # libFuzzer's final line per target: "#<runs> DONE cov: <c> ... exec/s: <e> ..."
      awk '/^heavy: fuzz / {t=$3} /DONE +cov:/ {
             for (i = 1; i <= NF; i++) { if ($i == "cov:") c = $(i+1); if ($i == "exec/s:") e = $(i+1) }
             r = $1; sub("#", "", r); printf "%s%s %s runs %s/s cov %s", sep, t, r, e, c; sep = "; " }
           END { print "" }' "$log"
      ;;
  esac
}

declare -A verdict took fig
failed=0
for s in "${steps[@]}"; do
  log=$out/$s.log
  t0=$SECONDS
  # Each step in a subshell with errexit: its first failing command fails the step only.
  (
    set -euo pipefail
    "step_$s"
  ) >"$log" 2>&1
  rc=$?
  took[$s]=$((SECONDS - t0))
  if [[ $rc -ne 0 ]]; then
    verdict[$s]=FAIL
    failed=1
    fig[$s]="$(figure "$s" 2>/dev/null) (exit $rc, $log)"
  elif skip=$(grep -m1 '^SKIP:' "$log"); then
    verdict[$s]=SKIP
    fig[$s]=${skip#SKIP: }
  else
    verdict[$s]=PASS
    fig[$s]=$(figure "$s")
  fi
  printf 'heavy: %-6s %-4s %6s s  %s\n' "$s" "${verdict[$s]}" "${took[$s]}" "${fig[$s]}"
done

echo
echo "| step | verdict | time (s) | key figure |"
echo "|---|---|---|---|"
for s in "${steps[@]}"; do
  printf '| %s | %s | %s | %s |\n' "$s" "${verdict[$s]}" "${took[$s]}" "${fig[$s]}"
done
echo
echo "logs: $out/<step>.log; machine: $(nproc) cores, $(uname -srm)"
exit $failed
