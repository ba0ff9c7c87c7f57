//! Names of things in the vault.

use std::fmt;
use std::str::FromStr;

/// The name of a chunk: a keyed BLAKE3 hash of its plaintext (plain BLAKE3 in an unencrypted
/// vault). A distinct type so a chunk id cannot be confused with a nonce, a key or a MAC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    /// Reserved id an index uses for a block of zeros: such blocks are never stored.
    pub const ZERO: ChunkId = ChunkId([0; 32]);

    /// Wrap 32 bytes read from an index or computed by a hash.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        ChunkId(bytes)
    }

    /// The raw bytes, as written into an index and used as associated data.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether this is the reserved "zeros, not stored" id.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }

    /// Lower-case hex, the form used in object keys and messages.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

/// Text that is not an id: names what it should have been.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a {what}")]
pub struct BadId {
    /// The text given.
    pub text: String,
    /// What was expected.
    pub what: &'static str,
}

impl FromStr for ChunkId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| BadId { text: s.to_string(), what: "chunk id (64 hex digits)" })?;
        Ok(ChunkId(bytes))
    }
}

/// Identity of a vault, fixed at init: names the vault in messages and binds keys to it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VaultId([u8; 16]);

impl VaultId {
    /// An id from its bytes (a new vault's are random).
    pub(crate) fn from_bytes(bytes: [u8; 16]) -> Self {
        VaultId(bytes)
    }

    /// The raw bytes, mixed into derived keys of unencrypted vaults.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for VaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultId({self})")
    }
}

impl FromStr for VaultId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|_| BadId { text: s.to_string(), what: "vault id (32 hex digits)" })?;
        Ok(VaultId(bytes))
    }
}

impl serde::Serialize for VaultId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for VaultId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
