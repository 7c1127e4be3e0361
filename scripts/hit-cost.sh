#!/usr/bin/env bash
# Instructions per hit of a `#[cached]` function (1 KB value), counted by callgrind: each build
# runs N and 2N hits, and the difference divided by N is one hit. Needs valgrind.
#
#   scripts/hit-cost.sh [N]          memory backend, without and with the `metrics` feature
#   scripts/hit-cost.sh --redis [N]  the Redis hit path (one GET; the client's instructions
#                                    only) against a private redis-server, default features
#   scripts/hit-cost.sh --near [N]   near-cache hits (`local_ttl`) on that private server
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
redis=""
mode=""
if [ "${1:-}" = "--redis" ] || [ "${1:-}" = "--near" ]; then
    [ "$1" = "--near" ] && mode="near"
    shift
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null &
    server=$!
    trap 'kill $server; rm -rf "$dir"' EXIT
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
    redis="redis://127.0.0.1:$port/"
fi
n="${1:-20000}"
count() { # binary hits -> instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" $redis $mode 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '| build | backend | instructions per hit |\n|---|---|---|\n'
if [ -n "$redis" ]; then builds=(""); else builds=("" "metrics"); fi
for features in "${builds[@]}"; do
    cargo build -q --release -p bench --bin hit-cost ${features:+--features "$features"}
    bin="${CARGO_TARGET_DIR:-target}/release/hit-cost"
    a=$(count "$bin" "$n")
    b=$(count "$bin" "$((2 * n))")
    printf '| %s | %s | %s |\n' "${features:-default}" "$( [ -n "$redis" ] && echo "redis${mode:+ $mode}" || echo memory )" "$(( (b - a) / n ))"
done
