//! The correctness checks around the hit path: every variant returns the right value and hits
//! after the fill; no loader runs while the hit path is measured; every measured call of a
//! grace-window variant is served stale, and every one of a near variant is a near hit.

use cache_runtime::{Cache, FnStats};
use serde::Serialize;

use crate::KEYS;
use crate::cases::{Variant, call, ctx, loads};
use crate::measure::Acc;
use crate::value::sample_item;

/// Fills every hot key of every variant and checks each returns the right value, and that a
/// second call is a hit.
pub(crate) async fn fill_and_verify(all: &[Variant]) -> Result<(), Box<dyn std::error::Error>> {
    for &v in all {
        // The near variant: the first call loads, the second is a Redis hit (the copy of the
        // first was evicted by the push of the fill), from the third on near hits.
        let passes = if v.backend() == "near" { 3 } else { 1 };
        for _ in 0..passes {
            for id in 0..KEYS {
                let got = call(v, id).await?;
                if *got.item() != sample_item(id) {
                    return Err(format!("{v:?} returned a wrong value for {id}").into());
                }
            }
        }
        let again = call(v, 0).await?;
        if *again.item() != sample_item(0) || loads(v) != KEYS {
            return Err(format!("{v:?}: second call was not a hit").into());
        }
    }
    Ok(())
}

/// The grace-window variants' counters over the measured hit path.
#[derive(Debug, Serialize)]
pub(crate) struct StaleCheck {
    pub(crate) case: String,
    /// Measured calls (all rounds, both concurrencies).
    pub(crate) calls: u64,
    pub(crate) stale_served: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    /// Refreshes started (and held at the gate) over the whole run.
    pub(crate) refreshes: u64,
}

/// The near-cache variant's counters over the measured hit path.
#[derive(Debug, Serialize)]
pub(crate) struct NearCheck {
    /// Measured calls (all rounds, both concurrencies).
    pub(crate) calls: u64,
    pub(crate) local_hits: u64,
    pub(crate) redis_hits: u64,
    pub(crate) misses: u64,
}

/// The grace-window functions: variant, cache, function name.
fn stale_fns() -> [(Variant, &'static Cache, &'static str); 2] {
    [
        (Variant::RedisOursStale, &ctx().redis_msgpack, "redis_stale"),
        (Variant::MemOursStale, &ctx().mem_msgpack, "mem_stale"),
    ]
}

/// The near functions' local hits, Redis hits and misses.
fn near_counts() -> (u64, u64, u64) {
    let s = ctx().redis_msgpack.stats();
    let (a, b) = (s.function("near_item"), s.function("near_item_arc"));
    (
        a.local_hits + b.local_hits,
        a.hits + b.hits,
        a.misses + b.misses,
    )
}

/// The counters before the measured hit path (taken after the warm-up).
pub(crate) struct Before {
    loads: Vec<(Variant, u64)>,
    near: (u64, u64, u64),
    stale: Vec<FnStats>,
}

impl Before {
    pub(crate) fn take(all: &[Variant]) -> Before {
        let loads = all.iter().map(|&v| (v, loads(v))).collect();
        let near = near_counts();
        let stale = stale_fns()
            .iter()
            .map(|(_, cache, name)| cache.stats().function(name))
            .collect();
        Before { loads, near, stale }
    }

    /// Warns (stderr) about any loader run during the hit path.
    pub(crate) fn warn_loads(&self) {
        for &(v, before) in &self.loads {
            let extra = loads(v) - before;
            if extra > 0 {
                eprintln!("bench: warning: {v:?} ran its loader {extra} times during the hit path");
            }
        }
    }

    /// The grace-window variants' counters since [`Before::take`].
    pub(crate) fn serve_stale(&self, accs: &[Acc]) -> Vec<StaleCheck> {
        stale_fns()
            .iter()
            .zip(&self.stale)
            .map(|((v, cache, name), before)| {
                let after = cache.stats().function(name);
                StaleCheck {
                    case: format!("{} {}", v.backend(), v.label()),
                    calls: accs
                        .iter()
                        .filter(|a| a.case.variant == *v)
                        .map(|a| a.ops)
                        .sum(),
                    stale_served: after.stale_served - before.stale_served,
                    hits: after.hits - before.hits,
                    misses: after.misses - before.misses,
                    refreshes: after.refreshes,
                }
            })
            .collect()
    }

    /// The near variants' counters since [`Before::take`].
    pub(crate) fn near_hits(&self, accs: &[Acc]) -> NearCheck {
        let near_after = near_counts();
        NearCheck {
            calls: accs
                .iter()
                .filter(|a| matches!(a.case.variant, Variant::NearOurs | Variant::NearOursArc))
                .map(|a| a.ops)
                .sum(),
            local_hits: near_after.0 - self.near.0,
            redis_hits: near_after.1 - self.near.1,
            misses: near_after.2 - self.near.2,
        }
    }
}
