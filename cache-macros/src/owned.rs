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
//!   the annotation picks `T` among the `Borrow` impls of the owned type);
//!   a `&'static T` is copied as it is
//! - `&self` → `let __cache_self = Clone::clone(self);`, and in the block
//!   `let __cache_this: &Self = &__cache_self;`, with every `self` of the
//!   body replaced by `__cache_this` (as async-trait's `ReplaceSelf` does);
//!   `self`, `self: Arc<Self>` → cloned the same way, owned by the block.
//!
//! Only the parameters the body mentions are copied (a parameter used only by
//! the key or the tags needs no `Clone`). A missing `Clone` is left to the
//! compiler, with the copy spanned at the parameter's type so the error
//! points there. `&mut` parameters, types that visibly borrow
//! (`Option<&str>`, `Cow<'a, str>`) and destructured parameters that the
//! body uses cannot be copied into a `'static` future: a compile error says
//! why. (A borrow hidden behind a generic or an alias is reported by the
//! compiler as "`'1` must outlive `'static`" at the return type.)
//!
//! [`plan`] decides (it is called by `valid`: its errors are signature checks); `expand::owned`
//! writes the copies and rebindings of the [`Owned`] plan it returns.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::quote;
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::visit_mut::VisitMut;
use syn::{
    Block, FnArg, Ident, Item, ItemFn, Lifetime, Macro, Pat, Path, ReceiverKind, Signature, Stmt,
    Token, Type,
};

use crate::ctxt::Ctxt;
use crate::target::collect_bindings;

/// How the body of a refreshing function gets owned arguments: the decisions, which
/// `expand::owned` turns into the copies (in the load closure) and the rebindings (first in
/// the body's block).
pub(crate) struct Owned {
    /// What is copied, in the order of the signature.
    pub copies: Vec<ArgCopy>,
    /// The body's statements, `self` replaced by `__cache_this`.
    pub stmts: Vec<Stmt>,
    /// The signature, without `mut` on the parameters the block rebinds
    /// (the block's own binding carries it).
    pub sig: Signature,
}

/// One owned copy for the body.
pub(crate) enum ArgCopy {
    /// The receiver, cloned into `__cache_self`; the body's `self` reads `__cache_this`.
    Receiver {
        /// How the function takes it.
        kind: ReceiverCopy,
        /// Where the copy is located (at `self`).
        span: Span,
    },
    /// A parameter the body uses.
    Param {
        /// The parameter as the signature binds it.
        param: Ident,
        /// The parameter as the copy names it: call-site hygiene (it resolves to the
        /// parameter), located at its type, so that a missing `Clone` is reported there.
        at_type: Ident,
        /// `mut` moved from the signature to the block's binding.
        mutability: Option<Token![mut]>,
        /// How it is copied.
        how: ParamCopy,
    },
}

/// How the receiver is taken.
pub(crate) enum ReceiverCopy {
    /// `&self`: the block borrows the clone as `&Self`.
    Ref,
    /// `self: &Self` and the like: the block borrows the clone.
    TypedRef,
    /// `self`, `mut self`, `self: Arc<Self>`: the block owns the clone.
    Value(Option<Token![mut]>),
}

/// How a parameter is copied.
pub(crate) enum ParamCopy {
    /// `x: T`: `Clone::clone(&x)`, the block binds `x` to it.
    Clone,
    /// `x: &T`: `ToOwned::to_owned(x)`, the block binds `x: &'_ T` to a borrow of it
    /// (`T` given here, with its lifetimes anonymized).
    ToOwned(Box<Type>),
}

/// "`stale`", "`stale` and `timeout_ms`", ...
pub(crate) fn describe(args: &[Ident]) -> String {
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
pub(crate) fn plan(func: &ItemFn, refresh_args: &[Ident], ctxt: &mut Ctxt) -> Option<Owned> {
    let with = describe(refresh_args);
    let body_tokens = {
        let stmts = &func.block.stmts;
        quote!(#(#stmts)*)
    };
    // `self` is replaced only in methods (in a free fn, a `self` token can
    // only belong to a macro's own syntax).
    let mut block: Block = (*func.block).clone();
    let uses_self = func.sig.receiver().is_some() && {
        let mut replace = ReplaceSelf { replaced: false };
        replace.visit_block_mut(&mut block);
        replace.replaced
    };
    if !uses_self {
        block = (*func.block).clone();
    }

    let mut sig = func.sig.clone();
    let mut copies = Vec::new();
    let mut ok = true;
    for input in &mut sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                // At `self`: on stable compilers a span cannot cover `&self`.
                let span = Span::call_site().located_at(r.self_token.span);
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
                if !uses_self {
                    // The body does not use the receiver: nothing to copy.
                    continue;
                }
                if by_ref == Some(true) {
                    ctxt.error_spanned(
                        &*r,
                        format!(
                            "`#[cached]` with {with} cannot take `&mut self`: {WHY}, and a \
                             `&mut` borrow can be neither copied nor kept after the call; \
                             take `&self` (with `Self: Clone`), or remove {with}"
                        ),
                    );
                    ok = false;
                    continue;
                }
                let kind = match (by_ref, &r.kind) {
                    (Some(false), ReceiverKind::Reference(..)) => ReceiverCopy::Ref,
                    (Some(false), _) => ReceiverCopy::TypedRef,
                    _ => ReceiverCopy::Value(r.mutability.take()),
                };
                copies.push(ArgCopy::Receiver { kind, span });
            }
            FnArg::Typed(pt) => {
                // At the type (for `&T`, at `T`: on stable compilers a span
                // cannot cover `&T`).
                let at = match ungroup(&pt.ty) {
                    Type::Reference(rf) => rf.elem.span(),
                    ty => ty.span(),
                };
                let span = Span::call_site().located_at(at);
                let pi = match &mut *pt.pat {
                    Pat::Ident(pi) if pi.subpat.is_none() && pi.by_ref.is_none() => pi,
                    Pat::Wild(_) => continue,
                    pat => {
                        let mut names = Vec::new();
                        collect_bindings(pat, &mut names);
                        if names.iter().any(|n| mentions(&body_tokens, n)) {
                            let pat = &*pt.pat;
                            let ty = &*pt.ty;
                            ctxt.error_spanned(
                                pat,
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
                let name = pi.ident.unraw();
                // The parameter as the copy names it: call-site hygiene (it
                // resolves to the parameter), located at the type, so that a
                // missing `Clone` is reported there, without a suggestion to
                // rewrite the parameter's name.
                let x = Ident::new(&pi.ident.to_string(), span);
                let x = if pi.ident.to_string().starts_with("r#") {
                    Ident::new_raw(&name.to_string(), span)
                } else {
                    x
                };
                let ty = &*pt.ty;
                let borrowed = |ctxt: &mut Ctxt, ty: &Type| {
                    ctxt.error_spanned(
                        ty,
                        format!(
                            "parameter `{name}: {}` cannot be used with {with}: {WHY}, and a \
                             copy of a borrow (`&T`, or a type with a lifetime) still borrows \
                             from the caller; take an owned type instead (e.g. `String` \
                             rather than `&str` inside it), or remove {with}",
                            tokens_str(quote!(#ty)),
                        ),
                    );
                };
                match ungroup(ty) {
                    Type::Reference(rf) if rf.mutability.is_some() => {
                        ctxt.error_spanned(
                            ty,
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
                    Type::Reference(rf)
                        if rf.lifetime.as_ref().is_none_or(|l| l.ident != "static") =>
                    {
                        let elem = &*rf.elem;
                        if borrows(elem) {
                            borrowed(ctxt, ty);
                            ok = false;
                            continue;
                        }
                        if mentions(&quote!(#elem), "impl") {
                            ctxt.error_spanned(
                                ty,
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
                        copies.push(ArgCopy::Param {
                            param: pi.ident.clone(),
                            at_type: x,
                            mutability: pi.mutability.take(),
                            how: ParamCopy::ToOwned(Box::new(anonymize_lifetimes(elem))),
                        });
                    }
                    _ if borrows(ty) => {
                        borrowed(ctxt, ty);
                        ok = false;
                    }
                    _ => copies.push(ArgCopy::Param {
                        param: pi.ident.clone(),
                        at_type: x,
                        mutability: pi.mutability.take(),
                        how: ParamCopy::Clone,
                    }),
                }
            }
        }
    }
    ok.then_some(Owned {
        copies,
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

/// Whether an identifier `name` occurs anywhere in `tokens`, or a string
/// literal captures it as a format argument (`"{name}"`, `"{name:?}"`): a
/// conservative "the body may use this parameter".
fn mentions(tokens: &TokenStream, name: &str) -> bool {
    tokens.clone().into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == name,
        TokenTree::Group(g) => mentions(&g.stream(), name),
        TokenTree::Literal(l) => format_args_of(&l.to_string())
            .iter()
            .any(|r| l.to_string()[r.clone()] == *name),
        _ => false,
    })
}

/// Byte ranges of the inline arguments of a format string: `x` in `{x}` or
/// `{x:>8}`, not in `{{x}}`.
fn format_args_of(s: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'{' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                if end > start
                    && !bytes[start].is_ascii_digit()
                    && matches!(bytes.get(end), Some(b'}' | b':'))
                {
                    out.push(start..end);
                }
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
    out
}

/// Whether `ty` holds a borrow: a reference or a lifetime other than
/// `'static` (not counting fn pointers and `Fn(..)` bounds, whose
/// references are their arguments').
fn borrows(ty: &Type) -> bool {
    struct Find(bool);
    impl VisitMut for Find {
        fn visit_type_reference_mut(&mut self, r: &mut syn::TypeReference) {
            match &r.lifetime {
                Some(lt) if lt.ident == "static" => self.visit_type_mut(&mut r.elem),
                _ => self.0 = true,
            }
        }
        fn visit_lifetime_mut(&mut self, lt: &mut Lifetime) {
            self.0 |= lt.ident != "static";
        }
        fn visit_type_fn_ptr_mut(&mut self, _: &mut syn::TypeFnPtr) {}
        fn visit_parenthesized_generic_arguments_mut(
            &mut self,
            _: &mut syn::ParenthesizedGenericArguments,
        ) {
        }
        fn visit_bound_lifetimes_mut(&mut self, _: &mut syn::BoundLifetimes) {}
    }
    let mut find = Find(false);
    find.visit_type_mut(&mut ty.clone());
    find.0
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
            *ident = Ident::new("__cache_this", Span::call_site().located_at(ident.span()));
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
                TokenTree::Literal(lit) => out.push(self.literal(lit)),
                tt => out.push(tt),
            }
        }
        out.into_iter().collect()
    }

    /// `"{self}"` / `"{self:?}"` in a format string → `"{__cache_this}"`.
    fn literal(&mut self, lit: proc_macro2::Literal) -> TokenTree {
        let text = lit.to_string();
        if !format_args_of(&text)
            .iter()
            .any(|r| &text[r.clone()] == "self")
        {
            return TokenTree::Literal(lit);
        }
        let Ok(s) = syn::parse2::<syn::LitStr>(TokenTree::Literal(lit.clone()).into()) else {
            return TokenTree::Literal(lit);
        };
        let value = s.value();
        let mut new = String::new();
        let mut last = 0;
        for r in format_args_of(&value) {
            if &value[r.clone()] == "self" {
                new.push_str(&value[last..r.start]);
                new.push_str("__cache_this");
                last = r.end;
            }
        }
        if last == 0 {
            return TokenTree::Literal(lit);
        }
        new.push_str(&value[last..]);
        self.replaced = true;
        let mut out = proc_macro2::Literal::string(&new);
        out.set_span(Span::call_site().located_at(lit.span()));
        TokenTree::Literal(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn format_args() {
        let args = |s: &str| -> Vec<String> {
            format_args_of(s)
                .into_iter()
                .map(|r| s[r].to_string())
                .collect()
        };
        assert_eq!(
            args("{a} {b:?} {c:>8} {{d}} {} {0} {1:?} {e_1}"),
            ["a", "b", "c", "e_1"]
        );
        assert_eq!(args("\"{self}/{self:#?}\""), ["self", "self"]);
        assert!(args("{{self}}").is_empty());
        assert!(args("{ a }").is_empty());
    }

    #[test]
    fn mentions_idents_and_format_args() {
        let body = quote!(let x = y + 1; println!("{z} {{w}}"); f(|v| v.0));
        for name in ["x", "y", "z", "v", "f", "println"] {
            assert!(mentions(&body, name), "{name}");
        }
        for name in ["w", "q", "self"] {
            assert!(!mentions(&body, name), "{name}");
        }
    }

    #[test]
    fn borrowing_types() {
        for ty in [
            quote!(&str),
            quote!(Option<&str>),
            quote!(Cow<'a, str>),
            quote!(Box<dyn Display + 'a>),
            quote!((u32, &[u8])),
        ] {
            assert!(borrows(&parse_quote!(#ty)), "{ty}");
        }
        for ty in [
            quote!(String),
            quote!(Option<String>),
            quote!(&'static str),
            quote!(fn(&str) -> bool),
            quote!(Box<dyn Fn(&str) -> bool + Send>),
            quote!(Arc<dyn for<'x> Fn(&'x str) + 'static>),
            quote!(T),
        ] {
            assert!(!borrows(&parse_quote!(#ty)), "{ty}");
        }
    }

    #[test]
    fn anonymized_lifetimes() {
        let ty = anonymize_lifetimes(&parse_quote!(Foo<'a, &'b str, &'static str>));
        assert_eq!(
            quote!(#ty).to_string(),
            quote!(Foo<'_, &'_ str, &'static str>).to_string()
        );
    }

    fn replace_in(body: TokenStream) -> (String, bool) {
        let mut block: Block = parse_quote!({ #body });
        let mut r = ReplaceSelf { replaced: false };
        r.visit_block_mut(&mut block);
        (quote!(#block).to_string(), r.replaced)
    }

    #[test]
    fn replace_self() {
        let (out, replaced) = replace_in(quote! {
            let a = self.x + self::helper(Self::C);
            let f = move || self.y;
            format!("{} {self} {self:?} {{self}}", self.z);
            fn nested(s: &S) -> u64 { s.x }
            impl S { fn m(&self) -> u64 { self.x } }
            self
        });
        assert!(replaced);
        assert!(
            out.contains("__cache_this . x + self :: helper (Self :: C)"),
            "{out}"
        );
        assert!(out.contains("move | | __cache_this . y"), "{out}");
        assert!(
            out.contains(
                r#"format ! ("{} {__cache_this} {__cache_this:?} {{self}}" , __cache_this . z)"#
            ),
            "{out}"
        );
        assert!(out.contains("fn m (& self) -> u64 { self . x }"), "{out}");
        assert!(out.ends_with("__cache_this }"), "{out}");

        let (out, replaced) = replace_in(quote!(self::helper(Self::C)));
        assert!(!replaced, "{out}");
    }

    #[test]
    fn describe_args() {
        let ids = |names: &[&str]| -> Vec<Ident> {
            names
                .iter()
                .map(|n| Ident::new(n, Span::call_site()))
                .collect()
        };
        assert_eq!(describe(&ids(&["stale"])), "`stale`");
        assert_eq!(
            describe(&ids(&["stale", "timeout_ms"])),
            "`stale` and `timeout_ms`"
        );
        assert_eq!(
            describe(&ids(&["stale", "early_refresh", "timeout_ms"])),
            "`stale`, `early_refresh` and `timeout_ms`"
        );
    }
}
