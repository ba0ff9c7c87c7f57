//! The life of a protected item: protect, stop protection (retaining or soft-deleting its
//! data), undelete, the delete lock — and what soft-deleted data forbids.

use jiff::{SignedDuration, Timestamp};

use crate::catalog::item::{ProtectedItem, ProtectionState};
use crate::catalog::policy::Policy;
use crate::catalog::vm::VmRecord;
use crate::catalog::{Catalog, settings};
use crate::error::{EngineError, Result};

/// What `unprotect` does with the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Keep every point.
    RetainData,
    /// Soft-delete the data.
    DeleteData,
}

fn not_protected(vm: &str) -> EngineError {
    EngineError::refused(
        format!("VM {vm:?} is not protected"),
        format!("protect it with `vmvault protect {vm} --policy P`"),
    )
}

fn soft_deleted(vm: &str, item: &ProtectedItem) -> EngineError {
    let purge = item.purge_after.map(|t| t.to_string()).unwrap_or_else(|| "the soft-delete period".into());
    EngineError::refused(
        format!("VM {vm:?}'s data is soft-deleted (purged after {purge})"),
        format!("run `vmvault undelete {vm}` first"),
    )
}

/// Put a VM under a policy, or move it to another one. A longer retention keeps existing
/// points; a shorter one expires them at the next cleanup, not now.
pub async fn protect(
    catalog: Catalog<'_>,
    vm: &str,
    policy: &str,
    exclude: &[String],
    now: Timestamp,
) -> Result<ProtectedItem> {
    check_protectable(catalog, vm, policy, exclude).await?;
    let before: Option<ProtectedItem> = catalog.find(vm).await?;
    let item = catalog
        .upsert(vm, |current: Option<ProtectedItem>| match current {
            Some(item) if item.state == ProtectionState::SoftDeleted => Err(soft_deleted(vm, &item)),
            current => Ok(ProtectedItem {
                vm: vm.to_string(),
                policy: Some(policy.to_string()),
                excluded_disks: exclude.to_vec(),
                state: ProtectionState::Protected,
                since: now,
                deleted_at: None,
                purge_after: None,
                delete_lock: current.as_ref().is_some_and(|c| c.delete_lock),
            }),
        })
        .await?;
    // Re-check after the write: a VM removed or a policy deleted meanwhile undoes it.
    if let Err(e) = check_protectable(catalog, vm, policy, exclude).await {
        match before {
            None => catalog.forget::<ProtectedItem>(vm).await?,
            Some(before) => {
                catalog.upsert(vm, |_: Option<ProtectedItem>| Ok(before.clone())).await?;
            }
        }
        return Err(e);
    }
    Ok(item)
}

async fn check_protectable(catalog: Catalog<'_>, vm: &str, policy: &str, exclude: &[String]) -> Result<()> {
    let record: VmRecord = catalog.get(vm).await?;
    catalog.get::<Policy>(policy).await?;
    for label in exclude {
        record.disk(label)?;
    }
    if record.disks.iter().all(|d| exclude.contains(&d.label)) {
        return Err(EngineError::Invalid(format!(
            "VM {vm:?}: excluding every disk leaves nothing to back up"
        )));
    }
    Ok(())
}

/// Stop protection, retaining the data or soft-deleting it.
pub async fn unprotect(
    catalog: Catalog<'_>,
    vm: &str,
    mode: StopMode,
    now: Timestamp,
) -> Result<ProtectedItem> {
    let days = settings::load(catalog).await?.soft_delete_days;
    catalog
        .upsert(vm, |current: Option<ProtectedItem>| {
            let mut item = current.ok_or_else(|| not_protected(vm))?;
            match mode {
                StopMode::RetainData if item.state == ProtectionState::SoftDeleted => {
                    return Err(EngineError::refused(
                        format!("VM {vm:?}'s data is soft-deleted"),
                        format!("`vmvault undelete {vm}` retains it again"),
                    ));
                }
                StopMode::RetainData => item.state = ProtectionState::StoppedRetain,
                StopMode::DeleteData if item.delete_lock => {
                    return Err(EngineError::refused(
                        format!("VM {vm:?} has a delete lock; its data cannot be deleted"),
                        format!("lift it with `vmvault unlock {vm}` first"),
                    ));
                }
                StopMode::DeleteData if item.state == ProtectionState::SoftDeleted => {}
                StopMode::DeleteData => {
                    item.state = ProtectionState::SoftDeleted;
                    item.deleted_at = Some(now);
                    item.purge_after = now.checked_add(SignedDuration::from_hours(24 * i64::from(days))).ok();
                }
            }
            Ok(item)
        })
        .await
}

/// Bring soft-deleted data back: the item returns to "protection stopped, data retained".
pub async fn undelete(catalog: Catalog<'_>, vm: &str) -> Result<ProtectedItem> {
    catalog
        .upsert(vm, |current: Option<ProtectedItem>| {
            let mut item = current.ok_or_else(|| {
                EngineError::refused(
                    format!("VM {vm:?} has no soft-deleted data (it was never protected, or was purged)"),
                    "see `vmvault items`",
                )
            })?;
            if item.state != ProtectionState::SoftDeleted {
                return Err(EngineError::Refused {
                    message: format!("VM {vm:?} is not soft-deleted (it is {})", item.state.as_str()),
                    hint: None,
                });
            }
            item.state = ProtectionState::StoppedRetain;
            item.deleted_at = None;
            item.purge_after = None;
            Ok(item)
        })
        .await
}

/// Set or clear the delete lock of a protected item: while set, none of its points expires
/// and its data cannot be deleted.
pub async fn set_delete_lock(catalog: Catalog<'_>, vm: &str, locked: bool) -> Result<ProtectedItem> {
    catalog
        .upsert(vm, |current: Option<ProtectedItem>| {
            let mut item = current.ok_or_else(|| not_protected(vm))?;
            item.delete_lock = locked;
            Ok(item)
        })
        .await
}

/// Refuse new backups (and restores) of soft-deleted data.
pub fn check_not_soft_deleted(item: Option<&ProtectedItem>, vm: &str) -> Result<()> {
    match item {
        Some(item) if item.state == ProtectionState::SoftDeleted => Err(soft_deleted(vm, item)),
        _ => Ok(()),
    }
}
