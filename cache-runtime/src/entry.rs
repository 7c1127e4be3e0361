//! The stored envelope: everything about one entry lives in one key's value.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | magic `0xCA` |
//! | 1 | format version (1) |
//! | 2 | kind: 1 value, 2 negative, 3 lease |
//! | 3 | codec of the payload (see [`Codec`](crate::Codec)) |
//! | 4..12 | stored-at, unix ms |
//! | 12..20 | fresh-until, unix ms |
//! | 20..24 | the loader's duration, ms |
//! | 24..32 | type tag: a hash of the stored Rust type's name (0 for leases) |
//! | 32.. | payload: serialized value (value), empty (negative), lease token (lease) |
//!
//! The type tag keeps two functions (or two instantiations of a generic function) that
//! render the same key from decoding each other's values: a mismatch is a miss.

use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: u8 = 0xCA;
/// The envelope format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the fixed header in bytes.
pub(crate) const HEADER: usize = 32;

/// What an envelope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A cached value.
    Value,
    /// A cached "not found" (`None` / `Ok(None)`).
    Negative,
    /// A loader's lease: somebody is loading this key.
    Lease,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Value => 1,
            Kind::Negative => 2,
            Kind::Lease => 3,
        }
    }
}

/// The fixed-size header of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the entry holds.
    pub kind: Kind,
    /// The codec id the payload was written with.
    pub codec: u8,
    /// When it was stored (unix ms).
    pub stored_at_ms: u64,
    /// Until when it is fresh (unix ms).
    pub fresh_until_ms: u64,
    /// How long the loader took (ms).
    pub load_ms: u32,
    /// Hash of the stored type's name ([`type_tag`]).
    pub type_tag: u64,
}

impl Header {
    /// The header bytes, with room for `payload_hint` more bytes.
    pub fn begin(&self, payload_hint: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + payload_hint);
        v.push(MAGIC);
        v.push(FORMAT_VERSION);
        v.push(self.kind.byte());
        v.push(self.codec);
        v.extend_from_slice(&self.stored_at_ms.to_le_bytes());
        v.extend_from_slice(&self.fresh_until_ms.to_le_bytes());
        v.extend_from_slice(&self.load_ms.to_le_bytes());
        v.extend_from_slice(&self.type_tag.to_le_bytes());
        v
    }

    /// Writes the header over the first [`HEADER`] bytes of `buf` (a buffer made by
    /// [`reserve`], with the payload after it).
    pub(crate) fn write_over(&self, buf: &mut [u8]) {
        let h = self.begin(0);
        if let Some(dst) = buf.get_mut(..HEADER) {
            dst.copy_from_slice(&h);
        }
    }
}

/// A buffer with room for a header (zeroed, see [`Header::write_over`]) and `payload_hint`
/// payload bytes after it.
pub(crate) fn reserve(payload_hint: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload_hint);
    v.resize(HEADER, 0);
    v
}

/// Why stored bytes could not be read as an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not an envelope at all (foreign or corrupt bytes).
    NotAnEnvelope,
    /// An envelope written by another format version.
    Version(u8),
}

/// Current unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A stable tag for the type `T` stored in an envelope.
pub fn type_tag<T: ?Sized>() -> u64 {
    xxhash_rust::xxh3::xxh3_64(std::any::type_name::<T>().as_bytes())
}

/// A new lease envelope with a random token.
pub fn new_lease(lock_ms: u64) -> Vec<u8> {
    let now = now_ms();
    let mut v = Header {
        kind: Kind::Lease,
        codec: 0,
        stored_at_ms: now,
        fresh_until_ms: now.saturating_add(lock_ms),
        load_ms: 0,
        type_tag: 0,
    }
    .begin(16);
    v.extend_from_slice(&rand::random::<u128>().to_le_bytes());
    v
}

/// Reads the header of `bytes`; returns it with the payload.
pub fn decode(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    if bytes.len() < HEADER || bytes[0] != MAGIC {
        return Err(DecodeError::NotAnEnvelope);
    }
    if bytes[1] != FORMAT_VERSION {
        return Err(DecodeError::Version(bytes[1]));
    }
    let kind = match bytes[2] {
        1 => Kind::Value,
        2 => Kind::Negative,
        3 => Kind::Lease,
        _ => return Err(DecodeError::NotAnEnvelope),
    };
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let mut l = [0u8; 4];
    l.copy_from_slice(&bytes[20..24]);
    let header = Header {
        kind,
        codec: bytes[3],
        stored_at_ms: u64_at(4),
        fresh_until_ms: u64_at(12),
        load_ms: u32::from_le_bytes(l),
        type_tag: u64_at(24),
    };
    Ok((header, &bytes[HEADER..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            codec: 1,
            stored_at_ms: 10,
            fresh_until_ms: 20,
            load_ms: 3,
            type_tag: type_tag::<String>(),
        }
    }

    #[test]
    fn round_trip() {
        let h = header(Kind::Value);
        let mut v = h.begin(2);
        v.extend_from_slice(b"42");
        let (back, payload) = decode(&v).unwrap();
        assert_eq!(back, h);
        assert_eq!(payload, b"42");
    }

    #[test]
    fn rejects_garbage_and_other_versions() {
        assert_eq!(decode(b"hello"), Err(DecodeError::NotAnEnvelope));
        assert_eq!(decode(&[0u8; 40]), Err(DecodeError::NotAnEnvelope));
        let mut v = header(Kind::Value).begin(0);
        v[1] = 9;
        assert_eq!(decode(&v), Err(DecodeError::Version(9)));
        let mut v = header(Kind::Value).begin(0);
        v[2] = 7;
        assert_eq!(decode(&v), Err(DecodeError::NotAnEnvelope));
        assert_eq!(decode(&v[..HEADER - 1]), Err(DecodeError::NotAnEnvelope));
    }

    #[test]
    fn leases_are_unique_and_types_are_told_apart() {
        assert_ne!(new_lease(100), new_lease(100));
        assert_eq!(decode(&new_lease(100)).unwrap().0.kind, Kind::Lease);
        assert_ne!(type_tag::<u16>(), type_tag::<u64>());
    }
}
