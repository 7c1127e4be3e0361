//! The owned arguments of a body that may run in the background: the copies that `valid`
//! decided (`crate::owned`) as code, made by the load closure (which borrows the parameters)
//! just before the body's `async move` block, and rebound first in the block.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt as _;

use crate::owned::{ArgCopy, Owned, ParamCopy, ReceiverCopy};

/// The copies (statements of the load closure) and the rebindings (first statements of the
/// body's block).
pub(super) fn tokens(owned: &Owned) -> (TokenStream, TokenStream) {
    let mut copies = TokenStream::new();
    let mut rebinds = TokenStream::new();
    for copy in &owned.copies {
        match copy {
            ArgCopy::Receiver { kind, span } => {
                let span = *span;
                match kind {
                    ReceiverCopy::Ref => {
                        copies.extend(quote_spanned! {span=>
                            let __cache_self = ::core::clone::Clone::clone(self);
                        });
                        rebinds.extend(quote! {
                            let __cache_this: &Self = &__cache_self;
                        });
                    }
                    ReceiverCopy::TypedRef => {
                        copies.extend(quote_spanned! {span=>
                            let __cache_self = ::core::clone::Clone::clone(self);
                        });
                        rebinds.extend(quote! {
                            let __cache_this = &__cache_self;
                        });
                    }
                    ReceiverCopy::Value(mutability) => {
                        copies.extend(quote_spanned! {span=>
                            let __cache_self = ::core::clone::Clone::clone(&self);
                        });
                        rebinds.extend(quote! {
                            let #mutability __cache_this = __cache_self;
                        });
                    }
                }
            }
            ArgCopy::Param {
                param,
                at_type: x,
                mutability,
                how,
            } => {
                let span = x.span();
                let name = param.unraw();
                match how {
                    ParamCopy::ToOwned(elem) => {
                        let own = format_ident!("__cache_own_{}", name);
                        copies.extend(quote_spanned! {span=>
                            let #own = ::std::borrow::ToOwned::to_owned(#x);
                        });
                        rebinds.extend(quote! {
                            let #mutability #param: &'_ #elem = ::core::borrow::Borrow::borrow(&#own);
                        });
                    }
                    ParamCopy::Clone => {
                        let arg = format_ident!("__cache_arg_{}", name);
                        copies.extend(quote_spanned! {span=>
                            let #arg = ::core::clone::Clone::clone(&#x);
                        });
                        rebinds.extend(quote! {
                            let #mutability #param = #arg;
                        });
                    }
                }
            }
        }
    }
    (copies, rebinds)
}
