//! [`EntryOptions`]: the policy of the programmatic API, the same one `#[cached]` arguments
//! describe, and [`Peek`], what [`Cache::peek`](crate::Cache::peek) finds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::cache::{MAX_LOCK_MS, RESERVED_PREFIX};
use crate::error::Error;
use crate::spec::FnSpec;
use crate::stats::CounterSlot;

/// The stats name of calls whose options have no [`name`](EntryOptions::name).
pub const DEFAULT_OPTIONS_NAME: &str = "cache_runtime::get_or_load";
/// Distinct [`EntryOptions::name`]s a process may use (names are kept for the life of the
/// process, as stats keys); further names are counted under `cache_runtime::other`.
pub const MAX_OPTION_NAMES: usize = 4096;

/// How an entry is cached: its TTL and every optional behaviour of `#[cached]`, as a value.
///
/// Cheap to clone (the policy is behind an `Arc`); build it once and reuse it for every call
/// of one kind of entry. Every option combines with every other; a value that cannot keep
/// its promises (a zero TTL, `jitter` above `ttl`, ...) is reported by
/// [`validate`](Self::validate), and a call given such options runs its loader without the
/// cache (logged as an error).
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::EntryOptions;
///
/// let opts = EntryOptions::new(Duration::from_secs(300))
///     .jitter(Duration::from_secs(30))
///     .negative_ttl(Duration::from_secs(60))
///     .stale(Duration::from_secs(60))
///     .soft_timeout(Duration::from_millis(50))
///     .tags(["org:7"])
///     .name("users.get");
/// assert!(opts.validate().is_ok());
/// assert!(EntryOptions::new(Duration::ZERO).validate().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct EntryOptions {
    pub(crate) spec: Arc<FnSpec>,
    pub(crate) tags: Vec<String>,
    problem: Option<Arc<str>>,
}

/// Whole milliseconds, rounded up (a positive duration is never 0 ms).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

impl EntryOptions {
    /// Options with a TTL (freshness) of `ttl`, which must be at least 1 ms.
    pub fn new(ttl: Duration) -> Self {
        let spec = FnSpec {
            name: DEFAULT_OPTIONS_NAME,
            ttl_ms: ms(ttl),
            jitter_ms: 0,
            negative_ttl_ms: None,
            lock_ms: None,
            stale_ms: 0,
            early_refresh: 0.0,
            timeout_ms: 0,
            local_ttl_ms: 0,
            slot: CounterSlot::new(),
        };
        EntryOptions {
            spec: Arc::new(spec),
            tags: Vec::new(),
            problem: None,
        }
        .checked()
    }

    fn with(mut self, f: impl FnOnce(&mut FnSpec)) -> Self {
        f(Arc::make_mut(&mut self.spec));
        self.checked()
    }

    fn checked(mut self) -> Self {
        self.problem = problem(&self.spec, &self.tags).map(Arc::from);
        self
    }

    /// Extra random TTL: the stored TTL is uniform in `[ttl, ttl + jitter]` (`jitter <= ttl`).
    pub fn jitter(self, jitter: Duration) -> Self {
        self.with(|s| s.jitter_ms = ms(jitter))
    }

    /// TTL of a cached "not found" (`Ok(None)` of
    /// [`get_or_load_optional`](crate::Cache::get_or_load_optional)); default: `ttl`;
    /// `Duration::ZERO`: "not found" is not cached.
    pub fn negative_ttl(self, ttl: Duration) -> Self {
        self.with(|s| s.negative_ttl_ms = Some(ms(ttl)))
    }

    /// Stampede lease length (default: the cache's `lock_ms`).
    pub fn lock(self, lease: Duration) -> Self {
        self.with(|s| s.lock_ms = Some(ms(lease)))
    }

    /// Grace window after the TTL: a call in it gets the stale value at once while ONE
    /// background refresh (across processes) reloads it; a failing refresh keeps serving
    /// the stale value until the window ends (fail-safe).
    pub fn stale(self, grace: Duration) -> Self {
        self.with(|s| s.stale_ms = ms(grace))
    }

    /// XFetch early refresh with parameter `beta` (> 0; 1.0 is the paper's optimum): a hit
    /// refreshes in the background with a probability that rises as expiry nears, scaled by
    /// how long the loader took.
    pub fn early_refresh(self, beta: f64) -> Self {
        self.with(|s| s.early_refresh = if beta == 0.0 { f64::NAN } else { beta })
    }

    /// Soft loader timeout (needs [`stale`](Self::stale)): a call in the grace window waits
    /// up to `timeout` for the refresh, then returns the stale value (`Duration::ZERO`:
    /// none, the default).
    pub fn soft_timeout(self, timeout: Duration) -> Self {
        self.with(|s| s.timeout_ms = ms(timeout))
    }

    /// Keeps a decoded copy in this process (the near cache) for up to `ttl` (`<=` the
    /// entry's TTL); on the memory backend a pass-through.
    pub fn local_ttl(self, ttl: Duration) -> Self {
        self.with(|s| s.local_ttl_ms = ms(ttl))
    }

    /// Rendered tags the entry carries ([`Cache::invalidate_tag`](crate::Cache::invalidate_tag)
    /// voids them).
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self.checked()
    }

    /// The name counters are kept under in [`Stats`](crate::Stats) (and metrics, tracing).
    pub fn name(self, name: impl Into<String>) -> Self {
        let name = intern(name.into());
        self.with(|s| s.name = name)
    }

    /// The stats name.
    pub fn stats_name(&self) -> &'static str {
        self.spec.name
    }

    /// Whether these options can keep their promises; the error says why not.
    pub fn validate(&self) -> Result<(), Error> {
        match &self.problem {
            None => Ok(()),
            Some(p) => Err(Error::Config(p.to_string())),
        }
    }

    pub(crate) fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

/// Longest time an entry may live in the store (ttl + jitter + stale, or a negative entry's
/// ttl + stale): 100 years, well inside what Redis accepts for `PX`.
pub const MAX_ENTRY_LIFE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The first rule `spec` breaks.
fn problem(spec: &FnSpec, tags: &[String]) -> Option<String> {
    if spec.ttl_ms == 0 {
        return Some("ttl must be at least 1 ms: no entry lives forever, and none for 0".into());
    }
    let life = spec
        .ttl_ms
        .max(spec.negative_ttl_ms.unwrap_or(0))
        .saturating_add(spec.jitter_ms)
        .saturating_add(spec.stale_ms);
    if life > ms(MAX_ENTRY_LIFE) {
        return Some(format!(
            "ttl + jitter + stale (and negative_ttl + stale) must be at most {} days",
            MAX_ENTRY_LIFE.as_secs() / 86_400
        ));
    }
    if spec.jitter_ms > spec.ttl_ms {
        return Some(format!(
            "jitter ({} ms) exceeds ttl ({} ms): the stored TTL is uniform in [ttl, ttl + jitter]",
            spec.jitter_ms, spec.ttl_ms
        ));
    }
    if let Some(lock) = spec.lock_ms
        && (lock == 0 || lock > MAX_LOCK_MS)
    {
        return Some(format!(
            "lock must be in 1..={MAX_LOCK_MS} ms (the stampede lease length)"
        ));
    }
    if spec.early_refresh.is_nan() || spec.early_refresh < 0.0 || spec.early_refresh.is_infinite() {
        return Some("early_refresh must be a finite number greater than 0".into());
    }
    if spec.timeout_ms > 0 && spec.stale_ms == 0 {
        return Some(
            "soft_timeout needs stale: the soft timeout returns the stale value, and without a \
             grace window there never is one"
                .into(),
        );
    }
    if spec.local_ttl_ms > spec.ttl_ms {
        return Some(format!(
            "local_ttl ({} ms) exceeds ttl ({} ms): a near copy must not outlive its entry",
            spec.local_ttl_ms, spec.ttl_ms
        ));
    }
    if let Some(t) = tags
        .iter()
        .find(|t| t.is_empty() || t.starts_with(RESERVED_PREFIX))
    {
        return Some(format!(
            "tag {t:?} is empty or starts with the reserved `{RESERVED_PREFIX}`"
        ));
    }
    if spec.name.is_empty() {
        return Some("name must not be empty".into());
    }
    None
}

/// A `'static` copy of a stats name (bounded by [`MAX_OPTION_NAMES`]).
fn intern(name: String) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.get(name.as_str()) {
        return n;
    }
    if names.len() >= MAX_OPTION_NAMES {
        return "cache_runtime::other";
    }
    let n: &'static str = Box::leak(name.into_boxed_str());
    names.insert(n);
    n
}

/// What [`Cache::peek`](crate::Cache::peek) found under a key, without loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek<T> {
    /// A fresh value.
    Fresh(T),
    /// A value past its TTL, in its grace window (`stale`).
    Stale(T),
    /// A cached "not found" (a negative entry).
    NotFound,
    /// Nothing usable: no entry, a load in progress, or bytes of another type or format.
    Missing,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule, and that a valid combination of all options passes.
    #[test]
    fn invalid_options_say_why() {
        let s = Duration::from_secs;
        let ok = EntryOptions::new(s(300))
            .jitter(s(30))
            .negative_ttl(s(60))
            .lock(s(5))
            .stale(s(60))
            .early_refresh(1.0)
            .soft_timeout(Duration::from_millis(50))
            .local_ttl(s(5))
            .tags(["org:7"])
            .name("users.get");
        assert!(ok.validate().is_ok(), "{:?}", ok.validate());
        assert_eq!(ok.stats_name(), "users.get");
        let cases = [
            (EntryOptions::new(Duration::ZERO), "ttl"),
            (EntryOptions::new(s(10)).jitter(s(11)), "jitter"),
            (EntryOptions::new(s(10)).lock(Duration::ZERO), "lock"),
            (EntryOptions::new(s(10)).lock(s(7200)), "lock"),
            (EntryOptions::new(s(10)).early_refresh(0.0), "early_refresh"),
            (
                EntryOptions::new(s(10)).early_refresh(-1.0),
                "early_refresh",
            ),
            (
                EntryOptions::new(s(10)).early_refresh(f64::NAN),
                "early_refresh",
            ),
            (EntryOptions::new(s(10)).soft_timeout(s(1)), "soft_timeout"),
            (
                EntryOptions::new(s(10))
                    .stale(s(1))
                    .soft_timeout(Duration::ZERO),
                "ok",
            ),
            (EntryOptions::new(s(10)).local_ttl(s(11)), "local_ttl"),
            (EntryOptions::new(s(10)).tags([""]), "tag"),
            (EntryOptions::new(s(10)).tags(["!tag:x"]), "tag"),
            (EntryOptions::new(s(10)).name(""), "name"),
            (EntryOptions::new(Duration::MAX), "ttl + jitter"),
            (
                EntryOptions::new(s(10)).stale(MAX_ENTRY_LIFE),
                "ttl + jitter",
            ),
            (
                EntryOptions::new(s(10)).negative_ttl(MAX_ENTRY_LIFE + s(1)),
                "ttl + jitter",
            ),
        ];
        // The limit itself is allowed.
        assert!(
            EntryOptions::new(s(10))
                .negative_ttl(MAX_ENTRY_LIFE)
                .validate()
                .is_ok()
        );
        for (o, want) in cases {
            match o.validate() {
                Ok(()) => assert_eq!(want, "ok", "{o:?} passed"),
                Err(Error::Config(m)) => assert!(m.starts_with(want), "{want}: {m}"),
                Err(e) => panic!("{e}"),
            }
        }
        // A later valid setting clears an earlier problem.
        assert!(
            EntryOptions::new(s(10))
                .jitter(s(11))
                .jitter(s(1))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn names_are_interned_once() {
        let a = EntryOptions::new(Duration::from_secs(1)).name(String::from("x.y"));
        let b = EntryOptions::new(Duration::from_secs(1)).name("x.y");
        assert!(std::ptr::eq(a.stats_name(), b.stats_name()));
    }
}
