//! Registered VMs: their disks and hardware, in `catalog/vms/<name>.json`, so a fresh
//! install pointed at the vault knows them too.

use std::path::PathBuf;

use disk::DiskFormat;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vault::layout::{self, ObjectKey, Prefix};

use super::Record;
use crate::error::{EngineError, Record as RecordKind, Result};

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
