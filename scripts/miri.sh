#!/usr/bin/env bash
# Miri on the unsafe core: the ring's unit tests with strict provenance, the ring-vs-VecDeque
# property test with a few cases (`cfg!(miri)`), and the two-thread ring test under 16 schedules.
# About 1.5 min cold on 2 cores (sysroot ~30 s, build ~30 s, tests ~45 s).
#
# Prints `SKIP: miri unavailable (...)` and exits 0 only when the nightly miri component cannot be
# installed; any other failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

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

echo "miri: ring unit tests (strict provenance)"
MIRIFLAGS="-Zmiri-strict-provenance" cargo +nightly miri test --lib ring::

echo "miri: ring vs VecDeque property test (few cases under miri)"
MIRIFLAGS="-Zmiri-strict-provenance" cargo +nightly miri test --test ring_model

echo "miri: two-thread ring test under 16 scheduler seeds"
MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-many-seeds=0..16" \
  cargo +nightly miri test --lib ring::tests::two_threads
echo "miri: done in $((SECONDS - start)) s"
