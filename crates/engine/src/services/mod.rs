//! The rules that span catalog records, each in one place:
//!
//! | rule | where |
//! | --- | --- |
//! | a protected item's VM is registered, its policy exists, its excluded disks are the VM's and leave one | [`protection::protect`] |
//! | soft-deleted data is not protected, backed up or restored until undeleted; a delete lock refuses deleting data | [`protection`] |
//! | a protected VM, or a member of a group, cannot be removed | [`vms::remove`] |
//! | a policy that protects an item cannot be deleted | [`policies::delete`] |
//! | a group has at least two registered VMs, each once | [`groups::create`] |
//!
//! The store swaps one document at a time, so a rule that spans two documents cannot be one
//! swap. Each is kept by *write, then re-check, undo on conflict*: the side that creates a
//! reference (protect, group create) writes it and then checks that what it references still
//! exists; the side that removes a referent (VM remove, policy delete) removes it and then
//! checks for references. Two racing requests each write before they check, so at least one
//! sees the other and undoes its own write: the rule holds however they interleave.

pub mod groups;
pub mod policies;
pub mod protection;
pub mod vms;

use std::future::Future;

use crate::catalog::{Catalog, Record};
use crate::error::{EngineError, Result};

/// Delete the record `name` unless `referenced` refuses — asked before the delete and again
/// after it; if a reference got in meanwhile, the record is put back and the refusal returned.
async fn delete_unreferenced<R, F, Fut>(catalog: Catalog<'_>, name: &str, referenced: F) -> Result<R>
where
    R: Record + Sync,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let record: R = catalog.get(name).await?;
    referenced().await?;
    catalog.forget::<R>(name).await?;
    if let Err(refusal) = referenced().await {
        match catalog.create(&record).await {
            Ok(()) | Err(EngineError::Exists { .. }) => {}
            Err(undo) => return Err(undo),
        }
        return Err(refusal);
    }
    Ok(record)
}
