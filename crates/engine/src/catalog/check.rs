//! Verify's look at the catalog: every record a backup, a restore or a listing reads must parse. A
//! damaged one is named with the VM it concerns, in the same report as damaged points.

use serde::de::DeserializeOwned;
use vault::ObjectClass;
use vault::layout::{self, Prefix};
use vault::verify::{ChunkUse, Damage};

use super::checkpoint::Checkpoints;
use super::group::ConsistencyGroup;
use super::item::ProtectedItem;
use super::job::JobRecord;
use super::policy::Policy;
use super::settings::Settings;
use super::verified::VerifyRecord;
use super::vm::VmRecord;
use super::{Catalog, Record};
use crate::error::Result;

/// The damaged catalog documents: of one VM (its registration, protection and change
/// tracking) or, with `None`, of the whole vault (checkpoints of VMs no longer registered too).
pub async fn damaged_records(catalog: Catalog<'_>, vm: Option<&str>) -> Result<Vec<Damage>> {
    let mut out = Vec::new();
    match vm {
        Some(vm) => {
            let (record, item, checkpoints) = (layout::vm(vm), layout::item(vm), layout::checkpoints(vm));
            let verified = layout::verified(vm);
            out.extend(check::<VmRecord>(catalog, &record).await?.map(|p| damage(&record, p)));
            out.extend(check::<ProtectedItem>(catalog, &item).await?.map(|p| damage(&item, p)));
            out.extend(check::<Checkpoints>(catalog, &checkpoints).await?.map(|p| damage(&checkpoints, p)));
            out.extend(check::<VerifyRecord>(catalog, &verified).await?.map(|p| damage(&verified, p)));
        }
        None => {
            out.extend(check_all::<VmRecord>(catalog, VmRecord::prefix()).await?);
            out.extend(check_all::<Policy>(catalog, Policy::prefix()).await?);
            out.extend(check_all::<ProtectedItem>(catalog, ProtectedItem::prefix()).await?);
            out.extend(check_all::<ConsistencyGroup>(catalog, ConsistencyGroup::prefix()).await?);
            out.extend(check_all::<JobRecord>(catalog, layout::jobs()).await?);
            out.extend(check_all::<Checkpoints>(catalog, layout::checkpoint_documents()).await?);
            out.extend(check_all::<VerifyRecord>(catalog, layout::verified_documents()).await?);
            let settings = layout::settings();
            out.extend(check::<Settings>(catalog, &settings).await?.map(|p| damage(&settings, p)));
        }
    }
    Ok(out)
}

/// Every `.json` document under `prefix` that does not parse as a `T`.
async fn check_all<T: DeserializeOwned>(catalog: Catalog<'_>, prefix: Prefix) -> Result<Vec<Damage>> {
    let mut out = Vec::new();
    for object in catalog.backend().list(&prefix).await? {
        if object.key.ends_with(".json")
            && let Some(problem) = check::<T>(catalog, &object.key).await?
        {
            out.push(damage(&object.key, problem));
        }
    }
    Ok(out)
}

/// Why the document at `key` does not parse as a `T`, if it does not (absent is fine).
async fn check<T: DeserializeOwned>(catalog: Catalog<'_>, key: &str) -> Result<Option<String>> {
    match vault::catalog::read::<T>(catalog.backend(), key).await {
        Ok(_) => Ok(None),
        Err(e) if e.kind() == vault::ErrorKind::Damaged => Ok(Some(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

fn damage(key: &str, problem: String) -> Damage {
    let affects = ObjectClass::of(key)
        .vm()
        .map(|vm| ChunkUse { vm: vm.to_string(), point: String::new(), disk: String::new(), offsets: vec![] })
        .into_iter()
        .collect();
    Damage { object: key.to_string(), problem, affects }
}
