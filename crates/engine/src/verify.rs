//! Verify as an operator runs it: the vault's points ([`vault::verify`]), the catalog
//! documents backups and restores read ([`crate::catalog::check`]), and a record of what was
//! found in each point ([`crate::catalog::verified`]) that `points` and the next backup read.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use vault::UnlockedVault;
use vault::layout::{self, ObjectClass};
use vault::verify::{VerifyReport, VerifyScope};

use crate::catalog::verified::{self, Finding, PointVerdict};
use crate::catalog::vm::VmRecord;
use crate::catalog::{Catalog, check};
use crate::error::{EngineError, Record, Result};

/// Refuse a scope that names nothing: a VM that neither is registered nor has points, or a
/// point it does not have. "Checked 0 points" must never pass for a clean bill.
pub async fn check_scope(vault: &UnlockedVault, vm: Option<&str>, point: Option<&str>) -> Result<()> {
    let Some(vm) = vm else {
        if point.is_some() {
            return Err(EngineError::Invalid("--point needs the VM it belongs to".into()));
        }
        return Ok(());
    };
    crate::names::check_name("VM", vm)?;
    let registered = Catalog::of(vault.vault()).find::<VmRecord>(vm).await?.is_some();
    let points = point_ids(vault, vm).await?;
    if !registered && points.is_empty() {
        return Err(EngineError::not_found(Record::Vm, vm));
    }
    if let Some(point) = point
        && !points.contains(point)
    {
        return Err(EngineError::NoSuchPoint { vm: vm.to_string(), point: point.to_string() });
    }
    Ok(())
}

/// Points by their manifests' names: a damaged manifest is still a point to verify.
async fn point_ids(vault: &UnlockedVault, vm: &str) -> Result<HashSet<String>> {
    let objects = vault.vault().backend().list(&layout::points_of(vm)).await?;
    Ok(objects
        .iter()
        .filter_map(|o| match ObjectClass::of(&o.key) {
            ObjectClass::Manifest { point, .. } => Some(point.to_string()),
            _ => None,
        })
        .collect())
}

/// Verify `scope` (checked first with [`check_scope`], before a job is started for it), check
/// the catalog documents it covers, and record per point what was found (`job`: the verify
/// job's id, for the record).
pub async fn run(vault: &UnlockedVault, scope: &VerifyScope, job: Option<&str>) -> Result<VerifyReport> {
    let mut report = vault::verify::verify(vault.vault(), Some(vault.keys()), scope).await?;
    record_verdicts(vault, &report, scope.point.is_some(), job).await?;
    let catalog = Catalog::of(vault.vault());
    report.damage.extend(check::damaged_records(catalog, scope.vm.as_deref()).await?);
    Ok(report)
}

/// One verdict per point checked, written to each VM's verify record. A verify of every point
/// of a VM knows which exist; one of a single point (`one_point`) lists them.
async fn record_verdicts(
    vault: &UnlockedVault,
    report: &VerifyReport,
    one_point: bool,
    job: Option<&str>,
) -> Result<()> {
    let at = Timestamp::now();
    let mut by_vm: BTreeMap<&str, BTreeMap<String, PointVerdict>> = BTreeMap::new();
    for (vm, point) in &report.checked {
        let damage = report
            .damage
            .iter()
            .filter(|d| d.affects.iter().any(|u| &u.vm == vm && &u.point == point))
            .map(|d| Finding { object: d.object.clone(), problem: d.problem.clone() })
            .collect();
        let verdict = PointVerdict {
            at,
            read_data: report.read_data,
            job: job.map(str::to_string),
            damage,
            repaired: vec![],
        };
        by_vm.entry(vm).or_default().insert(point.clone(), verdict);
    }
    let catalog = Catalog::of(vault.vault());
    for (vm, verdicts) in by_vm {
        let existing = match one_point {
            true => point_ids(vault, vm).await?,
            false => verdicts.keys().cloned().collect(),
        };
        verified::record(catalog, vm, &verdicts, &existing).await?;
    }
    vault.vault().backend().flush().await?;
    Ok(())
}
