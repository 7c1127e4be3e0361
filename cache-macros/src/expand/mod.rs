//! Stage 3: code generation. The generated code is small: it renders the key(s) from
//! borrowed arguments and calls one runtime entry point (`__private::cached`,
//! `cached_refresh` or `invalidate`); all logic lives in the runtime.
//!
//! [`cached()`] and [`invalidates()`] run the pipeline: `args` (parse) → `valid` (rules,
//! signature) → the expander of the attribute ([`cached::expand`], [`invalidates::expand`]),
//! each leaving through [`emit::emit`].
//! `render` turns templates into key-rendering code, `owned` the copies a refreshing body
//! owns, `policy` emits the registered descriptions and typed invalidation's key functions.

mod cached;
mod emit;
mod invalidates;
mod owned;
mod policy;
mod render;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;
use crate::{args, target, valid};

/// Expands `#[cached(args)] item`.
pub(crate) fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut ctxt = Ctxt::new();
    let mut args = args::cached::parse(args, &mut ctxt);
    valid::cached_args(&mut args, &mut ctxt);
    let func = target::parse_fn(&item, "cached", &mut ctxt);
    let checked = func
        .as_ref()
        .and_then(|func| valid::cached(args, func, &mut ctxt));
    emit::emit(item, ctxt, || checked.as_ref().map(cached::expand))
}

/// Expands `#[invalidates(args)] item`.
pub(crate) fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut ctxt = Ctxt::new();
    let args = args::invalidates::parse(args, &mut ctxt);
    valid::invalidates_args(&args, &mut ctxt);
    let func = target::parse_fn(&item, "invalidates", &mut ctxt);
    let checked = func
        .as_ref()
        .and_then(|func| valid::invalidates(args, func, &mut ctxt));
    emit::emit(item, ctxt, || checked.as_ref().map(invalidates::expand))
}

#[cfg(test)]
mod tests;
