//! Cleanup: apply each item's retention to its points, and purge soft-deleted data whose
//! period is over. Deleting a point removes its manifest first (the point stops existing
//! atomically), then its indexes; its chunks are left for GC.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vault::Manifest;

use crate::catalog::item::{ProtectedItem, ProtectionState};
use crate::catalog::job::JobRecord;
use crate::catalog::policy::Policy;
use crate::catalog::{Catalog, checkpoint, verified};
use crate::error::Result;
use crate::jobs::{Operation, run_job};
use crate::points::PointReader;
use crate::retention::{PointFacts, Verdict, on_demand_verdict};
use vault::gc::{GcOptions, GcReport};
use vault::layout;

/// What cleanup decided for one point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PointVerdict {
    /// Point id.
    pub point: String,
    /// Snapshot time.
    pub time: Timestamp,
    /// Keep or expire, and why.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What cleanup did (or, dry, would do) to one VM's data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PruneReport {
    /// The VM.
    pub vm: String,
    /// Every point with its verdict, oldest first.
    pub points: Vec<PointVerdict>,
    /// The soft-delete period ended and all the VM's data was purged.
    pub purged: bool,
    /// Points left alone because they cannot be read (remove them with `points delete
    /// --damaged`).
    #[serde(default)]
    pub damaged: Vec<DamagedNote>,
}

/// A point a cleanup left alone, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DamagedNote {
    /// Point id.
    pub point: String,
    /// What is wrong with it.
    pub problem: String,
}

impl PruneReport {
    /// Points expired (or purged).
    pub fn expired(&self) -> impl Iterator<Item = &PointVerdict> {
        self.points.iter().filter(|p| !p.verdict.keeps())
    }
}

/// Every VM that has points in the vault, registered or not.
pub async fn vms_with_points(vault: &vault::Vault) -> Result<Vec<String>> {
    let mut names = BTreeSet::new();
    for object in vault.backend().list(&layout::points()).await? {
        if let Some(vm) = layout::vm_under_points(&object.key) {
            names.insert(vm.to_string());
        }
    }
    Ok(names.into_iter().collect())
}

/// The verdict on each of a VM's points under its protection state at `now`.
pub async fn verdicts(
    vault: &vault::Vault,
    item: Option<&ProtectedItem>,
    manifests: &[Manifest],
    now: Timestamp,
) -> Result<Vec<Verdict>> {
    let facts: Vec<PointFacts> = manifests
        .iter()
        .map(|m| PointFacts {
            id: m.point_id.clone(),
            time: m.time,
            kind: m.kind,
            retain_until: m.retain_until,
        })
        .collect();
    let keep_all = |why: &str| facts.iter().map(|_| Verdict::Keep(vec![why.to_string()])).collect();
    Ok(match item {
        Some(item) if item.delete_lock => keep_all("delete lock"),
        Some(item) if item.state == ProtectionState::SoftDeleted => keep_all("soft-deleted, awaiting purge"),
        Some(item) if item.state == ProtectionState::StoppedRetain => {
            keep_all("protection stopped, data retained")
        }
        Some(ProtectedItem { policy: Some(name), .. }) => {
            let policy: Policy = Catalog::of(vault).get(name).await?;
            policy.retention.evaluate(&facts, &policy.tz()?, now)
        }
        _ => facts
            .iter()
            .map(|p| match p.kind {
                vault::PointKind::OnDemand => on_demand_verdict(p, now),
                vault::PointKind::Scheduled => {
                    Verdict::Keep(vec!["scheduled, and the VM has no policy".into()])
                }
            })
            .collect(),
    })
}

/// Clean up one VM (`Some`) or every VM with points. Dry runs change nothing. A client passes
/// its unlocked vault; a server, which has no key, the vault itself (see [`PointReader`]).
pub async fn prune<'a>(
    reader: impl Into<PointReader<'a>>,
    vm: Option<&str>,
    now: Timestamp,
    dry_run: bool,
) -> Result<Vec<PruneReport>> {
    let reader = reader.into();
    let vault = reader.vault();
    let backend = vault.backend().clone();
    let names = match vm {
        Some(name) => vec![name.to_string()],
        None => vms_with_points(vault).await?,
    };
    let mut reports = Vec::new();
    for name in names {
        let catalog = Catalog::of(vault);
        let item: Option<ProtectedItem> = catalog.find(&name).await?;
        // A damaged point is left alone and named: retention never decides about what it
        // cannot read, and one damaged point never stops the cleanup of the others.
        let (manifests, damaged) = reader.scan(&name).await?;
        let damaged = damaged
            .into_iter()
            .map(|d| DamagedNote { point: d.point, problem: d.cause.to_string() })
            .collect();
        let purge = item.as_ref().is_some_and(|i| {
            i.state == ProtectionState::SoftDeleted
                && !i.delete_lock
                && i.purge_after.is_some_and(|t| now >= t)
        });
        let verdicts = if purge {
            manifests.iter().map(|_| Verdict::Expire("soft-delete period over: purged".to_string())).collect()
        } else {
            verdicts(vault, item.as_ref(), &manifests, now).await?
        };
        let report = PruneReport {
            vm: name.clone(),
            points: manifests
                .iter()
                .zip(verdicts)
                .map(|(m, verdict)| PointVerdict { point: m.point_id.clone(), time: m.time, verdict })
                .collect(),
            purged: purge,
            damaged,
        };
        if !dry_run {
            for (manifest, verdict) in manifests.iter().zip(&report.points) {
                if !verdict.verdict.keeps() {
                    delete_point(vault, manifest).await?;
                }
            }
            backend.flush().await?;
            if purge {
                catalog.forget::<ProtectedItem>(&name).await?;
                checkpoint::forget(catalog, &name).await?;
                verified::forget(catalog, &name).await?;
            }
        }
        reports.push(report);
    }
    if vm.is_none() && !dry_run {
        crate::catalog::job::forget_old(Catalog::of(vault), now).await?;
    }
    Ok(reports)
}

/// Remove one point: its manifest first, then its indexes.
pub async fn delete_point(vault: &vault::Vault, manifest: &Manifest) -> Result<()> {
    let backend = vault.backend();
    backend.delete(&layout::manifest(&manifest.vm, &manifest.point_id)).await?;
    for disk in &manifest.disks {
        backend.delete(&disk.index).await?;
    }
    Ok(())
}

/// Retention as a job (recorded, cancellable); each damaged point it left alone is a warning.
pub async fn prune_job<'a>(
    reader: impl Into<PointReader<'a>>,
    vm: Option<&str>,
    now: Timestamp,
    dry_run: bool,
) -> Result<(Vec<PruneReport>, JobRecord)> {
    let reader = reader.into();
    let backend = std::sync::Arc::clone(reader.vault().backend());
    run_job(backend, Operation::Prune, vm, std::sync::Arc::new(crate::NoProgress), |job| async move {
        let reports = prune(reader, vm, now, dry_run).await?;
        for report in &reports {
            for d in &report.damaged {
                job.warn(format!("point {}/{} left alone: {}", report.vm, d.point, d.problem));
            }
        }
        Ok(reports)
    })
    .await
}

/// Garbage collection as a job (cancellable with `job cancel`); each damaged point it met is
/// a warning.
pub async fn gc_job(vault: vault::Vault, options: GcOptions) -> Result<(GcReport, JobRecord)> {
    let backend = std::sync::Arc::clone(vault.backend());
    run_job(backend, Operation::Gc, None, std::sync::Arc::new(crate::NoProgress), |job| async move {
        let options = GcOptions { cancel: job.cancel_flag(), ..options };
        let report = vault::gc::collect(vault, options).await?;
        for damaged in &report.damaged_points {
            job.warn(format!("point {damaged}: its chunks were kept"));
        }
        Ok(report)
    })
    .await
}
