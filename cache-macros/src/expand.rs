//! Code generation. The generated code is small: it renders the key(s) from
//! borrowed arguments and calls one runtime entry point
//! (`__private::cached` or `__private::invalidate`); all logic lives in the
//! runtime.
//!
//! On any error the original function is emitted unchanged next to the
//! `compile_error!`s, so the user sees only the macro's errors and no
//! follow-on noise from a half-expanded function.

use proc_macro2::{Group, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::{
    AttrStyle, Attribute, Expr, ExprAsync, ExprCall, FnArg, GenericArgument, Ident, Index, ItemFn,
    LitStr, Member, Pat, PathArguments, ReturnType, Stmt, Token, Type, TypeParamBound,
};

use crate::attr::{self, Common, Ctxt, Shape, TypedCall};
use crate::bindings::collect_bindings;
use crate::policy;
use crate::refresh::{self, Owned};
use crate::template::{Kind, Placeholder, Scope, Segment, Template};

/// Expands `#[cached(args)] item`.
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut ctxt = Ctxt::default();
    let args = attr::parse_cached(args, &mut ctxt);
    let Some(func) = parse_fn(&item, "cached", &mut ctxt) else {
        return with_errors(item, ctxt);
    };
    let target = Target::new(&func);
    let scope = check_signature(&target, "cached", &mut ctxt);
    let template = args
        .key
        .as_ref()
        .and_then(|lit| template_or_errors(lit, &scope, Kind::Key, &mut ctxt));
    let tags: Vec<Template> = args
        .tags
        .iter()
        .filter_map(|lit| template_or_errors(lit, &scope, Kind::Tag, &mut ctxt))
        .collect();
    let owned = match (&target.boxed, args.refresh_args.first()) {
        (_, None) => None,
        // After `#[async_trait]`: the copies are planned on the `async` block as if it were
        // the body of an `async fn` with the signature's parameters (async-trait moves them
        // into the block, `self` as `let __self = self;`, which the plan rewrites).
        (Some(boxed), Some(_)) => {
            let mut as_async = func.clone();
            as_async.sig.asyncness = Some(Default::default());
            as_async.sig.output =
                syn::ReturnType::Type(Default::default(), Box::new(boxed.output.clone()));
            // Its `let x = x;` rebinds of parameters only the key or tags use are allowed
            // unused, as without a refresh.
            let used = template_roots(template.iter().chain(&tags));
            as_async.block.stmts = allow_unused_rebinds(&boxed.block.block.stmts, &used);
            refresh::plan(&as_async, &args.refresh_args, &mut ctxt)
        }
        (None, Some(_)) => refresh::plan(&func, &args.refresh_args, &mut ctxt),
    };
    if let (Some(_), Some(b)) = (&target.boxed, &args.key_fn)
        && b.value
    {
        ctxt.error(
            b.span,
            "`key_fn = true` cannot apply to an `#[async_trait]` method: it lives in a trait \
             impl, which cannot hold the hidden key function; remove `key_fn`",
        );
    }
    match (ctxt.is_empty(), template, args.ttl) {
        (true, Some(template), Some(ttl)) => {
            let spec = CachedSpec {
                ttl: ttl.value,
                jitter: args.jitter.map_or(0, |j| j.value),
                negative_ttl: args.negative_ttl.map(|n| n.value),
                lock_ms: args.lock_ms.map(|l| l.value),
                stale: args.stale.map_or(0, |s| s.value),
                early_refresh: args.early_refresh.unwrap_or(0.0),
                timeout_ms: args.timeout_ms.map_or(0, |t| t.value),
                cache_if: args.cache_if,
                local_ttl: args.local_ttl.map(|l| (l.value, l.span)),
                key_fn: args.key_fn.as_ref().map(|b| b.value),
            };
            expand_cached(&target, &template, &tags, &spec, owned, &args.common)
        }
        _ => with_errors(item, ctxt),
    }
}

/// Expands `#[invalidates(args)] item`.
pub fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut ctxt = Ctxt::default();
    let args = attr::parse_invalidates(args, &mut ctxt);
    let Some(func) = parse_fn(&item, "invalidates", &mut ctxt) else {
        return with_errors(item, ctxt);
    };
    let target = Target::new(&func);
    let scope = check_signature(&target, "invalidates", &mut ctxt);
    let templates: Vec<Template> = args
        .templates
        .iter()
        .filter_map(|lit| template_or_errors(lit, &scope, Kind::Key, &mut ctxt))
        .collect();
    let tags: Vec<Template> = args
        .tags
        .iter()
        .filter_map(|lit| template_or_errors(lit, &scope, Kind::Tag, &mut ctxt))
        .collect();
    if !ctxt.is_empty() || (templates.is_empty() && tags.is_empty() && args.typed.is_empty()) {
        return with_errors(item, ctxt);
    }
    expand_invalidates(&target, &templates, &args.typed, &tags, &args.common)
}

/// The original item followed by every collected error.
fn with_errors(item: TokenStream, ctxt: Ctxt) -> TokenStream {
    let errors = ctxt.finish().map(|e| e.into_compile_error());
    quote! { #item #errors }
}

fn parse_fn(item: &TokenStream, attr: &str, ctxt: &mut Ctxt) -> Option<ItemFn> {
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

fn template_or_errors(
    lit: &LitStr,
    scope: &Scope,
    kind: Kind,
    ctxt: &mut Ctxt,
) -> Option<Template> {
    match Template::from_lit(lit, scope, kind) {
        Ok(t) => Some(t),
        Err(errors) => {
            errors.into_iter().for_each(|e| ctxt.push(e));
            None
        }
    }
}

/// The function the macro wraps: an `async fn` as written, or what
/// `#[async_trait]` (which expands before the attributes on the impl's
/// methods) leaves of one.
struct Target<'a> {
    func: &'a ItemFn,
    /// `Some` for the `#[async_trait]` shape.
    boxed: Option<BoxedAsync<'a>>,
}

impl<'a> Target<'a> {
    fn new(func: &'a ItemFn) -> Self {
        Target {
            func,
            boxed: BoxedAsync::from_fn(func),
        }
    }

    fn is_async(&self) -> bool {
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
struct BoxedAsync<'a> {
    /// Statements before the `Box::pin(..)` tail.
    before: &'a [Stmt],
    /// The `Box::pin(..)` call.
    call: &'a ExprCall,
    /// Its `async` block.
    block: &'a ExprAsync,
    /// `T` of `Future<Output = T>`.
    output: &'a Type,
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
    fn destructured(&self) -> Vec<(&'a Pat, &'a Ident)> {
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
    fn key_prelude(&self) -> TokenStream {
        fn by_ref(pat: &Pat) -> Pat {
            let mut pat = pat.clone();
            crate::policy::strip_binding_modes(&mut pat);
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
    fn rebuild(&self, inner: TokenStream) -> TokenStream {
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
fn arg_ident(expr: &Expr) -> Option<&Ident> {
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

/// Checks that the fn is async and collects the names a template may use.
fn check_signature(target: &Target, attr: &str, ctxt: &mut Ctxt) -> Scope {
    let sig = &target.func.sig;
    if !target.is_async() {
        let what = if attr == "cached" {
            "on a miss it awaits the cache backend (Redis) and your loader, and concurrent \
             callers of the same key await one shared load"
        } else {
            "after the body returns it awaits the cache backend (Redis) to delete the keys"
        };
        ctxt.error(
            sig.fn_token.span,
            format!(
                "`#[{attr}]` requires an `async fn`: {what}, which a synchronous fn cannot do; \
                 write `async fn {}`",
                sig.ident
            ),
        );
    }
    let mut scope = Scope {
        fn_name: sig.ident.to_string(),
        ..Scope::default()
    };
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(_) => scope.has_self = true,
            FnArg::Typed(pt) => collect_bindings(&pt.pat, &mut scope.names),
        }
    }
    if let Some(boxed) = &target.boxed {
        for (pat, _) in boxed.destructured() {
            collect_bindings(pat, &mut scope.names);
        }
    }
    scope
}

/// The shape of a return type, from its last path segment: `Result<Option<_>, _>`,
/// `Result<_, _>` (also aliases like `io::Result<T>`, and any `..Result<..>` with generic
/// arguments such as `ApiResult<T>`), `Option<_>`, else plain. An inferred plain shape is
/// backed by a type-level check (see [`plain_check`]) that catches a `Result` or `Option`
/// hidden behind any other alias.
pub fn infer_shape(ty: &Type) -> Shape {
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

fn last_segment(ty: &Type) -> Option<(&Ident, Option<&syn::AngleBracketedGenericArguments>)> {
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

struct CachedSpec {
    ttl: u64,
    jitter: u64,
    negative_ttl: Option<u64>,
    lock_ms: Option<u64>,
    stale: u64,
    early_refresh: f64,
    timeout_ms: u64,
    cache_if: Option<syn::ExprPath>,
    /// `local_ttl = N` and where it is written.
    local_ttl: Option<(u64, Span)>,
    /// `key_fn = ..` as written.
    key_fn: Option<bool>,
}

/// Pieces shared by both expansions.
struct Parts<'a> {
    outer_attrs: Vec<&'a Attribute>,
    inner_attrs: Vec<&'a Attribute>,
    krate: TokenStream,
    ret: TokenStream,
    ret_span: Span,
    shape: Shape,
    /// The shape was read from the return type, not given with `returns = ..`.
    shape_inferred: bool,
    name: TokenStream,
    /// `let __cache_handle = ...;` when `cache = expr` is given.
    handle_init: TokenStream,
    /// An expression of type `&Cache`.
    handle_ref: TokenStream,
    /// The body's statements (of the `async` block under `#[async_trait]`).
    stmts: Vec<Stmt>,
}

/// `templates` are the templates in use (their parameters are not reported
/// unused when only the key uses them).
fn parts<'a>(target: &Target<'a>, used_names: &[String], common: &Common) -> Parts<'a> {
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
        Some(ty) => (ty.to_token_stream(), ty.span(), infer_shape(ty)),
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
fn async_body(ret: &TokenStream, rebinds: &TokenStream, stmts: &[Stmt]) -> TokenStream {
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

/// The statements of an `#[async_trait]` block, where `let id = id;` (how
/// async-trait moves a parameter into the block) gets
/// `#[allow(unused_variables)]` when a template uses `id`: the key used the
/// parameter even if the body does not, as it would in an `async fn`.
fn allow_unused_rebinds(stmts: &[Stmt], used_names: &[String]) -> Vec<Stmt> {
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
                            names.iter().any(|n| used(&ident(n, Span::call_site())))
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

/// The placeholder roots of `templates` (names the generated code uses).
fn template_roots<'a>(templates: impl IntoIterator<Item = &'a Template>) -> Vec<String> {
    templates
        .into_iter()
        .flat_map(|t| &t.segments)
        .filter_map(|s| match s {
            Segment::Part(p) => Some(p.root.clone()),
            Segment::Lit(_) => None,
        })
        .collect()
}

/// Identifiers in `tokens` (the names a typed invalidation's arguments use).
fn token_idents(tokens: TokenStream, out: &mut Vec<String>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) => out.push(i.to_string()),
            TokenTree::Group(g) => token_idents(g.stream(), out),
            _ => {}
        }
    }
}

/// What a key render needs before it under `#[async_trait]` (see
/// [`BoxedAsync::key_prelude`]); nothing otherwise.
fn key_prelude(target: &Target) -> TokenStream {
    target
        .boxed
        .as_ref()
        .map(BoxedAsync::key_prelude)
        .unwrap_or_default()
}

fn handle_init(krate: &TokenStream, expr: &Expr) -> TokenStream {
    // Located at the expression so that a wrong type is reported there.
    let span = Span::call_site().located_at(expr.span());
    let handle = quote_spanned!(span=> #krate::__private::handle(&(#expr)));
    quote! { let __cache_handle = #handle; }
}

/// `{ let mut __cache_k = KeyBuf::new(); ...; __cache_k.finish() }`.
fn render_key(krate: &TokenStream, template: &Template, prelude: &TokenStream) -> TokenStream {
    render_key_with(krate, template, prelude, &[])
}

/// As [`render_key`], where each name of `borrowed` is already a reference to
/// the parameter's value (in the hidden key function): a bare `{name}` renders
/// `part(name)`, so a missing `KeyPart` is the same error as in the function
/// (which the compiler then reports once).
pub(crate) fn render_key_with(
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

fn ident(s: &str, span: Span) -> Ident {
    match s.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, span),
        None => Ident::new(s, span),
    }
}

/// `tokens` with every span (recursively) replaced by `span`.
fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
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

fn marker(krate: &TokenStream, shape: Shape) -> TokenStream {
    let m = format_ident!("{}", shape.marker());
    quote!(#krate::__private::#m)
}

/// Dead code that compiles only if the return type, inferred as plain from its
/// name, does not resolve to `Result<_, _>` or `Option<_>` (an alias such as
/// `type Answer = Result<User, ApiError>`); see `cache_runtime::shape_check`.
/// Every token but the type's own is located at the return type, where the
/// error is reported.
fn plain_check(krate: &TokenStream, ret: &TokenStream, ret_span: Span) -> TokenStream {
    let k = respan(krate, ret_span);
    quote_spanned! {ret_span=>
        #[allow(unused_imports, clippy::unit_arg)]
        if false {
            use #k::__private::PlainFallback as _;
            #k::__private::expect_plain(#k::__private::Probe::<#ret>::new().__cache_shape_kind());
        }
    }
}

/// `::std::vec::Vec::new()` or `::std::vec::Vec::from([tag, ..])`: the rendered
/// tags, in the load closure (only called on a miss).
fn render_tags(krate: &TokenStream, tags: &[Template], prelude: &TokenStream) -> TokenStream {
    if tags.is_empty() {
        return quote!(::std::vec::Vec::new());
    }
    let tags = tags.iter().map(|t| render_key(krate, t, prelude));
    quote!(::std::vec::Vec::from([#(#tags),*]))
}

/// `let name: [String; N] = [rendered, .., typed, ..];` (N may be 0):
/// `templates` rendered, then the `typed` key expressions (after `prelude`).
fn let_rendered(
    name: &str,
    krate: &TokenStream,
    templates: &[Template],
    typed: &[TokenStream],
    prelude: &TokenStream,
) -> TokenStream {
    let name = Ident::new(name, Span::call_site());
    let n = Literal::usize_unsuffixed(templates.len() + typed.len());
    let items = templates.iter().map(|t| render_key(krate, t, prelude));
    let typed = typed.iter().map(|k| quote!({ #prelude #k }));
    quote! { let #name: [::std::string::String; #n] = [#(#items,)* #(#typed,)*]; }
}

fn expand_cached(
    target: &Target,
    template: &Template,
    tags: &[Template],
    spec: &CachedSpec,
    owned: Option<Owned>,
    common: &Common,
) -> TokenStream {
    let func = target.func;
    let used = template_roots(std::iter::once(template).chain(tags));
    let Parts {
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
    } = parts(target, &used, common);
    let vis = &func.vis;
    let prelude = key_prelude(target);
    let key = render_key(&krate, template, &prelude);
    let tags_vec = render_tags(&krate, tags, &prelude);
    let marker = marker(&krate, shape);
    // The runtime counts in milliseconds (the programmatic API takes `Duration`s).
    let ms = |secs: u64| Literal::u64_unsuffixed(secs.saturating_mul(1000));
    let ttl = ms(spec.ttl);
    let jitter = ms(spec.jitter);
    let stale = ms(spec.stale);
    let early_refresh = Literal::f64_unsuffixed(spec.early_refresh);
    let timeout_ms = Literal::u64_unsuffixed(spec.timeout_ms);
    let local_ttl = ms(spec.local_ttl.map_or(0, |(v, _)| v));
    let option = |v: Option<u64>| match v {
        Some(v) => {
            let v = Literal::u64_unsuffixed(v);
            quote!(::core::option::Option::Some(#v))
        }
        None => quote!(::core::option::Option::None),
    };
    let negative_ttl = option(spec.negative_ttl.map(|v| v.saturating_mul(1000)));
    let lock_ms = option(spec.lock_ms);
    // Every token of the call and its `.await` is located at the return
    // type, so that an unsupported return type (not `Serialize`, not
    // matching `returns = ..`) is reported there, once.
    let ret_span = Span::call_site().located_at(ret_span);
    let cache_if = match &spec.cache_if {
        // Located at the path, so that a function of the wrong signature is
        // reported there; the coercion to `fn(&T) -> bool` happens at `Some(..)`.
        Some(path) => {
            let span = Span::call_site().located_at(path.span());
            quote_spanned!(span=> ::core::option::Option::Some(#path))
        }
        // At the return type like the call: its type names the stored value.
        None => quote_spanned!(ret_span=> ::core::option::Option::None),
    };
    let check = if shape_inferred && shape == Shape::Plain {
        plain_check(&krate, &ret, ret_span)
    } else {
        TokenStream::new()
    };
    let krate_at_ret = respan(&krate, ret_span);
    let marker_at_ret = respan(&marker, ret_span);
    // `()`, or with `local_ttl` the proof that the stored type can live in the near cache,
    // located at `local_ttl`: a stored type that is not `Clone` (or not `Sync`) is reported
    // there, naming the bound.
    let near = match spec.local_ttl {
        Some((_, local_span)) => {
            let local_span = Span::call_site().located_at(local_span);
            let krate_at_local = respan(&krate, local_span);
            quote_spanned!(local_span=> #krate_at_local::__private::near_fns())
        }
        None => quote!(()),
    };
    let (sig, call) = match &owned {
        None => {
            let body = async_body(&ret, &TokenStream::new(), &stmts);
            let call = quote_spanned! {ret_span=>
                #krate_at_ret::__private::cached::<#marker_at_ret, #ret, _, _, _>(
                    #handle_ref, &__CACHE_SPEC, __cache_key, #cache_if, #near,
                    move || (#tags_vec, #body)
                ).await
            };
            (&func.sig, call)
        }
        Some(owned) => {
            // The body may run in the background after the call returned: the
            // closure borrows the parameters and gives the block owned copies.
            let Owned {
                copies,
                rebinds,
                stmts,
                sig,
            } = owned;
            // `#[async_trait]` keeps its own signature (the boxed future's).
            let sig = if target.boxed.is_some() {
                &func.sig
            } else {
                sig
            };
            let body = async_body(&ret, rebinds, stmts);
            let call = quote_spanned! {ret_span=>
                #krate_at_ret::__private::cached_refresh::<#marker_at_ret, #ret, _, _, _>(
                    #handle_ref, &__CACHE_SPEC, __cache_key, #cache_if, #near,
                    || {
                        let __cache_tags: ::std::vec::Vec<::std::string::String> = #tags_vec;
                        #copies
                        (__cache_tags, #body)
                    }
                ).await
            };
            (sig, call)
        }
    };
    let policy_static = policy::cached_static(
        &krate,
        template,
        tags,
        &policy::CachedFields {
            name: name.clone(),
            function: func.sig.ident.unraw().to_string(),
            ttl: spec.ttl,
            jitter: spec.jitter,
            negative_ttl: spec.negative_ttl,
            stale: spec.stale,
            local_ttl: spec.local_ttl.map(|(v, _)| v),
            returns: policy::text(&ret),
        },
    );
    let key_fn = if policy::emits_key_fn(func, target.boxed.is_some(), spec.key_fn) {
        policy::key_fn(func, template, |t, borrowed| {
            render_key_with(&krate, t, &TokenStream::new(), borrowed)
        })
    } else {
        TokenStream::new()
    };
    let inner = quote! {
        #policy_static
        static __CACHE_SPEC: #krate::__private::FnSpec = #krate::__private::FnSpec {
            name: #name,
            ttl_ms: #ttl,
            jitter_ms: #jitter,
            negative_ttl_ms: #negative_ttl,
            lock_ms: #lock_ms,
            stale_ms: #stale,
            early_refresh: #early_refresh,
            timeout_ms: #timeout_ms,
            local_ttl_ms: #local_ttl,
            slot: #krate::__private::CounterSlot::new(),
        };
        #check
        let __cache_key: ::std::string::String = #key;
        #handle_init
        #call
    };
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
        #key_fn
    }
}

fn expand_invalidates(
    target: &Target,
    templates: &[Template],
    typed: &[TypedCall],
    tags: &[Template],
    common: &Common,
) -> TokenStream {
    let func = target.func;
    let mut used = template_roots(templates.iter().chain(tags));
    for t in typed {
        token_idents(t.call.args.to_token_stream(), &mut used);
    }
    let Parts {
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
    } = parts(target, &used, common);
    let vis = &func.vis;
    let sig = &func.sig;
    let prelude = key_prelude(target);
    let has_self = matches!(func.sig.inputs.first(), Some(FnArg::Receiver(_)));
    let typed_keys: Vec<TokenStream> = typed
        .iter()
        .map(|t| policy::typed_key(t, has_self))
        .collect();
    let keys = let_rendered("__cache_keys", &krate, templates, &typed_keys, &prelude);
    let policy_static = policy::invalidate_static(
        &krate,
        &name,
        &func.sig.ident.unraw().to_string(),
        templates,
        typed,
        tags,
    );
    let tags = let_rendered("__cache_tags", &krate, tags, &[], &prelude);
    let body = async_body(&ret, &TokenStream::new(), &stmts);
    let marker = marker(&krate, shape);
    let ret_span = Span::call_site().located_at(ret_span);
    let succeeded = if shape_inferred && shape == Shape::Plain {
        // The name said "plain", but the type may be a `Result` behind an alias: a probe
        // resolved by the compiler decides (`Ok` only for a `Result`).
        quote_spanned! {ret_span=> {
            #[allow(unused_imports)]
            use #krate::__private::SucceededFallback as _;
            #krate::__private::Probe::<#ret>::new().__cache_succeeded(&__cache_out)
        }}
    } else {
        quote_spanned!(ret_span=> #krate::__private::succeeded::<#marker, #ret>(&__cache_out))
    };
    let inner = quote! {
        static __CACHE_INV_SPEC: #krate::__private::InvalidateSpec =
            #krate::__private::InvalidateSpec { name: #name };
        #policy_static
        #keys
        #tags
        #handle_init
        let __cache_out: #ret = #body.await;
        if #succeeded {
            #krate::__private::invalidate(
                #handle_ref, &__CACHE_INV_SPEC, &__cache_keys, &__cache_tags,
            ).await;
        }
        __cache_out
    };
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn shape(ty: Type) -> Shape {
        infer_shape(&ty)
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

    fn expand(
        f: fn(TokenStream, TokenStream) -> TokenStream,
        a: TokenStream,
        i: TokenStream,
    ) -> String {
        f(a, i).to_string()
    }

    #[test]
    fn cached_expansion_shape() {
        let out = expand(
            cached,
            quote!(key = "user:{id}:{u.name}", ttl = 300, jitter = 30),
            quote!(
                pub async fn get(id: u64, u: &User) -> Result<Option<User>, E> {
                    Ok(None)
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("__private :: ResOpt"), "{out}");
        assert!(out.contains("__cache_k . part (& id)"), "{out}");
        assert!(out.contains("__cache_k . part (& u . name)"), "{out}");
        assert!(out.contains("__cache_k . lit (\"user:\")"), "{out}");
        assert!(out.contains("ttl_secs : 300"), "{out}");
        assert!(out.contains("jitter_secs : 30"), "{out}");
        assert!(
            out.contains(":: cache_runtime :: __private :: global ()"),
            "{out}"
        );
    }

    #[test]
    fn plain_check_only_for_inferred_plain() {
        let item = quote!(
            async fn get(id: u64) -> Answer {
                todo!()
            }
        );
        let out = expand(cached, quote!(key = "a:{id}", ttl = 5), item.clone());
        assert!(
            out.contains("expect_plain (:: cache_runtime :: __private :: Probe :: < Answer >"),
            "{out}"
        );
        for returns in ["plain", "result"] {
            let out = expand(
                cached,
                quote!(key = "a:{id}", ttl = 5, returns = #returns),
                item.clone(),
            );
            assert!(!out.contains("expect_plain"), "{returns}: {out}");
        }
        let out = expand(
            cached,
            quote!(key = "a:{id}", ttl = 5),
            quote!(
                async fn get(id: u64) -> ApiResult<u64> {
                    todo!()
                }
            ),
        );
        assert!(!out.contains("expect_plain"), "{out}");
        assert!(out.contains("__private :: Res ,"), "{out}");
    }

    #[test]
    fn cached_method_with_cache_expr() {
        let out = expand(
            cached,
            quote!(
                key = "o:{self.shop}:{id}",
                ttl = 5,
                cache = self.cache,
                crate = ::rt
            ),
            quote!(
                async fn get(&self, id: u64) -> u64 {
                    id
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("part (& self . shop)"), "{out}");
        assert!(
            out.contains(":: rt :: __private :: handle (& (self . cache))"),
            "{out}"
        );
        assert!(!out.contains("cache_runtime"), "{out}");
    }

    #[test]
    fn errors_keep_original_fn() {
        let item = quote!(
            fn get(id: u64) -> u64 {
                id
            }
        );
        let out = expand(cached, quote!(key = "u:{idd}", ttl = 0), item.clone());
        assert!(out.starts_with(&item.to_string()), "{out}");
        assert_eq!(out.matches("compile_error").count(), 3, "{out}");
        assert!(out.contains("requires an `async fn`"), "{out}");
        assert!(out.contains("did you mean `id`?"), "{out}");
    }

    #[test]
    fn destructured_params() {
        let out = expand(
            cached,
            quote!(key = "p:{a}:{b}:{x}", ttl = 5),
            quote!(
                async fn get((a, b): (u32, u32), P { x, .. }: P) -> u64 {
                    1
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn invalidates_expansion() {
        let out = expand(
            invalidates,
            quote!("user:{id}", "users:list"),
            quote!(
                async fn rename(id: u64) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(
            out.contains("succeeded :: < :: cache_runtime :: __private :: Res"),
            "{out}"
        );
        assert!(out.contains("__cache_k . lit (\"users:list\")"), "{out}");
    }

    /// What `#[async_trait]` 0.1.92 makes of
    /// `async fn get(&self, id: u64) -> Result<Option<String>, E> { .. }`.
    fn async_trait_item(body_tail: TokenStream) -> TokenStream {
        quote!(
            fn get<'life0, 'async_trait>(
                &'life0 self,
                id: u64,
            ) -> ::core::pin::Pin<
                Box<
                    dyn ::core::future::Future<Output = Result<Option<String>, E>>
                        + ::core::marker::Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                #body_tail
            }
        )
    }

    #[test]
    fn async_trait_shape() {
        let item = async_trait_item(quote!(Box::pin(async move {
            if let ::core::option::Option::Some(__ret) =
                ::core::option::Option::None::<Result<Option<String>, E>>
            {
                #[allow(unreachable_code)]
                return __ret;
            }
            let __self = self;
            let id = id;
            let __ret: Result<Option<String>, E> = { Ok(Some(__self.name.clone())) };
            #[allow(unreachable_code)]
            __ret
        })));
        let out = expand(
            cached,
            quote!(key = "u:{self.tenant}:{id}", ttl = 5, cache = self.cache),
            item.clone(),
        );
        assert!(!out.contains("compile_error"), "{out}");
        let (sig, body) = out.split_once("Box :: pin (async move {").expect(&out);
        assert!(!sig.contains("__CACHE_SPEC"), "{out}");
        assert!(body.contains("__CACHE_SPEC"), "{out}");
        assert!(body.contains("part (& self . tenant)"), "{out}");
        assert!(body.contains("handle (& (self . cache))"), "{out}");
        assert!(
            body.contains("ResOpt , Result < Option < String > , E >"),
            "{out}"
        );
        assert!(
            body.contains("# [allow (unused_variables)] let id = id ;"),
            "{out}"
        );

        let out = expand(invalidates, quote!("u:{id}"), item);
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("Box :: pin (async move {"), "{out}");
        assert!(
            out.contains("succeeded :: < :: cache_runtime :: __private :: ResOpt"),
            "{out}"
        );
    }

    #[test]
    fn not_async_trait_shape() {
        // Right return type, but the body is not `Box::pin(async ..)`.
        for tail in [
            quote!(Box::pin(ready(Ok(None)))),
            quote!(Box::new(async move { Ok(None) })),
            quote!(let f = Box::pin(async move { Ok(None) }); f),
            quote!(Box::pin(async move { Ok(None) });),
        ] {
            let out = expand(
                cached,
                quote!(key = "u:{id}", ttl = 5),
                async_trait_item(tail),
            );
            assert!(out.contains("requires an `async fn`"), "{out}");
        }
        // `Box::pin(async ..)` but not a boxed future type.
        let out = expand(
            cached,
            quote!(key = "u:{id}", ttl = 5),
            quote!(
                fn get(id: u64) -> Box<dyn Future<Output = u64>> {
                    Box::pin(async move { id })
                }
            ),
        );
        assert!(out.contains("requires an `async fn`"), "{out}");
    }

    #[test]
    fn not_a_fn() {
        let out = expand(
            cached,
            quote!(key = "a", ttl = 1),
            quote!(
                struct S;
            ),
        );
        assert!(out.contains("can only be applied"), "{out}");
        assert!(out.starts_with("struct S ;"), "{out}");
    }

    #[test]
    fn tags_and_cache_if_without_refresh() {
        let out = expand(
            cached,
            quote!(
                key = "user:{id}",
                ttl = 60,
                tags = ["org:{user.org}", "users"],
                cache_if = is_active
            ),
            quote!(
                async fn get(id: u64, user: User) -> Option<User> {
                    Some(user)
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("__private :: cached :: <"), "{out}");
        assert!(!out.contains("cached_refresh"), "{out}");
        assert!(
            out.contains(":: core :: option :: Option :: Some (is_active)"),
            "{out}"
        );
        // Tags are rendered in the load closure, before the body's block.
        let (before, after) = out.split_once("move || (").expect(&out);
        assert!(!before.contains("lit (\"org:\")"), "{out}");
        // The registered description lists the tag templates.
        assert!(
            before.contains("tags : & [\"org:{user.org}\" , \"users\"]"),
            "{out}"
        );
        let (tags, body) = after.split_once("async move").expect(&out);
        assert!(tags.starts_with(":: std :: vec :: Vec :: from (["), "{out}");
        assert!(tags.contains("__cache_k . part (& user . org)"), "{out}");
        assert!(tags.contains("__cache_k . lit (\"users\")"), "{out}");
        assert!(body.contains("Some (user)"), "{out}");
        assert!(out.contains("stale_secs : 0"), "{out}");
        assert!(out.contains("early_refresh : 0.0"), "{out}");
        assert!(out.contains("timeout_ms : 0"), "{out}");

        let out = expand(
            cached,
            quote!(key = "user:{id}", ttl = 60),
            quote!(
                async fn get(id: u64) -> u64 {
                    id
                }
            ),
        );
        assert!(
            out.contains("move || (:: std :: vec :: Vec :: new () , async move"),
            "{out}"
        );
        assert!(out.contains("Option :: None"), "{out}");
    }

    #[test]
    fn refresh_expansion() {
        let out = expand(
            cached,
            quote!(
                key = "user:{region}:{id}",
                ttl = 60,
                stale = 30,
                early_refresh = 1.0,
                timeout_ms = 200,
                tags = ["region:{region}"]
            ),
            quote!(
                pub async fn get<'a>(region: &'a str, id: u64, mut n: u32, only_key: u8) -> String {
                    n += 1;
                    format!("{region}/{n}/{}", id)
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("__private :: cached_refresh :: <"), "{out}");
        assert!(out.contains("stale_secs : 30"), "{out}");
        assert!(out.contains("early_refresh : 1.0"), "{out}");
        assert!(out.contains("timeout_ms : 200"), "{out}");
        // `mut` moves from the signature to the block's binding.
        let (sig, rest) = out.split_once('{').expect(&out);
        assert!(sig.contains("n : u32"), "{sig}");
        assert!(!sig.contains("mut"), "{sig}");
        // The closure is not `move`: it borrows the parameters to render the tags and
        // make the copies.
        let (_, closure) = rest.split_once("|| {").expect(&out);
        let (copies, block) = closure.split_once("async move").expect(&out);
        assert!(
            copies.contains(
                "let __cache_own_region = :: std :: borrow :: ToOwned :: to_owned (region)"
            ),
            "{copies}"
        );
        assert!(
            copies.contains("let __cache_arg_id = :: core :: clone :: Clone :: clone (& id)"),
            "{copies}"
        );
        assert!(copies.contains("__cache_arg_n"), "{copies}");
        // Only the key uses `only_key`: not copied.
        assert!(!copies.contains("only_key"), "{copies}");
        assert!(
            block.contains(
                "let region : & '_ str = :: core :: borrow :: Borrow :: borrow (& __cache_own_region)"
            ),
            "{block}"
        );
        assert!(block.contains("let id = __cache_arg_id ;"), "{block}");
        assert!(block.contains("let mut n = __cache_arg_n ;"), "{block}");
    }

    #[test]
    fn refresh_method_replaces_self() {
        let out = expand(
            cached,
            quote!(
                key = "u:{self.tenant}:{id}",
                ttl = 60,
                stale = 5,
                cache = self.cache
            ),
            quote!(
                async fn get(&self, id: u64) -> String {
                    format!("{}/{}", self.tenant, self::helper(Self::X, id))
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        // The key and the handle read the real `self`, before the body.
        assert!(out.contains("part (& self . tenant)"), "{out}");
        assert!(out.contains("handle (& (self . cache))"), "{out}");
        assert!(
            out.contains("let __cache_self = :: core :: clone :: Clone :: clone (self) ;"),
            "{out}"
        );
        assert!(
            out.contains("let __cache_this : & Self = & __cache_self ;"),
            "{out}"
        );
        assert!(
            out.contains("__cache_this . tenant , self :: helper (Self :: X , id)"),
            "{out}"
        );

        // A body without `self` does not clone the receiver.
        let out = expand(
            cached,
            quote!(key = "u:{self.tenant}:{id}", ttl = 60, stale = 5),
            quote!(
                async fn get(&self, id: u64) -> u64 {
                    id
                }
            ),
        );
        assert!(!out.contains("__cache_self"), "{out}");

        // `mut self` by value: cloned, and owned by the block.
        let out = expand(
            cached,
            quote!(key = "u:{id}", ttl = 60, stale = 5),
            quote!(
                async fn take(mut self, id: u64) -> u64 {
                    self.n += id;
                    self.n
                }
            ),
        );
        assert!(out.contains("async fn take (self , id : u64)"), "{out}");
        assert!(out.contains("clone (& self)"), "{out}");
        assert!(
            out.contains("let mut __cache_this = __cache_self ;"),
            "{out}"
        );
    }

    #[test]
    fn refresh_errors() {
        let errors = |args: TokenStream, item: TokenStream| -> Vec<String> {
            let out = expand(cached, args, item);
            out.split("compile_error !")
                .skip(1)
                .map(|s| s.to_string())
                .collect()
        };
        let e = errors(
            quote!(key = "u:{id}", ttl = 60, stale = 5, timeout_ms = 9),
            quote!(
                async fn get(&mut self, id: u64, buf: &mut Vec<u8>, (a, b): (u8, u8)) -> u64 {
                    buf.push(a + b);
                    self.n
                }
            ),
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("cannot take `&mut self`"), "{e:?}");
        assert!(e[0].contains("`stale` and `timeout_ms`"), "{e:?}");
        assert!(
            e[0].contains("needs owned copies of the arguments"),
            "{e:?}"
        );
        assert!(e[1].contains("parameter `buf: &mut Vec<u8>`"), "{e:?}");
        assert!(e[2].contains("destructured parameter `(a, b)`"), "{e:?}");
        assert!(e[2].contains("`arg: (u8, u8)`"), "{e:?}");

        // The same parameters are fine when the body does not use them.
        let e = errors(
            quote!(key = "u:{a}", ttl = 60, early_refresh = 1.0),
            quote!(
                async fn get(&mut self, buf: &mut Vec<u8>, (a, b): (u8, u8)) -> u64 {
                    1
                }
            ),
        );
        assert!(e.is_empty(), "{e:?}");

        let e = errors(
            quote!(key = "u:{id}", ttl = 60, stale = 5),
            quote!(
                async fn get(id: u64, name: Option<&str>, label: &impl Display) -> String {
                    format!("{id}{name:?}{label}")
                }
            ),
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("`name: Option<&str>`"), "{e:?}");
        assert!(e[0].contains("still borrows"), "{e:?}");
        assert!(e[1].contains("`label: &impl ..`"), "{e:?}");
    }

    #[test]
    fn refresh_on_async_trait_runs_on_owned_copies() {
        let item = async_trait_item(quote!(Box::pin(async move {
            let __self = self;
            let id = id;
            let __ret: Result<Option<String>, E> = { Ok(None) };
            #[allow(unreachable_code)]
            __ret
        })));
        let out = expand(
            cached,
            quote!(key = "u:{id}", ttl = 5, stale = 10),
            item.clone(),
        );
        // The refresh entry point, with the receiver and the parameter copied for the block.
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("cached_refresh"), "{out}");
        assert!(out.contains("let __cache_self"), "{out}");
        assert!(out.contains("let __cache_arg_id"), "{out}");
        // Tags are fine there.
        let out = expand(
            cached,
            quote!(key = "u:{id}", ttl = 5, tags = ["t:{id}"]),
            item,
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("Vec :: from (["), "{out}");
    }

    #[test]
    fn key_fn_and_typed_invalidation() {
        let out = expand(
            cached,
            quote!(key = "user:{id}:{name}", ttl = 60),
            quote!(
                pub async fn get_user(mut id: u64, db: &Db, name: &str) -> u64 {
                    id
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        let (_, key_fn) = out.split_once("fn __cache_key_get_user").expect(&out);
        assert!(
            key_fn.starts_with(" (id : & u64 , name : & str) -> :: std :: string :: String {"),
            "{key_fn}"
        );
        // `id` is already a reference there; `name` was one.
        assert!(key_fn.contains("__cache_k . part (id)"), "{key_fn}");
        assert!(key_fn.contains("__cache_k . part (& name)"), "{key_fn}");
        assert!(out.contains("pub fn __cache_key_get_user"), "{out}");
        assert!(out.contains("CACHED_POLICIES"), "{out}");
        assert!(out.contains("template : \"user:{id}:{name}\""), "{out}");

        // A method without a visibility (maybe in a trait impl) gets none.
        let out = expand(
            cached,
            quote!(key = "u:{self.t}:{id}", ttl = 60),
            quote!(
                async fn get(&self, id: u64) -> u64 {
                    id
                }
            ),
        );
        assert!(!out.contains("__cache_key_get"), "{out}");
        assert!(out.contains("CACHED_POLICIES"), "{out}");

        let out = expand(
            invalidates,
            quote!(get_user(u.id, &u.name), Self::profile(7), "x"),
            quote!(
                async fn save(&self, u: &User) {}
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(
            out.contains("__cache_key_get_user (& (u . id) , & (& u . name))"),
            "{out}"
        );
        assert!(
            out.contains("Self :: __cache_key_profile (& self , & (7))"),
            "{out}"
        );
        assert!(
            out.contains("call : \"get_user(u.id, &u.name)\" , path : \"get_user\""),
            "{out}"
        );
        assert!(out.contains("INVALIDATE_POLICIES"), "{out}");
        assert!(out.contains("[:: std :: string :: String ; 3]"), "{out}");
    }

    #[test]
    fn invalidates_with_tags() {
        let out = expand(
            invalidates,
            quote!("user:{id}", tags = ["org:{org}", "users"]),
            quote!(
                async fn moved(id: u64, org: u64) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(
            out.contains("let __cache_keys : [:: std :: string :: String ; 1] = ["),
            "{out}"
        );
        assert!(
            out.contains("let __cache_tags : [:: std :: string :: String ; 2] = ["),
            "{out}"
        );
        assert!(out.contains("& __cache_keys , & __cache_tags"), "{out}");

        let out = expand(
            invalidates,
            quote!(tags = ["users"]),
            quote!(
                async fn wipe() {}
            ),
        );
        assert!(!out.contains("compile_error"), "{out}");
        assert!(
            out.contains("let __cache_keys : [:: std :: string :: String ; 0] = [] ;"),
            "{out}"
        );

        let out = expand(
            invalidates,
            quote!("u:{id}", tags = ["org:{org}"]),
            quote!(
                async fn moved(id: u64, org_id: u64) {}
            ),
        );
        assert!(
            out.contains("unknown parameter `org` in tag template"),
            "{out}"
        );
    }
}
