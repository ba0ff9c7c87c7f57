//! Opening, creating and unlocking a vault; the chunk store and point files on top of a backend.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::backend::{Backend, Put};
use crate::blob;
use crate::config::{Encryption, VaultConfig};
use crate::error::{Result, VaultError};
use crate::id::{ChunkId, VaultId};
use crate::index::FixedIndex;
use crate::keyfile::{KdfParams, KeyFile, RecoveryKey};
use crate::keys::{Keys, MasterKey, Passphrase};
use crate::layout;
use crate::manifest::Manifest;
use crate::session::{Rescue, Session};

/// Uploads one [`UnlockedVault::put_sealed`] call keeps in flight.
const UPLOADS_IN_FLIGHT: usize = 4;

/// A chunk compressed, encrypted and checksummed, on its way to a remote vault.
pub struct SealedChunk {
    /// Its id.
    pub id: ChunkId,
    /// The bytes to store under [`layout::chunk`].
    pub bytes: Bytes,
}

/// What storing chunks added to the vault.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// Chunks this call created.
    pub chunks: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Their ids (a backup that does not commit removes them again).
    pub ids: Vec<ChunkId>,
}

/// How to protect a new vault.
pub enum InitEncryption {
    /// Encrypt with a fresh master key wrapped under this passphrase.
    Passphrase(Passphrase, KdfParams),
    /// Do not encrypt.
    None,
}

/// A vault opened without its key: enough to list, inspect and check integrity, as a server
/// does. Reading or writing content needs an [`UnlockedVault`].
pub struct Vault {
    backend: Arc<dyn Backend>,
    config: VaultConfig,
    config_bytes: Bytes,
}

/// A vault whose keys are at hand.
pub struct UnlockedVault {
    vault: Vault,
    keys: Keys,
}

/// What `vault info` reports. Holds no secret.
#[derive(Debug, Serialize)]
pub struct VaultInfo {
    /// Where the vault lives.
    pub location: String,
    /// Its id.
    pub id: VaultId,
    /// Layout version.
    pub format_version: u32,
    /// When it was created.
    pub created: jiff::Timestamp,
    /// Encryption mode.
    pub encryption: Encryption,
    /// Argon2id parameters of the key file, if encrypted.
    pub kdf: Option<KdfParams>,
    /// Bytes per chunk.
    pub chunk_size: u32,
    /// Number of stored chunks.
    pub chunk_count: u64,
    /// Stored bytes of all chunks.
    pub chunk_bytes: u64,
    /// Temporary files of unfinished writes older than a lease (GC removes them).
    pub stale_temporaries: u64,
}

/// One chunk that failed a keyless integrity check.
#[derive(Debug)]
pub struct DamagedChunk {
    /// The object key it was found under.
    pub key: String,
    /// What is wrong with it.
    pub error: VaultError,
}

/// Result of checking every stored chunk's checksum.
#[derive(Debug, Default)]
pub struct ChunkCheck {
    /// Chunks read and checked.
    pub checked: u64,
    /// Those that failed.
    pub damaged: Vec<DamagedChunk>,
}

impl Vault {
    /// Create a vault on an empty backend. Refuses if a vault is already there.
    pub async fn create(backend: Arc<dyn Backend>, encryption: InitEncryption) -> Result<UnlockedVault> {
        let location = backend.location();
        if backend.head(&layout::config()).await?.is_some() {
            return Err(VaultError::AlreadyInitialized { location });
        }
        let (mut config, keys, key_file) = match encryption {
            InitEncryption::Passphrase(passphrase, kdf) => {
                if passphrase.is_empty() {
                    return Err(VaultError::Invalid("an empty passphrase is not allowed".into()));
                }
                let config = VaultConfig::new(Encryption::Aes256Gcm)?;
                let master = MasterKey::generate()?;
                let key_file = KeyFile::wrap(&master, &passphrase, kdf)?;
                (config, Keys::encrypted(master)?, Some(key_file))
            }
            InitEncryption::None => {
                let config = VaultConfig::new(Encryption::None)?;
                let keys = Keys::unencrypted(&config.id);
                (config, keys, None)
            }
        };
        config.point_key = Some(keys.point_public().to_hex());
        // The key file first, the config last: a vault exists once its config does.
        if let Some(key_file) = key_file {
            backend.compare_and_swap(&layout::key_file(), None, Bytes::from(key_file.encode())).await?;
        }
        let config_bytes = Bytes::from(crate::signed::sign(&keys, &config)?);
        if backend.put_if_absent(&layout::config(), config_bytes.clone()).await? == Put::Existed {
            return Err(VaultError::AlreadyInitialized { location });
        }
        backend.flush().await?;
        Ok(UnlockedVault { vault: Vault { backend, config, config_bytes }, keys })
    }

    /// Open an existing vault without its key.
    pub async fn open(backend: Arc<dyn Backend>) -> Result<Vault> {
        let config_bytes = match backend.get(&layout::config()).await {
            Ok(bytes) => bytes,
            Err(VaultError::NotFound { .. }) => {
                return Err(VaultError::NotAVault { location: backend.location() });
            }
            Err(e) => return Err(e),
        };
        let config = VaultConfig::decode_unverified(&config_bytes)?;
        Ok(Vault { backend, config, config_bytes })
    }

    /// The backend, for callers that store their own objects (catalog documents).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The vault's settings.
    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// Whether a passphrase is needed to unlock.
    pub fn is_encrypted(&self) -> bool {
        self.config.encryption == Encryption::Aes256Gcm
    }

    /// Where the vault lives.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    async fn key_file(&self) -> Result<KeyFile> {
        let key = layout::key_file();
        let bytes = self.backend.get(&key).await?;
        KeyFile::decode(&bytes, &key)
    }

    /// Unlock an encrypted vault with its passphrase (one Argon2id derivation). Reads only.
    pub async fn unlock(self, passphrase: &Passphrase) -> Result<UnlockedVault> {
        if !self.is_encrypted() {
            return Err(VaultError::NotEncrypted { location: self.location() });
        }
        let master = self.key_file().await?.unwrap_key(passphrase, &self.location())?;
        self.with_keys(Keys::encrypted(master)?)
    }

    /// Use an unencrypted vault for reading and writing content.
    pub fn unlock_unencrypted(self) -> Result<UnlockedVault> {
        if self.is_encrypted() {
            return Err(VaultError::Locked { location: self.location() });
        }
        let keys = Keys::unencrypted(&self.config.id);
        self.with_keys(keys)
    }

    /// Unlock with a master key held elsewhere (a key agent, or a recovery key).
    pub fn unlock_with_master(self, master: MasterKey) -> Result<UnlockedVault> {
        self.with_keys(Keys::encrypted(master)?)
    }

    fn with_keys(self, keys: Keys) -> Result<UnlockedVault> {
        self.config.verify(&keys, &self.config_bytes)?;
        if self.config.point_public()?.is_some_and(|key| key != keys.point_public()) {
            return Err(VaultError::BadSignature { what: format!("{} (point_key)", layout::config()) });
        }
        Ok(UnlockedVault { vault: self, keys })
    }

    /// Replace the key file from a paper recovery key: for a forgotten passphrase or a damaged
    /// key file. The recovery key must belong to this vault.
    pub async fn import_recovery_key(
        self,
        recovery: &RecoveryKey,
        new_passphrase: &Passphrase,
    ) -> Result<UnlockedVault> {
        if !self.is_encrypted() {
            return Err(VaultError::NotEncrypted { location: self.location() });
        }
        let location = self.location();
        let keys = Keys::encrypted(recovery.master())?;
        if self.config.verify(&keys, &self.config_bytes).is_err() {
            return Err(VaultError::WrongRecoveryKey { location });
        }
        let unlocked = UnlockedVault { vault: self, keys };
        unlocked.rewrap(new_passphrase, KdfParams::DEFAULT).await?;
        Ok(unlocked)
    }

    /// Facts about the vault for `vault info`.
    pub async fn info(&self) -> Result<VaultInfo> {
        let kdf = if self.is_encrypted() { Some(self.key_file().await?.kdf) } else { None };
        let chunks = self.backend.list(&layout::chunks()).await?;
        let (chunk_count, chunk_bytes) = chunks
            .iter()
            .filter(|o| layout::chunk_id_of(&o.key).is_some())
            .fold((0u64, 0u64), |(n, b), o| (n + 1, b + o.size));
        Ok(VaultInfo {
            location: self.location(),
            id: self.config.id,
            format_version: self.config.version,
            created: self.config.created,
            encryption: self.config.encryption,
            kdf,
            chunk_size: self.config.chunk_size,
            chunk_count,
            chunk_bytes,
            stale_temporaries: self.backend.temporaries(crate::lease::DEFAULT_LEASE, false).await?,
        })
    }

    /// Check every stored chunk's checksum and structure, without the key.
    pub async fn check_chunks(&self) -> Result<ChunkCheck> {
        let mut report = ChunkCheck::default();
        for object in self.backend.list(&layout::chunks()).await? {
            report.checked += 1;
            let Some(id) = layout::chunk_id_of(&object.key) else {
                report.damaged.push(DamagedChunk {
                    error: VaultError::corrupt(&object.key, "not a chunk name"),
                    key: object.key,
                });
                continue;
            };
            let outcome = match self.backend.get(&object.key).await {
                Ok(bytes) => blob::check(&id, &bytes),
                Err(e) => Err(e),
            };
            if let Err(error) = outcome {
                report.damaged.push(DamagedChunk { key: object.key, error });
            }
        }
        Ok(report)
    }

    /// Read and check an index; `digest` (from a verified manifest) binds it to that manifest.
    pub async fn get_index(&self, key: &str, digest: Option<&str>) -> Result<FixedIndex> {
        let bytes = self.backend.get(key).await?;
        let index = FixedIndex::decode(&bytes, key)?;
        if let Some(expected) = digest {
            let actual = FixedIndex::digest_of(&bytes).map(hex::encode).unwrap_or_default();
            if actual != expected {
                return Err(VaultError::corrupt(key, "does not match the index its manifest signed"));
            }
        }
        Ok(index)
    }
}

impl UnlockedVault {
    /// The vault without its keys.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The keys, for pipelines that hash and seal on their own threads.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The paper form of the master key. Errors on an unencrypted vault, which has none.
    pub fn recovery_key(&self) -> Result<RecoveryKey> {
        let master =
            self.keys.master().ok_or_else(|| VaultError::NotEncrypted { location: self.vault.location() })?;
        Ok(RecoveryKey::from_master(master))
    }

    /// A copy of the master key for the user's key cache (`vmvault key unlock`), so scheduled
    /// runs need no passphrase; `None` for an unencrypted vault. Never log it.
    pub fn master_key_for_cache(&self) -> Option<Zeroizing<[u8; 32]>> {
        self.keys.master().map(|m| Zeroizing::new(*m.expose()))
    }

    /// Re-wrap the master key under a new passphrase; no chunk or document is touched.
    pub async fn change_passphrase(&self, new_passphrase: &Passphrase) -> Result<()> {
        let kdf = self.vault.key_file().await.map(|f| f.kdf).unwrap_or(KdfParams::DEFAULT);
        self.rewrap(new_passphrase, kdf).await
    }

    async fn rewrap(&self, new_passphrase: &Passphrase, kdf: KdfParams) -> Result<()> {
        if new_passphrase.is_empty() {
            return Err(VaultError::Invalid("an empty passphrase is not allowed".into()));
        }
        let master =
            self.keys.master().ok_or_else(|| VaultError::NotEncrypted { location: self.vault.location() })?;
        let file = KeyFile::wrap(master, new_passphrase, kdf)?;
        let backend = &self.vault.backend;
        let key = layout::key_file();
        let current = backend.get_versioned(&key).await?.map(|(_, v)| v);
        backend.compare_and_swap(&key, current.as_ref(), Bytes::from(file.encode())).await?;
        Ok(())
    }

    /// Hash, seal and store one chunk unless the vault has it. Returns its id and the stored
    /// bytes this call added (0 when it was already there).
    pub async fn put_chunk(&self, plaintext: &[u8]) -> Result<(ChunkId, u64)> {
        let id = self.keys.chunk_id(plaintext);
        Ok((id, self.store_chunk(&id, plaintext).await?))
    }

    /// Seal and store a chunk whose id the caller already computed (`keys().chunk_id`), unless
    /// the vault has it. Returns the stored bytes this call added (0 when it was already there).
    pub async fn store_chunk(&self, id: &ChunkId, plaintext: &[u8]) -> Result<u64> {
        if self.vault.backend.head(&layout::chunk(id)).await?.is_some() {
            return Ok(0);
        }
        Ok(self.put_one(self.seal_chunk(*id, plaintext)?).await?.bytes)
    }

    /// Store a chunk for a backup session: a chunk that a garbage collection condemned and
    /// this backup reuses is rescued, or written again if the collection already deleted it.
    pub async fn store_chunk_for(&self, session: &Session, id: &ChunkId, plaintext: &[u8]) -> Result<u64> {
        let added = self.store_chunk(id, plaintext).await?;
        if added == 0 && session.is_condemned(id) && session.rescue(&[*id]).await? == Rescue::Lost {
            return self.store_chunk(id, plaintext).await;
        }
        Ok(added)
    }

    /// Write again a chunk whose stored copy verify found damaged, from the plaintext a backup
    /// just read: the damaged copy is replaced by compare-and-swap (a copy someone replaced
    /// meanwhile is left alone). Returns whether it was written — not when the stored copy
    /// opens and hashes back to its id after all.
    pub async fn rewrite_chunk(&self, id: &ChunkId, plaintext: &[u8]) -> Result<bool> {
        let key = layout::chunk(id);
        let sealed = self.seal_chunk(*id, plaintext)?;
        let Some((stored, version)) = self.vault.backend.get_versioned(&key).await? else {
            return Ok(self.put_one(sealed).await?.chunks > 0);
        };
        if blob::open(&self.keys, id, &stored).is_ok_and(|p| self.keys.chunk_id(&p) == *id) {
            return Ok(false);
        }
        self.vault.backend.compare_and_swap(&key, Some(&version), sealed.bytes).await?;
        Ok(true)
    }

    /// Seal a chunk for [`UnlockedVault::put_sealed`].
    pub fn seal_chunk(&self, id: ChunkId, plaintext: &[u8]) -> Result<SealedChunk> {
        Ok(SealedChunk { id, bytes: Bytes::from(blob::seal(&self.keys, &id, plaintext)?) })
    }

    /// Of the chunks a backup session is about to store, the ones it must upload, found with
    /// one question to a remote vault: those the vault lacks, and present ones a collection
    /// condemned and already deleted. Present condemned ones it had not deleted are rescued.
    pub async fn chunks_to_upload(&self, session: &Session, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let missing: HashSet<ChunkId> = self.vault.backend.missing_chunks(ids).await?.into_iter().collect();
        let condemned: Vec<ChunkId> =
            ids.iter().filter(|id| !missing.contains(id) && session.is_condemned(id)).copied().collect();
        let lost = !condemned.is_empty() && session.rescue(&condemned).await? == Rescue::Lost;
        Ok(ids
            .iter()
            .filter(|id| missing.contains(id) || (lost && condemned.contains(id)))
            .copied()
            .collect())
    }

    /// Upload sealed chunks, several at a time (create-if-absent).
    pub async fn put_sealed(&self, chunks: Vec<SealedChunk>) -> Result<Added> {
        futures::stream::iter(chunks)
            .map(|chunk| self.put_one(chunk))
            .buffer_unordered(UPLOADS_IN_FLIGHT)
            .try_fold(Added::default(), |mut sum, one| async move {
                sum.chunks += one.chunks;
                sum.bytes += one.bytes;
                sum.ids.extend(one.ids);
                Ok(sum)
            })
            .await
    }

    /// Store one sealed chunk unless present (create-if-absent).
    async fn put_one(&self, chunk: SealedChunk) -> Result<Added> {
        let len = chunk.bytes.len() as u64;
        Ok(match self.vault.backend.put_if_absent(&layout::chunk(&chunk.id), chunk.bytes).await? {
            Put::Created => Added { chunks: 1, bytes: len, ids: vec![chunk.id] },
            Put::Existed => Added::default(),
        })
    }

    /// Fetch, check and open one chunk.
    pub async fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let bytes = match self.vault.backend.get(&layout::chunk(id)).await {
            Err(VaultError::NotFound { location, .. }) => {
                return Err(VaultError::NotFound { location, key: format!("chunk {id}") });
            }
            other => other?,
        };
        blob::open(&self.keys, id, &bytes)
    }

    /// Store an index (create-if-absent); returns its digest for the manifest.
    pub async fn put_index(&self, key: &str, index: &FixedIndex) -> Result<String> {
        let bytes = index.encode();
        let digest = FixedIndex::digest_of(&bytes).map(hex::encode).unwrap_or_default();
        self.vault.backend.put_if_absent(key, Bytes::from(bytes)).await?;
        Ok(digest)
    }

    /// Commit a manifest: flush everything written so far, then store the signed manifest.
    pub async fn commit_manifest(&self, key: &str, manifest: &Manifest) -> Result<()> {
        let backend = &self.vault.backend;
        backend.flush().await?;
        let bytes = Bytes::from(manifest.encode(&self.keys)?);
        // Existing identical bytes are this very commit, whose answer was lost and retried.
        if backend.put_if_absent(key, bytes.clone()).await? == Put::Existed
            && backend.get(key).await? != bytes
        {
            return Err(VaultError::Exists { key: key.to_string() });
        }
        backend.flush().await
    }

    /// Read and verify a manifest.
    pub async fn get_manifest(&self, key: &str) -> Result<Manifest> {
        let bytes = self.vault.backend.get(key).await?;
        Manifest::decode(&self.keys, &bytes, key)
    }
}
