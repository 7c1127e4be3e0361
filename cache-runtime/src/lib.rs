//! Compile-time-checked Redis cache-aside for async Rust.
//!
//! Put `#[cached]` on an async function and get a keyed lookup, one loader per key under a
//! stampede (across processes), cached "not found", TTL jitter, and `#[invalidates]` that
//! deletes keys after a successful write. Key templates are checked by the compiler.
//!
//! ```
//! use cache_runtime::{cached, invalidates, Cache};
//!
//! #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct User { id: u64, name: String }
//!
//! #[derive(Debug)]
//! struct DbError;
//!
//! #[cached(key = "user:{id}", ttl = 300, jitter = 30)]
//! async fn get_user(id: u64) -> Result<Option<User>, DbError> {
//!     // load from the database
//!     Ok((id == 1).then(|| User { id, name: "ada".into() }))
//! }
//!
//! #[invalidates("user:{id}")]
//! async fn rename_user(id: u64, name: &str) -> Result<(), DbError> {
//!     let _ = name; // write to the database
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Without `cache_runtime::install(..)`, the embedded in-memory cache is used.
//! assert_eq!(get_user(1).await.unwrap().unwrap().name, "ada");   // miss: loads
//! assert_eq!(get_user(1).await.unwrap().unwrap().name, "ada");   // hit
//! assert_eq!(get_user(2).await.unwrap(), None);                   // cached "not found"
//! rename_user(1, "grace").await.unwrap();                         // deletes "user:1"
//! let stats = cache_runtime::global().stats();
//! assert_eq!(stats.function(concat!(module_path!(), "::get_user")).hits, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # What is in the box
//!
//! The guide in the repository (`docs/guide/`, one page per topic, table of contents in
//! `docs/guide/SUMMARY.md`) is the long form of this page; the attribute reference below is
//! its `attributes.md`.
//!
//! - **The `Cache`**: [`Cache::builder`] picks the backend (`.redis(url)`,
//!   `.redis_cluster([urls])` or the bounded in-process `.memory()`), the namespace, timeouts
//!   and limits; [`install`] makes one the default, `cache = expr` on an attribute names
//!   another. [`Cache::stats`] returns per-function counters ([`Stats`], [`FnStats`]).
//! - **The programmatic API**: [`Cache::get_or_load`], [`Cache::get_or_load_optional`],
//!   [`Cache::peek`], [`Cache::set`] and [`Cache::expire`] with [`EntryOptions`], the engine
//!   the attributes expand to.
//! - **How a call works**: a hit is one `GET` and one decode; a miss takes a one-key lease
//!   (`SET NX PX`) so that one loader runs per key across processes, while callers in the same
//!   process share one in-process flight; the result is stored only if the lease is still
//!   ours, so a load that started before an invalidation never stores its older value.
//! - **Failure behaviour**: Redis is an optimisation, never a dependency. Every call has a
//!   timeout, a circuit breaker stops paying them, calls fall back to the loader, and failed
//!   invalidations are retried ([`Cache::shutdown`] delivers what is left).
//! - **Freshness beyond TTL** (all optional arguments of `#[cached]`): `stale = N`
//!   (stale-while-revalidate with fail-safe), `early_refresh = B` (XFetch), `timeout_ms = N`
//!   (soft timeout), `tags = [..]` with `#[invalidates(tags = [..])]` and
//!   [`Cache::invalidate_tag`], and `cache_if = path`.
//! - **Near cache**: `local_ttl = N` keeps a decoded copy in process, kept coherent by Redis
//!   `CLIENT TRACKING` pushes.
//! - **Policy as data**: every annotated function registers a description at link time;
//!   [`policies`] lists them; [`Policies::report`] renders and [`Policies::check`] checks them, and
//!   `#[invalidates(get_user(id))]` renders the key through `get_user`'s own template.
//! - **Observability**: counters in [`Stats`]; with the `metrics` feature, the same counters
//!   on the [`metrics`](https://docs.rs/metrics) facade (`cache_hits_total{fn}`, ...,
//!   `cache_load_seconds{fn}`) and one `tracing` span per call with its outcome.
//!
//! # Cargo features
//!
//! | feature | what |
//! |---|---|
//! | `metrics` | counters and the load-duration histogram on the `metrics` facade, one `tracing` span per call |
//! | `msgpack` | the MessagePack value codec ([`Codec::MessagePack`]) |
//! | `tls` | `rediss://` URLs (rustls) and [`CacheBuilder::tls_root_ca_pem`] |
//! | `uuid` | [`KeyPart`] for `uuid::Uuid` |
//! | `test-util` | test hooks, not a stable API: `CacheBuilder::xfetch_seed` (seeded early-refresh draws) and `Cache::__on_near_push` |
//!
#![doc = include_str!("../../docs/guide/attributes.md")]
#![warn(missing_docs)]

mod api;
mod backend;
mod breaker;
mod builder;
mod cache;
mod call;
mod codec;
mod engine;
mod entry;
mod error;
mod flight;
mod global;
mod invalidation;
mod key;
mod near;
mod options;
mod policy;
mod retry;
mod shape_check;
mod spec;
mod stats;
mod store;
#[cfg(feature = "metrics")]
mod telemetry;

/// What the `#[cached]` / `#[invalidates]` expansions call. Not a stable API.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use breaker::BreakerState;
pub use builder::CacheBuilder;
pub use cache::Cache;
pub use codec::Codec;
pub use error::{BackendError, BackendErrorKind, Error};
pub use global::{global, install};
pub use key::{KeyPart, write_encoded};
pub use options::{EntryOptions, Peek};
pub use policy::{
    CachedPolicy, InvalidatePolicy, Policies, PolicyProblem, TemplateSegment, TypedKey, policies,
};
pub use stats::{FnStats, Stats};

/// The defaults and limits of every setting, in one place.
///
/// ```
/// use cache_runtime::limits;
///
/// assert_eq!(limits::DEFAULT_LOCK_MS, 5000);
/// assert!(limits::MAX_ENTRY_LIFE.as_secs() >= 100 * 365 * 24 * 3600);
/// ```
pub mod limits {
    pub use crate::cache::{
        DEFAULT_LOCK_MS, DEFAULT_MAX_VALUE_BYTES, DEFAULT_MEMORY_MAX_BYTES, DEFAULT_NAMESPACE,
        MAX_LOCK_MS,
    };
    pub use crate::key::MAX_PART_LEN;
    pub use crate::options::{DEFAULT_OPTIONS_NAME, MAX_ENTRY_LIFE, MAX_OPTION_NAMES};
    pub use crate::policy::DEFAULT_NEVER_INVALIDATED_SECS;
}

/// Caches an async function's result under a key rendered from its arguments.
///
/// Required: `key = "tmpl"` (placeholders `{param}` / `{param.field}`, checked by the
/// compiler) and `ttl = N` (seconds). Optional: `jitter`, `negative_ttl`, `lock_ms`, `stale`,
/// `early_refresh`, `timeout_ms`, `local_ttl`, `tags`, `cache_if`, `key_fn`, `cache`, `name`, `returns`,
/// `crate`; the return shape decides what is cached (`Option`: `None` is a negative entry,
/// `Result`: `Err` is never cached). Every argument is described in the
/// [attribute reference](crate#attribute-reference) (the guide's `attributes.md`).
pub use cache_macros::cached;

/// Deletes the listed keys after the function succeeds (for `Result`, only on `Ok`).
///
/// Keys are string templates (`"user:{id}"`) or typed calls of the `#[cached]` function
/// whose key they delete (`get_user(id)`, `Self::profile(id)`); `tags = [..]` voids every
/// entry carrying a rendered tag. See the
/// [attribute reference](crate#attribute-reference).
pub use cache_macros::invalidates;

/// The examples of the README and of the guide's pages (`docs/guide/`), compiled and run as
/// doc tests, so that what users copy compiles. (`attributes.md` is the crate's own docs.)
#[cfg(doctest)]
mod doc_pages {
    #[doc = include_str!("../../README.md")]
    struct Readme;
    #[doc = include_str!("../../docs/guide/cache.md")]
    struct CachePage;
    #[doc = include_str!("../../docs/guide/programmatic-api.md")]
    struct ProgrammaticApi;
    #[doc = include_str!("../../docs/guide/freshness.md")]
    struct Freshness;
    #[doc = include_str!("../../docs/guide/policy.md")]
    struct Policy;
    #[doc = include_str!("../../docs/guide/failure.md")]
    struct Failure;
    #[doc = include_str!("../../docs/guide/cluster.md")]
    struct Cluster;
    #[doc = include_str!("../../docs/guide/near-cache.md")]
    struct NearCache;
    #[doc = include_str!("../../docs/guide/observability.md")]
    struct Observability;
    #[doc = include_str!("../../docs/guide/protocol.md")]
    struct Protocol;
    #[doc = include_str!("../../docs/guide/limits.md")]
    struct Limits;
    #[doc = include_str!("../../docs/guide/design.md")]
    struct Design;
}
