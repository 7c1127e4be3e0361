//! Typed invalidation targets (`#[invalidates(users::get_user(id))]`): resolved through a
//! module imported with `use`, found outside an `in_module(..)` scope, and deleting exactly the
//! key the target rendered, whatever the shape of its parameters.
//!
//! Documented limits (README, "Attribute reference" and "Policy as data"): `Self::get(..)`
//! cannot tell two types of one module apart in the report; a typed invalidation without the
//! target's `cache = ..` deletes from its own cache; a turbofish names only the generic
//! parameters the key uses; `Self::by_id(id)` of a receiver-less target from a method does not
//! compile (write `Repo::by_id(id)`); a generic return type the key does not mention is not
//! reported.

use cache_runtime::policies;
use cache_tests::{Backend, TestEnv};

// ---------------------------------------------------------------------------------------
// A module imported with `use`, then `users::get_user(id)` (the form the README recommends):
// the typed target resolves against the imported module, not the invalidating one (whose own
// cached `get_user` is not the target), and is never reported `UnresolvedTarget`.

#[allow(dead_code)]
mod imported {
    pub mod store {
        pub mod users {
            use cache_runtime::cached;

            #[cached(key = "store_user:{id}", ttl = 7200, name = "tt.store.get_user")]
            pub async fn get_user(id: u64) -> u64 {
                id
            }
        }
    }

    pub mod admin {
        pub mod users {
            use cache_runtime::{cached, invalidates};

            #[cached(key = "admin_user:{id}", ttl = 7200, name = "tt.admin.get_user")]
            pub async fn get_user(id: u64) -> u64 {
                id
            }

            #[invalidates(get_user(id), name = "tt.admin.save")]
            pub async fn save(id: u64) {}
        }
    }

    /// `users::get_user(id)` is `store::users::get_user` (the compiler resolves it so).
    pub mod api {
        use super::store::users;
        use cache_runtime::invalidates;

        #[invalidates(users::get_user(id), name = "tt.api.save")]
        pub async fn save(id: u64) {}
    }

    /// The same, in a module that has its own cached `get_user` (another key family).
    pub mod web {
        use super::store::users;
        use cache_runtime::{cached, invalidates};

        #[cached(key = "web_user:{id}", ttl = 60, name = "tt.web.get_user")]
        pub async fn get_user(id: u64) -> u64 {
            id
        }

        #[invalidates(users::get_user(id), name = "tt.web.save")]
        pub async fn save(id: u64) {}
    }
}

#[test]
fn typed_target_through_an_imported_module_resolves() {
    // Every typed call resolves at compile time; everything is invalidated.
    let p = policies().in_module(concat!(module_path!(), "::imported"));
    let problems = p.check();
    assert_eq!(problems, vec![], "{}", p.report());
}

#[test]
fn typed_target_through_an_imported_module_is_the_imported_function() {
    let p = policies().in_module(concat!(module_path!(), "::imported"));
    let inv = p
        .invalidations()
        .iter()
        .find(|i| i.name == "tt.web.save")
        .copied()
        .unwrap();
    let targets: Vec<&str> = p
        .resolve(inv, &inv.typed[0])
        .iter()
        .map(|c| c.name)
        .collect();
    // `users::get_user` in `web` is `store::users::get_user`, never `web::get_user`. The
    // registration does not see `use` items: every cached `get_user` of a module whose path
    // ends with `::users` is a candidate (`admin::users` too, and the `users` module of this
    // binary's main module, `policies::users`).
    assert!(!targets.contains(&"tt.web.get_user"), "{targets:?}");
    assert_eq!(
        targets,
        [
            "policies::users::get_user",
            "tt.admin.get_user",
            "tt.store.get_user"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// `in_module(prefix)`: "a typed one still finds its target" (README, "Scope"), also when the
// target lies outside the prefix.

#[allow(dead_code)]
mod scope {
    pub mod data {
        use cache_runtime::cached;

        #[cached(key = "scope:{id}", ttl = 60, name = "tt.scope.get")]
        pub async fn get(id: u64) -> u64 {
            id
        }
    }

    pub mod writer {
        use cache_runtime::invalidates;

        #[invalidates(super::data::get(id), name = "tt.scope.put")]
        pub async fn put(id: u64) {}
    }
}

#[test]
fn typed_target_outside_the_scope_still_finds_its_target() {
    // Scoped to the writer: its typed invalidation's target lies outside the prefix.
    let p = policies().in_module(concat!(module_path!(), "::scope::writer"));
    assert_eq!(p.check(), vec![], "{}", p.report());
}

// ---------------------------------------------------------------------------------------
// A typed invalidation deletes exactly the key the cached function rendered, for parameter
// shapes where the hidden key function's signature differs from the function's (destructured,
// `ref`, `mut`, raw-identifier, generic and `impl Trait` parameters, `&mut self`).

#[allow(dead_code)]
mod roundtrip {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use cache_runtime::{Cache, KeyPart, cached, invalidates};

    pub static LOADS: AtomicUsize = AtomicUsize::new(0);

    pub struct Point {
        pub x: i64,
        pub y: Option<String>,
    }

    #[allow(unused_assignments, clippy::toplevel_ref_arg)]
    #[cached(key = "rt:{x}:{y}:{r#type}:{name}:{k}:{w}", ttl = 600, cache = cache)]
    pub async fn shapes<K: KeyPart + Sync>(
        cache: &Cache,
        Point { x, y }: Point,
        ref r#type: u8,
        mut name: &str,
        k: K,
        w: impl KeyPart + Send + Sync,
    ) -> usize {
        name = "ignored";
        let _ = (x, y, r#type, name, k, w);
        LOADS.fetch_add(1, SeqCst)
    }

    #[invalidates(
        shapes(&Point { x: -3, y: Some("é:/".into()) }, 7, &n, -1i64, Some("~"), ),
        cache = cache
    )]
    pub async fn drop_shapes(cache: &Cache, n: String) {}

    pub struct Repo {
        pub tenant: Option<String>,
        pub cache: Cache,
    }

    impl Repo {
        #[cached(key = "rt_repo:{self.tenant}:{id}", ttl = 600, cache = self.cache)]
        pub async fn get(&self, id: &str) -> usize {
            LOADS.fetch_add(1, SeqCst)
        }

        #[invalidates(Self::get(id.as_str()), cache = self.cache)]
        pub async fn put(&mut self, id: String) {}
    }
}

#[tokio::test]
async fn typed_invalidation_deletes_the_rendered_key() {
    use roundtrip::*;
    use std::sync::atomic::Ordering::SeqCst;
    let env = TestEnv::new(Backend::Memory).await;
    let cache = &env.cache;
    let call = || {
        shapes(
            cache,
            Point {
                x: -3,
                y: Some("é:/".into()),
            },
            7,
            "n",
            -1i64,
            Some("~"),
        )
    };
    let first = call().await;
    assert_eq!(call().await, first, "a hit");
    drop_shapes(cache, "n".into()).await;
    assert_ne!(call().await, first, "reloaded after the typed invalidation");

    let mut repo = Repo {
        tenant: None,
        cache: cache.clone(),
    };
    let first = repo.get("a b").await;
    assert_eq!(repo.get("a b").await, first);
    repo.put("a b".into()).await;
    assert_ne!(repo.get("a b").await, first);
    let _ = LOADS.load(SeqCst);
}
