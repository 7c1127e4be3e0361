//! `#[invalidates]`: the expansion of a checked function.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::FnArg;
use syn::ext::IdentExt as _;

use super::emit::{self, Parts};
use super::{policy, render};
use crate::shape::Shape;
use crate::target;
use crate::template;
use crate::valid::Invalidates;

/// The expansion of a checked `#[invalidates]` function: the keys and tags rendered from the
/// borrowed arguments before the body runs, then the body, then (on success) one call of
/// `__private::invalidate`.
pub(super) fn expand(checked: &Invalidates) -> TokenStream {
    let Invalidates {
        target,
        templates,
        typed,
        tags,
        common,
    } = checked;
    let func = target.func;
    let mut used = template::roots(templates.iter().chain(tags));
    for t in typed {
        token_idents(t.call.args.to_token_stream(), &mut used);
    }
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
    let sig = &func.sig;
    let prelude = target::key_prelude(target);
    let has_self = matches!(func.sig.inputs.first(), Some(FnArg::Receiver(_)));
    let typed_keys: Vec<TokenStream> = typed
        .iter()
        .map(|t| policy::typed_key(t, has_self))
        .collect();
    let keys = render::let_rendered("__cache_keys", krate, templates, &typed_keys, &prelude);
    let policy_static = policy::invalidate_static(
        krate,
        name,
        &func.sig.ident.unraw().to_string(),
        templates,
        typed,
        tags,
    );
    let tags = render::let_rendered("__cache_tags", krate, tags, &[], &prelude);
    let body = emit::async_body(ret, &TokenStream::new(), stmts);
    let marker = emit::marker(krate, shape);
    let ret_span = Span::call_site().located_at(ret_span);
    let succeeded = if shape_inferred && shape == Shape::Plain {
        // The name said "plain", but the type may be a `Result` behind an alias: a probe
        // resolved by the compiler decides (`Ok` only for a `Result`).
        quote_spanned! {ret_span=> {
            #[allow(unused_imports)]
            use #krate::__private::SucceededFallback as _;
            #krate::__private::Probe::<#ret>::new().__cache_succeeded(&__cache_out)
        }}
    } else {
        quote_spanned!(ret_span=> #krate::__private::succeeded::<#marker, #ret>(&__cache_out))
    };
    let inner = quote! {
        static __CACHE_INV_SPEC: #krate::__private::InvalidateSpec =
            #krate::__private::InvalidateSpec { name: #name };
        #policy_static
        #keys
        #tags
        #handle_init
        let __cache_out: #ret = #body.await;
        if #succeeded {
            #krate::__private::invalidate(
                #handle_ref, &__CACHE_INV_SPEC, &__cache_keys, &__cache_tags,
            ).await;
        }
        __cache_out
    };
    emit::function(target, &parts, sig, inner, TokenStream::new())
}

/// Identifiers in `tokens` (the names a typed invalidation's arguments use).
fn token_idents(tokens: TokenStream, out: &mut Vec<String>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) => out.push(i.to_string()),
            TokenTree::Group(g) => token_idents(g.stream(), out),
            _ => {}
        }
    }
}
