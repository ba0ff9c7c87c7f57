//! A backup that did not commit removes what it stored, so a failed night (a full disk, a
//! lost connection) does not leave the vault full of chunks nobody uses: its indexes at once
//! (nothing reads a point that does not exist), its new chunks through a garbage collection of
//! those chunks alone — another backup may have begun to reuse one meanwhile, and the
//! collection's protocol keeps those. When that cannot run (another collection or an older
//! backup is running, the store refuses), the next `vmvault gc` frees them; the error says how
//! much space is held either way.

use std::sync::Arc;
use std::time::Duration;

use vault::gc::GcOptions;
use vault::layout::{self, ObjectClass};
use vault::{UnlockedVault, Vault};

use crate::error::EngineError;
use crate::ledger::StoredSoFar;
use crate::progress::human_bytes;

/// Remove what a backup that failed with `error` stored, and say so in the error it returns.
pub(super) async fn after_failure(
    vault: &UnlockedVault,
    error: EngineError,
    stored: StoredSoFar,
) -> EngineError {
    if stored.chunks.is_empty() && stored.indexes.is_empty() {
        return error;
    }
    if committed(vault, &stored).await {
        return error;
    }
    for key in &stored.indexes {
        let _ = vault.vault().backend().delete(key).await;
    }
    if stored.chunks.is_empty() {
        return error;
    }
    let (count, bytes) = (stored.chunks.len(), human_bytes(stored.bytes));
    let options =
        GcOptions { only: Some(Arc::new(stored.chunks)), max_wait: Duration::ZERO, ..Default::default() };
    let collected = match Vault::open(Arc::clone(vault.vault().backend())).await {
        Ok(opened) => vault::gc::collect(opened, options).await,
        Err(e) => Err(e),
    };
    let after = match collected {
        Ok(report) if report.deleted as usize == count => {
            format!("the {count} chunks ({bytes}) it had stored were removed again")
        }
        Ok(report) => format!(
            "of the {count} chunks ({bytes}) it had stored, {} ({}) were removed again; the rest are \
             used by another backup",
            report.deleted,
            human_bytes(report.bytes_freed)
        ),
        Err(e) => format!(
            "the {count} chunks ({bytes}) it had stored are held until `vmvault gc` removes them \
             (removing them now failed: {e})"
        ),
    };
    EngineError::Uncommitted { source: Box::new(error), after }
}

/// Whether the point these indexes belong to was committed after all (the failure came late).
async fn committed(vault: &UnlockedVault, stored: &StoredSoFar) -> bool {
    let Some(ObjectClass::Index { vm, point, .. }) = stored.indexes.first().map(|k| ObjectClass::of(k))
    else {
        return false;
    };
    // Unknown counts as committed: nothing is removed that a point may use.
    vault.vault().backend().head(&layout::manifest(vm, point)).await.map_or(true, |found| found.is_some())
}
