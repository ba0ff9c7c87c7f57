//! The disk crate against real images made by qemu-img and qemu-io, and a real qemu-nbd.

use std::path::{Path, PathBuf};
use std::process::Command;

use disk::nbd::NbdClient;
use disk::nbd::proto::{CONTEXT_BASE_ALLOCATION, STATE_DIRTY, STATE_ZERO};
use disk::qemu::{self, NbdExport};
use disk::writer::create_sink;
use disk::{DiskError, DiskFormat, ImageLock, open_source, probe};

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_io(image: &Path, format: &str, cmd: &str) {
    sh("qemu-io", &["-f", format, "-c", cmd, image.to_str().unwrap()]);
}

/// A 64 MiB qcow2 image with data at 1 MiB, 20 MiB and the last 512 bytes.
fn qcow2_image(dir: &Path) -> PathBuf {
    let img = dir.join("disk.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "64M"]);
    qemu_io(&img, "qcow2", "write -P 0x11 1M 1M");
    qemu_io(&img, "qcow2", "write -P 0x22 20M 3M");
    qemu_io(&img, "qcow2", "write -P 0x33 67108352 512");
    img
}

fn raw_of(dir: &Path, image: &Path, format: &str) -> Vec<u8> {
    let raw = dir.join("converted.raw");
    let _ = std::fs::remove_file(&raw);
    sh("qemu-img", &["convert", "-f", format, "-O", "raw", image.to_str().unwrap(), raw.to_str().unwrap()]);
    std::fs::read(raw).unwrap()
}

fn read_all(source: &mut dyn disk::BlockSource) -> Vec<u8> {
    let mut out = vec![0u8; source.size() as usize];
    for (i, chunk) in out.chunks_mut(4 << 20).enumerate() {
        source.read_at(i as u64 * (4 << 20), chunk).unwrap();
    }
    out
}

#[test]
fn a_qcow2_image_reads_exactly_as_qemu_img_converts_it_and_maps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2_image(dir.path());
    let info = probe(&img).unwrap();
    assert_eq!((info.format, info.size), (DiskFormat::Qcow2, 64 << 20));
    let mut source = open_source(&img, DiskFormat::Qcow2).unwrap();
    assert_eq!(read_all(source.as_mut()), raw_of(dir.path(), &img, "qcow2"));
    let allocated = source.allocated().unwrap();
    let covered: u64 = allocated.iter().map(|e| e.length).sum();
    assert!(((4 << 20) + 512..=8 << 20).contains(&covered), "allocated {allocated:?}");
    for (offset, len) in [(1u64 << 20, 1u64 << 20), (20 << 20, 3 << 20), ((64 << 20) - 512, 512)] {
        assert!(
            allocated.iter().any(|e| e.offset <= offset && offset + len <= e.offset + e.length),
            "{offset}+{len} not in {allocated:?}"
        );
    }
}

#[test]
fn a_sparse_raw_image_reports_only_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    sh("qemu-img", &["create", "-q", "-f", "raw", img.to_str().unwrap(), "64M"]);
    qemu_io(&img, "raw", "write -P 0x44 8M 1M");
    let info = probe(&img).unwrap();
    assert_eq!((info.format, info.size), (DiskFormat::Raw, 64 << 20));
    let mut source = open_source(&img, DiskFormat::Raw).unwrap();
    let allocated = source.allocated().unwrap();
    let covered: u64 = allocated.iter().map(|e| e.length).sum();
    assert!((1 << 20..16 << 20).contains(&covered), "{allocated:?}");
    assert_eq!(read_all(source.as_mut()), std::fs::read(&img).unwrap());
}

#[test]
fn an_image_held_by_qemu_nbd_is_in_use_and_our_lock_keeps_writers_out() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2_image(dir.path());
    {
        let export = NbdExport::start(&img, DiskFormat::Qcow2, None, &dir.path().join("s")).unwrap();
        // qemu-nbd listens before it opens the image: a served client proves the image is open.
        let _client = disk::nbd::NbdSource::connect(export.socket(), None).unwrap();
        let err = ImageLock::acquire(&img).err().expect("in use");
        assert!(matches!(err, DiskError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("disk.qcow2"));
    }
    let lock = ImageLock::acquire(&img).expect("free after qemu-nbd stopped");
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write 0 4k", img.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a writer got in while vmvault held the image");
    drop(lock);
    qemu_io(&img, "qcow2", "write 0 4k");
}

#[test]
fn the_nbd_client_reads_an_export_and_its_dirty_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2_image(dir.path());
    qemu::add_bitmap(&img, "vmvault-test").unwrap();
    qemu_io(&img, "qcow2", "write -P 0x55 40M 64k");
    qemu_io(&img, "qcow2", "write -P 0x66 1M 4k");
    let bitmaps = qemu::bitmaps(&img).unwrap();
    assert_eq!(bitmaps.len(), 1);
    assert!(bitmaps[0].is_consistent(), "{bitmaps:?}");

    let socket = dir.path().join("nbd.sock");
    let export = NbdExport::start(&img, DiskFormat::Qcow2, Some("vmvault-test"), &socket).unwrap();
    let dirty_context = "qemu:dirty-bitmap:vmvault-test";
    let mut client =
        NbdClient::connect_unix(export.socket(), "", &[CONTEXT_BASE_ALLOCATION, dirty_context]).unwrap();
    assert_eq!(client.size(), 64 << 20);
    assert!(client.is_read_only());

    let mut data = vec![0u8; client.size() as usize];
    for (i, chunk) in data.chunks_mut(4 << 20).enumerate() {
        client.read(i as u64 * (4 << 20), chunk).unwrap();
    }
    assert_eq!(data, raw_of(dir.path(), &img, "qcow2"));

    let dirty: Vec<_> = client
        .extents(dirty_context, 0, 64 << 20)
        .unwrap()
        .into_iter()
        .filter(|e| e.flags & STATE_DIRTY != 0)
        .collect();
    let dirty_bytes: u64 = dirty.iter().map(|e| e.length).sum();
    assert!(dirty.iter().any(|e| e.offset <= 40 << 20 && (40 << 20) + (64 << 10) <= e.offset + e.length));
    assert!(dirty.iter().any(|e| e.offset <= 1 << 20 && (1 << 20) + 4096 <= e.offset + e.length));
    assert!(dirty_bytes <= 256 << 10, "only the writes since the bitmap: {dirty:?}");

    let zeros: u64 = client
        .extents(CONTEXT_BASE_ALLOCATION, 0, 64 << 20)
        .unwrap()
        .iter()
        .filter(|e| e.flags & STATE_ZERO != 0)
        .map(|e| e.length)
        .sum();
    assert!(zeros >= 50 << 20, "most of the disk reads as zeros: {zeros}");
    client.disconnect();
}

#[test]
fn a_qcow2_written_by_the_restore_sink_passes_qemu_img_check_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let src = qcow2_image(dir.path());
    let mut source = open_source(&src, DiskFormat::Qcow2).unwrap();
    for format in [DiskFormat::Qcow2, DiskFormat::Raw] {
        let out = dir.path().join(format!("restored.{}", format.as_str()));
        let mut sink = create_sink(&out, format, source.size()).unwrap();
        for extent in source.allocated().unwrap() {
            let mut buf = vec![0u8; extent.length as usize];
            source.read_at(extent.offset, &mut buf).unwrap();
            sink.write_at(extent.offset, &buf).unwrap();
        }
        sink.finish().unwrap();
        if format == DiskFormat::Qcow2 {
            sh("qemu-img", &["check", "-q", out.to_str().unwrap()]);
        }
        sh(
            "qemu-img",
            &[
                "compare",
                "-q",
                "-f",
                "qcow2",
                "-F",
                format.as_str(),
                src.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        assert!(create_sink(&out, format, 1 << 20).is_err(), "never overwrites");
    }
}
