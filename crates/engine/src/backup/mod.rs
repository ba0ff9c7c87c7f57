//! Backup of a VM: snapshot phase (a stopped VM's images locked and change tracking started;
//! a running VM's disks frozen in one QMP transaction, see [`live`]), transfer phase (read only
//! what is needed), commit (indexes, then the manifest, last).

mod live;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use disk::live::LiveSnapshot;
use disk::nbd::NbdSource;
use disk::qemu::{self, NbdExport};
use disk::qmp::QmpClient;
use disk::{BlockSource, DiskFormat, ImageLock};
use jiff::Timestamp;
use serde::Serialize;
use vault::session::{Rescue, Session};
use vault::{ChunkId, Consistency, FixedIndex, Manifest, ManifestDisk, PointGroup, PointKind, UnlockedVault};

use crate::checkpoint::{self, BITMAP_PREFIX, Checkpoint, Checkpoints, ImageIdentity, bitmap_name};
use crate::error::{EngineError, Result};
use crate::group::{GroupSnapshot, Step};
use crate::points::{self, index_key, manifest_key, new_point_id};
use crate::progress::Progress;
use crate::protection::{self, ProtectedItem};
use crate::registry::{self, DiskRecord};
use crate::transfer::{BlockRead, Transfer, TransferStats, blocks_of, patched, whole};

use live::{Quiesced, live_phase, plan_live};

/// What to back up and how to label the point.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Disk labels to include; empty means all.
    pub disks: Vec<String>,
    /// Scheduled or on-demand.
    pub kind: PointKind,
    /// Keep an on-demand point until then.
    pub retain_until: Option<Timestamp>,
    /// Set to cancel; checked between blocks and between the steps of every phase.
    pub cancel: Arc<AtomicBool>,
    /// The job this backup runs in (names its writer session).
    pub job_id: String,
    /// Lease of the backup's writer session (how soon a crashed backup stops blocking others).
    pub session_lease: Duration,
    /// The consistency group backup this one is a member of (see [`crate::group`]).
    pub group: Option<Arc<GroupSnapshot>>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            disks: vec![],
            kind: PointKind::OnDemand,
            retain_until: None,
            cancel: Arc::new(AtomicBool::new(false)),
            job_id: format!("backup-{}", std::process::id()),
            session_lease: vault::session::DEFAULT_LEASE,
            group: None,
        }
    }
}

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

/// How long one QMP command may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(30);

/// NBD connections an incremental backup reads through (qemu-nbd serves this many at once).
const NBD_READERS: usize = disk::qemu::NBD_CLIENTS;

/// How the transfer phase will read one disk.
enum Plan {
    Full { base: Option<FixedIndex>, note: Option<String> },
    Incremental { bitmap: String, base: FixedIndex },
}

/// One disk held for the duration of a backup.
struct HeldDisk {
    record: DiskRecord,
    size: u64,
    plan: Plan,
    new_bitmap: Option<String>,
    identity: Option<ImageIdentity>,
    lock: Option<ImageLock>,
    /// For a running VM: the NBD export of this disk's frozen view.
    live_export: Option<String>,
}

impl HeldDisk {
    /// Remove the bitmap this backup added: the point was not committed.
    fn abandon(&mut self) {
        self.lock = None;
        if let Some(bitmap) = self.new_bitmap.take() {
            let _ = qemu::remove_bitmap(&self.record.path, &bitmap);
        }
    }
}

/// Most recovery points an item may have; a backup that would make more fails.
pub const MAX_POINTS: usize = 9999;

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
    let vm = registry::get(backend.as_ref(), vm_name).await?;
    // One backup of a VM at a time; the session also keeps what it reuses from GC.
    let session = Arc::new(
        Session::begin(
            Arc::clone(&backend),
            &format!("backup-{}", vm.name),
            &options.job_id,
            options.session_lease,
        )
        .await?,
    );
    let result = backup_in_session(vault, vm, Arc::clone(&session), options, progress).await;
    // The pipeline's threads are done with the session: end it (or let its lease run out).
    if let Ok(session) = Arc::try_unwrap(session) {
        let ended = session.end().await;
        let summary = result?;
        ended?;
        return Ok(summary);
    }
    result
}

async fn backup_in_session(
    vault: Arc<UnlockedVault>,
    vm: registry::VmRecord,
    session: Arc<Session>,
    options: BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let backend = vault.vault().backend().clone();
    let item = protection::get(backend.as_ref(), &vm.name).await?;
    protection::check_not_soft_deleted(item.as_ref(), &vm.name)?;
    let excluded: &[String] = item.as_ref().map(|i| i.excluded_disks.as_slice()).unwrap_or_default();
    let selected: Vec<DiskRecord> = if options.disks.is_empty() {
        vm.disks.iter().filter(|d| !excluded.contains(&d.label)).cloned().collect()
    } else {
        options.disks.iter().map(|l| vm.disk(l).cloned()).collect::<Result<_>>()?
    };
    let time = Timestamp::now();
    let point_id = new_point_id(time)?;
    let history = points::list(&vault, &vm.name).await?;
    check_point_limits(backend.as_ref(), &vm.name, item.as_ref(), &history, &options, time).await?;
    let checkpoints = checkpoint::load(backend.as_ref(), &vm.name).await?;

    // Previous indexes: the base of dedup for every disk, and of incrementals.
    let mut previous: BTreeMap<String, (String, FixedIndex)> = BTreeMap::new();
    for disk in &selected {
        if let Some(m) = history.iter().rev().find(|m| m.disks.iter().any(|d| d.label == disk.label)) {
            previous.insert(
                disk.label.clone(),
                (m.point_id.clone(), points::disk_index(&vault, m, &disk.label).await?),
            );
        }
    }
    let mut base_indexes: BTreeMap<String, FixedIndex> = BTreeMap::new();
    for (label, cp) in &checkpoints.disks {
        if !selected.iter().any(|d| &d.label == label) {
            continue;
        }
        // Usually the checkpoint is the previous point, whose index is already loaded.
        let index = match previous.get(label) {
            Some((point, index)) if *point == cp.point_id => Some(index.clone()),
            _ => match history.iter().find(|m| m.point_id == cp.point_id) {
                Some(m) => points::disk_index(&vault, m, label).await.ok(),
                None => None,
            },
        };
        if let Some(index) = index {
            base_indexes.insert(label.clone(), index);
        }
    }
    keep_bases(&vault, &session, previous.values().map(|(_, i)| i).chain(base_indexes.values())).await?;

    // A VM with a QMP socket that answers is running: back it up live. One that does not
    // answer is treated as stopped (its images must then be free).
    let qmp = match &vm.qmp {
        Some(socket) => match QmpClient::connect(socket, QMP_TIMEOUT) {
            Ok(client) => Some(client),
            Err(e) if selected.iter().any(|d| disk::lock::is_in_use(&d.path).unwrap_or(false)) => {
                return Err(EngineError::Invalid(format!(
                    "VM {:?} is running but its QMP socket does not answer ({e}); check `vm show {}`",
                    vm.name, vm.name
                )));
            }
            Err(_) => None,
        },
        None => None,
    };

    let (vm_name, point, qga, scripts) =
        (vm.name.clone(), point_id.clone(), vm.qga.clone(), vm.scripts.clone());
    let group = options.group.clone();
    let vault_for_work = Arc::clone(&vault);
    let handle = tokio::runtime::Handle::current();
    let cancel = Arc::clone(&options.cancel);
    let session_for_work = Arc::clone(&session);
    let progress_for_work = Arc::clone(&progress);
    let work = tokio::task::spawn_blocking(move || {
        let (session, progress) = (session_for_work, progress_for_work);
        progress.phase("snapshot");
        let meet = |step: Step| group.as_ref().map_or(Ok(()), |g| g.wait(&vm_name, step, &cancel));
        let (mut held, live, quiesced) = match qmp {
            Some(qmp) => {
                let planned = plan_live(qmp, selected, &checkpoints, previous, base_indexes);
                let taken = live_phase(planned, &point, qga.as_deref(), scripts.as_ref(), meet)?;
                (taken.held, Some(taken.live), taken.quiesced)
            }
            None => {
                let mut held =
                    snapshot(&vm_name, &point, selected, &checkpoints, previous, base_indexes, &cancel)?;
                // A stopped member has nothing to freeze, but keeps the group's steps.
                if let Err(e) = [Step::Ready, Step::Frozen, Step::Taken].into_iter().try_for_each(&meet) {
                    held.iter_mut().for_each(HeldDisk::abandon);
                    return Err(e);
                }
                (held, None, Quiesced::default())
            }
        };
        let abandon = |held: &mut Vec<HeldDisk>, live: Option<LiveSnapshot>| {
            held.iter_mut().for_each(HeldDisk::abandon);
            if let Some(live) = live {
                live.finish(false, &bitmap_name(&point), BITMAP_PREFIX);
            }
        };
        if cancel.load(Ordering::SeqCst) {
            abandon(&mut held, live);
            return Err(EngineError::Cancelled);
        }
        progress.phase("transfer");
        let transfer = Transfer {
            vault: &vault_for_work,
            session: &session,
            handle,
            cancel: &cancel,
            progress: progress.as_ref(),
            workers: crate::transfer::worker_count(),
        };
        let result = transfer_all(&transfer, &mut held, &point, live.as_ref().map(LiveSnapshot::socket));
        match result {
            Ok(done) => Ok((held, done, live, quiesced)),
            Err(e) => {
                abandon(&mut held, live);
                Err(e)
            }
        }
    });
    let (mut held, done, mut live, quiesced) =
        work.await.map_err(|e| EngineError::Invalid(format!("backup worker failed: {e}")))??;
    let new_bitmap = bitmap_name(&point_id);
    let abandon_live = |live: &mut Option<LiveSnapshot>| {
        if let Some(live) = live.take() {
            live.finish(false, &new_bitmap, BITMAP_PREFIX);
        }
    };

    // Commit: indexes, then (after a flush) the manifest. A cancel that came in time stops it.
    if options.cancel.load(Ordering::SeqCst) {
        held.iter_mut().for_each(HeldDisk::abandon);
        abandon_live(&mut live);
        return Err(EngineError::Cancelled);
    }
    progress.phase("commit");
    let point_group = options.group.as_ref().and_then(|g| g.point_group());
    let commit = async {
        let mut disks = Vec::new();
        for (disk, (index, stats, _)) in held.iter().zip(&done) {
            let key = index_key(&vm.name, &point_id, &disk.record.label);
            let digest = vault.put_index(&key, index).await?;
            disks.push(ManifestDisk {
                label: disk.record.label.clone(),
                size: disk.size,
                index: key,
                index_digest: digest,
                stored_new: stats.bytes_new,
            });
        }
        let manifest = Manifest {
            format: vault::manifest::MANIFEST_FORMAT.into(),
            version: vault::manifest::MANIFEST_VERSION,
            point_id: point_id.clone(),
            vm: vm.name.clone(),
            time,
            kind: options.kind,
            consistency: quiesced.consistency,
            retain_until: options.retain_until,
            disks,
            group: point_group.clone(),
        };
        vault.commit_manifest(&manifest_key(&vm.name, &point_id), &manifest).await
    };
    if let Err(e) = commit.await {
        held.iter_mut().for_each(HeldDisk::abandon);
        abandon_live(&mut live);
        return Err(e.into());
    }

    // After the commit: record the new checkpoints, then let go of the images and old bitmaps.
    let mut notes = quiesced.notes;
    let mut new_checkpoints = BTreeMap::new();
    for disk in &held {
        let bitmap =
            disk.new_bitmap.clone().or_else(|| disk.live_export.as_ref().map(|_| bitmap_name(&point_id)));
        if let (Some(bitmap), Some(identity)) = (&bitmap, disk.identity) {
            new_checkpoints.insert(
                disk.record.label.clone(),
                Checkpoint {
                    bitmap: bitmap.clone(),
                    point_id: point_id.clone(),
                    image: identity,
                    size: disk.size,
                },
            );
        }
    }
    if let Err(e) = checkpoint::record(backend.as_ref(), &vm.name, &new_checkpoints).await {
        notes.push(format!("change tracking not recorded ({e}); the next backup reads every disk in full"));
    }
    if let Some(live) = live.take() {
        notes.extend(
            live.finish(true, &new_bitmap, BITMAP_PREFIX)
                .into_iter()
                .map(|n| format!("live snapshot clean-up: {n}")),
        );
    }
    for disk in &mut held {
        disk.lock = None;
        if let Some(keep) = &disk.new_bitmap
            && disk.live_export.is_none()
            && let Err(e) = remove_stale_bitmaps(&disk.record.path, keep)
        {
            notes.push(format!("disk {}: old bitmaps not removed: {e}", disk.record.label));
        }
    }

    let disk_summaries: Vec<DiskSummary> = held
        .iter()
        .zip(&done)
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
        .collect();
    notes.extend(
        disk_summaries.iter().filter_map(|d| d.note.as_ref().map(|n| format!("disk {}: {n}", d.label))),
    );
    Ok(BackupSummary {
        point_id,
        vm: vm.name.clone(),
        time,
        consistency: quiesced.consistency,
        bytes_read: disk_summaries.iter().map(|d| d.bytes_read).sum(),
        bytes_new: disk_summaries.iter().map(|d| d.bytes_new).sum(),
        bytes_zero: disk_summaries.iter().map(|d| d.bytes_zero).sum(),
        logical_bytes: disk_summaries.iter().map(|d| d.size).sum(),
        duration_s: started.elapsed().as_secs_f64(),
        disks: disk_summaries,
        notes,
        freeze_to_thaw_ms: quiesced.freeze_to_thaw.map(|d| d.as_millis() as u64),
        group: point_group,
    })
}

/// Snapshot phase for stopped disks: refuse images in use, start tracking writes with a new
/// bitmap, then lock the images against writers for the rest of the backup.
fn snapshot(
    vm: &str,
    point_id: &str,
    selected: Vec<DiskRecord>,
    checkpoints: &Checkpoints,
    mut previous: BTreeMap<String, (String, FixedIndex)>,
    mut base_indexes: BTreeMap<String, FixedIndex>,
    cancel: &AtomicBool,
) -> Result<Vec<HeldDisk>> {
    let mut held: Vec<HeldDisk> = Vec::new();
    let result = (|| {
        for record in selected {
            if cancel.load(Ordering::SeqCst) {
                return Err(EngineError::Cancelled);
            }
            let info = disk::probe(&record.path)
                .map_err(|e| EngineError::Invalid(format!("disk {} of VM {vm:?}: {e}", record.label)))?;
            if disk::lock::is_in_use(&record.path)? {
                return Err(disk::DiskError::InUse { path: record.path.clone() }.into());
            }
            let base =
                previous.remove(&record.label).map(|(_, index)| index).filter(|i| i.disk_size() == info.size);
            let mut disk = HeldDisk {
                size: info.size,
                plan: Plan::Full { base, note: None },
                new_bitmap: None,
                identity: None,
                lock: None,
                live_export: None,
                record,
            };
            if info.format == DiskFormat::Qcow2 && !info.block_device {
                let checkpoint = checkpoints.disks.get(&disk.record.label);
                let path = disk.record.path.clone();
                let plan = plan_incremental(
                    &disk.record.path,
                    info.size,
                    checkpoint,
                    &mut base_indexes,
                    &disk.record.label,
                    || offline_bitmaps(&path),
                )?;
                match plan {
                    Ok(plan) => disk.plan = plan,
                    Err(note) => {
                        if let Plan::Full { note: n, .. } = &mut disk.plan {
                            *n = note;
                        }
                    }
                }
                let bitmap = bitmap_name(point_id);
                qemu::add_bitmap(&disk.record.path, &bitmap).map_err(|e| in_use_or(e, &disk.record.path))?;
                disk.new_bitmap = Some(bitmap);
                disk.identity = ImageIdentity::of(&disk.record.path).ok();
            }
            disk.lock = Some(ImageLock::acquire(&disk.record.path)?);
            held.push(disk);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(held),
        Err(e) => {
            held.iter_mut().for_each(HeldDisk::abandon);
            Err(e)
        }
    }
}

fn in_use_or(e: disk::DiskError, path: &Path) -> EngineError {
    match &e {
        disk::DiskError::Tool { message, .. } if message.contains("lock") => {
            disk::DiskError::InUse { path: path.to_path_buf() }.into()
        }
        _ => e.into(),
    }
}

/// Decide whether a qcow2 disk can be read incrementally. `Ok(Err(note))` means: read it in
/// full, for the reason in the note (`None` for a first backup).
fn plan_incremental(
    path: &Path,
    size: u64,
    checkpoint: Option<&Checkpoint>,
    base_indexes: &mut BTreeMap<String, FixedIndex>,
    label: &str,
    bitmaps: impl FnOnce() -> Result<Vec<BitmapState>>,
) -> Result<Result<Plan, Option<String>>> {
    let Some(cp) = checkpoint else { return Ok(Err(None)) };
    let full = |why: String| Ok(Err(Some(format!("full read: {why}"))));
    if ImageIdentity::of(path).ok() != Some(cp.image) {
        return full(format!("the image file was replaced since point {}", cp.point_id));
    }
    if cp.size != size {
        return full(format!("the disk changed size since point {}", cp.point_id));
    }
    let bitmaps = bitmaps()?;
    let Some(bitmap) = bitmaps.iter().find(|b| b.name == cp.bitmap) else {
        return full(format!("change-tracking bitmap {} is missing", cp.bitmap));
    };
    if !bitmap.consistent {
        return full(format!("change-tracking bitmap {} is inconsistent ({})", cp.bitmap, bitmap.state));
    }
    let Some(base) = base_indexes.remove(label) else {
        return full(format!("point {} that the bitmap starts from is gone or unreadable", cp.point_id));
    };
    if base.disk_size() != size {
        return full(format!("point {} has another disk size", cp.point_id));
    }
    Ok(Ok(Plan::Incremental { bitmap: cp.bitmap.clone(), base }))
}

/// What planning needs to know of a bitmap, from qemu-img (stopped) or QMP (running).
struct BitmapState {
    name: String,
    consistent: bool,
    state: String,
}

fn offline_bitmaps(path: &Path) -> Result<Vec<BitmapState>> {
    Ok(qemu::bitmaps(path)?
        .into_iter()
        .map(|b| BitmapState {
            consistent: b.is_consistent(),
            state: if b.flags.is_empty() {
                "flags: none".into()
            } else {
                format!("flags: {}", b.flags.join(", "))
            },
            name: b.name,
        })
        .collect())
}

type DiskResult = (FixedIndex, TransferStats, Option<String>);

fn transfer_all(
    transfer: &Transfer<'_>,
    held: &mut [HeldDisk],
    point_id: &str,
    live_socket: Option<&Path>,
) -> Result<Vec<DiskResult>> {
    let mut out = Vec::new();
    for disk in held.iter_mut() {
        transfer.progress.start(&disk.record.label, disk.size);
        out.push(transfer_disk(transfer, disk, point_id, live_socket)?);
        transfer.progress.finish();
    }
    Ok(out)
}

/// Read a disk through an NBD export (qemu-nbd's or a running QEMU's): the dirty blocks of
/// the plan's bitmap over its base, or every allocated block.
fn transfer_nbd(
    transfer: &Transfer<'_>,
    size: u64,
    plan: &Plan,
    socket: &Path,
    export: &str,
) -> Result<(FixedIndex, TransferStats)> {
    // qemu-nbd exits once its last client leaves (also when this process is killed): the
    // first connection stays open until the readers are connected.
    let bitmap = match plan {
        Plan::Incremental { bitmap, .. } => Some(bitmap.as_str()),
        Plan::Full { .. } => None,
    };
    let mut first = NbdSource::connect_named(socket, export, bitmap)?;
    let (blocks, mut index, known): (Vec<BlockRead>, FixedIndex, HashSet<ChunkId>) = match plan {
        Plan::Incremental { base, .. } => (
            patched(&first.dirty()?, base),
            base.clone(),
            base.entries().iter().copied().filter(|id| !id.is_zero()).collect(),
        ),
        Plan::Full { base, .. } => (
            whole(&blocks_of(&first.allocated()?, size)),
            FixedIndex::zeroed(size)?,
            base.iter().flat_map(|b| b.entries().iter().copied()).filter(|id| !id.is_zero()).collect(),
        ),
    };
    // Several connections keep several reads in flight.
    let sources = (0..NBD_READERS)
        .map(|_| Ok(Box::new(NbdSource::connect_named(socket, export, None)?) as Box<dyn BlockSource>))
        .collect::<Result<Vec<_>>>()?;
    drop(first);
    skip_progress(transfer, &index, &blocks);
    let stats = transfer.run(sources, &blocks, &mut index, known)?;
    Ok((index, stats))
}

fn transfer_disk(
    transfer: &Transfer<'_>,
    disk: &mut HeldDisk,
    point_id: &str,
    live_socket: Option<&Path>,
) -> Result<DiskResult> {
    let label = disk.record.label.clone();
    let wrap = |e: EngineError| match e {
        EngineError::Cancelled => e,
        other => EngineError::Invalid(format!("disk {label}: {other}")),
    };
    match &disk.plan {
        _ if disk.live_export.is_some() => {
            let (socket, export) =
                (live_socket.unwrap_or(Path::new("")), disk.live_export.clone().unwrap_or_default());
            let note = match &disk.plan {
                Plan::Full { note, .. } => note.clone(),
                Plan::Incremental { .. } => None,
            };
            transfer_nbd(transfer, disk.size, &disk.plan, socket, &export).map(|(i, s)| (i, s, note)).map_err(
                |e| match e {
                    EngineError::Cancelled => e,
                    other => EngineError::Invalid(format!(
                        "disk {label}: reading the running VM's snapshot failed ({other}); did QEMU exit? \
                         Nothing was committed"
                    )),
                },
            )
        }
        Plan::Incremental { bitmap, .. } => {
            let socket_dir = socket_dir(point_id)?;
            let socket = socket_dir.join("nbd.sock");
            let result = (|| {
                let export = NbdExport::start(&disk.record.path, DiskFormat::Qcow2, Some(bitmap), &socket)?;
                let (index, stats) = transfer_nbd(transfer, disk.size, &disk.plan, export.socket(), "")?;
                drop(export);
                Ok((index, stats, None))
            })();
            let _ = std::fs::remove_dir_all(&socket_dir);
            result.map_err(wrap)
        }
        Plan::Full { base, note } => {
            let mut source: Box<dyn BlockSource> = disk::open_source(&disk.record.path, disk.record.format)?;
            let blocks = whole(&blocks_of(&source.allocated()?, disk.size));
            let mut index = FixedIndex::zeroed(disk.size)?;
            let known: HashSet<ChunkId> =
                base.iter().flat_map(|b| b.entries().iter().copied()).filter(|id| !id.is_zero()).collect();
            skip_progress(transfer, &index, &blocks);
            let stats = transfer.run(vec![source], &blocks, &mut index, known).map_err(wrap)?;
            Ok((index, stats, note.clone()))
        }
    }
}

/// Count the blocks that will not be read as done at once, so progress covers the whole disk.
fn skip_progress(transfer: &Transfer<'_>, index: &FixedIndex, blocks: &[BlockRead]) {
    let planned: u64 = blocks.iter().map(|b| index.block_len(b.block)).sum();
    transfer.progress.advance(index.disk_size().saturating_sub(planned));
}

/// A private directory for the NBD socket of one backup.
fn socket_dir(point_id: &str) -> Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("vmvault-{point_id}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::Invalid(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// Remove every vmvault bitmap but `keep`: older checkpoints and ones left by failed backups.
fn remove_stale_bitmaps(path: &Path, keep: &str) -> Result<()> {
    for bitmap in qemu::bitmaps(path)? {
        if bitmap.name.starts_with(BITMAP_PREFIX) && bitmap.name != keep {
            qemu::remove_bitmap(path, &bitmap.name)?;
        }
    }
    Ok(())
}

/// Refuse a backup that would exceed the item's point limits: [`MAX_POINTS`] points, and the
/// vault's on-demand backups per calendar day (in the policy's zone, or UTC).
async fn check_point_limits(
    backend: &dyn vault::backend::Backend,
    vm: &str,
    item: Option<&ProtectedItem>,
    history: &[Manifest],
    options: &BackupOptions,
    now: Timestamp,
) -> Result<()> {
    if history.len() >= MAX_POINTS {
        return Err(EngineError::Limit(format!(
            "VM {vm:?} has {} recovery points, the most an item may have; let old points expire \
             (`vmvault unlock {vm}` if a delete lock holds them, then `vmvault prune {vm}`)",
            history.len()
        )));
    }
    if options.kind != PointKind::OnDemand {
        return Ok(());
    }
    let per_day = crate::settings::load(backend).await?.on_demand_per_day;
    let tz = match item.and_then(|i| i.policy.as_deref()) {
        Some(name) => {
            crate::policy::get(backend, name).await.and_then(|p| p.tz()).unwrap_or(jiff::tz::TimeZone::UTC)
        }
        None => jiff::tz::TimeZone::UTC,
    };
    let today = tz.to_datetime(now).date();
    let taken = history
        .iter()
        .filter(|m| m.kind == PointKind::OnDemand && tz.to_datetime(m.time).date() == today)
        .count();
    if taken >= per_day as usize {
        return Err(EngineError::Limit(format!(
            "VM {vm:?} already has {taken} on-demand backups today ({today}, {}); at most {per_day} a day are \
             allowed (vault setting `on_demand_per_day`)",
            tz.iana_name().unwrap_or("UTC")
        )));
    }
    Ok(())
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
