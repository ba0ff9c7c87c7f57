//! Live backups of a running QEMU (TCG, no guest OS): guest writes through QMP before, during
//! and after the snapshot; the point holds exactly the content at the snapshot instant.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use disk::DiskFormat;
use disk::qmp::QmpClient;
use engine::backup::{BackupOptions, ReadMode, backup};
use engine::limits::Limits;
use engine::services::vms::NewVm;
use engine::services::{groups, vms};
use engine::{Progress, points};
use serde_json::json;
use testkit::qemu::Qemu;

const T: Duration = Duration::from_secs(30);

/// A guest write to `vda`, as the guest's own device would do it.
fn guest_write(guest: &mut QmpClient, pattern: u8, offset: &str, len: &str) {
    guest_write_to(guest, "vda", pattern, offset, len);
}

/// A guest write to the device `id`.
fn guest_write_to(guest: &mut QmpClient, id: &str, pattern: u8, offset: &str, len: &str) {
    let line =
        format!("qemu-io -d /machine/peripheral/{id}/virtio-backend \"write -P {pattern} {offset} {len}\"");
    guest.execute("human-monitor-command", json!({ "command-line": line }), T).unwrap();
}

/// The image the disk should equal: the writes applied offline to a fresh image.
fn expected(dir: &Path, name: &str, writes: &[(u8, &str, &str)]) -> PathBuf {
    expected_as(dir, name, "qcow2", "64M", writes)
}

fn expected_as(dir: &Path, name: &str, format: &str, size: &str, writes: &[(u8, &str, &str)]) -> PathBuf {
    let path = dir.join(name);
    create(&path, format, size);
    for (pattern, offset, len) in writes {
        qemu_io(&path, format, &format!("write -P {pattern} {offset} {len}"));
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_vm_is_backed_up_at_the_snapshot_instant_then_incrementally() {
    let lab = Lab::new(true).await;
    let image = lab.path("live.qcow2");
    create(&image, "qcow2", "64M");
    let _vm = Qemu::start(lab.dir.path(), &image);
    let new = NewVm {
        name: "live".into(),
        disks: vec![(Some("vda".into()), image.clone())],
        vcpus: 1,
        memory_mib: 128,
        qmp: Some(lab.path("qmp.sock")),
        qga: Some(lab.path("qga.sock")),
        ..Default::default()
    };
    vms::add(lab.catalog(), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    let guest = Arc::new(Mutex::new(QmpClient::connect(&lab.path("guest.sock"), T).unwrap()));
    guest_write(&mut guest.lock().unwrap(), 0x11, "0", "1M");
    guest_write(&mut guest.lock().unwrap(), 0x22, "8M", "1M");

    // Writes during the transfer phase must not enter the point.
    let during = Arc::clone(&guest);
    let hook = DuringTransfer(Mutex::new(Some(Box::new(move || {
        let mut g = during.lock().unwrap();
        guest_write(&mut g, 0x33, "0", "512k");
        guest_write(&mut g, 0x44, "20M", "1M");
    }))));
    let first =
        backup(Arc::clone(&lab.vault), "live", BackupOptions::default(), Arc::new(hook)).await.unwrap();
    assert_eq!(first.disks[0].mode, ReadMode::Full);
    let paused = first.freeze_to_thaw_ms.expect("a live backup reports its freeze-to-thaw time");
    println!("snapshot phase, freeze to thaw: {paused} ms");
    // No guest OS, so no agent answers: no freeze, a crash-consistent point, and a note why.
    assert_eq!(first.consistency, vault::Consistency::Crash);
    assert!(
        first.notes.iter().any(|n| n.contains("guest agent absent") && n.contains("not frozen")),
        "{:?}",
        first.notes
    );
    let at_first = expected(lab.dir.path(), "at-first.qcow2", &[(0x11, "0", "1M"), (0x22, "8M", "1M")]);
    lab.restore("live", &first.point_id, "vda", &lab.path("r1.qcow2"), DiskFormat::Qcow2).await;
    assert!(same(&at_first, &lab.path("r1.qcow2")), "the point is not the disk at the snapshot instant");

    // Incremental: only what was written since the first snapshot is read.
    guest_write(&mut guest.lock().unwrap(), 0x55, "30M", "1M");
    let second =
        backup(Arc::clone(&lab.vault), "live", BackupOptions::default(), Arc::new(engine::NoProgress))
            .await
            .unwrap();
    assert_eq!(second.disks[0].mode, ReadMode::Incremental, "{:?}", second.notes);
    assert!(second.disks[0].bytes_read <= 3 * (4 << 20), "read {} bytes", second.disks[0].bytes_read);
    let at_second = expected(
        lab.dir.path(),
        "at-second.qcow2",
        &[
            (0x11, "0", "1M"),
            (0x22, "8M", "1M"),
            (0x33, "0", "512k"),
            (0x44, "20M", "1M"),
            (0x55, "30M", "1M"),
        ],
    );
    lab.restore("live", &second.point_id, "vda", &lab.path("r2.qcow2"), DiskFormat::Qcow2).await;
    assert!(same(&at_second, &lab.path("r2.qcow2")));

    // The VM ran throughout, and nothing of the snapshot is left in it.
    {
        let mut g = guest.lock().unwrap();
        assert_eq!(g.execute("query-status", json!({}), T).unwrap()["status"], "running");
        assert!(g.execute("query-block-jobs", json!({}), T).unwrap().as_array().unwrap().is_empty());
    }
    // The live disk holds every write, during the backups too.
    quit(&guest, &image);
    assert!(same(&at_second, &image), "the running disk lost a write");
    assert_eq!(points::list(&lab.vault, "live").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_killed_mid_transfer_fails_the_backup_and_the_next_one_reads_in_full_with_a_reason() {
    let lab = Lab::new(false).await;
    let image = lab.path("crash.qcow2");
    create(&image, "qcow2", "64M");
    let vm = Qemu::start(lab.dir.path(), &image);
    let new = NewVm {
        name: "crash".into(),
        disks: vec![(Some("vda".into()), image.clone())],
        qmp: Some(lab.path("qmp.sock")),
        ..Default::default()
    };
    vms::add(lab.catalog(), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    let mut guest = QmpClient::connect(&lab.path("guest.sock"), T).unwrap();
    guest_write(&mut guest, 0x61, "0", "4M");
    backup(Arc::clone(&lab.vault), "crash", BackupOptions::default(), Arc::new(engine::NoProgress))
        .await
        .unwrap();
    guest_write(&mut guest, 0x62, "16M", "4M");

    // QEMU dies as the transfer starts.
    let pid = vm.pid;
    let hook = DuringTransfer(Mutex::new(Some(Box::new(move || unsafe {
        libc::kill(pid, libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(300));
    }))));
    let failed = backup(Arc::clone(&lab.vault), "crash", BackupOptions::default(), Arc::new(hook)).await;
    let message = failed.map(|s| s.point_id).expect_err("the backup must fail").to_string();
    assert!(message.contains("disk vda") && message.contains("did QEMU exit"), "{message}");
    assert_eq!(points::list(&lab.vault, "crash").await.unwrap().len(), 1, "a failed backup left a point");
    drop(vm);

    // QEMU restarted: the bitmap it had in use is inconsistent, so the next backup reads in
    // full (deduplicated) and says why; the point is the disk as it is.
    let deadline = std::time::Instant::now() + T;
    while disk::lock::is_in_use(&image).unwrap() {
        assert!(std::time::Instant::now() < deadline, "the killed QEMU still holds the image");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _vm = Qemu::start(lab.dir.path(), &image);
    let next =
        backup(Arc::clone(&lab.vault), "crash", BackupOptions::default(), Arc::new(engine::NoProgress))
            .await
            .unwrap();
    assert_eq!(next.disks[0].mode, ReadMode::Full);
    let note = next.disks[0].note.clone().unwrap_or_default();
    assert!(note.contains("inconsistent") || note.contains("missing"), "{:?}", next.notes);
    let now = expected(lab.dir.path(), "now.qcow2", &[(0x61, "0", "4M"), (0x62, "16M", "4M")]);
    lab.restore("crash", &next.point_id, "vda", &lab.path("r.qcow2"), DiskFormat::Qcow2).await;
    assert!(same(&now, &lab.path("r.qcow2")));
    assert!(next.bytes_new < next.bytes_read, "the full read was not deduplicated");
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_and_post_scripts_decide_consistency_or_stop_the_backup() {
    let lab = Lab::new(false).await;
    let image = lab.path("app.qcow2");
    create(&image, "qcow2", "64M");
    let _vm = Qemu::start(lab.dir.path(), &image);
    let new = NewVm {
        name: "app".into(),
        disks: vec![(Some("vda".into()), image.clone())],
        qmp: Some(lab.path("qmp.sock")),
        // A guest-agent channel nothing answers on (there is no guest OS).
        qga: Some(lab.path("qga.sock")),
        ..Default::default()
    };
    vms::add(lab.catalog(), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    let log = lab.path("scripts.log");
    let ok_pre = script(lab.dir.path(), "pre.sh", &format!("echo \"pre $1\" >> {}", log.display()));
    let ok_post = script(lab.dir.path(), "post.sh", &format!("echo post >> {}", log.display()));
    let failing =
        script(lab.dir.path(), "fail.sh", "echo starting; echo 'mysql: cannot flush tables' >&2; exit 3");
    let slow = script(lab.dir.path(), "slow.sh", "sleep 5");
    let config = |pre: &Path, cont: bool| engine::scripts::ScriptConfig {
        pre_script_location: Some(pre.to_path_buf()),
        post_script_location: Some(ok_post.clone()),
        pre_script_params: vec!["db".into()],
        timeout_in_seconds: 1,
        continue_backup_on_failure: cont,
        // No guest OS here: the scripts alone quiesce the application.
        fs_freeze_enabled: false,
        ..Default::default()
    };
    let run = |scripts: engine::scripts::ScriptConfig| {
        let vault = Arc::clone(&lab.vault);
        async move {
            vms::set_scripts(engine::catalog::Catalog::of(vault.vault()), "app", Some(scripts))
                .await
                .unwrap();
            let options = BackupOptions { kind: vault::PointKind::Scheduled, ..Default::default() };
            backup(vault, "app", options, Arc::new(engine::NoProgress)).await
        }
    };

    // Both scripts succeed: application-consistent, pre before post, with its parameters.
    let ok = run(config(&ok_pre, false)).await.unwrap();
    assert_eq!(ok.consistency, vault::Consistency::Application, "{:?}", ok.notes);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre db\npost\n");

    // Freezing asked for but no agent answers: skipped and said so; the scripts that
    // succeeded still make the point application-consistent.
    let no_agent = engine::scripts::ScriptConfig { fs_freeze_enabled: true, ..config(&ok_pre, false) };
    let skipped = run(no_agent).await.unwrap();
    assert_eq!(skipped.consistency, vault::Consistency::Application, "{:?}", skipped.notes);
    assert!(skipped.notes.iter().any(|n| n.contains("guest agent absent") && n.contains("not frozen")));
    std::fs::write(&log, "pre db\npost\n").unwrap();

    // A failing pre-script with continue: the point is made, crash-consistent, and says why.
    let cont = run(config(&failing, true)).await.unwrap();
    assert_eq!(cont.consistency, vault::Consistency::Crash);
    assert!(
        cont.notes.iter().any(|n| n.contains("pre-script")
            && n.contains("fail.sh")
            && n.contains("exit status: 3")
            && n.contains("it said: mysql: cannot flush tables")),
        "{:?}",
        cont.notes
    );

    // Without continue: the backup fails clearly and makes no point.
    let before = points::list(&lab.vault, "app").await.unwrap().len();
    let err = run(config(&failing, false)).await.map(|s| s.point_id).unwrap_err().to_string();
    assert!(err.contains("fail.sh") && err.contains("continueBackupOnFailure is false"), "{err}");
    assert_eq!(points::list(&lab.vault, "app").await.unwrap().len(), before);

    // A script over its timeout is killed.
    let slow_run = run(config(&slow, true)).await.unwrap();
    assert!(slow_run.notes.iter().any(|n| n.contains("timed out after 1 s")), "{:?}", slow_run.notes);
    assert_eq!(slow_run.consistency, vault::Consistency::Crash);

    // A script others may change does not run.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ok_pre, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = run(config(&ok_pre, false)).await.map(|s| s.point_id).unwrap_err().to_string();
    assert!(err.contains("must be owned by root and not writable by group or others"), "{err}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().matches("pre db").count(), 1, "the unsafe script ran");
}

/// A VM of a consistency group: its own directory, QEMU and guest-side monitor.
struct Member {
    name: &'static str,
    image: PathBuf,
    guest: Arc<Mutex<QmpClient>>,
    _qemu: Qemu,
}

async fn member(lab: &Lab, name: &'static str, scripts: Option<engine::scripts::ScriptConfig>) -> Member {
    let dir = lab.path(name);
    std::fs::create_dir(&dir).unwrap();
    let image = dir.join("disk.qcow2");
    create(&image, "qcow2", "64M");
    let qemu = Qemu::start(&dir, &image);
    let new = NewVm {
        name: name.into(),
        disks: vec![(Some("vda".into()), image.clone())],
        qmp: Some(dir.join("qmp.sock")),
        ..Default::default()
    };
    vms::add(lab.catalog(), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    vms::set_scripts(lab.catalog(), name, scripts).await.unwrap();
    let guest = Arc::new(Mutex::new(QmpClient::connect(&dir.join("guest.sock"), T).unwrap()));
    Member { name, image, guest, _qemu: qemu }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistency_group_snapshots_its_members_at_one_instant() {
    let lab = Lab::new(false).await;
    let db = member(&lab, "db", None).await;
    let web = member(&lab, "web", None).await;
    groups::create(lab.catalog(), "shop", &["db".into(), "web".into()]).await.unwrap();
    guest_write(&mut db.guest.lock().unwrap(), 0x11, "0", "1M");
    guest_write(&mut web.guest.lock().unwrap(), 0x21, "0", "1M");

    // Each member, as soon as its own transfer starts, writes into the *other* VM. Were the
    // snapshots not taken together, the later one would hold the earlier one's write.
    let cross = |target: &Member, pattern: u8| -> Arc<dyn Progress> {
        let guest = Arc::clone(&target.guest);
        Arc::new(DuringTransfer(Mutex::new(Some(Box::new(move || {
            guest_write(&mut guest.lock().unwrap(), pattern, "4M", "1M");
        })))))
    };
    let (to_web, to_db) = (cross(&web, 0x77), cross(&db, 0x78));
    let outcomes =
        engine::backup::group::backup_group(Arc::clone(&lab.vault), "shop", BackupOptions::default(), |vm| {
            if vm == "db" { Arc::clone(&to_web) } else { Arc::clone(&to_db) }
        })
        .await
        .unwrap();
    let mut instants = Vec::new();
    for outcome in outcomes {
        let (summary, job) = outcome.result.unwrap();
        let group = summary.group.clone().expect("the point records its group");
        assert_eq!(group.name, "shop");
        instants.push(group.instant);
        assert!(summary.freeze_to_thaw_ms.is_some() && job.freeze_to_thaw_ms == summary.freeze_to_thaw_ms);
        let manifest = &points::list(&lab.vault, &outcome.vm).await.unwrap()[0];
        assert_eq!(manifest.group.as_ref(), Some(&group), "the manifest records the group");
        println!("{}: freeze to thaw {} ms", outcome.vm, summary.freeze_to_thaw_ms.unwrap());
    }
    assert_eq!(instants.len(), 2);
    assert_eq!(instants[0], instants[1], "one snapshot instant for the group");

    // Each point is its VM before either transfer began; the live disks hold the cross writes.
    for (m, before, after) in
        [(&db, (0x11, "0", "1M"), (0x78, "4M", "1M")), (&web, (0x21, "0", "1M"), (0x77, "4M", "1M"))]
    {
        let point = &points::list(&lab.vault, m.name).await.unwrap()[0].point_id;
        let restored = lab.path(&format!("{}-restored.qcow2", m.name));
        lab.restore(m.name, point, "vda", &restored, DiskFormat::Qcow2).await;
        let at_instant = expected(lab.dir.path(), &format!("{}-instant.qcow2", m.name), &[before]);
        assert!(same(&at_instant, &restored), "{}: the point is not the disk at the group's instant", m.name);
        quit(&m.guest, &m.image);
        let now = expected(lab.dir.path(), &format!("{}-now.qcow2", m.name), &[before, after]);
        assert!(same(&now, &m.image), "{}: the running disk lost a write", m.name);
    }
}

/// Quit a VM's QEMU and wait until it let go of its image, which then holds every write.
fn quit(guest: &Mutex<QmpClient>, image: &Path) {
    let _ = guest.lock().unwrap().execute("quit", json!({}), T);
    let deadline = std::time::Instant::now() + T;
    while disk::lock::is_in_use(image).unwrap() {
        assert!(std::time::Instant::now() < deadline, "QEMU did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A raw disk cannot hold a persistent bitmap (QEMU refused the whole transaction when one was
/// added): a VM with a qcow2 and a raw disk is backed up live, the raw disk read in full each
/// time (deduplicated) and the qcow2 one incrementally; both restore as they were at the
/// snapshot instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_vm_with_a_qcow2_and_a_raw_disk_is_backed_up_live() {
    let lab = Lab::new(false).await;
    let (image, raw) = (lab.path("os.qcow2"), lab.path("data.raw"));
    create(&image, "qcow2", "64M");
    create(&raw, "raw", "32M");
    let _vm = Qemu::start_with_raw(lab.dir.path(), &image, Some(&raw));
    let new = NewVm {
        name: "mixed".into(),
        disks: vec![(Some("vda".into()), image.clone()), (Some("vdb".into()), raw.clone())],
        qmp: Some(lab.path("qmp.sock")),
        ..Default::default()
    };
    vms::add(lab.catalog(), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    let guest = Arc::new(Mutex::new(QmpClient::connect(&lab.path("guest.sock"), T).unwrap()));
    guest_write(&mut guest.lock().unwrap(), 0x11, "0", "1M");
    guest_write_to(&mut guest.lock().unwrap(), "vdb", 0x21, "4M", "1M");
    let during = Arc::clone(&guest);
    let hook = DuringTransfer(Mutex::new(Some(Box::new(move || {
        guest_write_to(&mut during.lock().unwrap(), "vdb", 0x31, "4M", "512k");
    }))));
    let first =
        backup(Arc::clone(&lab.vault), "mixed", BackupOptions::default(), Arc::new(hook)).await.unwrap();
    let raw_at_first = expected_as(lab.dir.path(), "raw-1.raw", "raw", "32M", &[(0x21, "4M", "1M")]);
    lab.restore("mixed", &first.point_id, "vdb", &lab.path("r-vdb-1.raw"), DiskFormat::Raw).await;
    assert!(same(&raw_at_first, &lab.path("r-vdb-1.raw")), "the raw disk is not as it was at the snapshot");

    guest_write(&mut guest.lock().unwrap(), 0x51, "30M", "1M");
    guest_write_to(&mut guest.lock().unwrap(), "vdb", 0x41, "20M", "1M");
    let second =
        backup(Arc::clone(&lab.vault), "mixed", BackupOptions::default(), Arc::new(engine::NoProgress))
            .await
            .unwrap();
    assert_eq!(second.disks[0].mode, ReadMode::Incremental, "{:?}", second.notes);
    assert_eq!(second.disks[1].mode, ReadMode::Full, "{:?}", second.notes);
    assert!(
        second.notes.iter().any(|n| n.contains("disk vdb") && n.contains("raw disk")),
        "{:?}",
        second.notes
    );
    assert!(second.bytes_new < 4 * (4 << 20), "the raw disk's unchanged blocks were stored again");
    let raw_at_second = expected_as(
        lab.dir.path(),
        "raw-2.raw",
        "raw",
        "32M",
        &[(0x21, "4M", "1M"), (0x31, "4M", "512k"), (0x41, "20M", "1M")],
    );
    let os_at_second = expected(lab.dir.path(), "os-2.qcow2", &[(0x11, "0", "1M"), (0x51, "30M", "1M")]);
    lab.restore("mixed", &second.point_id, "vdb", &lab.path("r-vdb-2.raw"), DiskFormat::Raw).await;
    lab.restore("mixed", &second.point_id, "vda", &lab.path("r-vda-2.qcow2"), DiskFormat::Qcow2).await;
    assert!(same(&raw_at_second, &lab.path("r-vdb-2.raw")));
    assert!(same(&os_at_second, &lab.path("r-vda-2.qcow2")));
    assert_eq!(guest.lock().unwrap().execute("query-status", json!({}), T).unwrap()["status"], "running");
    quit(&guest, &image);
    assert!(same(&raw_at_second, &raw), "the running raw disk lost a write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_that_fails_before_the_snapshot_stops_the_whole_group() {
    let lab = Lab::new(false).await;
    let failing = script(lab.dir.path(), "fail.sh", "exit 4");
    let strict = engine::scripts::ScriptConfig {
        pre_script_location: Some(failing),
        continue_backup_on_failure: false,
        ..Default::default()
    };
    let db = member(&lab, "db", Some(strict)).await;
    let web = member(&lab, "web", None).await;
    groups::create(lab.catalog(), "shop", &["db".into(), "web".into()]).await.unwrap();
    guest_write(&mut web.guest.lock().unwrap(), 0x21, "0", "1M");

    let outcomes =
        engine::backup::group::backup_group(Arc::clone(&lab.vault), "shop", BackupOptions::default(), |_| {
            Arc::new(engine::NoProgress)
        })
        .await
        .unwrap();
    let errors: Vec<String> =
        outcomes.into_iter().map(|o| o.result.map(|_| ()).unwrap_err().to_string()).collect();
    assert!(errors[0].contains("fail.sh"), "{}", errors[0]);
    assert!(
        errors[1].contains("consistency group shop") && errors[1].contains("member db failed"),
        "{}",
        errors[1]
    );
    for m in [&db, &web] {
        assert!(points::list(&lab.vault, m.name).await.unwrap().is_empty(), "{} made a point", m.name);
        // Nothing of a snapshot is left in either QEMU.
        let mut g = m.guest.lock().unwrap();
        assert!(g.execute("query-block-jobs", json!({}), T).unwrap().as_array().unwrap().is_empty());
        let blocks = g.execute("query-block", json!({}), T).unwrap();
        assert!(blocks[0]["inserted"]["dirty-bitmaps"].as_array().is_none_or(|b| b.is_empty()), "{blocks}");
    }
}
