//! Protected items: a VM under a policy, and the life of its data when protection stops —
//! retained, or soft-deleted for a grace period during which it can be undeleted.
//! Stored in `catalog/items/<vm>.json`.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use vault::backend::Backend;
use vault::catalog;

use crate::error::{EngineError, Result};
use crate::names::check_name;
use crate::{policy, registry, settings};
use vault::layout::{self, ObjectKey};

/// Where an item is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectionState {
    /// Backed up and pruned by its policy.
    Protected,
    /// No more backups; every point is kept until the data is deleted.
    StoppedRetain,
    /// Data deleted by an operator; purged after `purge_after` unless undeleted.
    SoftDeleted,
}

impl ProtectionState {
    /// The name used in listings.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProtectionState::Protected => "protected",
            ProtectionState::StoppedRetain => "protection stopped, data retained",
            ProtectionState::SoftDeleted => "soft-deleted",
        }
    }
}

/// A VM under protection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedItem {
    /// The VM's name.
    pub vm: String,
    /// Its policy (kept when protection stops, for the record).
    pub policy: Option<String>,
    /// Disk labels not backed up.
    #[serde(default)]
    pub excluded_disks: Vec<String>,
    /// Where it is in its life.
    pub state: ProtectionState,
    /// When its policy last changed: a scheduler never makes up runs due before then.
    pub since: Timestamp,
    /// When its data was soft-deleted.
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
    /// When soft-deleted data is purged.
    #[serde(default)]
    pub purge_after: Option<Timestamp>,
    /// While set, no point of the item expires and its data cannot be deleted.
    #[serde(default)]
    pub delete_lock: bool,
}

/// What `unprotect` does with the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Keep every point.
    RetainData,
    /// Soft-delete the data.
    DeleteData,
}

fn key(vm: &str) -> ObjectKey {
    layout::item(vm)
}

/// The item of a VM, if it was ever protected.
pub async fn get(backend: &dyn Backend, vm: &str) -> Result<Option<ProtectedItem>> {
    check_name("VM", vm)?;
    Ok(catalog::read(backend, &key(vm)).await?)
}

/// Every item, by VM name.
pub async fn list(backend: &dyn Backend) -> Result<Vec<ProtectedItem>> {
    let mut out: Vec<ProtectedItem> = catalog::read_all(backend, &layout::items()).await?;
    out.sort_by(|a, b| a.vm.cmp(&b.vm));
    Ok(out)
}

async fn change(
    backend: &dyn Backend,
    vm: &str,
    edit: impl Fn(Option<ProtectedItem>) -> Result<ProtectedItem>,
) -> Result<ProtectedItem> {
    check_name("VM", vm)?;
    catalog::update(backend, &key(vm), edit).await
}

fn not_protected(vm: &str) -> EngineError {
    EngineError::Invalid(format!(
        "VM {vm:?} is not protected; protect it with `vmvault protect {vm} --policy P`"
    ))
}

/// Put a VM under a policy, or move it to another one. A longer retention keeps existing
/// points; a shorter one expires them at the next cleanup, not now.
pub async fn protect(
    backend: &dyn Backend,
    vm: &str,
    policy_name: &str,
    exclude: &[String],
    now: Timestamp,
) -> Result<ProtectedItem> {
    let record = registry::get(backend, vm).await?;
    policy::get(backend, policy_name).await?;
    for label in exclude {
        record.disk(label)?;
    }
    if record.disks.iter().all(|d| exclude.contains(&d.label)) {
        return Err(EngineError::Invalid(format!(
            "VM {vm:?}: excluding every disk leaves nothing to back up"
        )));
    }

    change(backend, vm, |current| match current {
        Some(item) if item.state == ProtectionState::SoftDeleted => Err(EngineError::Invalid(format!(
            "VM {vm:?}'s data is soft-deleted; run `vmvault undelete {vm}` before protecting it again"
        ))),
        current => Ok(ProtectedItem {
            vm: vm.to_string(),
            policy: Some(policy_name.to_string()),
            excluded_disks: exclude.to_vec(),
            state: ProtectionState::Protected,
            since: now,
            deleted_at: None,
            purge_after: None,
            delete_lock: current.is_some_and(|c| c.delete_lock),
        }),
    })
    .await
}

/// Stop protection, retaining the data or soft-deleting it.
pub async fn unprotect(
    backend: &dyn Backend,
    vm: &str,
    mode: StopMode,
    now: Timestamp,
) -> Result<ProtectedItem> {
    let days = settings::load(backend).await?.soft_delete_days;
    change(backend, vm, |current| {
        let mut item = current.ok_or_else(|| not_protected(vm))?;
        match mode {
            StopMode::RetainData => {
                if item.state == ProtectionState::SoftDeleted {
                    return Err(EngineError::Invalid(format!(
                        "VM {vm:?}'s data is soft-deleted; `vmvault undelete {vm}` retains it again"
                    )));
                }
                item.state = ProtectionState::StoppedRetain;
            }
            StopMode::DeleteData => {
                if item.delete_lock {
                    return Err(EngineError::Invalid(format!(
                        "VM {vm:?} has a delete lock; its data cannot be deleted until `vmvault unlock {vm}`"
                    )));
                }
                if item.state == ProtectionState::SoftDeleted {
                    return Ok(item);
                }
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
pub async fn undelete(backend: &dyn Backend, vm: &str) -> Result<ProtectedItem> {
    change(backend, vm, |current| {
        let mut item = current.ok_or_else(|| {
            EngineError::Invalid(format!(
                "VM {vm:?} has no soft-deleted data (it was never protected, or was purged)"
            ))
        })?;
        if item.state != ProtectionState::SoftDeleted {
            return Err(EngineError::Invalid(format!(
                "VM {vm:?} is not soft-deleted (it is {})",
                item.state.as_str()
            )));
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
pub async fn set_delete_lock(backend: &dyn Backend, vm: &str, locked: bool) -> Result<ProtectedItem> {
    change(backend, vm, |current| {
        let mut item = current.ok_or_else(|| not_protected(vm))?;
        item.delete_lock = locked;
        Ok(item)
    })
    .await
}

/// Refuse new backups (and restores) of soft-deleted data.
pub fn check_not_soft_deleted(item: Option<&ProtectedItem>, vm: &str) -> Result<()> {
    match item {
        Some(item) if item.state == ProtectionState::SoftDeleted => Err(EngineError::Invalid(format!(
            "VM {vm:?}'s data is soft-deleted (purged after {}); run `vmvault undelete {vm}` first",
            item.purge_after.map(|t| t.to_string()).unwrap_or_else(|| "the soft-delete period".into())
        ))),
        _ => Ok(()),
    }
}

/// Forget an item whose data was purged.
pub async fn forget(backend: &dyn Backend, vm: &str) -> Result<()> {
    backend.delete(&key(vm)).await?;
    Ok(())
}
