#!/usr/bin/env bash
# Each of laptime's features alone (with `enable`, and `enable` alone), then the full set: checked
# and unit-tested, so a feature that only builds beside another is caught. Features unify within
# one cargo invocation, hence one invocation per feature set.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every feature in Cargo.toml's [features] table but `default` and `enable`.
features=$(sed -n '/^\[features\]/,/^\[/p' Cargo.toml | grep -oE '^[a-z][a-z0-9-]*' | grep -vxE 'default|enable')
[ -n "$features" ] || { echo "features.sh: no features found in Cargo.toml" >&2; exit 2; }

run() {
  printf -- '--- %s\n' "$*"
  cargo check -p laptime --quiet "$@"
  cargo test -p laptime --lib --quiet "$@"
}

run --no-default-features --features enable
for f in $features; do
  run --no-default-features --features "enable,$f"
done
run --all-features
