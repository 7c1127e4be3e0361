//! What every expander shares, so that each emits the same way: [`emit`] (the one exit: the
//! expansion, or on any error the original function unchanged next to the `compile_error!`s,
//! so the user sees only the macro's errors and no follow-on noise from a half-expanded
//! function), [`parts`] (`crate = path`, the return type and shape, the name, the cache
//! handle), [`async_body`] (the body as a future, with the fake return edge) and
//! [`function`] (the function around the expansion, also under `#[async_trait]`).
//!
//! Hygiene: every local the expansion introduces is named `__cache_..` (`__cache_key`,
//! `__cache_handle`, `__cache_k`, `__cache_out`, `__cache_self`, ..), a prefix user code does
//! not use, so a parameter may be called `key`, `cache`, `ttl` or `value`.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::{AttrStyle, Attribute, Expr, ReturnType, Signature, Stmt};

use crate::args::Common;
use crate::ctxt::Ctxt;
use crate::shape::{self, Shape};
use crate::target::{Target, allow_unused_rebinds};

/// The one exit of every expander: `expand()`'s tokens when no stage recorded an error,
/// else `item` as written followed by every error as a `compile_error!`.
pub(super) fn emit(
    item: TokenStream,
    ctxt: Ctxt,
    expand: impl FnOnce() -> Option<TokenStream>,
) -> TokenStream {
    match ctxt.check() {
        Ok(()) => expand().unwrap_or(item),
        Err(errors) => {
            let errors = errors.into_compile_error();
            quote! { #item #errors }
        }
    }
}

/// The expanded function: the original's outer attributes, visibility and `sig`, its inner
/// attributes, then `inner` (inside the `Box::pin(async ..)` under `#[async_trait]`); then
/// `after`, items next to the function.
pub(super) fn function(
    target: &Target,
    parts: &Parts,
    sig: &Signature,
    inner: TokenStream,
    after: TokenStream,
) -> TokenStream {
    let outer_attrs = &parts.outer_attrs;
    let inner_attrs = &parts.inner_attrs;
    let vis = &target.func.vis;
    let inner = match &target.boxed {
        None => inner,
        Some(boxed) => boxed.rebuild(inner),
    };
    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #inner
        }
        #after
    }
}

/// Pieces shared by both expansions.
pub(super) struct Parts<'a> {
    /// The function's outer attributes (`#[..]`), kept on it.
    pub outer_attrs: Vec<&'a Attribute>,
    /// Its inner attributes (`#![..]`), first in the new body.
    pub inner_attrs: Vec<&'a Attribute>,
    /// `crate = path`, default `::cache_runtime`.
    pub krate: TokenStream,
    /// The return type (`()` when none; `T` of the boxed future under `#[async_trait]`).
    pub ret: TokenStream,
    /// Where the return type is written.
    pub ret_span: Span,
    /// `returns = ..`, else read from the return type.
    pub shape: Shape,
    /// The shape was read from the return type, not given with `returns = ..`.
    pub shape_inferred: bool,
    /// The name in stats and tracing (`name = ..`, default `module_path!()::fn`).
    pub name: TokenStream,
    /// `let __cache_handle = ...;` when `cache = expr` is given.
    pub handle_init: TokenStream,
    /// An expression of type `&Cache`.
    pub handle_ref: TokenStream,
    /// The body's statements (of the `async` block under `#[async_trait]`).
    pub stmts: Vec<Stmt>,
}

/// The shared pieces; `used_names` are the parameters the templates use (under
/// `#[async_trait]`, their rebinding in the block is not reported unused when only the key
/// uses them).
pub(super) fn parts<'a>(target: &Target<'a>, used_names: &[String], common: &Common) -> Parts<'a> {
    let func = target.func;
    let (outer_attrs, inner_attrs) = func
        .attrs
        .iter()
        .partition(|a| matches!(a.style, AttrStyle::Outer));
    let krate = match &common.krate {
        Some(p) => p.to_token_stream(),
        None => quote!(::cache_runtime),
    };
    let output = match &target.boxed {
        Some(boxed) => Some(boxed.output),
        None => match &func.sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some(&**ty),
        },
    };
    let (ret, ret_span, shape) = match output {
        None => (quote!(()), func.sig.ident.span(), Shape::Plain),
        Some(ty) => (ty.to_token_stream(), ty.span(), shape::infer(ty)),
    };
    let shape_inferred = common.returns.is_none();
    let shape = common.returns.unwrap_or(shape);
    let name = match &common.name {
        Some(n) => n.to_token_stream(),
        None => {
            let fn_name = func.sig.ident.unraw().to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #fn_name))
        }
    };
    let (handle_init, handle_ref) = match &common.cache {
        Some(expr) => (handle_init(&krate, expr), quote!(&__cache_handle)),
        None => (TokenStream::new(), quote!(#krate::__private::global())),
    };
    let stmts = match &target.boxed {
        None => func.block.stmts.clone(),
        Some(boxed) => allow_unused_rebinds(&boxed.block.block.stmts, used_names),
    };
    Parts {
        outer_attrs,
        inner_attrs,
        krate,
        ret,
        ret_span,
        shape,
        shape_inferred,
        name,
        handle_init,
        handle_ref,
        stmts,
    }
}

/// `async move { rebinds; fake-return; stmts }`: the body as a future. The
/// fake return edge gives `return` statements in the body the function's
/// return type, as in the original `async fn`.
pub(super) fn async_body(ret: &TokenStream, rebinds: &TokenStream, stmts: &[Stmt]) -> TokenStream {
    quote! {
        async move {
            #rebinds
            #[allow(
                unknown_lints,
                unreachable_code,
                clippy::diverging_sub_expression,
                clippy::empty_loop,
                clippy::let_unit_value,
                clippy::let_with_type_underscore,
                clippy::needless_return,
                clippy::unreachable
            )]
            if false {
                let __cache_fake_return: #ret = loop {};
                return __cache_fake_return;
            }
            #(#stmts)*
        }
    }
}

fn handle_init(krate: &TokenStream, expr: &Expr) -> TokenStream {
    // Located at the expression so that a wrong type is reported there.
    let span = Span::call_site().located_at(expr.span());
    let handle = quote_spanned!(span=> #krate::__private::handle(&(#expr)));
    quote! { let __cache_handle = #handle; }
}

/// `tokens` with every span (recursively) replaced by `span`.
pub(super) fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let mut out = Group::new(g.delimiter(), respan(&g.stream(), span));
                out.set_span(span);
                TokenTree::Group(out)
            }
            mut tt => {
                tt.set_span(span);
                tt
            }
        })
        .collect()
}

pub(super) fn marker(krate: &TokenStream, shape: Shape) -> TokenStream {
    let m = format_ident!("{}", shape.marker());
    quote!(#krate::__private::#m)
}
