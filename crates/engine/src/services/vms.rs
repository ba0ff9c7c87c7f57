//! Registering and removing VMs: what an operator gives checked against the disks it names
//! and the limits, then stored; removed only when nothing refers to it.

use std::path::{Path, PathBuf};

use disk::DiskFormat;
use jiff::Timestamp;

use crate::catalog::Catalog;
use crate::catalog::group::ConsistencyGroup;
use crate::catalog::item::{ProtectedItem, ProtectionState};
use crate::catalog::vm::{DiskRecord, LibvirtLink, Nic, VmRecord};
use crate::catalog::{checkpoint, group, verified};
use crate::error::{EngineError, Result};
use crate::limits::Limits;
use crate::names::{check_name, new_uuid};
use crate::scripts::ScriptConfig;

/// Register a VM; refuses a name already taken, and a disk another VM has (each VM's backup
/// would remove the other's change-tracking bitmaps: silent full reads).
pub async fn add(catalog: Catalog<'_>, record: VmRecord) -> Result<VmRecord> {
    // A name taken is refused by `create` (it names the conflict better than a shared disk).
    let others: Vec<VmRecord> =
        catalog.list::<VmRecord>().await?.into_iter().filter(|vm| vm.name != record.name).collect();
    for disk in &record.disks {
        if let Some((vm, theirs)) = owner_of(&others, &disk.path) {
            return Err(EngineError::refused(
                format!(
                    "{} is already disk {} of VM {:?}; a disk belongs to one VM",
                    disk.path.display(),
                    theirs,
                    vm
                ),
                format!("remove it from {vm} first (`vmvault vm remove {vm}`), or give this VM another disk"),
            ));
        }
    }
    catalog.create(&record).await?;
    Ok(record)
}

/// The VM (and its label) among `vms` that has the disk at `path`, the same file by any name.
pub fn owner_of(vms: &[VmRecord], path: &Path) -> Option<(String, String)> {
    let same = |a: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(path)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == path,
    };
    vms.iter()
        .find_map(|vm| vm.disks.iter().find(|d| same(&d.path)).map(|d| (vm.name.clone(), d.label.clone())))
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
    verified::forget(catalog, name).await?;
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

/// What an operator gives to register a VM.
#[derive(Clone, Debug, Default)]
pub struct NewVm {
    /// Name.
    pub name: String,
    /// UUID, if known (libvirt); a new one otherwise.
    pub uuid: Option<String>,
    /// Disks as `(label, path)`; a missing label becomes `disk0`, `disk1`, ...
    pub disks: Vec<(Option<String>, PathBuf)>,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// NICs.
    pub nics: Vec<Nic>,
    /// QMP socket of the running QEMU.
    pub qmp: Option<PathBuf>,
    /// Guest agent socket.
    pub qga: Option<PathBuf>,
    /// Accept a raw disk that looks like no disk (smaller than 1 MiB, or text).
    pub force: bool,
    /// The libvirt domain it is, when read from libvirt.
    pub libvirt: Option<LibvirtLink>,
}

/// A raw disk smaller than this is refused without `force`: no installer makes one.
pub const SMALLEST_RAW_DISK: u64 = 1 << 20;

/// Build a record from what the operator gave: probe each disk, apply the limits.
pub fn prepare(new: NewVm, limits: &Limits) -> Result<VmRecord> {
    check_name("VM", &new.name)?;
    if new.disks.is_empty() {
        return Err(EngineError::Invalid(format!("VM {:?} needs at least one --disk", new.name)));
    }
    limits.check_disk_count(&new.name, new.disks.len())?;
    let mut disks: Vec<DiskRecord> = Vec::new();
    for (i, (label, path)) in new.disks.into_iter().enumerate() {
        let label = label.unwrap_or_else(|| format!("disk{i}"));
        check_name("disk label", &label)?;
        if disks.iter().any(|d| d.label == label) {
            return Err(EngineError::Invalid(format!("two disks are labelled {label:?}")));
        }
        let path = absolute(&path)?;
        let info = disk::probe(&path)?;
        limits.check_disk_size(&path, info.size)?;
        if info.format == DiskFormat::Raw && !info.block_device && !new.force {
            check_looks_like_a_disk(&path, info.size)?;
        }
        disks.push(DiskRecord { label, path, format: info.format, size: info.size });
    }
    for nic in &new.nics {
        check_mac(&nic.mac)?;
    }
    Ok(VmRecord {
        name: new.name,
        uuid: match new.uuid {
            Some(u) => u,
            None => new_uuid()?,
        },
        vcpus: new.vcpus.max(1),
        memory_mib: new.memory_mib.max(1),
        disks,
        nics: new.nics,
        qmp: new.qmp.as_deref().map(absolute).transpose()?,
        qga: new.qga.as_deref().map(absolute).transpose()?,
        scripts: None,
        libvirt: new.libvirt,
        registered: Timestamp::now(),
    })
}

/// Refuse a raw file that is almost certainly not the disk meant: too small, or text.
fn check_looks_like_a_disk(path: &Path, size: u64) -> Result<()> {
    let why = if size < SMALLEST_RAW_DISK {
        format!("only {size} bytes, smaller than any real disk")
    } else if disk::image::looks_like_text(path)? {
        "its first bytes are text, not a boot sector, partition table or filesystem".to_string()
    } else {
        return Ok(());
    };
    Err(EngineError::Suspicious { path: path.to_path_buf(), why })
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| EngineError::Invalid(format!("{}: {e}", path.display())))
}

/// Refuse anything but six colon-separated hex octets.
pub fn check_mac(mac: &str) -> Result<()> {
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())) {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!("{mac:?} is not a MAC address (like 52:54:00:12:34:56)")))
    }
}
