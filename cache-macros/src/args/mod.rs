//! Stage 1: parsing each attribute's arguments into a typed model ([`cached::CachedArgs`],
//! [`invalidates::InvalidatesArgs`]). Parsing only: the syntax, each argument's kind and
//! range, unknown and duplicate arguments. Rules across arguments (`jitter <= ttl`, required
//! arguments, ..) are `valid`'s.
//!
//! Errors are recorded in the [`Ctxt`] and parsing goes on, so a single compile shows every
//! bad argument.

pub(crate) mod cached;
pub(crate) mod invalidates;
mod values;

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt as _;
use syn::parse::{ParseStream, Parser as _};
use syn::{Expr, ExprPath, Ident, Lit, LitStr, Path, Token};

use crate::ctxt::Ctxt;
use crate::shape::Shape;
use crate::suggest::did_you_mean;

/// An integer argument with the span of its literal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int {
    /// The value.
    pub value: u64,
    /// Where it was written.
    pub span: Span,
}

/// Arguments shared by both attributes.
#[derive(Default)]
pub(crate) struct Common {
    /// `cache = expr`.
    pub cache: Option<Expr>,
    /// `name = "..."`.
    pub name: Option<LitStr>,
    /// `returns = "..."`.
    pub returns: Option<Shape>,
    /// `crate = path`.
    pub krate: Option<Path>,
}

/// One comma-separated argument as written.
pub(crate) enum RawArg {
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
pub(crate) fn parse_raw(tokens: TokenStream, ctxt: &mut Ctxt) -> (Vec<RawArg>, bool) {
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

/// Records an "unknown argument" error; returns the suggested argument, if any.
pub(crate) fn unknown_argument(
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
pub(crate) struct Seen(HashMap<String, ()>);

impl Seen {
    /// Whether `name` is new; records a "duplicate" error otherwise.
    pub(crate) fn first(&mut self, name: &Ident, ctxt: &mut Ctxt) -> bool {
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
pub(crate) fn common_arg(name: &Ident, value: &Expr, common: &mut Common, ctxt: &mut Ctxt) -> bool {
    match name.to_string().as_str() {
        "cache" => common.cache = Some(value.clone()),
        "name" => common.name = values::expect_str(name, value, "\"users.get\"", ctxt),
        "returns" => common.returns = values::expect_shape(value, ctxt),
        "crate" => common.krate = values::expect_path(value, ctxt),
        _ => return false,
    }
    true
}
