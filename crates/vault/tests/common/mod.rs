//! Helpers shared by the vault crate's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use vault::backend::LocalBackend;
use vault::{InitEncryption, KdfParams, Passphrase, UnlockedVault, Vault};

pub const PASSPHRASE: &str = "correct horse battery staple";

pub fn backend(dir: &Path) -> Arc<LocalBackend> {
    Arc::new(LocalBackend::new(dir))
}

pub async fn encrypted_vault(dir: &Path) -> UnlockedVault {
    let init = InitEncryption::Passphrase(Passphrase::new(PASSPHRASE.into()), KdfParams::DEFAULT);
    Vault::create(backend(dir), init).await.expect("create encrypted vault")
}

pub async fn unencrypted_vault(dir: &Path) -> UnlockedVault {
    Vault::create(backend(dir), InitEncryption::None).await.expect("create unencrypted vault")
}

/// Reopen the vault at `dir` and unlock it the way a fresh process would.
pub async fn reopen(dir: &Path) -> UnlockedVault {
    let vault = Vault::open(backend(dir)).await.expect("open vault");
    if vault.is_encrypted() {
        vault.unlock(&Passphrase::new(PASSPHRASE.into())).await.expect("unlock")
    } else {
        vault.unlock_unencrypted().expect("unlock unencrypted")
    }
}

/// Deterministic pseudo-random bytes (incompressible) from a seed.
pub fn random_data(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut input = seed.to_le_bytes().to_vec();
        input.extend_from_slice(&counter.to_le_bytes());
        out.extend_from_slice(blake3::hash(&input).as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// Text-like compressible bytes.
pub fn compressible_data(len: usize) -> Vec<u8> {
    b"vmvault keeps recovery points of virtual machines. ".iter().copied().cycle().take(len).collect()
}

/// Flip one bit of the byte at `offset` of a file.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read file to damage");
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).expect("write damaged file");
}

/// Where a test's vault lives: a temporary directory or a new bucket on the test process's
/// S3 endpoint (moto_server). Tests of vault operations run in both.
pub struct Place {
    pub backend: Arc<dyn vault::backend::Backend>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh local place and a fresh S3 place.
pub fn places() -> Vec<Place> {
    vec![Place::local(), Place::s3()]
}

impl Place {
    pub fn local() -> Place {
        let dir = tempfile::tempdir().expect("temp dir");
        Place { backend: backend(&dir.path().join("vault")), _dir: Some(dir) }
    }

    /// A place for a backend made elsewhere (a helper process's).
    pub fn on(backend: Arc<dyn vault::backend::Backend>) -> Place {
        Place { backend, _dir: None }
    }

    pub fn s3() -> Place {
        Place { backend: testkit::moto().backend(&testkit::moto().new_vault_url()), _dir: None }
    }

    /// The directory of a local place.
    pub fn dir(&self) -> std::path::PathBuf {
        self._dir.as_ref().map(|d| d.path().join("vault")).unwrap_or_default()
    }

    /// Where it is, for assertion messages.
    pub fn at(&self) -> String {
        self.backend.location()
    }

    pub async fn read(&self, key: &str) -> Vec<u8> {
        self.backend.get(key).await.expect("read object").to_vec()
    }

    /// Replace an object's bytes behind the vault's back (as a damaged disk or a hostile
    /// store would), or create it.
    pub async fn write(&self, key: &str, bytes: &[u8]) {
        let current = self.backend.get_versioned(key).await.expect("read object");
        let version = current.map(|(_, v)| v);
        self.backend
            .compare_and_swap(key, version.as_ref(), bytes::Bytes::copy_from_slice(bytes))
            .await
            .expect("overwrite object");
    }

    pub async fn remove(&self, key: &str) {
        self.backend.delete(key).await.expect("delete object");
    }

    /// Flip one bit of the byte at `offset` of an object.
    pub async fn flip(&self, key: &str, offset: usize) {
        let mut bytes = self.read(key).await;
        bytes[offset] ^= 0x01;
        self.write(key, &bytes).await;
    }

    pub async fn encrypted(&self) -> UnlockedVault {
        let init = InitEncryption::Passphrase(Passphrase::new(PASSPHRASE.into()), KdfParams::DEFAULT);
        Vault::create(Arc::clone(&self.backend), init).await.expect("create encrypted vault")
    }

    pub async fn unencrypted(&self) -> UnlockedVault {
        Vault::create(Arc::clone(&self.backend), InitEncryption::None)
            .await
            .expect("create unencrypted vault")
    }

    /// Open and unlock the vault the way a fresh process would.
    pub async fn reopen(&self) -> UnlockedVault {
        let vault = Vault::open(Arc::clone(&self.backend)).await.expect("open vault");
        if vault.is_encrypted() {
            vault.unlock(&Passphrase::new(PASSPHRASE.into())).await.expect("unlock")
        } else {
            vault.unlock_unencrypted().expect("unlock unencrypted")
        }
    }

    /// Open without the key: a server's view.
    pub async fn open_locked(&self) -> Vault {
        Vault::open(Arc::clone(&self.backend)).await.expect("open vault")
    }
}
