//! When vmvault's checkpoint record and libvirt disagree, a backup never builds a wrong
//! incremental: libvirt's checkpoint deleted behind vmvault's back, libvirtd restarted, the
//! domain redefined, the bitmap removed from the image — each backup after the fault reads in
//! full (deduplicated) with a note saying why, or incrementally where libvirt still tracks
//! every change; every point restores bit-exact; and the backup after is incremental again.
//! (Its own test binary: it restarts libvirtd.)

mod common;

use common::Lab;
use common::libvirt::*;
use testkit::libvirt::{restart_daemon, virsh};

/// One backup after a fault: what it did, checked against the guest's own view of its data.
fn backup_checked(lab: &Lab, seek: u32) -> serde_json::Value {
    let want = guest_writes("vmv-cp", seek, 2);
    let summary = backup(lab, "vmv-cp");
    let point = summary["point_id"].as_str().unwrap();
    assert_eq!(restored_data(lab, "vmv-cp", point), want, "point {point} is not bit-exact: {summary}");
    summary
}

fn notes(summary: &serde_json::Value) -> String {
    summary["notes"].to_string()
}

#[test]
fn checkpoint_faults_give_a_full_read_with_a_note_then_incrementals_again() {
    let lab = Lab::local(None);
    let guest = booted(&lab, "vmv-cp");
    let first = backup_checked(&lab, 10);
    assert_eq!(modes(&first), ["full", "full"]);
    let point = |s: &serde_json::Value| s["point_id"].as_str().unwrap().to_string();

    // libvirt's checkpoint deleted behind vmvault's back (its bitmaps go with it).
    virsh(&["checkpoint-delete", "vmv-cp", &format!("vmvault-{}", point(&first))]);
    let after = backup_checked(&lab, 20);
    assert_eq!(modes(&after), ["full", "full"], "{after}");
    assert!(notes(&after).contains("libvirt has no checkpoint"), "{after}");
    assert!(after["bytes_new"].as_u64().unwrap() < 8 << 20, "the full read was not deduplicated: {after}");
    let again = backup_checked(&lab, 30);
    assert_eq!(modes(&again), ["incremental", "incremental"], "{again}");

    // libvirtd restarted: its checkpoints persist, so the next backup may stay incremental —
    // whatever it does, it restores bit-exact, and the one after is incremental.
    restart_daemon();
    let restarted = backup_checked(&lab, 40);
    if modes(&restarted) != ["incremental", "incremental"] {
        assert!(notes(&restarted).contains("full read"), "a full read without a reason: {restarted}");
    }
    assert_eq!(modes(&backup_checked(&lab, 50)), ["incremental", "incremental"]);

    // The domain redefined from its own XML while shut off, and started again: libvirt forgot
    // its checkpoints (the bitmaps stay in the images).
    let xml = lab.path("redefine.xml");
    std::fs::write(&xml, virsh(&["dumpxml", "--inactive", "vmv-cp"])).unwrap();
    virsh(&["destroy", "vmv-cp"]);
    virsh(&["undefine", "--checkpoints-metadata", "vmv-cp"]);
    virsh(&["define", &xml.display().to_string()]);
    guest.start();
    let redefined = backup_checked(&lab, 60);
    assert_eq!(modes(&redefined), ["full", "full"], "{redefined}");
    assert!(notes(&redefined).contains("libvirt has no checkpoint"), "{redefined}");
    let again = backup_checked(&lab, 70);
    assert_eq!(modes(&again), ["incremental", "incremental"], "{again}");

    // The bitmap removed from the data disk's image (libvirt still has the checkpoint).
    let checkpoint = format!("vmvault-{}", point(&again));
    let node = data_node("vmv-cp");
    virsh(&[
        "qemu-monitor-command",
        "vmv-cp",
        &format!(
            r#"{{"execute":"block-dirty-bitmap-remove","arguments":{{"node":"{node}","name":"{checkpoint}"}}}}"#
        ),
    ]);
    let broken = backup_checked(&lab, 80);
    assert_eq!(modes(&broken), ["full", "full"], "{broken}");
    assert!(notes(&broken).contains("libvirt refused the incremental"), "{broken}");
    let again = backup_checked(&lab, 90);
    assert_eq!(modes(&again), ["incremental", "incremental"], "{again}");
    let left = virsh(&["checkpoint-list", "vmv-cp", "--name"]);
    assert_eq!(left.split_whitespace().collect::<Vec<_>>(), [format!("vmvault-{}", point(&again))]);
}

/// The format node of the domain's `vdb` (QEMU's second disk), from QEMU's monitor.
fn data_node(domain: &str) -> String {
    let out = virsh(&["qemu-monitor-command", domain, r#"{"execute":"query-block"}"#]);
    let blocks: serde_json::Value = serde_json::from_str(&out).unwrap();
    blocks["return"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["qdev"].as_str().unwrap_or_default().contains("disk1"))
        .and_then(|b| b["inserted"]["node-name"].as_str())
        .unwrap()
        .to_string()
}
