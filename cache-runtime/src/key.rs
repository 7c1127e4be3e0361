//! Rendering key templates: the [`KeyPart`] trait and its injective encoding.
//!
//! Every placeholder value is written with [`KeyPart::write_key_part`]. The built-in
//! implementations percent-encode every byte outside `[A-Za-z0-9_.]`, so a separator such as
//! `:` in the template never appears inside a part and two different argument tuples never
//! render to the same key.

use std::fmt::Write as _;

pub(crate) mod alphabet;

/// A value that can appear in a cache key placeholder such as `{id}`.
///
/// Implementations must be *injective* (two different values never write the same text) and
/// should only write characters in `[A-Za-z0-9_.%~]`; the easiest way is to build the text
/// from the built-in impls or from [`write_encoded`].
///
/// ```
/// use cache_runtime::KeyPart;
///
/// struct TenantId(u32);
///
/// impl KeyPart for TenantId {
///     fn write_key_part(&self, out: &mut String) {
///         self.0.write_key_part(out);
///     }
/// }
///
/// let mut s = String::new();
/// TenantId(7).write_key_part(&mut s);
/// assert_eq!(s, "7");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used in a cache key: it does not implement `KeyPart`",
    label = "this placeholder's value must implement `cache_runtime::KeyPart`",
    note = "implement `cache_runtime::KeyPart` for `{Self}` (write an injective encoding), or use a field of it that does, e.g. `{{arg.id}}`"
)]
pub trait KeyPart {
    /// Appends this value's encoding to `out`.
    fn write_key_part(&self, out: &mut String);
}

/// Bytes written as they are ([`alphabet::is_plain`]); everything else is percent-encoded.
#[inline]
fn is_plain(b: u8) -> bool {
    alphabet::is_plain(char::from(b))
}

/// Appends `s` percent-encoded: bytes outside `[A-Za-z0-9_.]` become `%XX` (upper-case hex).
///
/// ```
/// let mut out = String::new();
/// cache_runtime::write_encoded(&mut out, "a:b c");
/// assert_eq!(out, "a%3Ab%20c");
/// ```
pub fn write_encoded(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = s.as_bytes();
    if bytes.iter().all(|&b| is_plain(b)) {
        out.push_str(s);
        return;
    }
    out.reserve(bytes.len() + 8);
    for &b in bytes {
        if is_plain(b) {
            out.push(b as char);
        } else {
            out.push(alphabet::ESCAPE);
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xF) as usize] as char);
        }
    }
}

impl KeyPart for str {
    fn write_key_part(&self, out: &mut String) {
        write_encoded(out, self);
    }
}

impl KeyPart for String {
    fn write_key_part(&self, out: &mut String) {
        write_encoded(out, self);
    }
}

impl KeyPart for std::borrow::Cow<'_, str> {
    fn write_key_part(&self, out: &mut String) {
        write_encoded(out, self);
    }
}

impl KeyPart for char {
    fn write_key_part(&self, out: &mut String) {
        let mut buf = [0u8; 4];
        write_encoded(out, self.encode_utf8(&mut buf));
    }
}

impl KeyPart for bool {
    fn write_key_part(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

/// Appends the decimal digits of `n` (without `core::fmt`: this runs on every call, and a
/// near-cache hit costs well under a microsecond).
#[inline]
fn push_decimal(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.reserve(buf.len() - i);
    buf[i..].iter().for_each(|&d| out.push(char::from(d)));
}

macro_rules! unsigned_key_part {
    ($($t:ty),*) => {$(
        impl KeyPart for $t {
            #[inline]
            fn write_key_part(&self, out: &mut String) {
                push_decimal(out, u64::from(*self));
            }
        }
    )*};
}
unsigned_key_part!(u8, u16, u32, u64);

impl KeyPart for usize {
    #[inline]
    fn write_key_part(&self, out: &mut String) {
        push_decimal(out, *self as u64);
    }
}

impl KeyPart for u128 {
    fn write_key_part(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = write!(out, "{}", self);
    }
}

macro_rules! signed_key_part {
    ($($t:ty),*) => {$(
        impl KeyPart for $t {
            #[inline]
            fn write_key_part(&self, out: &mut String) {
                // `-` is outside the plain set: encode it like any other byte.
                if *self < 0 {
                    out.push_str("%2D");
                }
                push_decimal(out, self.unsigned_abs() as u64);
            }
        }
    )*};
}
signed_key_part!(i8, i16, i32, i64, isize);

impl KeyPart for i128 {
    fn write_key_part(&self, out: &mut String) {
        if *self < 0 {
            out.push_str("%2D");
        }
        let _ = write!(out, "{}", self.unsigned_abs());
    }
}

impl<T: KeyPart + ?Sized> KeyPart for &T {
    fn write_key_part(&self, out: &mut String) {
        (**self).write_key_part(out);
    }
}

impl<T: KeyPart + ?Sized> KeyPart for &mut T {
    fn write_key_part(&self, out: &mut String) {
        (**self).write_key_part(out);
    }
}

impl<T: KeyPart + ?Sized> KeyPart for Box<T> {
    fn write_key_part(&self, out: &mut String) {
        (**self).write_key_part(out);
    }
}

impl<T: KeyPart + ?Sized> KeyPart for std::sync::Arc<T> {
    fn write_key_part(&self, out: &mut String) {
        (**self).write_key_part(out);
    }
}

impl<T: KeyPart + ?Sized> KeyPart for std::rc::Rc<T> {
    fn write_key_part(&self, out: &mut String) {
        (**self).write_key_part(out);
    }
}

/// `None` is written as `~` (a character no other built-in encoding produces);
/// `Some(v)` as `v`, with one extra leading `~` when `v` itself starts with `~`
/// (nested options), so `None`, `Some(None)` and `Some(Some(x))` stay distinct.
impl<T: KeyPart> KeyPart for Option<T> {
    fn write_key_part(&self, out: &mut String) {
        match self {
            None => out.push(alphabet::NONE),
            Some(v) => {
                let start = out.len();
                v.write_key_part(out);
                if out[start..].starts_with(alphabet::NONE) {
                    out.insert(start, alphabet::NONE);
                }
            }
        }
    }
}

#[cfg(feature = "uuid")]
impl KeyPart for uuid::Uuid {
    fn write_key_part(&self, out: &mut String) {
        let mut buf = uuid::Uuid::encode_buffer();
        // Hyphenated lower-case form; `-` is encoded like any other byte.
        write_encoded(out, self.hyphenated().encode_lower(&mut buf));
    }
}

/// Longest encoded placeholder value kept as is (bytes). A longer one is replaced by
/// `~h` and the first 128 bits of the SHA-256 of its encoding, in lower-case hex (34 bytes
/// in all), which bounds key length. SHA-256 (not a fast non-cryptographic hash) because
/// placeholder values are often user-controlled: with a hash that is not collision
/// resistant, a crafted search string could be made to render another user's key and share
/// their entry. Finding two values with the same truncated digest takes about 2^64 work.
pub const MAX_PART_LEN: usize = 128;

fn hash_tail(s: &mut String, start: usize) {
    use sha2::Digest as _;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = sha2::Sha256::digest(&s.as_bytes()[start..]);
    s.truncate(start);
    s.reserve(34);
    s.push_str("~h");
    for &b in &digest[..16] {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xF) as usize] as char);
    }
}

/// Builds a rendered key from template literals and placeholder values (used by the macros).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct KeyBuf(String);

impl KeyBuf {
    /// An empty buffer.
    #[inline]
    pub fn new() -> Self {
        KeyBuf(String::with_capacity(96))
    }

    /// Appends literal template text.
    #[inline]
    pub fn lit(&mut self, s: &'static str) {
        self.0.push_str(s);
    }

    /// Appends an encoded placeholder value; one longer than [`MAX_PART_LEN`] is replaced
    /// by its hash (see [`MAX_PART_LEN`]).
    #[inline]
    pub fn part<T: KeyPart + ?Sized>(&mut self, v: &T) {
        let start = self.0.len();
        v.write_key_part(&mut self.0);
        if self.0.len() - start > MAX_PART_LEN {
            hash_tail(&mut self.0, start);
        }
    }

    /// The rendered key (without the namespace).
    #[inline]
    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render<T: KeyPart + ?Sized>(v: &T) -> String {
        let mut s = String::new();
        v.write_key_part(&mut s);
        s
    }

    #[test]
    fn encodes_separators_and_unicode() {
        assert_eq!(render("a:b"), "a%3Ab");
        assert_eq!(render("100%"), "100%25");
        assert_eq!(render("{x}"), "%7Bx%7D");
        assert_eq!(render("é"), "%C3%A9");
        assert_eq!(render(""), "");
        assert_eq!(render("A.b_9"), "A.b_9");
    }

    #[test]
    fn encodings_stay_in_the_alphabet() {
        // Every char, alone and as `Some`, encodes to part characters only, and a plain
        // char encodes to itself: the alphabet the macro's separator check relies on.
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            for s in [render(&c), render(&Some(c)), render(&None::<char>)] {
                assert!(s.chars().all(alphabet::is_part_char), "{c:?} -> {s:?}");
            }
            if alphabet::is_plain(c) {
                assert_eq!(render(&c), c.to_string());
            }
        }
    }

    #[test]
    fn integers_and_bools() {
        assert_eq!(render(&-5i32), "%2D5");
        assert_eq!(render(&i64::MIN), "%2D9223372036854775808");
        assert_eq!(render(&42u64), "42");
        assert_eq!(render(&true), "true");
        // The digit loop against `Display` at the edges of every width.
        for n in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            255,
            65_535,
            4_294_967_295,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(render(&n), n.to_string());
        }
        assert_eq!(render(&u8::MAX), "255");
        assert_eq!(render(&0usize), "0");
        assert_eq!(render(&i8::MIN), "%2D128");
        assert_eq!(render(&isize::MAX), isize::MAX.to_string());
        assert_eq!(render(&u128::MAX), u128::MAX.to_string());
        assert_eq!(
            render(&i128::MIN),
            format!("%2D{}", i128::MIN.unsigned_abs())
        );
    }

    #[test]
    fn long_parts_are_hashed() {
        let long_a = "a".repeat(500);
        let long_b = format!("{}b", "a".repeat(499));
        let render_key = |v: &str| {
            let mut k = KeyBuf::new();
            k.lit("p:");
            k.part(v);
            k.finish()
        };
        let (a, b) = (render_key(&long_a), render_key(&long_b));
        assert_eq!(a.len(), 2 + 34);
        assert!(a.starts_with("p:~h"));
        assert_ne!(a, b);
        assert_eq!(a, render_key(&long_a), "stable");
        let short = "x".repeat(MAX_PART_LEN);
        assert_eq!(render_key(&short), format!("p:{short}"));
    }

    #[test]
    fn long_part_hash_is_sha256_truncated() {
        // SHA-256("a" * 500) = 69206a472a1f384259f2c387211f123d...; the key keeps the
        // first 128 bits. A change of algorithm or truncation breaks this test (and every
        // stored key with a long part).
        let mut k = KeyBuf::new();
        k.part("a".repeat(500).as_str());
        assert_eq!(k.finish(), "~h69206a472a1f384259f2c387211f123d");
        // The hash covers the encoded part: "a:" * 100 is hashed as "a%3A" * 100.
        let mut k = KeyBuf::new();
        k.part("a:".repeat(100).as_str());
        let mut expected = String::new();
        write_encoded(&mut expected, &"a:".repeat(100));
        assert_eq!(expected, "a%3A".repeat(100));
        assert_eq!(
            k.finish(),
            format!("~h{}", sha256_128_hex(expected.as_bytes()))
        );
    }

    /// Reference: the first 16 bytes of SHA-256, lower-case hex.
    fn sha256_128_hex(bytes: &[u8]) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(bytes)[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn options_are_distinct() {
        let none: Option<Option<u8>> = None;
        let some_none: Option<Option<u8>> = Some(None);
        let some_some: Option<Option<u8>> = Some(Some(1));
        assert_eq!(render(&none), "~");
        assert_eq!(render(&some_none), "~~");
        assert_eq!(render(&some_some), "1");
        assert_ne!(render(&Some(String::new())), render(&None::<String>));
        assert_eq!(render(&Some("~")), "%7E");
    }
}
