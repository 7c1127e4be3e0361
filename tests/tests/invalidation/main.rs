//! Invalidation: `#[invalidates]` and its retry queue, cancelled invalidations, tags and tag
//! memberships under races, and conditional caching.

mod invalidation;
mod invalidation_cancel;
mod invalidation_queue;
mod invalidation_retry;
mod tag_membership;
mod tags;
