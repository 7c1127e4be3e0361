//! `#[cached]` with `stale`, `early_refresh` or `timeout_ms`: the runtime may
//! run the body in the background after the call returned
//! (`__private::cached_refresh`), so the body's future must be `'static`. It
//! owns copies of the arguments it uses, made by the load closure (which
//! borrows the parameters) just before the body's `async move` block:
//!
//! - `x: T` → `let __cache_arg_x = Clone::clone(&x);`, and in the block
//!   `let x = __cache_arg_x;`
//! - `x: &T` → `let __cache_own_x = ToOwned::to_owned(x);`, and in the block
//!   `let x: &'_ T = Borrow::borrow(&__cache_own_x);` (the body sees `&T`;
//!   the annotation picks `T` among the `Borrow` impls of the owned type)
//! - `&self` → `let __cache_self = Clone::clone(self);`, and in the block
//!   `let __cache_this: &Self = &__cache_self;`, with every `self` of the
//!   body replaced by `__cache_this` (as async-trait's `ReplaceSelf` does);
//!   `self`, `self: Arc<Self>` → cloned the same way, owned by the block.
//!
//! Only the parameters the body mentions are copied (a parameter used only by
//! the key or the tags needs no `Clone`). A missing `Clone` or `'static` is
//! left to the compiler, with the copy spanned at the parameter's type so the
//! error points there. `&mut` parameters and destructured parameters that the
//! body uses cannot be copied: a compile error says why.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::visit_mut::VisitMut;
use syn::{
    Block, FnArg, Ident, Item, ItemFn, Lifetime, Macro, Pat, Path, ReceiverKind, Signature, Stmt,
    Type,
};

use crate::attr::Ctxt;

/// How the body of a refreshing function gets owned arguments.
pub struct Owned {
    /// Statements of the load closure, before the body's block: the copies.
    pub copies: TokenStream,
    /// First statements of the body's `async move` block: the rebindings.
    pub rebinds: TokenStream,
    /// The body's statements, `self` replaced by `__cache_this`.
    pub stmts: Vec<Stmt>,
    /// The signature, without `mut` on the parameters the block rebinds
    /// (the block's own binding carries it).
    pub sig: Signature,
}

/// "`stale`", "`stale` and `timeout_ms`", ...
pub fn describe(args: &[Ident]) -> String {
    let names: Vec<String> = args.iter().map(|a| format!("`{a}`")).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

const WHY: &str = "the refresh runs in the background after the call returned, \
                   so it needs owned copies of the arguments";

/// Plans the copies; records an error for every parameter that cannot be
/// copied.
pub fn plan(func: &ItemFn, refresh_args: &[Ident], ctxt: &mut Ctxt) -> Option<Owned> {
    let with = describe(refresh_args);
    let body_tokens = {
        let stmts = &func.block.stmts;
        quote!(#(#stmts)*)
    };
    let mut block: Block = (*func.block).clone();
    let mut replace = ReplaceSelf { replaced: false };
    replace.visit_block_mut(&mut block);
    let uses_self = replace.replaced;

    let mut sig = func.sig.clone();
    let mut copies = TokenStream::new();
    let mut rebinds = TokenStream::new();
    let mut ok = true;
    for input in &mut sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                let span = Span::call_site().located_at(r.span());
                let by_ref = match &r.kind {
                    ReceiverKind::Reference(_, _, Some(_)) => Some(true),
                    ReceiverKind::Reference(..) => Some(false),
                    ReceiverKind::Typed(_, ty) => match ungroup(ty) {
                        Type::Reference(rf) => Some(rf.mutability.is_some()),
                        _ => None,
                    },
                    ReceiverKind::Value => None,
                    _ => None,
                };
                if by_ref == Some(true) {
                    ctxt.error(
                        r.span(),
                        format!(
                            "`#[cached]` with {with} cannot take `&mut self`: {WHY}, and a \
                             `&mut` borrow can be neither copied nor kept after the call; \
                             take `&self` (with `Self: Clone`), or remove {with}"
                        ),
                    );
                    ok = false;
                    continue;
                }
                if !uses_self {
                    continue;
                }
                match (by_ref, &r.kind) {
                    (Some(false), ReceiverKind::Reference(..)) => {
                        copies.extend(quote_spanned! {span=>
                            let __cache_self = ::core::clone::Clone::clone(self);
                        });
                        rebinds.extend(quote! {
                            let __cache_this: &Self = &__cache_self;
                        });
                    }
                    (Some(false), _) => {
                        copies.extend(quote_spanned! {span=>
                            let __cache_self = ::core::clone::Clone::clone(self);
                        });
                        rebinds.extend(quote! {
                            let __cache_this = &__cache_self;
                        });
                    }
                    _ => {
                        let mutability = r.mutability.take();
                        copies.extend(quote_spanned! {span=>
                            let __cache_self = ::core::clone::Clone::clone(&self);
                        });
                        rebinds.extend(quote! {
                            let #mutability __cache_this = __cache_self;
                        });
                    }
                }
            }
            FnArg::Typed(pt) => {
                let span = Span::call_site().located_at(pt.ty.span());
                let pi = match &mut *pt.pat {
                    Pat::Ident(pi) if pi.subpat.is_none() && pi.by_ref.is_none() => pi,
                    Pat::Wild(_) => continue,
                    pat => {
                        let mut names = Vec::new();
                        crate::expand::collect_bindings(pat, &mut names);
                        if names.iter().any(|n| mentions(&body_tokens, n)) {
                            let pat = &*pt.pat;
                            let ty = &*pt.ty;
                            ctxt.error(
                                pat.span(),
                                format!(
                                    "the destructured parameter `{}` cannot be used with \
                                     {with}: {WHY}, which the macro makes by parameter name; \
                                     bind it to a name (e.g. `arg: {}`) and destructure it in \
                                     the body",
                                    tokens_str(quote!(#pat)),
                                    tokens_str(quote!(#ty)),
                                ),
                            );
                            ok = false;
                        }
                        continue;
                    }
                };
                if !mentions(&body_tokens, &pi.ident.to_string()) {
                    continue;
                }
                let x = pi.ident.clone();
                let name = x.unraw();
                match ungroup(&pt.ty) {
                    Type::Reference(rf) if rf.mutability.is_some() => {
                        let ty = &*pt.ty;
                        ctxt.error(
                            pt.ty.span(),
                            format!(
                                "parameter `{name}: {}` cannot be used with {with}: {WHY}, and \
                                 a `&mut` borrow can be neither copied nor kept after the call; \
                                 take it by value or by `&` (its type must be `Clone`), or \
                                 remove {with}",
                                tokens_str(quote!(#ty)),
                            ),
                        );
                        ok = false;
                    }
                    Type::Reference(rf) => {
                        let elem = &*rf.elem;
                        if mentions(&quote!(#elem), "impl") {
                            ctxt.error(
                                pt.ty.span(),
                                format!(
                                    "parameter `{name}: &impl ..` cannot be used with {with} \
                                     yet: {WHY}, and the macro needs to name the type of the \
                                     copy; use a generic parameter instead \
                                     (`fn f<T: Trait>({name}: &T)`)"
                                ),
                            );
                            ok = false;
                            continue;
                        }
                        let mutability = pi.mutability.take();
                        let own = format_ident!("__cache_own_{}", name);
                        let elem = anonymize_lifetimes(elem);
                        copies.extend(quote_spanned! {span=>
                            let #own = ::std::borrow::ToOwned::to_owned(#x);
                        });
                        rebinds.extend(quote! {
                            let #mutability #x: &'_ #elem = ::core::borrow::Borrow::borrow(&#own);
                        });
                    }
                    _ => {
                        let mutability = pi.mutability.take();
                        let arg = format_ident!("__cache_arg_{}", name);
                        copies.extend(quote_spanned! {span=>
                            let #arg = ::core::clone::Clone::clone(&#x);
                        });
                        rebinds.extend(quote! {
                            let #mutability #x = #arg;
                        });
                    }
                }
            }
        }
    }
    ok.then_some(Owned {
        copies,
        rebinds,
        stmts: block.stmts,
        sig,
    })
}

fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        ty => ty,
    }
}

fn tokens_str(tokens: TokenStream) -> String {
    // `& str` → `&str`, `Vec < u8 >` → `Vec<u8>`: close enough for messages.
    let s = tokens.to_string();
    s.replace("& ", "&")
        .replace(" < ", "<")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace(" :: ", "::")
        .replace(":: ", "::")
}

/// Whether an identifier `name` occurs anywhere in `tokens` (a conservative
/// "the body may use this parameter").
fn mentions(tokens: &TokenStream, name: &str) -> bool {
    tokens.clone().into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == name,
        TokenTree::Group(g) => mentions(&g.stream(), name),
        _ => false,
    })
}

/// `ty` with every named lifetime but `'static` replaced by `'_`, for a
/// `let` annotation inside the body's block, where the parameter's lifetime
/// no longer applies.
fn anonymize_lifetimes(ty: &Type) -> Type {
    struct Anon;
    impl VisitMut for Anon {
        fn visit_lifetime_mut(&mut self, lt: &mut Lifetime) {
            if lt.ident != "static" && lt.ident != "_" {
                *lt = Lifetime::new("'_", lt.span());
            }
        }
        fn visit_bound_lifetimes_mut(&mut self, _: &mut syn::BoundLifetimes) {}
    }
    let mut ty = ty.clone();
    Anon.visit_type_mut(&mut ty);
    ty
}

/// Replaces the receiver `self` in a body by `__cache_this` (as async-trait's
/// `ReplaceSelf`): in expressions and inside macro invocations, but not in
/// `self::` paths and not in nested items (except `macro_rules!`).
struct ReplaceSelf {
    replaced: bool,
}

impl ReplaceSelf {
    fn replace(&mut self, ident: &mut Ident) {
        if ident == "self" {
            // Call-site hygiene, so that it resolves to the macro's binding;
            // located at the original token for error messages.
            *ident = Ident::new(
                "__cache_this",
                Span::call_site().located_at(ident.span()),
            );
            self.replaced = true;
        }
    }

    fn tokens(&mut self, tokens: TokenStream) -> TokenStream {
        let mut out = Vec::new();
        let mut iter = tokens.into_iter().peekable();
        while let Some(tt) = iter.next() {
            match tt {
                TokenTree::Ident(mut ident) => {
                    let path = matches!(
                        iter.peek(),
                        Some(TokenTree::Punct(p)) if p.as_char() == ':'
                            && p.spacing() == proc_macro2::Spacing::Joint
                    );
                    if !path {
                        self.replace(&mut ident);
                    }
                    out.push(TokenTree::Ident(ident));
                }
                TokenTree::Group(g) => {
                    let mut new = Group::new(g.delimiter(), self.tokens(g.stream()));
                    new.set_span(g.span());
                    out.push(TokenTree::Group(new));
                }
                tt => out.push(tt),
            }
        }
        out.into_iter().collect()
    }
}

impl VisitMut for ReplaceSelf {
    fn visit_path_mut(&mut self, p: &mut Path) {
        if p.leading_colon.is_none() && p.segments.len() == 1 {
            // `self`, but not `self::function`.
            self.replace(&mut p.segments[0].ident);
        }
        for segment in &mut p.segments {
            self.visit_path_arguments_mut(&mut segment.arguments);
        }
    }

    fn visit_item_mut(&mut self, i: &mut Item) {
        // Nested items have their own `self`; a local `macro_rules!` may
        // refer to the fn's.
        if let Item::Macro(i) = i
            && i.mac.path.is_ident("macro_rules")
        {
            self.visit_macro_mut(&mut i.mac);
        }
    }

    fn visit_macro_mut(&mut self, mac: &mut Macro) {
        mac.tokens = self.tokens(std::mem::take(&mut mac.tokens));
    }
}
