//! Return shapes: what a function returns decides what is cached (`T`, `Option<T>`,
//! `Result<T, E>`, `Result<Option<T>, E>`), read from the return type's last path segment
//! ([`infer`]) or given with `returns = ".."`.

use syn::ext::IdentExt as _;
use syn::{GenericArgument, Ident, PathArguments, Type};

/// The shape of a function's return type, which decides what is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Any `T`: always cached.
    Plain,
    /// `Option<T>`: `None` is a negative entry.
    Opt,
    /// `Result<T, E>`: `Err` is never cached.
    Res,
    /// `Result<Option<T>, E>`.
    ResOpt,
}

impl Shape {
    /// The `returns = ".."` names.
    pub(crate) const NAMES: [(&'static str, Shape); 4] = [
        ("plain", Shape::Plain),
        ("option", Shape::Opt),
        ("result", Shape::Res),
        ("result_option", Shape::ResOpt),
    ];

    /// The runtime's marker type name for this shape.
    pub(crate) fn marker(self) -> &'static str {
        match self {
            Shape::Plain => "Plain",
            Shape::Opt => "Opt",
            Shape::Res => "Res",
            Shape::ResOpt => "ResOpt",
        }
    }
}

/// The shape of a return type, from its last path segment: `Result<Option<_>, _>`,
/// `Result<_, _>` (also aliases like `io::Result<T>`, and any `..Result<..>` with generic
/// arguments such as `ApiResult<T>`), `Option<_>`, else plain. An inferred plain shape is
/// backed by a type-level check (see `expand::cached`'s `plain_check`) that catches a `Result` or `Option`
/// hidden behind any other alias.
pub(crate) fn infer(ty: &Type) -> Shape {
    match last_segment(ty) {
        Some((name, args)) if is_result_name(name, args.is_some()) => {
            let first = args.and_then(|a| {
                a.args.iter().find_map(|g| match g {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                })
            });
            match first.and_then(last_segment) {
                Some((inner, _)) if inner == "Option" => Shape::ResOpt,
                _ => Shape::Res,
            }
        }
        Some((name, _)) if name == "Option" => Shape::Opt,
        _ => Shape::Plain,
    }
}

/// `Result`, or a name ending with `Result` that takes generic arguments (`ApiResult<T>`);
/// a bare `SearchResult` is more likely a struct than an alias.
fn is_result_name(name: &Ident, has_args: bool) -> bool {
    let name = name.unraw().to_string();
    name == "Result" || (has_args && name.ends_with("Result"))
}

pub(crate) fn last_segment(
    ty: &Type,
) -> Option<(&Ident, Option<&syn::AngleBracketedGenericArguments>)> {
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            let seg = p.path.segments.last()?;
            let args = match &seg.arguments {
                PathArguments::AngleBracketed(a) => Some(a),
                _ => None,
            };
            Some((&seg.ident, args))
        }
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn shape(ty: Type) -> Shape {
        infer(&ty)
    }

    #[test]
    fn shapes() {
        assert_eq!(shape(parse_quote!(u64)), Shape::Plain);
        assert_eq!(shape(parse_quote!(Vec<u8>)), Shape::Plain);
        assert_eq!(shape(parse_quote!((u8, u8))), Shape::Plain);
        assert_eq!(shape(parse_quote!(Option<u8>)), Shape::Opt);
        assert_eq!(shape(parse_quote!(std::option::Option<u8>)), Shape::Opt);
        assert_eq!(shape(parse_quote!(Result<u8, E>)), Shape::Res);
        assert_eq!(shape(parse_quote!(io::Result<u8>)), Shape::Res);
        assert_eq!(shape(parse_quote!(anyhow::Result<Vec<u8>>)), Shape::Res);
        assert_eq!(shape(parse_quote!(Result<Option<u8>, E>)), Shape::ResOpt);
        assert_eq!(
            shape(parse_quote!(anyhow::Result<core::option::Option<u8>>)),
            Shape::ResOpt
        );
        // Aliases named `..Result<..>` are results too.
        assert_eq!(shape(parse_quote!(ApiResult<u8>)), Shape::Res);
        assert_eq!(shape(parse_quote!(crate::DbResult<(), E>)), Shape::Res);
        assert_eq!(shape(parse_quote!(ApiResult<Option<u8>>)), Shape::ResOpt);
        // Without generic arguments, a `..Result` is more likely a struct
        // (`SearchResult`); the type-level check catches a hidden `Result`.
        assert_eq!(shape(parse_quote!(SearchResult)), Shape::Plain);
        assert_eq!(shape(parse_quote!(Results<u8>)), Shape::Plain);
        assert_eq!(shape(parse_quote!(Option<ApiResult<u8>>)), Shape::Opt);
    }
}
