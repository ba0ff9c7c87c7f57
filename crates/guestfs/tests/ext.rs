//! ext2/3/4 as mkfs and the kernel leave them, read back through vmvault: sparse files of
//! ext2/3 (holes in indirect block maps), `inline_data` and `large_dir` filesystems, and an
//! unindexed directory of 10 000 files, against the kernel's read-only mount.

use std::path::Path;
use std::sync::Arc;

use guestfs::extract::extract;
use guestfs::{BlockReader, GuestFs, Slice};
use testkit::guest_disks::{Loop, Mount, differences, run, tree};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Make an ext filesystem with `mkfs` options, fill it through the kernel, and return the
/// kernel's read-only view and the image.
fn made(
    dir: &Path,
    name: &str,
    mkfs: &[&str],
    fill: impl FnOnce(&Path),
) -> (std::path::PathBuf, std::collections::BTreeMap<String, testkit::guest_disks::Node>) {
    let image = dir.join(format!("{name}.img"));
    run("truncate", &["-s", "96M", s(&image)]);
    let mut args = mkfs[1..].to_vec();
    args.push(s(&image));
    run(mkfs[0], &args);
    let dev = Loop::attach(&image, 0, 96 << 20);
    let mnt = dir.join(format!("mnt-{name}"));
    {
        let _m = Mount::new(&dev.0, &mnt, "rw");
        fill(&mnt);
        run("sync", &[]);
    }
    let want = {
        let _m = Mount::new(&dev.0, &mnt, "ro");
        tree(&mnt)
    };
    (image, want)
}

fn open(image: &Path) -> guestfs::Result<guestfs::ext::ExtFs> {
    let disk: Arc<dyn BlockReader> = Arc::new(std::fs::File::open(image).unwrap());
    guestfs::ext::ExtFs::open(Slice::whole(disk))
}

fn sparse_files(at: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(at.join("holes.bin")).unwrap();
    // Data, a hole of 256 MiB worth of indirect blocks' reach, data again.
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"middle", 5 << 20).unwrap();
    f.write_all_at(b"end", 40 << 20).unwrap();
    std::fs::write(at.join("plain.txt"), "no holes\n").unwrap();
}

#[test]
fn sparse_files_of_ext2_and_ext3_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mkfs) in [("ext2", ["mkfs.ext2", "-q", "-F"]), ("ext3", ["mkfs.ext3", "-q", "-F"])] {
        let (image, want) = made(dir.path(), name, &mkfs, sparse_files);
        let fs = open(&image).unwrap();
        let out = dir.path().join(format!("out-{name}"));
        let report = extract(&fs, &[b"/".to_vec()], &out).unwrap();
        assert!(report.errors.is_empty(), "{name}: {report:?}");
        let mut got = tree(&out);
        got.retain(|k, _| !k.starts_with("lost+found"));
        let mut want = want;
        want.retain(|k, _| !k.starts_with("lost+found"));
        let diff = differences(&want, &got);
        assert!(diff.is_empty(), "{name} differs from the kernel's view:\n{}", diff.join("\n"));
    }
}

#[test]
fn inline_data_and_large_dir_filesystems_are_named_not_called_damaged() {
    let dir = tempfile::tempdir().unwrap();
    for feature in ["inline_data", "large_dir"] {
        let (image, _) = made(dir.path(), feature, &["mkfs.ext4", "-q", "-F", "-O", feature], |m| {
            std::fs::write(m.join("small.txt"), "tiny\n").unwrap();
        });
        let result = open(&image).and_then(|fs| {
            let mut out = Vec::new();
            fs.read_file(b"/small.txt", &mut out).map(|_| out)
        });
        match result {
            Ok(bytes) => assert_eq!(bytes, b"tiny\n", "{feature}"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains(feature) && !text.contains("damaged"), "{feature}: {text}");
            }
        }
    }
}

#[test]
fn an_unindexed_directory_of_ten_thousand_files_extracts_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (image, want) = made(dir.path(), "flat", &["mkfs.ext4", "-q", "-F", "-O", "^dir_index"], |m| {
        std::fs::create_dir(m.join("many")).unwrap();
        for i in 0..10_000 {
            std::fs::write(m.join(format!("many/file-{i:05}")), format!("{i}\n")).unwrap();
        }
    });
    let fs = open(&image).unwrap();
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let report = extract(&fs, &[b"/many".to_vec()], &out).unwrap();
    eprintln!("extracting 10 000 files of an unindexed ext4 directory took {:?}", started.elapsed());
    assert_eq!(report.files, 10_000, "{report:?}");
    let mut want = want;
    want.retain(|k, _| k.starts_with("many"));
    assert!(differences(&want, &tree(&out)).is_empty());
}
