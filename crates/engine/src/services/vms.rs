//! Registering and removing VMs.

use crate::catalog::Catalog;
use crate::catalog::group::ConsistencyGroup;
use crate::catalog::item::{ProtectedItem, ProtectionState};
use crate::catalog::vm::VmRecord;
use crate::catalog::{checkpoint, group};
use crate::error::{EngineError, Result};
use crate::scripts::ScriptConfig;

/// Register a VM; refuses a name already taken.
pub async fn add(catalog: Catalog<'_>, record: VmRecord) -> Result<VmRecord> {
    catalog.create(&record).await?;
    Ok(record)
}

/// Set (or, with `None`, clear) the pre/post-snapshot scripts of a VM.
pub async fn set_scripts(
    catalog: Catalog<'_>,
    name: &str,
    scripts: Option<ScriptConfig>,
) -> Result<VmRecord> {
    catalog
        .update(name, |mut vm: VmRecord| {
            vm.scripts = scripts.clone();
            Ok(vm)
        })
        .await
}

/// Forget a VM; its recovery points stay in the vault. A protected VM must be unprotected
/// first, so no schedule is left pointing at nothing, and a member of a consistency group
/// must leave it (the group deleted) first.
pub async fn remove(catalog: Catalog<'_>, name: &str) -> Result<()> {
    super::delete_unreferenced::<VmRecord, _, _>(catalog, name, || refuse_if_referenced(catalog, name))
        .await?;
    checkpoint::forget(catalog, name).await?;
    catalog.backend().flush().await?;
    Ok(())
}

async fn refuse_if_referenced(catalog: Catalog<'_>, name: &str) -> Result<()> {
    if let Some(item) = catalog.find::<ProtectedItem>(name).await?
        && item.state == ProtectionState::Protected
    {
        let policy = item.policy.as_deref().unwrap_or("?");
        return Err(EngineError::refused(
            format!("VM {name:?} is protected by policy {policy}"),
            format!("run `vmvault unprotect {name} --retain-data` first"),
        ));
    }
    if let Some(group) = group::of_vm(&catalog.list::<ConsistencyGroup>().await?, name).first() {
        return Err(EngineError::refused(
            format!("VM {name:?} is a member of consistency group {group}"),
            format!("run `vmvault group delete {group}` first"),
        ));
    }
    Ok(())
}
