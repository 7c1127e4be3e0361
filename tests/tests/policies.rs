//! Policy as data: every `#[cached]` / `#[invalidates]` registers a static description at
//! link time. The registry is process-wide (this binary sees every annotated function linked
//! into it), so each test scopes the check to one of the modules below with
//! `policies().in_module(..)`:
//!
//! - `users`: a consistent set of policies (string, typed and tag invalidations), whose
//!   report is the table in the README;
//! - `drift`: deliberate drift, each problem asserted exactly.
//!
//! Typed invalidations are also run against the embedded memory cache (the default, nothing
//! is installed in this binary) to show they delete the key the target rendered.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cache_runtime::{PolicyProblem, policies};

/// A consistent module: everything cached is invalidated by something.
#[allow(dead_code)]
mod users {
    use super::*;
    use cache_runtime::{cached, invalidates};

    pub static LOADS: AtomicUsize = AtomicUsize::new(0);

    #[cached(
        key = "user:{id}",
        ttl = 300,
        jitter = 30,
        negative_ttl = 60,
        tags = ["org:{org}"],
        local_ttl = 5
    )]
    pub async fn get_user(id: u64, org: u64) -> Option<String> {
        LOADS.fetch_add(1, SeqCst);
        Some(format!("user {id} of org {org}"))
    }

    #[cached(key = "users:list", ttl = 7200, stale = 60)]
    pub async fn list_users() -> Vec<String> {
        LOADS.fetch_add(1, SeqCst);
        vec!["ada".into()]
    }

    /// Typed (`get_user(id)` renders `user:{id}` through `get_user`'s own template: its
    /// arguments are the parameters that template uses), mixed with a string template.
    #[invalidates(get_user(id), "users:list")]
    pub async fn rename_user(id: u64, name: &str) -> Result<(), String> {
        let _ = name;
        Ok(())
    }

    /// Tags only.
    #[invalidates(tags = ["org:{org}"])]
    pub async fn reorganise(org: u64) {}

    pub struct Profiles {
        pub region: String,
    }

    impl Profiles {
        #[cached(key = "profile:{self.region}:{id}", ttl = 60)]
        pub async fn profile(&self, id: u64) -> String {
            LOADS.fetch_add(1, SeqCst);
            format!("{}/{id}", self.region)
        }

        /// `Self::profile(user.0)`: the receiver is implied; arguments are expressions
        /// over this function's parameters.
        #[invalidates(Self::profile(user.0))]
        pub async fn touch(&self, user: (u64, String)) {}
    }
}

/// Deliberate drift: a template changed on one side only, a template that can render another
/// function's keys, a tag nobody carries, and a long-lived entry nothing invalidates.
#[allow(dead_code)]
mod drift {
    use cache_runtime::{cached, invalidates};

    /// The key template moved to `:v2`...
    #[cached(key = "order:{id}:v2", ttl = 600)]
    pub async fn get_order(id: u64) -> String {
        id.to_string()
    }

    /// ... but this string template did not: it deletes nothing.
    #[invalidates("order:{id}")]
    pub async fn cancel_order(id: u64) {}

    /// A typed invalidation cannot drift: it renders `get_order`'s own template.
    #[invalidates(get_order(id))]
    pub async fn ship_order(id: u64) {}

    #[cached(key = "item:{sku}", ttl = 60)]
    pub async fn item(sku: &str) -> String {
        sku.to_string()
    }

    /// `item:new` is also what `item:{sku}` renders for `sku = "new"`.
    #[cached(key = "item:new", ttl = 60)]
    pub async fn new_items() -> Vec<String> {
        Vec::new()
    }

    /// `item:{sku}:reviews` cannot collide with `item:{sku}`: a part never contains `:`.
    #[cached(key = "item:{sku}:reviews", ttl = 60)]
    pub async fn reviews(sku: &str) -> Vec<String> {
        vec![sku.to_string()]
    }

    /// Lives a day, and nothing invalidates it.
    #[cached(key = "config", ttl = 86400)]
    pub async fn config() -> String {
        String::new()
    }

    /// No `#[cached]` function in this module carries an `org:` tag.
    #[invalidates("item:{sku}", "item:{sku}:reviews", tags = ["org:{org}"])]
    pub async fn wipe_org(org: u64, sku: &str) {}
}

const USERS: &str = concat!(module_path!(), "::users");
const DRIFT: &str = concat!(module_path!(), "::drift");

#[test]
fn consistent_module_has_no_problems() {
    let users = policies().in_module(USERS);
    assert_eq!(users.cached().len(), 3);
    assert_eq!(users.invalidations().len(), 3);
    assert_eq!(users.check(), vec![]);
    // Even with a threshold that every entry exceeds: each one is invalidated by something.
    assert_eq!(users.check_with(Duration::from_secs(1)), vec![]);
}

#[test]
fn drift_is_caught_exactly() {
    let problems = policies().in_module(DRIFT).check();
    assert_eq!(
        problems,
        vec![
            PolicyProblem::UnmatchedKey {
                invalidator: "policies::drift::cancel_order",
                template: "order:{id}",
            },
            PolicyProblem::UnmatchedTag {
                invalidator: "policies::drift::wipe_org",
                tag: "org:{org}",
            },
            PolicyProblem::KeyOverlap {
                first: "policies::drift::item",
                first_template: "item:{sku}",
                second: "policies::drift::new_items",
                second_template: "item:new",
                example: "item:new".into(),
            },
            PolicyProblem::NeverInvalidated {
                function: "policies::drift::config",
                template: "config",
                lives_secs: 86400,
                threshold_secs: 3600,
            },
        ]
    );
    let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "`policies::drift::cancel_order` invalidates key template \"order:{id}\", which no \
             #[cached] key template can render: it deletes nothing",
            "`policies::drift::wipe_org` invalidates tag \"org:{org}\", which no #[cached] tag \
             template can render: it voids nothing",
            "`policies::drift::item` (\"item:{sku}\") and `policies::drift::new_items` \
             (\"item:new\") can render the same key, e.g. \"item:new\": they share entries",
            "warning: nothing invalidates `policies::drift::config` (\"config\"), and its \
             entries live up to 86400 s (over 3600 s)",
        ]
    );
    assert_eq!(
        problems.iter().filter(|p| p.is_warning()).count(),
        1,
        "only the long-lived entry is a warning"
    );
}

#[test]
fn whole_program_sees_both_modules() {
    let all = cache_runtime::policies().check();
    let mut drift = policies().in_module(DRIFT).check();
    // Over the whole binary, `drift::wipe_org`'s tag `org:{org}` voids `users::get_user`
    // (which carries it): that problem is one of the module scope only. The `users` module
    // adds none, and nothing else in this binary is annotated.
    drift.retain(|p| !matches!(p, PolicyProblem::UnmatchedTag { .. }));
    assert_eq!(all, drift);
    assert!(policies().cached().len() >= 8);
}

#[test]
fn typed_invalidations_are_recorded_by_target_template() {
    let users = policies().in_module(USERS);
    let rename = users
        .invalidations()
        .iter()
        .find(|p| p.function == "rename_user")
        .unwrap();
    assert_eq!(
        users.key_templates(rename),
        vec![("users:list", None), ("user:{id}", Some("get_user(id)"))]
    );
    let touch = users
        .invalidations()
        .iter()
        .find(|p| p.function == "touch")
        .unwrap();
    assert_eq!(
        users.key_templates(touch),
        vec![("profile:{self.region}:{id}", Some("Self::profile(user.0)"))]
    );
}

#[test]
fn report_of_the_users_module() {
    let report = policies().in_module(USERS).report();
    println!("{report}");
    assert_eq!(
        report,
        "\
| function | template | ttl | jitter | negative ttl | stale | tags | near ttl | invalidated by |
|---|---|---|---|---|---|---|---|---|
| `policies::users::get_user` | `user:{id}` | 300 s | 30 s | 60 s | – | `org:{org}` | 5 s | `policies::users::rename_user` (typed `get_user(id)`), `policies::users::reorganise` (tag `org:{org}`) |
| `policies::users::list_users` | `users:list` | 7200 s | – | = ttl | 60 s | – | – | `policies::users::rename_user` (key `users:list`) |
| `policies::users::profile` | `profile:{self.region}:{id}` | 60 s | – | = ttl | – | – | – | `policies::users::touch` (typed `Self::profile(user.0)`) |

| invalidation | deletes keys | voids tags |
|---|---|---|
| `policies::users::rename_user` | `users:list`, `get_user(id)` → `user:{id}` | – |
| `policies::users::reorganise` | – | `org:{org}` |
| `policies::users::touch` | `Self::profile(user.0)` → `profile:{self.region}:{id}` | – |
"
    );
}

#[tokio::test]
async fn typed_invalidation_deletes_the_rendered_key() {
    use users::*;
    let loads = || LOADS.load(SeqCst);
    let before = loads();
    get_user(1, 7).await;
    get_user(1, 7).await;
    assert_eq!(loads(), before + 1, "second call is a hit");
    rename_user(1, "grace").await.unwrap();
    get_user(1, 7).await;
    assert_eq!(
        loads(),
        before + 2,
        "the typed invalidation deleted `user:1`"
    );

    let p = Profiles {
        region: "eu".into(),
    };
    p.profile(5).await;
    p.profile(5).await;
    assert_eq!(loads(), before + 3);
    p.touch((5, "ada".into())).await;
    p.profile(5).await;
    assert_eq!(
        loads(),
        before + 4,
        "`Self::profile(user.0)` deleted `profile:eu:5`"
    );
}
