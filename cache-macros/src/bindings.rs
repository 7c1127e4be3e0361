//! Names bound by parameter patterns: shared by the signature check, the policy
//! registration and the owned copies of refreshing functions.

use syn::Pat;

/// Names bound by a parameter pattern: `x`, `mut x`, and the bindings
/// inside destructuring patterns such as `(a, b)` or `Point { x, y }`.
pub fn collect_bindings(pat: &Pat, names: &mut Vec<String>) {
    match pat {
        Pat::Ident(p) => {
            names.push(p.ident.to_string());
            if let Some((_, sub)) = &p.subpat {
                collect_bindings(sub, names);
            }
        }
        Pat::Tuple(p) => p.elems.iter().for_each(|p| collect_bindings(p, names)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|p| collect_bindings(p, names)),
        Pat::Slice(p) => p.elems.iter().for_each(|p| collect_bindings(p, names)),
        Pat::Struct(p) => p
            .fields
            .iter()
            .for_each(|f| collect_bindings(&f.pat, names)),
        Pat::Reference(p) => collect_bindings(&p.pat, names),
        Pat::Paren(p) => collect_bindings(&p.pat, names),
        Pat::Type(p) => collect_bindings(&p.pat, names),
        _ => {}
    }
}
