#!/usr/bin/env bash
# Compile time of a crate with N `#[cached]` functions (default 50) against a cache-runtime
# checkout: generates a binary crate (which calls each function) under target/compile-time/, builds its dependencies once,
# then times 3 rebuilds of the crate alone (debug) and prints the best.
#   scripts/compile_time.sh [path/to/cache-runtime] [N]        (PROFILE=release for --release)
# PLAIN=1: the same crate with plain async fns (no attribute), the baseline: (cached - plain) / N
# is the cost of one `#[cached]` function. Prints wall time and CPU time (user + sys of the
# build: less disturbed than wall time by other work on a shared machine); best of 3 each.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runtime="$(cd "${1:-$root/cache-runtime}" && pwd)"
n="${2:-50}"
base="$root/target/compile-time/$(echo "$runtime" | md5sum | cut -c1-8)"
plain="${PLAIN:-}"
dir="$base${plain:+-plain}"
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "compile-time-probe${plain:+-plain}"
version = "0.0.0"
edition = "2024"
publish = false
[workspace]
[dependencies]
cache-runtime = { path = "$runtime" }
serde = { version = "1", features = ["derive"] }
tokio = { version = "1", features = ["rt", "macros"] }
TOML
{
  # Plain: the attribute's import and the cache parameter are unused (no warnings printed).
  [[ -n "$plain" ]] && echo '#![allow(unused)]'
  echo 'use cache_runtime::{cached, Cache};'
  echo '#[derive(Clone, serde::Serialize, serde::Deserialize)] pub struct Row { pub id: u64, pub name: String }'
  for i in $(seq 1 "$n"); do
    [[ -z "$plain" ]] && echo "#[cached(key = \"f$i:{id}\", ttl = 60, cache = cache)]"
    echo "pub async fn f$i(cache: &Cache, id: u64) -> Result<Option<Row>, String> { Ok(Some(Row { id, name: \"r$i\".into() })) }"
  done
  # Call every function, so that their futures (and the runtime code they instantiate) are
  # compiled, as in a real service.
  echo '#[tokio::main(flavor = "current_thread")] async fn main() {'
  echo '  let cache = Cache::builder().memory().build().await.expect("cache");'
  for i in $(seq 1 "$n"); do echo "  let _ = f$i(&cache, $i).await;"; done
  echo '}'
} > "$dir/src/main.rs"
rm -f "$dir/src/lib.rs"
# One target directory for both variants (the dependencies are built once).
export CARGO_TARGET_DIR="$base/target"
flags=(--quiet --manifest-path "$dir/Cargo.toml")
[[ "${PROFILE:-debug}" == release ]] && flags+=(--release)
cargo build "${flags[@]}"
best=""
best_cpu=""
TIMEFORMAT='%U %S'
for _ in 1 2 3; do
  touch "$dir/src/main.rs"
  start=$(date +%s.%N)
  cpu=$( { time cargo build "${flags[@]}" >&2; } 2>&1 | tail -n1 | awk '{print $1 + $2}')
  t=$(echo "$(date +%s.%N) - $start" | bc)
  if [[ -z "$best" ]] || (( $(echo "$t < $best" | bc) )); then best=$t; fi
  if [[ -z "$best_cpu" ]] || (( $(echo "$cpu < $best_cpu" | bc) )); then best_cpu=$cpu; fi
done
printf 'compile time (%s) of %s %s fns against %s: best of 3 = %.2f s wall, %.2f s cpu\n' \
  "${PROFILE:-debug}" "$n" "$([[ -n "$plain" ]] && echo plain || echo '#[cached]')" "$runtime" "$best" "$best_cpu"
