//! Parsing of the `#[cached(...)]` and `#[invalidates(...)]` arguments.
//!
//! Errors are collected in a [`Ctxt`] instead of returned at the first one,
//! so a single compile shows every bad argument.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt as _;
use syn::parse::{ParseStream, Parser as _};
use syn::{Expr, ExprPath, Ident, Lit, LitStr, Path, Token, UnOp};

use crate::template::did_you_mean;

/// Collects errors so that all of them are reported in one compile
/// (in the manner of serde_derive's `Ctxt`).
#[derive(Default)]
pub struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    /// Records an error.
    pub fn push(&mut self, e: syn::Error) {
        self.errors.push(e);
    }

    /// Records an error at `span`.
    pub fn error(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, msg));
    }

    /// Records an error spanning all of `tokens` (from its first to its last
    /// token, also on stable compilers, where spans cannot be joined).
    pub fn error_spanned(&mut self, tokens: impl quote::ToTokens, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new_spanned(tokens, msg));
    }

    /// Whether no error has been recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// All errors combined into one, if there were any.
    pub fn finish(self) -> Option<syn::Error> {
        let mut it = self.errors.into_iter();
        let mut first = it.next()?;
        for e in it {
            first.combine(e);
        }
        Some(first)
    }
}

/// The shape of a function's return type, which decides what is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
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
    const NAMES: [(&'static str, Shape); 4] = [
        ("plain", Shape::Plain),
        ("option", Shape::Opt),
        ("result", Shape::Res),
        ("result_option", Shape::ResOpt),
    ];

    /// The runtime's marker type name for this shape.
    pub fn marker(self) -> &'static str {
        match self {
            Shape::Plain => "Plain",
            Shape::Opt => "Opt",
            Shape::Res => "Res",
            Shape::ResOpt => "ResOpt",
        }
    }
}

/// An integer argument with the span of its literal.
#[derive(Debug, Clone, Copy)]
pub struct Int {
    /// The value.
    pub value: u64,
    /// Where it was written.
    pub span: Span,
}

/// Arguments shared by both attributes.
#[derive(Default)]
pub struct Common {
    /// `cache = expr`.
    pub cache: Option<Expr>,
    /// `name = "..."`.
    pub name: Option<LitStr>,
    /// `returns = "..."`.
    pub returns: Option<Shape>,
    /// `crate = path`.
    pub krate: Option<Path>,
}

/// Parsed `#[cached(...)]` arguments. Required ones are `Option` because
/// parsing goes on after errors; expansion only happens when all are set.
#[derive(Default)]
pub struct CachedArgs {
    /// `key = "tmpl"`.
    pub key: Option<LitStr>,
    /// `ttl = N`.
    pub ttl: Option<Int>,
    /// `jitter = N`.
    pub jitter: Option<Int>,
    /// `negative_ttl = N`.
    pub negative_ttl: Option<Int>,
    /// `lock_ms = N`.
    pub lock_ms: Option<Int>,
    /// `stale = N` (seconds > 0).
    pub stale: Option<Int>,
    /// `early_refresh = B` (finite, > 0).
    pub early_refresh: Option<f64>,
    /// `timeout_ms = N` (> 0, only with `stale`).
    pub timeout_ms: Option<Int>,
    /// `tags = ["tmpl", ..]`, in order.
    pub tags: Vec<LitStr>,
    /// `cache_if = path`.
    pub cache_if: Option<ExprPath>,
    /// `local_ttl = N` (seconds, `0 < N <= ttl`): the near cache.
    pub local_ttl: Option<Int>,
    /// `key_fn = true|false`: whether the hidden key function that typed
    /// invalidation calls is emitted (default: see `policy::emits_key_fn`).
    pub key_fn: Option<syn::LitBool>,
    /// The `stale`, `early_refresh` and `timeout_ms` arguments as written
    /// (even when their value was rejected): they make the body run in the
    /// background, which constrains the function's parameters.
    pub refresh_args: Vec<Ident>,
    /// `cache`, `name`, `returns`, `crate`.
    pub common: Common,
}

/// A typed invalidation, `get_user(id)` or `Self::user(id)`: the key is
/// rendered by the `#[cached]` function's own (hidden) key function.
pub struct TypedCall {
    /// The call as written.
    pub call: syn::ExprCall,
    /// Its function path (`get_user`, `users::get_user`, `Self::user`).
    pub path: Path,
}

impl TypedCall {
    /// The path's last identifier: the cached function's name.
    pub fn name(&self) -> &Ident {
        &self
            .path
            .segments
            .last()
            .expect("a path has a segment")
            .ident
    }

    /// Whether the path is `Self::name`: the receiver is implied.
    pub fn is_self(&self) -> bool {
        self.path.segments.len() == 2 && self.path.segments[0].ident == "Self"
    }
}

/// Parsed `#[invalidates(...)]` arguments.
#[derive(Default)]
pub struct InvalidatesArgs {
    /// The key templates, in order.
    pub templates: Vec<LitStr>,
    /// The typed invalidations, in order.
    pub typed: Vec<TypedCall>,
    /// `tags = ["tmpl", ..]`, in order.
    pub tags: Vec<LitStr>,
    /// `cache`, `name`, `returns`, `crate`.
    pub common: Common,
}

const CACHED_ARGS: &[&str] = &[
    "key",
    "ttl",
    "jitter",
    "negative_ttl",
    "lock_ms",
    "stale",
    "early_refresh",
    "timeout_ms",
    "tags",
    "cache_if",
    "local_ttl",
    "key_fn",
    "cache",
    "name",
    "returns",
    "crate",
];
const INVALIDATES_ARGS: &[&str] = &["tags", "cache", "name", "returns", "crate"];

/// One comma-separated argument as written.
enum RawArg {
    /// A bare literal (the templates of `#[invalidates]`).
    Positional(Lit),
    /// `name = value`.
    Named(Ident, Expr),
    /// `path(args)`: a typed invalidation.
    Call(syn::ExprCall),
}

/// Splits the attribute arguments into raw arguments, recording syntax
/// errors and recovering at the next comma. Returns whether a syntax error
/// occurred (missing-argument errors are then not reported, as they are
/// likely a consequence).
fn parse_raw(tokens: TokenStream, ctxt: &mut Ctxt) -> (Vec<RawArg>, bool) {
    let mut args = Vec::new();
    let mut syntax_error = false;
    let parser = |input: ParseStream| -> syn::Result<()> {
        while !input.is_empty() {
            match parse_one(input) {
                Ok(arg) => args.push(arg),
                Err(e) => {
                    ctxt.push(e);
                    syntax_error = true;
                    skip_to_comma(input)?;
                }
            }
            if input.is_empty() {
                break;
            }
            if let Err(e) = input.parse::<Token![,]>() {
                ctxt.push(syn::Error::new(
                    e.span(),
                    "expected `,` between arguments, as in `key = \"user:{id}\", ttl = 300`",
                ));
                syntax_error = true;
                skip_to_comma(input)?;
                let _ = input.parse::<Option<Token![,]>>()?;
            }
        }
        Ok(())
    };
    if let Err(e) = parser.parse2(tokens) {
        ctxt.push(e);
        syntax_error = true;
    }
    (args, syntax_error)
}

fn parse_one(input: ParseStream) -> syn::Result<RawArg> {
    if input.peek(Lit) {
        return Ok(RawArg::Positional(input.parse()?));
    }
    // `path(args)` (a typed invalidation), or `self.name(args)`: an expression.
    let fork = input.fork();
    let is_named = fork.call(Ident::parse_any).is_ok() && fork.peek(Token![=]);
    let fork = input.fork();
    let is_call = !is_named
        && (fork.parse::<ExprPath>().is_ok() && fork.peek(syn::token::Paren)
            || input.peek(Token![self]) && input.peek2(Token![.]));
    if is_call {
        let expr: Expr = input.parse()?;
        return match expr {
            Expr::Call(call) => Ok(RawArg::Call(call)),
            Expr::MethodCall(m) => Err(syn::Error::new_spanned(
                &m,
                format!(
                    "write a typed invalidation of a method as `Self::{}(..)`: the receiver \
                     is implied",
                    m.method
                ),
            )),
            other => Err(syn::Error::new_spanned(
                other,
                "expected a key template such as `\"user:{id}\"` or a call of a `#[cached]` \
                 function such as `get_user(id)`",
            )),
        };
    }
    let name = input.call(Ident::parse_any).map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected an argument such as `key = \"user:{id}\"` or `ttl = 300`",
        )
    })?;
    if !input.peek(Token![=]) {
        let msg = if input.peek(Token![::]) {
            format!("unexpected path; expected `{name} = value`")
        } else {
            format!("expected `=` after `{name}`: arguments are written `{name} = value`")
        };
        return Err(syn::Error::new(name.span(), msg));
    }
    input.parse::<Token![=]>()?;
    if input.is_empty() || input.peek(Token![,]) {
        return Err(syn::Error::new(
            name.span(),
            format!("missing value after `{name} =`"),
        ));
    }
    let value: Expr = input.parse()?;
    Ok(RawArg::Named(name, value))
}

fn skip_to_comma(input: ParseStream) -> syn::Result<()> {
    input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, proc_macro2::TokenTree::Punct(p) if p.as_char() == ',') {
                return Ok(((), rest));
            }
            rest = next;
        }
        Ok(((), rest))
    })
}

/// Strips invisible groups that `macro_rules!` puts around `$x:expr`.
fn ungroup(e: &Expr) -> &Expr {
    match e {
        Expr::Group(g) => ungroup(&g.expr),
        Expr::Paren(p) => ungroup(&p.expr),
        e => e,
    }
}

fn kind_of(e: &Expr) -> &'static str {
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

fn expect_str(name: &Ident, value: &Expr, example: &str, ctxt: &mut Ctxt) -> Option<LitStr> {
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

fn expect_int(
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

fn expect_path(value: &Expr, ctxt: &mut Ctxt) -> Option<Path> {
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

fn expect_shape(value: &Expr, ctxt: &mut Ctxt) -> Option<Shape> {
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
fn expect_positive(
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
fn expect_bool(name: &Ident, value: &Expr, ctxt: &mut Ctxt) -> Option<syn::LitBool> {
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
fn expect_float(name: &Ident, value: &Expr, ctxt: &mut Ctxt) -> Option<f64> {
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
fn expect_tags(name: &Ident, value: &Expr, ctxt: &mut Ctxt) -> Vec<LitStr> {
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
fn expect_fn_path(name: &Ident, value: &Expr, ctxt: &mut Ctxt) -> Option<ExprPath> {
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

/// Records an "unknown argument" error; returns the suggested argument, if any.
fn unknown_argument(
    name: &Ident,
    valid: &[&'static str],
    attr: &str,
    ctxt: &mut Ctxt,
) -> Option<&'static str> {
    let n = name.to_string();
    let mut msg = format!("unknown argument `{n}` for `#[{attr}]`");
    let best = did_you_mean(&n, valid);
    if let Some(best) = best {
        msg.push_str(&format!("; did you mean `{best}`?"));
    }
    let list: Vec<String> = valid.iter().map(|v| format!("`{v}`")).collect();
    msg.push_str(&format!(" (valid arguments: {}", list.join(", ")));
    if attr == "invalidates" {
        msg.push_str(", after the key templates as string literals");
    }
    msg.push(')');
    ctxt.error(name.span(), msg);
    best
}

/// Tracks which arguments were seen, to reject duplicates.
#[derive(Default)]
struct Seen(HashMap<String, ()>);

impl Seen {
    /// Whether `name` is new; records a "duplicate" error otherwise.
    fn first(&mut self, name: &Ident, ctxt: &mut Ctxt) -> bool {
        let n = name.to_string();
        if self.0.insert(n.clone(), ()).is_some() {
            ctxt.error(
                name.span(),
                format!("duplicate argument `{n}`: give it once"),
            );
            false
        } else {
            true
        }
    }
}

/// Handles the arguments common to both attributes; false if `name` is not one.
fn common_arg(name: &Ident, value: &Expr, common: &mut Common, ctxt: &mut Ctxt) -> bool {
    match name.to_string().as_str() {
        "cache" => common.cache = Some(value.clone()),
        "name" => common.name = expect_str(name, value, "\"users.get\"", ctxt),
        "returns" => common.returns = expect_shape(value, ctxt),
        "crate" => common.krate = expect_path(value, ctxt),
        _ => return false,
    }
    true
}

/// Parses `#[cached(...)]` arguments, recording all errors in `ctxt`.
pub fn parse_cached(tokens: TokenStream, ctxt: &mut Ctxt) -> CachedArgs {
    let (raw, syntax_error) = parse_raw(tokens, ctxt);
    let mut args = CachedArgs::default();
    let mut seen = Seen::default();
    let mut key_given = false;
    let mut ttl_given = false;
    for arg in raw {
        let (name, value) = match arg {
            RawArg::Positional(lit) => {
                let msg = match &lit {
                    Lit::Str(s) => format!(
                        "the key template must be named: write `key = {}`",
                        s.token()
                    ),
                    _ => "unexpected literal: arguments are written `name = value`, \
                          as in `key = \"user:{id}\", ttl = 300`"
                        .to_string(),
                };
                ctxt.error(lit.span(), msg);
                // Counts as the key for the "missing key" check.
                key_given |= matches!(lit, Lit::Str(_));
                continue;
            }
            RawArg::Named(name, value) => (name, value),
            RawArg::Call(call) => {
                ctxt.error_spanned(
                    &call,
                    "`#[cached]` takes named arguments, e.g. `key = \"user:{id}\"`; \
                     calls such as `get_user(id)` are typed invalidations, for `#[invalidates]`",
                );
                continue;
            }
        };
        let n = name.to_string();
        if !CACHED_ARGS.contains(&n.as_str()) {
            // A misspelt required argument is not reported as missing too.
            match unknown_argument(&name, CACHED_ARGS, "cached", ctxt) {
                Some("key") => key_given = true,
                Some("ttl") => ttl_given = true,
                _ => {}
            }
            continue;
        }
        if !seen.first(&name, ctxt) {
            continue;
        }
        match n.as_str() {
            "key" => {
                key_given = true;
                args.key = expect_str(&name, &value, "\"user:{id}\"", ctxt);
            }
            "ttl" => {
                ttl_given = true;
                args.ttl = expect_int(&name, &value, "seconds", 300, ctxt);
                if let Some(t) = args.ttl.filter(|t| t.value == 0) {
                    ctxt.error(
                        t.span,
                        "`ttl` must be greater than 0: every entry needs an expiry (in seconds), \
                         e.g. `ttl = 300`",
                    );
                    args.ttl = None;
                }
            }
            "jitter" => args.jitter = expect_int(&name, &value, "seconds", 30, ctxt),
            "negative_ttl" => {
                args.negative_ttl = expect_int(&name, &value, "seconds", 60, ctxt);
            }
            "lock_ms" => {
                args.lock_ms = expect_int(&name, &value, "milliseconds", 5000, ctxt);
                if let Some(l) = args.lock_ms.filter(|l| l.value == 0) {
                    ctxt.error(
                        l.span,
                        "`lock_ms` must be greater than 0: it is how long (in milliseconds) \
                         a loader holds the stampede lease; omit it for the cache's default",
                    );
                    args.lock_ms = None;
                }
            }
            "stale" => {
                args.refresh_args.push(name.clone());
                args.stale = expect_positive(
                    &name,
                    &value,
                    "seconds",
                    60,
                    "`stale` is a grace window in seconds after `ttl` in which a call gets the \
                     stale value at once while one background refresh reloads it; omit it, or \
                     give seconds > 0, e.g. `stale = 60`",
                    ctxt,
                );
            }
            "early_refresh" => {
                args.refresh_args.push(name.clone());
                args.early_refresh = expect_float(&name, &value, ctxt);
            }
            "timeout_ms" => {
                args.refresh_args.push(name.clone());
                args.timeout_ms = expect_positive(
                    &name,
                    &value,
                    "milliseconds",
                    200,
                    "`timeout_ms` is how long (in milliseconds) a call waits for the loader \
                     before it returns the stale value; omit it to always wait, or give \
                     milliseconds > 0, e.g. `timeout_ms = 200`",
                    ctxt,
                );
            }
            "tags" => args.tags = expect_tags(&name, &value, ctxt),
            "cache_if" => args.cache_if = expect_fn_path(&name, &value, ctxt),
            "key_fn" => args.key_fn = expect_bool(&name, &value, ctxt),
            "local_ttl" => {
                args.local_ttl = expect_positive(
                    &name,
                    &value,
                    "seconds",
                    5,
                    "`local_ttl` is how long (in seconds) this process keeps a decoded copy of \
                     a value in its near cache; omit it for no near cache, or give seconds > 0 \
                     and at most `ttl`, e.g. `local_ttl = 5`",
                    ctxt,
                );
            }
            _ => {
                common_arg(&name, &value, &mut args.common, ctxt);
            }
        }
    }
    if let Some(timeout) = args.refresh_args.iter().find(|a| *a == "timeout_ms")
        && !args.refresh_args.iter().any(|a| a == "stale")
    {
        ctxt.error(
            timeout.span(),
            "`timeout_ms` needs `stale = N`: the soft timeout returns the stale value when \
                 the loader runs longer, and without `stale` no entry outlives its `ttl`, so \
                 there is never a stale value to return and the timeout could never apply; \
                 add `stale = N` (grace seconds after `ttl`), or remove `timeout_ms`",
        );
    }
    if let (Some(ttl), Some(local)) = (args.ttl, args.local_ttl)
        && local.value > ttl.value
    {
        ctxt.error(
            local.span,
            format!(
                "`local_ttl = {}` exceeds `ttl = {}`: a near-cache copy must not outlive the \
                 entry it was read from; give `local_ttl` between 1 and ttl",
                local.value, ttl.value
            ),
        );
        args.local_ttl = None;
    }
    if let (Some(ttl), Some(jitter)) = (args.ttl, args.jitter)
        && jitter.value > ttl.value
    {
        ctxt.error(
            jitter.span,
            format!(
                "`jitter = {}` exceeds `ttl = {}`: jitter must be between 0 and ttl \
                 (the stored TTL is uniform in [ttl, ttl + jitter])",
                jitter.value, ttl.value
            ),
        );
    }
    // 100 years, as the runtime's `MAX_ENTRY_LIFE`: far inside what Redis accepts for `PX`.
    const MAX_LIFE_SECS: u64 = 100 * 365 * 24 * 3600;
    if let Some(ttl) = args.ttl {
        let value = |v: Option<Int>| v.map_or(0, |i| i.value);
        let life = ttl
            .value
            .max(value(args.negative_ttl))
            .saturating_add(value(args.jitter))
            .saturating_add(value(args.stale));
        if life > MAX_LIFE_SECS {
            ctxt.error(
                ttl.span,
                format!(
                    "an entry would live {life} s (ttl + jitter + stale): at most \
                     {MAX_LIFE_SECS} s (100 years) is accepted; no cache entry should live \
                     that long"
                ),
            );
        }
    }
    if !syntax_error {
        if !key_given {
            ctxt.error(
                Span::call_site(),
                "missing required argument `key`: add a key template, \
                 e.g. `#[cached(key = \"user:{id}\", ttl = 300)]`",
            );
        }
        if !ttl_given {
            ctxt.error(
                Span::call_site(),
                "missing required argument `ttl`: add a time-to-live in seconds, \
                 e.g. `#[cached(key = \"user:{id}\", ttl = 300)]`",
            );
        }
    }
    args
}

/// Checks the function of a typed invalidation: a plain path (no `<T as ..>::`).
fn typed_call(call: syn::ExprCall, ctxt: &mut Ctxt) -> Option<TypedCall> {
    match ungroup(&call.func) {
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
pub fn parse_invalidates(tokens: TokenStream, ctxt: &mut Ctxt) -> InvalidatesArgs {
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
                    let shown = match ungroup(&value) {
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
                    args.tags = expect_tags(&name, &value, ctxt);
                } else {
                    common_arg(&name, &value, &mut args.common, ctxt);
                }
            }
        }
    }
    if !any_template && !syntax_error {
        ctxt.error(
            Span::call_site(),
            "`#[invalidates]` needs at least one key template to delete, a typed invalidation \
             or `tags = [..]` to void, e.g. `#[invalidates(\"user:{id}\")]`, \
             `#[invalidates(get_user(id))]` or `#[invalidates(tags = [\"org:{org_id}\"])]`",
        );
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn errors(ctxt: Ctxt) -> Vec<String> {
        ctxt.finish()
            .map(|e| e.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    fn cached(tokens: TokenStream) -> (CachedArgs, Vec<String>) {
        let mut ctxt = Ctxt::default();
        let args = parse_cached(tokens, &mut ctxt);
        (args, errors(ctxt))
    }

    fn invalidates(tokens: TokenStream) -> (InvalidatesArgs, Vec<String>) {
        let mut ctxt = Ctxt::default();
        let args = parse_invalidates(tokens, &mut ctxt);
        (args, errors(ctxt))
    }

    #[test]
    fn full_cached() {
        let (a, e) = cached(quote! {
            key = "user:{id}", ttl = 300, jitter = 30, negative_ttl = 0, lock_ms = 2000,
            cache = self.cache, name = "users.get", returns = "result_option",
            crate = ::my::cache_runtime,
        });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.key.unwrap().value(), "user:{id}");
        assert_eq!(a.ttl.unwrap().value, 300);
        assert_eq!(a.jitter.unwrap().value, 30);
        assert_eq!(a.negative_ttl.unwrap().value, 0);
        assert_eq!(a.lock_ms.unwrap().value, 2000);
        assert!(a.common.cache.is_some());
        assert_eq!(a.common.name.unwrap().value(), "users.get");
        assert_eq!(a.common.returns, Some(Shape::ResOpt));
        assert!(a.common.krate.unwrap().leading_colon.is_some());
    }

    #[test]
    fn all_errors_collected() {
        let (_, e) = cached(quote! {
            key = "k", ttl = 0, jitter = "5", tll = 4, key = "x", returns = "maybe", crate = 5
        });
        assert_eq!(e.len(), 6, "{e:?}");
        assert!(e[0].contains("ttl` must be greater than 0"), "{e:?}");
        assert!(e[1].contains("remove the quotes"), "{e:?}");
        assert!(e[2].contains("did you mean `ttl`?"), "{e:?}");
        assert!(e[3].contains("duplicate argument `key`"), "{e:?}");
        assert!(e[4].contains("unknown `returns` value"), "{e:?}");
        assert!(e[5].contains("`crate` expects a path"), "{e:?}");
    }

    #[test]
    fn missing_required() {
        let (_, e) = cached(quote! {});
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("missing required argument `key`"));
        assert!(e[1].contains("missing required argument `ttl`"));
        let (_, e) = cached(quote! { key = "a" });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("`ttl`"));
    }

    #[test]
    fn misspelt_required_argument_is_not_also_missing() {
        let (_, e) = cached(quote! { kye = "a", tll = 5 });
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("unknown argument `kye` for `#[cached]`; did you mean `key`?"));
        assert!(e[1].contains("did you mean `ttl`? (valid arguments: `key`, `ttl`"));
    }

    #[test]
    fn jitter_bounds() {
        let (_, e) = cached(quote! { key = "a", ttl = 10, jitter = 10 });
        assert!(e.is_empty(), "{e:?}");
        let (_, e) = cached(quote! { key = "a", ttl = 10, jitter = 11 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("`jitter = 11` exceeds `ttl = 10`"), "{e:?}");
    }

    #[test]
    fn syntax_errors_recover() {
        let (a, e) = cached(quote! { key = "a", ttl 5, jitter = 1 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("expected `=` after `ttl`"), "{e:?}");
        assert_eq!(a.jitter.unwrap().value, 1);
        let (_, e) = cached(quote! { key = "a" ttl = 5 });
        assert_eq!(e.len(), 1, "{e:?}");
        let (_, e) = cached(quote! { key = , ttl = 5 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("missing value"), "{e:?}");
    }

    #[test]
    fn wrong_kinds() {
        let (_, e) = cached(quote! { key = 5, ttl = 1.5, lock_ms = -1, name = foo });
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("`key` expects a string literal, found an integer"));
        assert!(e[1].contains("found a float"));
        assert!(e[2].contains("cannot be negative"));
        assert!(e[3].contains("`name` expects a string literal, found a path"));
    }

    #[test]
    fn positional_key_in_cached() {
        let (_, e) = cached(quote! { "user:{id}", ttl = 5 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("write `key = \"user:{id}\"`"), "{e:?}");
    }

    #[test]
    fn invalidates_args() {
        let (a, e) = invalidates(quote! { "a:{x}", "b", cache = CACHE, returns = "plain" });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.templates.len(), 2);
        assert_eq!(a.common.returns, Some(Shape::Plain));
        let (_, e) = invalidates(quote! { cache = CACHE });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("at least one key template"), "{e:?}");
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
    fn freshness_args() {
        let (a, e) = cached(quote! {
            key = "u:{id}", ttl = 60, stale = 300, early_refresh = 1.5, timeout_ms = 250,
            tags = ["org:{org}", "users"], cache_if = crate::policy::is_active,
        });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.stale.unwrap().value, 300);
        assert_eq!(a.early_refresh, Some(1.5));
        assert_eq!(a.timeout_ms.unwrap().value, 250);
        let tags: Vec<String> = a.tags.iter().map(LitStr::value).collect();
        assert_eq!(tags, ["org:{org}", "users"]);
        let path = a.cache_if.unwrap().path;
        assert_eq!(quote!(#path).to_string(), "crate :: policy :: is_active");
        let names: Vec<String> = a.refresh_args.iter().map(Ident::to_string).collect();
        assert_eq!(names, ["stale", "early_refresh", "timeout_ms"]);
        let (a, e) = cached(quote! { key = "u", ttl = 60, early_refresh = 2e-1 });
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.early_refresh, Some(0.2));
        let (a, e) = cached(quote! { key = "u", ttl = 60, tags = ["a"] });
        assert!(e.is_empty() && a.refresh_args.is_empty(), "{e:?}");
    }

    #[test]
    fn freshness_zero_values() {
        let (a, e) = cached(quote! { key = "u", ttl = 60, stale = 0 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("`stale = 0` has no meaning"), "{e:?}");
        assert!(e[0].contains("omit it, or give seconds > 0"), "{e:?}");
        assert!(a.stale.is_none());
        let (_, e) = cached(quote! { key = "u", ttl = 60, stale = 5, timeout_ms = 0 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("`timeout_ms = 0` has no meaning"), "{e:?}");
        // `stale = 0` is reported, not also "timeout_ms needs stale".
        let (_, e) = cached(quote! { key = "u", ttl = 60, stale = 0, timeout_ms = 5 });
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn early_refresh_values() {
        for (v, msg) in [
            (quote!(0.0), "`early_refresh = 0.0` has no meaning"),
            (quote!(-1.0), "`early_refresh` must be greater than 0"),
            (quote!(1), "expected a float literal such as `1.0`"),
            (quote!("1.0"), "remove the quotes"),
            (quote!(b), "found a path"),
            (quote!(1e999), "out of range"),
        ] {
            let (a, e) = cached(quote! { key = "u", ttl = 60, early_refresh = #v });
            assert_eq!(e.len(), 1, "{v}: {e:?}");
            assert!(e[0].contains(msg), "{v}: {e:?}");
            assert!(a.early_refresh.is_none());
            // Still counts as a refresh argument (for the parameter checks).
            assert_eq!(a.refresh_args.len(), 1);
        }
        let (_, e) = cached(quote! { key = "u", ttl = 60, early_refresh = 1 });
        assert!(e[0].contains("write `early_refresh = 1.0`"), "{e:?}");
    }

    #[test]
    fn timeout_needs_stale() {
        let (_, e) = cached(quote! { key = "u", ttl = 60, timeout_ms = 200 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("`timeout_ms` needs `stale = N`"), "{e:?}");
        assert!(e[0].contains("add `stale = N`"), "{e:?}");
        let (_, e) = cached(quote! { key = "u", ttl = 60, timeout_ms = 200, stale = 1 });
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn tags_errors() {
        let (a, e) = cached(quote! { key = "u", ttl = 60, tags = "org:{id}" });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("write `tags = [\"org:{id}\"]`"), "{e:?}");
        assert!(a.tags.is_empty());
        let (a, e) = cached(quote! { key = "u", ttl = 60, tags = ["a", 5, b, "a", "c"] });
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("found an integer"), "{e:?}");
        assert!(e[1].contains("found a path"), "{e:?}");
        assert!(e[2].contains("duplicate tag \"a\""), "{e:?}");
        // The string literals are still checked as templates.
        assert_eq!(a.tags.len(), 2);
        let (_, e) = cached(quote! { key = "u", ttl = 60, tags = [] });
        assert!(e[0].contains("lists no tag"), "{e:?}");
        let (_, e) = cached(quote! { key = "u", ttl = 60, tags = users });
        assert!(e[0].contains("expects a list of string literals"), "{e:?}");
    }

    #[test]
    fn cache_if_errors() {
        let (_, e) = cached(quote! { key = "u", ttl = 60, cache_if = "keep" });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("remove the quotes, `cache_if = keep`"),
            "{e:?}"
        );
        let (_, e) = cached(quote! { key = "u", ttl = 60, cache_if = |v: &u64| *v > 0 });
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("found a closure"), "{e:?}");
        let (_, e) = cached(quote! { key = "u", ttl = 60, cache_if = 5 });
        assert!(e[0].contains("found an integer"), "{e:?}");
        let (a, e) = cached(quote! { key = "u", ttl = 60, cache_if = <T as Policy>::keep });
        assert!(e.is_empty() && a.cache_if.is_some(), "{e:?}");
    }

    #[test]
    fn freshness_duplicates_and_typos() {
        let (_, e) = cached(quote! {
            key = "u", ttl = 60, stale = 1, stale = 2, tags = ["a"], tags = ["b"], stael = 5
        });
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("duplicate argument `stale`"), "{e:?}");
        assert!(e[1].contains("duplicate argument `tags`"), "{e:?}");
        assert!(e[2].contains("did you mean `stale`?"), "{e:?}");
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
