//! Policy as data: every `#[cached]` and `#[invalidates]` function registers a static
//! description at link time (with [`linkme`], no code runs at start-up and nothing per call),
//! so a program can list its cache policies ([`policies`]), render them as a Markdown table
//! ([`Policies::report`]) and check them in a unit test ([`Policies::check`]).
//!
//! The rules are on [`Policies`].

use std::collections::{HashSet, VecDeque};
use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::key::alphabet;

/// Every `#[cached]` function linked into the program.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static CACHED_POLICIES: [CachedPolicy];

/// Every `#[invalidates]` function linked into the program.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static INVALIDATE_POLICIES: [InvalidatePolicy];

/// Entries that live longer than this (seconds) and that nothing invalidates are reported by
/// [`Policies::check`] ([`PolicyProblem::NeverInvalidated`]): one hour.
pub const DEFAULT_NEVER_INVALIDATED_SECS: u64 = 3600;

/// The static description of one `#[cached]` function (built by the macro; read it, don't
/// build it).
///
/// ```
/// #[cache_runtime::cached(key = "user:{id}", ttl = 300, jitter = 30)]
/// async fn get_user(id: u64) -> Option<String> {
///     Some(id.to_string())
/// }
///
/// // Doc tests share one binary: look at this one's module only.
/// let mine = cache_runtime::policies().in_module(module_path!());
/// let p = mine.cached().iter().find(|p| p.function == "get_user").unwrap();
/// assert_eq!((p.template, p.ttl_secs, p.jitter_secs), ("user:{id}", 300, 30));
/// ```
#[derive(Debug)]
pub struct CachedPolicy {
    /// Name in stats and tracing (`name = ".."`, default `module::path::fn_name`).
    pub name: &'static str,
    /// `module_path!()` where the function is defined.
    pub module: &'static str,
    /// The function's identifier.
    pub function: &'static str,
    /// The key template as written, e.g. `"user:{id}"`.
    pub template: &'static str,
    /// `ttl`, seconds.
    pub ttl_secs: u64,
    /// `jitter`, seconds (0: none).
    pub jitter_secs: u64,
    /// `negative_ttl`, seconds; `None` = the same as `ttl`, `Some(0)` = `None` is not cached.
    pub negative_ttl_secs: Option<u64>,
    /// `stale`, seconds (0: none).
    pub stale_secs: u64,
    /// Near-cache TTL (`local_ttl`), seconds; `None` when the function has no near cache.
    pub local_ttl_secs: Option<u64>,
    /// The tag templates (`tags = [..]`).
    pub tags: &'static [&'static str],
    /// `template` as the macro parsed it (the checker reads these, it does not parse the
    /// template text again).
    pub key_segments: &'static [TemplateSegment],
    /// Each of `tags` as the macro parsed it, in the same order.
    pub tag_segments: &'static [&'static [TemplateSegment]],
    /// The return type as written.
    pub returns: &'static str,
    /// Source file of the function.
    pub file: &'static str,
    /// Line of the attribute in `file`.
    pub line: u32,
}

impl CachedPolicy {
    /// The longest an entry of this function can live, seconds: `ttl + jitter` (or
    /// `negative_ttl` when longer) plus the `stale` grace window.
    ///
    /// ```
    /// #[cache_runtime::cached(key = "k:{id}", ttl = 60, jitter = 10, stale = 30)]
    /// async fn f(id: u64) -> u64 { id }
    ///
    /// let mine = cache_runtime::policies().in_module(module_path!());
    /// let p = mine.cached().iter().find(|p| p.function == "f").unwrap();
    /// assert_eq!(p.lives_secs(), 100);
    /// ```
    pub fn lives_secs(&self) -> u64 {
        let value = self.ttl_secs.saturating_add(self.jitter_secs);
        let negative = self.negative_ttl_secs.unwrap_or(self.ttl_secs);
        value.max(negative).saturating_add(self.stale_secs)
    }
}

/// The static description of one `#[invalidates]` function (built by the macro).
///
/// ```
/// #[cache_runtime::cached(key = "user:{id}", ttl = 300)]
/// async fn get_user(id: u64) -> Option<String> {
///     Some(id.to_string())
/// }
///
/// #[cache_runtime::invalidates(get_user(id), "users:list", tags = ["org:{org}"])]
/// async fn rename(id: u64, org: u64) {}
///
/// let all = cache_runtime::policies().in_module(module_path!());
/// let inv = all.invalidations().iter().find(|p| p.function == "rename").unwrap();
/// assert_eq!(inv.keys, ["users:list"]);
/// assert_eq!(inv.typed[0].call, "get_user(id)");
/// assert_eq!(inv.tags, ["org:{org}"]);
/// // A typed invalidation renders its target's own template:
/// let deleted: Vec<&str> = all.key_templates(inv).iter().map(|(t, _)| *t).collect();
/// assert_eq!(deleted, ["users:list", "user:{id}"]);
/// ```
#[derive(Debug)]
pub struct InvalidatePolicy {
    /// Name in stats and tracing.
    pub name: &'static str,
    /// `module_path!()` where the function is defined.
    pub module: &'static str,
    /// The function's identifier.
    pub function: &'static str,
    /// The key templates given as strings, e.g. `"user:{id}"`.
    pub keys: &'static [&'static str],
    /// The typed invalidations, e.g. `get_user(id)`.
    pub typed: &'static [TypedKey],
    /// The tag templates (`tags = [..]`).
    pub tags: &'static [&'static str],
    /// Each of `keys` as the macro parsed it, in the same order.
    pub key_segments: &'static [&'static [TemplateSegment]],
    /// Each of `tags` as the macro parsed it, in the same order.
    pub tag_segments: &'static [&'static [TemplateSegment]],
    /// Source file of the function.
    pub file: &'static str,
    /// Line of the attribute in `file`.
    pub line: u32,
}

/// One piece of a key or tag template, as the macro parsed it: the template
/// `"user:{id}:{{x}}"` is `[Lit("user:"), Part("id"), Lit(":{x}")]`. The registrations carry
/// them, so the policy checks never parse template text again.
///
/// ```
/// use cache_runtime::TemplateSegment::{Lit, Part};
///
/// #[cache_runtime::cached(key = "user:{id}:{{x}}", ttl = 60, tags = ["org:{user.org}"])]
/// async fn get_user(id: u64, user: &User) -> u64 { id }
/// # struct User { org: u64 }
///
/// #[cache_runtime::invalidates("user:{id}:{{x}}", tags = ["org:{org}"])]
/// async fn rename(id: u64, org: u64) {}
///
/// let mine = cache_runtime::policies().in_module(module_path!());
/// let p = mine.cached().iter().find(|p| p.function == "get_user").unwrap();
/// assert_eq!(p.key_segments, [Lit("user:"), Part("id"), Lit(":{x}")]);
/// assert_eq!(p.tag_segments, [&[Lit("org:"), Part("user.org")][..]]);
/// let inv = mine.invalidations().iter().find(|p| p.function == "rename").unwrap();
/// assert_eq!(inv.key_segments, [p.key_segments]);
/// assert_eq!(inv.tag_segments, [&[Lit("org:"), Part("org")][..]]);
/// assert!(mine.check().is_empty());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSegment {
    /// Literal text, `{{` / `}}` already unescaped.
    Lit(&'static str),
    /// A placeholder, as written between its braces (`id`, `user.org_id`, `self.shop`).
    Part(&'static str),
}

/// One typed invalidation, `get_user(id)` or `Self::user(id)`: the key is rendered by the
/// target `#[cached]` function's own template.
///
/// The compiler resolved the target (the call does not compile otherwise); the description
/// records the path as written, and [`Policies::resolve`] finds the target's description from
/// it: among the cached functions named like the path's last segment, those of the module the
/// path leads to from the invalidating function's module (`crate::`, `self::`, `super::` and
/// relative module paths; `Self::name` and `Type::name`: the invalidating module or the
/// type's); failing that, those whose module path ends with the written module path (a module
/// imported with `use`); failing that, the only registered cached function of that name.
/// `Self::name` cannot tell two types of one module apart (the registration cannot name
/// `Self`): it resolves to the cached methods of that name of every type in the module.
#[derive(Debug)]
pub struct TypedKey {
    /// The call as written, e.g. `"get_user(id)"`.
    pub call: &'static str,
    /// The function's path as written, e.g. `"get_user"`, `"users::get_user"`,
    /// `"Self::profile"`.
    pub path: &'static str,
}

/// A set of registered policies: [`policies`] (all of them), or a part of them
/// ([`Policies::in_module`]).
///
/// ```
/// #[cache_runtime::cached(key = "user:{id}", ttl = 60)]
/// async fn get_user(id: u64) -> u64 { id }
///
/// #[cache_runtime::invalidates(get_user(id))]
/// async fn touch(id: u64) {}
///
/// // This doc test's own functions only:
/// let mine = cache_runtime::policies().in_module(module_path!());
/// assert_eq!(mine.cached().len(), 1);
/// assert!(mine.check().is_empty());
/// ```
///
/// # What the check finds
///
/// - an `#[invalidates]` key template that can render no key a `#[cached]` template renders,
///   or a tag that no `#[cached]` tag template can render: it deletes nothing
///   ([`PolicyProblem::UnmatchedKey`], [`PolicyProblem::UnmatchedTag`]);
/// - two `#[cached]` functions whose templates can render the same key: they would read
///   and overwrite each other's entries ([`PolicyProblem::KeyOverlap`]);
/// - a `#[cached]` function that nothing invalidates (no key or typed invalidation matches
///   its key, no invalidated tag matches its tags) whose entries live longer than a threshold
///   ([`PolicyProblem::NeverInvalidated`], a warning).
///
/// # How templates are matched
///
/// A template is literal text and placeholders. Literal text matches itself exactly
/// (`{{` / `}}` are one brace). A placeholder stands for any *encoded key part*: a sequence of
/// `[A-Za-z0-9_.]`, `~` (how `None` renders) and `%XX` escapes with two upper-case hex
/// digits (how every other byte renders), including the empty sequence; a hashed long part
/// (`~h` + 32 hex digits) is such a sequence too. So a placeholder never produces `:` or any
/// other character outside that alphabet: `user:{id}` and `user:{name}:x` render disjoint
/// sets of keys, while `user:{id}` overlaps `user:new` and `user:{name}`. Two templates
/// overlap when some string can be rendered by both, decided exactly on that regular
/// language (a product automaton), and [`PolicyProblem::KeyOverlap`] shows such a string.
/// Keys are compared without the namespace: the check does not know which `Cache` each
/// function uses (`cache = ..`), so two functions on caches with different namespaces are
/// still reported.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    cached: Vec<&'static CachedPolicy>,
    invalidations: Vec<&'static InvalidatePolicy>,
    /// Every cached function of the set this one was scoped from ([`Policies::in_module`]):
    /// typed invalidations find their targets among them.
    universe: Vec<&'static CachedPolicy>,
}

/// Every `#[cached]` and `#[invalidates]` function linked into this program, sorted by
/// name (then source position).
///
/// ```
/// #[cache_runtime::cached(key = "user:{id}", ttl = 300)]
/// async fn get_user(id: u64) -> u64 { id }
///
/// assert!(cache_runtime::policies().cached().iter().any(|p| p.template == "user:{id}"));
/// ```
pub fn policies() -> Policies {
    Policies::new(
        CACHED_POLICIES.iter().collect(),
        INVALIDATE_POLICIES.iter().collect(),
    )
}

/// The modules a path prefix can lead to from `module`: `crate::a`, `self::a`,
/// `super::a`, `a` (relative, or a crate name), each also without its last segment when that
/// is a type (`Repo::by_id`, `Self::profile`).
fn target_modules(module: &str, prefix: &[&str]) -> Vec<String> {
    let here: Vec<&str> = module.split("::").collect();
    let mut bases: Vec<Vec<&str>> = Vec::new();
    match prefix.first().copied() {
        None => bases.push(here.clone()),
        Some("crate") => bases.push(here[..1].iter().chain(&prefix[1..]).copied().collect()),
        Some("self") => bases.push(here.iter().chain(&prefix[1..]).copied().collect()),
        Some("super") => {
            let ups = prefix.iter().take_while(|s| **s == "super").count();
            let base = &here[..here.len().saturating_sub(ups)];
            bases.push(base.iter().chain(&prefix[ups..]).copied().collect());
        }
        Some("Self") => bases.push(here.clone()),
        Some(_) => {
            bases.push(here.iter().chain(prefix).copied().collect());
            bases.push(prefix.to_vec());
        }
    }
    // `Self` already stands for the invalidating module (`bases` has it).
    let type_last = prefix.last().is_some_and(|s| is_type(s) && *s != "Self");
    let mut out = Vec::new();
    for b in bases {
        out.push(b.join("::"));
        if type_last && b.len() > 1 {
            out.push(b[..b.len() - 1].join("::"));
        }
    }
    out
}

/// Whether a path segment names a type (`Repo`, `Self`) rather than a module: by Rust's
/// naming convention, an upper-case first letter.
fn is_type(segment: &str) -> bool {
    segment.chars().next().is_some_and(char::is_uppercase)
}

/// The module part of a written path prefix: without a trailing type segment.
fn module_part<'a>(prefix: &[&'a str]) -> Vec<&'a str> {
    match prefix.split_last() {
        Some((last, rest)) if is_type(last) => rest.to_vec(),
        _ => prefix.to_vec(),
    }
}

/// Whether `module` is `prefix` or inside it.
fn in_module(module: &str, prefix: &str) -> bool {
    module
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

impl Policies {
    pub(crate) fn new(
        mut cached: Vec<&'static CachedPolicy>,
        mut invalidations: Vec<&'static InvalidatePolicy>,
    ) -> Self {
        cached.sort_by_key(|p| (p.name, p.file, p.line));
        invalidations.sort_by_key(|p| (p.name, p.file, p.line));
        Policies {
            universe: cached.clone(),
            cached,
            invalidations,
        }
    }

    /// The `#[cached]` functions.
    pub fn cached(&self) -> &[&'static CachedPolicy] {
        &self.cached
    }

    /// The `#[invalidates]` functions.
    pub fn invalidations(&self) -> &[&'static InvalidatePolicy] {
        &self.invalidations
    }

    /// Only the functions defined in module `prefix` or its submodules (`prefix` is a
    /// `module_path!()`, e.g. `"my_app::users"`). Checking the result treats them as the
    /// whole program: an invalidation of a function outside the prefix then matches nothing
    /// (a typed one still finds its target), so scope to a module that holds both sides.
    pub fn in_module(&self, prefix: &str) -> Policies {
        Policies {
            cached: self
                .cached
                .iter()
                .copied()
                .filter(|p| in_module(p.module, prefix))
                .collect(),
            invalidations: self
                .invalidations
                .iter()
                .copied()
                .filter(|p| in_module(p.module, prefix))
                .collect(),
            universe: self.universe.clone(),
        }
    }

    /// The `#[cached]` functions a typed invalidation of `inv` renders the key of (see
    /// [`TypedKey`] for how the path is resolved): one, unless several types of one module
    /// have a cached method of that name; none when no registered function fits. Targets are
    /// looked up among every function of the set this one was scoped from, so a target
    /// outside an [`in_module`](Policies::in_module) scope is still found.
    pub fn resolve(&self, inv: &InvalidatePolicy, typed: &TypedKey) -> Vec<&'static CachedPolicy> {
        let segments: Vec<&str> = typed.path.split("::").map(str::trim).collect();
        let (name, prefix) = segments.split_last().expect("split yields one item");
        let named: Vec<&'static CachedPolicy> = self
            .universe
            .iter()
            .copied()
            .filter(|p| p.function == *name)
            .collect();
        let pick = |modules: &dyn Fn(&str) -> bool| -> Vec<&'static CachedPolicy> {
            named
                .iter()
                .copied()
                .filter(|p| modules(p.module))
                .collect()
        };
        let modules = target_modules(inv.module, prefix);
        let found = pick(&|m| modules.iter().any(|t| t == m));
        if !found.is_empty() {
            return found;
        }
        // A module brought in by `use` (`use crate::store::users;` then `users::get_user`):
        // the module path ends with the written one.
        let written = module_part(prefix);
        if !written.is_empty() && !matches!(written[0], "crate" | "self" | "super" | "Self") {
            let tail = format!("::{}", written.join("::"));
            let found = pick(&|m| m.ends_with(&tail));
            if !found.is_empty() {
                return found;
            }
        }
        if named.len() == 1 { named } else { Vec::new() }
    }

    /// Every key template `inv` deletes, with the typed call it comes from: the string
    /// templates, then each typed invalidation's target template.
    pub fn key_templates(
        &self,
        inv: &InvalidatePolicy,
    ) -> Vec<(&'static str, Option<&'static str>)> {
        let mut out: Vec<(&'static str, Option<&'static str>)> =
            inv.keys.iter().map(|k| (*k, None)).collect();
        for typed in inv.typed {
            for target in self.resolve(inv, typed) {
                out.push((target.template, Some(typed.call)));
            }
        }
        out
    }

    /// The problems of these policies, with the default threshold for entries nothing
    /// invalidates ([`DEFAULT_NEVER_INVALIDATED_SECS`]). See [`Policies`] for the
    /// rules; problems come in a stable order (by kind, then by name). Assert it is empty in
    /// a unit test (`policies().in_module(module_path!()).check()` checks one module).
    ///
    /// ```standalone_crate
    /// #[cache_runtime::cached(key = "user:{id}", ttl = 60)]
    /// async fn get_user(id: u64) -> u64 { id }
    ///
    /// #[cache_runtime::invalidates("usr:{id}")] // a typo: deletes nothing
    /// async fn rename(id: u64) {}
    ///
    /// let problems = cache_runtime::policies().check();
    /// assert_eq!(problems.len(), 1);
    /// assert_eq!(
    ///     problems[0].to_string(),
    ///     format!("`{}::rename` invalidates key template \"usr:{{id}}\", which no #[cached] \
    ///              key template can render: it deletes nothing", module_path!()),
    /// );
    /// ```
    pub fn check(&self) -> Vec<PolicyProblem> {
        self.check_with(Duration::from_secs(DEFAULT_NEVER_INVALIDATED_SECS))
    }

    /// As [`check`](Self::check), reporting entries nothing invalidates when they can live
    /// longer than `never_invalidated_after`.
    ///
    /// ```
    /// #[cache_runtime::cached(key = "config", ttl = 600)]
    /// async fn config() -> String { String::new() }
    ///
    /// use std::time::Duration;
    /// let mine = cache_runtime::policies().in_module(module_path!());
    /// assert!(mine.check().is_empty()); // 600 s is under the default hour
    /// let p = mine.check_with(Duration::from_secs(300));
    /// assert_eq!(p.len(), 1);
    /// assert!(p[0].is_warning());
    /// ```
    pub fn check_with(&self, never_invalidated_after: Duration) -> Vec<PolicyProblem> {
        let threshold = never_invalidated_after.as_secs();
        let mut problems = Vec::new();
        let cached_keys: Vec<Pattern> = self
            .cached
            .iter()
            .map(|p| Pattern::new(p.key_segments))
            .collect();
        let cached_tags: Vec<Vec<Pattern>> = self
            .cached
            .iter()
            .map(|p| p.tag_segments.iter().map(|t| Pattern::new(t)).collect())
            .collect();
        let mut invalidated = vec![false; self.cached.len()];

        for inv in &self.invalidations {
            for (key, segments) in inv.keys.iter().zip(inv.key_segments) {
                let pat = Pattern::new(segments);
                let mut any = false;
                for (i, c) in cached_keys.iter().enumerate() {
                    if pat.overlap(c).is_some() {
                        any = true;
                        invalidated[i] = true;
                    }
                }
                if !any {
                    problems.push(PolicyProblem::UnmatchedKey {
                        invalidator: inv.name,
                        template: key,
                    });
                }
            }
            for typed in inv.typed {
                let targets = self.resolve(inv, typed);
                if targets.is_empty() {
                    problems.push(PolicyProblem::UnresolvedTarget {
                        invalidator: inv.name,
                        call: typed.call,
                    });
                }
                for target in targets {
                    let pat = Pattern::new(target.key_segments);
                    for (i, c) in cached_keys.iter().enumerate() {
                        if std::ptr::eq(self.cached[i], target) || pat.overlap(c).is_some() {
                            invalidated[i] = true;
                        }
                    }
                }
            }
            for (tag, segments) in inv.tags.iter().zip(inv.tag_segments) {
                let pat = Pattern::new(segments);
                let mut any = false;
                for (i, tags) in cached_tags.iter().enumerate() {
                    if tags.iter().any(|t| pat.overlap(t).is_some()) {
                        any = true;
                        invalidated[i] = true;
                    }
                }
                if !any {
                    problems.push(PolicyProblem::UnmatchedTag {
                        invalidator: inv.name,
                        tag,
                    });
                }
            }
        }

        for i in 0..self.cached.len() {
            for j in i + 1..self.cached.len() {
                if let Some(example) = cached_keys[i].overlap(&cached_keys[j]) {
                    let (a, b) = (self.cached[i], self.cached[j]);
                    problems.push(PolicyProblem::KeyOverlap {
                        first: a.name,
                        first_template: a.template,
                        second: b.name,
                        second_template: b.template,
                        example,
                    });
                }
            }
        }

        for (i, p) in self.cached.iter().enumerate() {
            if !invalidated[i] && p.lives_secs() > threshold {
                problems.push(PolicyProblem::NeverInvalidated {
                    function: p.name,
                    template: p.template,
                    lives_secs: p.lives_secs(),
                    threshold_secs: threshold,
                });
            }
        }
        problems
    }

    /// The cache-policy table as Markdown: one row per `#[cached]` function (function,
    /// template, ttl, jitter, negative ttl, stale, tags, near ttl, invalidated by), then one
    /// row per `#[invalidates]` function (what it deletes).
    ///
    /// ```
    /// #[cache_runtime::cached(key = "user:{id}", ttl = 300, tags = ["org:{org}"])]
    /// async fn get_user(id: u64, org: u64) -> u64 { id + org }
    ///
    /// #[cache_runtime::invalidates(tags = ["org:{org}"])]
    /// async fn reorganise(org: u64) {}
    ///
    /// let report = cache_runtime::policies().in_module(module_path!()).report();
    /// let m = module_path!();
    /// assert!(report.contains(&format!(
    ///     "| `{m}::get_user` | `user:{{id}}` | 300 s | – | = ttl | – | `org:{{org}}` | – | \
    ///      `{m}::reorganise` (tag `org:{{org}}`) |"
    /// )), "{report}");
    /// ```
    pub fn report(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| function | template | ttl | jitter | negative ttl | stale | tags | near ttl | invalidated by |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        let secs = |v: u64| {
            if v == 0 {
                "–".to_string()
            } else {
                format!("{v} s")
            }
        };
        for c in &self.cached {
            let key = Pattern::new(c.key_segments);
            let tags: Vec<Pattern> = c.tag_segments.iter().map(|t| Pattern::new(t)).collect();
            let mut by = Vec::new();
            for inv in &self.invalidations {
                let mut how = Vec::new();
                for (k, segments) in inv.keys.iter().zip(inv.key_segments) {
                    if Pattern::new(segments).overlap(&key).is_some() {
                        how.push(format!("key {}", code(k)));
                    }
                }
                for typed in inv.typed {
                    let hit = self.resolve(inv, typed).iter().any(|t| {
                        std::ptr::eq(*t, *c) || Pattern::new(t.key_segments).overlap(&key).is_some()
                    });
                    if hit {
                        how.push(format!("typed {}", code(typed.call)));
                    }
                }
                for (t, segments) in inv.tags.iter().zip(inv.tag_segments) {
                    let pat = Pattern::new(segments);
                    if tags.iter().any(|ct| pat.overlap(ct).is_some()) {
                        how.push(format!("tag {}", code(t)));
                    }
                }
                if !how.is_empty() {
                    by.push(format!("{} ({})", code(inv.name), how.join(", ")));
                }
            }
            let negative = match c.negative_ttl_secs {
                None => "= ttl".to_string(),
                Some(0) => "not cached".to_string(),
                Some(n) => format!("{n} s"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                code(c.name),
                code(c.template),
                secs(c.ttl_secs),
                secs(c.jitter_secs),
                negative,
                secs(c.stale_secs),
                list(c.tags.iter().map(|t| code(t))),
                c.local_ttl_secs.map_or("–".to_string(), secs),
                list(by.into_iter()),
            );
        }
        if !self.invalidations.is_empty() {
            out.push_str("\n| invalidation | deletes keys | voids tags |\n|---|---|---|\n");
            for inv in &self.invalidations {
                let keys = self
                    .key_templates(inv)
                    .into_iter()
                    .map(|(t, call)| match call {
                        None => code(t),
                        Some(call) => format!("{} → {}", code(call), code(t)),
                    });
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    code(inv.name),
                    list(keys),
                    list(inv.tags.iter().map(|t| code(t))),
                );
            }
        }
        out
    }
}

/// `` `text` `` for a Markdown table cell (`|` escaped).
fn code(text: &str) -> String {
    format!("`{}`", text.replace('|', "\\|"))
}

/// Comma-separated cells, or `–` for none.
fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "–".to_string()
    } else {
        items.join(", ")
    }
}

/// Something [`Policies::check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyProblem {
    /// An `#[invalidates]` key template that can render no key any `#[cached]` key template
    /// renders: it deletes nothing (a typo, or a cached template that changed).
    UnmatchedKey {
        /// The invalidating function (its stats name).
        invalidator: &'static str,
        /// Its key template.
        template: &'static str,
    },
    /// An `#[invalidates]` tag that no `#[cached]` tag template can render: it voids nothing.
    UnmatchedTag {
        /// The invalidating function.
        invalidator: &'static str,
        /// Its tag template.
        tag: &'static str,
    },
    /// A typed invalidation whose target was not found among the checked cached functions
    /// (e.g. it is outside the checked module; see [`TypedKey`]).
    UnresolvedTarget {
        /// The invalidating function.
        invalidator: &'static str,
        /// The call as written.
        call: &'static str,
    },
    /// Two `#[cached]` functions whose key templates can render the same key: they read and
    /// overwrite each other's entries (of another type: each other's misses).
    KeyOverlap {
        /// One function.
        first: &'static str,
        /// Its key template.
        first_template: &'static str,
        /// The other function.
        second: &'static str,
        /// Its key template.
        second_template: &'static str,
        /// A key (without the namespace) both can render.
        example: String,
    },
    /// A warning: a `#[cached]` function that nothing invalidates, whose entries live longer
    /// than the threshold (stale data can be served that long after a write).
    NeverInvalidated {
        /// The cached function.
        function: &'static str,
        /// Its key template.
        template: &'static str,
        /// The longest an entry lives ([`CachedPolicy::lives_secs`]).
        lives_secs: u64,
        /// The threshold it exceeds.
        threshold_secs: u64,
    },
}

impl PolicyProblem {
    /// Whether this is only a warning ([`PolicyProblem::NeverInvalidated`]).
    pub fn is_warning(&self) -> bool {
        matches!(self, PolicyProblem::NeverInvalidated { .. })
    }
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyProblem::UnmatchedKey {
                invalidator,
                template,
            } => write!(
                f,
                "`{invalidator}` invalidates key template {template:?}, which no #[cached] key \
                 template can render: it deletes nothing"
            ),
            PolicyProblem::UnmatchedTag { invalidator, tag } => write!(
                f,
                "`{invalidator}` invalidates tag {tag:?}, which no #[cached] tag template can \
                 render: it voids nothing"
            ),
            PolicyProblem::UnresolvedTarget { invalidator, call } => write!(
                f,
                "`{invalidator}` invalidates `{call}`, whose target is not among the checked \
                 #[cached] functions"
            ),
            PolicyProblem::KeyOverlap {
                first,
                first_template,
                second,
                second_template,
                example,
            } => write!(
                f,
                "`{first}` ({first_template:?}) and `{second}` ({second_template:?}) can render \
                 the same key, e.g. {example:?}: they share entries"
            ),
            PolicyProblem::NeverInvalidated {
                function,
                template,
                lives_secs,
                threshold_secs,
            } => write!(
                f,
                "warning: nothing invalidates `{function}` ({template:?}), and its entries live \
                 up to {lives_secs} s (over {threshold_secs} s)"
            ),
        }
    }
}

/// One step of a template: a literal character or a placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Part,
}

/// What a transition reads.
#[derive(Clone, Copy, Debug)]
enum Label {
    /// Exactly this character.
    Char(char),
    /// [`alphabet::is_plain`]: written unencoded.
    Plain,
    /// `[0-9A-F]`: a digit of a `%XX` escape.
    Hex,
}

impl Label {
    fn contains(self, c: char) -> bool {
        match self {
            Label::Char(x) => x == c,
            Label::Plain => alphabet::is_plain(c),
            Label::Hex => alphabet::is_escape_digit(c),
        }
    }

    /// A character both labels read, if any (a readable one for examples).
    fn meet(self, other: Label) -> Option<char> {
        match (self, other) {
            (Label::Char(c), l) | (l, Label::Char(c)) => l.contains(c).then_some(c),
            _ => "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_."
                .chars()
                .find(|&c| self.contains(c) && other.contains(c)),
        }
    }
}

/// A template as an automaton over the keys it can render. A state is `(i, s)`: before
/// token `i`, and inside a placeholder's part at sub-state `s` (0: between units, 1: after
/// `%`, 2: after `%X`).
#[derive(Clone, Debug)]
struct Pattern(Vec<Tok>);

type State = (usize, u8);

impl Pattern {
    /// The automaton of a template the macro parsed (its segments: no template text is
    /// parsed here).
    fn new(segments: &[TemplateSegment]) -> Pattern {
        let mut toks = Vec::new();
        for seg in segments {
            match seg {
                TemplateSegment::Lit(text) => toks.extend(text.chars().map(Tok::Lit)),
                TemplateSegment::Part(_) => toks.push(Tok::Part),
            }
        }
        Pattern(toks)
    }

    fn accepts(&self, (i, s): State) -> bool {
        i == self.0.len() && s == 0
    }

    /// Moves that read nothing: out of a placeholder between units.
    fn epsilon(&self, (i, s): State) -> Option<State> {
        (self.0.get(i) == Some(&Tok::Part) && s == 0).then_some((i + 1, 0))
    }

    /// Moves that read one character.
    fn moves(&self, (i, s): State) -> Vec<(Label, State)> {
        match self.0.get(i) {
            None => Vec::new(),
            Some(Tok::Lit(c)) => vec![(Label::Char(*c), (i + 1, 0))],
            Some(Tok::Part) => match s {
                0 => vec![
                    (Label::Plain, (i, 0)),
                    (Label::Char(alphabet::NONE), (i, 0)),
                    (Label::Char(alphabet::ESCAPE), (i, 1)),
                ],
                1 => vec![(Label::Hex, (i, 2))],
                _ => vec![(Label::Hex, (i, 0))],
            },
        }
    }

    /// A shortest string both patterns can render, if there is one (breadth-first search of
    /// the product automaton; moves that read nothing cost nothing).
    fn overlap(&self, other: &Pattern) -> Option<String> {
        type Node = (State, State);
        let start: Node = ((0, 0), (0, 0));
        let mut seen: HashSet<Node> = HashSet::new();
        // (node, the string read to reach it)
        let mut queue: VecDeque<(Node, String)> = VecDeque::new();
        queue.push_back((start, String::new()));
        while let Some(((a, b), read)) = queue.pop_front() {
            if !seen.insert((a, b)) {
                continue;
            }
            if self.accepts(a) && other.accepts(b) {
                return Some(read);
            }
            if let Some(a2) = self.epsilon(a) {
                queue.push_front(((a2, b), read.clone()));
            }
            if let Some(b2) = other.epsilon(b) {
                queue.push_front(((a, b2), read.clone()));
            }
            for (la, a2) in self.moves(a) {
                for (lb, b2) in other.moves(b) {
                    if let Some(c) = la.meet(lb)
                        && !seen.contains(&(a2, b2))
                    {
                        let mut next = read.clone();
                        next.push(c);
                        queue.push_back(((a2, b2), next));
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the macro hands over for a template it accepted (a test stand-in for its parser:
    /// `{{` / `}}` are literal braces, `{..}` a placeholder).
    fn segments(template: &str) -> &'static [TemplateSegment] {
        let mut out = Vec::new();
        let mut lit = String::new();
        let mut chars = template.chars().peekable();
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        while let Some(c) = chars.next() {
            match c {
                '{' | '}' if chars.peek() == Some(&c) => {
                    chars.next();
                    lit.push(c);
                }
                '{' => {
                    if !lit.is_empty() {
                        out.push(TemplateSegment::Lit(leak(std::mem::take(&mut lit))));
                    }
                    let part: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    out.push(TemplateSegment::Part(leak(part)));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            out.push(TemplateSegment::Lit(leak(lit)));
        }
        Box::leak(out.into_boxed_slice())
    }

    fn all_segments(templates: &[&str]) -> &'static [&'static [TemplateSegment]] {
        Box::leak(templates.iter().map(|t| segments(t)).collect())
    }

    #[test]
    fn test_segments() {
        assert_eq!(
            segments("u:{id}:{{x}}{a.b}"),
            [
                TemplateSegment::Lit("u:"),
                TemplateSegment::Part("id"),
                TemplateSegment::Lit(":{x}"),
                TemplateSegment::Part("a.b")
            ]
        );
    }

    fn overlap(a: &str, b: &str) -> Option<String> {
        let pattern = |t| Pattern::new(segments(t));
        let r = pattern(a).overlap(&pattern(b));
        // Symmetric.
        assert_eq!(
            r.is_some(),
            pattern(b).overlap(&pattern(a)).is_some(),
            "{a} / {b}"
        );
        r
    }

    #[test]
    fn literals_match_exactly() {
        assert_eq!(
            overlap("users:list", "users:list").as_deref(),
            Some("users:list")
        );
        assert_eq!(overlap("users:list", "users:lists"), None);
        assert_eq!(overlap("users:list", "Users:list"), None);
        assert_eq!(overlap("{{x}}", "{{x}}").as_deref(), Some("{x}"));
        assert_eq!(overlap("{{x}}", "{x}"), None, "a brace is never in a part");
    }

    #[test]
    fn placeholders_cannot_render_separators() {
        assert_eq!(overlap("user:{id}", "user:{name}:x"), None);
        assert_eq!(overlap("user:{id}", "user:a:x"), None);
        assert_eq!(overlap("user:{id}", "user:{a}-{b}"), None);
        assert_eq!(overlap("user:{id}", "user/{id}"), None);
        assert_eq!(overlap("user:{id}", "user:{x}").as_deref(), Some("user:"));
        assert_eq!(overlap("user:{id}", "user:7").as_deref(), Some("user:7"));
        assert_eq!(
            overlap("user:{id}", "user:").as_deref(),
            Some("user:"),
            "empty part"
        );
        // `.` and `_` are part characters.
        assert_eq!(
            overlap("user:{id}", "user:{a}.{b}").as_deref(),
            Some("user:.")
        );
        assert_eq!(
            overlap("user:{id}", "user:a_b.c").as_deref(),
            Some("user:a_b.c")
        );
        // A literal prefix inside what a placeholder renders.
        assert_eq!(overlap("{id}", "user").as_deref(), Some("user"));
        assert_eq!(overlap("{id}:x", "user:{n}").as_deref(), Some("user:x"));
        assert_eq!(
            overlap("{a}:{b}", "{c}:{d}:{e}"),
            None,
            "colon counts differ"
        );
    }

    #[test]
    fn escapes_and_none() {
        // `~` (None) and `%XX` are what parts contain besides the plain set.
        assert_eq!(overlap("user:{id}", "user:~").as_deref(), Some("user:~"));
        assert_eq!(
            overlap("user:{id}", "user:%3A").as_deref(),
            Some("user:%3A")
        );
        assert_eq!(
            overlap("user:{id}", "user:a%3Ab").as_deref(),
            Some("user:a%3Ab")
        );
        // An escape has two upper-case hex digits.
        assert_eq!(overlap("user:{id}", "user:%"), None);
        assert_eq!(overlap("user:{id}", "user:%3"), None);
        assert_eq!(overlap("user:{id}", "user:%3a"), None);
        assert_eq!(overlap("user:{id}", "user:%G0"), None);
        // Escapes next to literals: `{a}%{b}` is not a valid template, but `{a}%2F` is text.
        assert_eq!(overlap("k:{a}", "k:x%2F").as_deref(), Some("k:x%2F"));
        // A hashed long part is plain characters after `~h`.
        let hashed = format!("user:~h{}", "0123456789abcdef".repeat(2));
        assert!(overlap("user:{id}", &hashed).is_some());
        // Unicode literals are never inside a part.
        assert_eq!(overlap("user:{id}", "user:é"), None);
        assert_eq!(overlap("ключ:{id}", "ключ:1").as_deref(), Some("ключ:1"));
    }

    #[test]
    fn examples_are_rendered_by_both() {
        let e = overlap("order:{shop}:{id}", "order:{x}:item.{n}").unwrap();
        assert_eq!(e, "order::item.");
        assert_eq!(overlap("a:{x}:b", "a:1{y}:b").as_deref(), Some("a:1:b"));
        assert_eq!(
            overlap("a:{x}:b", "a:1{y}"),
            None,
            "`:b` is never inside a part"
        );
        assert_eq!(overlap("a:{x}:b", "a:1{y}:c"), None);
    }

    fn cached(name: &'static str, template: &'static str, ttl: u64) -> &'static CachedPolicy {
        cached_tags(name, template, ttl, &[])
    }

    fn cached_tags(
        name: &'static str,
        template: &'static str,
        ttl: u64,
        tags: &'static [&'static str],
    ) -> &'static CachedPolicy {
        Box::leak(Box::new(CachedPolicy {
            name,
            module: "app",
            function: name.rsplit("::").next().unwrap(),
            template,
            ttl_secs: ttl,
            jitter_secs: 0,
            negative_ttl_secs: None,
            stale_secs: 0,
            local_ttl_secs: None,
            tags,
            key_segments: segments(template),
            tag_segments: all_segments(tags),
            returns: "u64",
            file: "src/lib.rs",
            line: 1,
        }))
    }

    fn inv(
        name: &'static str,
        keys: &'static [&'static str],
        typed: &'static [TypedKey],
        tags: &'static [&'static str],
    ) -> &'static InvalidatePolicy {
        Box::leak(Box::new(InvalidatePolicy {
            name,
            module: "app",
            function: name.rsplit("::").next().unwrap(),
            keys,
            typed,
            tags,
            key_segments: all_segments(keys),
            tag_segments: all_segments(tags),
            file: "src/lib.rs",
            line: 1,
        }))
    }

    #[test]
    fn clean_policies_have_no_problems() {
        let p = Policies::new(
            vec![
                cached("app::get_user", "user:{id}", 300),
                cached("app::list", "users:list", 7200),
            ],
            vec![inv("app::rename", &["user:{id}", "users:list"], &[], &[])],
        );
        assert_eq!(p.check(), vec![]);
    }

    #[test]
    fn unmatched_key_and_tag() {
        let p = Policies::new(
            vec![cached_tags(
                "app::get_user",
                "user:{id}",
                60,
                &["org:{org}"],
            )],
            vec![inv(
                "app::rename",
                &["usr:{id}"],
                &[],
                &["orgs:{org}", "org:{o}"],
            )],
        );
        let problems = p.check();
        assert_eq!(
            problems,
            vec![
                PolicyProblem::UnmatchedKey {
                    invalidator: "app::rename",
                    template: "usr:{id}"
                },
                PolicyProblem::UnmatchedTag {
                    invalidator: "app::rename",
                    tag: "orgs:{org}"
                },
            ]
        );
        assert_eq!(
            problems[0].to_string(),
            "`app::rename` invalidates key template \"usr:{id}\", which no #[cached] key \
             template can render: it deletes nothing"
        );
        assert_eq!(
            problems[1].to_string(),
            "`app::rename` invalidates tag \"orgs:{org}\", which no #[cached] tag template can \
             render: it voids nothing"
        );
    }

    #[test]
    fn overlapping_cached_templates() {
        let p = Policies::new(
            vec![
                cached("app::by_id", "user:{id}", 60),
                cached("app::by_name", "user:{name}:profile", 60),
                cached("app::any", "user:{a}.{b}", 60),
            ],
            vec![],
        );
        let problems = p.check();
        assert_eq!(
            problems,
            vec![PolicyProblem::KeyOverlap {
                first: "app::any",
                first_template: "user:{a}.{b}",
                second: "app::by_id",
                second_template: "user:{id}",
                example: "user:.".into(),
            }]
        );
        assert_eq!(
            problems[0].to_string(),
            "`app::any` (\"user:{a}.{b}\") and `app::by_id` (\"user:{id}\") can render the same \
             key, e.g. \"user:.\": they share entries"
        );
    }

    #[test]
    fn never_invalidated_is_a_warning_over_the_threshold() {
        let long = cached("app::long", "long:{id}", 7200);
        let short = cached("app::short", "short:{id}", 60);
        let p = Policies::new(vec![long, short], vec![]);
        let problems = p.check();
        assert_eq!(
            problems,
            vec![PolicyProblem::NeverInvalidated {
                function: "app::long",
                template: "long:{id}",
                lives_secs: 7200,
                threshold_secs: 3600
            }]
        );
        assert!(problems[0].is_warning());
        assert_eq!(
            problems[0].to_string(),
            "warning: nothing invalidates `app::long` (\"long:{id}\"), and its entries live up \
             to 7200 s (over 3600 s)"
        );
        assert_eq!(p.check_with(Duration::from_secs(30)).len(), 2);
        // A tag invalidation counts.
        let tagged = cached_tags("app::tagged", "t:{id}", 7200, &["org:{org}"]);
        let p = Policies::new(vec![tagged], vec![inv("app::reorg", &[], &[], &["org:7"])]);
        assert_eq!(p.check(), vec![]);
        // Jitter, stale and a longer negative TTL add up.
        let p = CachedPolicy {
            jitter_secs: 10,
            stale_secs: 5,
            negative_ttl_secs: Some(100),
            ..*cached("app::x", "x", 60)
        };
        assert_eq!(p.lives_secs(), 105);
    }

    #[test]
    fn modules_of_paths() {
        let m = |prefix: &[&str]| target_modules("app::users::api", prefix);
        // A module segment is not dropped: `orders::get` never means a `get` of this module.
        assert_eq!(m(&[]), ["app::users::api"]);
        assert_eq!(m(&["Self"]), ["app::users::api"]);
        assert_eq!(m(&["crate", "orders"]), ["app::orders"]);
        assert_eq!(m(&["super"]), ["app::users"]);
        assert_eq!(m(&["super", "super", "x"]), ["app::x"]);
        assert_eq!(m(&["self", "db"]), ["app::users::api::db"]);
        assert_eq!(m(&["orders"]), ["app::users::api::orders", "orders"]);
        // A type segment is: `Repo::by_id` is in `Repo`'s module.
        assert_eq!(m(&["crate", "Repo"]), ["app::Repo", "app"]);
        assert_eq!(
            m(&["Repo"]),
            ["app::users::api::Repo", "app::users::api", "Repo"]
        );
    }

    static TARGET: CachedPolicy = CachedPolicy {
        name: "app::get_user",
        module: "app",
        function: "get_user",
        template: "user:{id}",
        ttl_secs: 7200,
        jitter_secs: 0,
        negative_ttl_secs: None,
        stale_secs: 0,
        local_ttl_secs: None,
        tags: &[],
        key_segments: &[TemplateSegment::Lit("user:"), TemplateSegment::Part("id")],
        tag_segments: &[],
        returns: "u64",
        file: "src/lib.rs",
        line: 1,
    };

    #[test]
    fn typed_invalidations_use_the_target_template() {
        static TYPED: [TypedKey; 1] = [TypedKey {
            call: "get_user(id)",
            path: "get_user",
        }];
        let i = inv("app::rename", &[], &TYPED, &[]);
        let p = Policies::new(vec![&TARGET], vec![i]);
        assert_eq!(p.check(), vec![]);
        assert_eq!(
            p.key_templates(i),
            vec![("user:{id}", Some("get_user(id)"))]
        );

        static METHOD: [TypedKey; 3] = [
            TypedKey {
                call: "Self::get_user(id)",
                path: "Self::get_user",
            },
            TypedKey {
                call: "crate::get_user(id)",
                path: "crate::get_user",
            },
            TypedKey {
                call: "Self::gone(id)",
                path: "Self::gone",
            },
        ];
        let p = Policies::new(vec![&TARGET], vec![inv("app::touch", &[], &METHOD, &[])]);
        assert_eq!(
            p.check(),
            vec![PolicyProblem::UnresolvedTarget {
                invalidator: "app::touch",
                call: "Self::gone(id)"
            }]
        );
    }

    #[test]
    fn module_scope() {
        let a = cached("app::users::get", "user:{id}", 60);
        let b = Box::leak(Box::new(CachedPolicy {
            module: "app::users_extra",
            ..*cached("app::users_extra::get", "user:{id}", 60)
        }));
        let a = Box::leak(Box::new(CachedPolicy {
            module: "app::users",
            ..*a
        }));
        let p = Policies::new(vec![a, b], vec![]);
        assert_eq!(p.check().len(), 1, "overlap");
        assert_eq!(p.in_module("app::users").cached().len(), 1);
        assert_eq!(p.in_module("app::users").check(), vec![]);
        assert_eq!(p.in_module("app").cached().len(), 2);
        assert_eq!(p.in_module("ap").cached().len(), 0);
    }

    #[test]
    fn report_table() {
        static TYPED: [TypedKey; 1] = [TypedKey {
            call: "get_user(id)",
            path: "get_user",
        }];
        let tagged = Box::leak(Box::new(CachedPolicy {
            jitter_secs: 30,
            negative_ttl_secs: Some(0),
            stale_secs: 60,
            ..*cached_tags("app::org", "org:{id}|x", 300, &["org:{id}"])
        }));
        let p = Policies::new(
            vec![&TARGET, tagged],
            vec![
                inv("app::rename", &["users:list"], &TYPED, &[]),
                inv("app::reorg", &[], &[], &["org:{o}"]),
            ],
        );
        let report = p.report();
        assert_eq!(
            report,
            "| function | template | ttl | jitter | negative ttl | stale | tags | near ttl | invalidated by |\n\
             |---|---|---|---|---|---|---|---|---|\n\
             | `app::get_user` | `user:{id}` | 7200 s | – | = ttl | – | – | – | `app::rename` (typed `get_user(id)`) |\n\
             | `app::org` | `org:{id}\\|x` | 300 s | 30 s | not cached | 60 s | `org:{id}` | – | `app::reorg` (tag `org:{o}`) |\n\
             \n\
             | invalidation | deletes keys | voids tags |\n\
             |---|---|---|\n\
             | `app::rename` | `users:list`, `get_user(id)` → `user:{id}` | – |\n\
             | `app::reorg` | – | `org:{o}` |\n"
        );
    }
}
