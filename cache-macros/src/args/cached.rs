//! `#[cached(..)]`: the typed model and its parser.

use proc_macro2::TokenStream;
use syn::{ExprPath, Ident, Lit, LitStr};

use super::{Common, Int, RawArg, Seen, common_arg, parse_raw, unknown_argument, values};
use crate::ctxt::Ctxt;

/// Parsed `#[cached(...)]` arguments. Required ones are `Option` because
/// parsing goes on after errors; `valid` reports the missing ones.
#[derive(Default)]
pub(crate) struct CachedArgs {
    /// `key = "tmpl"`.
    pub key: Option<LitStr>,
    /// `ttl = N`.
    pub ttl: Option<Int>,
    /// `jitter = N`.
    pub jitter: Option<Int>,
    /// `negative_ttl = N`.
    pub negative_ttl: Option<Int>,
    /// `lock_ms = N`.
    pub lock_ms: Option<Int>,
    /// `stale = N` (seconds > 0).
    pub stale: Option<Int>,
    /// `early_refresh = B` (finite, > 0).
    pub early_refresh: Option<f64>,
    /// `timeout_ms = N` (> 0, only with `stale`).
    pub timeout_ms: Option<Int>,
    /// `tags = ["tmpl", ..]`, in order.
    pub tags: Vec<LitStr>,
    /// `cache_if = path`.
    pub cache_if: Option<ExprPath>,
    /// `local_ttl = N` (seconds, `0 < N <= ttl`): the near cache.
    pub local_ttl: Option<Int>,
    /// `key_fn = true|false`: whether the hidden key function that typed
    /// invalidation calls is emitted (default: see `expand::policy::emits_key_fn`).
    pub key_fn: Option<syn::LitBool>,
    /// The `stale`, `early_refresh` and `timeout_ms` arguments as written
    /// (even when their value was rejected): they make the body run in the
    /// background, which constrains the function's parameters.
    pub refresh_args: Vec<Ident>,
    /// `cache`, `name`, `returns`, `crate`.
    pub common: Common,
    /// Whether a key was written: `key = ..` (even with a rejected value), a positional
    /// string literal, or a misspelt argument that suggests `key`.
    pub key_written: bool,
    /// Whether a ttl was written, in the same sense.
    pub ttl_written: bool,
    /// Whether a syntax error occurred (missing arguments are then likely a consequence).
    pub syntax_error: bool,
}

/// Every argument `#[cached]` takes.
const CACHED_ARGS: &[&str] = &[
    "key",
    "ttl",
    "jitter",
    "negative_ttl",
    "lock_ms",
    "stale",
    "early_refresh",
    "timeout_ms",
    "tags",
    "cache_if",
    "local_ttl",
    "key_fn",
    "cache",
    "name",
    "returns",
    "crate",
];

/// Parses `#[cached(...)]` arguments, recording all errors in `ctxt`.
/// Single-argument rules only (`ttl > 0`, ..); `valid::cached_args` checks the rest.
pub(crate) fn parse(tokens: TokenStream, ctxt: &mut Ctxt) -> CachedArgs {
    let (raw, syntax_error) = parse_raw(tokens, ctxt);
    let mut args = CachedArgs::default();
    let mut seen = Seen::default();
    let mut key_given = false;
    let mut ttl_given = false;
    for arg in raw {
        let (name, value) = match arg {
            RawArg::Positional(lit) => {
                let msg = match &lit {
                    Lit::Str(s) => format!(
                        "the key template must be named: write `key = {}`",
                        s.token()
                    ),
                    _ => "unexpected literal: arguments are written `name = value`, \
                          as in `key = \"user:{id}\", ttl = 300`"
                        .to_string(),
                };
                ctxt.error(lit.span(), msg);
                // Counts as the key for the "missing key" check.
                key_given |= matches!(lit, Lit::Str(_));
                continue;
            }
            RawArg::Named(name, value) => (name, value),
            RawArg::Call(call) => {
                ctxt.error_spanned(
                    &call,
                    "`#[cached]` takes named arguments, e.g. `key = \"user:{id}\"`; \
                     calls such as `get_user(id)` are typed invalidations, for `#[invalidates]`",
                );
                continue;
            }
        };
        let n = name.to_string();
        if !CACHED_ARGS.contains(&n.as_str()) {
            // A misspelt required argument is not reported as missing too.
            match unknown_argument(&name, CACHED_ARGS, "cached", ctxt) {
                Some("key") => key_given = true,
                Some("ttl") => ttl_given = true,
                _ => {}
            }
            continue;
        }
        if !seen.first(&name, ctxt) {
            continue;
        }
        match n.as_str() {
            "key" => {
                key_given = true;
                args.key = values::expect_str(&name, &value, "\"user:{id}\"", ctxt);
            }
            "ttl" => {
                ttl_given = true;
                args.ttl = values::expect_int(&name, &value, "seconds", 300, ctxt);
                if let Some(t) = args.ttl.filter(|t| t.value == 0) {
                    ctxt.error(
                        t.span,
                        "`ttl` must be greater than 0: every entry needs an expiry (in seconds), \
                         e.g. `ttl = 300`",
                    );
                    args.ttl = None;
                }
            }
            "jitter" => args.jitter = values::expect_int(&name, &value, "seconds", 30, ctxt),
            "negative_ttl" => {
                args.negative_ttl = values::expect_int(&name, &value, "seconds", 60, ctxt);
            }
            "lock_ms" => {
                args.lock_ms = values::expect_int(&name, &value, "milliseconds", 5000, ctxt);
                if let Some(l) = args.lock_ms.filter(|l| l.value == 0) {
                    ctxt.error(
                        l.span,
                        "`lock_ms` must be greater than 0: it is how long (in milliseconds) \
                         a loader holds the stampede lease; omit it for the cache's default",
                    );
                    args.lock_ms = None;
                }
            }
            "stale" => {
                args.refresh_args.push(name.clone());
                args.stale = values::expect_positive(
                    &name,
                    &value,
                    "seconds",
                    60,
                    "`stale` is a grace window in seconds after `ttl` in which a call gets the \
                     stale value at once while one background refresh reloads it; omit it, or \
                     give seconds > 0, e.g. `stale = 60`",
                    ctxt,
                );
            }
            "early_refresh" => {
                args.refresh_args.push(name.clone());
                args.early_refresh = values::expect_float(&name, &value, ctxt);
            }
            "timeout_ms" => {
                args.refresh_args.push(name.clone());
                args.timeout_ms = values::expect_positive(
                    &name,
                    &value,
                    "milliseconds",
                    200,
                    "`timeout_ms` is how long (in milliseconds) a call waits for the loader \
                     before it returns the stale value; omit it to always wait, or give \
                     milliseconds > 0, e.g. `timeout_ms = 200`",
                    ctxt,
                );
            }
            "tags" => args.tags = values::expect_tags(&name, &value, ctxt),
            "cache_if" => args.cache_if = values::expect_fn_path(&name, &value, ctxt),
            "key_fn" => args.key_fn = values::expect_bool(&name, &value, ctxt),
            "local_ttl" => {
                args.local_ttl = values::expect_positive(
                    &name,
                    &value,
                    "seconds",
                    5,
                    "`local_ttl` is how long (in seconds) this process keeps a decoded copy of \
                     a value in its near cache; omit it for no near cache, or give seconds > 0 \
                     and at most `ttl`, e.g. `local_ttl = 5`",
                    ctxt,
                );
            }
            _ => {
                common_arg(&name, &value, &mut args.common, ctxt);
            }
        }
    }
    args.key_written = key_given;
    args.ttl_written = ttl_given;
    args.syntax_error = syntax_error;
    args
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shape::Shape;
    use quote::quote;

    /// The arguments and the parse errors (only this stage's: no cross-argument rules).
    pub(crate) fn cached(tokens: TokenStream) -> (CachedArgs, Vec<String>) {
        let mut ctxt = Ctxt::new();
        let args = parse(tokens, &mut ctxt);
        (args, errors(ctxt))
    }

    pub(crate) fn errors(ctxt: Ctxt) -> Vec<String> {
        ctxt.check()
            .err()
            .map(|e| e.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn full_cached() {
        let (a, e) = cached(quote! {
            key = "user:{id}", ttl = 300, jitter = 30, negative_ttl = 0, lock_ms = 2000,
            cache = self.cache, name = "users.get", returns = "result_option",
            crate = ::my::cache_runtime,
        });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.key.unwrap().value(), "user:{id}");
        assert_eq!(a.ttl.unwrap().value, 300);
        assert_eq!(a.jitter.unwrap().value, 30);
        assert_eq!(a.negative_ttl.unwrap().value, 0);
        assert_eq!(a.lock_ms.unwrap().value, 2000);
        assert!(a.common.cache.is_some());
        assert_eq!(a.common.name.unwrap().value(), "users.get");
        assert_eq!(a.common.returns, Some(Shape::ResOpt));
        assert!(a.common.krate.unwrap().leading_colon.is_some());
    }

    #[test]
    fn all_errors_collected() {
        let (_, e) = cached(quote! {
            key = "k", ttl = 0, jitter = "5", tll = 4, key = "x", returns = "maybe", crate = 5
        });
        assert_eq!(e.len(), 6, "{e:?}");
        assert!(e[0].contains("ttl` must be greater than 0"), "{e:?}");
        assert!(e[1].contains("remove the quotes"), "{e:?}");
        assert!(e[2].contains("did you mean `ttl`?"), "{e:?}");
        assert!(e[3].contains("duplicate argument `key`"), "{e:?}");
        assert!(e[4].contains("unknown `returns` value"), "{e:?}");
        assert!(e[5].contains("`crate` expects a path"), "{e:?}");
    }

    #[test]
    fn syntax_errors_recover() {
        let (a, e) = cached(quote! { key = "a", ttl 5, jitter = 1 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("expected `=` after `ttl`"), "{e:?}");
        assert_eq!(a.jitter.unwrap().value, 1);
        let (_, e) = cached(quote! { key = "a" ttl = 5 });
        assert_eq!(e.len(), 1, "{e:?}");
        let (_, e) = cached(quote! { key = , ttl = 5 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("missing value"), "{e:?}");
    }

    #[test]
    fn wrong_kinds() {
        let (_, e) = cached(quote! { key = 5, ttl = 1.5, lock_ms = -1, name = foo });
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("`key` expects a string literal, found an integer"));
        assert!(e[1].contains("found a float"));
        assert!(e[2].contains("cannot be negative"));
        assert!(e[3].contains("`name` expects a string literal, found a path"));
    }

    #[test]
    fn positional_key_in_cached() {
        let (_, e) = cached(quote! { "user:{id}", ttl = 5 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("write `key = \"user:{id}\"`"), "{e:?}");
    }

    #[test]
    fn freshness_args() {
        let (a, e) = cached(quote! {
            key = "u:{id}", ttl = 60, stale = 300, early_refresh = 1.5, timeout_ms = 250,
            tags = ["org:{org}", "users"], cache_if = crate::policy::is_active,
        });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.stale.unwrap().value, 300);
        assert_eq!(a.early_refresh, Some(1.5));
        assert_eq!(a.timeout_ms.unwrap().value, 250);
        let tags: Vec<String> = a.tags.iter().map(LitStr::value).collect();
        assert_eq!(tags, ["org:{org}", "users"]);
        let path = a.cache_if.unwrap().path;
        assert_eq!(quote!(#path).to_string(), "crate :: policy :: is_active");
        let names: Vec<String> = a.refresh_args.iter().map(Ident::to_string).collect();
        assert_eq!(names, ["stale", "early_refresh", "timeout_ms"]);
        let (a, e) = cached(quote! { key = "u", ttl = 60, early_refresh = 2e-1 });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.early_refresh, Some(0.2));
        let (a, e) = cached(quote! { key = "u", ttl = 60, tags = ["a"] });
        assert!(e.is_empty() && a.refresh_args.is_empty(), "{e:?}");
    }

    #[test]
    fn freshness_zero_values() {
        let (a, e) = cached(quote! { key = "u", ttl = 60, stale = 0 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("`stale = 0` has no meaning"), "{e:?}");
        assert!(e[0].contains("omit it, or give seconds > 0"), "{e:?}");
        assert!(a.stale.is_none());
        let (_, e) = cached(quote! { key = "u", ttl = 60, stale = 5, timeout_ms = 0 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("`timeout_ms = 0` has no meaning"), "{e:?}");
    }

    #[test]
    fn early_refresh_values() {
        for (v, msg) in [
            (quote!(0.0), "`early_refresh = 0.0` has no meaning"),
            (quote!(-1.0), "`early_refresh` must be greater than 0"),
            (quote!(1), "expected a float literal such as `1.0`"),
            (quote!("1.0"), "remove the quotes"),
            (quote!(b), "found a path"),
            (quote!(1e999), "out of range"),
        ] {
            let (a, e) = cached(quote! { key = "u", ttl = 60, early_refresh = #v });
            assert_eq!(e.len(), 1, "{v}: {e:?}");
            assert!(e[0].contains(msg), "{v}: {e:?}");
            assert!(a.early_refresh.is_none());
            // Still counts as a refresh argument (for the parameter checks).
            assert_eq!(a.refresh_args.len(), 1);
        }
        let (_, e) = cached(quote! { key = "u", ttl = 60, early_refresh = 1 });
        assert!(e[0].contains("write `early_refresh = 1.0`"), "{e:?}");
    }

    #[test]
    fn tags_errors() {
        let (a, e) = cached(quote! { key = "u", ttl = 60, tags = "org:{id}" });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("write `tags = [\"org:{id}\"]`"), "{e:?}");
        assert!(a.tags.is_empty());
        let (a, e) = cached(quote! { key = "u", ttl = 60, tags = ["a", 5, b, "a", "c"] });
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("found an integer"), "{e:?}");
        assert!(e[1].contains("found a path"), "{e:?}");
        assert!(e[2].contains("duplicate tag \"a\""), "{e:?}");
        // The string literals are still checked as templates.
        assert_eq!(a.tags.len(), 2);
        let (_, e) = cached(quote! { key = "u", ttl = 60, tags = [] });
        assert!(e[0].contains("lists no tag"), "{e:?}");
        let (_, e) = cached(quote! { key = "u", ttl = 60, tags = users });
        assert!(e[0].contains("expects a list of string literals"), "{e:?}");
    }

    #[test]
    fn cache_if_errors() {
        let (_, e) = cached(quote! { key = "u", ttl = 60, cache_if = "keep" });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("remove the quotes, `cache_if = keep`"),
            "{e:?}"
        );
        let (_, e) = cached(quote! { key = "u", ttl = 60, cache_if = |v: &u64| *v > 0 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("found a closure"), "{e:?}");
        let (_, e) = cached(quote! { key = "u", ttl = 60, cache_if = 5 });
        assert!(e[0].contains("found an integer"), "{e:?}");
        let (a, e) = cached(quote! { key = "u", ttl = 60, cache_if = <T as Policy>::keep });
        assert!(e.is_empty() && a.cache_if.is_some(), "{e:?}");
    }

    #[test]
    fn freshness_duplicates_and_typos() {
        let (_, e) = cached(quote! {
            key = "u", ttl = 60, stale = 1, stale = 2, tags = ["a"], tags = ["b"], stael = 5
        });
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("duplicate argument `stale`"), "{e:?}");
        assert!(e[1].contains("duplicate argument `tags`"), "{e:?}");
        assert!(e[2].contains("did you mean `stale`?"), "{e:?}");
    }
}
