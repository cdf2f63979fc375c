#!/usr/bin/env bash
# Type-checks Grafana dashboard JSON files against the published schema types (npm
# `@grafana/schema`, the `Dashboard` type) with `tsc --noEmit`; exits non-zero on a type error.
#
#   scripts/check_dashboard.sh [DASHBOARD.json ...]     (default: ops/grafana/dashboard.json)
#
# Each file is inlined into a .ts file as an object literal typed as `Dashboard`, so excess
# properties are errors too (a misspelt key fails, not only a wrong type). One relaxation: JSON
# holds an enum's value, never the TypeScript enum itself, so string enums (`ThresholdsMode`) are
# checked as the union of their values ("absolute" | "percentage"). Panel `options` and
# `fieldConfig.custom` are `Record<string, unknown>` in the schema, so they are not checked.
# Before the real files it checks a broken copy of the first one and requires tsc to reject it,
# so a check that cannot fail is caught. Needs `npm` and network to the npm registry; without npm
# it skips with a message, unless CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."

files=("$@")
[ ${#files[@]} -gt 0 ] || files=(ops/grafana/dashboard.json)
for f in "${files[@]}"; do
    [ -f "$f" ] || { echo "check_dashboard: no such file: $f" >&2; exit 2; }
done

if ! command -v npm >/dev/null; then
    if [ -n "${CI:-}" ]; then
        echo "check_dashboard: npm is missing (CI is set, so this fails)" >&2
        exit 1
    fi
    echo "check_dashboard: npm is missing; skipped the Grafana schema check"
    exit 0
fi

dir="${CARGO_TARGET_DIR:-target}/dashcheck"
mkdir -p "$dir"
if [ ! -d "$dir/node_modules/@grafana/schema" ] || [ ! -d "$dir/node_modules/typescript" ]; then
    (cd "$dir" && { [ -f package.json ] || npm init -y >/dev/null; } \
        && npm install --no-audit --no-fund --loglevel=error typescript @grafana/schema >/dev/null)
fi
cat >"$dir/tsconfig.json" <<'JSON'
{ "compilerOptions": { "strict": true, "noEmit": true, "module": "esnext",
                       "moduleResolution": "bundler", "target": "es2022", "skipLibCheck": true },
  "files": ["check.ts"] }
JSON

# Writes $dir/check.ts typing each JSON file (argv) as a Dashboard; the JSON is inlined verbatim
# (JSON is a TypeScript expression).
write_ts() {
    {
        echo "import type { Dashboard } from '@grafana/schema';"
        echo "// JSON carries an enum's value: a string enum is checked as the union of its values."
        echo 'type Json<T> = T extends string ? `${T}` : T extends readonly (infer U)[] ? Json<U>[]'
        echo '    : T extends object ? { [K in keyof T]: Json<T[K]> } : T;'
        local i=0
        for f in "$@"; do
            echo "// $f"
            printf 'export const d%d: Json<Dashboard> = ' "$i"
            cat "$f"
            echo ";"
            i=$((i + 1))
        done
    } >"$dir/check.ts"
}

# The check must be able to fail: a panel height as a string and a misspelt key are rejected.
broken="$dir/broken.json"
sed -e '0,/"h": [0-9]*/s//"h": "8"/' -e '0,/"datasource":/s//"datasouce":/' "${files[0]}" >"$broken"
write_ts "$broken"
if (cd "$dir" && npx --no-install tsc -p . >broken.out 2>&1); then
    echo "check_dashboard: tsc accepted a broken dashboard ($broken); the check is not working" >&2
    exit 1
fi
grep -q "TS2322" "$dir/broken.out" || { cat "$dir/broken.out" >&2; exit 1; }

write_ts "${files[@]}"
if ! (cd "$dir" && npx --no-install tsc -p .); then
    echo "check_dashboard: FAILED: ${files[*]} do not type-check as @grafana/schema Dashboard" >&2
    exit 1
fi
version=$(cd "$dir" && node -p 'require("@grafana/schema/package.json").version')
echo "check_dashboard: ${files[*]} type-check as @grafana/schema $version Dashboard (tsc --noEmit)"
