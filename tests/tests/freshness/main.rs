//! Freshness beyond TTL: the grace window (`stale`), early refresh, soft timeouts, fail-safe,
//! the refresh lease, and what the `#[cached]` expansion does with these arguments.

mod freshness;
mod freshness_expansion;
mod refresh_lease;
