//! The key file: the master key wrapped by a key derived from the passphrase with Argon2id,
//! and the paper recovery key. Byte layout in docs/FORMAT.md ("Key file").

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{Result, VaultError, random_bytes};
use crate::keys::{MasterKey, Passphrase};

/// Magic number of a key file.
pub const KEY_FILE_MAGIC: [u8; 4] = *b"VMVK";
/// Version of the key file layout this code writes and reads.
pub const KEY_FILE_VERSION: u8 = 1;
/// Total length of a key file in bytes.
pub const KEY_FILE_LEN: usize = 148;
const KDF_ARGON2ID: u8 = 1;
const WRAPPED_AT: usize = 68;
const CHECKSUM_AT: usize = 116;

/// Argon2id cost parameters, stored in the key file so they can be raised later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// Smallest memory cost vmvault writes or accepts: 64 MiB.
    pub const MIN_MEMORY_KIB: u32 = 64 * 1024;

    /// What `vault init` uses: 64 MiB, 3 passes, 1 lane (about a quarter second here).
    pub const DEFAULT: KdfParams =
        KdfParams { memory_kib: Self::MIN_MEMORY_KIB, iterations: 3, parallelism: 1 };

    fn check(&self) -> std::result::Result<(), String> {
        if self.memory_kib < Self::MIN_MEMORY_KIB || self.memory_kib > 4 * 1024 * 1024 {
            return Err(format!("Argon2id memory {} KiB out of range", self.memory_kib));
        }
        if !(1..=64).contains(&self.iterations) || !(1..=64).contains(&self.parallelism) {
            return Err("Argon2id iterations or lanes out of range".into());
        }
        Ok(())
    }
}

/// A key file as stored: parameters, salt and wrapped master key. Holds no secret in clear.
pub struct KeyFile {
    pub(crate) kdf: KdfParams,
    salt: [u8; 32],
    nonce: [u8; 12],
    wrapped: [u8; 48],
}

impl KeyFile {
    /// Wrap `master` under `passphrase` with fresh salt and nonce.
    pub(crate) fn wrap(master: &MasterKey, passphrase: &Passphrase, kdf: KdfParams) -> Result<Self> {
        kdf.check().map_err(VaultError::Invalid)?;
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 12];
        random_bytes(&mut salt)?;
        random_bytes(&mut nonce)?;
        let mut file = KeyFile { kdf, salt, nonce, wrapped: [0; 48] };
        let kek = derive_kek(passphrase, &file.kdf, &file.salt)?;
        let mut buf = Zeroizing::new(master.expose().to_vec());
        let header = file.header();
        let tag = Aes256Gcm::new(kek.as_ref().into())
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &header, &mut buf)
            .map_err(|_| VaultError::Failed("key wrapping failed".into()))?;
        file.wrapped[..32].copy_from_slice(&buf);
        file.wrapped[32..].copy_from_slice(&tag);
        Ok(file)
    }

    /// Unwrap the master key; a wrong passphrase and a forged file look the same here.
    pub(crate) fn unwrap_key(&self, passphrase: &Passphrase, location: &str) -> Result<MasterKey> {
        let kek = derive_kek(passphrase, &self.kdf, &self.salt)?;
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&self.wrapped[..32]);
        Aes256Gcm::new(kek.as_ref().into())
            .decrypt_in_place_detached(
                Nonce::from_slice(&self.nonce),
                &self.header(),
                key.as_mut(),
                self.wrapped[32..].into(),
            )
            .map_err(|_| VaultError::WrongPassphrase { location: location.to_string() })?;
        Ok(MasterKey::from_bytes(key))
    }

    /// The bytes before the wrapped key; authenticated as associated data.
    fn header(&self) -> [u8; WRAPPED_AT] {
        let mut h = [0u8; WRAPPED_AT];
        h[0..4].copy_from_slice(&KEY_FILE_MAGIC);
        h[4] = KEY_FILE_VERSION;
        h[5] = KDF_ARGON2ID;
        h[8..12].copy_from_slice(&self.kdf.memory_kib.to_le_bytes());
        h[12..16].copy_from_slice(&self.kdf.iterations.to_le_bytes());
        h[16..20].copy_from_slice(&self.kdf.parallelism.to_le_bytes());
        h[24..56].copy_from_slice(&self.salt);
        h[56..68].copy_from_slice(&self.nonce);
        h
    }

    /// Serialise to the fixed layout, checksum last.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_FILE_LEN);
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.wrapped);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Parse and check a key file; `what` names it in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        let corrupt = |reason: &str| VaultError::corrupt(what, reason);
        if bytes.len() != KEY_FILE_LEN {
            return Err(corrupt(&format!("{} bytes, expected {KEY_FILE_LEN}", bytes.len())));
        }
        if bytes[0..4] != KEY_FILE_MAGIC {
            return Err(corrupt("not a vmvault key file (bad magic)"));
        }
        if blake3::hash(&bytes[..CHECKSUM_AT]).as_bytes() != &bytes[CHECKSUM_AT..] {
            return Err(corrupt("checksum mismatch"));
        }
        if bytes[4] != KEY_FILE_VERSION {
            return Err(VaultError::UnsupportedVersion {
                what: what.to_string(),
                found: bytes[4].into(),
                supported: KEY_FILE_VERSION.into(),
            });
        }
        if bytes[5] != KDF_ARGON2ID || bytes[6..8] != [0, 0] || bytes[20..24] != [0; 4] {
            return Err(corrupt("unknown key derivation function or reserved bytes set"));
        }
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let kdf = KdfParams { memory_kib: u32_at(8), iterations: u32_at(12), parallelism: u32_at(16) };
        kdf.check().map_err(|reason| corrupt(&reason))?;
        let mut file = KeyFile { kdf, salt: [0; 32], nonce: [0; 12], wrapped: [0; 48] };
        file.salt.copy_from_slice(&bytes[24..56]);
        file.nonce.copy_from_slice(&bytes[56..68]);
        file.wrapped.copy_from_slice(&bytes[WRAPPED_AT..CHECKSUM_AT]);
        Ok(file)
    }
}

fn derive_kek(passphrase: &Passphrase, kdf: &KdfParams, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| VaultError::Invalid(format!("Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, kek.as_mut())
        .map_err(|e| VaultError::Failed(format!("Argon2id: {e}")))?;
    Ok(kek)
}

/// The master key written for a person: Crockford base32 in dash-separated groups of five,
/// with a two-byte check so a mistyped group is caught before it is tried against the vault.
pub struct RecoveryKey(Zeroizing<[u8; 32]>);

const RECOVERY_CHECK_CONTEXT: &str = "vmvault 2026 recovery key check v1";

fn crockford() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("0123456789ABCDEFGHJKMNPQRSTVWXYZ");
    spec.translate.from.push_str("abcdefghjkmnpqrstvwxyzOoIiLl");
    spec.translate.to.push_str("ABCDEFGHJKMNPQRSTVWXYZ001111");
    spec.check_trailing_bits = false;
    // A fixed spec: building it cannot fail.
    spec.encoding().unwrap_or_else(|_| unreachable!("static base32 alphabet"))
}

impl RecoveryKey {
    pub(crate) fn from_master(master: &MasterKey) -> Self {
        RecoveryKey(Zeroizing::new(*master.expose()))
    }

    /// Parse what a person typed; spaces, dashes and case are ignored.
    pub fn parse(text: &str) -> Result<Self> {
        let cleaned: Zeroizing<String> =
            Zeroizing::new(text.chars().filter(|c| !c.is_whitespace() && *c != '-').collect());
        let bad = |reason: &str| VaultError::BadRecoveryKey { reason: reason.to_string() };
        let raw = Zeroizing::new(
            crockford()
                .decode(cleaned.as_bytes())
                .map_err(|_| bad("it holds characters that are not in the recovery alphabet"))?,
        );
        if raw.len() != 34 {
            return Err(bad("it is not 55 characters long"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&raw[..32]);
        if check_bytes(&key) != raw[32..] {
            return Err(bad("its check digits do not match (a character is mistyped)"));
        }
        Ok(RecoveryKey(key))
    }

    /// The text to print: 55 characters in dash-separated groups of five.
    pub fn text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(34));
        raw.extend_from_slice(self.0.as_ref());
        raw.extend_from_slice(&check_bytes(&self.0));
        let encoded = Zeroizing::new(crockford().encode(&raw));
        let grouped: Vec<&str> =
            encoded.as_bytes().chunks(5).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
        Zeroizing::new(grouped.join("-"))
    }

    pub(crate) fn master(&self) -> MasterKey {
        MasterKey::from_bytes(Zeroizing::new(*self.0))
    }
}

fn check_bytes(key: &[u8; 32]) -> [u8; 2] {
    let check = blake3::derive_key(RECOVERY_CHECK_CONTEXT, key);
    [check[0], check[1]]
}
