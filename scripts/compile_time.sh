#!/usr/bin/env bash
# Compile time of a crate with N `#[cached]` functions (default 50) against a cache-runtime
# checkout: generates a binary crate (which calls each function) under target/compile-time/, builds its dependencies once,
# then times 3 rebuilds of the crate alone (debug) and prints the best.
#   scripts/compile_time.sh [path/to/cache-runtime] [N]        (PROFILE=release for --release)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runtime="$(cd "${1:-$root/cache-runtime}" && pwd)"
n="${2:-50}"
dir="$root/target/compile-time/$(echo "$runtime" | md5sum | cut -c1-8)"
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "compile-time-probe"
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
  echo 'use cache_runtime::{cached, Cache};'
  echo '#[derive(Clone, serde::Serialize, serde::Deserialize)] pub struct Row { pub id: u64, pub name: String }'
  for i in $(seq 1 "$n"); do
    echo "#[cached(key = \"f$i:{id}\", ttl = 60, cache = cache)]"
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
export CARGO_TARGET_DIR="$dir/target"
flags=(--quiet --manifest-path "$dir/Cargo.toml")
[[ "${PROFILE:-debug}" == release ]] && flags+=(--release)
cargo build "${flags[@]}"
best=""
for _ in 1 2 3; do
  touch "$dir/src/main.rs"
  start=$(date +%s.%N)
  cargo build "${flags[@]}"
  t=$(echo "$(date +%s.%N) - $start" | bc)
  if [[ -z "$best" ]] || (( $(echo "$t < $best" | bc) )); then best=$t; fi
done
printf 'compile time (%s) of %s #[cached] fns against %s: best of 3 = %.2f s\n' "${PROFILE:-debug}" "$n" "$runtime" "$best"
