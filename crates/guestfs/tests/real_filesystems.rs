//! Guest disks built with the real tools (sfdisk, mkfs.ext4 -d, mkfs.vfat + mcopy, mkntfs +
//! ntfscp, debugfs for hostile structures), read back and extracted.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use guestfs::detect::FsKind;
use guestfs::extract::{extract, find};
use guestfs::partition::TableKind;
use guestfs::{BlockReader, open_volume, volumes};

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn sh_in(cmd: &str, args: &[&str], stdin: &str) {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn disk(path: &Path) -> Arc<dyn BlockReader> {
    Arc::new(std::fs::File::open(path).unwrap())
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

#[test]
fn gpt_disk_with_ext4_and_fat_partitions_lists_and_extracts() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    let img = dir.path().join("gpt.raw");
    sh("truncate", &["-s", "64M", s(&img)]);
    sh_in(
        "sfdisk",
        &["-q", s(&img)],
        "label: gpt\n\
         start=2048, size=65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n\
         start=67584, size=61440, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=data\n",
    );
    sh("mkfs.ext4", &["-F", "-q", "-L", "root", "-d", s(&src), "-E", "offset=1048576", s(&img), "32M"]);
    sh("mkfs.vfat", &["-F", "16", "-n", "DATA", "--offset", "67584", s(&img), "30720"]);
    let fat_at = format!("{}@@{}", img.display(), 67584 * 512);
    sh("mmd", &["-i", &fat_at, "::/Docs", "::/Docs/Deep"]);
    let long = dir.path().join("A long file name.txt");
    std::fs::write(&long, "long names survive\n").unwrap();
    sh("mcopy", &["-m", "-i", &fat_at, s(&long), "::/Docs/Deep/"]);
    sh("mcopy", &["-m", "-i", &fat_at, s(&src.join("var/log/big.bin")), "::/big.bin"]);

    let (table, vols) = volumes(disk(&img)).unwrap();
    assert_eq!(table, TableKind::Gpt);
    let summary: Vec<(u32, FsKind, Option<String>, Option<String>)> =
        vols.iter().map(|v| (v.number, v.fs, v.label.clone(), v.part_name.clone())).collect();
    assert_eq!(
        summary,
        [
            (1, FsKind::Ext, Some("root".into()), Some("root".into())),
            (2, FsKind::Fat, Some("DATA".into()), Some("data".into())),
        ]
    );
    assert_eq!(guestfs::detect::default_volume(&vols).unwrap().number, 1);

    // ext4: the whole tree, bit for bit, with modes, mtimes and symlink targets.
    let ext = open_volume(disk(&img), &vols[0]).unwrap();
    let mut names: Vec<String> = ext.list(b"/").unwrap().iter().map(|e| e.display_name()).collect();
    names.sort();
    assert_eq!(names, ["etc", "etc-link", "lost+found", "run.sh", "var"]);
    let dest = dir.path().join("out-ext");
    let report = extract(
        ext.as_ref(),
        &[b"/etc".to_vec(), b"/var".to_vec(), b"/run.sh".to_vec(), b"/etc-link".to_vec()],
        &dest,
    )
    .unwrap();
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    assert_eq!((report.files, report.symlinks), (4, 2));
    let mut expected = snapshot(&src, true);
    expected.retain(|k, _| !k.starts_with("lost+found"));
    assert_eq!(snapshot(&dest, true), expected);

    // FAT: long names, nested directories, content and mtime (2 s resolution).
    let fat = open_volume(disk(&img), &vols[1]).unwrap();
    let dest = dir.path().join("out-fat");
    let report = extract(fat.as_ref(), &[b"/".to_vec()], &dest).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(dest.join("Docs/Deep/A long file name.txt")).unwrap(), b"long names survive\n");
    assert_eq!(
        std::fs::read(dest.join("big.bin")).unwrap(),
        std::fs::read(src.join("var/log/big.bin")).unwrap()
    );
    let want = std::fs::metadata(&long).unwrap().mtime();
    let got = std::fs::metadata(dest.join("Docs/Deep/A long file name.txt")).unwrap().mtime();
    assert!((want - got).abs() <= 2, "FAT mtime {got} vs {want}");
    let (hits, problems) = find(fat.as_ref(), b"/", "*.TXT");
    assert!(problems.is_empty());
    assert!(hits.is_empty(), "globs are case-sensitive: {hits:?}");
    let (hits, _) = find(fat.as_ref(), b"/", "*.txt");
    assert_eq!(hits.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["/Docs/Deep/A long file name.txt"]);
}

#[test]
fn mbr_logical_partition_and_bare_ntfs_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    let img = dir.path().join("mbr.raw");
    sh("truncate", &["-s", "40M", s(&img)]);
    sh_in(
        "sfdisk",
        &["-q", s(&img)],
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
            s(&img),
            "34M",
        ],
    );
    let (table, vols) = volumes(disk(&img)).unwrap();
    assert_eq!(table, TableKind::Mbr);
    let numbers: Vec<(u32, FsKind)> = vols.iter().map(|v| (v.number, v.fs)).collect();
    assert_eq!(numbers, [(1, FsKind::Unknown), (5, FsKind::Ext)]);
    let ext = open_volume(disk(&img), &vols[1]).unwrap();
    let mut out = Vec::new();
    ext.read_file(b"/etc/app/conf.d/main.conf", &mut out).unwrap();
    assert_eq!(out, std::fs::read(src.join("etc/app/conf.d/main.conf")).unwrap());
    assert!(open_volume(disk(&img), &vols[0]).err().unwrap().to_string().contains("no filesystem"));

    let ntfs_img = dir.path().join("ntfs.raw");
    sh("truncate", &["-s", "32M", s(&ntfs_img)]);
    sh("mkntfs", &["-F", "-f", "-q", "-L", "win", s(&ntfs_img)]);
    sh("ntfscp", &["-f", s(&ntfs_img), s(&src.join("var/log/big.bin")), "/Big File.bin"]);
    sh("ntfscp", &["-f", s(&ntfs_img), s(&src.join("etc/hosts")), "/hosts.txt"]);
    let (table, vols) = volumes(disk(&ntfs_img)).unwrap();
    assert_eq!(table, TableKind::None);
    assert_eq!((vols[0].number, vols[0].fs, vols[0].label.as_deref()), (0, FsKind::Ntfs, Some("win")));
    let ntfs = open_volume(disk(&ntfs_img), &vols[0]).unwrap();
    let mut names: Vec<String> = ntfs.list(b"/").unwrap().iter().map(|e| e.display_name()).collect();
    names.sort();
    assert_eq!(names, ["Big File.bin", "hosts.txt"]);
    let dest = dir.path().join("out-ntfs");
    let report = extract(ntfs.as_ref(), &[b"/".to_vec()], &dest).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        std::fs::read(dest.join("Big File.bin")).unwrap(),
        std::fs::read(src.join("var/log/big.bin")).unwrap()
    );
    assert_eq!(std::fs::read(dest.join("hosts.txt")).unwrap(), b"127.0.0.1 localhost\n");
}

/// Everything under `dir`, to prove nothing was written outside the target.
fn all_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_ext4_images_stay_inside_the_target_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/inner")).unwrap();
    std::fs::write(src.join("sub/inner/file"), "inner\n").unwrap();
    std::fs::write(src.join("small"), "small\n").unwrap();
    std::os::unix::fs::symlink("/etc", src.join("to-etc")).unwrap();
    std::os::unix::fs::symlink("../../../../../../tmp", src.join("escape")).unwrap();
    sh("mkfifo", &[s(&src.join("fifo"))]);
    let big: Vec<u8> = (0..6_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("zzz-big"), &big).unwrap();
    let img = dir.path().join("hostile.raw");
    sh("mkfs.ext4", &["-F", "-q", "-b", "4096", "-d", s(&src), s(&img), "16M"]);
    // A directory hard-linked into its own child: a loop. A second name for a file: a duplicate.
    sh("debugfs", &["-w", "-R", "ln /sub /sub/inner/loop", s(&img)]);
    sh("debugfs", &["-w", "-R", "ln /small /sub/small", s(&img)]);

    let (_, vols) = volumes(disk(&img)).unwrap();
    let fs = open_volume(disk(&img), &vols[0]).unwrap();
    let target_parent = dir.path().join("restore");
    let dest = target_parent.join("dest");
    // Plant a symlink where a guest directory will land: extraction must not write through it.
    std::fs::create_dir_all(&dest).unwrap();
    std::os::unix::fs::symlink(dir.path(), dest.join("sub")).unwrap();

    let report = extract(fs.as_ref(), &[b"/".to_vec()], &dest).unwrap();
    assert!(report.warnings.iter().any(|w| w.contains("/fifo") && w.contains("skipped")), "{report:?}");
    assert!(report.warnings.iter().any(|w| w.contains("/sub") && w.contains("non-directory")), "{report:?}");
    // Symlinks are created as they are, never followed.
    assert_eq!(std::fs::read_link(dest.join("to-etc")).unwrap(), Path::new("/etc"));
    assert_eq!(std::fs::read_link(dest.join("escape")).unwrap(), Path::new("../../../../../../tmp"));
    assert_eq!(std::fs::read(dest.join("zzz-big")).unwrap(), big);
    // Nothing outside dest: the parent holds only dest, and the planted link's target is untouched.
    assert_eq!(all_paths(&target_parent).iter().filter(|p| !p.starts_with(&dest)).count(), 0);
    assert!(!dir.path().join("inner").exists());

    // Extracting the looping directory itself: the loop is found, not followed forever.
    let dest2 = dir.path().join("dest2");
    let report = extract(fs.as_ref(), &[b"/sub".to_vec()], &dest2).unwrap();
    assert!(
        report.errors.iter().any(|e| e.contains("directory loop") && e.contains("/sub/inner/loop")),
        "{report:?}"
    );
    assert_eq!(std::fs::read(dest2.join("sub/inner/file")).unwrap(), b"inner\n");
    assert_eq!(std::fs::read(dest2.join("sub/small")).unwrap(), b"small\n");

    // Truncate the image inside the big file's data: that file fails, the rest is extracted.
    let truncated = dir.path().join("truncated.raw");
    std::fs::copy(&img, &truncated).unwrap();
    let bmap = Command::new("debugfs").args(["-R", "bmap /zzz-big 0", s(&img)]).output().unwrap();
    let first_block: u64 = String::from_utf8_lossy(&bmap.stdout).trim().parse().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&truncated).unwrap();
    f.set_len(first_block * 4096 + (1 << 20)).unwrap();
    drop(f);
    let fs = open_volume(disk(&truncated), &volumes(disk(&truncated)).unwrap().1[0]).unwrap();
    let dest3 = dir.path().join("dest3");
    let report = extract(fs.as_ref(), &[b"/zzz-big".to_vec(), b"/small".to_vec()], &dest3).unwrap();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(
        report.errors[0].starts_with("/zzz-big:") && report.errors[0].contains("past the end of the disk"),
        "{report:?}"
    );
    assert!(!dest3.join("zzz-big").exists(), "a partial file was left");
    assert_eq!(std::fs::read(dest3.join("small")).unwrap(), b"small\n");

    // A superblock cut short: a clear error, no panic.
    let stub = dir.path().join("stub.raw");
    let mut head = std::fs::read(&img).unwrap();
    head.truncate(1100);
    std::fs::write(&stub, &head).unwrap();
    let (_, vols) = volumes(disk(&stub)).unwrap();
    assert_eq!(vols[0].fs, FsKind::Ext);
    let err = open_volume(disk(&stub), &vols[0]).err().expect("a cut superblock must not open").to_string();
    assert!(err.contains("ext4 superblock"), "{err}");
}
