//! Consistency groups: VMs that make up one application and are backed up at one instant
//! (the group backup itself is [`crate::backup::group`]).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vault::backend::Backend;
use vault::catalog;
use vault::layout::{self, ObjectKey};

use crate::error::{EngineError, Result};
use crate::names::check_name;

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

fn key(name: &str) -> ObjectKey {
    layout::group(name)
}

fn no_group(name: &str) -> EngineError {
    EngineError::Invalid(format!("no consistency group {name:?}; see `vmvault group list`"))
}

/// Store a new group of registered VMs (at least two, each once).
pub async fn create(backend: &dyn Backend, name: &str, members: &[String]) -> Result<ConsistencyGroup> {
    check_name("group", name)?;
    for (i, vm) in members.iter().enumerate() {
        crate::registry::get(backend, vm).await?;
        if members[..i].contains(vm) {
            return Err(EngineError::Invalid(format!("VM {vm:?} is named twice; name each member once")));
        }
    }
    if members.len() < 2 {
        return Err(EngineError::Invalid(format!(
            "a consistency group needs at least two VMs; {name:?} was given {}",
            members.len()
        )));
    }
    let group =
        ConsistencyGroup { name: name.to_string(), members: members.to_vec(), created: Timestamp::now() };
    match catalog::create(backend, &key(name), &group).await {
        Err(vault::VaultError::Conflict { .. }) => Err(EngineError::Invalid(format!(
            "consistency group {name:?} exists; delete it first (`vmvault group delete {name}`) or pick another name"
        ))),
        other => other.map(|()| group).map_err(Into::into),
    }
}

/// One group by name.
pub async fn get(backend: &dyn Backend, name: &str) -> Result<ConsistencyGroup> {
    check_name("group", name)?;
    catalog::read(backend, &key(name)).await?.ok_or_else(|| no_group(name))
}

/// Every group, by name.
pub async fn list(backend: &dyn Backend) -> Result<Vec<ConsistencyGroup>> {
    let mut out: Vec<ConsistencyGroup> = catalog::read_all(backend, &layout::groups()).await?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The groups a VM belongs to.
pub async fn of_vm(backend: &dyn Backend, vm: &str) -> Result<Vec<String>> {
    Ok(list(backend)
        .await?
        .into_iter()
        .filter(|g| g.members.iter().any(|m| m == vm))
        .map(|g| g.name)
        .collect())
}

/// Forget a group; its members and their points stay.
pub async fn delete(backend: &dyn Backend, name: &str) -> Result<()> {
    get(backend, name).await?;
    Ok(backend.delete(&key(name)).await?)
}
