//! A booted test guest under a real libvirtd, imported into the lab's vault, and what the
//! libvirt tests ask of it.

use std::path::Path;
use std::process::Command;

use super::{Lab, sh};
use testkit::guest::overlay;
use testkit::libvirt::{LibvirtGuest, URI, guest_exec};

/// A lab with a booted guest under libvirt: `vda` the OS, `vdb` a 64 MiB qcow2 data disk.
pub fn booted(lab: &Lab, name: &str) -> LibvirtGuest {
    let (root, data) = (lab.path("root.qcow2"), lab.path("data.qcow2"));
    overlay(&root);
    sh("qemu-img", &["create", "-q", "-f", "qcow2", &data.display().to_string(), "64M"]);
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x5a 0 64M", &data.display().to_string()]);
    let guest = LibvirtGuest::define(name, lab.dir.path(), &root, &[(&data, "qcow2")]);
    guest.start();
    lab.ok(&["vault", "init", "--no-encryption"]);
    // Tests back up more often than Azure's on-demand limit allows in a day.
    lab.ok(&["vault", "set", "--on-demand-per-day", "100"]);
    lab.ok(&["vm", "import-libvirt", name, "--libvirt", URI]);
    guest
}

pub fn backup(lab: &Lab, vm: &str) -> serde_json::Value {
    let scratch = lab.path("scratch").display().to_string();
    lab.json(&["backup", vm, "--scratch", &scratch, "--json"])
}

pub fn modes(summary: &serde_json::Value) -> Vec<String> {
    summary["disks"].as_array().unwrap().iter().map(|d| d["mode"].as_str().unwrap().to_string()).collect()
}

/// The guest writes `blocks` × 64 KiB of random data over its data disk from `seek` on, and
/// returns the md5 of the whole data disk as the guest sees it.
pub fn guest_writes(domain: &str, seek: u32, blocks: u32) -> String {
    let (rc, _) = guest_exec(
        domain,
        &format!("dd if=/dev/urandom of=/dev/vdb bs=64k seek={seek} count={blocks} oflag=direct"),
    );
    assert_eq!(rc, 0);
    data_md5(domain)
}

pub fn data_md5(domain: &str) -> String {
    disk_md5(domain, "vdb")
}

/// The md5 of the guest's disk `disk` (`vdc`) as the guest reads it.
pub fn disk_md5(domain: &str, disk: &str) -> String {
    let (rc, out) = guest_exec(domain, &format!("md5sum < /dev/{disk}"));
    assert_eq!(rc, 0);
    out.split_whitespace().next().unwrap().to_string()
}

pub fn md5(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// The point's data disk restored as raw: its md5.
pub fn restored_data(lab: &Lab, vm: &str, point: &str) -> String {
    let to = lab.path(&format!("r-{point}.raw"));
    lab.ok(&[
        "restore",
        "disk",
        vm,
        "--point",
        point,
        "--disk",
        "vdb",
        "--to",
        &to.display().to_string(),
        "--format",
        "raw",
    ]);
    let sum = md5(&to);
    let _ = std::fs::remove_file(&to);
    sum
}
