//! Procedural macros for `cache-runtime`: [`macro@cached`] and [`macro@invalidates`].
//!
//! Use them through `cache-runtime`, which re-exports both
//! (`use cache_runtime::{cached, invalidates};`); the generated code calls
//! `::cache_runtime::__private`. Parsing lives in `attr` (arguments) and
//! `template` (key and tag templates); code generation in `expand`, with
//! `refresh` for the owned arguments of a body that may run in the
//! background (`stale`, `early_refresh`, `timeout_ms`).

mod attr;
mod bindings;
mod expand;
mod policy;
mod refresh;
mod template;

use proc_macro::TokenStream;

/// Caches the result of an `async fn` in Redis (or the in-process backend):
/// a cache-aside with one loader per key under a stampede, cached `None`, and
/// keys checked at compile time.
///
/// ```ignore
/// use cache_runtime::cached;
///
/// #[cached(key = "user:{id}", ttl = 300, jitter = 30)]
/// async fn get_user(id: u64) -> Result<Option<User>, DbError> {
///     db.load_user(id).await
/// }
/// ```
///
/// Required: `key = "tmpl"` and `ttl = N`; every argument, the return types
/// and the key templates are described once, in the attribute reference:
/// `docs/guide/attributes.md` in the repository, included in the
/// `cache-runtime` crate documentation (use the macro through
/// `cache_runtime::cached`).
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(args.into(), item.into()).into()
}

/// Deletes cached keys after an `async fn` succeeds: for a `Result`, only
/// on `Ok`; for other return types, always.
///
/// ```ignore
/// use cache_runtime::invalidates;
///
/// #[invalidates(get_user(id), "users:list", tags = ["org:{org}"])]
/// async fn rename_user(id: u64, org: u64, name: &str) -> Result<(), DbError> {
///     db.rename(id, name).await
/// }
/// ```
///
/// Arguments (string templates, typed targets such as `get_user(id)`,
/// `tags`, `cache`, `name`, `returns`, `crate`): see the attribute reference,
/// `docs/guide/attributes.md` in the repository, included in the
/// `cache-runtime` crate documentation.
#[proc_macro_attribute]
pub fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::invalidates(args.into(), item.into()).into()
}
