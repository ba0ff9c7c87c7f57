//! Registered VMs: their disks and hardware, in `catalog/vms/<name>.json`, so a fresh
//! install pointed at the vault knows them too.

use std::path::{Path, PathBuf};

use disk::DiskFormat;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vault::layout::{self, ObjectKey, Prefix};

use super::Record;
use crate::error::{EngineError, Record as RecordKind, Result};
use crate::limits::Limits;
use crate::names::{check_name, new_uuid};

/// One disk of a VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// Label within the VM (`vda`, `data`, ...): how commands name the disk.
    pub label: String,
    /// Image file or block device.
    pub path: PathBuf,
    /// Format, detected when the disk was added.
    pub format: DiskFormat,
    /// Logical size in bytes when the disk was added.
    pub size: u64,
}

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// MAC address, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// libvirt network or bridge it attaches to, if known.
    #[serde(default)]
    pub network: Option<String>,
}

/// A registered virtual machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Unique name.
    pub name: String,
    /// SMBIOS UUID.
    pub uuid: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disks in order; the first is the OS disk.
    pub disks: Vec<DiskRecord>,
    /// Network interfaces.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// QMP socket of the running QEMU, for live backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qmp: Option<PathBuf>,
    /// Guest agent socket (qemu-ga), for freezing filesystems during the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qga: Option<PathBuf>,
    /// Pre/post-snapshot scripts of live backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scripts: Option<crate::scripts::ScriptConfig>,
    /// When it was registered.
    pub registered: Timestamp,
}

impl VmRecord {
    /// The disk with this label.
    pub fn disk(&self, label: &str) -> Result<&DiskRecord> {
        self.disks.iter().find(|d| d.label == label).ok_or_else(|| EngineError::NoSuchDisk {
            vm: self.name.clone(),
            label: label.to_string(),
            known: self.disks.iter().map(|d| d.label.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
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
}

/// A raw disk smaller than this is refused without `force`: no installer makes one.
pub const SMALLEST_RAW_DISK: u64 = 1 << 20;

impl Record for VmRecord {
    const KIND: RecordKind = RecordKind::Vm;
    fn object_key(name: &str) -> ObjectKey {
        layout::vm(name)
    }
    fn prefix() -> Prefix {
        layout::vms()
    }
    fn name(&self) -> &str {
        &self.name
    }
}

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
