//! The error collector every stage reports into (in the manner of serde_derive's
//! `internals/ctxt.rs`): errors are collected, not returned at the first one, so one compile
//! shows every bad argument, and they are combined into one `syn::Error` at the end.
//!
//! A `Ctxt` must be checked: dropping one whose errors were not taken with [`Ctxt::check`]
//! panics (outside of an unwinding panic), so no stage can forget to report what it recorded.

use proc_macro2::Span;

/// Collects errors so that all of them are reported in one compile.
pub(crate) struct Ctxt {
    /// `None` once [`check`](Ctxt::check) took them.
    errors: Option<Vec<syn::Error>>,
}

impl Ctxt {
    /// A collector with no error yet; it must be consumed with [`check`](Ctxt::check).
    pub(crate) fn new() -> Self {
        Ctxt {
            errors: Some(Vec::new()),
        }
    }

    fn errors(&mut self) -> &mut Vec<syn::Error> {
        self.errors.as_mut().expect("Ctxt used after check()")
    }

    /// Records an error.
    pub(crate) fn push(&mut self, e: syn::Error) {
        self.errors().push(e);
    }

    /// Records an error at `span`.
    pub(crate) fn error(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }

    /// Records an error spanning all of `tokens` (from its first to its last
    /// token, also on stable compilers, where spans cannot be joined).
    pub(crate) fn error_spanned(
        &mut self,
        tokens: impl quote::ToTokens,
        msg: impl std::fmt::Display,
    ) {
        self.push(syn::Error::new_spanned(tokens, msg));
    }

    /// Consumes the collector: all errors combined into one, if there were any.
    pub(crate) fn check(mut self) -> Result<(), syn::Error> {
        let mut it = self.errors.take().expect("checked once").into_iter();
        let Some(mut first) = it.next() else {
            return Ok(());
        };
        for e in it {
            first.combine(e);
        }
        Err(first)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if self.errors.is_some() && !std::thread::panicking() {
            panic!(
                "cache-macros: a Ctxt was dropped without check(): its errors were never reported"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_combines_in_order() {
        let mut ctxt = Ctxt::new();
        ctxt.error(Span::call_site(), "first");
        ctxt.error(Span::call_site(), "second");
        let e = ctxt.check().unwrap_err();
        let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs, ["first", "second"]);
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    #[should_panic(expected = "dropped without check()")]
    fn unchecked_drop_panics() {
        let _ctxt = Ctxt::new();
    }
}
