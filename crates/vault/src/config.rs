//! The vault's `config` object: identity and the choices fixed at init.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VaultError};
use crate::id::VaultId;
use crate::index::CHUNK_SIZE;
use crate::keys::Keys;
use crate::layout;
use crate::point_key::PointKey;
use crate::signed;

/// Object key of the config.
/// Object key of the key file.
/// Value of the config's `format` member.
pub const VAULT_FORMAT: &str = "vmvault-vault";
/// Version of the vault layout this code writes and reads.
pub const VAULT_FORMAT_VERSION: u32 = 1;

/// How chunk content is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    /// Keyed-BLAKE3 chunk ids and AES-256-GCM chunk content; the key is wrapped in the key file.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// Plain BLAKE3 chunk ids and plaintext chunks (still compressed and checksummed).
    #[serde(rename = "none")]
    None,
}

/// Immutable settings of a vault, written once by `vault init`, signed with the vault's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultConfig {
    /// Always [`VAULT_FORMAT`].
    pub format: String,
    /// Layout version.
    pub version: u32,
    /// Identity of the vault.
    pub id: VaultId,
    /// When `vault init` ran.
    pub created: Timestamp,
    /// Bytes per chunk (4 MiB).
    pub chunk_size: u32,
    /// Encryption mode.
    pub encryption: Encryption,
    /// Public key (hex Ed25519) that checks every manifest's `sig`, so a server without the
    /// vault key can tell genuine points; absent in vaults made before points were signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_key: Option<String>,
}

impl VaultConfig {
    pub(crate) fn new(encryption: Encryption) -> Result<Self> {
        let mut id = [0u8; 16];
        crate::error::random_bytes(&mut id)?;
        Ok(VaultConfig {
            format: VAULT_FORMAT.to_string(),
            version: VAULT_FORMAT_VERSION,
            id: VaultId::from_bytes(id),
            created: Timestamp::now(),
            chunk_size: CHUNK_SIZE,
            encryption,
            point_key: None,
        })
    }

    /// The public point key, if the vault has one.
    pub fn point_public(&self) -> Result<Option<PointKey>> {
        self.point_key
            .as_deref()
            .map(|hex| {
                PointKey::from_hex(hex).ok_or_else(|| {
                    VaultError::corrupt(layout::config(), "point_key is not an Ed25519 public key")
                })
            })
            .transpose()
    }

    /// Read the config without its key: enough to know the id and whether a key is needed.
    /// The signature is checked by [`VaultConfig::verify`] once keys are at hand.
    pub(crate) fn decode_unverified(bytes: &[u8]) -> Result<Self> {
        let config: VaultConfig = signed::read_unverified(bytes, &layout::config())?;
        if config.format != VAULT_FORMAT {
            return Err(VaultError::corrupt(
                layout::config(),
                format!("format {:?} is not a vmvault vault", config.format),
            ));
        }
        if config.version != VAULT_FORMAT_VERSION {
            return Err(VaultError::UnsupportedVersion {
                what: layout::config().into(),
                found: config.version,
                supported: VAULT_FORMAT_VERSION,
            });
        }
        if config.chunk_size != CHUNK_SIZE {
            return Err(VaultError::corrupt(
                layout::config(),
                format!("chunk size {} is not supported", config.chunk_size),
            ));
        }
        config.point_public()?;
        Ok(config)
    }

    /// Check that `bytes` carry a valid signature under `keys` and say what this config says.
    pub(crate) fn verify(&self, keys: &Keys, bytes: &[u8]) -> Result<()> {
        let signed: VaultConfig = signed::verify(keys, bytes, &layout::config())?;
        if &signed != self {
            return Err(VaultError::BadSignature { what: layout::config().into() });
        }
        Ok(())
    }
}
