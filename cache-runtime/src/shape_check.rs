//! A compile-time check behind `#[cached]`'s inferred plain shape (used by the expansion
//! only; not a stable API).
//!
//! The macro reads the shape from the return type's *name* (`Result`, `..Result<..>`,
//! `Option`). An alias such as `type Answer = Result<User, ApiError>` looks plain, and with a
//! serde-able error the plain shape compiles and caches `Err` as a value for the full TTL.
//! When the shape is inferred as plain, the expansion therefore emits, in dead code:
//!
//! ```ignore
//! use __private::PlainFallback as _;
//! __private::expect_plain(__private::Probe::<ReturnType>::new().__cache_shape_kind());
//! ```
//!
//! Method resolution prefers an inherent method to a trait method at the same autoref step,
//! so `__cache_shape_kind()` is [`IsResult`] / [`IsOption`] when `ReturnType` resolves to
//! `core::result::Result<_, _>` / `core::option::Option<_>`, and [`IsPlain`] (the trait's
//! fallback) otherwise. [`expect_plain`] accepts only [`IsPlain`]. In a generic function the
//! return type is a type parameter, which matches neither inherent impl: plain, silently.
//! The method has an unusual name so that a user's blanket trait with a `kind` method in scope
//! cannot take precedence over (by-value receiver) or be ambiguous with the fallback.

use std::marker::PhantomData;

/// Carries the return type `R` for method resolution; never built at run time.
pub struct Probe<R>(PhantomData<fn() -> R>);

impl<R> Probe<R> {
    /// A probe for `R`.
    #[allow(clippy::new_without_default)]
    #[inline]
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

/// The return type resolves to `Result<_, _>`.
pub struct IsResult;
/// The return type resolves to `Option<_>`.
pub struct IsOption;
/// The return type is neither (or is generic).
pub struct IsPlain;

impl<T, E> Probe<Result<T, E>> {
    /// Chosen over [`PlainFallback::__cache_shape_kind`] because inherent methods come first.
    #[inline]
    pub fn __cache_shape_kind(&self) -> IsResult {
        IsResult
    }
}

impl<T> Probe<Option<T>> {
    /// Chosen over [`PlainFallback::__cache_shape_kind`] because inherent methods come first.
    #[inline]
    pub fn __cache_shape_kind(&self) -> IsOption {
        IsOption
    }
}

/// The fallback `__cache_shape_kind()` for every other return type.
pub trait PlainFallback {
    /// [`IsPlain`].
    #[inline]
    fn __cache_shape_kind(&self) -> IsPlain {
        IsPlain
    }
}

impl<R> PlainFallback for Probe<R> {}

impl<T, E> Probe<Result<T, E>> {
    /// `#[invalidates]` on a return type inferred as plain that resolves to a `Result` (an
    /// alias such as `type Outcome = Result<(), E>`): success is `Ok`. Chosen over
    /// [`SucceededFallback::__cache_succeeded`] because inherent methods come first.
    #[inline]
    pub fn __cache_succeeded(&self, r: &Result<T, E>) -> bool {
        r.is_ok()
    }
}

/// The fallback `__cache_succeeded()`: any other return value is a success.
pub trait SucceededFallback<R> {
    /// Always true.
    #[inline]
    fn __cache_succeeded(&self, _: &R) -> bool {
        true
    }
}

impl<R> SucceededFallback<R> for Probe<R> {}

/// Implemented only for [`IsPlain`]: the return type really is plain.
#[diagnostic::on_unimplemented(
    message = "the return type is a `Result` (or `Option`) behind an alias, but `#[cached]` inferred the plain shape",
    label = "this type resolves to `Result<_, _>` or `Option<_>`",
    note = "with the plain shape `#[cached]` would cache `Err` (or `None`) as a value for the full TTL",
    note = "add `returns = \"result\"` (or `\"option\"`, `\"result_option\"`) to `#[cached(..)]`; `returns = \"plain\"` caches it as a value on purpose"
)]
pub trait PlainShape {}

impl PlainShape for IsPlain {}

/// Compiles only when `K` is [`IsPlain`].
#[inline]
pub fn expect_plain<K: PlainShape>(_: K) {}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = Result<u8, ()>;

    fn name<K>(_: K) -> &'static str {
        std::any::type_name::<K>().rsplit("::").next().unwrap_or("")
    }

    #[test]
    fn probe_sees_through_aliases() {
        assert_eq!(
            name(Probe::<Answer>::new().__cache_shape_kind()),
            "IsResult"
        );
        assert_eq!(
            name(Probe::<Option<u8>>::new().__cache_shape_kind()),
            "IsOption"
        );
        assert_eq!(name(Probe::<u8>::new().__cache_shape_kind()), "IsPlain");
        assert_eq!(
            name(Probe::<Vec<Answer>>::new().__cache_shape_kind()),
            "IsPlain"
        );
        expect_plain(Probe::<String>::new().__cache_shape_kind());
        assert!(!Probe::<Answer>::new().__cache_succeeded(&Err(())));
        assert!(Probe::<Answer>::new().__cache_succeeded(&Ok(1)));
        assert!(Probe::<u8>::new().__cache_succeeded(&7));
    }

    fn generic<T>() -> &'static str {
        name(Probe::<T>::new().__cache_shape_kind())
    }

    #[test]
    fn generic_return_types_are_plain() {
        assert_eq!(generic::<Answer>(), "IsPlain");
    }
}
