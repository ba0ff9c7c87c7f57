//! What a backup's transfer did to the vault's chunks besides filling its index: the chunks it
//! added (removed again if the point is not committed), and the damaged chunks it wrote again.
//!
//! A backup heals what verify found: a block whose data hashes to a chunk the last verify
//! recorded as damaged is written again (replacing the damaged copy), never reused as it is.
//! What was repaired goes back into the verify record; what could not be is said in the notes.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use tokio::runtime::Handle;
use vault::{ChunkId, UnlockedVault};

/// What a backup stored before its commit, removed again if the point is not committed.
#[derive(Debug, Default)]
pub struct Stored {
    so_far: Mutex<StoredSoFar>,
}

/// The chunks a backup created, their stored bytes, and the indexes it wrote.
#[derive(Debug, Default)]
pub struct StoredSoFar {
    /// Chunks this backup created (not those it found in the vault).
    pub chunks: HashSet<ChunkId>,
    /// Their stored bytes.
    pub bytes: u64,
    /// Keys of the indexes it wrote.
    pub indexes: Vec<String>,
}

impl Stored {
    /// Note chunks this backup created, with their stored bytes.
    pub fn chunks(&self, ids: &[ChunkId], bytes: u64) {
        let mut so_far = self.so_far.lock().unwrap_or_else(PoisonError::into_inner);
        so_far.chunks.extend(ids);
        so_far.bytes += bytes;
    }

    /// Note an index this backup wrote.
    pub fn index(&self, key: &str) {
        self.so_far.lock().unwrap_or_else(PoisonError::into_inner).indexes.push(key.to_string());
    }

    /// Everything noted so far (and forget it).
    pub fn take(&self) -> StoredSoFar {
        std::mem::take(&mut *self.so_far.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The damaged chunks a backup looks out for, and what became of each one it met.
#[derive(Debug, Default)]
pub struct Repairs {
    damaged: HashSet<ChunkId>,
    repaired: Mutex<HashSet<ChunkId>>,
    failed: Mutex<Vec<String>>,
}

impl Repairs {
    /// Look out for `damaged`.
    pub fn new(damaged: HashSet<ChunkId>) -> Repairs {
        Repairs { damaged, ..Default::default() }
    }

    /// Whether `id` is one to write again rather than reuse.
    pub fn wants(&self, id: &ChunkId) -> bool {
        self.damaged.contains(id)
    }

    /// Write `id` again from `plaintext` (a replaced copy adds no space). A failure is noted,
    /// never the backup's failure: the point then shares the damaged chunk, and says so.
    pub fn rewrite(&self, vault: &UnlockedVault, handle: &Handle, id: &ChunkId, plaintext: &[u8]) {
        match handle.block_on(vault.rewrite_chunk(id, plaintext)) {
            Ok(_) => {
                self.repaired.lock().unwrap_or_else(PoisonError::into_inner).insert(*id);
            }
            Err(e) => {
                self.failed.lock().unwrap_or_else(PoisonError::into_inner).push(format!(
                    "chunk {id}, which the last verify found damaged, could not be written again ({e}); \
                     this point shares it: run `vmvault verify --read-data` after fixing the cause"
                ));
            }
        }
    }

    /// The chunks now whole (written again, or found whole after all).
    pub fn repaired(&self) -> HashSet<ChunkId> {
        self.repaired.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// What could not be repaired, one note each.
    pub fn failures(&self) -> Vec<String> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
