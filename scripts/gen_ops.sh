#!/usr/bin/env bash
# Regenerates ops/ (Prometheus rules, their promtool tests, the Grafana dashboard) from the demo's
# configuration file: ops/prometheus and ops/grafana for classic histograms, ops/native/ the same
# over native histograms (`laptime rules --native`, for a Prometheus run with
# --enable-feature=native-histograms against an exporter that sends native buckets).
# `scripts/gen_ops.sh --check` regenerates into a temporary directory and fails if the committed
# files differ (scripts/test.sh runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
config=demo/trading_tick.toml
cargo build --quiet -p laptime-cli --bin laptime
bin="${CARGO_TARGET_DIR:-target}/debug/laptime"
generate() {
  "$bin" rules --config "$config" --out "$1"
  "$bin" rules --native --config "$config" --out "$1/native"
}
if [[ "${1:-}" == "--check" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp" >/dev/null
  if ! diff -ru ops "$tmp"; then
    echo "ops/ is stale: run scripts/gen_ops.sh and commit the result" >&2
    exit 1
  fi
  echo "ops/ is up to date with $config"
else
  generate ops
fi
