//! A libvirt domain definition (from libvirt, a file, or the vault's catalog) read into a
//! registration and rewritten for a restored VM: any bytes give a clear error or a definition,
//! never a panic.
#![no_main]

use engine::catalog::vm::{DiskRecord, VmRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(new) = engine::libvirt::parse_definition(text, "fuzz") else { return };
    // The registration as `vms::prepare` would make it, without probing the disks named.
    let disks = new.disks.iter().enumerate().map(|(i, (label, path))| DiskRecord {
        label: label.clone().unwrap_or_else(|| format!("disk{i}")),
        path: path.clone(),
        format: disk::DiskFormat::Qcow2,
        size: 1 << 30,
    });
    let vm = VmRecord {
        name: new.name,
        uuid: new.uuid.unwrap_or_default(),
        vcpus: new.vcpus,
        memory_mib: new.memory_mib,
        disks: disks.collect(),
        nics: new.nics,
        qmp: None,
        qga: None,
        scripts: None,
        libvirt: None,
        registered: jiff::Timestamp::UNIX_EPOCH,
    };
    let _ = engine::libvirt::restored_xml(text, &vm, &engine::libvirt::Attach::Bridge("br0".into()));
});
