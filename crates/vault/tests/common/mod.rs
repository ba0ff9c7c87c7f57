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

/// Every file below `dir` with its content, to prove that nothing was written.
pub fn snapshot_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.display().to_string(), std::fs::read(&path).expect("read file")));
            }
        }
    }
    out.sort();
    out
}
