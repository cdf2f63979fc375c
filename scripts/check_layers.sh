#!/usr/bin/env bash
# The engine names no edge (ARCHITECTURE.md, "The seam"): fails when an engine file imports a
# feature module (export, profile, trace, report, config) or carries a feature `cfg` other than
# `enable` and `test-util` (loom is a `--cfg`, not a feature). Features add sinks; they never add
# branches inside the engine.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=(src/aggregator src/collector src/recorder src/recorder.rs src/record.rs src/stats src/stage.rs
        src/ring.rs src/clock.rs src/hist.rs src/sink.rs src/limits.rs src/sla.rs)
failed=0
# Only the paths that exist (the check must also run on an older tree, to show it fails there).
present=()
for p in "${engine[@]}"; do [ -e "$p" ] && present+=("$p"); done

# grep exits 1 for no match; 2 is an error, which must not pass as "no match".
search() {
  local status=0
  grep "$@" || status=$?
  [ "$status" -le 1 ] || { echo "check_layers: grep failed ($status)" >&2; exit 2; }
}

# Edges named by path: `crate::export`, `crate::trace::…`, `use crate::{profile, …}`, `super::…`
# out of src/aggregator into an edge.
edges='crate::(export|profile|trace|report|config)\b|use crate::\{[^}]*\b(export|profile|trace|report|config)\b'
hits=$(search -rnE "$edges" "${present[@]}")
if [ -n "$hits" ]; then
  echo "engine files import a feature module (make it a sink instead):"
  echo "$hits"
  failed=1
fi

# Feature cfgs: every `feature = "…"` inside a cfg, except the two the engine may know.
hits=$(search -rnoE 'feature *= *"[^"]+"' "${present[@]}" | search -vE '"(enable|test-util)"$')
if [ -n "$hits" ]; then
  echo "engine files branch on a feature (a feature adds a sink, never a cfg in the engine):"
  echo "$hits"
  failed=1
fi

# The bridges are crates of their own (issue 18): the core's dependencies name no bridge's facade
# or wire crates (OTLP's definitions, its HTTP client), so a user who wants none builds none.
hits=$(sed -n '/^\[dependencies\]/,/^\[/p' Cargo.toml | search -nE '^(metrics|metrics-util|tracing|tracing-core|tracing-subscriber|opentelemetry|opentelemetry-proto|opentelemetry_sdk|ureq|laptime-metrics|laptime-tracing|laptime-otlp) *=')
if [ -n "$hits" ]; then
  echo "the core depends on a bridge's facade (keep it in bridges/):"
  echo "$hits"
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "layers: the engine (${#present[@]} paths) names no edge and branches on no feature but enable/test-util; the core depends on no bridge facade"
