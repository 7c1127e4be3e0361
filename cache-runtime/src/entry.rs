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
//! | 24.. | payload: serialized value (value), empty (negative), lease token (lease) |

use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: u8 = 0xCA;
/// The envelope format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
const HEADER: usize = 24;

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

/// A decoded view of stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// What the entry holds.
    pub kind: Kind,
    /// When it was stored (unix ms).
    pub stored_at_ms: u64,
    /// Until when it is fresh (unix ms).
    pub fresh_until_ms: u64,
    /// How long the loader took (ms).
    pub load_ms: u32,
    /// The codec id the payload was written with.
    pub codec: u8,
    /// The payload bytes.
    pub payload: &'a [u8],
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

/// Starts an envelope of `kind`; the caller appends the payload.
pub fn begin(
    kind: Kind,
    codec: u8,
    stored_at_ms: u64,
    fresh_until_ms: u64,
    load_ms: u32,
    payload_hint: usize,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload_hint);
    v.push(MAGIC);
    v.push(FORMAT_VERSION);
    v.push(kind.byte());
    v.push(codec);
    v.extend_from_slice(&stored_at_ms.to_le_bytes());
    v.extend_from_slice(&fresh_until_ms.to_le_bytes());
    v.extend_from_slice(&load_ms.to_le_bytes());
    v
}

/// A new lease envelope with a random token.
pub fn new_lease(lock_ms: u64) -> Vec<u8> {
    let now = now_ms();
    let mut v = begin(Kind::Lease, 0, now, now.saturating_add(lock_ms), 0, 16);
    v.extend_from_slice(&rand::random::<u128>().to_le_bytes());
    v
}

/// Reads the envelope header of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, DecodeError> {
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
    Ok(Envelope {
        kind,
        codec: bytes[3],
        stored_at_ms: u64_at(4),
        fresh_until_ms: u64_at(12),
        load_ms: u32::from_le_bytes(l),
        payload: &bytes[HEADER..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut v = begin(Kind::Value, 0, 10, 20, 3, 2);
        v.extend_from_slice(b"42");
        let e = decode(&v).unwrap();
        assert_eq!(e.kind, Kind::Value);
        assert_eq!((e.stored_at_ms, e.fresh_until_ms, e.load_ms), (10, 20, 3));
        assert_eq!(e.payload, b"42");
    }

    #[test]
    fn rejects_garbage_and_other_versions() {
        assert_eq!(decode(b"hello"), Err(DecodeError::NotAnEnvelope));
        assert_eq!(decode(&[0u8; 40]), Err(DecodeError::NotAnEnvelope));
        let mut v = begin(Kind::Value, 0, 1, 2, 3, 0);
        v[1] = 9;
        assert_eq!(decode(&v), Err(DecodeError::Version(9)));
    }

    #[test]
    fn leases_are_unique() {
        assert_ne!(new_lease(100), new_lease(100));
        assert_eq!(decode(&new_lease(100)).unwrap().kind, Kind::Lease);
    }
}
