//! The service side of backups: jobs and cancel, GC racing backups, verify, soft delete,
//! retention changes and point limits — on real images and a real vault.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use disk::DiskFormat;
use engine::backup::{BackupOptions, backup};
use engine::catalog::item::{ProtectedItem, ProtectionState};
use engine::catalog::policy::Policy;
use engine::jobs::{Job, JobStatus, Operation};
use engine::retention::Retention;
use engine::services::policies;
use engine::services::protection::{self, StopMode};
use engine::{EngineError, NoProgress, Progress, points, prune};
use jiff::{SignedDuration, Timestamp};
use vault::gc::{Collection, GcOptions};
use vault::verify::{VerifyScope, verify};
use vault::{Consistency, Manifest, PointKind};

/// What a pipeline is doing, as a test hook sees it.
enum Event<'a> {
    Phase(&'a str),
    Advance,
    Finish,
}

/// A progress receiver that calls a test's hook (which may block the pipeline).
struct Hook(Box<dyn Fn(Event<'_>) + Send + Sync>);

impl Progress for Hook {
    fn phase(&self, name: &str) {
        (self.0)(Event::Phase(name))
    }
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {
        (self.0)(Event::Advance)
    }
    fn finish(&self) {
        (self.0)(Event::Finish)
    }
}

/// A hook that stops the backup once its transfer is done (before the commit) and lets it go
/// when told. Returns the hook, "reached" and "go".
fn pause_after_transfer() -> (Arc<dyn Progress>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (reached_tx, reached_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reached_tx = Mutex::new(reached_tx);
    let go_rx = Mutex::new(go_rx);
    let hook = Hook(Box::new(move |event| {
        if let Event::Finish = event {
            reached_tx.lock().unwrap().send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
        }
    }));
    (Arc::new(hook), reached_rx, go_tx)
}

async fn wait_for(rx: mpsc::Receiver<()>) {
    tokio::task::spawn_blocking(move || {
        rx.recv_timeout(Duration::from_secs(120)).expect("pipeline reached the hook")
    })
    .await
    .unwrap();
}

/// Two VMs: "old" holds blocks D1–D4 and E1–E2; "new" holds D1–D4 and F. The point of "old" is
/// pruned, so D and E are garbage until "new" is backed up.
async fn shared_blocks_lab(store: Store) -> (Lab, std::path::PathBuf) {
    let lab = Lab::on(store, true).await;
    let old = lab.path("old.qcow2");
    create(&old, "qcow2", "64M");
    let new = lab.path("new.raw");
    create(&new, "raw", "64M");
    for i in 0..4u64 {
        let cmd = format!("write -P 0x{:x} {}M 4M", 0x31 + i, i * 4);
        qemu_io(&old, "qcow2", &cmd);
        qemu_io(&new, "raw", &cmd);
    }
    qemu_io(&old, "qcow2", "write -P 0x41 32M 4M");
    qemu_io(&old, "qcow2", "write -P 0x42 36M 4M");
    qemu_io(&new, "raw", "write -P 0x51 48M 4M");
    lab.register("old", &[("vda", &old)]).await;
    lab.register("new", &[("vda", &new)]).await;
    let point = lab.backup("old").await;
    let manifest = points::find(&lab.vault, "old", &point.point_id).await.unwrap();
    prune::delete_point(lab.vault.vault(), &manifest).await.unwrap();
    (lab, new)
}

async fn gc_spares_chunks_that_a_backup_started_after_it_reuses(store: Store) {
    let (lab, new) = shared_blocks_lab(store).await;
    let mut gc = Collection::condemn(lab.keyless().await, GcOptions::default()).await.unwrap();
    assert_eq!(gc.condemned().count(), 6, "D1-D4 and E1-E2 are unreferenced");

    // The backup starts after the condemn, finds D1–D4 present and reuses them.
    let (hook, reached, go) = pause_after_transfer();
    let vault = Arc::clone(&lab.vault);
    let task = tokio::spawn(async move { backup(vault, "new", BackupOptions::default(), hook).await });
    wait_for(reached).await;

    // The collection does not wait for it (it saw the list), and deletes while it is paused.
    assert!(gc.poll_sessions().await.unwrap(), "waiting for {:?}", gc.waiting_for());
    let report = gc.sweep().await.unwrap();
    assert_eq!((report.rescued, report.deleted), (4, 2), "{report:?}");
    assert!(report.bytes_freed > 0);

    go.send(()).unwrap();
    let summary = task.await.unwrap().unwrap();
    lab.restore("new", &summary.point_id, "vda", &lab.path("restored.raw"), DiskFormat::Raw).await;
    assert!(same(&new, &lab.path("restored.raw")));
    let check = verify(
        lab.vault.vault(),
        Some(lab.vault.keys()),
        &VerifyScope { read_data: true, ..Default::default() },
    )
    .await
    .unwrap();
    assert!(check.damage.is_empty(), "{:?}", check.damage);
}

async fn gc_waits_for_a_backup_that_started_before_it(store: Store) {
    let (lab, new) = shared_blocks_lab(store).await;
    let (hook, reached, go) = pause_after_transfer();
    let vault = Arc::clone(&lab.vault);
    let options = BackupOptions { job_id: "early-backup".into(), ..Default::default() };
    let task = tokio::spawn(async move { backup(vault, "new", options, hook).await });
    wait_for(reached).await;

    // The backup reused D1–D4 and wrote F before the collection existed, and has not
    // committed: all of them look unreferenced, so it must be waited for.
    let mut gc = Collection::condemn(lab.keyless().await, GcOptions::default()).await.unwrap();
    assert_eq!(gc.condemned().count(), 7);
    assert!(!gc.poll_sessions().await.unwrap());
    assert_eq!(gc.waiting_for(), ["early-backup"]);
    let refused = gc.sweep().await;
    assert!(refused.is_err(), "deleting while an older backup runs must be refused");

    let mut gc = Collection::condemn(lab.keyless().await, GcOptions::default()).await.unwrap();
    go.send(()).unwrap();
    let summary = task.await.unwrap().unwrap();
    gc.wait_for_sessions().await.unwrap();
    let report = gc.sweep().await.unwrap();
    assert_eq!((report.referenced_meanwhile, report.deleted), (5, 2), "{report:?}");
    lab.restore("new", &summary.point_id, "vda", &lab.path("restored.raw"), DiskFormat::Raw).await;
    assert!(same(&new, &lab.path("restored.raw")));
}

async fn started_job(lab: &Lab, vm: &str, hook: Hook) -> Job {
    Job::start(Arc::clone(lab.vault.vault().backend()), Operation::Backup, Some(vm), Arc::new(hook))
        .await
        .unwrap()
}

/// Request a cancel the way `vmvault job cancel` does, then wait until the job has noticed.
fn cancel_from_outside(
    lab_vault: &Arc<vault::UnlockedVault>,
    job_id: &str,
    flag: &std::sync::atomic::AtomicBool,
) {
    let handle = tokio::runtime::Handle::current();
    handle
        .block_on(engine::catalog::job::request_cancel(
            engine::catalog::Catalog::of(lab_vault.vault()),
            job_id,
        ))
        .unwrap();
    for _ in 0..200 {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the job never saw the cancel request");
}

/// What a hook needs to cancel a job: its id and the flag it sets.
type JobHandle = (String, Arc<std::sync::atomic::AtomicBool>);

async fn cancel_in_phase(store: Store, phase: &'static str) {
    let lab = Lab::on(store, false).await;
    let image = lab.path("vm.qcow2");
    create(&image, "qcow2", "256M");
    qemu_io(&image, "qcow2", "write -P 0x61 0 200M");
    lab.register("vm", &[("vda", &image)]).await;

    let job_cell: Arc<Mutex<Option<JobHandle>>> = Arc::default();
    let cell = Arc::clone(&job_cell);
    let vault = Arc::clone(&lab.vault);
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook = Hook(Box::new(move |event| {
        let hit = match event {
            Event::Phase(p) => p == phase,
            Event::Advance => phase == "transfer",
            Event::Finish => false,
        };
        if hit && !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let (id, flag) = cell.lock().unwrap().clone().unwrap();
            cancel_from_outside(&vault, &id, &flag);
        }
    }));
    let job = started_job(&lab, "vm", hook).await;
    *job_cell.lock().unwrap() = Some((job.id(), job.cancel_flag()));
    let options = BackupOptions { cancel: job.cancel_flag(), job_id: job.id(), ..Default::default() };
    let result = backup(Arc::clone(&lab.vault), "vm", options, Arc::new(job.clone())).await;
    let kind = result.as_ref().err().map(EngineError::kind);
    assert_eq!(kind, Some(engine::ErrorKind::Cancelled), "{:?}", result.map(|s| s.point_id));
    let record = job.finish(&result).await.unwrap();
    assert_eq!(record.status, JobStatus::Cancelled);
    assert_eq!(record.phases.last().unwrap().name, phase, "{:?}", record.phases);

    // Nothing committed, nothing left behind, and the next backup works.
    assert!(points::list(&lab.vault, "vm").await.unwrap().is_empty());
    assert_eq!(lab.chunk_count().await, 0, "the cancelled backup left the chunks it stored");
    assert!(!sh("qemu-img", &["info", image.to_str().unwrap()]).contains("vmvault-"), "bitmap left behind");
    let seen = engine::catalog::job::get(lab.catalog(), &job.id()).await.unwrap();
    assert_eq!(seen.status, JobStatus::Cancelled);
    let point = lab.backup("vm").await;
    lab.restore("vm", &point.point_id, "vda", &lab.path("r.qcow2"), DiskFormat::Qcow2).await;
    assert!(same(&image, &lab.path("r.qcow2")));
}

async fn a_cancel_in_the_snapshot_phase_leaves_no_point(store: Store) {
    cancel_in_phase(store, "snapshot").await;
}

async fn a_cancel_in_the_transfer_phase_leaves_no_point(store: Store) {
    cancel_in_phase(store, "transfer").await;
}

async fn a_cancelled_restore_leaves_no_file(store: Store) {
    let lab = Lab::on(store, false).await;
    let image = lab.path("vm.raw");
    create(&image, "raw", "128M");
    for i in 0..32u64 {
        qemu_io(&image, "raw", &format!("write -P {} {}M 4M", i + 1, i * 4));
    }
    lab.register("vm", &[("vda", &image)]).await;
    let point = lab.backup("vm").await;
    let manifest = points::find(&lab.vault, "vm", &point.point_id).await.unwrap();

    let job_cell: Arc<Mutex<Option<JobHandle>>> = Arc::default();
    let cell = Arc::clone(&job_cell);
    let vault = Arc::clone(&lab.vault);
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook = Hook(Box::new(move |event| {
        if matches!(event, Event::Advance) && !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let (id, flag) = cell.lock().unwrap().clone().unwrap();
            cancel_from_outside(&vault, &id, &flag);
        }
    }));
    let job =
        Job::start(Arc::clone(lab.vault.vault().backend()), Operation::Restore, Some("vm"), Arc::new(hook))
            .await
            .unwrap();
    *job_cell.lock().unwrap() = Some((job.id(), job.cancel_flag()));
    let to = lab.path("restored.raw");
    let result = engine::restore::restore_disk(
        Arc::clone(&lab.vault),
        &manifest,
        "vda",
        &to,
        DiskFormat::Raw,
        Arc::new(job.clone()),
    )
    .await;
    assert!(matches!(result, Err(EngineError::Cancelled)), "{:?}", result.map(|r| r.bytes_written));
    assert_eq!(job.finish(&result).await.unwrap().status, JobStatus::Cancelled);
    assert!(!to.exists(), "a cancelled restore left its file");
}

async fn a_second_backup_of_the_same_vm_is_refused_while_the_first_runs(store: Store) {
    let lab = Lab::on(store, false).await;
    let image = lab.path("vm.raw");
    create(&image, "raw", "32M");
    qemu_io(&image, "raw", "write -P 0x11 0 8M");
    lab.register("vm", &[("vda", &image)]).await;
    let (hook, reached, go) = pause_after_transfer();
    let vault = Arc::clone(&lab.vault);
    let options = BackupOptions { job_id: "first-job".into(), ..Default::default() };
    let first = tokio::spawn(async move { backup(vault, "vm", options, hook).await });
    wait_for(reached).await;
    let second = backup(Arc::clone(&lab.vault), "vm", BackupOptions::default(), Arc::new(NoProgress)).await;
    let message = second.as_ref().map(|s| &s.point_id).expect_err("refused").to_string();
    let hint = second.as_ref().err().and_then(EngineError::hint).unwrap_or_default();
    assert!(message.contains("first-job") && hint.contains("job wait"), "{message} / {hint}");
    go.send(()).unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(points::list(&lab.vault, "vm").await.unwrap().len(), 1);
}

async fn verify_names_the_points_a_deleted_and_a_corrupted_chunk_affect(store: Store) {
    let lab = Lab::on(store, true).await;
    let image = lab.path("vm.qcow2");
    create(&image, "qcow2", "64M");
    qemu_io(&image, "qcow2", "write -P 0x71 0 4M");
    qemu_io(&image, "qcow2", "write -P 0x72 8M 4M");
    lab.register("vm", &[("vda", &image)]).await;
    let first = lab.backup("vm").await;
    qemu_io(&image, "qcow2", "write -P 0x73 20M 4M");
    let second = lab.backup("vm").await;
    let clean = verify(lab.vault.vault(), Some(lab.vault.keys()), &VerifyScope::default()).await.unwrap();
    assert!(clean.damage.is_empty() && clean.points == 2 && clean.chunks == 3, "{clean:?}");

    // Chunk at 0 M (both points) deleted; chunk at 20 M (second point only): one byte flipped.
    let id_of = |offset: u64, point: &str| {
        let vault = Arc::clone(&lab.vault);
        let point = point.to_string();
        async move {
            let m = points::find(&vault, "vm", &point).await.unwrap();
            points::disk_index(&vault, &m, "vda").await.unwrap().entries()[(offset >> 22) as usize]
        }
    };
    let gone = id_of(0, &first.point_id).await;
    let flipped = id_of(20 << 20, &second.point_id).await;
    lab.remove_object(&vault::layout::chunk(&gone)).await;
    lab.flip_object(&vault::layout::chunk(&flipped)).await;

    for read_data in [false, true] {
        let scope = VerifyScope { read_data, ..Default::default() };
        let report = verify(lab.vault.vault(), Some(lab.vault.keys()), &scope).await.unwrap();
        assert_eq!(report.damage.len(), 2, "{:?}", report.damage);
        let missing = report.damage.iter().find(|d| d.object == format!("chunk {gone}")).unwrap();
        assert!(missing.problem.contains("missing"));
        let mut affected: Vec<&str> = missing.affects.iter().map(|u| u.point.as_str()).collect();
        affected.sort();
        let mut both = [first.point_id.as_str(), second.point_id.as_str()];
        both.sort();
        assert_eq!(affected, both);
        assert!(missing.affects.iter().all(|u| u.disk == "vda" && u.offsets == [0]));
        let bad = report.damage.iter().find(|d| d.object == format!("chunk {flipped}")).unwrap();
        assert_eq!(bad.affects.len(), 1);
        assert_eq!(
            (bad.affects[0].point.as_str(), bad.affects[0].offsets.as_slice()),
            (second.point_id.as_str(), &[20u64 << 20][..])
        );
    }
    // Scoped to the first point, only the deleted chunk shows.
    let scope = VerifyScope { point: Some(first.point_id.clone()), ..Default::default() };
    let report = verify(lab.vault.vault(), Some(lab.vault.keys()), &scope).await.unwrap();
    assert_eq!(report.damage.len(), 1);
}

async fn make_policy(lab: &Lab, name: &str, daily: &str) {
    let p = Policy::new(
        name,
        "daily 02:00",
        "Europe/Madrid",
        Retention::parse(Some(daily), None, None, None).unwrap(),
    )
    .unwrap();
    policies::create(lab.catalog(), &p).await.unwrap();
}

async fn soft_deleted_data_can_be_undeleted_and_is_purged_after_the_period(store: Store) {
    let lab = Lab::on(store, true).await;
    let image = lab.path("vm.qcow2");
    create(&image, "qcow2", "64M");
    for (i, pattern) in [0x5a, 0x5b, 0x5c].iter().enumerate() {
        qemu_io(&image, "qcow2", &format!("write -P {pattern} {}M 4M", i * 4));
    }
    lab.register("vm", &[("vda", &image)]).await;
    make_policy(&lab, "gold", "30").await;
    protection::protect(lab.catalog(), "vm", "gold", &[], Timestamp::now()).await.unwrap();
    let point = lab.backup("vm").await;

    let now = Timestamp::now();
    let item = protection::unprotect(lab.catalog(), "vm", StopMode::DeleteData, now).await.unwrap();
    assert_eq!(item.state, ProtectionState::SoftDeleted);
    assert_eq!(item.purge_after.unwrap(), now + SignedDuration::from_hours(14 * 24));
    let refused = backup(Arc::clone(&lab.vault), "vm", BackupOptions::default(), Arc::new(NoProgress)).await;
    let refused = refused.err().unwrap();
    assert!(refused.to_string().contains("soft-deleted"), "{refused}");
    assert!(refused.hint().unwrap_or_default().contains("undelete"), "{refused}");
    // Cleanup inside the period deletes nothing.
    let day13 = now + SignedDuration::from_hours(13 * 24);
    let report = prune::prune(lab.vault.as_ref(), Some("vm"), day13, false).await.unwrap();
    assert_eq!(report[0].expired().count(), 0);

    let item = protection::undelete(lab.catalog(), "vm").await.unwrap();
    assert_eq!(item.state, ProtectionState::StoppedRetain);
    lab.restore("vm", &point.point_id, "vda", &lab.path("r.qcow2"), DiskFormat::Qcow2).await;
    assert!(same(&image, &lab.path("r.qcow2")));

    // Delete again; after 14 days cleanup purges, and GC frees the space.
    protection::unprotect(lab.catalog(), "vm", StopMode::DeleteData, now).await.unwrap();
    let chunks_before = lab.chunk_count().await;
    assert!(chunks_before >= 3);
    let day15 = now + SignedDuration::from_hours(15 * 24);
    let report = prune::prune(lab.vault.as_ref(), None, day15, false).await.unwrap();
    assert!(report[0].purged);
    assert!(points::list(&lab.vault, "vm").await.unwrap().is_empty());
    assert!(lab.catalog().find::<ProtectedItem>("vm").await.unwrap().is_none());
    let freed = vault::gc::collect(lab.keyless().await, GcOptions::default()).await.unwrap();
    assert_eq!(freed.deleted as usize, chunks_before);
    assert!(freed.bytes_freed > 0);
    assert_eq!(lab.chunk_count().await, 0);
}

/// Store a point with no disks at `time`: enough for retention and limits.
async fn synthetic_point(lab: &Lab, vm: &str, time: Timestamp, kind: PointKind) {
    let point_id = points::new_point_id(time).unwrap();
    let manifest = Manifest {
        format: vault::manifest::MANIFEST_FORMAT.into(),
        version: vault::manifest::MANIFEST_VERSION,
        point_id: point_id.clone(),
        vm: vm.into(),
        time,
        kind,
        consistency: Consistency::Crash,
        retain_until: None,
        disks: vec![],
        group: None,
    };
    let bytes = manifest.encode(lab.vault.keys()).unwrap();
    lab.vault
        .vault()
        .backend()
        .put_if_absent(&vault::layout::manifest(vm, &point_id), bytes.into())
        .await
        .unwrap();
}

async fn a_shorter_retention_expires_points_only_at_the_next_cleanup(store: Store) {
    let lab = Lab::on(store, false).await;
    let image = lab.path("vm.raw");
    create(&image, "raw", "16M");
    lab.register("vm", &[("vda", &image)]).await;
    make_policy(&lab, "gold", "30").await;
    protection::protect(lab.catalog(), "vm", "gold", &[], Timestamp::now()).await.unwrap();
    let now: Timestamp = "2026-06-15T12:00:00Z".parse().unwrap();
    for day in 0..11 {
        synthetic_point(&lab, "vm", now - SignedDuration::from_hours(24 * day), PointKind::Scheduled).await;
    }
    assert_eq!(prune::prune(lab.vault.as_ref(), None, now, false).await.unwrap()[0].expired().count(), 0);

    // Longer retention would keep them anyway; shorter: nothing happens until the cleanup.
    policies::update(lab.catalog(), "gold", |p| {
        p.retention = Retention::parse(Some("3"), None, None, None)?;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(points::list(&lab.vault, "vm").await.unwrap().len(), 11);
    let dry = prune::prune(lab.vault.as_ref(), None, now, true).await.unwrap();
    assert_eq!(dry[0].expired().count(), 8);
    assert_eq!(points::list(&lab.vault, "vm").await.unwrap().len(), 11, "a dry run deletes nothing");
    // A server prunes without the key, from the manifests' structure: the same verdicts.
    let keyless = lab.keyless().await;
    let done = prune::prune(&keyless, None, now, false).await.unwrap();
    assert_eq!(done[0].expired().count(), 8);
    let left = points::list(&lab.vault, "vm").await.unwrap();
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|m| now.duration_since(m.time) < SignedDuration::from_hours(3 * 24)));
}

/// Someone who can write to the vault's storage but has no key (a stolen bucket credential)
/// forges a newer point, hoping the server's keyless prune lets it push genuine points out of
/// retention. The point signature gives it away: the prune leaves the forgery alone, names
/// it, and applies retention to the genuine points alone — exactly as without the forgery.
async fn a_keyless_prune_leaves_alone_and_names_a_point_the_vault_key_did_not_sign(store: Store) {
    let lab = Lab::on(store, true).await;
    let image = lab.path("vm.raw");
    create(&image, "raw", "16M");
    lab.register("vm", &[("vda", &image)]).await;
    let backend = Arc::clone(lab.vault.vault().backend());
    make_policy(&lab, "gold", "3").await;
    protection::protect(lab.catalog(), "vm", "gold", &[], Timestamp::now()).await.unwrap();
    let now: Timestamp = "2026-06-15T12:00:00Z".parse().unwrap();
    for day in 0..5 {
        synthetic_point(&lab, "vm", now - SignedDuration::from_hours(24 * day), PointKind::Scheduled).await;
    }
    let genuine = points::list(&lab.vault, "vm").await.unwrap();
    let newest = genuine.last().unwrap();
    let bytes = backend.get(&vault::layout::manifest("vm", &newest.point_id)).await.unwrap();
    let forged_id = points::new_point_id(now + SignedDuration::from_hours(1)).unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    value["point_id"] = forged_id.clone().into();
    value["time"] = (now + SignedDuration::from_hours(1)).to_string().into();
    let forged_key = vault::layout::manifest("vm", &forged_id);
    backend.put_if_absent(&forged_key, serde_json::to_vec(&value).unwrap().into()).await.unwrap();

    let keyless = lab.keyless().await;
    let dry = prune::prune(&keyless, None, now, true).await.unwrap();
    assert_eq!(dry[0].damaged.len(), 1, "{:?}", dry[0].damaged);
    assert_eq!(dry[0].damaged[0].point, forged_id);
    assert!(dry[0].damaged[0].problem.contains("signature"), "{:?}", dry[0].damaged);
    assert!(dry[0].points.iter().all(|p| p.point != forged_id), "retention decided about the forgery");
    assert_eq!(dry[0].expired().count(), 2, "the forgery pushed genuine points out of retention");

    // Signed by another vault's key: left alone the same way.
    let other = Lab::on(Store::Local, true).await;
    let mut stranger = genuine[0].clone();
    stranger.point_id = forged_id.clone();
    backend.delete(&forged_key).await.unwrap();
    backend.put_if_absent(&forged_key, stranger.encode(other.vault.keys()).unwrap().into()).await.unwrap();
    let done = prune::prune(&keyless, None, now, false).await.unwrap();
    assert_eq!(
        done[0].damaged.iter().map(|d| d.point.as_str()).collect::<Vec<_>>(),
        vec![forged_id.as_str()]
    );
    assert_eq!(done[0].expired().count(), 2);
    // The 3 newest genuine points are kept, and the forgery is still there for an admin.
    let survey = points::survey(&lab.vault, "vm").await.unwrap();
    assert_eq!(survey.intact.len(), 3, "{:?}", survey.intact);
    assert_eq!(survey.damaged.len(), 1);
    assert!(backend.head(&forged_key).await.unwrap().is_some());
}

// Local only: writing 9999 points is storage-independent bookkeeping, and takes minutes on moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fifth_on_demand_backup_of_a_day_and_the_ten_thousandth_point_are_refused() {
    let lab = Lab::new(false).await;
    let image = lab.path("vm.raw");
    create(&image, "raw", "16M");
    qemu_io(&image, "raw", "write -P 0x11 0 4M");
    lab.register("vm", &[("vda", &image)]).await;
    for _ in 0..4 {
        lab.backup("vm").await;
    }
    let fifth = backup(Arc::clone(&lab.vault), "vm", BackupOptions::default(), Arc::new(NoProgress)).await;
    let message = fifth.err().unwrap().to_string();
    assert!(message.contains("at most 4 a day"), "{message}");

    // A delete lock keeps everything: at 9999 points the next backup is refused.
    make_policy(&lab, "gold", "1").await;
    protection::protect(lab.catalog(), "vm", "gold", &[], Timestamp::now()).await.unwrap();
    protection::set_delete_lock(lab.catalog(), "vm", true).await.unwrap();
    let start: Timestamp = "2000-01-01T00:00:00Z".parse().unwrap();
    for n in 0..(9999 - 4) {
        synthetic_point(&lab, "vm", start + SignedDuration::from_hours(n), PointKind::Scheduled).await;
    }
    let report = prune::prune(lab.vault.as_ref(), Some("vm"), Timestamp::now(), false).await.unwrap();
    assert_eq!(report[0].expired().count(), 0, "the delete lock keeps every point");
    let options = BackupOptions { kind: PointKind::Scheduled, ..Default::default() };
    let refused = backup(Arc::clone(&lab.vault), "vm", options.clone(), Arc::new(NoProgress)).await;
    let message = refused.err().unwrap().to_string();
    assert!(message.contains("9999") && message.contains("unlock"), "{message}");

    // Unlocked, cleanup expires the old points and backups work again.
    protection::set_delete_lock(lab.catalog(), "vm", false).await.unwrap();
    prune::prune(lab.vault.as_ref(), Some("vm"), Timestamp::now(), false).await.unwrap();
    backup(Arc::clone(&lab.vault), "vm", options, Arc::new(NoProgress)).await.unwrap();
}

async fn cleanup_forgets_job_records_after_ninety_days(store: Store) {
    let lab = Lab::on(store, false).await;
    let backend = Arc::clone(lab.vault.vault().backend());
    let job = Job::start(Arc::clone(&backend), Operation::Verify, None, Arc::new(NoProgress)).await.unwrap();
    job.finish(&Ok::<(), EngineError>(())).await.unwrap();
    let now = Timestamp::now();
    prune::prune(lab.vault.as_ref(), None, now + SignedDuration::from_hours(24 * 89), false).await.unwrap();
    assert_eq!(engine::catalog::job::list(lab.catalog(), None, None).await.unwrap().len(), 1);
    prune::prune(lab.vault.as_ref(), None, now + SignedDuration::from_hours(24 * 91), false).await.unwrap();
    assert!(engine::catalog::job::list(lab.catalog(), None, None).await.unwrap().is_empty());
}

async fn gc_deletes_nothing_when_a_point_cannot_be_read(store: Store) {
    let (lab, _) = shared_blocks_lab(store).await;
    let new_point = lab.backup("new").await;
    let manifest = points::find(&lab.vault, "new", &new_point.point_id).await.unwrap();
    lab.remove_object(&manifest.disks[0].index).await;
    let before = lab.chunk_count().await;
    let err = vault::gc::collect(lab.keyless().await, GcOptions::default()).await.unwrap_err().to_string();
    assert!(err.contains("cannot tell which chunks") && err.contains(&new_point.point_id), "{err}");
    assert_eq!(lab.chunk_count().await, before, "GC deleted chunks without knowing what is referenced");
    // And no collection is left claiming the vault.
    assert!(lab.vault.vault().backend().head("gc/state.json").await.unwrap().is_none());
}

on_both_stores!(
    a_cancelled_restore_leaves_no_file,
    a_second_backup_of_the_same_vm_is_refused_while_the_first_runs,
    verify_names_the_points_a_deleted_and_a_corrupted_chunk_affect,
    soft_deleted_data_can_be_undeleted_and_is_purged_after_the_period,
    a_shorter_retention_expires_points_only_at_the_next_cleanup,
    a_keyless_prune_leaves_alone_and_names_a_point_the_vault_key_did_not_sign,
    cleanup_forgets_job_records_after_ninety_days,
    gc_spares_chunks_that_a_backup_started_after_it_reuses,
    gc_waits_for_a_backup_that_started_before_it,
    gc_deletes_nothing_when_a_point_cannot_be_read,
    a_cancel_in_the_snapshot_phase_leaves_no_point,
    a_cancel_in_the_transfer_phase_leaves_no_point,
);
