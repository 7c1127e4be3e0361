#!/usr/bin/env bash
# Instructions per hit of a `#[cached]` function (memory backend, 1 KB value), without and with
# the runtime's `metrics` feature (plus a Prometheus recorder), counted by callgrind: each build
# runs N and 2N hits, and the difference divided by N is one hit. Needs valgrind.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n="${1:-20000}"
count() { # binary hits -> instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '| build | instructions per hit |\n|---|---|\n'
for features in "" "metrics"; do
    cargo build -q --release -p bench --bin hit-cost ${features:+--features "$features"}
    bin="${CARGO_TARGET_DIR:-target}/release/hit-cost"
    a=$(count "$bin" "$n")
    b=$(count "$bin" "$((2 * n))")
    printf '| %s | %s |\n' "${features:-default}" "$(( (b - a) / n ))"
done
