//! The process-wide cache: [`install`] and [`global`].

use std::sync::OnceLock;

use crate::builder::CacheBuilder;
use crate::cache::Cache;
use crate::error::Error;

static INSTALLED: OnceLock<Cache> = OnceLock::new();
static DEFAULT: OnceLock<Cache> = OnceLock::new();

/// Installs `cache` as the process-wide cache used by `#[cached]` / `#[invalidates]`
/// functions that have no `cache = ..` argument.
///
/// Call it once at start-up; a second call returns [`Error::AlreadyInstalled`]. Before it is
/// called, those functions use an in-process memory cache.
pub fn install(cache: Cache) -> Result<(), Error> {
    INSTALLED.set(cache).map_err(|_| Error::AlreadyInstalled)
}

/// The installed cache, or the in-process memory default when none is installed.
pub fn global() -> &'static Cache {
    match INSTALLED.get() {
        Some(c) => c,
        None => DEFAULT.get_or_init(|| CacheBuilder::default().build_memory()),
    }
}
