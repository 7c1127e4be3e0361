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
//! The README of the repository is the long form of this page (with every guarantee, its
//! proof and the benchmark figures); the sections below follow it.
//!
//! - **The `Cache`**: [`Cache::builder`] picks the backend (`.redis(url)`,
//!   `.redis_cluster([urls])` or the bounded in-process `.memory()`), the namespace, timeouts and limits; [`install`] makes one the
//!   default, `cache = expr` on an attribute names another. [`Cache::stats`] returns
//!   per-function counters ([`Stats`], [`FnStats`]).
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
//! - **Policy as data**: every annotated function registers a description at link time;
//!   [`policies`], [`policy_report`] and [`check_policies`] list, render and check them, and
//!   `#[invalidates(get_user(id))]` renders the key through `get_user`'s own template.
//! - **Observability**: counters in [`Stats`]; with the `metrics` feature, the same counters
//!   on the [`metrics`](https://docs.rs/metrics) facade (`cache_hits_total{fn}`, ...,
//!   `cache_load_seconds{fn}`) and one `tracing` span per call with its outcome.
//!
//! ```
//! use cache_runtime::{cached, invalidates};
//!
//! // Served stale for up to 60 s after `ttl` while one background refresh reloads it; tagged
//! // with its organisation.
//! #[cached(key = "user:{id}", ttl = 300, stale = 60, tags = ["org:{org}"])]
//! async fn user_name(id: u64, org: u64) -> String {
//!     format!("user {id} of org {org}")
//! }
//!
//! // Typed: renders `user:{id}` through `user_name`'s template (a renamed function or a
//! // wrong argument type is a compile error). Tags void every entry carrying them.
//! #[invalidates(user_name(id))]
//! async fn rename(id: u64) {}
//!
//! #[invalidates(tags = ["org:{org}"])]
//! async fn reorganise(org: u64) {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! assert_eq!(user_name(1, 7).await, "user 1 of org 7");
//! rename(1).await;
//! reorganise(7).await;
//! // The cache-policy table, and a check that every invalidation deletes something:
//! let mine = cache_runtime::policies().in_module(module_path!());
//! println!("{}", mine.report());
//! assert!(mine.check().is_empty(), "{:?}", mine.check());
//! # }
//! ```
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
#![warn(missing_docs)]

mod api;
mod backend;
mod breaker;
mod builder;
mod cache;
mod call;
mod codec;
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
pub use cache::{
    Cache, DEFAULT_LOCK_MS, DEFAULT_MAX_VALUE_BYTES, DEFAULT_MEMORY_MAX_BYTES, DEFAULT_NAMESPACE,
    MAX_LOCK_MS,
};
pub use codec::Codec;
pub use error::{BackendError, BackendErrorKind, Error};
pub use global::{global, install};
pub use key::{KeyPart, MAX_PART_LEN, write_encoded};
pub use options::{DEFAULT_OPTIONS_NAME, EntryOptions, MAX_ENTRY_LIFE, MAX_OPTION_NAMES, Peek};
pub use policy::{
    CachedPolicy, DEFAULT_NEVER_INVALIDATED_SECS, InvalidatePolicy, Policies, PolicyProblem,
    TemplateSegment, TypedKey, check_policies, policies, policy_report,
};
pub use stats::{FnStats, Stats};

/// Caches an async function's result under a key rendered from its arguments.
///
/// Required: `key = "tmpl"` (placeholders `{param}` / `{param.field}`, checked by the
/// compiler) and `ttl = N` (seconds). Optional: `jitter`, `negative_ttl`, `lock_ms`, `stale`,
/// `early_refresh`, `timeout_ms`, `local_ttl`, `tags`, `cache_if`, `key_fn`, `cache`, `name`, `returns`,
/// `crate`; the return shape decides what is cached (`Option`: `None` is a negative entry,
/// `Result`: `Err` is never cached). Every argument is described in the README's attribute
/// reference and in [`cache_macros::cached`](macro@cache_macros::cached).
pub use cache_macros::cached;

/// Deletes the listed keys after the function succeeds (for `Result`, only on `Ok`).
///
/// Keys are string templates (`"user:{id}"`) or typed calls of the `#[cached]` function
/// whose key they delete (`get_user(id)`, `Self::profile(id)`); `tags = [..]` voids every
/// entry carrying a rendered tag. See the README's attribute reference and
/// [`cache_macros::invalidates`](macro@cache_macros::invalidates).
pub use cache_macros::invalidates;
