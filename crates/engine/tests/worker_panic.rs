//! A transfer worker that panics mid-backup (a test-only fault hook: no real part panics on
//! cue) leaves no point, releases the backup's session and image lock, and removes the bitmap
//! the backup added. Its own test binary, because the fault hook is process-wide.

mod common;

use std::sync::Arc;

use common::{Lab, capture, create, qemu_io, same};
use engine::NoProgress;
use engine::backup::BackupOptions;

fn bitmaps(image: &std::path::Path) -> Vec<String> {
    disk::qemu::bitmaps(image).unwrap().into_iter().map(|b| b.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_panics_mid_transfer_leaves_no_point_and_releases_everything() {
    let lab = Lab::new(true).await;
    let image = lab.path("vda.qcow2");
    create(&image, "qcow2", "64M");
    for (i, offset) in ["0", "8M", "20M", "40M", "60M"].iter().enumerate() {
        qemu_io(&image, "qcow2", &format!("write -P {} {offset} 2M", 0x31 + i));
    }
    lab.register("vm", &[("vda", &image)]).await;
    let first = lab.backup("vm").await;
    assert_eq!(bitmaps(&image), [format!("vmvault-{}", first.point_id)]);
    qemu_io(&image, "qcow2", "write -P 0x77 8M 1M");
    qemu_io(&image, "qcow2", "write -P 0x78 40M 1M");
    let before = capture(&image, &lab.path("before.qcow2"));

    engine::transfer::fault::panic_worker_after(1);
    let failed =
        engine::backup::backup(Arc::clone(&lab.vault), "vm", BackupOptions::default(), Arc::new(NoProgress))
            .await;
    let message = failed.expect_err("a backup whose worker panicked must fail").to_string();
    assert!(message.contains("panic"), "{message}");

    let points = engine::points::list(&lab.vault, "vm").await.unwrap();
    assert_eq!(points.iter().map(|p| p.point_id.as_str()).collect::<Vec<_>>(), [first.point_id.as_str()]);
    let backend = lab.vault.vault().backend();
    let session =
        vault::session::get(backend.as_ref(), &vault::layout::backup_session_name("vm")).await.unwrap();
    assert!(session.is_none(), "the backup's session is still there: {session:?}");
    assert!(!disk::lock::is_in_use(&image).unwrap(), "the image is still locked");
    assert_eq!(bitmaps(&image), [format!("vmvault-{}", first.point_id)], "the new bitmap was not removed");

    // Nothing was left half-done: the next backup is an incremental that restores bit-exact.
    let next = lab.backup("vm").await;
    assert_eq!(next.disks[0].mode, engine::backup::ReadMode::Incremental, "{:?}", next.notes);
    let restored = lab.path("restored.qcow2");
    lab.restore("vm", &next.point_id, "vda", &restored, disk::DiskFormat::Qcow2).await;
    assert!(same(&restored, &before));
}
