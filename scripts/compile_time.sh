#!/usr/bin/env bash
# Compile time of a crate with N `#[cached]` functions (default 50) against a cache-runtime
# checkout: generates a binary crate (which calls each function) under target/compile-time/, builds its dependencies once,
# then times 3 rebuilds of the crate alone (debug) and prints the best.
#   scripts/compile_time.sh [path/to/cache-runtime] [N]        (PROFILE=release for --release)
# CALLS=handlers: each function is called from its own handler, a boxed `Send` future as a
# web framework's router makes of each route (`fn(&Cache) -> Pin<Box<dyn Future + Send>>`);
# CALLS=main (the default): one `main` awaits all N calls in a row, so that LLVM optimizes
# one function holding every call's inlined future.
# PLAIN=1: the same crate with plain async fns (no attribute), the baseline: (cached - plain) / N
# is the cost of one `#[cached]` function. Prints wall time and CPU time (user + sys of the
# build: less disturbed than wall time by other work on a shared machine); best of 3 each.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runtime="$(cd "${1:-$root/cache-runtime}" && pwd)"
n="${2:-50}"
calls="${CALLS:-main}"
hash="$(echo "$runtime" | md5sum | cut -c1-8)"
plain="${PLAIN:-}"
variant="$hash${plain:+-plain}$([[ "$calls" == main ]] || echo "-$calls")"
dir="$root/target/compile-time/$variant"
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "compile-time-probe-$variant"
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
  if [[ "$calls" == main ]]; then
    echo '#[tokio::main(flavor = "current_thread")] async fn main() {'
    echo '  let cache = Cache::builder().memory().build().await.expect("cache");'
    for i in $(seq 1 "$n"); do echo "  let _ = f$i(&cache, $i).await;"; done
    echo '}'
  else
    echo 'type Handler = for<'"'"'a> fn(&'"'"'a Cache) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '"'"'a>>;'
    for i in $(seq 1 "$n"); do
      echo "fn h$i(c: &Cache) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> { Box::pin(async move { let _ = f$i(c, $i).await; }) }"
    done
    echo "static ROUTES: [Handler; $n] = [$(seq -s, -f 'h%g' 1 "$n")];"
    echo '#[tokio::main(flavor = "current_thread")] async fn main() {'
    echo '  let cache = Cache::builder().memory().build().await.expect("cache");'
    echo '  for h in ROUTES { h(&cache).await; }'
    echo '}'
  fi
} > "$dir/src/main.rs"
rm -f "$dir/src/lib.rs"
# One target directory for every variant and runtime (the dependencies are built once).
export CARGO_TARGET_DIR="$root/target/compile-time/target"
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
printf 'compile time (%s, calls from %s) of %s %s fns against %s: best of 3 = %.2f s wall, %.2f s cpu\n' \
  "${PROFILE:-debug}" "$calls" "$n" "$([[ -n "$plain" ]] && echo plain || echo '#[cached]')" "$runtime" "$best" "$best_cpu"
