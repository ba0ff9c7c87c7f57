//! Creating and deleting consistency groups.

use jiff::Timestamp;

use crate::catalog::Catalog;
use crate::catalog::group::ConsistencyGroup;
use crate::catalog::vm::VmRecord;
use crate::error::{EngineError, Result};

/// Store a new group of registered VMs (at least two, each once).
pub async fn create(catalog: Catalog<'_>, name: &str, members: &[String]) -> Result<ConsistencyGroup> {
    for (i, vm) in members.iter().enumerate() {
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
    check_registered(catalog, members).await?;
    let group =
        ConsistencyGroup { name: name.to_string(), members: members.to_vec(), created: Timestamp::now() };
    catalog.create(&group).await?;
    // Re-check after the write: a member removed meanwhile undoes the group.
    if let Err(e) = check_registered(catalog, members).await {
        catalog.forget::<ConsistencyGroup>(name).await?;
        return Err(e);
    }
    Ok(group)
}

async fn check_registered(catalog: Catalog<'_>, members: &[String]) -> Result<()> {
    for vm in members {
        catalog.get::<VmRecord>(vm).await?;
    }
    Ok(())
}

/// Forget a group; its members and their points stay.
pub async fn delete(catalog: Catalog<'_>, name: &str) -> Result<()> {
    catalog.delete::<ConsistencyGroup>(name).await?;
    Ok(())
}
