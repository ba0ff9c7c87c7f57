//! One damaged point never stands in the way: with a byte flipped in the newest index, the
//! newest manifest, an older manifest or the change-tracking document, the next backup still
//! succeeds (its notes say what it stepped around), and every intact point — and the new one —
//! restores bit-exact. On a directory and on S3.

mod common;

use common::*;
use disk::DiskFormat;
use engine::backup::ReadMode;
use vault::layout;

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
}

async fn a_damaged_older_manifest_leaves_incrementals_alone(store: Store) {
    let lab = Lab::on(store, true).await;
    let (image, points) = three_points(&lab).await;
    lab.flip_object(&layout::manifest("vm", &points[0].0)).await;
    let summary =
        next_backup_succeeds(&lab, &image, &points[1..], &format!("point {} is damaged", points[0].0)).await;
    assert_eq!(summary.disks[0].mode, ReadMode::Incremental, "{:?}", summary.notes);
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
    qemu_io(&image, "qcow2", "write -P 0x78 1M 1M");
    let summary = lab.backup("vm").await;
    assert!(summary.notes.iter().any(|n| n.contains("change tracking is unreadable")), "{:?}", summary.notes);
    assert_eq!(summary.disks[0].mode, ReadMode::Full, "{:?}", summary.notes);
    let restored = lab.path("after.qcow2");
    lab.restore("vm", &summary.point_id, "vda", &restored, DiskFormat::Qcow2).await;
    assert!(same(&restored, &image));
}

on_both_stores!(
    a_damaged_newest_index_is_stepped_around,
    a_damaged_newest_manifest_is_stepped_around,
    a_damaged_older_manifest_leaves_incrementals_alone,
    damaged_change_tracking_means_a_full_read,
);
