//! Backups of stopped VMs and their restores, proven with `qemu-img compare`.

mod common;

use common::*;
use disk::DiskFormat;
use engine::backup::ReadMode;

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 4 * MIB;

async fn full_then_incremental_backups_restore_bit_exact(store: Store) {
    let lab = Lab::on(store, true).await;
    let os = lab.path("os.qcow2");
    create(&os, "qcow2", "512M");
    qemu_io(&os, "qcow2", "write -P 0x11 0 64M");
    qemu_io(&os, "qcow2", "write -P 0x12 300M 20M");
    let data = lab.path("data.raw");
    create(&data, "raw", "128M");
    qemu_io(&data, "raw", "write -P 0x21 8M 8M");
    lab.register("web", &[("vda", &os), ("data", &data)]).await;

    let first = lab.backup("web").await;
    assert_eq!(first.disks[0].mode, ReadMode::Full);
    let os_at_first = capture(&os, &lab.path("os-first.qcow2"));
    let data_at_first = capture(&data, &lab.path("data-first.raw"));

    // Scattered writes: 64 KiB here and there, one 1 MiB run, one overwrite with zeros.
    let writes: [(u64, u64); 5] = [
        (5 * MIB, 64 << 10),
        (100 * MIB, 64 << 10),
        (301 * MIB, MIB),
        (450 * MIB, 4096),
        (2 * MIB, 64 << 10),
    ];
    for (i, (off, len)) in writes.iter().enumerate() {
        qemu_io(&os, "qcow2", &format!("write -P 0x{:x} {off} {len}", 0x40 + i));
    }
    qemu_io(&os, "qcow2", "write -z 40M 4M");
    qemu_io(&data, "raw", "write -P 0x22 9M 4k");
    let second = lab.backup("web").await;
    let os_at_second = capture(&os, &lab.path("os-second.qcow2"));
    assert_eq!(second.disks[0].mode, ReadMode::Incremental, "{:?}", second.notes);
    assert!(second.notes.is_empty(), "{:?}", second.notes);

    let chunks_touched: std::collections::BTreeSet<u64> = writes
        .iter()
        .chain([(40 * MIB, 4 * MIB)].iter())
        .flat_map(|(off, len)| (off / CHUNK)..=((off + len - 1) / CHUNK))
        .collect();
    let written_rounded = chunks_touched.len() as u64 * CHUNK;
    assert!(
        second.disks[0].bytes_read <= 2 * written_rounded,
        "incremental read {} bytes for {} bytes of 4 MiB blocks written",
        second.disks[0].bytes_read,
        written_rounded
    );
    let written: u64 = writes.iter().map(|(_, len)| len).sum::<u64>() + 4 * MIB;
    assert!(
        second.disks[0].bytes_read >= written,
        "every written byte is read: {}",
        second.disks[0].bytes_read
    );

    for (point, os_copy) in [(&first.point_id, &os_at_first), (&second.point_id, &os_at_second)] {
        for format in [DiskFormat::Qcow2, DiskFormat::Raw] {
            let out = lab.path(&format!("restore-{point}.{}", format.as_str()));
            lab.restore("web", point, "vda", &out, format).await;
            assert!(
                same(os_copy, &out),
                "point {point} vda as {format:?} differs from the image at backup time"
            );
        }
    }
    let out = lab.path("data-restored.raw");
    lab.restore("web", &first.point_id, "data", &out, DiskFormat::Raw).await;
    assert!(same(&data_at_first, &out));
}

async fn fallback_case(name: &str, damage: impl Fn(&Lab, &std::path::Path, &str), expect_note: &str) {
    let lab = Lab::new(false).await;
    let os = lab.path("os.qcow2");
    create(&os, "qcow2", "256M");
    qemu_io(&os, "qcow2", "write -P 0x31 0 32M");
    lab.register("vm", &[("vda", &os)]).await;
    let first = lab.backup("vm").await;
    qemu_io(&os, "qcow2", "write -P 0x32 100M 1M");
    damage(&lab, &os, &format!("vmvault-{}", first.point_id));
    let second = lab.backup("vm").await;
    let expected = capture(&os, &lab.path("expected.qcow2"));
    assert_eq!(second.disks[0].mode, ReadMode::Full, "{name}: must fall back to a full read");
    let note = second.disks[0].note.clone().unwrap_or_default();
    assert!(note.contains(expect_note), "{name}: note {note:?} should say {expect_note:?}");
    assert!(second.notes.iter().any(|n| n.contains(expect_note)), "{name}: {:?}", second.notes);
    assert!(second.disks[0].bytes_read >= 32 * MIB, "{name}: a full read reads every allocated block");
    assert!(
        second.disks[0].bytes_new < 64 << 10,
        "{name}: only changed blocks are stored: {}",
        second.disks[0].bytes_new
    );
    let out = lab.path("restored.qcow2");
    lab.restore("vm", &second.point_id, "vda", &out, DiskFormat::Qcow2).await;
    assert!(same(&expected, &out), "{name}: restore differs");
    // And change tracking is back: the next backup is incremental again.
    qemu_io(&os, "qcow2", "write -P 0x33 200M 4k");
    let third = lab.backup("vm").await;
    assert_eq!(third.disks[0].mode, ReadMode::Incremental, "{name}: {:?}", third.notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_bitmap_falls_back_to_a_full_read_with_a_note() {
    fallback_case(
        "bitmap deleted",
        |_, os, bitmap| sh("qemu-img", &["bitmap", "--remove", os.to_str().unwrap(), bitmap]).truncate(0),
        "missing",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_bitmap_falls_back_to_a_full_read_with_a_note() {
    // A disabled bitmap misses writes made after it was disabled: inconsistent.
    fallback_case(
        "bitmap disabled",
        |_, os, bitmap| {
            sh("qemu-img", &["bitmap", "--disable", os.to_str().unwrap(), bitmap]);
            qemu_io(os, "qcow2", "write -P 0x34 150M 64k");
        },
        "inconsistent",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitmap_left_in_use_by_a_crashed_writer_falls_back_to_a_full_read() {
    fallback_case(
        "bitmap in use",
        |_, os, _| {
            // qemu-io kills itself mid-session: the bitmap keeps its in-use flag.
            let status = std::process::Command::new("qemu-io")
                .args([
                    "-f",
                    "qcow2",
                    "-c",
                    "write -P 0x35 120M 64k",
                    "-c",
                    "sigraise 9",
                    os.to_str().unwrap(),
                ])
                .status()
                .unwrap();
            assert!(!status.success());
        },
        "inconsistent",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_image_falls_back_to_a_full_read_with_a_note() {
    fallback_case(
        "image replaced",
        |lab, os, _| {
            // A copy keeps the bitmaps (cp copies bytes) but is another file.
            let copy = lab.path("copy.qcow2");
            sh("cp", &[os.to_str().unwrap(), copy.to_str().unwrap()]);
            std::fs::rename(&copy, os).unwrap();
            qemu_io(os, "qcow2", "write -P 0x36 180M 64k");
        },
        "replaced",
    )
    .await;
}

async fn a_cloned_vm_adds_almost_nothing_to_the_vault(store: Store) {
    let lab = Lab::on(store, true).await;
    let os = lab.path("os.qcow2");
    create(&os, "qcow2", "256M");
    let random = lab.path("random.bin");
    sh("dd", &["if=/dev/urandom", &format!("of={}", random.display()), "bs=1M", "count=48", "status=none"]);
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", &format!("write -s {} 16M 48M", random.display()), os.to_str().unwrap()],
    );
    lab.register("original", &[("vda", &os)]).await;
    let first = lab.backup("original").await;
    assert!(first.bytes_new >= 48 * MIB, "random data is stored: {}", first.bytes_new);

    let clone = lab.path("clone.qcow2");
    sh("qemu-img", &["convert", "-O", "qcow2", os.to_str().unwrap(), clone.to_str().unwrap()]);
    lab.register("clone", &[("vda", &clone)]).await;
    let cloned = lab.backup("clone").await;
    let logical = 256 * MIB;
    assert!(
        cloned.bytes_new * 20 <= logical,
        "clone added {} bytes, more than 5% of {logical}",
        cloned.bytes_new
    );
}

async fn a_marker_written_into_a_guest_disk_never_appears_in_an_encrypted_vault(store: Store) {
    let lab = Lab::on(store, true).await;
    let marker = b"VMVAULT-SECRET-MARKER-7f3a";
    let text: Vec<u8> = marker.iter().copied().chain(*b"\n").cycle().take(8 << 20).collect();
    let src = lab.path("marker.bin");
    std::fs::write(&src, &text).unwrap();
    let disk = lab.path("disk.qcow2");
    create(&disk, "qcow2", "64M");
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", &format!("write -s {} 4M 8M", src.display()), disk.to_str().unwrap()],
    );
    let raw = std::fs::read(&disk).unwrap();
    assert!(raw.windows(marker.len()).any(|w| w == marker), "the guest disk holds the marker");
    lab.register("secret", &[("vda", &disk)]).await;
    lab.backup("secret").await;
    lab.backup("secret").await;
    let objects = lab.objects().await;
    assert!(objects.len() > 5, "{} objects", objects.len());
    for (key, bytes) in objects {
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "marker found in {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_whose_image_is_in_use_is_refused_and_nothing_is_committed() {
    let lab = Lab::new(false).await;
    let os = lab.path("os.qcow2");
    create(&os, "qcow2", "64M");
    lab.register("busy", &[("vda", &os)]).await;
    let _export = disk::qemu::NbdExport::start(&os, DiskFormat::Qcow2, None, &lab.path("held.sock")).unwrap();
    let err = engine::backup::backup(
        std::sync::Arc::clone(&lab.vault),
        "busy",
        Default::default(),
        std::sync::Arc::new(engine::NoProgress),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("in use by a running QEMU"), "{err}");
    assert!(engine::points::list(&lab.vault, "busy").await.unwrap().is_empty());
}

on_both_stores!(
    full_then_incremental_backups_restore_bit_exact,
    a_cloned_vm_adds_almost_nothing_to_the_vault,
    a_marker_written_into_a_guest_disk_never_appears_in_an_encrypted_vault,
);
