//! Policy as data: the static descriptions both attributes register at link
//! time (`cache_runtime::policies()`), and typed invalidation: the hidden key
//! function `#[cached]` emits next to the function, and the call of it that
//! `#[invalidates(get_user(id))]` emits.
//!
//! Naming: for a function `get_user`, the key function is `__cache_key_get_user`,
//! next to the function (a free item, or an associated item in an `impl`),
//! with its visibility. `#[invalidates(users::get_user(id))]` calls
//! `users::__cache_key_get_user(&(id))`, and `Self::user(id)` calls
//! `Self::__cache_key_user(&self, &(id))`, so an unknown function, a wrong
//! number of arguments or a wrong argument type is a compile error at the call.

use std::collections::HashSet;

use proc_macro2::{Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::{
    Attribute, FnArg, GenericParam, Generics, Ident, ItemFn, Pat, Type, Visibility, WherePredicate,
};

use super::render;
use crate::args::invalidates::TypedCall;
use crate::target::{collect_bindings, strip_binding_modes};
use crate::template::{Segment, Template};

/// Tokens as compact text (`get_user(user.id)`, `Option<String>`), for descriptions.
pub(super) fn text(tokens: &TokenStream) -> String {
    let mut s = tokens.to_string();
    for (from, to) in [
        (" . ", "."),
        (" :: ", "::"),
        (":: ", "::"),
        (" (", "("),
        ("( ", "("),
        (" )", ")"),
        (" ,", ","),
        ("& ", "&"),
        (" < ", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" [", "["),
        ("[ ", "["),
        (" ]", "]"),
        ("' ", "'"),
    ] {
        while s.contains(from) {
            s = s.replace(from, to);
        }
    }
    s
}

/// What a `#[cached]` description holds besides the template and tags.
pub(super) struct CachedFields {
    /// `name` expression (a literal or `concat!(module_path!(), ..)`).
    pub name: TokenStream,
    /// The function's identifier.
    pub function: String,
    /// `ttl`, `jitter`, `negative_ttl`, `stale`.
    pub ttl: u64,
    /// Seconds.
    pub jitter: u64,
    /// Seconds; `None`: as `ttl`.
    pub negative_ttl: Option<u64>,
    /// Seconds.
    pub stale: u64,
    /// `local_ttl`, seconds; `None`: no near cache.
    pub local_ttl: Option<u64>,
    /// The return type as written.
    pub returns: String,
}

fn linkme_attrs(krate: &TokenStream, slice: &str) -> TokenStream {
    let slice = Ident::new(slice, Span::call_site());
    quote! {
        #[#krate::__private::linkme::distributed_slice(#krate::__private::#slice)]
        #[linkme(crate = #krate::__private::linkme)]
    }
}

/// `[Segment::Lit("user:"), Segment::Part("id")]`: the template as parsed, handed to the
/// runtime so that its policy checker does not parse the text again.
fn segments(krate: &TokenStream, template: &Template) -> TokenStream {
    let segments = template.segments.iter().map(|s| match s {
        Segment::Lit(text) => quote!(#krate::__private::TemplateSegment::Lit(#text)),
        Segment::Part(p) => {
            let path = p.path();
            quote!(#krate::__private::TemplateSegment::Part(#path))
        }
    });
    quote!([#(#segments),*])
}

/// `static __CACHE_POLICY: CachedPolicy = ..;`, registered at link time.
pub(super) fn cached_static(
    krate: &TokenStream,
    template: &Template,
    tags: &[Template],
    f: &CachedFields,
) -> TokenStream {
    let register = linkme_attrs(krate, "CACHED_POLICIES");
    let CachedFields {
        name,
        function,
        ttl,
        jitter,
        negative_ttl,
        stale,
        local_ttl,
        returns,
    } = f;
    let tmpl = template.lit.value();
    let key_segments = segments(krate, template);
    let tag_segments = tags.iter().map(|t| segments(krate, t));
    let tags = tags.iter().map(|t| t.lit.value());
    let (ttl, jitter, stale) = (
        Literal::u64_unsuffixed(*ttl),
        Literal::u64_unsuffixed(*jitter),
        Literal::u64_unsuffixed(*stale),
    );
    let opt = |v: &Option<u64>| match v {
        Some(v) => {
            let v = Literal::u64_unsuffixed(*v);
            quote!(::core::option::Option::Some(#v))
        }
        None => quote!(::core::option::Option::None),
    };
    let (negative_ttl, local_ttl) = (opt(negative_ttl), opt(local_ttl));
    quote! {
        #register
        static __CACHE_POLICY: #krate::__private::CachedPolicy = #krate::__private::CachedPolicy {
            name: #name,
            module: ::core::module_path!(),
            function: #function,
            template: #tmpl,
            ttl_secs: #ttl,
            jitter_secs: #jitter,
            negative_ttl_secs: #negative_ttl,
            stale_secs: #stale,
            local_ttl_secs: #local_ttl,
            tags: &[#(#tags),*],
            key_segments: &#key_segments,
            tag_segments: &[#(&#tag_segments),*],
            returns: #returns,
            file: ::core::file!(),
            line: ::core::line!(),
        };
    }
}

/// Whether `#[cached]` emits the key function next to `func`. `key_fn = ..`
/// decides when given. Otherwise always for a function without a receiver
/// (free, or associated in an inherent `impl`); for a method only when it has
/// a visibility (`pub`, `pub(crate)`, `pub(self)`, ..): a trait impl cannot
/// hold extra items, and its methods never have one. A function without a
/// receiver in a trait impl needs `key_fn = false`. Never under
/// `#[async_trait]` (a trait impl), whatever `key_fn` says.
pub(super) fn emits_key_fn(func: &ItemFn, boxed: bool, key_fn: Option<bool>) -> bool {
    let has_receiver = matches!(func.sig.inputs.first(), Some(FnArg::Receiver(_)));
    !boxed && key_fn.unwrap_or(!has_receiver || !matches!(func.vis, Visibility::Inherited))
}

/// `__cache_key_<name>` for a function named `name`, located at `span`.
pub(super) fn key_fn_name(name: &Ident, span: Span) -> Ident {
    format_ident!("__cache_key_{}", name.unraw(), span = span)
}

/// The hidden key function of a `#[cached]` function:
/// `fn __cache_key_get_user(id: &u64) -> String` renders the key from the
/// parameters the key template uses (in signature order, each by reference,
/// `&self` first for a method).
pub(super) fn key_fn(krate: &TokenStream, func: &ItemFn, template: &Template) -> TokenStream {
    let sig = &func.sig;
    let key_fn = key_fn_name(&sig.ident, sig.ident.span());
    let roots: HashSet<&str> = template
        .segments
        .iter()
        .filter_map(|s| match s {
            Segment::Part(p) => Some(p.root.as_str()),
            Segment::Lit(_) => None,
        })
        .collect();
    let mut params = Vec::new();
    let mut lets = Vec::new();
    let mut types = Vec::new();
    // Parameters that the key function takes as `&T` for a `T` parameter.
    let mut borrowed = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(_) => params.push(quote!(&self)),
            FnArg::Typed(pt) => {
                let mut names = Vec::new();
                collect_bindings(&pt.pat, &mut names);
                if !names.iter().any(|n| roots.contains(n.as_str())) {
                    continue;
                }
                let ty = by_ref(&pt.ty);
                types.push(ty.clone());
                match &*pt.pat {
                    Pat::Ident(p) if p.subpat.is_none() => {
                        let id = &p.ident;
                        params.push(quote!(#id: #ty));
                        if !matches!(&*pt.ty, Type::Reference(_)) {
                            borrowed.push(id.to_string());
                        }
                    }
                    pat => {
                        let arg = format_ident!("__cache_arg{}", i);
                        let mut pat = pat.clone();
                        strip_binding_modes(&mut pat);
                        params.push(quote!(#arg: #ty));
                        lets.push(quote! {
                            #[allow(unused_variables, clippy::toplevel_ref_arg)]
                            let #pat = #arg;
                        });
                    }
                }
            }
        }
    }
    let generics = kept_generics(&sig.generics, &types);
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    // `fn<..>` takes the declaration form, which `split_for_impl`'s first part is.
    let vis = &func.vis;
    let cfgs: Vec<&Attribute> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();
    let key = render::key_with(krate, template, &TokenStream::new(), &borrowed);
    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(
            dead_code,
            non_snake_case,
            unused_variables,
            clippy::ptr_arg,
            clippy::needless_lifetimes,
            clippy::extra_unused_lifetimes,
            clippy::too_many_arguments,
            clippy::ref_option_ref
        )]
        #[inline]
        #vis fn #key_fn #impl_generics (#(#params),*) -> ::std::string::String #where_clause {
            #(#lets)*
            #key
        }
    }
}

/// `&T` for a parameter of type `T`; `&'a T` for `&'a T` and `&'a mut T`.
fn by_ref(ty: &Type) -> TokenStream {
    match ty {
        Type::Reference(r) => {
            let lt = &r.lifetime;
            let elem = &r.elem;
            quote!(&#lt #elem)
        }
        Type::Group(g) => by_ref(&g.elem),
        // `&impl A + B` would be ambiguous.
        Type::ImplTrait(_) | Type::TraitObject(_) => quote!(&(#ty)),
        ty => quote!(&#ty),
    }
}

/// Identifiers anywhere in `tokens`.
fn idents(tokens: TokenStream, out: &mut HashSet<String>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) => {
                out.insert(i.unraw().to_string());
            }
            TokenTree::Group(g) => idents(g.stream(), out),
            _ => {}
        }
    }
}

/// The function's generics that the key function needs: every lifetime, and
/// the type and const parameters its parameter types mention (with those
/// their bounds mention), with the where-predicates over them only.
fn kept_generics(generics: &Generics, types: &[TokenStream]) -> Generics {
    let mut used = HashSet::new();
    for t in types {
        idents(t.clone(), &mut used);
    }
    let name = |p: &GenericParam| match p {
        GenericParam::Type(t) => Some(t.ident.unraw().to_string()),
        GenericParam::Const(c) => Some(c.ident.unraw().to_string()),
        GenericParam::Lifetime(_) => None,
    };
    let all: HashSet<String> = generics.params.iter().filter_map(name).collect();
    // Bounds of a kept parameter may name others: keep those too.
    loop {
        let before = used.len();
        for p in &generics.params {
            if name(p).is_some_and(|n| used.contains(&n)) {
                idents(p.to_token_stream(), &mut used);
            }
        }
        if used.len() == before {
            break;
        }
    }
    let keep = |p: &GenericParam| name(p).is_none_or(|n| used.contains(&n));
    let mut out = generics.clone();
    out.params = generics
        .params
        .iter()
        .filter(|p| keep(p))
        .cloned()
        .collect();
    if let Some(w) = &mut out.where_clause {
        w.predicates = w
            .predicates
            .iter()
            .filter(|pred: &&WherePredicate| {
                let mut mentioned = HashSet::new();
                idents(pred.to_token_stream(), &mut mentioned);
                mentioned
                    .iter()
                    .filter(|m| all.contains(*m))
                    .all(|m| used.contains(m))
            })
            .cloned()
            .collect();
    }
    out
}

/// The key a typed invalidation renders: `path::__cache_key_name(&(arg), ..)`,
/// with `&self` first for `Self::name(..)` in a method. The key function's
/// name is located at the written name and each `&(arg)` at its argument, so
/// errors point there.
pub(super) fn typed_key(typed: &TypedCall, has_self: bool) -> TokenStream {
    let name = typed.name();
    let key_fn = key_fn_name(name, name.span());
    let mut path = typed.path.clone();
    path.segments.last_mut().expect("a segment").ident = key_fn;
    let receiver = (typed.is_self() && has_self).then(|| quote!(&self,));
    let args = typed.call.args.iter().map(|a| {
        let span = Span::call_site().located_at(a.span());
        quote_spanned!(span=> &(#a))
    });
    quote! { #path(#receiver #(#args),*) }
}

/// The registered description of a typed invalidation: the call and the path
/// as written (a static cannot name `Self` or the key function's generics, and
/// a second hidden name would make a typo a second error).
pub(super) fn typed_entry(krate: &TokenStream, typed: &TypedCall) -> TokenStream {
    let call = text(&typed.call.to_token_stream());
    let mut path = typed.path.clone();
    for seg in &mut path.segments {
        seg.arguments = syn::PathArguments::None;
    }
    let path = text(&path.to_token_stream());
    quote! {
        #krate::__private::TypedKey { call: #call, path: #path }
    }
}

/// `static __CACHE_INV_POLICY: InvalidatePolicy = ..;`, registered at link time.
pub(super) fn invalidate_static(
    krate: &TokenStream,
    name: &TokenStream,
    function: &str,
    templates: &[Template],
    typed: &[TypedCall],
    tags: &[Template],
) -> TokenStream {
    let register = linkme_attrs(krate, "INVALIDATE_POLICIES");
    let keys = templates.iter().map(|t| t.lit.value());
    let key_segments = templates.iter().map(|t| segments(krate, t));
    let tag_segments = tags.iter().map(|t| segments(krate, t));
    let tags = tags.iter().map(|t| t.lit.value());
    let typed = typed.iter().map(|t| typed_entry(krate, t));
    quote! {
        #register
        static __CACHE_INV_POLICY: #krate::__private::InvalidatePolicy =
            #krate::__private::InvalidatePolicy {
                name: #name,
                module: ::core::module_path!(),
                function: #function,
                keys: &[#(#keys),*],
                typed: &[#(#typed),*],
                tags: &[#(#tags),*],
                key_segments: &[#(&#key_segments),*],
                tag_segments: &[#(&#tag_segments),*],
                file: ::core::file!(),
                line: ::core::line!(),
            };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn compact_text() {
        assert_eq!(
            text(&quote!(get_user(user.id, &name))),
            "get_user(user.id, &name)"
        );
        assert_eq!(
            text(&quote!(Result<Option<String>, E>)),
            "Result<Option<String>, E>"
        );
        assert_eq!(text(&quote!(Self::user(id))), "Self::user(id)");
    }

    #[test]
    fn generics_kept() {
        let g: Generics = parse_quote!(<'a, T: KeyPart + Into<U>, U, R: Serialize>);
        let kept = kept_generics(&g, &[quote!(&'a T)]);
        assert_eq!(
            kept.params.to_token_stream().to_string(),
            "'a , T : KeyPart + Into < U > , U"
        );
        let mut g: Generics = parse_quote!(<T, R>);
        g.where_clause = Some(parse_quote!(where T: KeyPart, R: Serialize, T: Into<R>));
        let kept = kept_generics(&g, &[quote!(&T)]);
        assert_eq!(kept.params.to_token_stream().to_string(), "T");
        assert_eq!(
            kept.where_clause.to_token_stream().to_string(),
            "where T : KeyPart"
        );
    }

    #[test]
    fn emission() {
        let f: ItemFn = parse_quote!(
            async fn f(id: u64) {}
        );
        assert!(emits_key_fn(&f, false, None));
        assert!(!emits_key_fn(&f, true, None));
        assert!(!emits_key_fn(&f, false, Some(false)));
        assert!(!emits_key_fn(&f, true, Some(true)));
        let m: ItemFn = parse_quote!(
            async fn f(&self, id: u64) {}
        );
        assert!(!emits_key_fn(&m, false, None));
        assert!(emits_key_fn(&m, false, Some(true)));
        let m: ItemFn = parse_quote!(
            pub(crate) async fn f(&self, id: u64) {}
        );
        assert!(emits_key_fn(&m, false, None));
        assert!(!emits_key_fn(&m, false, Some(false)));
    }
}
