//! Protected items: a VM under a policy and the state of its data, in
//! `catalog/items/<vm>.json`. The rules of their life (protect, stop, soft delete, undelete)
//! are [`crate::services::protection`].

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vault::layout::{self, ObjectKey, Prefix};

use super::Record;
use crate::error::Record as RecordKind;

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

impl Record for ProtectedItem {
    const KIND: RecordKind = RecordKind::Item;
    fn object_key(vm: &str) -> ObjectKey {
        layout::item(vm)
    }
    fn prefix() -> Prefix {
        layout::items()
    }
    fn name(&self) -> &str {
        &self.vm
    }
}
