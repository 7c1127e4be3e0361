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
/// # Arguments
///
/// | argument | meaning |
/// |---|---|
/// | `key = "tmpl"` | required: the key template, see below |
/// | `ttl = N` | required: seconds, `N > 0` |
/// | `jitter = N` | optional seconds in `0..=ttl`; the stored TTL is uniform in `[ttl, ttl + jitter]` |
/// | `negative_ttl = N` | TTL of a cached `None` / `Ok(None)`; default `ttl`; `0` = don't cache `None` |
/// | `lock_ms = N` | stampede lease length in milliseconds; default from the `Cache` |
/// | `stale = N` | grace seconds after `ttl` (`N > 0`): a call in the grace window gets the stale value at once while one background refresh reloads it |
/// | `early_refresh = B` | XFetch's `B`, a float literal `> 0` (`1.0` is the paper's optimum): hits refresh in the background with a probability rising as expiry nears |
/// | `timeout_ms = N` | soft loader timeout (`N > 0`, requires `stale`): past `N` ms the call returns the stale value and the load goes on in the background |
/// | `local_ttl = N` | near cache (`0 < N <= ttl`; the stored type must be `Clone + Sync`): keep a decoded copy of a Redis hit in this process for up to `N` s (at most 10 minutes, never past the entry's grace end), evicted by `CLIENT TRACKING` pushes; combines with every other argument (with `stale`, a copy in its grace window is served stale while one refresh runs) |
/// | `key_fn = bool` | whether `#[cached]` emits the hidden key function typed invalidations call (`false` for a receiver-less fn in a trait impl) |
/// | `tags = ["tmpl", ..]` | tag templates (same rules as the key) naming groups the entry belongs to, voided by `#[invalidates(tags = [..])]` |
/// | `cache_if = path` | a `fn(&T) -> bool` (`T`: the stored value) deciding whether a loaded value is stored |
/// | `cache = expr` | the `Cache` to use (`&Cache`, `Cache`, `Arc<Cache>`, e.g. `self.cache`); default: the installed global |
/// | `name = "..."` | name in stats and tracing; default: module path + fn name |
/// | `returns = "..."` | `"plain"`, `"option"`, `"result"` or `"result_option"`: overrides the shape read from the return type |
/// | `crate = path` | path of the runtime crate if it is not `::cache_runtime` |
///
/// # Owned arguments (`stale`, `early_refresh`, `timeout_ms`)
///
/// With any of these, the runtime may run the body in the background after
/// the call returned, so the body works on owned copies of the parameters it
/// uses: `x: T` is cloned, `x: &T` is copied with `ToOwned` and borrowed
/// back (the body still sees `&T`), `&self` is cloned and every `self` of the
/// body reads the clone (`Self: Clone + Send + Sync + 'static`; under
/// `#[async_trait]` the receiver is always copied). They must be
/// `Clone + Send + 'static`. Compile errors, if the body uses them: `&mut`
/// parameters, types that borrow (`Option<&str>`) and destructured
/// parameters. Parameters only the key or the tags use are not copied.
///
/// # Key templates
///
/// `{param}` renders a parameter, `{param.field.sub}` a field, `{self.field}`
/// a field of the receiver; `{{` and `}}` are literal braces. Every
/// placeholder's type must implement `KeyPart`. Two placeholders must be
/// separated by text containing a character other than `[A-Za-z0-9_.%~]`
/// (for example `:`), so that different arguments never render the same key.
///
/// # Return types
///
/// `T`, `Option<T>` (`None` is cached as a negative entry), `Result<T, E>`
/// (`Err` is never cached) and `Result<Option<T>, E>`, decided by the last
/// path segment of the return type: `Result`, or any name ending in `Result`
/// with generic arguments (so `io::Result<T>`, `anyhow::Result<T>` and
/// `ApiResult<T>` work); `T` must be `Serialize + DeserializeOwned + Send +
/// 'static`. When the shape is read as plain but the type resolves to a
/// `Result` or `Option` (an alias such as `type Answer = Result<User, E>`),
/// compilation fails rather than cache `Err`/`None` as a value: set
/// `returns = ".."`.
///
/// The function must be `async`. It may be a free fn, a generic fn, or a
/// method taking `&self` in an inherent or trait impl, including an
/// `#[async_trait]` impl (there the macro caches the boxed `async` block that
/// `#[async_trait]` generates).
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(args.into(), item.into()).into()
}

/// Deletes cached keys after an `async fn` succeeds: for a `Result`, only
/// on `Ok`; for other return types, always. The keys are rendered from the
/// arguments before the body runs, and deleted before the function returns.
///
/// ```ignore
/// use cache_runtime::invalidates;
///
/// #[invalidates("user:{id}", "users:list")]
/// async fn rename_user(id: u64, name: &str) -> Result<(), DbError> {
///     db.rename(id, name).await
/// }
/// ```
///
/// Arguments: key templates (same syntax as in [`macro@cached`]), then
/// optionally `tags = ["tmpl", ..]` (tag templates: every entry carrying a
/// rendered tag is voided; at least one key template or tag is required),
/// `cache = expr`, `name = "..."`, `returns = "..."` and `crate = path` with
/// the same meaning as there.
#[proc_macro_attribute]
pub fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::invalidates(args.into(), item.into()).into()
}
