//! `#[cached]`: the expansion of a checked function.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;

use super::emit::{self, Parts};
use super::{owned, policy, render};
use crate::owned::Owned;
use crate::shape::Shape;
use crate::target;
use crate::template;
use crate::valid::Cached;

/// The expansion of a checked `#[cached]` function: the key rendered from the borrowed
/// arguments, then one call of `__private::cached` (or `cached_refresh` when the body may run
/// in the background), next to the registered description and the hidden key function.
pub(super) fn expand(checked: &Cached) -> TokenStream {
    let Cached {
        target,
        template,
        tags,
        spec,
        owned,
        common,
    } = checked;
    let func = target.func;
    let used = template::roots(std::iter::once(template).chain(tags));
    let parts = emit::parts(target, &used, common);
    let Parts {
        ref krate,
        ref ret,
        ret_span,
        shape,
        shape_inferred,
        ref name,
        ref handle_init,
        ref handle_ref,
        ref stmts,
        ..
    } = parts;
    let prelude = target::key_prelude(target);
    let key = render::key(krate, template, &prelude);
    let tags_vec = render::tags(krate, tags, &prelude);
    let marker = emit::marker(krate, shape);
    // The runtime counts in milliseconds (the programmatic API takes `Duration`s).
    let ms = |secs: u64| Literal::u64_unsuffixed(secs.saturating_mul(1000));
    let ttl = ms(spec.ttl);
    let jitter = ms(spec.jitter);
    let stale = ms(spec.stale);
    let early_refresh = Literal::f64_unsuffixed(spec.early_refresh);
    let timeout_ms = Literal::u64_unsuffixed(spec.timeout_ms);
    let local_ttl = ms(spec.local_ttl.map_or(0, |(v, _)| v));
    let option = |v: Option<u64>| match v {
        Some(v) => {
            let v = Literal::u64_unsuffixed(v);
            quote!(::core::option::Option::Some(#v))
        }
        None => quote!(::core::option::Option::None),
    };
    let negative_ttl = option(spec.negative_ttl.map(|v| v.saturating_mul(1000)));
    let lock_ms = option(spec.lock_ms);
    // Every token of the call and its `.await` is located at the return
    // type, so that an unsupported return type (not `Serialize`, not
    // matching `returns = ..`) is reported there, once.
    let ret_span = Span::call_site().located_at(ret_span);
    let cache_if = match &spec.cache_if {
        // Located at the path, so that a function of the wrong signature is
        // reported there; the coercion to `fn(&T) -> bool` happens at `Some(..)`.
        Some(path) => {
            let span = Span::call_site().located_at(path.span());
            quote_spanned!(span=> ::core::option::Option::Some(#path))
        }
        // At the return type like the call: its type names the stored value.
        None => quote_spanned!(ret_span=> ::core::option::Option::None),
    };
    let check = if shape_inferred && shape == Shape::Plain {
        plain_check(krate, ret, ret_span)
    } else {
        TokenStream::new()
    };
    let krate_at_ret = emit::respan(krate, ret_span);
    let marker_at_ret = emit::respan(&marker, ret_span);
    // `()`, or with `local_ttl` the proof that the stored type can live in the near cache,
    // located at `local_ttl`: a stored type that is not `Clone` (or not `Sync`) is reported
    // there, naming the bound.
    let near = match spec.local_ttl {
        Some((_, local_span)) => {
            let local_span = Span::call_site().located_at(local_span);
            let krate_at_local = emit::respan(krate, local_span);
            quote_spanned!(local_span=> #krate_at_local::__private::near_fns())
        }
        None => quote!(()),
    };
    let (sig, call) = match owned {
        None => {
            let body = emit::async_body(ret, &TokenStream::new(), stmts);
            let call = quote_spanned! {ret_span=>
                #krate_at_ret::__private::cached::<#marker_at_ret, #ret, _, _, _>(
                    #handle_ref, &__CACHE_SPEC, __cache_key, #cache_if, #near,
                    move || (#tags_vec, #body)
                ).await
            };
            (&func.sig, call)
        }
        Some(owned) => {
            // The body may run in the background after the call returned: the
            // closure borrows the parameters and gives the block owned copies.
            let (copies, rebinds) = owned::tokens(owned);
            let Owned { stmts, sig, .. } = owned;
            // `#[async_trait]` keeps its own signature (the boxed future's).
            let sig = if target.boxed.is_some() {
                &func.sig
            } else {
                sig
            };
            let body = emit::async_body(ret, &rebinds, stmts);
            let call = quote_spanned! {ret_span=>
                #krate_at_ret::__private::cached_refresh::<#marker_at_ret, #ret, _, _, _>(
                    #handle_ref, &__CACHE_SPEC, __cache_key, #cache_if, #near,
                    || {
                        let __cache_tags: ::std::vec::Vec<::std::string::String> = #tags_vec;
                        #copies
                        (__cache_tags, #body)
                    }
                ).await
            };
            (sig, call)
        }
    };
    let policy_static = policy::cached_static(
        krate,
        template,
        tags,
        &policy::CachedFields {
            name: name.clone(),
            function: func.sig.ident.unraw().to_string(),
            ttl: spec.ttl,
            jitter: spec.jitter,
            negative_ttl: spec.negative_ttl,
            stale: spec.stale,
            local_ttl: spec.local_ttl.map(|(v, _)| v),
            returns: policy::text(ret),
        },
    );
    let key_fn = if policy::emits_key_fn(func, target.boxed.is_some(), spec.key_fn) {
        policy::key_fn(krate, func, template)
    } else {
        TokenStream::new()
    };
    let inner = quote! {
        #policy_static
        static __CACHE_SPEC: #krate::__private::FnSpec = #krate::__private::FnSpec {
            name: #name,
            ttl_ms: #ttl,
            jitter_ms: #jitter,
            negative_ttl_ms: #negative_ttl,
            lock_ms: #lock_ms,
            stale_ms: #stale,
            early_refresh: #early_refresh,
            timeout_ms: #timeout_ms,
            local_ttl_ms: #local_ttl,
            slot: #krate::__private::CounterSlot::new(),
        };
        #check
        let __cache_key: ::std::string::String = #key;
        #handle_init
        #call
    };
    emit::function(target, &parts, sig, inner, key_fn)
}

/// Dead code that compiles only if the return type, inferred as plain from its
/// name, does not resolve to `Result<_, _>` or `Option<_>` (an alias such as
/// `type Answer = Result<User, ApiError>`); see `cache_runtime::shape_check`.
/// Every token but the type's own is located at the return type, where the
/// error is reported.
fn plain_check(krate: &TokenStream, ret: &TokenStream, ret_span: Span) -> TokenStream {
    let k = emit::respan(krate, ret_span);
    quote_spanned! {ret_span=>
        #[allow(unused_imports, clippy::unit_arg)]
        if false {
            use #k::__private::PlainFallback as _;
            #k::__private::expect_plain(#k::__private::Probe::<#ret>::new().__cache_shape_kind());
        }
    }
}
