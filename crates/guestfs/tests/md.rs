//! Linux MD RAID members: a RAID1 member (metadata 1.2, and 1.0 as a mirrored /boot has it)
//! reads as the filesystem the array holds; a RAID5 member is named, and never read as
//! something else.
//!
//! This kernel has no md driver, so `mdadm --create` cannot write a superblock here: the test
//! writes one by the kernel's layout (`struct mdp_superblock_1`) and has the real `mdadm
//! --examine` read it back and call its checksum correct before vmvault sees it. The
//! filesystem inside is made by mkfs.ext4 from a source tree.

use std::path::Path;
use std::sync::Arc;

use guestfs::extract::extract;
use guestfs::{BlockReader, FsKind, GuestDisk};
use testkit::guest_disks::{Loop, differences, partition, run, tree};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An MD 1.x superblock: `level`, two devices, this one device 0, the data at
/// `data_offset..+data_size` and the superblock itself at `super_offset` (sectors).
fn superblock(level: u32, data_offset: u64, data_size: u64, super_offset: u64) -> Vec<u8> {
    let mut sb = vec![0u8; 4096];
    let put32 = |sb: &mut Vec<u8>, at: usize, v: u32| sb[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |sb: &mut Vec<u8>, at: usize, v: u64| sb[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut sb, 0, 0xA92B_4EFC);
    put32(&mut sb, 4, 1);
    sb[16..32].copy_from_slice(&[0x5a; 16]);
    sb[32..40].copy_from_slice(b"host:md0");
    put64(&mut sb, 64, 1_700_000_000);
    put32(&mut sb, 72, level);
    put32(&mut sb, 76, if level == 5 { 2 } else { 0 });
    put64(&mut sb, 80, data_size);
    put32(&mut sb, 88, if level == 5 { 1024 } else { 0 });
    put32(&mut sb, 92, if level == 5 { 3 } else { 2 });
    put64(&mut sb, 128, data_offset);
    put64(&mut sb, 136, data_size);
    put64(&mut sb, 144, super_offset);
    sb[168..184].copy_from_slice(&[0xa5; 16]);
    put64(&mut sb, 192, 1_700_000_100);
    put64(&mut sb, 200, 42);
    put64(&mut sb, 208, u64::MAX);
    let devices = if level == 5 { 3 } else { 2 };
    put32(&mut sb, 220, devices);
    for i in 0..devices as usize {
        sb[256 + 2 * i..258 + 2 * i].copy_from_slice(&(i as u16).to_le_bytes());
    }
    let end = 256 + 2 * devices as usize;
    // The kernel's sum: 32-bit words, then a last 16-bit one when the length ends in half a word.
    let word = |c: &[u8]| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        u64::from(u32::from_le_bytes(w))
    };
    let mut sum: u64 = sb[..end].chunks(4).map(word).sum();
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    put32(&mut sb, 216, sum as u32);
    sb
}

fn write_at(image: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(image).unwrap().write_all_at(bytes, at).unwrap();
}

#[test]
fn a_raid1_member_reads_as_its_array_and_a_raid5_member_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("usr/lib")).unwrap();
    std::fs::write(src.join("etc/hostname"), "mirrored\n").unwrap();
    std::fs::write(src.join("usr/lib/os-release"), "ID=test\n").unwrap();
    std::fs::write(src.join("etc/big.bin"), vec![7u8; 3 << 20]).unwrap();
    let fs_image = dir.path().join("inner.ext4");
    run("mkfs.ext4", &["-q", "-F", "-d", s(&src), s(&fs_image), "24M"]);
    let inner = std::fs::read(&fs_image).unwrap();
    let sectors = inner.len() as u64 / 512;

    // (metadata, level, data offset, superblock offset) in sectors of a 40 MiB partition.
    let part_sectors = 40 * 2048;
    let end_super = (part_sectors - 16) & !7;
    for (metadata, level, data_offset, super_offset) in
        [("1.2", 1, 2048, 8), ("1.0", 1, 0, end_super), ("1.2", 5, 2048, 8)]
    {
        let image = dir.path().join(format!("md-{metadata}-{level}.raw"));
        run("truncate", &["-s", "48M", s(&image)]);
        let parts = partition(
            &image,
            "label: gpt\nstart=2048, size=81920, type=A19D880F-05FC-4D3B-A006-743F0F84911E\n",
        );
        let start = parts[0].0;
        write_at(&image, start + super_offset * 512, &superblock(level, data_offset, sectors, super_offset));
        write_at(&image, start + data_offset * 512, &inner);

        // mdadm itself reads the superblock and finds its checksum right.
        let examined = {
            let dev = Loop::attach(&image, start, parts[0].1);
            let out = std::process::Command::new("mdadm").args(["--examine", &dev.0]).output().unwrap();
            format!(
                "{:?} {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        assert!(examined.contains(&format!("Version : {metadata}")), "{examined}");
        assert!(examined.contains(&format!("Raid Level : raid{level}")), "{examined}");
        assert!(examined.contains("correct"), "{examined}");

        let reader: Arc<dyn BlockReader> = Arc::new(std::fs::File::open(&image).unwrap());
        let disks = [GuestDisk { label: "vda".into(), reader }];
        let layout = guestfs::scan(&disks, 0).unwrap();
        let v = &layout.volumes[0];
        let note = v.note.clone().unwrap_or_default();
        if level == 1 {
            assert_eq!(v.fs, FsKind::Ext4, "{metadata}: {note}");
            assert!(note.contains("inside RAID1 MD array host:md0") && note.contains(metadata), "{note}");
            let root = layout.default_volume().unwrap();
            let fs = guestfs::open_volume(root).unwrap();
            let out = dir.path().join(format!("out-{metadata}"));
            let report = extract(fs.as_ref(), &[b"/etc".to_vec(), b"/usr".to_vec()], &out).unwrap();
            assert!(report.errors.is_empty(), "{report:?}");
            let diff = differences(&tree(&src), &tree(&out));
            assert!(diff.is_empty(), "RAID1 {metadata} differs from its source:\n{}", diff.join("\n"));
        } else {
            assert_eq!(v.fs, FsKind::RaidMember);
            assert!(note.contains("RAID5") && note.contains("does not assemble"), "{note}");
            let err = layout.default_volume().unwrap_err().to_string();
            assert!(err.contains("linux_raid_member"), "{err}");
        }
        std::fs::remove_file(&image).unwrap();
    }
}
