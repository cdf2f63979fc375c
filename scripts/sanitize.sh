#!/usr/bin/env bash
# The library's tests under a sanitizer (nightly, std rebuilt with -Zbuild-std):
#
#   scripts/sanitize.sh thread     ThreadSanitizer                      (target/tsan)
#   scripts/sanitize.sh address    AddressSanitizer + LeakSanitizer     (target/asan)
#
# Extra arguments go to `cargo nextest run` (e.g. a filter). nextest runs each test in its own
# process, so a report fails exactly the test that triggered it (TSan exits 66, ASan/LSan 1).
# Doctests are not run (nextest does not run them). The property tests run their usual case
# count (PROPTEST_CASES, 64). Cold: about 4-5 min per sanitizer on 2 cores, most of it rebuilding
# std and the dependencies with the sanitizer; warm, about 1 min (ASan) and 2 min (TSan).
#
# Before the suite, `address` runs one planted leak (`handoff::tests::planted_leak_for_lsan`, an
# ignored test that forgets a `Box`) and requires it to FAIL: a LeakSanitizer that is not on
# would otherwise pass everything silently.
#
# Prints `SKIP: ...` and exits 0 only when nightly or its rust-src component cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitizer="${1:-}"
case "$sanitizer" in
  thread) dir=tsan ;;
  address) dir=asan ;;
  *) echo "usage: scripts/sanitize.sh thread|address [nextest arguments]" >&2; exit 2 ;;
esac
shift

if ! out="$(rustup component add --toolchain nightly rust-src 2>&1)"; then
  echo "SKIP: $sanitizer sanitizer unavailable (rustup component add --toolchain nightly rust-src: $(tail -n1 <<<"$out"))"
  exit 0
fi

# --target is required: without it RUSTFLAGS also reach build scripts and proc-macros, and cargo
# refuses to mix sanitized and unsanitized crates. -Zbuild-std: TSan reports false races inside
# an uninstrumented std (libtest's channel), see ../shared/RECIPES.md §3.
target=x86_64-unknown-linux-gnu
export RUSTFLAGS="-Zsanitizer=$sanitizer -Cdebuginfo=1"
export RUSTDOCFLAGS="-Zsanitizer=$sanitizer"
export CARGO_TARGET_DIR="${SANITIZE_TARGET_DIR:-$PWD/target/$dir}"
# halt_on_error: the first report ends the test process with a non-zero status.
# second_deadlock_stack: a lock-order report names both acquisitions.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
# detect_leaks=1 is LSan's default with ASan on Linux; said explicitly so no inherited setting
# turns it off. detect_stack_use_after_return catches a reference to a dead stack frame.
mkdir -p "$CARGO_TARGET_DIR"
supp="$CARGO_TARGET_DIR/lsan.supp"
# The tests' own `Box::leak`s: the API takes stage names as `&'static str`, so tests leak the
# names they format. LSan reports one whenever nothing keeps it: a name used only to build other
# names (`common::unique` in tests/prometheus.rs, tests/profile.rs), a proptest failure-file path
# dropped with its `Config` (`common::proptest_config`, every model file), names the registry
# refuses (the two tests named). Each entry matches any frame of the allocation's stack: the two
# helper names only their own allocations, the two test names every allocation those two tests
# make, so those two run under ASan without leak checking. (First run, before this list: 12
# "Direct leak" reports, each allocated by one of these `Box::leak`s and nothing else.)
cat >"$supp" <<'SUPP'
leak:common::unique
leak:common::proptest_config
leak:stage::tests::bad_names_and_labels_are_typed_errors
leak:past_the_cap_registration_fails_and_hot_path_calls_are_counted_not_recorded
SUPP
export LSAN_OPTIONS="suppressions=$supp print_suppressions=1 ${LSAN_OPTIONS:-}"
export ASAN_OPTIONS="halt_on_error=1 detect_leaks=1 detect_stack_use_after_return=1 ${ASAN_OPTIONS:-}"
# A panic's backtrace is symbolised from the sanitized binaries' debug info, which takes about
# 8 s here; inside the aggregator (tests that inject panics) that outlasts `flush`'s 5 s wait and
# fails the test for a reason that has nothing to do with the sanitizer. Sanitizer reports carry
# their own stacks.
export RUST_BACKTRACE=0
# The live Prometheus/Chromium tests skip without CI; with CI set they would fail for lack of
# the tools rather than for anything a sanitizer says.
unset CI

# Everything the integration tests need, except `report` (its PNG tests need a system font and
# are about pixels, not memory safety).
features=test-util,prometheus,http,profile,trace,config
# ui: trybuild compares compiler output, which differs on nightly and says nothing about memory.
# ops_live, prometheus_live: they build and run the demo with cargo, which inherits RUSTFLAGS
# without --target and refuses to build build scripts with a sanitizer; they test Prometheus
# rules and dashboards against a real server, not memory. loom: compiled out without its cfg.
filter='not (binary(ui) | binary(ops_live) | binary(prometheus_live))'

run() {
  cargo +nightly nextest run -Zbuild-std --target "$target" --features "$features" \
    --no-fail-fast "$@"
}

start=$SECONDS
if [[ "$sanitizer" == address ]]; then
  echo "sanitize: planted leak first: LeakSanitizer must fail it"
  planted="$CARGO_TARGET_DIR/planted-leak.log"
  if run --lib --run-ignored only -E 'test(=handoff::tests::planted_leak_for_lsan)' \
    >"$planted" 2>&1; then
    cat "$planted"
    echo "sanitize: FAIL: the planted leak passed: LeakSanitizer is not catching leaks" >&2
    exit 1
  fi
  if ! grep -q "ERROR: LeakSanitizer: detected memory leaks" "$planted"; then
    cat "$planted"
    echo "sanitize: FAIL: the planted leak failed, but not with a LeakSanitizer report" >&2
    exit 1
  fi
  echo "sanitize: planted leak caught: $(grep -m1 'SUMMARY: AddressSanitizer' "$planted")"
fi

echo "sanitize: -Zsanitizer=$sanitizer, features $features, filter '$filter'"
run --lib --tests -E "$filter" "$@"
echo "sanitize: $sanitizer: done in $((SECONDS - start)) s"
