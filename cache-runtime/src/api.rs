//! The programmatic API: [`Cache::get_or_load`], [`Cache::get_or_load_optional`],
//! [`Cache::peek`], [`Cache::set`] and [`Cache::expire`]. The same engine as `#[cached]`
//! (the attributes are sugar over it): one lease per key across processes, in-process single
//! flight, negative entries, tags, the near cache, grace windows, XFetch, soft timeouts and
//! fail-open on backend failures.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, RESERVED_PREFIX};
use crate::call::hit::{self as load, NearArg};
use crate::call::miss::{self as protocol, Loaded};
use crate::entry::{self, Kind};
use crate::error::Error;
use crate::near::near_fns;
use crate::options::{EntryOptions, Peek};
use crate::spec::{FnSpec, Res, ResOpt, Shape};
use crate::stats::Counters;

fn check_key(key: &str) -> Result<(), Error> {
    if key.starts_with(RESERVED_PREFIX) {
        return Err(Error::Config(format!(
            "keys starting with `{RESERVED_PREFIX}` are reserved for tag member sets"
        )));
    }
    Ok(())
}

impl Cache {
    /// The value under `key` (a rendered key such as `"user:7"`, without the namespace), or
    /// the loader's result, cached as `opts` says.
    ///
    /// A hit is one `GET` (or a near copy with [`EntryOptions::local_ttl`]); on a miss one
    /// loader runs per key across processes (a lease in the store, a single flight in this
    /// process) and its `Ok` value is stored only if no invalidation of the key started
    /// meanwhile. `Err` is never cached and is returned unchanged. A backend failure never
    /// becomes the caller's error: the loader runs. The loader may run after the call
    /// returned (a background refresh with [`EntryOptions::stale`] or
    /// [`EntryOptions::early_refresh`]), hence `'static`. Options that do not
    /// [`validate`](EntryOptions::validate) make the call run its loader without the cache
    /// (logged as an error).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, EntryOptions};
    ///
    /// let cache = Cache::builder().memory().build().await?;
    /// let opts = EntryOptions::new(Duration::from_secs(300)).name("users.get");
    /// let id = 7;
    /// let name: Result<String, std::io::Error> = cache
    ///     .get_or_load(&format!("user:{id}"), &opts, move || async move { Ok(format!("user {id}")) })
    ///     .await;
    /// assert_eq!(name.unwrap(), "user 7");
    /// let again: Result<String, std::io::Error> =
    ///     cache.get_or_load("user:7", &opts, || async { unreachable!("a hit") }).await;
    /// assert_eq!(again.unwrap(), "user 7");
    /// assert_eq!(cache.stats().function("users.get").hits, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_load<V, E, F, Fut>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<V, E>
    where
        V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.run::<Res, Result<V, E>, F, Fut>(key, opts, loader)
            .await
    }

    /// As [`get_or_load`](Self::get_or_load), for a loader that may find nothing: `Ok(None)`
    /// is cached as a negative entry for [`EntryOptions::negative_ttl`] (default: the TTL),
    /// like `None` of a `#[cached]` function returning `Result<Option<T>, E>`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, EntryOptions, Peek};
    ///
    /// let cache = Cache::builder().memory().build().await?;
    /// let opts = EntryOptions::new(Duration::from_secs(300)).negative_ttl(Duration::from_secs(30));
    /// let found: Result<Option<u64>, std::io::Error> =
    ///     cache.get_or_load_optional("user:404", &opts, || async { Ok(None) }).await;
    /// assert_eq!(found.unwrap(), None);
    /// assert_eq!(cache.peek::<u64>("user:404").await?, Peek::NotFound);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_load_optional<V, E, F, Fut>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<Option<V>, E>
    where
        V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
    {
        self.run::<ResOpt, Result<Option<V>, E>, F, Fut>(key, opts, loader)
            .await
    }

    async fn run<S, R, F, Fut>(&self, key: &str, opts: &EntryOptions, loader: F) -> R
    where
        S: Shape<R> + 'static,
        S::Value: Clone + Sync,
        R: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        if let Some(why) = opts
            .problem()
            .map(str::to_owned)
            .or_else(|| check_key(key).err().map(|e| e.to_string()))
        {
            tracing::error!(
                cache.fn = opts.spec.name,
                problem = %why,
                "invalid cache options; running the loader without the cache"
            );
            return loader().await;
        }
        let spec: &Arc<FnSpec> = &opts.spec;
        let tags = opts.tags.clone();
        let load = move || (tags, loader());
        let mut owned = String::with_capacity(self.namespace().len() + 1 + key.len());
        owned.push_str(key);
        let hook = near_fns::<S::Value>().hook(self, spec);
        let call = async move {
            if spec.refreshes() {
                crate::call::freshness::get_or_load::<S, R, _, _, Arc<FnSpec>, _>(
                    self,
                    spec.clone(),
                    owned,
                    None,
                    hook,
                    load,
                )
                .await
            } else {
                load::get_or_load_with::<S, R, _, _, _>(self, spec, owned, None, hook, load).await
            }
        };
        #[cfg(feature = "metrics")]
        if crate::telemetry::calls_traced() {
            return crate::telemetry::traced(spec.name, call).await;
        }
        call.await
    }

    /// What the cache holds under `key`, without loading and without taking a lease: a fresh
    /// value, a stale one (in its grace window), a cached "not found", or nothing usable
    /// (no entry, a load in progress, bytes of another type or format). A backend failure is
    /// returned. The near cache is not consulted.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, EntryOptions, Peek};
    ///
    /// let cache = Cache::builder().memory().build().await?;
    /// assert_eq!(cache.peek::<String>("user:7").await?, Peek::Missing);
    /// cache.set("user:7", &"ada".to_string(), &EntryOptions::new(Duration::from_secs(60))).await?;
    /// assert_eq!(cache.peek::<String>("user:7").await?, Peek::Fresh("ada".into()));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn peek<V>(&self, key: &str) -> Result<Peek<V>, Error>
    where
        V: DeserializeOwned + 'static,
    {
        check_key(key)?;
        let full = self.full_key(key);
        let Some(raw) = load::get_full(self, &full).await? else {
            return Ok(Peek::Missing);
        };
        let Ok((h, payload)) = entry::decode(&raw) else {
            return Ok(Peek::Missing);
        };
        if h.kind == Kind::Lease || h.type_tag != entry::type_tag::<V>() {
            return Ok(Peek::Missing);
        }
        if h.kind == Kind::Negative {
            return Ok(Peek::NotFound);
        }
        let Some(v) = crate::Codec::from_id(h.codec).and_then(|c| c.decode::<V>(payload)) else {
            return Ok(Peek::Missing);
        };
        Ok(if h.fresh_until_ms >= entry::now_ms() {
            Peek::Fresh(v)
        } else {
            Peek::Stale(v)
        })
    }

    /// Stores `value` under `key` with `opts`' TTL, jitter, grace window and tags: a blind
    /// write, the last call wins (a load running for the key does not store its result
    /// afterwards). For a value read from the database after a write, prefer
    /// [`invalidate`](Self::invalidate): a blind write can race another writer. A value
    /// larger than `max_value_bytes` is not stored: the key is deleted instead (counted as
    /// `oversized`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, EntryOptions};
    ///
    /// let cache = Cache::builder().memory().build().await?;
    /// let opts = EntryOptions::new(Duration::from_secs(60));
    /// cache.set("user:7", &42u64, &opts).await?;
    /// let v: Result<u64, std::io::Error> =
    ///     cache.get_or_load("user:7", &opts, || async { unreachable!("stored") }).await;
    /// assert_eq!(v.unwrap(), 42);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set<V>(&self, key: &str, value: &V, opts: &EntryOptions) -> Result<(), Error>
    where
        V: Serialize + 'static,
    {
        opts.validate()?;
        check_key(key)?;
        let engine = &*self.engine;
        let spec = &*opts.spec;
        let full = self.full_key(key);
        let mut buf = entry::reserve(128);
        engine
            .codec()
            .encode(&mut buf, value)
            .map_err(|e| Error::Config(format!("value cannot be serialized: {e}")))?;
        self.void_local(&full);
        if buf.len() - entry::HEADER > engine.max_value_bytes() {
            let c = engine.counters(spec.name);
            Counters::bump(&c.oversized);
            engine.store().delete(std::slice::from_ref(&full)).await?;
            self.void_local(&full);
            return Ok(());
        }
        let fresh_ms = protocol::ttl_ms(spec.ttl_ms, spec.jitter_ms);
        let loaded = Loaded::Value(buf);
        let bytes = protocol::envelope(engine, entry::type_tag::<V>(), &loaded, fresh_ms, 0)
            .ok_or_else(|| Error::Config("value cannot be stored".into()))?;
        if !opts.tags.is_empty() {
            let tags: Vec<String> = opts.tags.iter().map(|t| engine.tag_key(t)).collect();
            let lock_ms = engine.lease_ms(spec);
            let life = protocol::member_life_ms(spec, lock_ms);
            engine.store().tag_add_all(&tags, &full, life).await?;
        }
        let put = engine
            .store()
            .put(&full, &bytes, protocol::stored_ms(spec, fresh_ms))
            .await;
        self.void_local(&full);
        Ok(put?)
    }

    /// Makes the entry under `key` stale now, keeping it for its grace window only: a
    /// function (or options) with `stale` serves it stale while ONE refresh reloads it, and
    /// keeps serving it if that refresh fails (fail-safe); an entry without a grace window is
    /// deleted, as by [`invalidate`](Self::invalidate). A load or refresh running for the key
    /// does not store its result afterwards.
    ///
    /// Expire trades the freshness promise for availability: a read right after it may get
    /// the old value (once per grace window and process), where after `invalidate` no read
    /// does.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, EntryOptions, Peek};
    ///
    /// let cache = Cache::builder().memory().build().await?;
    /// let opts = EntryOptions::new(Duration::from_secs(60)).stale(Duration::from_secs(60));
    /// cache.set("user:7", &1u64, &opts).await?;
    /// cache.expire("user:7").await?;
    /// assert_eq!(cache.peek::<u64>("user:7").await?, Peek::Stale(1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn expire(&self, key: &str) -> Result<(), Error> {
        check_key(key)?;
        let full = self.full_key(key);
        self.void_local(&full);
        let r = self.engine.store().expire(&full, entry::now_ms()).await;
        self.void_local(&full);
        Ok(r?)
    }

    /// Detaches this process's flights of `full` and evicts its near copy.
    fn void_local(&self, full: &str) {
        self.engine.void(full);
        if let Some(near) = self.engine.near() {
            near.evict(full);
        }
    }
}
