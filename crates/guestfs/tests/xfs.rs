//! XFS as mkfs.xfs and the kernel write it, read back by vmvault's own reader: v4 (which this
//! kernel no longer mounts, so mkfs.xfs fills it from a protofile) against its source tree,
//! and v5 filled through the kernel's driver against the kernel's read-only mount; damaged
//! structures give errors that name them, never other data.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use guestfs::extract::extract;
use guestfs::xfs::XfsFs;
use guestfs::{BlockReader, GuestFs, Slice};
use testkit::guest_disks::{Loop, Mount, Node, differences, fill_linux_root, run, tree};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn open(image: &Path) -> XfsFs {
    let disk: Arc<dyn BlockReader> = Arc::new(std::fs::File::open(image).unwrap());
    XfsFs::open(Slice::whole(disk)).unwrap()
}

/// A protofile line for every entry under `dir` (mkfs.xfs -p), depth first.
fn proto(dir: &Path, out: &mut String) {
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o777;
        let (uid, gid) = (meta.uid(), meta.gid());
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            writeln!(out, "{name} l--{mode:o} {uid} {gid} {}", target.display()).unwrap();
        } else if meta.is_dir() {
            writeln!(out, "{name} d--{mode:o} {uid} {gid}").unwrap();
            proto(&path, out);
            writeln!(out, "$").unwrap();
        } else {
            writeln!(out, "{name} ---{mode:o} {uid} {gid} {}", path.display()).unwrap();
        }
    }
}

/// Trees without times (mkfs.xfs -p stamps every inode with its own clock).
fn timeless(t: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    t.into_iter().map(|(k, n)| (k, Node { mtime: 0, ..n })).collect()
}

#[test]
fn xfs_v4_made_from_a_protofile_reads_as_its_source_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // Directories in each of XFS's forms: inline (few), one block, leaf, node.
    for (name, n) in [("few", 3), ("block", 40), ("leaf", 400), ("node", 3000)] {
        std::fs::create_dir_all(src.join(name)).unwrap();
        for i in 0..n {
            std::fs::write(
                src.join(format!("{name}/entry-with-a-long-name-{i:05}")),
                format!("{name} {i}\n"),
            )
            .unwrap();
        }
    }
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("few/entry-with-a-long-name-00000", src.join("short-link")).unwrap();
    std::os::unix::fs::symlink(format!("/{}end", "component/".repeat(60)), src.join("long-link")).unwrap();
    run("chown", &["1234:5678", s(&src.join("big.bin"))]);
    let mut text = String::from("/dev/null\n0 0\nd--755 0 0\n");
    proto(&src, &mut text);
    text.push_str("$\n");
    let proto_file = dir.path().join("proto");
    std::fs::write(&proto_file, text).unwrap();
    let image = dir.path().join("v4.img");
    run("truncate", &["-s", "300M", s(&image)]);
    run("mkfs.xfs", &["-q", "-f", "-m", "crc=0", "-L", "old", "-p", s(&proto_file), s(&image)]);
    // Attributes in each namespace, in short form and then a leaf block with a remote value
    // (kept in blocks of its own; v4 remote blocks have no header), written by xfs_db as the
    // kernel cannot mount v4 here (one command per run: xfs_db 6.1 crashes on several).
    let set = [
        ("user", 'u', 30),
        ("security", 's', 30),
        ("trusted", 'r', 10),
        ("user", 'u', 300),
        ("user", 'u', 3200),
    ];
    let mut want = timeless(tree(&src));
    for (i, (space, flag, len)) in set.into_iter().enumerate() {
        let cmd = format!("attr_set -{flag} -v {len} a{i}");
        run("xfs_db", &["-x", "-c", "path /big.bin", "-c", &cmd, s(&image)]);
        want.get_mut("big.bin").unwrap().xattrs.insert(format!("{space}.a{i}").into_bytes(), vec![b'v'; len]);
    }
    let aformat = run("xfs_db", &["-r", "-c", "path /big.bin", "-c", "p core.aformat", s(&image)]);
    assert!(aformat.contains("extents"), "the attributes left the inode: {aformat}");

    let fs = open(&image);
    assert_eq!(fs.label().as_deref(), Some("old"));
    let out = dir.path().join("out");
    let report = extract(&fs, &[b"/".to_vec()], &out).unwrap();
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    assert_eq!(report.xattrs, 5);
    let diff = differences(&want, &timeless(tree(&out)));
    assert!(diff.is_empty(), "v4 differs from its source:\n{}", diff.join("\n"));
}

#[test]
fn xfs_v5_filled_by_the_kernel_reads_as_the_kernel_mounts_it_and_damage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("v5.img");
    run("truncate", &["-s", "300M", s(&image)]);
    run("mkfs.xfs", &["-q", "-L", "data", s(&image)]);
    let dev = Loop::attach(&image, 0, 300 << 20);
    let mnt = dir.path().join("mnt");
    {
        let _m = Mount::new(&dev.0, &mnt, "rw");
        fill_linux_root(&mnt, "v5", true);
        // Attributes over several leaf blocks: the attribute fork becomes a dabtree (node form).
        let many = mnt.join("many/attrs");
        std::fs::create_dir(mnt.join("many")).unwrap();
        std::fs::write(&many, b"x").unwrap();
        for i in 0..150 {
            run("setfattr", &["-n", &format!("user.attribute-{i:03}"), "-v", &format!("{i:060}"), s(&many)]);
        }
    }
    let node = run(
        "xfs_db",
        &[
            "-r",
            "-c",
            "path /many/attrs",
            "-c",
            "ablock 0",
            "-c",
            "type attr3",
            "-c",
            "p hdr.info.hdr.magic",
            s(&image),
        ],
    );
    assert!(node.contains("0x3ebe"), "not a node-form attribute fork: {node}");
    // The kernel's view, the inode of /etc/hostname and where big.bin's data starts.
    let (want, hostname_ino, big_data_at, want_many) = {
        let _m = Mount::new(&dev.0, &mnt, "ro");
        let ino = run("stat", &["-c", "%i", s(&mnt.join("etc/hostname"))]).trim().to_string();
        let map = run("xfs_io", &["-r", "-c", "fiemap", s(&mnt.join("home/ana/big.bin"))]);
        // "0: [0..23439]: 96..23535": file range, then disk range, in 512-byte units.
        let first = map.lines().nth(1).unwrap().rsplit(": ").next().unwrap();
        let sector: u64 = first.split("..").next().unwrap().trim().parse().unwrap();
        let many = testkit::guest_disks::xattrs(&mnt.join("many/attrs"));
        (tree(&mnt), ino, sector * 512, many)
    };
    drop(dev);
    let fs = open(&image);
    // The 150 attributes are more than this host's ext4 holds on one file: compared as read.
    let many: BTreeMap<Vec<u8>, Vec<u8>> =
        fs.xattrs(b"/many/attrs").unwrap().into_iter().map(|x| (x.name, x.value)).collect();
    assert_eq!(many.len(), 150);
    assert_eq!(many, want_many);
    let mut want = want;
    want.retain(|k, _| !k.starts_with("many"));

    let out = dir.path().join("out");
    let tops: Vec<Vec<u8>> = fs
        .list(b"/")
        .unwrap()
        .into_iter()
        .filter(|e| e.name != b"many")
        .map(|e| [b"/", &e.name[..]].concat())
        .collect();
    let report = extract(&fs, &tops, &out).unwrap();
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    let diff = differences(&want, &tree(&out));
    assert!(diff.is_empty(), "v5 differs from the kernel's view:\n{}", diff.join("\n"));

    // Damage the inode of /etc/hostname: reading it fails and names it; its siblings still read.
    let ino = hostname_ino;
    let at: u64 = run("xfs_db", &["-r", "-c", &format!("convert ino {ino} byte"), s(&image)])
        .split_whitespace()
        .next()
        .and_then(|n| u64::from_str_radix(n.trim_start_matches("0x"), 16).ok())
        .unwrap();
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[at as usize] ^= 0xFF;
    let damaged = dir.path().join("damaged.img");
    std::fs::write(&damaged, &bytes).unwrap();
    drop(bytes);
    let fs = open(&damaged);
    let err = fs.read_file(b"/etc/hostname", &mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains(&format!("XFS inode {ino}")) && err.contains("damaged"), "{err}");
    let mut conf = Vec::new();
    fs.read_file(b"/etc/ssh/sshd_config", &mut conf).unwrap();
    assert_eq!(conf, "PermitRootLogin no\n".repeat(300).as_bytes());
    std::fs::remove_file(&damaged).unwrap();

    // A volume cut short: an error for what lies past the end, not zeros.
    let cut = dir.path().join("cut.img");
    run("cp", &["--sparse=always", s(&image), s(&cut)]);
    run("truncate", &["-s", &(big_data_at + 65536).to_string(), s(&cut)]);
    let fs = open(&cut);
    let err = fs.read_file(b"/home/ana/big.bin", &mut std::io::sink()).unwrap_err().to_string();
    assert!(err.contains("past the end") || err.contains("outside"), "{err}");
}

#[test]
fn an_xfs_copied_while_mounted_says_its_log_is_dirty_and_a_cleanly_unmounted_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("live.img");
    run("truncate", &["-s", "300M", s(&image)]);
    run("mkfs.xfs", &["-q", s(&image)]);
    let mnt = dir.path().join("mnt");
    let copy = dir.path().join("copy.img");
    {
        let dev = Loop::attach(&image, 0, 300 << 20);
        let _m = Mount::new(&dev.0, &mnt, "rw");
        for i in 0..200 {
            std::fs::write(mnt.join(format!("f{i}")), format!("{i}\n")).unwrap();
        }
        run("sync", &[]);
        // A crash-consistent copy: taken while the filesystem is mounted.
        run("cp", &["--sparse=always", s(&image), s(&copy)]);
    }
    let dirty = open(&copy).warning().unwrap_or_default();
    assert!(dirty.contains("log is dirty"), "{dirty:?}");
    assert_eq!(open(&image).warning(), None, "a cleanly unmounted XFS");
    let fresh = dir.path().join("fresh.img");
    run("truncate", &["-s", "300M", s(&fresh)]);
    run("mkfs.xfs", &["-q", s(&fresh)]);
    assert_eq!(open(&fresh).warning(), None, "a new XFS");
}
