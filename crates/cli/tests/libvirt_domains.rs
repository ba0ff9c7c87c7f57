//! vmvault on a libvirt host, as an operator uses it: a real libvirtd (started by hand as root)
//! running the booted Debian test guest (`.ci/guest-image`: qemu-guest-agent and a writer that
//! appends a synced line every 100 ms) as a domain of type `qemu` (TCG). Domains are imported
//! from libvirt itself, backed up through libvirt's backup API while they run (checkpoints,
//! pull mode, freeze through libvirt's agent calls), and restored as domains that boot.

mod common;

use std::process::Command;

use common::Lab;
use common::libvirt::*;
use testkit::libvirt::{guest_exec, try_virsh, virsh, wait_for_agent};

/// Full and incremental backups of a running domain through libvirt, frozen by libvirt's
/// agent calls; the point's root file system is clean and its writer's log ends at the
/// snapshot; the data disk restores bit-exact; `restore vm --define --start` boots under
/// libvirt to `guest-ping`, and the generated `qemu.sh` boots headless to `guest-ping` too.
#[test]
fn a_running_domain_is_backed_up_through_libvirt_and_restores_as_a_domain_that_boots() {
    let lab = Lab::local(None);
    let guest = booted(&lab, "vmv-web");
    let first = backup(&lab, "vmv-web");
    assert_eq!(first["consistency"], "file-system", "{first}");
    assert_eq!(modes(&first), ["full", "full"]);
    assert!(virsh(&["checkpoint-list", "vmv-web", "--name"]).contains(first["point_id"].as_str().unwrap()));

    let want = guest_writes("vmv-web", 100, 3);
    let second = backup(&lab, "vmv-web");
    let p2 = second["point_id"].as_str().unwrap();
    assert_eq!(second["consistency"], "file-system", "{second}");
    assert_eq!(modes(&second), ["incremental", "incremental"], "{second}");
    assert!(second["disks"][1]["bytes_read"].as_u64().unwrap() < 4 << 20, "{second}");
    let checkpoints = virsh(&["checkpoint-list", "vmv-web", "--name"]);
    assert_eq!(
        checkpoints.split_whitespace().collect::<Vec<_>>(),
        [format!("vmvault-{p2}")],
        "old checkpoints stay"
    );
    assert_eq!(restored_data(&lab, "vmv-web", p2), want, "the data disk is not as it was");

    // The frozen point's root file system needs no journal recovery, and the writer's log in
    // it is a whole-line prefix of the one the guest goes on writing.
    let root = lab.path("r-root.raw");
    lab.ok(&[
        "restore",
        "disk",
        "vmv-web",
        "--point",
        p2,
        "--disk",
        "vda",
        "--to",
        &root.display().to_string(),
        "--format",
        "raw",
    ]);
    let (clean, fsck, log) = testkit::guest::check_root(&root);
    assert!(clean, "e2fsck -fn on the point's root: {fsck}");
    let (_, live) = guest_exec("vmv-web", "cat /var/log/writer.log");
    assert!(log.ends_with('\n') && log.lines().count() > 3, "the point's log is not whole: {log:?}");
    assert!(live.starts_with(&log) && live.len() > log.len(), "the point's log does not end at the snapshot");
    std::fs::remove_file(&root).unwrap();

    // Restored as a new domain that runs.
    let out = restore_vm(&lab, p2, "vmv-web-copy", &["--define", "--start"]);
    let _copy = defined("vmv-web-copy");
    assert!(out.contains("defined and started"), "{out}");
    wait_for_agent("vmv-web-copy");
    let xml = virsh(&["dumpxml", "vmv-web-copy"]);
    assert!(
        xml.contains("org.qemu.guest_agent.0") && xml.contains("<acpi/>") && xml.contains("<graphics"),
        "{xml}"
    );
    assert!(!xml.contains(&guest_uuid(&guest.name)), "the copy kept the source's UUID");
    assert_eq!(data_md5("vmv-web-copy"), want, "the restored domain's data disk differs");

    // The qemu.sh of a restore runs headless as it is, and boots.
    let bare = lab.path("vmv-web-bare");
    restore_vm(&lab, p2, "vmv-web-bare", &[]);
    let script = bare.join("vmv-web-bare.qemu.sh");
    let pidfile = bare.join("qemu.pid");
    let st = Command::new("sh")
        .arg(&script)
        .args(["-daemonize", "-pidfile", &pidfile.display().to_string()])
        .env("QEMU_ACCEL", "tcg")
        .status()
        .unwrap();
    assert!(st.success(), "the generated qemu.sh did not start");
    let _bare = killed(std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap());
    let agent = bare.join("vmv-web-bare.qga");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        if let Ok(mut a) = disk::qmp::GuestAgent::connect(&agent, std::time::Duration::from_secs(5))
            && a.execute("guest-ping", serde_json::json!({}), std::time::Duration::from_secs(5)).is_ok()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the qemu.sh guest did not answer guest-ping");
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(bare.join("vmv-web-bare.serial.log").exists(), "no serial log beside the script");
}

/// `restore vm vmv-web --point POINT --as NAME --to <lab>/NAME EXTRA…`.
fn restore_vm(lab: &Lab, point: &str, name: &str, extra: &[&str]) -> String {
    let to = lab.path(name).display().to_string();
    let mut args = vec!["restore", "vm", "vmv-web", "--point", point, "--as", name, "--to", &to];
    args.extend_from_slice(extra);
    lab.ok(&args)
}

fn guest_uuid(domain: &str) -> String {
    virsh(&["domuuid", domain]).trim().to_string()
}

/// Runs its closure when dropped: removes what a test made, also when it fails.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Destroy and undefine a domain the test defined through vmvault, when dropped.
fn defined(name: &'static str) -> OnDrop<impl FnMut()> {
    OnDrop(move || {
        let _ = try_virsh(&["destroy", name]);
        let _ = try_virsh(&["undefine", "--checkpoints-metadata", name]);
    })
}

/// Kill a process the test started, when dropped.
fn killed(pid: i32) -> OnDrop<impl FnMut()> {
    OnDrop(move || {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    })
}

/// Each backup re-reads the domain's definition: a disk attached with `virsh attach-disk
/// --persistent` (here a raw one, which holds no bitmap: read in full each time, while the
/// domain runs) is backed up from the next point on, bit-exact; a detached one is noted and no
/// longer read. A domain the guest shut down cleanly gives a
/// file-system-consistent point; one destroyed gives a crash-consistent one.
#[test]
fn attached_and_detached_disks_and_how_the_domain_stopped_are_followed() {
    let lab = Lab::local(None);
    let guest = booted(&lab, "vmv-att");
    backup(&lab, "vmv-att");
    let extra = lab.path("extra.raw");
    common::sh("qemu-img", &["create", "-q", "-f", "raw", &extra.display().to_string(), "16M"]);
    let extra_arg = extra.display().to_string();
    virsh(&[
        "attach-disk",
        "vmv-att",
        &extra_arg,
        "vdc",
        "--driver",
        "qemu",
        "--subdriver",
        "raw",
        "--persistent",
    ]);
    let (rc, _) =
        guest_exec("vmv-att", "yes vmvault | dd of=/dev/vdc bs=1M count=8 iflag=fullblock oflag=direct");
    assert_eq!(rc, 0);
    let want = disk_md5("vmv-att", "vdc");
    let attached = backup(&lab, "vmv-att");
    assert!(attached["notes"].to_string().contains("disk vdc"), "{attached}");
    assert_eq!(modes(&attached), ["incremental", "incremental", "full"], "{attached}");
    let to = lab.path("r-vdc.raw");
    let point = attached["point_id"].as_str().unwrap();
    lab.ok(&[
        "restore",
        "disk",
        "vmv-att",
        "--point",
        point,
        "--disk",
        "vdc",
        "--to",
        &to.display().to_string(),
        "--format",
        "raw",
    ]);
    assert_eq!(md5(&to), want, "the attached disk is not bit-exact");
    let raw_again = backup(&lab, "vmv-att");
    assert_eq!(modes(&raw_again), ["incremental", "incremental", "full"]);
    assert!(raw_again["notes"].to_string().contains("raw disk"), "{raw_again}");

    virsh(&["detach-disk", "vmv-att", "vdb", "--persistent"]);
    let detached = backup(&lab, "vmv-att");
    assert!(detached["notes"].to_string().contains("disk vdb was detached"), "{detached}");
    let labels: Vec<&str> =
        detached["disks"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["vda", "vdc"]);

    // Shut down by the guest (through its agent): its file systems were unmounted cleanly.
    // (The guest powers off at once; libvirt may then report the agent's socket closing.)
    let _ = try_virsh(&["shutdown", "--mode", "agent", "vmv-att"]);
    wait_state(&guest, "shut off");
    let clean = backup(&lab, "vmv-att");
    assert_eq!(clean["consistency"], "file-system", "{clean}");
    assert!(clean["notes"].to_string().contains("shut itself down"), "{clean}");
    // Destroyed: as if the power went.
    guest.start();
    virsh(&["destroy", "vmv-att"]);
    let pulled = backup(&lab, "vmv-att");
    assert_eq!(pulled["consistency"], "crash", "{pulled}");

    // `restore replace` on the shut-off domain puts the attached disk back as it was.
    common::sh("qemu-io", &["-f", "raw", "-c", "write -P 0x77 0 1M", &extra_arg]);
    lab.ok(&["restore", "replace", "vmv-att", "--point", point, "--disk", "vdc"]);
    assert_eq!(md5(&extra), want, "restore replace did not put vdc back");
    // The guest names its disks in probe order: with vdb detached, libvirt's vdc is its vdb.
    guest.start();
    assert_eq!(disk_md5("vmv-att", "vdb"), want);
}

fn wait_state(guest: &testkit::libvirt::LibvirtGuest, state: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while guest.state() != state {
        assert!(std::time::Instant::now() < deadline, "{} is {:?}, not {state:?}", guest.name, guest.state());
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
