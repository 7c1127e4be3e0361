//! Procedural macros for `cache-runtime`: [`macro@cached`] and [`macro@invalidates`].
//!
//! Use them through `cache-runtime`, which re-exports both
//! (`use cache_runtime::{cached, invalidates};`); the generated code calls
//! `::cache_runtime::__private`.
//!
//! A pipeline, as thiserror's: `args` (parse each attribute into a typed model) → `valid`
//! (rules across arguments, signature checks) → `expand` (code generation, one `emit` for
//! every expander), every stage reporting into one `ctxt::Ctxt`. Beside it: `template` (a
//! key or tag template, parsed once), `shape` (return shapes), `target` (the function the
//! macro wraps, `#[async_trait]` detection, pattern bindings), `owned` (owned copies for a
//! body that may run in the background), `alphabet` and `suggest`. ARCHITECTURE.md has the
//! module map.

mod alphabet;
mod args;
mod ctxt;
mod expand;
mod owned;
mod shape;
mod suggest;
mod target;
mod template;
mod valid;

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
