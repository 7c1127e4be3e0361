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
//! A value or negative entry that is being refreshed in the background (stale-while-revalidate,
//! early refresh) carries a refresh lease: bit `0x80` is set in the kind byte and a 24-byte
//! trailer follows the payload: the lease token (16 bytes) and the time it runs out (unix ms,
//! 8 bytes big-endian, so that two times compare as byte strings, which the Lua scripts do).
//! Readers ignore the trailer; only the refresh protocol reads it.
//!
//! The type tag keeps two functions (or two instantiations of a generic function) that
//! render the same key from decoding each other's values: a mismatch is a miss.

use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: u8 = 0xCA;
/// The envelope format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// Length of the fixed header in bytes.
pub(crate) const HEADER: usize = 32;
/// Bit of the kind byte set when a refresh lease trailer follows the payload.
pub(crate) const REFRESHING: u8 = 0x80;
/// Length of the refresh lease trailer: token (16) + runs-out-at (8, big-endian).
pub(crate) const TRAILER: usize = 24;

/// What an envelope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
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
pub(crate) struct Header {
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
    /// When the entry's refresh lease runs out (unix ms); 0 when nobody refreshes it.
    /// Read by [`decode`]; [`Header::begin`] never writes a refresh lease.
    pub refresh_until_ms: u64,
}

impl Header {
    /// The header bytes, with room for `payload_hint` more bytes.
    pub(crate) fn begin(&self, payload_hint: usize) -> Vec<u8> {
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
pub(crate) enum DecodeError {
    /// Not an envelope at all (foreign or corrupt bytes).
    NotAnEnvelope,
    /// An envelope written by another format version.
    Version(u8),
}

/// Current unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A stable tag for the type `T` stored in an envelope.
pub(crate) fn type_tag<T: ?Sized>() -> u64 {
    xxhash_rust::xxh3::xxh3_64(std::any::type_name::<T>().as_bytes())
}

/// A new lease envelope with a random token.
pub(crate) fn new_lease(lock_ms: u64) -> Vec<u8> {
    let now = now_ms();
    let mut v = Header {
        kind: Kind::Lease,
        codec: 0,
        stored_at_ms: now,
        fresh_until_ms: now.saturating_add(lock_ms),
        load_ms: 0,
        type_tag: 0,
        refresh_until_ms: 0,
    }
    .begin(16);
    v.extend_from_slice(&rand::random::<u128>().to_le_bytes());
    v
}

/// Reads the header of `bytes`; returns it with the payload.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    if bytes.len() < HEADER || bytes[0] != MAGIC {
        return Err(DecodeError::NotAnEnvelope);
    }
    if bytes[1] != FORMAT_VERSION {
        return Err(DecodeError::Version(bytes[1]));
    }
    let refreshing = bytes[2] & REFRESHING != 0;
    let kind = match bytes[2] & !REFRESHING {
        1 => Kind::Value,
        2 => Kind::Negative,
        3 if !refreshing => Kind::Lease,
        _ => return Err(DecodeError::NotAnEnvelope),
    };
    let (end, refresh_until_ms) = if refreshing {
        if bytes.len() < HEADER + TRAILER {
            return Err(DecodeError::NotAnEnvelope);
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[bytes.len() - 8..]);
        (bytes.len() - TRAILER, u64::from_be_bytes(b))
    } else {
        (bytes.len(), 0)
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
        refresh_until_ms,
    };
    Ok((header, &bytes[HEADER..end]))
}

/// A new refresh lease token.
pub(crate) fn new_token() -> [u8; 16] {
    rand::random::<u128>().to_le_bytes()
}

/// Takes a refresh lease on the value or negative entry `cur` (the same steps as the Redis
/// backend's Lua script): only if `cur` is still the version stored at `stored_at` and no
/// other refresh lease runs past `now_ms`. Returns the new bytes, or `None` when not taken.
pub(crate) fn embed_refresh(
    cur: &[u8],
    token: &[u8],
    stored_at: &[u8],
    now_ms: u64,
    until_ms: u64,
) -> Option<Vec<u8>> {
    if cur.len() < HEADER || cur[0] != MAGIC || cur[1] != FORMAT_VERSION {
        return None;
    }
    let mut kind = cur[2];
    if kind & !REFRESHING == 3 || cur.get(4..12) != Some(stored_at) {
        return None;
    }
    let mut body = cur;
    if kind & REFRESHING != 0 {
        if cur.len() < HEADER + TRAILER || cur[cur.len() - 8..] > now_ms.to_be_bytes()[..] {
            return None;
        }
        body = &cur[..cur.len() - TRAILER];
        kind &= !REFRESHING;
    }
    let mut v = Vec::with_capacity(body.len() + TRAILER);
    v.extend_from_slice(body);
    v[2] = kind | REFRESHING;
    v.extend_from_slice(token);
    v.extend_from_slice(&until_ms.to_be_bytes());
    Some(v)
}

/// Whether `cur` carries the refresh lease `token`.
pub(crate) fn holds_refresh(cur: &[u8], token: &[u8]) -> bool {
    cur.len() >= HEADER + TRAILER
        && cur[2] & REFRESHING != 0
        && cur[cur.len() - TRAILER..cur.len() - 8] == *token
}

/// Whether `cur` carries the refresh lease `token` and it has not run out at `now_ms` (a
/// refresh that outlived its lease may no longer store: its tag memberships may be gone).
pub(crate) fn holds_live_refresh(cur: &[u8], token: &[u8], now_ms: u64) -> bool {
    holds_refresh(cur, token) && cur[cur.len() - 8..] >= now_ms.to_be_bytes()[..]
}

/// `cur` with its refresh lease `token` running out at `until_ms` instead, if it carries that
/// lease and it has not run out at `now_ms` (the same steps as the Redis backend's Lua script).
pub(crate) fn renew_refresh(
    cur: &[u8],
    token: &[u8],
    now_ms: u64,
    until_ms: u64,
) -> Option<Vec<u8>> {
    if !holds_live_refresh(cur, token, now_ms) {
        return None;
    }
    let mut v = cur.to_vec();
    let at = v.len() - 8;
    v[at..].copy_from_slice(&until_ms.to_be_bytes());
    Some(v)
}

/// `cur` without its refresh lease, if it carries `token`.
pub(crate) fn strip_refresh(cur: &[u8], token: &[u8]) -> Option<Vec<u8>> {
    if !holds_refresh(cur, token) {
        return None;
    }
    let mut v = cur[..cur.len() - TRAILER].to_vec();
    v[2] &= !REFRESHING;
    Some(v)
}

/// A grace window with at most this much left when `Cache::expire` runs is none: the key is
/// deleted. It absorbs the millisecond rounding between the writer's clock (fresh-until) and
/// the store's (the key's TTL), which would otherwise leave an entry without a grace window
/// alive for a millisecond or two.
pub(crate) const EXPIRE_SLACK_MS: u64 = 10;

/// What `Cache::expire` leaves of `cur` at `now_ms` (the same steps as the Redis backend's
/// Lua script): a value or negative entry becomes stale (fresh-until at most `now_ms - 1`)
/// and loses its refresh lease (a refresh that started before cannot store its result); the
/// second element is how much earlier the key must now expire (the freshness it lost), so
/// that it lives only for its grace window. `None`: delete the key (a lease, whose load must
/// not store either, or foreign bytes).
pub(crate) fn expire_bytes(cur: &[u8], now_ms: u64) -> Option<(Vec<u8>, u64)> {
    let (h, _) = decode(cur).ok()?;
    if h.kind == Kind::Lease {
        return None;
    }
    let mut v = if cur[2] & REFRESHING != 0 {
        cur[..cur.len() - TRAILER].to_vec()
    } else {
        cur.to_vec()
    };
    v[2] &= !REFRESHING;
    let stale = h.fresh_until_ms.min(now_ms.saturating_sub(1));
    v[12..20].copy_from_slice(&stale.to_le_bytes());
    Some((v, h.fresh_until_ms - stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expire_bytes`: a fresh value becomes stale keeping its payload, an already stale one
    /// keeps its (earlier) fresh-until, a refresh lease is dropped, a lease or foreign bytes
    /// are deleted.
    #[test]
    fn expire_makes_an_entry_stale_and_voids_its_refresh() {
        let mut fresh = Header {
            fresh_until_ms: 1_000,
            ..header(Kind::Value)
        }
        .begin(2);
        fresh.extend_from_slice(b"42");
        let (out, earlier) = expire_bytes(&fresh, 500).unwrap();
        let (h, payload) = decode(&out).unwrap();
        assert_eq!(
            (h.kind, h.fresh_until_ms, payload),
            (Kind::Value, 499, &b"42"[..])
        );
        assert_eq!(earlier, 501, "the key loses the freshness it had left");
        assert_eq!(h.stored_at_ms, 10, "the version stays");
        // Already stale: unchanged, and its expiry too.
        let (out, earlier) = expire_bytes(&fresh, 5_000).unwrap();
        assert_eq!(
            (decode(&out).unwrap().0.fresh_until_ms, earlier),
            (1_000, 0)
        );
        // A refreshing entry loses its lease.
        let leased = embed_refresh(&fresh, &[7; 16], &10u64.to_le_bytes(), 0, 9_999).unwrap();
        let (out, _) = expire_bytes(&leased, 500).unwrap();
        let (h, payload) = decode(&out).unwrap();
        assert_eq!((h.refresh_until_ms, payload), (0, &b"42"[..]));
        assert!(!holds_refresh(&out, &[7; 16]));
        let neg = header(Kind::Negative).begin(0);
        assert_eq!(
            decode(&expire_bytes(&neg, 5).unwrap().0).unwrap().0.kind,
            Kind::Negative
        );
        assert_eq!(expire_bytes(&new_lease(1000), 500), None);
        assert_eq!(expire_bytes(b"garbage", 500), None);
    }

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            codec: 1,
            stored_at_ms: 10,
            fresh_until_ms: 20,
            load_ms: 3,
            type_tag: type_tag::<String>(),
            refresh_until_ms: 0,
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

    #[test]
    fn refresh_lease_round_trip() {
        let mut v = header(Kind::Value).begin(2);
        v.extend_from_slice(b"42");
        // The version a caller read, as the hit path passes it (from the decoded header).
        let at = decode(&v).unwrap().0.stored_at_ms.to_le_bytes().to_vec();
        assert_eq!(&at[..], &v[4..12]);
        let t1 = [1u8; 16];
        let leased = embed_refresh(&v, &t1, &at, 100, 200).unwrap();
        let (h, payload) = decode(&leased).unwrap();
        assert_eq!(
            (h.kind, h.refresh_until_ms, payload),
            (Kind::Value, 200, &b"42"[..])
        );
        assert!(holds_refresh(&leased, &t1));
        assert!(holds_live_refresh(&leased, &t1, 200) && !holds_live_refresh(&leased, &t1, 201));
        // A second refresher is refused while the lease runs, and may take it once it ran out.
        let t2 = [2u8; 16];
        assert_eq!(embed_refresh(&leased, &t2, &at, 150, 300), None);
        let retaken = embed_refresh(&leased, &t2, &at, 201, 300).unwrap();
        assert!(holds_refresh(&retaken, &t2) && !holds_refresh(&retaken, &t1));
        assert_eq!(decode(&retaken).unwrap().1, b"42");
        // Another version (stored at another time) is not leased.
        assert_eq!(embed_refresh(&v, &t1, &[9u8; 8], 100, 200), None);
        // Leases and garbage are never refresh-leased.
        assert_eq!(embed_refresh(&new_lease(10), &t1, &at, 100, 200), None);
        assert_eq!(embed_refresh(b"junk", &t1, &at, 100, 200), None);
        // Renewing moves the lease's end, only for its holder and only while it runs.
        let renewed = renew_refresh(&leased, &t1, 150, 400).unwrap();
        assert_eq!(decode(&renewed).unwrap().0.refresh_until_ms, 400);
        assert_eq!(decode(&renewed).unwrap().1, b"42");
        assert!(holds_live_refresh(&renewed, &t1, 400));
        assert_eq!(renew_refresh(&leased, &t2, 150, 400), None);
        assert_eq!(renew_refresh(&leased, &t1, 201, 400), None, "ran out");
        assert_eq!(renew_refresh(&v, &t1, 150, 400), None, "no lease");
        assert_eq!(strip_refresh(&renewed, &t1).unwrap(), v);
        // Releasing restores the original bytes.
        assert_eq!(strip_refresh(&leased, &t1).unwrap(), v);
        assert_eq!(strip_refresh(&leased, &t2), None);
    }
}
