//! Stage 2: the rules across arguments (`jitter <= ttl`, `timeout_ms` needs `stale`, required
//! arguments, ..) and the checks of the function the attribute is on (async, the names its
//! templates may use, parameters a background refresh can own). Its output is the checked
//! model the expanders read: [`Cached`] and [`Invalidates`], which hold only values that are
//! valid together.

use proc_macro2::Span;
use syn::{FnArg, ItemFn, LitStr};

use crate::args::cached::CachedArgs;
use crate::args::invalidates::{InvalidatesArgs, TypedCall};
use crate::args::{Common, Int};
use crate::ctxt::Ctxt;
use crate::owned::{self, Owned};
use crate::target::{Target, allow_unused_rebinds, collect_bindings};
use crate::template::{self, Kind, Scope, Template};

/// A `#[cached]` function checked: what `expand::cached` emits.
pub(crate) struct Cached<'a> {
    /// The function.
    pub target: Target<'a>,
    /// `key = ".."`.
    pub template: Template,
    /// `tags = [..]`.
    pub tags: Vec<Template>,
    /// The numbers and the options.
    pub spec: CachedSpec,
    /// With `stale` / `early_refresh` / `timeout_ms`: how the body owns its arguments.
    pub owned: Option<Owned>,
    /// `cache`, `name`, `returns`, `crate`.
    pub common: Common,
}

/// The values of a checked `#[cached]`.
pub(crate) struct CachedSpec {
    /// Seconds.
    pub ttl: u64,
    /// Seconds.
    pub jitter: u64,
    /// Seconds; `None`: as `ttl`.
    pub negative_ttl: Option<u64>,
    /// Milliseconds; `None`: the cache's default.
    pub lock_ms: Option<u64>,
    /// Seconds (0: none).
    pub stale: u64,
    /// XFetch's `B` (0: none).
    pub early_refresh: f64,
    /// Milliseconds (0: none).
    pub timeout_ms: u64,
    /// `cache_if = path`.
    pub cache_if: Option<syn::ExprPath>,
    /// `local_ttl = N` and where it is written.
    pub local_ttl: Option<(u64, Span)>,
    /// `key_fn = ..` as written.
    pub key_fn: Option<bool>,
}

/// An `#[invalidates]` function checked: what `expand::invalidates` emits.
pub(crate) struct Invalidates<'a> {
    /// The function.
    pub target: Target<'a>,
    /// The key templates.
    pub templates: Vec<Template>,
    /// The typed invalidations.
    pub typed: Vec<TypedCall>,
    /// `tags = [..]`.
    pub tags: Vec<Template>,
    /// `cache`, `name`, `returns`, `crate`.
    pub common: Common,
}

/// The rules across `#[cached]` arguments, right after parsing (so their errors come
/// before those about the function).
pub(crate) fn cached_args(args: &mut CachedArgs, ctxt: &mut Ctxt) {
    if let Some(timeout) = args.refresh_args.iter().find(|a| *a == "timeout_ms")
        && !args.refresh_args.iter().any(|a| a == "stale")
    {
        ctxt.error(
            timeout.span(),
            "`timeout_ms` needs `stale = N`: the soft timeout returns the stale value when \
                 the loader runs longer, and without `stale` no entry outlives its `ttl`, so \
                 there is never a stale value to return and the timeout could never apply; \
                 add `stale = N` (grace seconds after `ttl`), or remove `timeout_ms`",
        );
    }
    if let (Some(ttl), Some(local)) = (args.ttl, args.local_ttl)
        && local.value > ttl.value
    {
        ctxt.error(
            local.span,
            format!(
                "`local_ttl = {}` exceeds `ttl = {}`: a near-cache copy must not outlive the \
                 entry it was read from; give `local_ttl` between 1 and ttl",
                local.value, ttl.value
            ),
        );
        args.local_ttl = None;
    }
    if let (Some(ttl), Some(jitter)) = (args.ttl, args.jitter)
        && jitter.value > ttl.value
    {
        ctxt.error(
            jitter.span,
            format!(
                "`jitter = {}` exceeds `ttl = {}`: jitter must be between 0 and ttl \
                 (the stored TTL is uniform in [ttl, ttl + jitter])",
                jitter.value, ttl.value
            ),
        );
    }
    // 100 years, as the runtime's `MAX_ENTRY_LIFE`: far inside what Redis accepts for `PX`.
    const MAX_LIFE_SECS: u64 = 100 * 365 * 24 * 3600;
    if let Some(ttl) = args.ttl {
        let value = |v: Option<Int>| v.map_or(0, |i| i.value);
        let life = ttl
            .value
            .max(value(args.negative_ttl))
            .saturating_add(value(args.jitter))
            .saturating_add(value(args.stale));
        if life > MAX_LIFE_SECS {
            ctxt.error(
                ttl.span,
                format!(
                    "an entry would live {life} s (ttl + jitter + stale): at most \
                     {MAX_LIFE_SECS} s (100 years) is accepted; no cache entry should live \
                     that long"
                ),
            );
        }
    }
    if !args.syntax_error {
        if !args.key_written {
            ctxt.error(
                Span::call_site(),
                "missing required argument `key`: add a key template, \
                 e.g. `#[cached(key = \"user:{id}\", ttl = 300)]`",
            );
        }
        if !args.ttl_written {
            ctxt.error(
                Span::call_site(),
                "missing required argument `ttl`: add a time-to-live in seconds, \
                 e.g. `#[cached(key = \"user:{id}\", ttl = 300)]`",
            );
        }
    }
}

/// The rules across `#[invalidates]` arguments.
pub(crate) fn invalidates_args(args: &InvalidatesArgs, ctxt: &mut Ctxt) {
    if !args.target_written && !args.syntax_error {
        ctxt.error(
            Span::call_site(),
            "`#[invalidates]` needs at least one key template to delete, a typed invalidation \
             or `tags = [..]` to void, e.g. `#[invalidates(\"user:{id}\")]`, \
             `#[invalidates(get_user(id))]` or `#[invalidates(tags = [\"org:{org_id}\"])]`",
        );
    }
}

/// Checks a `#[cached]` function and its templates; `None` when something is missing (its
/// error is recorded).
pub(crate) fn cached<'a>(
    args: CachedArgs,
    func: &'a ItemFn,
    ctxt: &mut Ctxt,
) -> Option<Cached<'a>> {
    let target = Target::new(func);
    let scope = signature(&target, "cached", ctxt);
    let template = args
        .key
        .as_ref()
        .and_then(|lit| self::template(lit, &scope, Kind::Key, ctxt));
    let tags: Vec<Template> = args
        .tags
        .iter()
        .filter_map(|lit| self::template(lit, &scope, Kind::Tag, ctxt))
        .collect();
    let owned = match (&target.boxed, args.refresh_args.first()) {
        (_, None) => None,
        // After `#[async_trait]`: the copies are planned on the `async` block as if it were
        // the body of an `async fn` with the signature's parameters (async-trait moves them
        // into the block, `self` as `let __self = self;`, which the plan rewrites).
        (Some(boxed), Some(_)) => {
            let mut as_async = func.clone();
            as_async.sig.asyncness = Some(Default::default());
            as_async.sig.output =
                syn::ReturnType::Type(Default::default(), Box::new(boxed.output.clone()));
            // Its `let x = x;` rebinds of parameters only the key or tags use are allowed
            // unused, as without a refresh.
            let used = template::roots(template.iter().chain(&tags));
            as_async.block.stmts = allow_unused_rebinds(&boxed.block.block.stmts, &used);
            owned::plan(&as_async, &args.refresh_args, ctxt)
        }
        (None, Some(_)) => owned::plan(func, &args.refresh_args, ctxt),
    };
    if let (Some(_), Some(b)) = (&target.boxed, &args.key_fn)
        && b.value
    {
        ctxt.error(
            b.span,
            "`key_fn = true` cannot apply to an `#[async_trait]` method: it lives in a trait \
             impl, which cannot hold the hidden key function; remove `key_fn`",
        );
    }
    let ttl = args.ttl?;
    let spec = CachedSpec {
        ttl: ttl.value,
        jitter: args.jitter.map_or(0, |j| j.value),
        negative_ttl: args.negative_ttl.map(|n| n.value),
        lock_ms: args.lock_ms.map(|l| l.value),
        stale: args.stale.map_or(0, |s| s.value),
        early_refresh: args.early_refresh.unwrap_or(0.0),
        timeout_ms: args.timeout_ms.map_or(0, |t| t.value),
        cache_if: args.cache_if,
        local_ttl: args.local_ttl.map(|l| (l.value, l.span)),
        key_fn: args.key_fn.as_ref().map(|b| b.value),
    };
    Some(Cached {
        target,
        template: template?,
        tags,
        spec,
        owned,
        common: args.common,
    })
}

/// Checks an `#[invalidates]` function and its templates; `None` when it has nothing to
/// invalidate.
pub(crate) fn invalidates<'a>(
    args: InvalidatesArgs,
    func: &'a ItemFn,
    ctxt: &mut Ctxt,
) -> Option<Invalidates<'a>> {
    let target = Target::new(func);
    let scope = signature(&target, "invalidates", ctxt);
    let templates: Vec<Template> = args
        .templates
        .iter()
        .filter_map(|lit| template(lit, &scope, Kind::Key, ctxt))
        .collect();
    let tags: Vec<Template> = args
        .tags
        .iter()
        .filter_map(|lit| template(lit, &scope, Kind::Tag, ctxt))
        .collect();
    if templates.is_empty() && tags.is_empty() && args.typed.is_empty() {
        return None;
    }
    Some(Invalidates {
        target,
        templates,
        typed: args.typed,
        tags,
        common: args.common,
    })
}

/// Checks that the fn is async and collects the names a template may use.
fn signature(target: &Target, attr: &str, ctxt: &mut Ctxt) -> Scope {
    let sig = &target.func.sig;
    if !target.is_async() {
        let what = if attr == "cached" {
            "on a miss it awaits the cache backend (Redis) and your loader, and concurrent \
             callers of the same key await one shared load"
        } else {
            "after the body returns it awaits the cache backend (Redis) to delete the keys"
        };
        ctxt.error(
            sig.fn_token.span,
            format!(
                "`#[{attr}]` requires an `async fn`: {what}, which a synchronous fn cannot do; \
                 write `async fn {}`",
                sig.ident
            ),
        );
    }
    let mut scope = Scope {
        fn_name: sig.ident.to_string(),
        ..Scope::default()
    };
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(_) => scope.has_self = true,
            FnArg::Typed(pt) => collect_bindings(&pt.pat, &mut scope.names),
        }
    }
    if let Some(boxed) = &target.boxed {
        for (pat, _) in boxed.destructured() {
            collect_bindings(pat, &mut scope.names);
        }
    }
    scope
}

/// The template of `lit`, or its errors recorded.
fn template(lit: &LitStr, scope: &Scope, kind: Kind, ctxt: &mut Ctxt) -> Option<Template> {
    match Template::from_lit(lit, scope, kind) {
        Ok(t) => Some(t),
        Err(errors) => {
            errors.into_iter().for_each(|e| ctxt.push(e));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args;
    use proc_macro2::TokenStream;
    use quote::quote;

    fn errors(ctxt: Ctxt) -> Vec<String> {
        ctxt.check()
            .err()
            .map(|e| e.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    /// The errors of parsing and of the rules across arguments (the stages before the
    /// function is looked at).
    fn cached(tokens: TokenStream) -> Vec<String> {
        let mut ctxt = Ctxt::new();
        let mut args = args::cached::parse(tokens, &mut ctxt);
        cached_args(&mut args, &mut ctxt);
        errors(ctxt)
    }

    fn invalidates(tokens: TokenStream) -> Vec<String> {
        let mut ctxt = Ctxt::new();
        let args = args::invalidates::parse(tokens, &mut ctxt);
        invalidates_args(&args, &mut ctxt);
        errors(ctxt)
    }

    /// Each rule across `#[cached]` arguments: the arguments, and the one error they give
    /// (`None`: valid).
    #[test]
    fn cached_rules() {
        let cases: &[(TokenStream, Option<&str>)] = &[
            (quote!(key = "a", ttl = 10, jitter = 10), None),
            (
                quote!(key = "a", ttl = 10, jitter = 11),
                Some("`jitter = 11` exceeds `ttl = 10`"),
            ),
            (quote!(key = "a", ttl = 10, local_ttl = 10), None),
            (
                quote!(key = "a", ttl = 10, local_ttl = 11),
                Some("`local_ttl = 11` exceeds `ttl = 10`"),
            ),
            (
                quote!(key = "u", ttl = 60, timeout_ms = 200),
                Some("`timeout_ms` needs `stale = N`"),
            ),
            (
                quote!(key = "u", ttl = 60, timeout_ms = 200, stale = 1),
                None,
            ),
            // `stale = 0` is reported (by the parser), not also "timeout_ms needs stale".
            (
                quote!(key = "u", ttl = 60, stale = 0, timeout_ms = 5),
                Some("`stale = 0` has no meaning"),
            ),
            (
                quote!(key = "u", ttl = 3153600000, stale = 1),
                Some("an entry would live 3153600001 s (ttl + jitter + stale)"),
            ),
            (quote!(key = "u", ttl = 3153600000), None),
            (
                quote!(key = "u", ttl = 60, negative_ttl = 3153600000, jitter = 1),
                Some("at most 3153600000 s (100 years)"),
            ),
            (quote!(ttl = 5), Some("missing required argument `key`")),
            (quote!(key = "a"), Some("missing required argument `ttl`")),
            // A positional or misspelt key counts as written: only that error.
            (quote!("a", ttl = 5), Some("the key template must be named")),
            (quote!(kye = "a", ttl = 5), Some("did you mean `key`?")),
            // After a syntax error, a missing argument is likely a consequence: not reported.
            (
                quote!(key = "a" ttl = 5),
                Some("expected `,` between arguments"),
            ),
        ];
        for (tokens, want) in cases {
            let e = cached(tokens.clone());
            match want {
                None => assert!(e.is_empty(), "{tokens}: {e:?}"),
                Some(want) => {
                    assert_eq!(e.len(), 1, "{tokens}: {e:?}");
                    assert!(e[0].contains(want), "{tokens}: {e:?}");
                }
            }
        }
    }

    #[test]
    fn missing_required() {
        let e = cached(quote! {});
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("missing required argument `key`"));
        assert!(e[1].contains("missing required argument `ttl`"));
        let e = cached(quote! { key = "a" });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("`ttl`"));
    }

    #[test]
    fn misspelt_required_argument_is_not_also_missing() {
        let e = cached(quote! { kye = "a", tll = 5 });
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("unknown argument `kye` for `#[cached]`; did you mean `key`?"));
        assert!(e[1].contains("did you mean `ttl`? (valid arguments: `key`, `ttl`"));
    }

    #[test]
    fn timeout_needs_stale_says_why() {
        let e = cached(quote! { key = "u", ttl = 60, timeout_ms = 200 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("add `stale = N`"), "{e:?}");
    }

    #[test]
    fn invalidates_rules() {
        let cases: &[(TokenStream, Option<&str>)] = &[
            (quote!("u:{id}"), None),
            (quote!(get_user(id)), None),
            (quote!(tags = ["org"]), None),
            (quote!(cache = CACHE), Some("at least one key template")),
            (quote!(), Some("at least one key template")),
            // Written but rejected: that error only.
            (quote!(key = "a"), Some("without `key =`")),
            (quote!(tags = "org"), Some("in brackets")),
            (quote!(self.profile(id)), Some("as `Self::profile(..)`")),
        ];
        for (tokens, want) in cases {
            let e = invalidates(tokens.clone());
            match want {
                None => assert!(e.is_empty(), "{tokens}: {e:?}"),
                Some(want) => {
                    assert_eq!(e.len(), 1, "{tokens}: {e:?}");
                    assert!(e[0].contains(want), "{tokens}: {e:?}");
                }
            }
        }
    }
}
