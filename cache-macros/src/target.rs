//! The targets of the attributes: the function the macro wraps (an `async fn` as written, or
//! what `#[async_trait]` leaves of one, recognised here and rebuilt around the expansion), and
//! the names its parameter patterns bind.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{
    Expr, ExprAsync, ExprCall, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType,
    Stmt, Type, TypeParamBound,
};

use crate::ctxt::Ctxt;
use crate::shape::last_segment;

/// The item as a function, or an error that says the attribute needs one.
pub(crate) fn parse_fn(item: &TokenStream, attr: &str, ctxt: &mut Ctxt) -> Option<ItemFn> {
    match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => Some(f),
        Err(_) => {
            ctxt.error(
                Span::call_site(),
                format!("`#[{attr}]` can only be applied to an `async fn` with a body"),
            );
            None
        }
    }
}

/// The function the macro wraps: an `async fn` as written, or what
/// `#[async_trait]` (which expands before the attributes on the impl's
/// methods) leaves of one.
pub(crate) struct Target<'a> {
    /// The function as written (under `#[async_trait]`, as it left it).
    pub func: &'a ItemFn,
    /// `Some` for the `#[async_trait]` shape.
    pub boxed: Option<BoxedAsync<'a>>,
}

impl<'a> Target<'a> {
    /// Recognises the `#[async_trait]` shape.
    pub(crate) fn new(func: &'a ItemFn) -> Self {
        Target {
            func,
            boxed: BoxedAsync::from_fn(func),
        }
    }

    /// Whether the function is async (written so, or under `#[async_trait]`).
    pub(crate) fn is_async(&self) -> bool {
        self.func.sig.asyncness.is_some() || self.boxed.is_some()
    }
}

/// A non-async fn returning `Pin<Box<dyn Future<Output = T> + ..>>` whose
/// body ends with `Box::pin(async move { .. })`: an `async fn` after
/// `#[async_trait]` (recognised the way `tracing-attributes`' `AsyncInfo`
/// does). The macro then works inside the `async` block, with `T` as the
/// return type. async-trait keeps the receiver and the identifier parameters
/// in the signature (it binds them again inside the block, `self` as
/// `__self`), so templates and `cache = self.cache` name the signature's
/// parameters, rendered before the block's own statements run.
pub(crate) struct BoxedAsync<'a> {
    /// Statements before the `Box::pin(..)` tail.
    pub before: &'a [Stmt],
    /// The `Box::pin(..)` call.
    pub call: &'a ExprCall,
    /// Its `async` block.
    pub block: &'a ExprAsync,
    /// `T` of `Future<Output = T>`.
    pub output: &'a Type,
}

impl<'a> BoxedAsync<'a> {
    fn from_fn(func: &'a ItemFn) -> Option<Self> {
        if func.sig.asyncness.is_some() {
            return None;
        }
        let ReturnType::Type(_, ret) = &func.sig.output else {
            return None;
        };
        let output = boxed_future_output(ret)?;
        let (last, before) = func.block.stmts.split_last()?;
        let Stmt::Expr(Expr::Call(call), None) = last else {
            return None;
        };
        let Expr::Path(path) = &*call.func else {
            return None;
        };
        let segs = &path.path.segments;
        let is_box_pin = segs.len() >= 2
            && segs[segs.len() - 1].ident == "pin"
            && segs[segs.len() - 2].ident == "Box";
        if !is_box_pin || call.args.len() != 1 {
            return None;
        }
        let Some(Expr::Async(block)) = call.args.first() else {
            return None;
        };
        Some(BoxedAsync {
            before,
            call,
            block,
            output,
        })
    }

    /// The parameters async-trait renamed to `__argN` because they were
    /// patterns (`(a, b): (u32, u32)`), with those patterns: the block
    /// destructures them again (`let (a, b) = __arg1;`).
    pub(crate) fn destructured(&self) -> Vec<(&'a Pat, &'a Ident)> {
        self.block
            .block
            .stmts
            .iter()
            .filter_map(|stmt| {
                let Stmt::Local(local) = stmt else {
                    return None;
                };
                if matches!(&local.pat, Pat::Ident(p) if p.subpat.is_none()) {
                    return None;
                }
                let arg = arg_ident(&local.init.as_ref()?.expr)?;
                arg.to_string()
                    .starts_with("__arg")
                    .then_some((&local.pat, arg))
            })
            .collect()
    }

    /// `let <pattern> = &__argN;` for each destructured parameter, so that a
    /// key rendered before the block's own statements can name its bindings
    /// (by reference; `mut` / `ref` dropped, as default binding modes require).
    pub(crate) fn key_prelude(&self) -> TokenStream {
        fn by_ref(pat: &Pat) -> Pat {
            let mut pat = pat.clone();
            strip_binding_modes(&mut pat);
            pat
        }
        let lets = self.destructured().into_iter().map(|(pat, arg)| {
            let pat = by_ref(pat);
            quote! {
                #[allow(unused_variables, clippy::toplevel_ref_arg)]
                let #pat = &#arg;
            }
        });
        quote! { #(#lets)* }
    }

    /// `Box::pin(async move { inner })`, keeping the call's path and the
    /// block's attributes and capture mode.
    pub(crate) fn rebuild(&self, inner: TokenStream) -> TokenStream {
        let mut block = self.block.clone();
        block.block.stmts = vec![Stmt::Expr(Expr::Verbatim(inner), None)];
        let mut call = self.call.clone();
        call.args = std::iter::once(Expr::Async(block)).collect();
        let before = self.before;
        quote! { #(#before)* #call }
    }
}

/// `x` in `x` or in `{ let x = x; x }` (how async-trait moves a parameter
/// that a pattern destructures into its block).
pub(crate) fn arg_ident(expr: &Expr) -> Option<&Ident> {
    match expr {
        Expr::Path(path) => path.path.get_ident(),
        Expr::Block(block) => match block.block.stmts.last()? {
            Stmt::Expr(Expr::Path(path), None) => path.path.get_ident(),
            _ => None,
        },
        _ => None,
    }
}

/// `T` in `Pin<Box<dyn Future<Output = T> + ..>>` (any paths to `Pin`, `Box`
/// and `Future`).
fn boxed_future_output(ty: &Type) -> Option<&Type> {
    fn first_type(args: Option<&syn::AngleBracketedGenericArguments>) -> Option<&Type> {
        args?.args.iter().find_map(|g| match g {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
    }
    let (pin, args) = last_segment(ty)?;
    if pin != "Pin" {
        return None;
    }
    let (boxed, args) = last_segment(first_type(args)?)?;
    if boxed != "Box" {
        return None;
    }
    let mut object = first_type(args)?;
    while let Type::Group(syn::TypeGroup { elem, .. }) | Type::Paren(syn::TypeParen { elem, .. }) =
        object
    {
        object = elem;
    }
    let Type::TraitObject(object) = object else {
        return None;
    };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let seg = bound.path.segments.last()?;
        let PathArguments::AngleBracketed(args) = &seg.arguments else {
            return None;
        };
        if seg.ident != "Future" {
            return None;
        }
        args.args.iter().find_map(|g| match g {
            GenericArgument::AssocType(a) if a.ident == "Output" => Some(&a.ty),
            _ => None,
        })
    })
}

/// The statements of an `#[async_trait]` block, where `let id = id;` (how
/// async-trait moves a parameter into the block) gets
/// `#[allow(unused_variables)]` when a template uses `id`: the key used the
/// parameter even if the body does not, as it would in an `async fn`.
pub(crate) fn allow_unused_rebinds(stmts: &[Stmt], used_names: &[String]) -> Vec<Stmt> {
    let used = |name: &Ident| used_names.iter().any(|n| *name == n);
    stmts
        .iter()
        .map(|stmt| {
            let mut stmt = stmt.clone();
            if let Stmt::Local(local) = &mut stmt
                && let Some(init) = &local.init
                && let Some(arg) = arg_ident(&init.expr)
                && (match &local.pat {
                    Pat::Ident(pat) => {
                        pat.subpat.is_none()
                            && matches!(&*init.expr, Expr::Path(_))
                            && *arg == pat.ident
                            && used(&pat.ident)
                    }
                    // `let (a, b) = __arg1;`: a destructured parameter.
                    pat => {
                        arg.to_string().starts_with("__arg") && {
                            let mut names = Vec::new();
                            collect_bindings(pat, &mut names);
                            names.iter().any(|n| used_names.contains(n))
                        }
                    }
                })
            {
                local
                    .attrs
                    .push(syn::parse_quote!(#[allow(unused_variables)]));
            }
            stmt
        })
        .collect()
}

/// What a key render needs before it under `#[async_trait]` (see
/// [`BoxedAsync::key_prelude`]); nothing otherwise.
pub(crate) fn key_prelude(target: &Target) -> TokenStream {
    target
        .boxed
        .as_ref()
        .map(BoxedAsync::key_prelude)
        .unwrap_or_default()
}

/// Names bound by a parameter pattern: `x`, `mut x`, and the bindings
/// inside destructuring patterns such as `(a, b)` or `Point { x, y }`.
pub(crate) fn collect_bindings(pat: &Pat, names: &mut Vec<String>) {
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

/// Drops `mut` / `ref` from a pattern's bindings (it then matches a
/// reference with default binding modes).
pub(crate) fn strip_binding_modes(pat: &mut Pat) {
    match pat {
        Pat::Ident(p) => {
            p.by_ref = None;
            p.mutability = None;
            if let Some((_, sub)) = &mut p.subpat {
                strip_binding_modes(sub);
            }
        }
        Pat::Tuple(p) => p.elems.iter_mut().for_each(strip_binding_modes),
        Pat::TupleStruct(p) => p.elems.iter_mut().for_each(strip_binding_modes),
        Pat::Slice(p) => p.elems.iter_mut().for_each(strip_binding_modes),
        Pat::Struct(p) => p
            .fields
            .iter_mut()
            .for_each(|f| strip_binding_modes(&mut f.pat)),
        Pat::Reference(p) => strip_binding_modes(&mut p.pat),
        Pat::Paren(p) => strip_binding_modes(&mut p.pat),
        Pat::Type(p) => strip_binding_modes(&mut p.pat),
        _ => {}
    }
}
