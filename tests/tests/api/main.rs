//! The programmatic API and its options: `get_or_load` and friends with `EntryOptions`, every
//! pair of options on every backend, and the options' edges.

mod option_edges;
mod option_pairs;
mod programmatic;

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, EntryOptions, FnStats};
use cache_tests::source::Source;

/// How long a test waits for something that should happen at once.
const BOUND: Duration = Duration::from_secs(10);

/// The value a [`Source`] returns for `version` on its `run`-th load.
fn v(version: u64, run: u64) -> String {
    Source::value(version, run)
}

/// The counters of `name`.
fn st(cache: &Cache, name: &str) -> FnStats {
    cache.stats().function(name)
}

/// `get_or_load` with a loader that runs `src` once.
async fn gol(
    cache: &Cache,
    key: &str,
    opts: &EntryOptions,
    src: &Arc<Source>,
) -> Result<String, String> {
    let s = src.clone();
    cache
        .get_or_load(key, opts, move || async move { s.load().await })
        .await
}
