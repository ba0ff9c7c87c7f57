//! A backup heals what verify found: a block whose data hashes to a chunk the last verify
//! recorded as damaged is written again (replacing the damaged copy), never reused as it is.
//! What was repaired goes back into the verify record; what could not be is said in the notes.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use tokio::runtime::Handle;
use vault::{ChunkId, UnlockedVault};

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
