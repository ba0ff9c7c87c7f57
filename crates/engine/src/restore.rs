//! Restores: a disk to a new file, a whole VM as a new VM, or a disk swapped into a stopped VM.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, PoisonError};

use disk::DiskFormat;
use disk::staged::Staged;
use disk::writer::{BlockSink, create_sink};
use jiff::Timestamp;
use serde::Serialize;
use tokio::runtime::Handle;
use vault::{FixedIndex, Manifest, UnlockedVault, VaultError};

use crate::catalog::Catalog;
use crate::catalog::vm::{DiskRecord, Nic, VmRecord};
use crate::error::{EngineError, Result};
use crate::libvirt;
use crate::names::{check_name, new_mac, new_uuid};
use crate::points;
use crate::progress::Progress;
use crate::transfer::is_zero;

/// What a disk restore wrote.
#[derive(Clone, Debug, Serialize)]
pub struct RestoredDisk {
    /// Disk label.
    pub label: String,
    /// Where it was written.
    pub path: PathBuf,
    /// Format written.
    pub format: DiskFormat,
    /// Logical size.
    pub size: u64,
    /// Bytes of data written (zero blocks are not written).
    pub bytes_written: u64,
}

/// Write every non-zero block of `index` into `sink`: chunks fetched and opened on all cores,
/// written by this thread.
fn write_index(
    vault: &UnlockedVault,
    handle: &Handle,
    index: &FixedIndex,
    mut sink: Box<dyn BlockSink>,
    progress: &dyn Progress,
) -> Result<u64> {
    let blocks: Vec<usize> = (0..index.entries().len()).filter(|&b| !index.entries()[b].is_zero()).collect();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<EngineError>> = Mutex::new(None);
    let workers = crate::transfer::worker_count();
    let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(workers * 2);
    let cs = u64::from(vault::index::CHUNK_SIZE);
    let mut written = 0u64;
    let write_result = std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stop, failure, blocks) = (&next, &stop, &failure, &blocks);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= blocks.len() || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if progress.is_cancelled() {
                        stop.store(true, Ordering::SeqCst);
                        failure
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(EngineError::Cancelled);
                        return;
                    }
                    let block = blocks[i];
                    match fetch_block(vault, handle, index, block) {
                        Ok(data) => {
                            if tx.send((block as u64 * cs, data)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        for (offset, data) in rx {
            let result = write_sparse(sink.as_mut(), offset, &data);
            match result {
                Ok(n) => written += n,
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
            progress.advance(data.len() as u64);
        }
        Ok(())
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    write_result?;
    sink.finish()?;
    Ok(written)
}

/// Granularity at which zeros inside a chunk are left unwritten: qcow2's default cluster size.
const SPARSE_GRANULE: usize = 64 * 1024;

/// Write the non-zero runs of `data` (in 64 KiB granules); returns the bytes written.
fn write_sparse(sink: &mut dyn BlockSink, offset: u64, data: &[u8]) -> Result<u64> {
    let mut written = 0u64;
    let mut run_start: Option<usize> = None;
    let granules = data.len().div_ceil(SPARSE_GRANULE);
    for g in 0..=granules {
        let range = g * SPARSE_GRANULE..((g + 1) * SPARSE_GRANULE).min(data.len());
        let data_here = g < granules && !is_zero(&data[range.clone()]);
        match (data_here, run_start) {
            (true, None) => run_start = Some(range.start),
            (false, Some(start)) => {
                let end = range.start.min(data.len());
                sink.write_at(offset + start as u64, &data[start..end])?;
                written += (end - start) as u64;
                run_start = None;
            }
            _ => {}
        }
    }
    Ok(written)
}

fn fetch_block(vault: &UnlockedVault, handle: &Handle, index: &FixedIndex, block: usize) -> Result<Vec<u8>> {
    let id = index.entries()[block];
    let data = handle.block_on(vault.get_chunk(&id))?;
    if data.len() as u64 != index.block_len(block) {
        return Err(
            VaultError::corrupt(format!("chunk {id}"), "length differs from its place in the index").into()
        );
    }
    Ok(data)
}

/// Restore one disk of a point to a new file at `to`. The file is written under a temporary
/// name beside it ([`Staged`]) and takes the name `to` only once complete: a failed, cancelled
/// or killed restore leaves nothing at `to`.
pub async fn restore_disk(
    vault: Arc<UnlockedVault>,
    manifest: &Manifest,
    label: &str,
    to: &Path,
    format: DiskFormat,
    progress: Arc<dyn Progress>,
) -> Result<RestoredDisk> {
    let staged = Staged::begin(to)?;
    let restored = write_disk(vault, manifest, label, staged.path(), format, progress).await?;
    Ok(RestoredDisk { path: staged.finish()?, ..restored })
}

/// Write one disk of a point into a new file at `to`, a [`Staged`] temporary: on failure its
/// `Staged` removes what was written.
async fn write_disk(
    vault: Arc<UnlockedVault>,
    manifest: &Manifest,
    label: &str,
    to: &Path,
    format: DiskFormat,
    progress: Arc<dyn Progress>,
) -> Result<RestoredDisk> {
    let index = points::disk_index(&vault, manifest, label).await?;
    let size = index.disk_size();
    let to_owned = to.to_path_buf();
    let handle = Handle::current();
    let task_vault = Arc::clone(&vault);
    let written = tokio::task::spawn_blocking(move || {
        progress.start(
            "restore",
            index.entries().iter().filter(|id| !id.is_zero()).count() as u64 * u64::from(index.chunk_size()),
        );
        let sink = create_sink(&to_owned, format, size)?;
        let result = write_index(&task_vault, &handle, &index, sink, progress.as_ref());
        progress.finish();
        result
    })
    .await
    .map_err(|e| EngineError::Invalid(format!("restore worker failed: {e}")))??;
    Ok(RestoredDisk {
        label: label.to_string(),
        path: to.to_path_buf(),
        format,
        size,
        bytes_written: written,
    })
}

/// What restoring a VM as a new VM produced.
#[derive(Clone, Debug, Serialize)]
pub struct RestoredVm {
    /// The new VM's record (registered in the catalog).
    pub vm: VmRecord,
    /// Its disks.
    pub disks: Vec<RestoredDisk>,
    /// libvirt domain XML written next to the disks.
    pub libvirt_xml: PathBuf,
    /// Shell script with the qemu-system-x86_64 command line.
    pub qemu_script: PathBuf,
}

/// Restore every disk of a point into `dir` as a new VM `new_name`, with a new UUID and new
/// MACs, write its libvirt XML and qemu command line, and register it.
pub async fn restore_vm(
    vault: Arc<UnlockedVault>,
    source: &VmRecord,
    manifest: &Manifest,
    new_name: &str,
    dir: &Path,
    attach: &libvirt::Attach,
    progress: Arc<dyn Progress>,
) -> Result<RestoredVm> {
    check_name("VM", new_name)?;
    let catalog = Catalog::of(vault.vault());
    if catalog.find::<VmRecord>(new_name).await?.is_some() {
        return Err(EngineError::exists(crate::Record::Vm, new_name));
    }
    std::fs::create_dir_all(dir).map_err(|e| EngineError::Invalid(format!("{}: {e}", dir.display())))?;
    let dir =
        std::path::absolute(dir).map_err(|e| EngineError::Invalid(format!("{}: {e}", dir.display())))?;
    // Every disk is written under a temporary name first; only when all are complete do they
    // take their names, then the definitions are written and the VM registered.
    let mut staged = Vec::new();
    for entry in &manifest.disks {
        let format = source
            .disks
            .iter()
            .find(|d| d.label == entry.label)
            .map(|d| d.format)
            .unwrap_or(DiskFormat::Qcow2);
        let path = dir.join(format!("{new_name}-{}.{}", entry.label, format.as_str()));
        let file = Staged::begin(&path)?;
        let restored = write_disk(
            Arc::clone(&vault),
            manifest,
            &entry.label,
            file.path(),
            format,
            Arc::clone(&progress),
        )
        .await
        .map_err(|e| EngineError::RestoreDisk {
            vm: new_name.to_string(),
            label: entry.label.clone(),
            source: Box::new(e),
        })?;
        staged.push((file, restored));
    }
    let mut disks = Vec::new();
    for (file, restored) in staged {
        disks.push(RestoredDisk { path: file.finish()?, ..restored });
    }
    let nics =
        source.nics.iter().map(|n| Ok(Nic { mac: new_mac()?, ..n.clone() })).collect::<Result<Vec<_>>>()?;
    let record = VmRecord {
        name: new_name.to_string(),
        uuid: new_uuid()?,
        vcpus: source.vcpus,
        memory_mib: source.memory_mib,
        disks: disks
            .iter()
            .map(|d| DiskRecord {
                label: d.label.clone(),
                path: d.path.clone(),
                format: d.format,
                size: d.size,
            })
            .collect(),
        nics,
        // A restored VM is not running yet: its sockets are set when it is registered live.
        qmp: None,
        qga: None,
        scripts: None,
        // Defined in libvirt only if asked (`--define`), after the restore.
        libvirt: None,
        registered: Timestamp::now(),
    };
    // From the source's definition when it is known (everything it had is kept), else made.
    let domain = match &source.libvirt {
        Some(link) => libvirt::restored_xml(&link.definition, &record, attach)?,
        None => libvirt::domain_xml(&libvirt::restored::attached(&record, attach)),
    };
    let libvirt_xml = dir.join(format!("{new_name}.xml"));
    let qemu_script = dir.join(format!("{new_name}.qemu.sh"));
    let write = |path: &Path, text: String| -> Result<()> {
        let file = Staged::begin(path)?;
        std::fs::write(file.path(), text)
            .map_err(|e| EngineError::Failed(format!("{}: {e}", path.display())))?;
        file.finish()?;
        Ok(())
    };
    write(&libvirt_xml, domain)?;
    write(&qemu_script, libvirt::qemu_script(&record, &manifest.point_id))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&qemu_script, std::fs::Permissions::from_mode(0o755));
    }
    let record = crate::services::vms::add(catalog, record).await?;
    Ok(RestoredVm { vm: record, disks, libvirt_xml, qemu_script })
}

/// Define a restored VM in libvirt at `uri` (and start it with `start`): from then on it is
/// a libvirt domain to vmvault too.
pub async fn define_restored(
    vault: &UnlockedVault,
    restored: &RestoredVm,
    uri: &str,
    start: bool,
) -> Result<VmRecord> {
    let xml = std::fs::read_to_string(&restored.libvirt_xml)
        .map_err(|e| EngineError::Failed(format!("{}: {e}", restored.libvirt_xml.display())))?;
    let link = libvirt::define(uri, &xml, start)?;
    Catalog::of(vault.vault())
        .update(&restored.vm.name, |mut vm: VmRecord| {
            vm.libvirt = Some(link.clone());
            Ok(vm)
        })
        .await
}

/// What replacing a disk did.
#[derive(Clone, Debug, Serialize)]
pub struct ReplacedDisk {
    /// Disk label.
    pub label: String,
    /// The disk's path, now holding the restored content.
    pub path: PathBuf,
    /// Where the content it held before was kept.
    pub kept_aside: PathBuf,
}

/// Replace disks of a stopped VM with their content in a point. Each current image is kept
/// aside as `<name>.pre-restore-<time>` first; the swap itself is one atomic rename.
pub async fn restore_replace(
    vault: Arc<UnlockedVault>,
    vm: &VmRecord,
    manifest: &Manifest,
    labels: &[String],
    progress: Arc<dyn Progress>,
) -> Result<Vec<ReplacedDisk>> {
    let labels: Vec<String> = if labels.is_empty() {
        manifest.disks.iter().map(|d| d.label.clone()).collect()
    } else {
        labels.to_vec()
    };
    let mut targets = Vec::new();
    for label in &labels {
        let disk = vm.disk(label)?.clone();
        if !manifest.disks.iter().any(|d| &d.label == label) {
            return Err(EngineError::DiskNotInPoint {
                vm: vm.name.clone(),
                point: manifest.point_id.clone(),
                label: label.clone(),
            });
        }
        if disk::lock::is_in_use(&disk.path)? {
            return Err(EngineError::Invalid(format!(
                "{}: in use by a running QEMU or another program (it holds the image lock); stop VM {:?} before replacing its disk",
                disk.path.display(),
                vm.name
            )));
        }
        targets.push(disk);
    }
    let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut out = Vec::new();
    for disk in targets {
        let file_name = disk.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = disk.path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        // One name per disk, so a killed replace's leftovers are found by the next one.
        let staged = dir.join(format!(".{file_name}.vmvault-restore"));
        let kept_aside = dir.join(format!("{file_name}.pre-restore-{stamp}"));
        let _ = std::fs::remove_file(&staged);
        restore_disk(Arc::clone(&vault), manifest, &disk.label, &staged, disk.format, Arc::clone(&progress))
            .await?;
        if disk::lock::is_in_use(&disk.path)? {
            let _ = std::fs::remove_file(&staged);
            return Err(EngineError::Invalid(format!(
                "{}: a program opened the image while it was being restored; nothing was replaced",
                disk.path.display()
            )));
        }
        disk::swap::exchange(&staged, &disk.path)?;
        std::fs::rename(&staged, &kept_aside)
            .map_err(|e| EngineError::Invalid(format!("{}: {e}", kept_aside.display())))?;
        out.push(ReplacedDisk { label: disk.label.clone(), path: disk.path.clone(), kept_aside });
    }
    Ok(out)
}
