#!/usr/bin/env bash
# Runs the quality gates (rustfmt, clippy and rustdoc with warnings as errors, the module
# import-cycle check scripts/check-module-dag.sh, the Markdown link check scripts/check-links.sh),
# then the whole test suite: unit, integration
# (against private redis-server processes that the tests start themselves on free ports),
# trybuild UI tests, the example crates' tests (examples/catalog, examples/bench) and doc tests.
# The workspace-wide stages pass `--workspace` (`--all` for rustfmt): the workspace's default
# members leave the two example crates out.
# Installs redis-server and redis-cli first when one is missing and we are root (Debian/Ubuntu).
# Never uses a Redis on 6379.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The cluster tests (tests/tests/cluster.rs) also need redis-cli (`redis-cli --cluster create`).
need_server=0
if ! command -v redis-server >/dev/null 2>&1 && [[ -z "${CACHE_TESTS_REDIS_SERVER:-}" ]]; then
    need_server=1
fi
if ! command -v redis-cli >/dev/null 2>&1 && [[ -z "${CACHE_TESTS_REDIS_CLI:-}" ]]; then
    need_server=1
fi
if [[ "$need_server" == 1 ]]; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: redis-server or redis-cli not found; installing them with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends redis-server redis-tools
        # The package may start a system instance; the tests do not use it.
    else
        cat >&2 <<'MSG'
test.sh: the integration tests need the `redis-server` and `redis-cli` binaries on PATH.
Install them, then run this script again:
  Debian/Ubuntu:  sudo apt-get install -y redis-server redis-tools
  Fedora:         sudo dnf install -y redis
  macOS:          brew install redis
(or set CACHE_TESTS_REDIS_SERVER=/path/to/redis-server and CACHE_TESTS_REDIS_CLI=/path/to/redis-cli)
MSG
        exit 1
    fi
fi
echo "test.sh: using $(${CACHE_TESTS_REDIS_SERVER:-redis-server} --version)" >&2

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Run every stage even when an earlier one fails, so one run shows all failures.
status=0
# Quality gates first: formatting, lints (warnings are errors), docs (broken intra-doc links
# and other rustdoc warnings are errors), no import cycle between modules and no broken
# relative link in the Markdown files.
cargo fmt --all --check || status=1
cargo clippy --workspace --all-targets -- -D warnings || status=1
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps || status=1
bash scripts/check-module-dag.sh || status=1
bash scripts/check-links.sh || status=1
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets --no-fail-fast || status=1
else
    cargo test --workspace --all-targets --no-fail-fast || status=1
fi
cargo test --workspace --doc --no-fail-fast || status=1
# The workspace build unifies features: the catalog and the tests enable `metrics`. The library
# on its own (no optional feature: what a user who adds only `cache-runtime` compiles), its unit
# tests and the README's first command:
cargo test -p cache-runtime --lib --no-fail-fast || status=1
cargo run -p cache-runtime --example quickstart || status=1

if [[ "$status" != 0 ]]; then
    echo "test.sh: FAILED (see above)" >&2
else
    echo "test.sh: all gates and tests passed" >&2
fi
exit "$status"
