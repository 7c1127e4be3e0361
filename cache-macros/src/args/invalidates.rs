//! `#[invalidates(..)]`: the typed model (key templates, typed invalidations, tags) and its
//! parser.

use proc_macro2::TokenStream;
use syn::{Expr, Ident, Lit, LitStr, Path};

use super::{Common, RawArg, Seen, common_arg, parse_raw, unknown_argument, values};
use crate::ctxt::Ctxt;

/// A typed invalidation, `get_user(id)` or `Self::user(id)`: the key is
/// rendered by the `#[cached]` function's own (hidden) key function.
pub(crate) struct TypedCall {
    /// The call as written.
    pub call: syn::ExprCall,
    /// Its function path (`get_user`, `users::get_user`, `Self::user`).
    pub path: Path,
}

impl TypedCall {
    /// The path's last identifier: the cached function's name.
    pub(crate) fn name(&self) -> &Ident {
        &self
            .path
            .segments
            .last()
            .expect("a path has a segment")
            .ident
    }

    /// Whether the path is `Self::name`: the receiver is implied.
    pub(crate) fn is_self(&self) -> bool {
        self.path.segments.len() == 2 && self.path.segments[0].ident == "Self"
    }
}

/// Parsed `#[invalidates(...)]` arguments.
#[derive(Default)]
pub(crate) struct InvalidatesArgs {
    /// The key templates, in order.
    pub templates: Vec<LitStr>,
    /// The typed invalidations, in order.
    pub typed: Vec<TypedCall>,
    /// `tags = ["tmpl", ..]`, in order.
    pub tags: Vec<LitStr>,
    /// `cache`, `name`, `returns`, `crate`.
    pub common: Common,
    /// Whether something to invalidate was written (a template, a typed invalidation,
    /// `tags = ..` or a mistaken `key = ..`), even if it was rejected.
    pub target_written: bool,
    /// Whether a syntax error occurred.
    pub syntax_error: bool,
}

/// Every named argument `#[invalidates]` takes.
const INVALIDATES_ARGS: &[&str] = &["tags", "cache", "name", "returns", "crate"];

/// Checks the function of a typed invalidation: a plain path (no `<T as ..>::`).
fn typed_call(call: syn::ExprCall, ctxt: &mut Ctxt) -> Option<TypedCall> {
    match values::ungroup(&call.func) {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => {
            let path = p.path.clone();
            if path.segments.len() > 2 && path.segments[0].ident == "Self" {
                ctxt.error_spanned(
                    &path,
                    "a typed invalidation through `Self` names a method of this type: \
                     `Self::name(..)`",
                );
                return None;
            }
            Some(TypedCall { call, path })
        }
        other => {
            ctxt.error_spanned(
                other,
                "a typed invalidation calls a `#[cached]` function by its path, \
                 e.g. `get_user(id)`, `users::get_user(id)` or `Self::user(id)`",
            );
            None
        }
    }
}

/// Parses `#[invalidates(...)]` arguments, recording all errors in `ctxt`.
pub(crate) fn parse(tokens: TokenStream, ctxt: &mut Ctxt) -> InvalidatesArgs {
    let (raw, syntax_error) = parse_raw(tokens, ctxt);
    let mut args = InvalidatesArgs::default();
    let mut seen = Seen::default();
    let mut any_template = false;
    for arg in raw {
        match arg {
            RawArg::Positional(Lit::Str(s)) => {
                any_template = true;
                args.templates.push(s);
            }
            RawArg::Positional(lit) => ctxt.error(
                lit.span(),
                "key templates must be string literals, e.g. `#[invalidates(\"user:{id}\")]`",
            ),
            RawArg::Call(call) => {
                any_template = true;
                if let Some(typed) = typed_call(call, ctxt) {
                    args.typed.push(typed);
                }
            }
            RawArg::Named(name, value) => {
                let n = name.to_string();
                if n == "key" {
                    any_template = true;
                    let shown = match values::ungroup(&value) {
                        Expr::Lit(l) => match &l.lit {
                            Lit::Str(s) => s.token().to_string(),
                            _ => "\"user:{id}\"".into(),
                        },
                        _ => "\"user:{id}\"".into(),
                    };
                    ctxt.error(
                        name.span(),
                        format!(
                            "`#[invalidates]` takes its key templates without `key =`: \
                             write `#[invalidates({shown})]`"
                        ),
                    );
                    continue;
                }
                if !INVALIDATES_ARGS.contains(&n.as_str()) {
                    unknown_argument(&name, INVALIDATES_ARGS, "invalidates", ctxt);
                    continue;
                }
                if !seen.first(&name, ctxt) {
                    continue;
                }
                if n == "tags" {
                    any_template = true;
                    args.tags = values::expect_tags(&name, &value, ctxt);
                } else {
                    common_arg(&name, &value, &mut args.common, ctxt);
                }
            }
        }
    }
    args.target_written = any_template;
    args.syntax_error = syntax_error;
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::cached::tests::{cached, errors};
    use crate::shape::Shape;
    use quote::quote;

    /// The arguments and the parse errors (only this stage's: no cross-argument rules).
    fn invalidates(tokens: TokenStream) -> (InvalidatesArgs, Vec<String>) {
        let mut ctxt = Ctxt::new();
        let args = parse(tokens, &mut ctxt);
        (args, errors(ctxt))
    }

    #[test]
    fn invalidates_args() {
        let (a, e) = invalidates(quote! { "a:{x}", "b", cache = CACHE, returns = "plain" });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.templates.len(), 2);
        assert_eq!(a.common.returns, Some(Shape::Plain));
        let (_, e) = invalidates(quote! { "a", ttl = 5 });
        assert!(
            e[0].contains("unknown argument `ttl` for `#[invalidates]`"),
            "{e:?}"
        );
        let (_, e) = invalidates(quote! { key = "a" });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("without `key =`"), "{e:?}");
    }

    #[test]
    fn typed_invalidations() {
        let (a, e) = invalidates(quote! {
            get_user(id), "users:list", users::get_user(u.id), Self::profile(id, 2), tags = ["t"]
        });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.templates.len(), 1);
        let names: Vec<String> = a.typed.iter().map(|t| t.name().to_string()).collect();
        assert_eq!(names, ["get_user", "get_user", "profile"]);
        let selfs: Vec<bool> = a.typed.iter().map(TypedCall::is_self).collect();
        assert_eq!(selfs, [false, false, true]);
        let (a, e) = invalidates(quote! { get_user(id) });
        assert!(e.is_empty() && a.typed.len() == 1, "{e:?}");

        let (_, e) = invalidates(quote! { self.profile(id) });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("as `Self::profile(..)`"), "{e:?}");
        let (_, e) = invalidates(quote! { Self::a::b(id) });
        assert!(e[0].contains("`Self::name(..)`"), "{e:?}");
        let (_, e) = invalidates(quote! { get_user(id).await });
        assert!(e[0].contains("expected a key template"), "{e:?}");
        let (_, e) = invalidates(quote! { <T as X>::get(id) });
        assert_eq!(e.len(), 1, "{e:?}");
        let (_, e) = cached(quote! { key = "a", ttl = 5, get_user(id) });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("typed invalidations, for `#[invalidates]`"),
            "{e:?}"
        );
        // `ttl 5` is still "expected `=`", not a call.
        let (_, e) = cached(quote! { key = "a", ttl 5 });
        assert!(e[0].contains("expected `=` after `ttl`"), "{e:?}");
    }

    #[test]
    fn invalidates_tags() {
        let (a, e) = invalidates(quote! { tags = ["org:{org}"] });
        assert!(e.is_empty(), "{e:?}");
        assert!(a.templates.is_empty());
        assert_eq!(a.tags.len(), 1);
        let (a, e) = invalidates(quote! { "u:{id}", tags = ["org:{org}", "users"], cache = C });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!((a.templates.len(), a.tags.len()), (1, 2));
        let (_, e) = invalidates(quote! { tags = "org" });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("in brackets"), "{e:?}");
        let (_, e) = invalidates(quote! { "a", stale = 5 });
        assert!(e[0].contains("unknown argument `stale`"), "{e:?}");
    }
}
