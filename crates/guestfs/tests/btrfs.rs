//! A btrfs over two disks of one VM (`mkfs.btrfs` on two loop devices, filled through the
//! kernel's driver): with both disks in the point it reads as the kernel mounts it, whatever
//! the data profile; with one disk, RAID1 still reads whole (every chunk has a copy on it),
//! RAID0 says which device is missing and writes nothing wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use guestfs::extract::extract;
use guestfs::{BlockReader, GuestDisk};
use testkit::guest_disks::{Loop, Mount, Node, differences, fill_linux_root, run, tree};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn disk(label: &str, image: &Path) -> GuestDisk {
    let reader: Arc<dyn BlockReader> = Arc::new(std::fs::File::open(image).unwrap());
    GuestDisk { label: label.into(), reader }
}

/// Two 300 MiB disks holding one btrfs with data `profile` (metadata RAID1), filled like a
/// Linux root; the kernel's read-only view of it.
fn two_disk_btrfs(dir: &Path, profile: &str) -> (Vec<GuestDisk>, BTreeMap<String, Node>) {
    let images: Vec<_> = ["a", "b"].iter().map(|n| dir.join(format!("{profile}-{n}.img"))).collect();
    let loops: Vec<Loop> = images
        .iter()
        .map(|image| {
            run("truncate", &["-s", "300M", s(image)]);
            Loop::attach(image, 0, 300 << 20)
        })
        .collect();
    run("mkfs.btrfs", &["-q", "-f", "-d", profile, "-m", "raid1", &loops[0].0, &loops[1].0]);
    let opts = |mode: &str| format!("{mode},device={},device={}", loops[0].0, loops[1].0);
    let mnt = dir.join(format!("mnt-{profile}"));
    {
        let _m = Mount::new(&loops[0].0, &mnt, &opts("rw"));
        fill_linux_root(&mnt, profile, true);
    }
    let want = {
        let _m = Mount::new(&loops[0].0, &mnt, &opts("ro"));
        tree(&mnt)
    };
    drop(loops);
    (vec![disk("vda", &images[0]), disk("vdb", &images[1])], want)
}

#[test]
fn a_btrfs_over_two_disks_reads_whole_and_with_one_disk_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    for profile in ["raid1", "raid0"] {
        let (disks, want) = two_disk_btrfs(dir.path(), profile);
        let layout = guestfs::scan(&disks, 0).unwrap();
        let root = layout.default_volume().unwrap();
        assert!(root.note.as_deref().unwrap_or_default().contains("vdb:0"), "{profile}: {:?}", root.note);
        let fs = guestfs::open_volume(root).unwrap();
        assert_eq!(fs.warning(), None, "{profile}: both devices are there");
        let out = dir.path().join(format!("out-{profile}"));
        let report = extract(fs.as_ref(), &[b"/".to_vec()], &out).unwrap();
        assert!(report.errors.is_empty(), "{profile}: {report:?}");
        let diff = differences(&want, &tree(&out));
        assert!(
            diff.is_empty(),
            "{profile} over two disks differs from the kernel's view:\n{}",
            diff.join("\n")
        );

        // The first disk alone.
        let alone = guestfs::scan(&disks[..1], 0).unwrap();
        let fs = guestfs::open_volume(alone.default_volume().unwrap()).unwrap();
        let warning = fs.warning().unwrap_or_default();
        assert!(warning.contains("only 1 of its 2 devices"), "{profile}: {warning:?}");
        let out = dir.path().join(format!("alone-{profile}"));
        let report = extract(fs.as_ref(), &[b"/".to_vec()], &out).unwrap();
        let got = tree(&out);
        if profile == "raid1" {
            assert!(report.errors.is_empty(), "{report:?}");
            let diff = differences(&want, &got);
            assert!(diff.is_empty(), "RAID1 from one disk differs:\n{}", diff.join("\n"));
        } else {
            // Striped data: files with a stripe on the missing device fail, naming it; what was
            // written is right.
            assert!(!report.errors.is_empty(), "RAID0 data without its second device");
            assert!(report.errors.iter().all(|e| e.contains("not in this point")), "{:?}", report.errors);
            assert!(!got.contains_key("home/ana/big.bin"), "a file missing half its stripes was written");
            for (path, node) in got.iter().filter(|(_, n)| n.kind == "file") {
                assert_eq!(Some(&node.data), want.get(path).map(|w| &w.data), "{path}");
            }
        }
        for image in ["a", "b"] {
            std::fs::remove_file(dir.path().join(format!("{profile}-{image}.img"))).unwrap();
        }
    }
}
