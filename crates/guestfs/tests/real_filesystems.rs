//! Hostile guest disks built with the real tools (mkfs.ext4 -d, debugfs): extraction stays
//! inside its target and reports clear errors. (Well-formed GPT, MBR, ext4, FAT and NTFS disks
//! are read back through backups in the engine's file_restore tests.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use guestfs::FsKind;
use guestfs::extract::extract;
use guestfs::{BlockReader, open_volume, volumes};

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn disk(path: &Path) -> Arc<dyn BlockReader> {
    Arc::new(std::fs::File::open(path).unwrap())
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
    let fs = open_volume(&vols[0]).unwrap();
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
    let fs = open_volume(&volumes(disk(&truncated)).unwrap().1[0]).unwrap();
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
    assert!(matches!(vols[0].fs, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4), "{:?}", vols[0].fs);
    let err = open_volume(&vols[0]).err().expect("a cut superblock must not open").to_string();
    assert!(err.contains("ext4 superblock"), "{err}");
}

#[test]
fn a_file_entry_named_dot_dot_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("small"), "climb\n").unwrap();
    std::fs::write(src.join("sub/keep"), "kept\n").unwrap();
    let img = dir.path().join("dotdot.raw");
    // No metadata checksums, so the patched directory block is accepted as it is.
    sh("mkfs.ext4", &["-F", "-q", "-O", "^metadata_csum", "-d", s(&src), s(&img), "8M"]);
    // Rename the root's entry "small" (name_len 5, regular file) to "..": a second ".." that
    // is a file.
    let mut bytes = std::fs::read(&img).unwrap();
    let at =
        bytes.windows(7).position(|w| w == [5, 1, b's', b'm', b'a', b'l', b'l']).expect("entry of small");
    bytes[at] = 2;
    bytes[at + 2..at + 4].copy_from_slice(b"..");
    std::fs::write(&img, &bytes).unwrap();

    let (_, vols) = volumes(disk(&img)).unwrap();
    let fs = open_volume(&vols[0]).unwrap();
    let names: Vec<String> = fs.list(b"/").unwrap().iter().map(|e| e.display_name()).collect();
    assert!(!names.contains(&"small".to_string()), "{names:?}");
    let parent = dir.path().join("restore");
    let dest = parent.join("dest");
    let report = extract(fs.as_ref(), &[b"/".to_vec()], &dest).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(dest.join("sub/keep")).unwrap(), b"kept\n");
    assert!(!parent.join("small").exists() && !dir.path().join("small").exists());
    assert_eq!(all_paths(&parent).iter().filter(|p| !p.starts_with(&dest)).count(), 0);
    assert!(all_paths(&dest).iter().all(|p| std::fs::read(p).map(|b| b != b"climb\n").unwrap_or(true)));
}
