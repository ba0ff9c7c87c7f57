//! File restore from the disk layouts installers make, built with the real tools and filled
//! by the kernel (see `testkit::guest_disks`), backed up into a vault and read back out of
//! the point: RHEL's (ESP, XFS /boot, LVM with an XFS root and swap), Ubuntu Server's (ESP,
//! ext4 /boot, LVM with an ext4 root), and a volume group striped across two disks of one VM.
//! Every extraction is compared with the kernel's read-only mount of the same filesystem.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use engine::files::PointDisk;
use guestfs::FsKind;
use guestfs::extract::extract;
use guestfs::tree::resolve;
use testkit::guest_disks::{
    Loop, Mount, Node, differences, fill_linux_root, lv_create, lv_extent, partition, run, tree, vg_create,
    write_lv,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The kernel's view of the filesystem on `dev`, mounted read-only.
fn reference(dev: &Loop, at: &Path) -> BTreeMap<String, Node> {
    let _mount = Mount::new(&dev.0, at, "ro");
    tree(at)
}

/// Make a filesystem on `dev` with `mkfs` and fill it through the kernel with `fill`.
fn make_fs(dev: &Loop, at: &Path, mkfs: &[&str], fill: impl FnOnce(&Path)) {
    let mut args: Vec<&str> = mkfs[1..].to_vec();
    args.push(&dev.0);
    run(mkfs[0], &args);
    let _mount = Mount::new(&dev.0, at, "rw");
    fill(at);
}

fn fill_boot(at: &Path) {
    std::fs::create_dir_all(at.join("loader/entries")).unwrap();
    std::fs::create_dir_all(at.join("grub2")).unwrap();
    let kernel: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect();
    std::fs::write(at.join("vmlinuz-6.1.0"), kernel).unwrap();
    std::fs::write(at.join("grub2/grub.cfg"), "set timeout=5\n").unwrap();
    std::fs::write(at.join("loader/entries/linux.conf"), "title Linux\nlinux /vmlinuz-6.1.0\n").unwrap();
    run("sync", &[]);
}

/// An ESP, made and filled with dosfstools and mtools (this kernel has no vfat driver).
fn make_esp(dev: &Loop, dir: &Path) {
    run("mkfs.vfat", &["-F", "16", "-n", "ESP", &dev.0]);
    let loader = dir.join("BOOTX64.EFI");
    std::fs::write(&loader, vec![0x4d; 70_000]).unwrap();
    run("mmd", &["-i", &dev.0, "::/EFI", "::/EFI/BOOT"]);
    run("mcopy", &["-i", &dev.0, s(&loader), "::/EFI/BOOT/"]);
}

/// A disk as an installer lays it out: ESP, /boot (`boot_mkfs`), and an LVM PV holding VG
/// `vg` with a root LV (`root_mkfs`) and a swap LV. Returns the image and the kernel's view
/// of /boot and of the root.
struct Installed {
    image: PathBuf,
    boot: BTreeMap<String, Node>,
    root: BTreeMap<String, Node>,
}

fn installed(dir: &Path, vg: &str, boot_mkfs: &[&str], root_mkfs: &[&str], far_times: bool) -> Installed {
    let image = dir.join(format!("{vg}.raw"));
    run("truncate", &["-s", "1400M", s(&image)]);
    let parts = partition(
        &image,
        "label: gpt\n\
         start=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System Partition\"\n\
         size=622592, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
         type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n",
    );
    let mnt = dir.join("mnt");
    let esp = Loop::attach(&image, parts[0].0, parts[0].1);
    make_esp(&esp, dir);
    let boot_dev = Loop::attach(&image, parts[1].0, parts[1].1);
    make_fs(&boot_dev, &mnt, boot_mkfs, fill_boot);
    let boot = reference(&boot_dev, &mnt);

    let pv = Loop::attach(&image, parts[2].0, parts[2].1);
    vg_create(vg, &[&pv]);
    lv_create(vg, "root", "700M", &[]);
    lv_create(vg, "swap", "64M", &[]);
    let (at, len) = lv_extent(vg, "root", &pv);
    let root_dev = Loop::attach(&image, parts[2].0 + at, len);
    make_fs(&root_dev, &mnt, root_mkfs, |m| fill_linux_root(m, vg, far_times));
    let root = reference(&root_dev, &mnt);
    let (at, len) = lv_extent(vg, "swap", &pv);
    let swap_dev = Loop::attach(&image, parts[2].0 + at, len);
    run("mkswap", &["-q", "-L", "swap", &swap_dev.0]);
    drop((esp, boot_dev, root_dev, swap_dev));
    // Forget the VG before its PV goes away, so the next test's LVM scan does not see it.
    testkit::guest_disks::lvm("vgchange", &["-q", "--driverloaded", "n", "-an", vg]);
    drop(pv);
    Installed { image, boot, root }
}

/// What `files parts` would list, reduced to (id, type, fs, OS root).
type Summary = Vec<(String, String, FsKind, bool)>;

/// A summary without partition types: (id, fs, OS root).
fn kinds(found: &Summary) -> Vec<(&str, FsKind, bool)> {
    found.iter().map(|(id, _, fs, root)| (id.as_str(), *fs, *root)).collect()
}

fn summary(disk: &PointDisk) -> Summary {
    let layout = disk.layout().unwrap();
    layout
        .volumes
        .iter()
        .map(|v| {
            let kind = v.part_type.clone().or(v.lv_type.clone()).unwrap_or_default();
            (v.id.clone(), kind, v.fs, v.os_root)
        })
        .collect()
}

/// Check the default volume is the root, `/etc/hostname` reads through it, `/etc/os-release`
/// resolves through its link, and whole trees come out as the kernel sees them.
fn check_installed(disk: PointDisk, out: PathBuf, hostname: &str, installed: &Installed) -> Summary {
    let found = summary(&disk);
    let (volume, fs) = disk.filesystem(None).unwrap();
    assert!(volume.os_root, "{volume:?}");
    let mut hostname_bytes = Vec::new();
    fs.read_file(b"/etc/hostname", &mut hostname_bytes).unwrap();
    assert_eq!(hostname_bytes, format!("{hostname}\n").as_bytes());
    let os_release = resolve(fs.as_ref(), b"/etc/os-release").unwrap();
    assert_eq!(os_release, b"/usr/lib/os-release");

    let report = extract(fs.as_ref(), &[b"/".to_vec()], &out.join("root")).unwrap();
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    let diff = differences(&installed.root, &tree(&out.join("root")));
    assert!(diff.is_empty(), "root differs from the kernel's view:\n{}", diff.join("\n"));

    let (_, boot) = disk.filesystem(Some("2")).unwrap();
    let report = extract(boot.as_ref(), &[b"/".to_vec()], &out.join("boot")).unwrap();
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    let diff = differences(&installed.boot, &tree(&out.join("boot")));
    assert!(diff.is_empty(), "/boot differs from the kernel's view:\n{}", diff.join("\n"));
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_rhel_layout_gives_its_xfs_root_on_lvm_file_for_file() {
    let lab = Lab::new(true).await;
    let rhel =
        installed(lab.dir.path(), "rhel", &["mkfs.xfs", "-q", "-L", "boot"], &["mkfs.xfs", "-q"], true);
    lab.register("rhel9", &[("vda", &rhel.image)]).await;
    lab.backup("rhel9").await;
    let out = lab.path("out");
    let rhel = Arc::new(rhel);
    let found = with_disk(&lab, "rhel9", "vda", {
        let rhel = Arc::clone(&rhel);
        move |disk| check_installed(disk, out, "rhel", &rhel)
    })
    .await;
    let text = |a: &str, b: &str, fs, root| (a.to_string(), b.to_string(), fs, root);
    assert_eq!(
        found,
        [
            text("1", "EFI System", FsKind::Vfat, false),
            text("2", "Linux filesystem", FsKind::Xfs, false),
            text("3", "Linux LVM", FsKind::LvmMember, false),
            text("rhel/root", "linear", FsKind::Xfs, true),
            text("rhel/swap", "linear", FsKind::Swap, false),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ubuntu_server_layout_gives_its_ext4_root_on_lvm_file_for_file() {
    let lab = Lab::new(true).await;
    let ubuntu = installed(
        lab.dir.path(),
        "ubuntu-vg",
        &["mkfs.ext4", "-q", "-L", "boot"],
        &["mkfs.ext4", "-q"],
        true,
    );
    lab.register("ubuntu", &[("vda", &ubuntu.image)]).await;
    lab.backup("ubuntu").await;
    let out = lab.path("out");
    let ubuntu = Arc::new(ubuntu);
    let found = with_disk(&lab, "ubuntu", "vda", {
        let ubuntu = Arc::clone(&ubuntu);
        move |disk| check_installed(disk, out, "ubuntu-vg", &ubuntu)
    })
    .await;
    let kinds = kinds(&found);
    assert_eq!(
        kinds,
        [
            ("1", FsKind::Vfat, false),
            ("2", FsKind::Ext4, false),
            ("3", FsKind::LvmMember, false),
            ("ubuntu-vg/root", FsKind::Ext4, true),
            ("ubuntu-vg/swap", FsKind::Swap, false),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_group_across_two_disks_reads_its_striped_and_spanning_lvs_and_names_a_missing_pv() {
    let lab = Lab::new(false).await;
    let (vdb, vdc) = (lab.path("vdb.raw"), lab.path("vdc.raw"));
    for d in [&vdb, &vdc] {
        run("truncate", &["-s", "200M", s(d)]);
    }
    let (b, c) = (Loop::attach(&vdb, 0, 200 << 20), Loop::attach(&vdc, 0, 200 << 20));
    vg_create("datavg", &[&b, &c]);
    lv_create("datavg", "striped", "96M", &["-i2", "-I64k"]);
    lv_create("datavg", "spanning", "248M", &[]);
    let mut sources = Vec::new();
    for (lv, size) in [("striped", "96M"), ("spanning", "248M")] {
        let src = lab.path(&format!("src-{lv}"));
        std::fs::create_dir_all(src.join("data")).unwrap();
        let bytes: Vec<u8> =
            (0..20_000_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 13) as u8).collect();
        std::fs::write(src.join("data/table.ibd"), bytes).unwrap();
        std::fs::write(src.join("data/README"), format!("the {lv} LV\n")).unwrap();
        let image = lab.path(&format!("{lv}.ext4"));
        run("mkfs.ext4", &["-q", "-F", "-L", lv, "-d", s(&src), s(&image), size]);
        write_lv("datavg", lv, &image, &[&b, &c]);
        std::fs::remove_file(&image).unwrap();
        sources.push((lv, src));
    }
    testkit::guest_disks::lvm("vgchange", &["-q", "--driverloaded", "n", "-an", "datavg"]);
    drop((b, c));

    lab.register("db", &[("vdb", &vdb), ("vdc", &vdc)]).await;
    lab.backup("db").await;
    let out = lab.path("out");
    let (found, groups) = with_disk(&lab, "db", "vdb", {
        let out = out.clone();
        let sources = sources.clone();
        move |disk| {
            for (lv, src) in &sources {
                let (_, fs) = disk.filesystem(Some(&format!("datavg/{lv}"))).unwrap();
                let to = out.join(lv);
                let report = extract(fs.as_ref(), &[b"/data".to_vec()], &to).unwrap();
                assert!(report.errors.is_empty(), "{report:?}");
                let diff = differences(&tree(src), &tree(&to));
                assert!(diff.is_empty(), "{lv} differs from its source:\n{}", diff.join("\n"));
            }
            let layout = disk.layout().unwrap();
            (summary(&disk), layout.groups)
        }
    })
    .await;
    let text = |a: &str, b: &str, fs| (a.to_string(), b.to_string(), fs, false);
    assert_eq!(
        found,
        [
            text("0", "", FsKind::LvmMember),
            text("datavg/striped", "striped", FsKind::Ext4),
            text("datavg/spanning", "linear", FsKind::Ext4),
        ]
    );
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].pvs, ["vdb:0", "vdc:0"]);

    // The same disk without its partner: the LVs are listed with the PV they miss, and no
    // volume is chosen for the operator.
    let alone =
        guestfs::GuestDisk { label: "vdb".into(), reader: Arc::new(std::fs::File::open(&vdb).unwrap()) };
    let layout = guestfs::scan(&[alone], 0).unwrap();
    let striped = layout.find("datavg/striped").unwrap();
    assert!(!striped.readable(), "{striped:?}");
    let note = striped.note.clone().unwrap_or_default();
    assert!(note.contains("not in this point") && note.contains("missing PVs"), "{note}");
    let err = layout.default_volume().unwrap_err().to_string();
    assert!(err.contains("datavg/striped") && err.contains("datavg/spanning"), "{err}");
}

/// Kind, times and bytes only: NTFS has no Unix modes or owners (vmvault and ntfs-3g each
/// make up their own), and its compressed files look sparse to `stat`.
/// A tree without what NTFS does not have as Unix has it: modes, owners, holes, and the
/// `user.*` attributes through which ntfs-3g shows alternate data streams (vmvault writes
/// those as `NAME:STREAM` files with `--streams`, checked on their own).
fn without_unix(t: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    t.into_iter()
        .map(|(k, n)| (k, Node { mode: 0, owner: (0, 0), sparse: false, xattrs: BTreeMap::new(), ..n }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_disk_gives_fragmented_compressed_case_twin_and_linked_files_as_ntfs_3g_shows_them() {
    let lab = Lab::new(true).await;
    let image = lab.path("win.raw");
    run("truncate", &["-s", "400M", s(&image)]);
    let parts = partition(
        &image,
        "label: gpt\n\
         start=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI system partition\"\n\
         size=32768, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE, name=\"Microsoft reserved partition\"\n\
         type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"Basic data partition\"\n",
    );
    let esp = Loop::attach(&image, parts[0].0, parts[0].1);
    make_esp(&esp, lab.dir.path());
    let c = Loop::attach(&image, parts[2].0, parts[2].1);
    run("mkntfs", &["-q", "-f", "-F", "-L", "Windows", &c.0]);
    let mnt = lab.path("mnt");
    {
        let _m = Mount::ntfs_3g(&c.0, &mnt, "compression");
        testkit::guest_disks::fill_windows(&mnt);
    }
    let (mut want, stream_want) = {
        let _m = Mount::ntfs_3g(&c.0, &mnt, "ro");
        let report = mnt.join("Users/Ana/Documents/report.docx");
        let stream = run("getfattr", &["--only-values", "-n", "user.Zone.Identifier", s(&report)]);
        (without_unix(tree(&mnt)), stream)
    };
    assert_eq!(stream_want, "[ZoneTransfer] ZoneId=3");
    // ntfs-3g shows a junction to C:\Users\Ana\Documents under its own mount point; in the
    // guest (and so in vmvault) it is /Users/Ana/Documents.
    let junction = want.get_mut("Users/Ana/Docs").unwrap();
    junction.data = junction.data.strip_prefix(mnt.as_os_str().as_encoded_bytes()).unwrap().to_vec();
    assert_eq!(junction.data, b"/Users/Ana/Documents");
    // The fragmented file really spills its runs into an attribute list.
    let info = run("ntfsinfo", &["-v", "-F", "/Program Files/App/data.pak", &c.0]);
    let dumped: Vec<&str> = info
        .lines()
        .filter(|l| l.contains("Dumping") || l.contains("llocated") || l.contains("0x"))
        .collect();
    assert!(info.contains("$ATTRIBUTE_LIST"), "data.pak has no attribute list:\n{}", dumped.join("\n"));
    drop((esp, c));
    lab.register("win", &[("sda", &image)]).await;
    lab.backup("win").await;
    let out = lab.path("out");
    let (found, got) = with_disk(&lab, "win", "sda", {
        let out = out.clone();
        move |disk| {
            let (volume, fs) = disk.filesystem(None).unwrap();
            assert_eq!(volume.id, "3");
            let report = extract(fs.as_ref(), &[b"/".to_vec()], &out).unwrap();
            assert!(report.errors.is_empty(), "{report:?}");
            // Alternate data streams: listed, and written beside their file with `streams`.
            let doc = b"/Users/Ana/Documents/report.docx";
            assert_eq!(fs.streams(doc).unwrap(), [(b"Zone.Identifier".to_vec(), 23)]);
            let with_streams = out.with_file_name("out-streams");
            let options = guestfs::extract::Options { streams: true, ..Default::default() };
            let report =
                guestfs::extract::extract_with(fs.as_ref(), &[doc.to_vec()], &with_streams, options).unwrap();
            assert_eq!((report.files, report.streams), (1, 1), "{report:?}");
            let stream = std::fs::read_to_string(with_streams.join("report.docx:Zone.Identifier")).unwrap();
            assert_eq!(stream, "[ZoneTransfer] ZoneId=3");
            (summary(&disk), without_unix(tree(&out)))
        }
    })
    .await;
    let kinds: Vec<(&str, &str, FsKind, bool)> =
        found.iter().map(|(id, t, fs, root)| (id.as_str(), t.as_str(), *fs, *root)).collect();
    assert_eq!(
        kinds,
        [
            ("1", "EFI System", FsKind::Vfat, false),
            ("2", "Microsoft reserved", FsKind::Unknown, false),
            ("3", "Microsoft basic data", FsKind::Ntfs, true),
        ]
    );
    let diff = differences(&want, &got);
    assert!(diff.is_empty(), "C: differs from ntfs-3g's view:\n{}", diff.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fedora_layout_gives_its_btrfs_root_and_home_subvolumes_compressed_as_the_kernel_shows_them() {
    let lab = Lab::new(true).await;
    let image = lab.path("fedora.raw");
    run("truncate", &["-s", "1200M", s(&image)]);
    let parts = partition(
        &image,
        "label: gpt\n\
         start=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         size=622592, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
         type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n",
    );
    let mnt = lab.path("mnt");
    let esp = Loop::attach(&image, parts[0].0, parts[0].1);
    make_esp(&esp, lab.dir.path());
    let boot = Loop::attach(&image, parts[1].0, parts[1].1);
    make_fs(&boot, &mnt, &["mkfs.ext4", "-q", "-L", "boot"], fill_boot);
    let dev = Loop::attach(&image, parts[2].0, parts[2].1);
    run("mkfs.btrfs", &["-q", "-f", "-L", "fedora", &dev.0]);
    {
        let _top = Mount::new(&dev.0, &mnt, "compress=zstd");
        run("btrfs", &["-q", "subvolume", "create", s(&mnt.join("root"))]);
        run("btrfs", &["-q", "subvolume", "create", s(&mnt.join("home"))]);
        fill_linux_root(&mnt.join("root"), "fedora", true);
        std::fs::write(
            mnt.join("root/etc/fstab"),
            "UUID=f00d / btrfs subvol=root,compress=zstd:1 0 0\nUUID=f00d /home btrfs subvol=home 0 0\n",
        )
        .unwrap();
        // A snapshot of the root (as snapper keeps them) sorts before it and holds an OS
        // root too; its fstab names `root`, not itself.
        std::fs::create_dir_all(mnt.join(".snapshots/1")).unwrap();
        run(
            "btrfs",
            &[
                "-q",
                "subvolume",
                "snapshot",
                "-r",
                s(&mnt.join("root")),
                s(&mnt.join(".snapshots/1/snapshot")),
            ],
        );
        std::fs::create_dir_all(mnt.join("home/ana")).unwrap();
        std::fs::write(mnt.join("home/ana/notes.txt"), "zstd compresses this line well\n".repeat(20_000))
            .unwrap();
        for algorithm in ["lzo", "zlib"] {
            run("mount", &["-o", &format!("remount,compress={algorithm}"), s(&mnt)]);
            let text = format!("{algorithm} compresses this line well\n").repeat(30_000);
            std::fs::write(mnt.join(format!("home/ana/{algorithm}.txt")), text).unwrap();
        }
        run("sync", &[]);
    }
    let view = |subvol: &str| {
        let _m = Mount::new(&dev.0, &mnt, &format!("ro,subvol={subvol}"));
        tree(&mnt)
    };
    let (root_want, home_want) = (view("root"), view("home"));
    drop((esp, boot, dev));
    lab.register("fedora", &[("vda", &image)]).await;
    lab.backup("fedora").await;
    let out = lab.path("out");
    let (found, root_got, home_got) = with_disk(&lab, "fedora", "vda", {
        let out = out.clone();
        move |disk| {
            let (volume, fs) = disk.filesystem(None).unwrap();
            assert_eq!(volume.id, "3:root");
            let report = extract(fs.as_ref(), &[b"/".to_vec()], &out.join("root")).unwrap();
            assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
            let (_, home) = disk.filesystem(Some("3:home")).unwrap();
            let report = extract(home.as_ref(), &[b"/".to_vec()], &out.join("home")).unwrap();
            assert!(report.errors.is_empty(), "{report:?}");
            (summary(&disk), tree(&out.join("root")), tree(&out.join("home")))
        }
    })
    .await;
    let kinds = kinds(&found);
    assert_eq!(
        kinds,
        [
            ("1", FsKind::Vfat, false),
            ("2", FsKind::Ext4, false),
            ("3", FsKind::Btrfs, false),
            ("3:.snapshots/1/snapshot", FsKind::Btrfs, false),
            ("3:home", FsKind::Btrfs, false),
            ("3:root", FsKind::Btrfs, true),
        ]
    );
    assert_eq!(found[2].1, "Linux root (x86-64)");
    let diff = differences(&root_want, &root_got);
    assert!(diff.is_empty(), "root differs from the kernel's view:\n{}", diff.join("\n"));
    let diff = differences(&home_want, &home_got);
    assert!(diff.is_empty(), "home differs from the kernel's view:\n{}", diff.join("\n"));
}
