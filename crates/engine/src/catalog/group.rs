//! Consistency groups: VMs that make up one application and are backed up at one instant, in
//! `catalog/groups/<name>.json` (the group backup itself is [`crate::backup::group`]).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vault::layout::{self, ObjectKey, Prefix};

use super::Record;
use crate::error::Record as RecordKind;

/// A consistency group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyGroup {
    /// Unique name.
    pub name: String,
    /// Its VMs, in the order given.
    pub members: Vec<String>,
    /// When it was created.
    pub created: Timestamp,
}

impl Record for ConsistencyGroup {
    const KIND: RecordKind = RecordKind::Group;
    fn object_key(name: &str) -> ObjectKey {
        layout::group(name)
    }
    fn prefix() -> Prefix {
        layout::groups()
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// The names of the groups among `groups` that `vm` belongs to.
pub fn of_vm<'a>(groups: &'a [ConsistencyGroup], vm: &str) -> Vec<&'a str> {
    groups.iter().filter(|g| g.members.iter().any(|m| m == vm)).map(|g| g.name.as_str()).collect()
}
