//! ext2/3/4 as mkfs and the kernel leave them, read back through vmvault: sparse files of
//! ext2/3 (holes in indirect block maps), `inline_data` files and directories, a `large_dir`
//! directory with a three-level htree, and an unindexed directory of 10 000 files, against
//! the kernel's read-only mount.

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

/// Files of every size around the inline limits (60 bytes in `i_block`, then what the
/// inode's attribute space holds) and small directories, which `inline_data` keeps in inodes.
fn small_things(at: &Path) {
    std::fs::create_dir_all(at.join("small/dir/inner")).unwrap();
    for n in [0usize, 1, 59, 60, 61, 100, 140, 160, 300, 5000] {
        std::fs::write(at.join(format!("small/file-{n}")), "x".repeat(n)).unwrap();
    }
    std::fs::write(at.join("small/dir/inner/leaf"), "in an inline directory\n").unwrap();
    for i in 0..4 {
        std::fs::write(at.join(format!("small/dir/f{i}")), format!("{i}\n")).unwrap();
    }
    std::os::unix::fs::symlink(format!("/{}", "long-target/".repeat(8)), at.join("small/long-link")).unwrap();
    // Attributes beside inline data in the inode's attribute space.
    run("setfattr", &["-n", "user.note", "-v", "beside inline data", s(&at.join("small/file-100"))]);
    run("setfacl", &["-m", "u:1001:r-x", s(&at.join("small/dir"))]);
}

#[test]
fn inline_data_files_and_directories_read_as_the_kernel_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let (image, want) =
        made(dir.path(), "inline", &["mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "inline_data"], |m| {
            testkit::guest_disks::fill_linux_root(m, "inline", false);
            small_things(m);
        });
    // The kernel really kept them inline.
    let stat = run("debugfs", &["-R", "stat /small/dir", s(&image)]);
    assert!(stat.contains("InlineDataFl") || stat.contains("Size of inline data"), "{stat}");
    let fs = open(&image).unwrap();
    let out = dir.path().join("out");
    let report = extract(&fs, &[b"/".to_vec()], &out).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    let diff = differences(&want, &tree(&out));
    assert!(diff.is_empty(), "inline_data differs from the kernel's view:\n{}", diff.join("\n"));
}

#[test]
fn an_attribute_value_in_its_own_inode_reads_as_the_kernel_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    // With ea_inode a value larger than a block lives in an inode of its own.
    let value = "v".repeat(20_000);
    let (image, want) =
        made(dir.path(), "ea", &["mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "ea_inode"], |m| {
            std::fs::write(m.join("carrier"), "x\n").unwrap();
            run("setfattr", &["-n", "user.large", "-v", &value, s(&m.join("carrier"))]);
            run("setfattr", &["-n", "user.small", "-v", "beside it", s(&m.join("carrier"))]);
        });
    let fs = open(&image).unwrap();
    let got: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
        fs.xattrs(b"/carrier").unwrap().into_iter().map(|x| (x.name, x.value)).collect();
    assert_eq!(got, want["carrier"].xattrs);
    assert_eq!(got[&b"user.large"[..]].len(), 20_000);
}

#[test]
fn a_large_dir_filesystem_with_a_three_level_htree_finds_every_name() {
    let dir = tempfile::tempdir().unwrap();
    // 1 KiB blocks and 250-byte names: three names per leaf, so 30 000 names need the third
    // htree level that only large_dir allows.
    let name = |i: usize| format!("{i:05}-{}", "n".repeat(244));
    let (image, want) = made(
        dir.path(),
        "large",
        &["mkfs.ext4", "-q", "-F", "-b", "1024", "-N", "40000", "-O", "large_dir"],
        |m| {
            std::fs::create_dir(m.join("big")).unwrap();
            for i in 0..30_000 {
                std::fs::File::create(m.join("big").join(name(i))).unwrap();
            }
        },
    );
    let dump = run("debugfs", &["-R", "htree_dump /big", s(&image)]);
    assert!(dump.contains("Indirect levels: 2"), "{}", &dump[..dump.len().min(400)]);
    let fs = open(&image).unwrap();
    for i in [0, 1, 12_345, 29_999] {
        let path = format!("/big/{}", name(i));
        assert_eq!(fs.stat(path.as_bytes()).unwrap().size, 0, "{i}");
    }
    assert!(fs.stat(format!("/big/{}", name(30_000)).as_bytes()).is_err());
    let listed = fs.list(b"/big").unwrap();
    assert_eq!(listed.len(), want.keys().filter(|k| k.starts_with("big/")).count());
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
