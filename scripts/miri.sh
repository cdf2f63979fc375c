#!/usr/bin/env bash
# Miri on the unsafe core: the ring's unit tests with strict provenance, the ring-vs-VecDeque
# property test with a few cases (`cfg!(miri)`), and the two-thread ring test under 16 schedules.
# About 1.5 min cold on 2 cores (sysroot ~30 s, build ~30 s, tests ~45 s).
#
#   scripts/miri.sh          the above: what scripts/test.sh runs
#   scripts/miri.sh --wide   the above, then the two-thread tests of the ring and of the ring
#                            handoff (registration, adoption, close, reclamation: the protocols
#                            tests/loom.rs models) under MIRI_SEEDS (default 64) scheduler seeds,
#                            the collector's whole publication protocol (install, registration,
#                            drain, snapshot store and load, stop) under PUBLICATION_SEEDS (default
#                            32), and the ring's tests once more under tree borrows.
#                            scripts/heavy.sh runs this.
#
# Under miri the clock is `Instant` (miri runs no CPUID or RDTSC), and the publication test runs
# without strict provenance (parking_lot_core, the collector's locks, casts integers to pointers)
# and without isolation (the collector reads the wall clock for its snapshots' timestamps). It
# also covers the hot path's thread-local slot (src/recorder/tls.rs): threads register, record
# and exit.
#
# Prints `SKIP: miri unavailable (...)` and exits 0 only when the nightly miri component cannot be
# installed; any other failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

wide=false
if [[ "${1:-}" == "--wide" ]]; then
  wide=true
  shift
fi
seeds="${MIRI_SEEDS:-64}"

if ! rustup toolchain list | grep -q '^nightly'; then
  if ! out="$(rustup toolchain install nightly --profile minimal --component miri,rust-src 2>&1)"; then
    echo "SKIP: miri unavailable (rustup could not install the nightly toolchain: $(tail -n1 <<<"$out"))"
    exit 0
  fi
fi
if ! out="$(rustup component add --toolchain nightly miri rust-src 2>&1)"; then
  echo "SKIP: miri unavailable (rustup component add --toolchain nightly miri rust-src: $(tail -n1 <<<"$out"))"
  exit 0
fi

export CARGO_TARGET_DIR="${MIRI_TARGET_DIR:-$PWD/target/miri}"
start=$SECONDS
cargo +nightly miri --version
cargo +nightly miri setup

# Runs one pass: a description, then the command; says how long it took.
pass() {
  local what=$1 t0=$SECONDS
  shift
  echo "miri: $what"
  "$@"
  echo "miri: ok: $what ($((SECONDS - t0)) s)"
}

pass "ring unit tests (strict provenance)" \
  env MIRIFLAGS="-Zmiri-strict-provenance" cargo +nightly miri test --lib ring::
pass "ring vs VecDeque property test (few cases under miri)" \
  env MIRIFLAGS="-Zmiri-strict-provenance" cargo +nightly miri test --test ring_model
if ! $wide; then
  pass "two-thread ring test under 16 scheduler seeds" \
    env MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-many-seeds=0..16" \
    cargo +nightly miri test --lib ring::tests::two_threads
else
  # Each seed is a different schedule of the same test; miri runs seeds on every core.
  pass "two-thread ring test under $seeds scheduler seeds" \
    env MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-many-seeds=0..$seeds" \
    cargo +nightly miri test --lib ring::tests::two_threads
  pass "ring handoff (two registering threads, the taker drains and closes) under $seeds seeds" \
    env MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-many-seeds=0..$seeds" \
    cargo +nightly miri test --lib handoff::tests::rings_handed_over
  pass "publication: install, two producers and a reader, drain, store, stop, under ${PUBLICATION_SEEDS:-32} seeds" \
    env MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-many-seeds=0..${PUBLICATION_SEEDS:-32}" \
    cargo +nightly miri test --lib collector::install::tests::publication
  pass "ring and handoff unit tests under tree borrows" \
    env MIRIFLAGS="-Zmiri-tree-borrows" cargo +nightly miri test --lib -- ring:: handoff::
fi
echo "miri: done in $((SECONDS - start)) s"
