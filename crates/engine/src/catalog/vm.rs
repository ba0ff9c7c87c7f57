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
    /// `network` names a host bridge (libvirt `<interface type='bridge'>`), not a network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bridge: bool,
}

/// How a VM that libvirt manages is reached: every backup asks libvirt for its state and its
/// current definition (disks added, removed or resized are handled then), so no socket path or
/// domain id is ever kept stale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibvirtLink {
    /// The daemon's URI (`qemu:///system`).
    pub uri: String,
    /// The domain's persistent definition as last read: what `restore vm --define` re-creates
    /// (agent channel, serial console, graphics, features), with new name, UUID, MACs, disks.
    pub definition: String,
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
    /// The libvirt domain it is (by its UUID), when libvirt manages it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt: Option<LibvirtLink>,
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
