//! Key rendering: a parsed template becomes the code that renders it, one `lit` or `part` call
//! of the runtime's `KeyBuf` per segment, each placeholder spanned at its part of the string
//! literal (so a type without `KeyPart` is reported there).

use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::{Ident, Index, Member, Token};

use crate::template::{Placeholder, Segment, Template};

/// `{ let mut __cache_k = KeyBuf::new(); ...; __cache_k.finish() }`.
pub(super) fn key(krate: &TokenStream, template: &Template, prelude: &TokenStream) -> TokenStream {
    key_with(krate, template, prelude, &[])
}

/// As [`key`], where each name of `borrowed` is already a reference to
/// the parameter's value (in the hidden key function): a bare `{name}` renders
/// `part(name)`, so a missing `KeyPart` is the same error as in the function
/// (which the compiler then reports once).
pub(super) fn key_with(
    krate: &TokenStream,
    template: &Template,
    prelude: &TokenStream,
    borrowed: &[String],
) -> TokenStream {
    let mut steps = Vec::new();
    for seg in &template.segments {
        match seg {
            Segment::Lit(s) => steps.push(quote! { __cache_k.lit(#s); }),
            Segment::Part(p) => {
                // Spanned at the template so that a type without `KeyPart`
                // is reported at the placeholder that uses it.
                let span = template.span_of(p);
                let expr = placeholder_expr(p, span);
                if p.fields.is_empty() && borrowed.contains(&p.root) {
                    steps.push(quote_spanned! {span=> __cache_k.part(#expr); });
                } else {
                    steps.push(quote_spanned! {span=> __cache_k.part(&#expr); });
                }
            }
        }
    }
    quote! {
        {
            #prelude
            let mut __cache_k = #krate::__private::KeyBuf::new();
            #(#steps)*
            __cache_k.finish()
        }
    }
}

/// `root.field.0` for a placeholder, spanned at `span`.
fn placeholder_expr(p: &Placeholder, span: Span) -> TokenStream {
    let root = if p.root == "self" {
        Token![self](span).to_token_stream()
    } else {
        ident(&p.root, span).to_token_stream()
    };
    let fields = p.fields.iter().map(|f| match f.parse::<u32>() {
        Ok(index) => Member::Unnamed(Index { index, span }),
        Err(_) => Member::Named(ident(f, span)),
    });
    quote_spanned!(span=> #root #(.#fields)*)
}

/// An identifier as a template writes it (`r#type` becomes a raw identifier).
pub(super) fn ident(s: &str, span: Span) -> Ident {
    match s.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, span),
        None => Ident::new(s, span),
    }
}

/// `::std::vec::Vec::new()` or `::std::vec::Vec::from([tag, ..])`: the rendered
/// tags, in the load closure (only called on a miss).
pub(super) fn tags(krate: &TokenStream, tags: &[Template], prelude: &TokenStream) -> TokenStream {
    if tags.is_empty() {
        return quote!(::std::vec::Vec::new());
    }
    let tags = tags.iter().map(|t| key(krate, t, prelude));
    quote!(::std::vec::Vec::from([#(#tags),*]))
}

/// `let name: [String; N] = [rendered, .., typed, ..];` (N may be 0):
/// `templates` rendered, then the `typed` key expressions (after `prelude`).
pub(super) fn let_rendered(
    name: &str,
    krate: &TokenStream,
    templates: &[Template],
    typed: &[TokenStream],
    prelude: &TokenStream,
) -> TokenStream {
    let name = Ident::new(name, Span::call_site());
    let n = Literal::usize_unsuffixed(templates.len() + typed.len());
    let items = templates.iter().map(|t| key(krate, t, prelude));
    let typed = typed.iter().map(|k| quote!({ #prelude #k }));
    quote! { let #name: [::std::string::String; #n] = [#(#items,)* #(#typed,)*]; }
}
