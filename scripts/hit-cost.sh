#!/usr/bin/env bash
# Instructions per hit of a `#[cached]` function (1 KB value), counted by callgrind: each build
# runs N and 2N hits, and the difference divided by N is one hit. Needs valgrind.
#
#   scripts/hit-cost.sh [N]          memory backend, without and with the `metrics` feature
#   scripts/hit-cost.sh --redis [N]  the Redis hit path (one GET; the client's instructions
#                                    only) against a private redis-server, default features:
#                                    `#[cached]`, `Cache::get_or_load` (same key, value, TTL)
#                                    and hand-written redis-rs (GET + serde_json), one row each
#                                    (VARIANTS="cached hand" for a subset)
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
count() { # binary hits mode -> instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" $redis $3 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
# The variants of the Redis hit path (`cached` is the binary's default: no mode argument).
if [ -n "$redis" ] && [ -z "$mode" ]; then
    read -r -a variants <<< "${VARIANTS:-cached api hand}"
else
    variants=("${mode:-cached}")
fi
label() {
    case "$1" in
        cached) echo '#[cached]' ;; api) echo 'get_or_load' ;; hand) echo 'hand-written redis-rs' ;;
        near) echo '#[cached] local_ttl' ;; *) echo "$1" ;;
    esac
}
printf '| build | backend | variant | instructions per hit |\n|---|---|---|---|\n'
if [ -n "$redis" ]; then builds=(""); else builds=("" "metrics"); fi
for features in "${builds[@]}"; do
    cargo build -q --release -p bench --bin hit-cost ${features:+--features "$features"}
    bin="${CARGO_TARGET_DIR:-target}/release/hit-cost"
    for v in "${variants[@]}"; do
        arg=$v
        [ "$v" = cached ] && arg=""
        a=$(count "$bin" "$n" "$arg")
        b=$(count "$bin" "$((2 * n))" "$arg")
        printf '| %s | %s | %s | %s |\n' "${features:-default}" "$( [ -n "$redis" ] && echo redis || echo memory )" "$(label "$v")" "$(( (b - a) / n ))"
    done
done
