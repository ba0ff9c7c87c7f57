//! Key material: the master key and the sub-keys derived from it, one per purpose.
//!
//! None of these types implement `Debug`, `Clone`, `Copy` or `Default`: a key is never printed,
//! never duplicated by accident, never all-zero by default, and its bytes are zeroized on drop.

use zeroize::Zeroizing;

use crate::chunk_cipher::ChunkCipher;
use crate::error::{Result, random_bytes};
use crate::id::{ChunkId, VaultId};
use crate::point_key::{PointKey, PointSigner};

const CONTEXT_CHUNK_ID: &str = "vmvault 2026 chunk id v1";
const CONTEXT_CHUNK_CIPHER: &str = "vmvault 2026 chunk encryption v1";
const CONTEXT_SIGNING: &str = "vmvault 2026 signing v1";
const CONTEXT_UNENCRYPTED_SIGNING: &str = "vmvault 2026 unencrypted-vault signing v1";
const CONTEXT_POINT_SIGNING: &str = "vmvault 2026 point signing ed25519 v1";
const CONTEXT_UNENCRYPTED_POINT_SIGNING: &str = "vmvault 2026 unencrypted-vault point signing ed25519 v1";

/// A passphrase typed by the user; held only long enough to derive the key-encryption key.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Take ownership of a passphrase; trailing newlines (from a file or a prompt) are removed.
    pub fn new(mut text: String) -> Self {
        while text.ends_with('\n') || text.ends_with('\r') {
            text.pop();
        }
        Passphrase(Zeroizing::new(text))
    }

    /// Whether it is empty, which vmvault refuses.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The 256-bit random master key of an encrypted vault. Only its wrapped form is stored.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub(crate) fn generate() -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        random_bytes(key.as_mut())?;
        Ok(MasterKey(key))
    }

    /// Take a master key held elsewhere (the user's key cache). A wrong key is caught when it
    /// is used to unlock: the config's signature will not match.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        MasterKey(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn derive(&self, context: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(context, self.0.as_ref()))
    }
}

/// A message authentication code over canonical bytes (keyed BLAKE3).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mac(blake3::Hash);

impl Mac {
    /// Hex form, as stored in signed documents.
    pub fn to_hex(&self) -> String {
        self.0.to_hex().to_string()
    }

    /// Parse the hex form; `None` if it is not 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        blake3::Hash::from_hex(s).ok().map(Mac)
    }

    /// Constant-time comparison (`blake3::Hash` equality is constant-time).
    pub fn verify(&self, other: &Mac) -> bool {
        self.0 == other.0
    }
}

/// The keys a client needs to read and write one vault, derived once when it is unlocked.
///
/// Holding a `Keys` is what "unlocked" means: code that needs to name, encrypt or sign
/// chunks and documents cannot be called without one.
pub struct Keys {
    secrets: Secrets,
    points: PointSigner,
}

enum Secrets {
    Encrypted {
        master: MasterKey,
        chunk_id: Zeroizing<[u8; 32]>,
        chunk_cipher: ChunkCipher,
        signing: Zeroizing<[u8; 32]>,
    },
    /// An unencrypted vault has no secret: its signing key is derived from the public vault id,
    /// so signatures catch accidents but not an attacker. docs/FORMAT.md says so.
    Plain { signing: [u8; 32] },
}

impl Keys {
    /// Sub-keys of an encrypted vault.
    pub(crate) fn encrypted(master: MasterKey) -> Result<Self> {
        let chunk_id = master.derive(CONTEXT_CHUNK_ID);
        let chunk_cipher = ChunkCipher::new(&master.derive(CONTEXT_CHUNK_CIPHER))?;
        let signing = master.derive(CONTEXT_SIGNING);
        let points = PointSigner::from_seed(&master.derive(CONTEXT_POINT_SIGNING));
        Ok(Keys { secrets: Secrets::Encrypted { master, chunk_id, chunk_cipher, signing }, points })
    }

    /// Keys of an unencrypted vault: plain BLAKE3 chunk ids and no encryption.
    pub fn unencrypted(vault: &VaultId) -> Self {
        let signing = blake3::derive_key(CONTEXT_UNENCRYPTED_SIGNING, vault.as_bytes());
        let points =
            PointSigner::from_seed(&blake3::derive_key(CONTEXT_UNENCRYPTED_POINT_SIGNING, vault.as_bytes()));
        Keys { secrets: Secrets::Plain { signing }, points }
    }

    /// Whether chunks are encrypted under these keys.
    pub fn encrypts(&self) -> bool {
        matches!(self.secrets, Secrets::Encrypted { .. })
    }

    /// The id a chunk with this plaintext has in this vault.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        let hash = match &self.secrets {
            Secrets::Encrypted { chunk_id, .. } => blake3::keyed_hash(chunk_id, plaintext),
            Secrets::Plain { .. } => blake3::hash(plaintext),
        };
        ChunkId::from_bytes(*hash.as_bytes())
    }

    /// MAC over canonical bytes of a document.
    pub fn sign(&self, bytes: &[u8]) -> Mac {
        let key: &[u8; 32] = match &self.secrets {
            Secrets::Encrypted { signing, .. } => signing,
            Secrets::Plain { signing } => signing,
        };
        Mac(blake3::keyed_hash(key, bytes))
    }

    /// The public key that verifies points signed with [`Keys::sign_point`].
    pub fn point_public(&self) -> PointKey {
        self.points.public()
    }

    /// Ed25519 signature (hex) over canonical bytes of a point's manifest.
    pub(crate) fn sign_point(&self, bytes: &[u8]) -> String {
        self.points.sign(bytes)
    }

    pub(crate) fn chunk_cipher(&self) -> Option<&ChunkCipher> {
        match &self.secrets {
            Secrets::Encrypted { chunk_cipher, .. } => Some(chunk_cipher),
            Secrets::Plain { .. } => None,
        }
    }

    pub(crate) fn master(&self) -> Option<&MasterKey> {
        match &self.secrets {
            Secrets::Encrypted { master, .. } => Some(master),
            Secrets::Plain { .. } => None,
        }
    }
}
