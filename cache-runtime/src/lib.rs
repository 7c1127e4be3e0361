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
#![warn(missing_docs)]

mod backend;
mod breaker;
mod cache;
mod codec;
mod entry;
mod error;
mod flight;
mod invalidation;
mod key;
mod load;
mod policy;
mod protocol;
mod refresh;
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
pub use cache::{
    Cache, CacheBuilder, DEFAULT_LOCK_MS, DEFAULT_MAX_VALUE_BYTES, DEFAULT_MEMORY_MAX_BYTES,
    DEFAULT_NAMESPACE, MAX_LOCK_MS, global, install,
};
pub use codec::Codec;
pub use error::{BackendError, BackendErrorKind, Error};
pub use key::{KeyPart, MAX_PART_LEN, write_encoded};
pub use policy::{
    CachedPolicy, DEFAULT_NEVER_INVALIDATED_SECS, InvalidatePolicy, Policies, PolicyProblem,
    TypedKey, check_policies, policies, policy_report,
};
pub use stats::{FnStats, Stats};

/// Caches an async function's result under a key rendered from its arguments.
///
/// See the crate documentation and the README's attribute reference.
pub use cache_macros::cached;

/// Deletes the listed keys after the function succeeds (for `Result`, only on `Ok`).
///
/// See the crate documentation and the README's attribute reference.
pub use cache_macros::invalidates;
