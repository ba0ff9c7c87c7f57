//! A consistency group's backup: one backup job per member, side by side, meeting at a
//! [`GroupRendezvous`] so that every member's point has the same instant.

use std::sync::Arc;

use vault::UnlockedVault;

use super::rendezvous::GroupRendezvous;
use super::{BackupOptions, BackupSummary, backup_job};
use crate::catalog::Catalog;
use crate::catalog::group::ConsistencyGroup;
use crate::error::{EngineError, Result};
use crate::jobs::JobRecord;
use crate::progress::Progress;

/// What a group backup did for one member.
pub struct MemberOutcome {
    /// The member VM.
    pub vm: String,
    /// Its backup and job, or why it failed.
    pub result: Result<(BackupSummary, JobRecord)>,
}

/// Back up every member of a group at one instant: one job per member, run side by side.
pub async fn backup_group(
    vault: Arc<UnlockedVault>,
    name: &str,
    options: BackupOptions,
    progress: impl Fn(&str) -> Arc<dyn Progress>,
) -> Result<Vec<MemberOutcome>> {
    let group: ConsistencyGroup = Catalog::of(vault.vault()).get(name).await?;
    let snapshot = GroupRendezvous::new(&group);
    let mut running = Vec::new();
    for vm in &group.members {
        let options = BackupOptions { group: Some(Arc::clone(&snapshot)), ..options.clone() };
        let (vault, vm, snapshot, progress) =
            (Arc::clone(&vault), vm.clone(), Arc::clone(&snapshot), progress(vm));
        running.push(tokio::spawn(async move {
            let result = backup_job(vault, &vm, options, progress).await;
            if let Err(e) = &result {
                snapshot.fail(&vm, &e.to_string());
            }
            MemberOutcome { vm, result }
        }));
    }
    let mut outcomes = Vec::new();
    for (vm, task) in group.members.iter().zip(running) {
        outcomes.push(task.await.unwrap_or_else(|e| MemberOutcome {
            vm: vm.clone(),
            result: Err(EngineError::Invalid(format!("backup of {vm} stopped: {e}"))),
        }));
    }
    Ok(outcomes)
}
