//! Files out of recovery points: a real GPT + ext4 disk built with sfdisk and mkfs.ext4 -d,
//! backed up into an encrypted vault, browsed and extracted without restoring the disk.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use engine::files::PointDisk;
use guestfs::FsKind;
use guestfs::extract::{extract, find};
use guestfs::partition::TableKind;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A source tree with nested directories, modes, fixed mtimes and symlinks.
fn source_tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("etc/app/conf.d")).unwrap();
    std::fs::create_dir_all(src.join("var/log")).unwrap();
    std::fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(src.join("etc/app/conf.d/main.conf"), "answer = 42\n".repeat(1000)).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("var/log/big.bin"), &big).unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(src.join("etc/hosts"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("/etc", src.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("../hosts", src.join("etc/app/hosts-link")).unwrap();
    sh("touch", &["-h", "-d", "2024-02-29 12:34:56", s(&src.join("etc-link"))]);
    for p in [
        "etc/hosts",
        "etc/app/conf.d/main.conf",
        "var/log/big.bin",
        "run.sh",
        "etc/app/conf.d",
        "var/log",
        "var",
        "etc/app",
        "etc",
    ] {
        sh("touch", &["-d", "2023-07-14 08:09:10", s(&src.join(p))]);
    }
    src
}

/// Every path under `root` with (kind, mode, mtime, content or link target).
fn snapshot(root: &Path, with_modes: bool) -> BTreeMap<String, (String, u32, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let mode = if with_modes { meta.mode() & 0o7777 } else { 0 };
            let (kind, data) = if meta.file_type().is_symlink() {
                ("link", std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes())
            } else if meta.is_dir() {
                stack.push(path.clone());
                ("dir", vec![])
            } else {
                ("file", std::fs::read(&path).unwrap())
            };
            // Directory mtimes change as the source tree is built; links keep theirs.
            let mtime = if kind == "dir" { 0 } else { meta.mtime() };
            out.insert(rel, (kind.to_string(), if kind == "link" { 0 } else { mode }, mtime, data));
        }
    }
    out
}

fn sfdisk(image: &Path, script: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", image.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

async fn listing_the_root_of_a_large_disk_reads_a_few_chunks_and_files_come_back_whole(store: Store) {
    let lab = Lab::on(store, true).await;
    let src = lab.path("src");
    std::fs::create_dir_all(src.join("etc/ssh")).unwrap();
    std::fs::create_dir_all(src.join("home/ana")).unwrap();
    std::fs::write(src.join("etc/hostname"), "db01\n").unwrap();
    std::fs::write(src.join("etc/ssh/sshd_config"), "PermitRootLogin no\n".repeat(200)).unwrap();
    let photo: Vec<u8> = (0..9_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(src.join("home/ana/photo.raw"), &photo).unwrap();
    std::os::unix::fs::symlink("photo.raw", src.join("home/ana/latest")).unwrap();

    let image = lab.path("db01.raw");
    sh("truncate", &["-s", "2560M", image.to_str().unwrap()]);
    sfdisk(&image, "label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n");
    sh(
        "mkfs.ext4",
        &[
            "-F",
            "-q",
            "-L",
            "rootfs",
            "-d",
            src.to_str().unwrap(),
            "-E",
            "offset=1048576",
            image.to_str().unwrap(),
            "2500M",
        ],
    );
    lab.register("db01", &[("vda", &image)]).await;
    let point = lab.backup("db01").await;

    let disk = PointDisk::open(Arc::clone(&lab.vault), "db01", &point.point_id, None).await.unwrap();
    let reader = Arc::clone(&disk.reader);
    let (names, parts, chunks_for_ls) = tokio::task::spawn_blocking(move || {
        let volumes = disk.layout().unwrap().volumes;
        let (volume, fs) = disk.filesystem(None).unwrap();
        assert_eq!(
            (volume.id.as_str(), volume.fs, volume.label.as_deref()),
            ("1", FsKind::Ext4, Some("rootfs"))
        );
        let mut names: Vec<String> = fs.list(b"/").unwrap().iter().map(|e| e.display_name()).collect();
        names.sort();
        (names, volumes.len(), reader.chunks_fetched())
    })
    .await
    .unwrap();
    assert_eq!(names, ["etc", "home", "lost+found"]);
    assert_eq!(parts, 1);
    // A 2.5 GiB disk is 640 chunks; the table, superblock, root inode and root directory are
    // near its start.
    eprintln!("listing / of a 2.5 GiB disk fetched {chunks_for_ls} chunks");
    assert!(chunks_for_ls <= 4, "listing / fetched {chunks_for_ls} chunks");

    let disk = PointDisk::open(Arc::clone(&lab.vault), "db01", "latest", Some("vda")).await.unwrap();
    let dest = lab.path("restored-files");
    let report = tokio::task::spawn_blocking({
        let dest = dest.clone();
        move || {
            let (_, fs) = disk.filesystem(Some("1")).unwrap();
            extract(fs.as_ref(), &[b"/etc".to_vec(), b"/home".to_vec()], &dest).unwrap()
        }
    })
    .await
    .unwrap();
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(dest.join("home/ana/photo.raw")).unwrap(), photo);
    assert_eq!(
        std::fs::read(dest.join("etc/ssh/sshd_config")).unwrap(),
        std::fs::read(src.join("etc/ssh/sshd_config")).unwrap()
    );
    assert_eq!(std::fs::read_link(dest.join("home/ana/latest")).unwrap(), Path::new("photo.raw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpt_mbr_and_ntfs_disks_come_back_file_for_file_from_a_point() {
    let lab = Lab::new(true).await;
    let src = source_tree(lab.dir.path());

    // Disk 1: GPT with ext4 (mkfs.ext4 -d) and FAT16 (mkfs.vfat + mcopy, long names).
    let gpt = lab.path("gpt.raw");
    sh("truncate", &["-s", "64M", s(&gpt)]);
    sfdisk(
        &gpt,
        "label: gpt\n\
         start=2048, size=65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n\
         start=67584, size=61440, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=data\n",
    );
    sh("mkfs.ext4", &["-F", "-q", "-L", "root", "-d", s(&src), "-E", "offset=1048576", s(&gpt), "32M"]);
    sh("mkfs.vfat", &["-F", "16", "-n", "DATA", "--offset", "67584", s(&gpt), "30720"]);
    let fat_at = format!("{}@@{}", gpt.display(), 67584 * 512);
    sh("mmd", &["-i", &fat_at, "::/Docs", "::/Docs/Deep"]);
    let long = lab.path("A long file name.txt");
    std::fs::write(&long, "long names survive\n").unwrap();
    sh("mcopy", &["-m", "-i", &fat_at, s(&long), "::/Docs/Deep/"]);
    sh("mcopy", &["-m", "-i", &fat_at, s(&src.join("var/log/big.bin")), "::/big.bin"]);

    // Disk 2: MBR whose ext4 is in a logical partition (number 5).
    let mbr = lab.path("mbr.raw");
    sh("truncate", &["-s", "40M", s(&mbr)]);
    sfdisk(
        &mbr,
        "label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=71680, type=5\nstart=12288, size=69632, type=83\n",
    );
    sh(
        "mkfs.ext4",
        &[
            "-F",
            "-q",
            "-L",
            "logical",
            "-d",
            s(&src),
            "-E",
            &format!("offset={}", 12288 * 512),
            s(&mbr),
            "34M",
        ],
    );

    // Disk 3: NTFS on the whole disk (mkntfs + ntfscp).
    let ntfs = lab.path("ntfs.raw");
    sh("truncate", &["-s", "32M", s(&ntfs)]);
    sh("mkntfs", &["-F", "-f", "-q", "-L", "win", s(&ntfs)]);
    sh("ntfscp", &["-f", s(&ntfs), s(&src.join("var/log/big.bin")), "/Big File.bin"]);
    sh("ntfscp", &["-f", s(&ntfs), s(&src.join("etc/hosts")), "/hosts.txt"]);

    lab.register("guest", &[("gpt", &gpt), ("mbr", &mbr), ("ntfs", &ntfs)]).await;
    lab.backup("guest").await;
    let mut expected = snapshot(&src, true);
    expected.retain(|k, _| !k.starts_with("lost+found"));

    // ext4 in the GPT: the whole tree, bit for bit, with modes, mtimes and symlink targets.
    let out = lab.path("out-gpt-ext4");
    let (table, volumes, report) = with_disk(&lab, "guest", "gpt", {
        let out = out.clone();
        move |disk| {
            let layout = disk.layout().unwrap();
            let (table, volumes) = (layout.table, layout.volumes);
            let (_, fs) = disk.filesystem(None).unwrap();
            let paths = [b"/etc".to_vec(), b"/var".to_vec(), b"/run.sh".to_vec(), b"/etc-link".to_vec()];
            (table, volumes, extract(fs.as_ref(), &paths, &out).unwrap())
        }
    })
    .await;
    assert_eq!(table, TableKind::Gpt);
    let summary: Vec<(&str, FsKind, Option<String>, Option<String>)> =
        volumes.iter().map(|v| (v.id.as_str(), v.fs, v.label.clone(), v.part_name.clone())).collect();
    assert_eq!(
        summary,
        [
            ("1", FsKind::Ext4, Some("root".into()), Some("root".into())),
            ("2", FsKind::Vfat, Some("DATA".into()), Some("data".into())),
        ]
    );
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    assert_eq!(snapshot(&out, true), expected);

    // FAT in the GPT: long names, nested directories, content, mtime (2 s resolution).
    let out = lab.path("out-gpt-fat");
    let (report, hits) = with_disk(&lab, "guest", "gpt", {
        let out = out.clone();
        move |disk| {
            let (_, fs) = disk.filesystem(Some("2")).unwrap();
            (extract(fs.as_ref(), &[b"/".to_vec()], &out).unwrap(), find(fs.as_ref(), b"/", "*.txt").0)
        }
    })
    .await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(out.join("Docs/Deep/A long file name.txt")).unwrap(), b"long names survive\n");
    assert_eq!(
        std::fs::read(out.join("big.bin")).unwrap(),
        std::fs::read(src.join("var/log/big.bin")).unwrap()
    );
    let want = std::fs::metadata(&long).unwrap().mtime();
    let got = std::fs::metadata(out.join("Docs/Deep/A long file name.txt")).unwrap().mtime();
    assert!((want - got).abs() <= 2, "FAT mtime {got} vs {want}");
    assert_eq!(hits.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["/Docs/Deep/A long file name.txt"]);

    // ext4 in the MBR's logical partition.
    let out = lab.path("out-mbr");
    let (numbers, report) = with_disk(&lab, "guest", "mbr", {
        let out = out.clone();
        move |disk| {
            let layout = disk.layout().unwrap();
            let (table, volumes) = (layout.table, layout.volumes);
            assert_eq!(table, TableKind::Mbr);
            let numbers: Vec<(String, FsKind)> = volumes.iter().map(|v| (v.id.clone(), v.fs)).collect();
            let (_, fs) = disk.filesystem(Some("5")).unwrap();
            (numbers, extract(fs.as_ref(), &[b"/".to_vec()], &out).unwrap())
        }
    })
    .await;
    assert_eq!(numbers, [("1".to_string(), FsKind::Unknown), ("5".to_string(), FsKind::Ext4)]);
    assert!(report.errors.is_empty(), "{report:?}");
    let mut got = snapshot(&out, true);
    got.retain(|k, _| !k.starts_with("lost+found"));
    assert_eq!(got, expected);

    // NTFS on the whole disk.
    let out = lab.path("out-ntfs");
    let (volume, report) = with_disk(&lab, "guest", "ntfs", {
        let out = out.clone();
        move |disk| {
            let (volume, fs) = disk.filesystem(None).unwrap();
            (volume, extract(fs.as_ref(), &[b"/".to_vec()], &out).unwrap())
        }
    })
    .await;
    assert_eq!((volume.id.as_str(), volume.fs, volume.label.as_deref()), ("0", FsKind::Ntfs, Some("win")));
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        std::fs::read(out.join("Big File.bin")).unwrap(),
        std::fs::read(src.join("var/log/big.bin")).unwrap()
    );
    assert_eq!(std::fs::read(out.join("hosts.txt")).unwrap(), b"127.0.0.1 localhost\n");
}

on_both_stores!(listing_the_root_of_a_large_disk_reads_a_few_chunks_and_files_come_back_whole);
