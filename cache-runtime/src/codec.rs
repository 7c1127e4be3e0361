//! How values are serialized inside the envelope. JSON is the default; MessagePack
//! (feature `msgpack`) is a compact binary alternative chosen per [`Cache`](crate::Cache)
//! with [`CacheBuilder::codec`](crate::CacheBuilder::codec).
//!
//! The envelope records the codec it was written with, so caches using different codecs
//! still read each other's entries.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value serialization format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// `serde_json` (the default): readable with `redis-cli`.
    #[default]
    Json,
    /// MessagePack via `rmp-serde` (struct fields by name), smaller and faster to decode.
    #[cfg(feature = "msgpack")]
    MessagePack,
}

impl Codec {
    /// The id stored in the envelope.
    pub(crate) fn id(self) -> u8 {
        match self {
            Codec::Json => 1,
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => 2,
        }
    }

    /// The codec an envelope's id names, if this build has it.
    pub(crate) fn from_id(id: u8) -> Option<Codec> {
        match id {
            1 => Some(Codec::Json),
            #[cfg(feature = "msgpack")]
            2 => Some(Codec::MessagePack),
            _ => None,
        }
    }

    /// Appends `v` serialized to `out`.
    pub(crate) fn encode<T: Serialize + ?Sized>(
        self,
        out: &mut Vec<u8>,
        v: &T,
    ) -> Result<(), String> {
        match self {
            Codec::Json => serde_json::to_writer(out, v).map_err(|e| e.to_string()),
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => rmp_serde::encode::write_named(out, v).map_err(|e| e.to_string()),
        }
    }

    /// Reads a `T` from `bytes`.
    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Option<T> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).ok(),
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => rmp_serde::from_slice(bytes).ok(),
        }
    }
}
