//! The key alphabet as the template check needs it: which characters an encoded key part may
//! contain. The runtime defines the alphabet (`cache-runtime/src/key/alphabet.rs`, read by its
//! encoder and its policy checker); this is the macro's copy (a proc-macro crate cannot
//! depend on the runtime, and a `#[path]` outside the crate would not survive
//! `cargo package`). The test below includes the runtime's file and pins that both rules
//! agree on every `char`.

/// [`is_part_char`] as a character class, for messages.
pub(crate) const PART_CHARS: &str = "A-Za-z0-9_.%~";

/// Whether an encoded key part may contain `c`: what the runtime writes unencoded
/// (`[A-Za-z0-9_.]`), `%`, which starts an escape, and `~`, its encoding of `None`.
///
/// A literal separator between two placeholders must contain a character outside this set,
/// otherwise the split point between two rendered parts is ambiguous and two different
/// argument tuples can render the same key.
pub(crate) fn is_part_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%' | '~')
}

/// The runtime's definition, compiled into the test below.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../cache-runtime/src/key/alphabet.rs"]
mod runtime;

#[cfg(test)]
mod tests {
    use super::runtime;

    #[test]
    fn agrees_with_the_runtime_on_every_char() {
        let mut count = 0;
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(super::is_part_char(c), runtime::is_part_char(c), "{c:?}");
            count += usize::from(runtime::is_part_char(c));
        }
        // And the class written in messages names exactly those characters.
        assert_eq!(count, 26 + 26 + 10 + 4);
        for c in super::PART_CHARS.chars().filter(|&c| c != '-') {
            assert!(runtime::is_part_char(c), "{c:?}");
        }
    }
}
