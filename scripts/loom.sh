#!/usr/bin/env bash
# loom models of the SPSC ring and of ring registration/reclamation (tests/loom.rs).
#
#   scripts/loom.sh          bounded (LOOM_MAX_PREEMPTIONS=3): what CI runs, about 2 s once built
#   scripts/loom.sh --full   every interleaving: 9.7 M of them, 5.5-8 min on 2 cores (RELIABILITY.md)
#
# `--cfg laptime_loom` (our own cfg name: tokio, a dev-dependency, breaks under a global
# `--cfg loom`) builds the library down to ring + handoff + sync, in its own target directory so the
# normal build cache is not invalidated. Each model prints how many interleavings it explored.
set -euo pipefail
cd "$(dirname "$0")/.."

preemptions="${LOOM_MAX_PREEMPTIONS:-3}"
if [[ "${1:-}" == "--full" ]]; then
  preemptions=""
  shift
fi

export RUSTFLAGS="--cfg laptime_loom"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-$PWD/target/loom}"
start=$SECONDS
if [[ -n "$preemptions" ]]; then
  echo "loom: LOOM_MAX_PREEMPTIONS=$preemptions"
  LOOM_MAX_PREEMPTIONS="$preemptions" cargo test --release --test loom -- --nocapture "$@"
else
  echo "loom: unbounded preemptions"
  env -u LOOM_MAX_PREEMPTIONS cargo test --release --test loom -- --nocapture "$@"
fi
echo "loom: done in $((SECONDS - start)) s"
