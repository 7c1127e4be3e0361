//! The key alphabet: which characters an encoded key part may contain. The one definition in
//! the runtime (the encoder in `key.rs` and the policy checker's automaton in `policy.rs` read
//! it); the macro's template check (`cache-macros/src/alphabet.rs`) has its own copy, and a
//! test there includes this file and pins that both agree on every `char`.
//!
//! This file depends on nothing (not even `crate::`), so that it can be included elsewhere.
//!
//! An encoded part is a sequence of units: a plain character written as it is, an escape
//! `%XX` (two upper-case hex digits) for any other byte, or `~` (`None`, and the start of
//! `~h<hex>`, the hash of an over-long part).

/// Starts an escape `%XX`.
pub(crate) const ESCAPE: char = '%';

/// The encoding of `None` (and the first character of a hashed part).
pub(crate) const NONE: char = '~';

/// `[A-Za-z0-9_.]`: written unencoded; every other byte becomes an escape.
#[inline]
pub(crate) const fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// `[0-9A-F]`: a digit of an escape.
#[inline]
pub(crate) const fn is_escape_digit(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, 'A'..='F')
}

/// Whether an encoded part may contain `c`: a plain character, [`ESCAPE`] or [`NONE`]
/// (`[A-Za-z0-9_.%~]`). A literal separator between two placeholders needs a character
/// outside this set, or two different argument tuples could render the same key. (The
/// runtime's tests pin that every built-in encoding stays inside it; the macro's separator
/// check uses its copy, pinned to this one.)
#[cfg_attr(not(test), allow(dead_code))]
#[inline]
pub(crate) const fn is_part_char(c: char) -> bool {
    is_plain(c) || c == ESCAPE || c == NONE
}
