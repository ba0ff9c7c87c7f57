//! Live backups of a booted Debian guest (`.ci/guest-image`: qemu-guest-agent and a writer
//! that appends a synced line every 100 ms) under plain QEMU with TCG: the freeze really
//! happens, and the live path never harms the VM — a scratch directory that fills pauses the
//! guest only until vmvault stops the snapshot and resumes it.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use disk::DiskFormat;
use disk::qmp::QmpClient;
use engine::backup::{BackupOptions, backup};
use engine::limits::Limits;
use engine::services::vms::{self, NewVm};
use serde_json::json;
use testkit::guest::{BootedGuest, overlay};
use vault::Consistency;

const T: Duration = Duration::from_secs(30);

/// A booted guest with a 64 MiB qcow2 data disk `vdb`, registered as `name` with its QMP
/// and agent sockets.
async fn boot(lab: &Lab, name: &str) -> BootedGuest {
    let (root, data) = (lab.path("root.qcow2"), lab.path("data.qcow2"));
    overlay(&root);
    create(&data, "qcow2", "64M");
    // Data everywhere: fleecing stores zeros as metadata, so only real old data fills it.
    qemu_io(&data, "qcow2", "write -P 0x5a 0 64M");
    let guest = BootedGuest::boot(lab.dir.path(), &root, &[(&data, "qcow2")]);
    let new = NewVm {
        name: name.into(),
        disks: vec![(Some("vda".into()), root), (Some("vdb".into()), data)],
        qmp: Some(lab.path("qmp.sock")),
        qga: Some(lab.path("qga.sock")),
        ..Default::default()
    };
    vms::add(lab.catalog(), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    guest
}

fn run_state(monitor: &Mutex<QmpClient>) -> String {
    monitor.lock().unwrap().execute("query-status", json!({}), T).unwrap()["status"].as_str().unwrap().into()
}

/// The scratch fills while the guest writes: QEMU pauses the VM on the failed copy-before-
/// write; vmvault stops the snapshot inside QEMU, resumes the guest, fails with one line and
/// commits nothing — and the guest's write that failed reaches its disk after all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scratch_that_fills_fails_the_backup_and_the_vm_runs_on() {
    let lab = Lab::new(false).await;
    let _vm = boot(&lab, "web").await;
    let scratch = lab.path("scratch");
    let _tmpfs = testkit::Tmpfs::mount(&scratch, "80M");
    let monitor = Arc::new(Mutex::new(QmpClient::connect(&lab.path("guest.sock"), T).unwrap()));
    let qga = lab.path("qga.sock");
    let hook = fill_then_overwrite(&scratch, move |command| guest_exec(&qga, command));
    fails_sparing_the_vm(&lab, "web", &scratch, hook).await;
    assert_eq!(run_state(&monitor), "running", "the VM was left paused");
    // The guest's disk holds what it wrote (the write that failed was retried on resume).
    let (rc, written) = guest_exec(&lab.path("qga.sock"), "head -c 32M /dev/vdb | md5sum");
    let wanted =
        Command::new("sh").args(["-c", &format!("{PATTERN} | head -c 32M | md5sum")]).output().unwrap();
    assert_eq!(rc, 0);
    assert_eq!(written, String::from_utf8_lossy(&wanted.stdout), "the guest's write did not reach its disk");
}

/// What the guest writes over its data disk.
const PATTERN: &str = "yes vmvault-guest-write";

/// Progress that, once the snapshot exists, fills the 80 MiB scratch with 72 MiB of something
/// else, then has the guest (through `exec`) overwrite 32 MiB of its data disk, whose old
/// content no longer fits. The guest's write must succeed in the end: the VM was resumed.
fn fill_then_overwrite(
    scratch: &Path,
    exec: impl Fn(&str) -> (i64, String) + Send + 'static,
) -> DuringTransfer {
    let filler = scratch.join("filler");
    DuringTransfer(Mutex::new(Some(Box::new(move || {
        let st = Command::new("fallocate").args(["-l", "72M"]).arg(&filler).status().unwrap();
        assert!(st.success());
        let (rc, _) =
            exec(&format!("{PATTERN} | dd of=/dev/vdb bs=1M count=32 iflag=fullblock oflag=direct"));
        assert_eq!(rc, 0, "the guest's write failed for good: the VM was not resumed in time");
    }))))
}

/// Back up `vm`'s data disk with `hook` filling its scratch: the backup fails with one line
/// saying the VM paused and was resumed, commits nothing, and leaves only the filler behind.
async fn fails_sparing_the_vm(lab: &Lab, vm: &str, scratch: &Path, hook: DuringTransfer) {
    let options =
        BackupOptions { disks: vec!["vdb".into()], scratch: scratch.to_path_buf(), ..Default::default() };
    let err = backup(Arc::clone(&lab.vault), vm, options, Arc::new(hook)).await.unwrap_err();
    let line = err.to_string();
    eprintln!("the backup failed with: {line}");
    assert!(line.contains("paused on an I/O error") && line.contains("resumed"), "{line}");
    assert!(line.contains("Nothing was committed") && !line.contains('\n'), "{line}");
    assert!(engine::points::list(&lab.vault, vm).await.unwrap().is_empty(), "a point was committed");
    let left: Vec<_> = std::fs::read_dir(scratch).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("filler")], "the backup left files in its scratch");
}

/// A scratch directory with less room than the disks are large is refused before anything
/// touches the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scratch_without_room_for_the_disks_is_refused_before_the_snapshot() {
    let lab = Lab::new(false).await;
    let _vm = boot(&lab, "web").await;
    let scratch = lab.path("scratch");
    let _tmpfs = testkit::Tmpfs::mount(&scratch, "16M");
    let options = BackupOptions { disks: vec!["vdb".into()], scratch: scratch.clone(), ..Default::default() };
    let err = backup(Arc::clone(&lab.vault), "web", options, Arc::new(engine::NoProgress)).await.unwrap_err();
    assert_eq!(err.kind(), engine::error::ErrorKind::Limit, "{err}");
    let line = err.to_string();
    assert!(
        line.contains("16.0 MiB free") && line.contains("64.0 MiB") && line.contains("--scratch"),
        "{line}"
    );
    let monitor = Mutex::new(QmpClient::connect(&lab.path("guest.sock"), T).unwrap());
    assert_eq!(run_state(&monitor), "running");
    let nodes = monitor.lock().unwrap().execute("query-named-block-nodes", json!({}), T).unwrap();
    assert!(!nodes.to_string().contains("vmvault-fleece"), "a fleecing node was left: {nodes}");
    let blocks = monitor.lock().unwrap().execute("query-block", json!({}), T).unwrap();
    for block in blocks.as_array().unwrap() {
        let bitmaps = &block["inserted"]["dirty-bitmaps"];
        assert!(bitmaps.as_array().is_none_or(Vec::is_empty), "a bitmap was added: {bitmaps}");
    }
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "the scratch was left with files");
}

/// A paused VM's agent cannot answer: the note says the VM is paused (not that the agent is
/// missing), the point is crash-consistent, and the VM stays paused as its operator left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_vm_is_named_paused_and_stays_paused() {
    let lab = Lab::new(false).await;
    let _vm = boot(&lab, "web").await;
    let monitor = Mutex::new(QmpClient::connect(&lab.path("guest.sock"), T).unwrap());
    monitor.lock().unwrap().execute("stop", json!({}), T).unwrap();
    let options = BackupOptions { disks: vec!["vdb".into()], ..Default::default() };
    let point = backup(Arc::clone(&lab.vault), "web", options, Arc::new(engine::NoProgress)).await.unwrap();
    assert_eq!(point.consistency, Consistency::Crash);
    assert!(
        point.notes.iter().any(|n| n.contains("not running") && n.contains("\"paused\"")),
        "{:?}",
        point.notes
    );
    assert!(!point.notes.iter().any(|n| n.contains("agent absent")), "{:?}", point.notes);
    assert_eq!(run_state(&monitor), "paused");
}

/// The freeze is real: the point of the booted guest's root disk is file-system-consistent,
/// its ext4 needs no journal recovery (`e2fsck -fn` clean), and the writer's log in it is a
/// whole-line prefix of the log the guest goes on writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_point_of_a_booted_guest_is_clean_and_ends_at_the_snapshot() {
    let lab = Lab::new(false).await;
    let _vm = boot(&lab, "web").await;
    std::thread::sleep(Duration::from_secs(2));
    let options = BackupOptions { disks: vec!["vda".into()], ..Default::default() };
    let point = backup(Arc::clone(&lab.vault), "web", options, Arc::new(engine::NoProgress)).await.unwrap();
    assert_eq!(point.consistency, Consistency::FileSystem, "{:?}", point.notes);
    // Nothing is left of the backup's work directories (sockets, overlays).
    let base =
        std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let prefix = format!("vmvault-{}-", point.point_id);
    let left: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "the backup left {left:?} in {}", base.display());
    let restored = lab.path("restored.raw");
    lab.restore("web", &point.point_id, "vda", &restored, DiskFormat::Raw).await;
    let (clean, fsck, log) = testkit::guest::check_root(&restored);
    assert!(clean, "e2fsck -fn on the point's root: {fsck}");
    std::thread::sleep(Duration::from_secs(1));
    let (rc, live) = guest_exec(&lab.path("qga.sock"), "cat /var/log/writer.log");
    assert_eq!(rc, 0);
    assert!(log.ends_with('\n') && log.lines().count() > 3, "the point's log is not whole: {log:?}");
    assert!(live.starts_with(&log), "the point's log is not a prefix of the guest's");
    assert!(live.len() > log.len(), "the writer did not go on after the thaw");
}

/// The same under libvirt: the domain pauses on the full scratch during libvirt's backup job;
/// vmvault ends the job, resumes the domain, fails with one line and commits nothing, and the
/// checkpoint it began is gone again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scratch_that_fills_under_libvirt_fails_the_backup_and_the_domain_runs_on() {
    use testkit::libvirt::{LibvirtGuest, URI, virsh};
    let lab = Lab::new(false).await;
    let (root, data) = (lab.path("root.qcow2"), lab.path("data.qcow2"));
    overlay(&root);
    create(&data, "qcow2", "64M");
    qemu_io(&data, "qcow2", "write -P 0x5a 0 64M");
    // Mounted before the domain starts: libvirt runs QEMU in a mount namespace of its own,
    // which does not see file systems mounted later.
    let scratch = lab.path("scratch");
    let _tmpfs = testkit::Tmpfs::mount(&scratch, "80M");
    let guest = LibvirtGuest::define("vmv-full", lab.dir.path(), &root, &[(&data, "qcow2")]);
    guest.start();
    for new in engine::libvirt::read_domains(URI, &["vmv-full".into()], false).unwrap() {
        vms::add(lab.catalog(), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    }
    let hook = fill_then_overwrite(&scratch, |command| testkit::libvirt::guest_exec("vmv-full", command));
    fails_sparing_the_vm(&lab, "vmv-full", &scratch, hook).await;
    assert_eq!(guest.state(), "running", "the domain was left paused");
    assert_eq!(virsh(&["checkpoint-list", "vmv-full", "--name"]).trim(), "", "the new checkpoint stayed");
}

/// A stopped VM without libvirt: its guest's file systems tell how it stopped. Shut down by the
/// guest, every ext file system was unmounted cleanly and the point is file-system-consistent;
/// killed while running, the journal needs recovery and the point is crash-consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vm_is_file_system_consistent_only_after_a_clean_shutdown() {
    let lab = Lab::new(false).await;
    let vm = boot(&lab, "web").await;
    let mut agent = disk::qmp::GuestAgent::connect(&lab.path("qga.sock"), T).unwrap();
    // The guest powers off: no answer comes.
    let _ = agent.execute("guest-shutdown", json!({}), Duration::from_secs(2));
    wait_gone(vm.pid);
    drop(vm);
    // The OS disk (the data disk holds no file system, so it cannot tell).
    let root_only = || BackupOptions { disks: vec!["vda".into()], ..Default::default() };
    let clean =
        backup(Arc::clone(&lab.vault), "web", root_only(), Arc::new(engine::NoProgress)).await.unwrap();
    assert_eq!(clean.consistency, Consistency::FileSystem, "{:?}", clean.notes);
    assert!(clean.notes.iter().any(|n| n.contains("unmounted cleanly")), "{:?}", clean.notes);

    let vm =
        BootedGuest::boot(lab.dir.path(), &lab.path("root.qcow2"), &[(&lab.path("data.qcow2"), "qcow2")]);
    let pid = vm.pid;
    drop(vm); // SIGKILL: as if the power went
    wait_gone(pid);
    let pulled =
        backup(Arc::clone(&lab.vault), "web", root_only(), Arc::new(engine::NoProgress)).await.unwrap();
    assert_eq!(pulled.consistency, Consistency::Crash, "{:?}", pulled.notes);
}

/// Wait until the process `pid` is gone (QEMU exits once its guest powers off).
fn wait_gone(pid: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(std::time::Instant::now() < deadline, "QEMU did not exit");
        std::thread::sleep(Duration::from_millis(200));
    }
}
