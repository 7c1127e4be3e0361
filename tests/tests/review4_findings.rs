//! Findings of the review of issue 10 ("Policy as data", be36474): each test fails on the code
//! it was written against.
//!
//! - `self_in_one_of_two_types_*`: a typed `Self::get(id)` in `A` is resolved to `B::get`
//!   too (two types of one module with a cached method of the same name), so `B::get`, which
//!   nothing invalidates, is not reported (`NeverInvalidated` false negative).
//! - `imported_module_*`: `users::get_user(id)` through `use super::store::users;` (the form
//!   the README recommends) resolves against the invalidating module instead of the imported
//!   one: a cached `get_user` of the invalidating module is taken as the target (wrong
//!   function), and without one the call is `UnresolvedTarget` (false positive).
//! - `typed_target_outside_the_scope_*`: the README says that under `in_module(prefix)` "a
//!   typed one still finds its target"; the check reports `UnresolvedTarget` instead.
//! - `invalidation_failure_records_into_the_callers_span`: with the `metrics` feature, a
//!   backend failure during an `#[invalidates]` call records `degraded = true` into whatever
//!   span is current: the caller's own span (which is not a `cached` span).

use std::sync::{Arc, Mutex};

use cache_runtime::{Cache, PolicyProblem, cached, invalidates, policies};
use cache_tests::{Backend, TestEnv};

// ---------------------------------------------------------------------------------------
// 1. `Self::name(..)` with two types of one module having a cached method `name`.

#[allow(dead_code)]
mod self_two_types {
    use super::*;

    pub struct A;
    pub struct B;

    impl A {
        #[cached(key = "r4a:{id}", ttl = 7200, name = "r4.a.get")]
        pub async fn get(&self, id: u64) -> u64 {
            id
        }

        #[invalidates(Self::get(id), name = "r4.a.touch")]
        pub async fn touch(&self, id: u64) {}
    }

    impl B {
        /// Nothing invalidates this one, and it lives two hours.
        #[cached(key = "r4b:{id}", ttl = 7200, name = "r4.b.get")]
        pub async fn get(&self, id: u64) -> u64 {
            id
        }
    }
}

#[test]
fn self_in_one_of_two_types_marks_the_other_type_invalidated() {
    let p = policies().in_module("review4_findings::self_two_types");
    assert_eq!(p.cached().len(), 2);
    // `A::touch` invalidates `A::get` only: `B::get` is never invalidated.
    let problems = p.check();
    assert!(
        problems.iter().any(|q| matches!(
            q,
            PolicyProblem::NeverInvalidated { function: "r4.b.get", .. }
        )),
        "B::get is invalidated by nothing, yet no NeverInvalidated: {problems:?}\n{}",
        p.report()
    );
}

#[test]
fn self_in_one_of_two_types_resolves_to_one_target() {
    let p = policies().in_module("review4_findings::self_two_types");
    let inv = p.invalidations()[0];
    let targets: Vec<&str> = p
        .resolve(inv, &inv.typed[0])
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(targets, ["r4.a.get"]);
}

// ---------------------------------------------------------------------------------------
// 2. A module imported with `use`, then `users::get_user(id)`.

#[allow(dead_code)]
mod imported {
    pub mod store {
        pub mod users {
            use cache_runtime::cached;

            #[cached(key = "r4store_user:{id}", ttl = 7200, name = "r4.store.get_user")]
            pub async fn get_user(id: u64) -> u64 {
                id
            }
        }
    }

    pub mod admin {
        pub mod users {
            use cache_runtime::{cached, invalidates};

            #[cached(key = "r4admin_user:{id}", ttl = 7200, name = "r4.admin.get_user")]
            pub async fn get_user(id: u64) -> u64 {
                id
            }

            #[invalidates(get_user(id), name = "r4.admin.save")]
            pub async fn save(id: u64) {}
        }
    }

    /// `users::get_user(id)` is `store::users::get_user` (the compiler resolves it so).
    pub mod api {
        use super::store::users;
        use cache_runtime::invalidates;

        #[invalidates(users::get_user(id), name = "r4.api.save")]
        pub async fn save(id: u64) {}
    }

    /// The same, in a module that has its own cached `get_user` (another key family).
    pub mod web {
        use super::store::users;
        use cache_runtime::{cached, invalidates};

        #[cached(key = "r4web_user:{id}", ttl = 60, name = "r4.web.get_user")]
        pub async fn get_user(id: u64) -> u64 {
            id
        }

        #[invalidates(users::get_user(id), name = "r4.web.save")]
        pub async fn save(id: u64) {}
    }
}

#[test]
fn imported_module_typed_target_is_not_unresolved() {
    // Every typed call resolves at compile time; everything is invalidated.
    let p = policies().in_module("review4_findings::imported");
    let problems = p.check();
    assert_eq!(problems, vec![], "{}", p.report());
}

#[test]
fn imported_module_typed_target_is_the_imported_function() {
    let p = policies().in_module("review4_findings::imported");
    let inv = p
        .invalidations()
        .iter()
        .find(|i| i.name == "r4.web.save")
        .copied()
        .unwrap();
    let targets: Vec<&str> = p
        .resolve(inv, &inv.typed[0])
        .iter()
        .map(|c| c.name)
        .collect();
    // `users::get_user` in `web` is `store::users::get_user`, not `web::get_user`.
    assert_eq!(targets, ["r4.store.get_user"]);
}

// ---------------------------------------------------------------------------------------
// 3. `in_module(prefix)`: "a typed one still finds its target" (README, "Scope").

#[allow(dead_code)]
mod scope {
    pub mod data {
        use cache_runtime::cached;

        #[cached(key = "r4scope:{id}", ttl = 60, name = "r4.scope.get")]
        pub async fn get(id: u64) -> u64 {
            id
        }
    }

    pub mod writer {
        use cache_runtime::invalidates;

        #[invalidates(super::data::get(id), name = "r4.scope.put")]
        pub async fn put(id: u64) {}
    }
}

#[test]
fn typed_target_outside_the_scope_still_finds_its_target() {
    // Scoped to the writer: its typed invalidation's target lies outside the prefix.
    let p = policies().in_module("review4_findings::scope::writer");
    assert_eq!(p.check(), vec![], "{}", p.report());
}

// ---------------------------------------------------------------------------------------
// 4. `metrics`: a backend fault in an `#[invalidates]` call records into the caller's span.

#[invalidates("r4span:{id}", cache = cache, name = "r4.span.inv")]
async fn forget(cache: &Cache, id: u64) {}

#[cached(key = "r4span:{id}", ttl = 60, cache = cache, name = "r4.span.get")]
async fn remember(cache: &Cache, id: u64) -> u64 {
    id
}

mod capture {
    use super::*;
    use tracing::field::{Field, Visit};
    use tracing::span::{Id, Record};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    /// Every value recorded (after creation) into a span named `request`.
    #[derive(Clone, Default)]
    pub struct Recorded(pub Arc<Mutex<Vec<String>>>);

    struct V<'a>(&'a mut Vec<String>);
    impl Visit for V<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push(format!("{}={value:?}", field.name()));
        }
    }

    impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorded {
        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            if let Some(span) = ctx.span(id)
                && span.name() == "request"
            {
                let mut out = Vec::new();
                values.record(&mut V(&mut out));
                self.0.lock().unwrap().extend(out);
            }
        }
    }
}

#[tokio::test]
async fn invalidation_failure_records_into_the_callers_span() {
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let recorded = capture::Recorded::default();
    let subscriber = tracing_subscriber::registry().with(recorded.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut env = TestEnv::new(Backend::Redis).await;
    assert_eq!(remember(&env.cache, 1).await, 1);
    env.server().kill();

    // The application's own request span, which happens to have these fields.
    let request = tracing::info_span!(
        "request",
        outcome = tracing::field::Empty,
        degraded = tracing::field::Empty
    );
    async {
        forget(&env.cache, 1).await;
        forget(&env.cache, 2).await;
        forget(&env.cache, 3).await;
        forget(&env.cache, 4).await;
    }
    .instrument(request)
    .await;
    let stats = env.cache.stats();
    let s = stats.function("r4.span.inv");
    assert!(s.backend_errors + s.backend_skipped > 0, "{s:?}");
    // The library wrote nothing into a span it did not create.
    assert_eq!(*recorded.0.lock().unwrap(), Vec::<String>::new());
}
