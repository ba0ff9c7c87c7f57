//! One damaged point never stands in the way: with a byte flipped in the newest index, the
//! newest manifest, an older manifest or the change-tracking document, the next backup still
//! succeeds (its notes say what it stepped around), every intact point — and the new one —
//! restores bit-exact, verify names what is damaged with its VM and point, the point is
//! DAMAGED in the survey, and `points delete --damaged` removes exactly it. A chunk verify
//! found damaged is written again by the next backup that reads its data. On a directory and
//! on S3.

mod common;

use common::*;
use disk::DiskFormat;
use engine::ErrorKind;
use engine::backup::ReadMode;
use engine::points::{DamageCause, survey};
use vault::layout;
use vault::verify::{VerifyReport, VerifyScope};

/// A whole garbage collection, as a server without the key runs it.
async fn collect(lab: &Lab) {
    vault::gc::collect(lab.keyless().await, vault::gc::GcOptions::default()).await.unwrap();
}

async fn verify_vm(lab: &Lab) -> VerifyReport {
    let scope = VerifyScope { vm: Some("vm".into()), read_data: true, ..Default::default() };
    engine::verify::run(&lab.vault, &scope, None).await.unwrap()
}

/// Verify names `object` (a part of its key) with VM and point `damaged`; the survey shows
/// exactly that point DAMAGED; an intact point cannot be deleted as damaged, the damaged one
/// can, and then nothing is damaged and the intact points still restore bit-exact.
async fn verify_names_it_and_delete_removes_exactly_it(
    lab: &Lab,
    object: &str,
    damaged: &str,
    intact: &[(String, std::path::PathBuf)],
) {
    let report = verify_vm(lab).await;
    let found = report.damage.iter().find(|d| d.object.contains(object));
    let found = found.unwrap_or_else(|| panic!("verify does not name {object}: {:?}", report.damage));
    assert!(found.affects.iter().any(|u| u.vm == "vm" && u.point == damaged), "{found:?}");
    assert_eq!(report.affected_points(), vec![format!("vm/{damaged}")]);
    let listed: Vec<String> =
        survey(&lab.vault, "vm").await.unwrap().damaged.into_iter().map(|d| d.point).collect();
    assert_eq!(listed, vec![damaged.to_string()]);
    // GC runs with the damaged point there, keeps its chunks, and loses nothing else.
    collect(lab).await;
    assert_eq!(verify_vm(lab).await.affected_points(), vec![format!("vm/{damaged}")]);
    let refused = engine::points::delete_damaged(&lab.vault, "vm", &intact[0].0).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
    engine::points::delete_damaged(&lab.vault, "vm", damaged).await.unwrap();
    collect(lab).await;
    let after = survey(&lab.vault, "vm").await.unwrap();
    assert!(after.damaged.is_empty(), "{:?}", after.damaged);
    assert!(after.intact.iter().all(|m| m.point_id != damaged));
    for (point, _) in intact {
        assert!(after.intact.iter().any(|m| &m.point_id == point), "intact point {point} is gone");
    }
    let (point, expected) = &intact[0];
    let restored = lab.path("after-delete.qcow2");
    lab.restore("vm", point, "vda", &restored, DiskFormat::Qcow2).await;
    assert!(same(&restored, expected), "point {point} does not restore bit-exact after the delete");
    assert!(verify_vm(lab).await.damage.is_empty());
}

/// A VM with three points, each after a write, and a copy of the disk as each point saw it.
async fn three_points(lab: &Lab) -> (std::path::PathBuf, Vec<(String, std::path::PathBuf)>) {
    let image = lab.path("vm.qcow2");
    create(&image, "qcow2", "48M");
    lab.register("vm", &[("vda", &image)]).await;
    let mut points = Vec::new();
    for (i, offset) in ["0", "12M", "30M"].iter().enumerate() {
        qemu_io(&image, "qcow2", &format!("write -P {} {offset} 5M", 0x41 + i));
        let summary = lab.backup("vm").await;
        points.push((summary.point_id, capture(&image, &lab.path(&format!("p{i}.qcow2")))));
    }
    qemu_io(&image, "qcow2", "write -P 0x77 40M 2M");
    (image, points)
}

/// Back up once more, then check every point named intact, and the new one, restore bit-exact.
async fn next_backup_succeeds(
    lab: &Lab,
    image: &std::path::Path,
    intact: &[(String, std::path::PathBuf)],
    note: &str,
) -> engine::backup::BackupSummary {
    let summary = lab.backup("vm").await;
    assert!(
        summary.notes.iter().any(|n| n.contains(note)),
        "notes {:?} do not mention {note:?}",
        summary.notes
    );
    let now = capture(image, &lab.path("now.qcow2"));
    let mut check = intact.to_vec();
    check.push((summary.point_id.clone(), now));
    for (point, expected) in &check {
        let restored = lab.path(&format!("restored-{point}.qcow2"));
        lab.restore("vm", point, "vda", &restored, DiskFormat::Qcow2).await;
        assert!(same(&restored, expected), "point {point} does not restore bit-exact");
    }
    summary
}

async fn a_damaged_newest_index_is_stepped_around(store: Store) {
    let lab = Lab::on(store, true).await;
    let (image, points) = three_points(&lab).await;
    lab.flip_object(&layout::index("vm", &points[2].0, "vda")).await;
    let summary = next_backup_succeeds(
        &lab,
        &image,
        &points[..2],
        &format!("index in point {} is damaged or missing", points[2].0),
    )
    .await;
    assert_eq!(
        summary.disks[0].mode,
        ReadMode::Full,
        "an incremental built on a damaged index: {:?}",
        summary.notes
    );
    let mut intact = points[..2].to_vec();
    intact.push((summary.point_id.clone(), image.clone()));
    verify_names_it_and_delete_removes_exactly_it(&lab, "vda.fidx", &points[2].0, &intact).await;
}

async fn a_damaged_newest_manifest_is_stepped_around(store: Store) {
    let lab = Lab::on(store, true).await;
    let (image, points) = three_points(&lab).await;
    lab.flip_object(&layout::manifest("vm", &points[2].0)).await;
    let summary =
        next_backup_succeeds(&lab, &image, &points[..2], &format!("point {} is damaged", points[2].0)).await;
    assert_eq!(summary.disks[0].mode, ReadMode::Full, "{:?}", summary.notes);
    // `latest` is the newest point that can be read.
    assert_eq!(engine::points::find(&lab.vault, "vm", "latest").await.unwrap().point_id, summary.point_id);
    verify_names_it_and_delete_removes_exactly_it(&lab, "manifest.json", &points[2].0, &points[..2]).await;
}

async fn a_damaged_older_manifest_leaves_incrementals_alone(store: Store) {
    let lab = Lab::on(store, true).await;
    let (image, points) = three_points(&lab).await;
    lab.flip_object(&layout::manifest("vm", &points[0].0)).await;
    let summary =
        next_backup_succeeds(&lab, &image, &points[1..], &format!("point {} is damaged", points[0].0)).await;
    assert_eq!(summary.disks[0].mode, ReadMode::Incremental, "{:?}", summary.notes);
    verify_names_it_and_delete_removes_exactly_it(&lab, "manifest.json", &points[0].0, &points[1..]).await;
}

async fn damaged_change_tracking_means_a_full_read(store: Store) {
    let lab = Lab::on(store, true).await;
    // Five on-demand backups today: one more than the default allows.
    engine::catalog::settings::update(lab.catalog(), |s| s.on_demand_per_day = 8).await.unwrap();
    let (image, points) = three_points(&lab).await;
    // A flipped byte may still parse (a point id one digit off): either way, no incremental.
    lab.flip_object(&layout::checkpoints("vm")).await;
    let summary = next_backup_succeeds(&lab, &image, &points, "full").await;
    assert_eq!(summary.disks[0].mode, ReadMode::Full, "{:?}", summary.notes);
    // A document that no longer parses at all.
    let key = layout::checkpoints("vm");
    let backend = lab.vault.vault().backend();
    let (_, version) = backend.get_versioned(&key).await.unwrap().unwrap();
    backend.compare_and_swap(&key, Some(&version), b"{ not json".to_vec().into()).await.unwrap();
    // Verify names the document and its VM; no point is damaged, so none can be deleted.
    let report = verify_vm(&lab).await;
    let found = report.damage.iter().find(|d| d.object == key.as_str());
    assert!(found.is_some_and(|d| d.affects.iter().any(|u| u.vm == "vm")), "{:?}", report.damage);
    assert!(survey(&lab.vault, "vm").await.unwrap().damaged.is_empty());
    let refused = engine::points::delete_damaged(&lab.vault, "vm", &points[0].0).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Refused, "{refused}");
    qemu_io(&image, "qcow2", "write -P 0x78 1M 1M");
    let summary = lab.backup("vm").await;
    assert!(summary.notes.iter().any(|n| n.contains("change tracking is unreadable")), "{:?}", summary.notes);
    assert_eq!(summary.disks[0].mode, ReadMode::Full, "{:?}", summary.notes);
    let restored = lab.path("after.qcow2");
    lab.restore("vm", &summary.point_id, "vda", &restored, DiskFormat::Qcow2).await;
    assert!(same(&restored, &image));
    // That backup replaced the document: the next one is incremental again.
    qemu_io(&image, "qcow2", "write -P 0x79 2M 1M");
    let summary = lab.backup("vm").await;
    assert_eq!(summary.disks[0].mode, ReadMode::Incremental, "{:?}", summary.notes);
    assert!(verify_vm(&lab).await.damage.is_empty());
}

/// A chunk of the newest point flipped: verify --read-data records the point damaged, the next
/// backup does not build on it, reads in full and writes the chunk again from the disk's data;
/// the damaged point is then whole again (verify clean, bit-exact restore).
async fn a_damaged_chunk_is_written_again_by_the_next_backup(store: Store) {
    let lab = Lab::on(store, true).await;
    let (image, points) = three_points(&lab).await;
    // Block 7 (28–32 MiB) first holds data in the third point (written at 30M).
    let newest = engine::points::find(&lab.vault, "vm", &points[2].0).await.unwrap();
    let index = engine::points::disk_index(&lab.vault, &newest, "vda").await.unwrap();
    let chunk = index.entries()[7];
    lab.flip_object(&layout::chunk(&chunk)).await;
    let report = verify_vm(&lab).await;
    assert_eq!(report.affected_points(), vec![format!("vm/{}", points[2].0)], "{:?}", report.damage);
    let damaged = survey(&lab.vault, "vm").await.unwrap().damaged;
    assert_eq!(damaged.len(), 1);
    assert!(
        matches!(&damaged[0].cause, DamageCause::FoundByVerify(v) if v.damage[0].object.contains(&chunk.to_hex()))
    );
    assert_ne!(engine::points::find(&lab.vault, "vm", "latest").await.unwrap().point_id, points[2].0);
    let summary = next_backup_succeeds(&lab, &image, &points[..2], "written again").await;
    assert_eq!(summary.disks[0].mode, ReadMode::Full, "{:?}", summary.notes);
    assert!(summary.notes.iter().any(|n| n.contains(&format!("point {} is damaged", points[2].0))));
    // Healed: verify finds nothing, and the point that was damaged restores bit-exact.
    assert!(verify_vm(&lab).await.damage.is_empty());
    assert!(survey(&lab.vault, "vm").await.unwrap().damaged.is_empty());
    let restored = lab.path("healed.qcow2");
    lab.restore("vm", &points[2].0, "vda", &restored, DiskFormat::Qcow2).await;
    assert!(same(&restored, &points[2].1), "the repaired point does not restore bit-exact");
}

on_both_stores!(
    a_damaged_newest_index_is_stepped_around,
    a_damaged_newest_manifest_is_stepped_around,
    a_damaged_older_manifest_leaves_incrementals_alone,
    damaged_change_tracking_means_a_full_read,
    a_damaged_chunk_is_written_again_by_the_next_backup,
);
