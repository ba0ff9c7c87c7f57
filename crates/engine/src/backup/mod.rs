//! Backup of a VM: snapshot phase (a stopped VM's images locked and change tracking started,
//! [`stopped`]; a running VM's disks frozen in one QMP transaction, [`live`]), transfer phase
//! (read only what is needed, [`read`]), commit (indexes, then the manifest, last). Until the
//! commit everything the backup changed on the host is held by a [`pending::Pending`], which
//! undoes it when dropped — on any error, cancel or panic.

pub mod group;
#[cfg(feature = "libvirt")]
mod libvirt;
#[cfg(feature = "libvirt")]
mod libvirt_job;
mod live;
mod options;
mod pending;
mod plan;
mod read;
pub mod rendezvous;
mod shutdown;
mod snapshot;
mod stopped;
mod undo;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use vault::layout;
use vault::session::{Rescue, Session};
use vault::{ChunkId, Consistency, FixedIndex, Manifest, ManifestDisk, PointGroup, UnlockedVault};

use crate::catalog::checkpoint::{self, Checkpoint, Checkpoints, bitmap_name};
use crate::catalog::item::ProtectedItem;
use crate::catalog::policy::Policy;
use crate::catalog::verified;
use crate::catalog::vm::{DiskRecord, VmRecord};
use crate::catalog::{Catalog, settings};
use crate::error::{EngineError, ErrorKind, Result};
use crate::ledger::{Repairs, Stored};
use crate::points::{self, new_point_id};
use crate::progress::Progress;
use crate::transfer::Transfer;
pub use options::{BackupOptions, default_scratch};
use pending::{Committed, Pending};
use plan::Prepared;
use plan::{Bases, Plan};
use read::DiskResult;
use snapshot::{runner, snapshot_and_read};

/// How one disk was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Every allocated extent.
    Full,
    /// Only extents a dirty bitmap marks.
    Incremental,
}

/// What a backup did to one disk.
#[derive(Clone, Debug, Serialize)]
pub struct DiskSummary {
    /// Disk label.
    pub label: String,
    /// Logical size.
    pub size: u64,
    /// Full or incremental read.
    pub mode: ReadMode,
    /// Bytes read from the disk.
    pub bytes_read: u64,
    /// Stored bytes added to the vault.
    pub bytes_new: u64,
    /// Bytes read that were zeros.
    pub bytes_zero: u64,
    /// Why a full read was made where an incremental was possible.
    pub note: Option<String>,
}

/// What a backup did.
#[derive(Clone, Debug, Serialize)]
pub struct BackupSummary {
    /// The new point.
    pub point_id: String,
    /// The VM.
    pub vm: String,
    /// Snapshot time.
    pub time: Timestamp,
    /// Consistency reached.
    pub consistency: Consistency,
    /// Bytes read from all disks.
    pub bytes_read: u64,
    /// Stored bytes added to the vault.
    pub bytes_new: u64,
    /// Bytes read that were zeros.
    pub bytes_zero: u64,
    /// Sum of the disks' logical sizes.
    pub logical_bytes: u64,
    /// Wall-clock seconds.
    pub duration_s: f64,
    /// Per disk.
    pub disks: Vec<DiskSummary>,
    /// Things the operator should know (fallbacks, clean-up problems).
    pub notes: Vec<String>,
    /// A running VM's pause: from the freeze to the thaw (the snapshot transaction alone when
    /// nothing froze); in a group, this member's freeze to its thaw.
    pub freeze_to_thaw_ms: Option<u64>,
    /// The consistency group and its shared instant, for a group backup.
    pub group: Option<PointGroup>,
}

/// Back up a VM as a job: recorded, cancellable from another process, notes as warnings.
pub async fn backup_job(
    vault: Arc<UnlockedVault>,
    vm: &str,
    options: BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<(BackupSummary, crate::jobs::JobRecord)> {
    let backend = Arc::clone(vault.vault().backend());
    crate::jobs::run_job(backend, crate::jobs::Operation::Backup, Some(vm), progress, |job| async move {
        let options = BackupOptions { cancel: job.cancel_flag(), job_id: job.id(), ..options };
        let summary = backup(vault, vm, options, Arc::new(job.clone())).await?;
        job.set_point(&summary.point_id);
        if let Some(ms) = summary.freeze_to_thaw_ms {
            job.set_freeze_to_thaw_ms(ms);
        }
        summary.notes.iter().for_each(|note| job.warn(note.clone()));
        Ok(summary)
    })
    .await
}

/// Back up a stopped VM into a new recovery point.
pub async fn backup(
    vault: Arc<UnlockedVault>,
    vm_name: &str,
    options: BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupSummary> {
    let backend = vault.vault().backend().clone();
    let vm: VmRecord = Catalog::of(vault.vault()).get(vm_name).await?;
    // One backup of a VM at a time; the session also keeps what it reuses from GC.
    let session = Arc::new(
        Session::begin(
            Arc::clone(&backend),
            &layout::backup_session_name(&vm.name),
            &options.job_id,
            options.session_lease,
        )
        .await?,
    );
    let stored = Arc::new(Stored::default());
    let result = backup_in_session(
        Arc::clone(&vault),
        vm,
        Arc::clone(&session),
        options,
        progress,
        Arc::clone(&stored),
    )
    .await;
    // The pipeline's threads are done with the session: end it (or let its lease run out).
    let ended = match Arc::try_unwrap(session) {
        Ok(session) => session.end().await,
        Err(_) => Ok(()),
    };
    match result {
        Ok(summary) => ended.map(|_| summary).map_err(EngineError::from),
        // With the session over, what it stored can be collected.
        Err(e) => Err(undo::after_failure(&vault, e, stored.take()).await),
    }
}

/// What the manifest and the summary say of the point.
struct PointFacts<'a> {
    vm: &'a str,
    point_id: &'a str,
    time: Timestamp,
    consistency: Consistency,
}

async fn backup_in_session(
    vault: Arc<UnlockedVault>,
    vm: VmRecord,
    session: Arc<Session>,
    options: BackupOptions,
    progress: Arc<dyn Progress>,
    stored: Arc<Stored>,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let (vm, mut found) = snapshot::refresh(&vault, vm).await?;
    let mut prepared = prepare(&vault, &vm, &session, &options).await?;
    prepared.notes.extend(found.as_mut().map(snapshot::Found::take_notes).unwrap_or_default());
    let runner = runner(&vm, &prepared.selected, found)?;
    let (time, point_id) = (prepared.time, prepared.point_id.clone());
    let early_notes = std::mem::take(&mut prepared.notes);
    let repairs = Arc::new(std::mem::take(&mut prepared.repairs));
    let work = {
        let (vault, session, progress) = (Arc::clone(&vault), Arc::clone(&session), Arc::clone(&progress));
        let (repairs, stored) = (Arc::clone(&repairs), Arc::clone(&stored));
        let (vm, options, handle) = (vm.clone(), options.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            let transfer = Transfer {
                vault: &vault,
                session: &session,
                handle,
                cancel: &options.cancel,
                progress: progress.as_ref(),
                repairs: &repairs,
                stored: &stored,
                workers: crate::transfer::worker_count(),
            };
            snapshot_and_read(&transfer, &vm, prepared, runner, &options)
        })
    };
    // A panic in the pipeline arrives here as an error: the pending point it held was
    // dropped while unwinding, which undid everything it had changed.
    let (pending, done, quiesced) =
        work.await.map_err(|e| EngineError::Invalid(format!("backup worker failed: {e}")))??;
    if options.cancel.load(Ordering::SeqCst) {
        return Err(EngineError::Cancelled);
    }
    progress.phase("commit");
    let group = options.group.as_ref().and_then(|g| g.point_group());
    let facts = PointFacts { vm: &vm.name, point_id: &point_id, time, consistency: quiesced.consistency };
    let committed = commit(&vault, &facts, pending, &done, &options, group.clone(), &stored).await?;
    let mut notes = early_notes;
    notes.extend(quiesced.notes);
    let disks = after_commit(&vault, &facts, committed, &mut notes).await;
    note_repairs(&vault, &vm.name, &repairs, &mut notes).await;
    let summaries = summarise_disks(&disks, &done);
    notes.extend(summaries.iter().filter_map(|d| d.note.as_ref().map(|n| format!("disk {}: {n}", d.label))));
    Ok(BackupSummary {
        point_id,
        vm: vm.name.clone(),
        time,
        consistency: quiesced.consistency,
        bytes_read: summaries.iter().map(|d| d.bytes_read).sum(),
        bytes_new: summaries.iter().map(|d| d.bytes_new).sum(),
        bytes_zero: summaries.iter().map(|d| d.bytes_zero).sum(),
        logical_bytes: summaries.iter().map(|d| d.size).sum(),
        duration_s: started.elapsed().as_secs_f64(),
        disks: summaries,
        notes,
        freeze_to_thaw_ms: quiesced.freeze_to_thaw.map(|d| d.as_millis() as u64),
        group,
    })
}

/// Tell the verify record which damaged chunks this point wrote again, and the notes what
/// could not be repaired. The point is committed: a failure here is a note, not a failure.
async fn note_repairs(vault: &UnlockedVault, vm: &str, repairs: &Repairs, notes: &mut Vec<String>) {
    let repaired = repairs.repaired();
    if !repaired.is_empty() {
        notes.push(format!(
            "{} chunks the last verify found damaged were written again from this disk's data",
            repaired.len()
        ));
        if let Err(e) = verified::repaired(Catalog::of(vault.vault()), vm, &repaired).await {
            notes.push(format!("the verify record could not be updated ({e}); verify again to refresh it"));
        }
    }
    notes.extend(repairs.failures());
}

/// Decide what to back up: the disks (minus the item's exclusions), the point's id, the limits,
/// and the indexes it builds on (kept from a concurrent GC).
async fn prepare(
    vault: &UnlockedVault,
    vm: &VmRecord,
    session: &Session,
    options: &BackupOptions,
) -> Result<Prepared> {
    let catalog = Catalog::of(vault.vault());
    let item: Option<ProtectedItem> = catalog.find(&vm.name).await?;
    crate::services::protection::check_not_soft_deleted(item.as_ref(), &vm.name)?;
    let excluded: &[String] = item.as_ref().map(|i| i.excluded_disks.as_slice()).unwrap_or_default();
    let selected: Vec<DiskRecord> = if options.disks.is_empty() {
        vm.disks.iter().filter(|d| !excluded.contains(&d.label)).cloned().collect()
    } else {
        options.disks.iter().map(|l| vm.disk(l).cloned()).collect::<Result<_>>()?
    };
    let time = Timestamp::now();
    let point_id = new_point_id(time)?;
    // Damaged points are stepped around, never in the way: the backup builds on intact ones,
    // and writes again the damaged chunks verify recorded when it reads their data.
    let survey = points::survey(vault, &vm.name).await?;
    let mut notes: Vec<String> = survey
        .damaged
        .iter()
        .map(|d| format!("point {} is damaged ({}); this backup does not build on it", d.point, d.cause))
        .collect();
    let history = survey.intact;
    let repairs = Repairs::new(survey.verified.damaged_chunks());
    let per_day = settings::load(catalog).await?.on_demand_per_day;
    let tz = match item.as_ref().and_then(|i| i.policy.as_deref()) {
        Some(name) => catalog.get::<Policy>(name).await.and_then(|p| p.tz()).unwrap_or(TimeZone::UTC),
        None => TimeZone::UTC,
    };
    crate::limits::check_point_limits(&vm.name, &history, options.kind, per_day, &tz, time)?;
    let checkpoints = match checkpoint::load(catalog, &vm.name).await {
        Ok(checkpoints) => checkpoints,
        Err(e) if e.kind() == ErrorKind::Damaged => {
            notes.push(format!("change tracking is unreadable ({e}); every disk is read in full"));
            Checkpoints::default()
        }
        Err(e) => return Err(e),
    };
    let bases = load_bases(vault, &selected, &history, &checkpoints, &mut notes).await?;
    keep_bases(vault, session, bases.previous.values().chain(bases.checkpointed.values())).await?;
    Ok(Prepared { notes, selected, time, point_id, checkpoints, bases, repairs })
}

/// Each selected disk's latest index, and the index of the point its checkpoint starts from.
async fn load_bases(
    vault: &UnlockedVault,
    selected: &[DiskRecord],
    history: &[Manifest],
    checkpoints: &Checkpoints,
    notes: &mut Vec<String>,
) -> Result<Bases> {
    let mut bases = Bases::default();
    let mut latest_point = BTreeMap::new();
    for disk in selected {
        // The newest point whose index of this disk is intact; damaged ones are noted.
        for m in history.iter().rev().filter(|m| m.disks.iter().any(|d| d.label == disk.label)) {
            match points::disk_index(vault, m, &disk.label).await {
                Ok(index) => {
                    bases.previous.insert(disk.label.clone(), index);
                    latest_point.insert(disk.label.clone(), m.point_id.clone());
                    break;
                }
                Err(e) if matches!(e.kind(), ErrorKind::Damaged | ErrorKind::NotFound) => notes.push(format!(
                    "disk {}: the index in point {} is damaged or missing ({e}); deduplicated against an older point",
                    disk.label, m.point_id
                )),
                Err(e) => return Err(e),
            }
        }
    }
    for (label, cp) in checkpoints.disks.iter().filter(|(l, _)| selected.iter().any(|d| &d.label == *l)) {
        // Usually the checkpoint is the previous point, whose index is already loaded.
        let index = match (latest_point.get(label), bases.previous.get(label)) {
            (Some(point), Some(index)) if *point == cp.point_id => Some(index.clone()),
            _ => match history.iter().find(|m| m.point_id == cp.point_id) {
                Some(m) => points::disk_index(vault, m, label).await.ok(),
                None => None,
            },
        };
        if let Some(index) = index {
            bases.checkpointed.insert(label.clone(), index);
        }
    }
    Ok(bases)
}

/// Commit: every disk's index, then (after a flush) the manifest. Only a commit that succeeded
/// turns the pending point into a committed one.
async fn commit(
    vault: &UnlockedVault,
    facts: &PointFacts<'_>,
    pending: Pending,
    done: &[DiskResult],
    options: &BackupOptions,
    group: Option<PointGroup>,
    stored: &Stored,
) -> Result<Committed> {
    let mut disks = Vec::new();
    for (disk, (index, stats, _)) in pending.disks.iter().zip(done) {
        let key = layout::index(facts.vm, facts.point_id, &disk.record.label);
        stored.index(&key);
        let digest = vault.put_index(&key, index).await?;
        disks.push(ManifestDisk {
            label: disk.record.label.clone(),
            size: disk.size,
            index: key.into(),
            index_digest: digest,
            stored_new: stats.bytes_new,
        });
    }
    let manifest = Manifest {
        format: vault::manifest::MANIFEST_FORMAT.into(),
        version: vault::manifest::MANIFEST_VERSION,
        point_id: facts.point_id.to_string(),
        vm: facts.vm.to_string(),
        time: facts.time,
        kind: options.kind,
        consistency: facts.consistency,
        retain_until: options.retain_until,
        disks,
        group,
    };
    vault.commit_manifest(&layout::manifest(facts.vm, facts.point_id), &manifest).await?;
    Ok(pending.committed())
}

/// After the commit: record the new checkpoints, then let go of the images, the live snapshot
/// and old bitmaps. Problems here are notes: the point exists.
async fn after_commit(
    vault: &UnlockedVault,
    facts: &PointFacts<'_>,
    committed: Committed,
    notes: &mut Vec<String>,
) -> Vec<plan::HeldDisk> {
    let Committed { mut disks, live } = committed;
    let new_bitmap = bitmap_name(facts.point_id);
    let mut new_checkpoints = BTreeMap::new();
    for disk in &disks {
        let bitmap = disk.new_bitmap.clone().or_else(|| live.as_ref().map(|_| new_bitmap.clone()));
        if let (Some(bitmap), Some(identity)) = (bitmap, disk.identity) {
            new_checkpoints.insert(
                disk.record.label.clone(),
                Checkpoint { bitmap, point_id: facts.point_id.to_string(), image: identity, size: disk.size },
            );
        }
    }
    if let Err(e) = checkpoint::record(Catalog::of(vault.vault()), facts.vm, &new_checkpoints).await {
        notes.push(format!("change tracking not recorded ({e}); the next backup reads every disk in full"));
    }
    if let Some(live) = live {
        let cleanup = live.finish(true, facts.point_id);
        notes.extend(cleanup.into_iter().map(|n| format!("live snapshot clean-up: {n}")));
    } else {
        for disk in &mut disks {
            disk.lock = None;
            if let Some(keep) = disk.new_bitmap.take()
                && let Err(e) = stopped::remove_stale_bitmaps(&disk.record.path, &keep)
            {
                notes.push(format!("disk {}: old bitmaps not removed: {e}", disk.record.label));
            }
        }
    }
    disks
}

fn summarise_disks(disks: &[plan::HeldDisk], done: &[DiskResult]) -> Vec<DiskSummary> {
    disks
        .iter()
        .zip(done)
        .map(|(disk, (_, stats, note))| DiskSummary {
            label: disk.record.label.clone(),
            size: disk.size,
            mode: match disk.plan {
                Plan::Full { .. } => ReadMode::Full,
                Plan::Incremental { .. } => ReadMode::Incremental,
            },
            bytes_read: stats.bytes_read,
            bytes_new: stats.bytes_new,
            bytes_zero: stats.bytes_zero,
            note: note.clone(),
        })
        .collect()
}

/// Keep the chunks of the points this backup builds on from a concurrent GC (they may have
/// been pruned since). If GC already deleted some, the backup cannot build on them.
async fn keep_bases<'a>(
    vault: &UnlockedVault,
    session: &Session,
    bases: impl Iterator<Item = &'a FixedIndex>,
) -> Result<()> {
    let ids: Vec<ChunkId> = bases
        .flat_map(|i| i.entries().iter().copied())
        .filter(|id| !id.is_zero() && session.is_condemned(id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() || session.rescue(&ids).await? == Rescue::Kept {
        return Ok(());
    }
    match vault.vault().backend().missing_chunks(&ids).await?.first() {
        Some(id) => Err(EngineError::Invalid(format!(
            "garbage collection removed chunk {id} of the point this backup builds on (it was pruned \
             meanwhile); run the backup again"
        ))),
        None => Ok(()),
    }
}
