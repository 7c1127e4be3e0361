//! One argument's value: its kind (`"a string literal"`, `an integer`, ..) and range, with
//! messages that say what to write instead.

use proc_macro2::Span;
use syn::{Expr, ExprPath, Ident, Lit, LitStr, Path, UnOp};

use super::Int;
use crate::ctxt::Ctxt;
use crate::shape::Shape;
use crate::suggest::did_you_mean;

/// Strips invisible groups that `macro_rules!` puts around `$x:expr`.
pub(super) fn ungroup(e: &Expr) -> &Expr {
    match e {
        Expr::Group(g) => ungroup(&g.expr),
        Expr::Paren(p) => ungroup(&p.expr),
        e => e,
    }
}

pub(super) fn kind_of(e: &Expr) -> &'static str {
    match ungroup(e) {
        Expr::Lit(l) => match l.lit {
            Lit::Str(_) => "a string literal",
            Lit::Int(_) => "an integer",
            Lit::Float(_) => "a float",
            Lit::Bool(_) => "a bool",
            Lit::Char(_) => "a char",
            _ => "a literal",
        },
        Expr::Path(_) => "a path",
        Expr::Closure(_) => "a closure",
        Expr::Array(_) => "a list",
        _ => "an expression",
    }
}

pub(super) fn expect_str(
    name: &Ident,
    value: &Expr,
    example: &str,
    ctxt: &mut Ctxt,
) -> Option<LitStr> {
    if let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(s), ..
    }) = ungroup(value)
    {
        return Some(s.clone());
    }
    ctxt.error_spanned(
        value,
        format!(
            "`{name}` expects a string literal, found {}: write `{name} = {example}`",
            kind_of(value)
        ),
    );
    None
}

pub(super) fn expect_int(
    name: &Ident,
    value: &Expr,
    unit: &str,
    example: u64,
    ctxt: &mut Ctxt,
) -> Option<Int> {
    match ungroup(value) {
        Expr::Lit(l) => {
            match &l.lit {
                Lit::Int(i) => match i.base10_parse::<u64>() {
                    Ok(v) => Some(Int {
                        value: v,
                        span: i.span(),
                    }),
                    Err(_) => {
                        ctxt.error(i.span(), format!("`{name}` is out of range for u64 {unit}"));
                        None
                    }
                },
                Lit::Str(s) => {
                    let hint = if s.value().trim().parse::<u64>().is_ok() {
                        format!(": remove the quotes, `{name} = {}`", s.value().trim())
                    } else {
                        format!(", e.g. `{name} = {example}`")
                    };
                    ctxt.error(
                    s.span(),
                    format!("`{name}` expects an integer number of {unit}, found a string literal{hint}"),
                );
                    None
                }
                _ => {
                    ctxt.error_spanned(
                value,
                    format!(
                        "`{name}` expects an integer number of {unit}, found {}: write `{name} = {example}`",
                        kind_of(value)
                    ),
                );
                    None
                }
            }
        }
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => {
            ctxt.error_spanned(
                value,
                format!("`{name}` cannot be negative: it is a number of {unit}"),
            );
            None
        }
        _ => {
            ctxt.error_spanned(
                value,
                format!(
                    "`{name}` expects an integer literal ({unit}), found {}: write e.g. `{name} = {example}`",
                    kind_of(value)
                ),
            );
            None
        }
    }
}

pub(super) fn expect_path(value: &Expr, ctxt: &mut Ctxt) -> Option<Path> {
    if let Expr::Path(p) = ungroup(value)
        && p.qself.is_none()
        && p.attrs.is_empty()
    {
        return Some(p.path.clone());
    }
    ctxt.error_spanned(
                value,
        format!(
            "`crate` expects a path to the cache runtime crate, found {}: write e.g. `crate = ::cache_runtime`",
            kind_of(value)
        ),
    );
    None
}

pub(super) fn expect_shape(value: &Expr, ctxt: &mut Ctxt) -> Option<Shape> {
    let name = Ident::new("returns", Span::call_site());
    let s = expect_str(&name, value, "\"result\"", ctxt)?;
    let v = s.value();
    if let Some((_, shape)) = Shape::NAMES.iter().find(|(n, _)| *n == v) {
        return Some(*shape);
    }
    let names: Vec<&str> = Shape::NAMES.iter().map(|(n, _)| *n).collect();
    let mut msg = format!(
        "unknown `returns` value \"{v}\": expected one of \"plain\" (any T), \"option\" (Option<T>), \
         \"result\" (Result<T, E>) or \"result_option\" (Result<Option<T>, E>)"
    );
    if let Some(best) = did_you_mean(&v, &names) {
        msg.push_str(&format!("; did you mean \"{best}\"?"));
    }
    ctxt.error(s.span(), msg);
    None
}

/// An integer argument that must be greater than 0; `zero` explains why 0
/// is rejected.
pub(super) fn expect_positive(
    name: &Ident,
    value: &Expr,
    unit: &str,
    example: u64,
    zero: &str,
    ctxt: &mut Ctxt,
) -> Option<Int> {
    let v = expect_int(name, value, unit, example, ctxt)?;
    if v.value == 0 {
        ctxt.error(v.span, format!("`{name} = 0` has no meaning: {zero}"));
        return None;
    }
    Some(v)
}

/// `key_fn = true|false`: a bool literal.
pub(super) fn expect_bool(name: &Ident, value: &Expr, ctxt: &mut Ctxt) -> Option<syn::LitBool> {
    if let Expr::Lit(syn::ExprLit {
        lit: Lit::Bool(b), ..
    }) = ungroup(value)
    {
        return Some(b.clone());
    }
    ctxt.error_spanned(
        value,
        format!(
            "`{name}` expects `true` or `false`, found {}: `{name} = false` leaves out the \
             hidden key function that typed invalidation calls (needed for a function without \
             a receiver in a trait impl, which cannot hold extra items), `{name} = true` emits \
             it for a private method",
            kind_of(value)
        ),
    );
    None
}

/// `early_refresh = B`: a float literal greater than 0.
pub(super) fn expect_float(name: &Ident, value: &Expr, ctxt: &mut Ctxt) -> Option<f64> {
    let meaning = "it is XFetch's `B`, which scales how early before expiry a hit may \
                   refresh the entry in the background (1.0 is the paper's optimum)";
    match ungroup(value) {
        Expr::Lit(l) => match &l.lit {
            Lit::Float(f) => {
                let v = f.base10_parse::<f64>().ok().filter(|v| v.is_finite());
                match v {
                    Some(v) if v > 0.0 => Some(v),
                    Some(_) => {
                        ctxt.error(
                            f.span(),
                            format!(
                                "`{name} = {}` has no meaning: {meaning}; omit it, \
                                 or give a value greater than 0, e.g. `{name} = 1.0`",
                                f.token()
                            ),
                        );
                        None
                    }
                    None => {
                        ctxt.error(f.span(), format!("`{name}` is out of range for f64"));
                        None
                    }
                }
            }
            Lit::Int(i) => {
                let digits = i.base10_digits();
                ctxt.error(
                    i.span(),
                    format!(
                        "expected a float literal such as `1.0` for `{name}`, found an \
                         integer: write `{name} = {digits}.0`"
                    ),
                );
                None
            }
            Lit::Str(s) if s.value().trim().parse::<f64>().is_ok() => {
                ctxt.error(
                    s.span(),
                    format!(
                        "expected a float literal such as `1.0` for `{name}`, found a \
                         string literal: remove the quotes"
                    ),
                );
                None
            }
            _ => {
                ctxt.error_spanned(
                    value,
                    format!(
                        "expected a float literal such as `1.0` for `{name}`, found {}",
                        kind_of(value)
                    ),
                );
                None
            }
        },
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => {
            ctxt.error_spanned(
                value,
                format!(
                    "`{name}` must be greater than 0: {meaning}; e.g. `{name} = 1.0`, \
                     or omit it"
                ),
            );
            None
        }
        _ => {
            ctxt.error_spanned(
                value,
                format!(
                    "expected a float literal such as `1.0` for `{name}`, found {}: \
                     write e.g. `{name} = 1.0`",
                    kind_of(value)
                ),
            );
            None
        }
    }
}

/// `tags = ["tmpl", ..]`: a bracketed list of string literals. Each
/// element that is not a string literal is reported; the string literals
/// among them are still returned, so their templates are checked too.
pub(super) fn expect_tags(name: &Ident, value: &Expr, ctxt: &mut Ctxt) -> Vec<LitStr> {
    let example = "`tags = [\"org:{org_id}\", \"users\"]`";
    let elems = match ungroup(value) {
        Expr::Array(a) => &a.elems,
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => {
            ctxt.error(
                s.span(),
                format!(
                    "`{name}` expects a list of string literals in brackets, even for one tag: \
                     write `{name} = [{}]`",
                    s.token()
                ),
            );
            return Vec::new();
        }
        _ => {
            ctxt.error_spanned(
                value,
                format!(
                    "`{name}` expects a list of string literals in brackets, found {}: \
                     write e.g. {example}",
                    kind_of(value)
                ),
            );
            return Vec::new();
        }
    };
    if elems.is_empty() {
        ctxt.error_spanned(
            value,
            format!("`{name} = []` lists no tag: omit it, or name tags as in {example}"),
        );
    }
    let mut tags: Vec<LitStr> = Vec::new();
    for e in elems {
        match ungroup(e) {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            }) => {
                if tags.iter().any(|t| t.value() == s.value()) {
                    ctxt.error(
                        s.span(),
                        format!("duplicate tag {}: list it once", s.token()),
                    );
                } else {
                    tags.push(s.clone());
                }
            }
            _ => ctxt.error_spanned(
                e,
                format!(
                    "each tag in `{name} = [..]` must be a string literal (a template like a \
                     key's), found {}: write e.g. {example}",
                    kind_of(e)
                ),
            ),
        }
    }
    tags
}

/// `cache_if = path`: a path to a `fn(&T) -> bool`.
pub(super) fn expect_fn_path(name: &Ident, value: &Expr, ctxt: &mut Ctxt) -> Option<ExprPath> {
    if let Expr::Path(p) = ungroup(value)
        && p.attrs.is_empty()
    {
        return Some(p.clone());
    }
    let hint = match ungroup(value) {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) if syn::parse_str::<Path>(&s.value()).is_ok() => {
            format!(": remove the quotes, `{name} = {}`", s.value())
        }
        Expr::Closure(_) => {
            format!(
                ": move the closure into a named `fn is_cacheable(value: &T) -> bool` \
                 and write `{name} = is_cacheable`"
            )
        }
        _ => format!(", e.g. `{name} = is_cacheable`"),
    };
    ctxt.error_spanned(
        value,
        format!(
            "`{name}` expects a path to a function `fn(&T) -> bool` (T: the cached value), \
             found {}{hint}",
            kind_of(value)
        ),
    );
    None
}
