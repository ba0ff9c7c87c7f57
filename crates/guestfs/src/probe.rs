//! What a volume holds, named as `blkid` names it (`ext4`, `xfs`, `LVM2_member`,
//! `crypto_LUKS`…), with its label and UUID: read from magic numbers in its first and last
//! sectors only, so probing a 1 TiB disk touches a few chunks.

use serde::Serialize;

use crate::bytes::{le16, le32, uuid_text};
use crate::reader::Slice;

/// What is on a volume, as `blkid` calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FsKind {
    /// ext2 (no journal).
    #[serde(rename = "ext2")]
    Ext2,
    /// ext3 (journal, no ext4 features).
    #[serde(rename = "ext3")]
    Ext3,
    /// ext4.
    #[serde(rename = "ext4")]
    Ext4,
    /// XFS.
    #[serde(rename = "xfs")]
    Xfs,
    /// btrfs.
    #[serde(rename = "btrfs")]
    Btrfs,
    /// FAT12/16/32.
    #[serde(rename = "vfat")]
    Vfat,
    /// NTFS.
    #[serde(rename = "ntfs")]
    Ntfs,
    /// Linux swap.
    #[serde(rename = "swap")]
    Swap,
    /// An LVM2 physical volume.
    #[serde(rename = "LVM2_member")]
    LvmMember,
    /// A LUKS1/LUKS2 encrypted volume.
    #[serde(rename = "crypto_LUKS")]
    Luks,
    /// A member of a Linux MD RAID array.
    #[serde(rename = "linux_raid_member")]
    RaidMember,
    /// Nothing known (empty, or a format vmvault does not recognise).
    #[serde(rename = "unknown")]
    Unknown,
}

impl FsKind {
    /// The `blkid` TYPE name.
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Vfat => "vfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Swap => "swap",
            FsKind::LvmMember => "LVM2_member",
            FsKind::Luks => "crypto_LUKS",
            FsKind::RaidMember => "linux_raid_member",
            FsKind::Unknown => "unknown",
        }
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The content.
    pub kind: FsKind,
    /// Its label, if it has one.
    pub label: Option<String>,
    /// Its UUID (or serial number) as `blkid` prints it.
    pub uuid: Option<String>,
}

/// A NUL-padded label, trimmed; `None` when empty.
fn text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let label = String::from_utf8_lossy(&b[..end]).trim().to_string();
    (!label.is_empty()).then_some(label)
}

/// Read `len` bytes at `at`, or `None` when the volume is too small or unreadable.
fn read(volume: &Slice, at: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    (at.checked_add(len as u64)? <= volume.len()).then_some(())?;
    volume.read_at(at, &mut buf).ok()?;
    Some(buf)
}

/// Look at a volume's first sectors (and last, for MD RAID) for a known format.
pub fn probe(volume: &Slice) -> Probe {
    let unknown = Probe { kind: FsKind::Unknown, label: None, uuid: None };
    let Some(mut head) = read(volume, 0, 4096.min(volume.len() as usize)) else { return unknown };
    let short = head.len() < 4096;
    // A volume shorter than 4 KiB reads as zeros past its end, so no check indexes out.
    head.resize(4096, 0);
    // MD first, as blkid does: a member with its superblock at the end (1.0, 0.90) starts with
    // the array's first bytes, which on RAID0/5 are only part of a filesystem.
    if crate::md::is_member(volume) {
        return Probe { kind: FsKind::RaidMember, label: None, uuid: None };
    }
    if le16(&head, 1080) == 0xEF53 {
        return ext(&head);
    }
    if head.starts_with(b"XFSB") {
        return Probe { kind: FsKind::Xfs, label: text(&head[108..120]), uuid: uuid_text(&head[32..48]) };
    }
    if head.starts_with(b"LUKS\xba\xbe") {
        let label = (head[6..8] == [0, 2]).then(|| text(&head[24..72])).flatten();
        return Probe { kind: FsKind::Luks, label, uuid: text(&head[168..208]) };
    }
    if let Some(uuid) = crate::lvm::pv_uuid(&head) {
        return Probe { kind: FsKind::LvmMember, label: None, uuid: Some(uuid) };
    }
    if !short && &head[4086..4096] == b"SWAPSPACE2" {
        return Probe {
            kind: FsKind::Swap,
            label: text(&head[1052..1068]),
            uuid: uuid_text(&head[1036..1052]),
        };
    }
    if head.get(3..11) == Some(b"NTFS    ") {
        let serial =
            head.get(0x48..0x50).map(|s| s.iter().rev().map(|c| format!("{c:02X}")).collect::<String>());
        return Probe { kind: FsKind::Ntfs, label: None, uuid: serial };
    }
    if head[510..512] == [0x55, 0xAA] && looks_like_fat(&head) {
        // FAT32 keeps its extended boot record at 0x40, FAT12/16 at 0x24.
        let at = if &head[82..87] == b"FAT32" { 0x43 } else { 0x27 };
        let id = le32(&head, at);
        let label = text(&head[at + 4..at + 15]).filter(|l| l != "NO NAME");
        return Probe {
            kind: FsKind::Vfat,
            label,
            uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)),
        };
    }
    if let Some(sb) = read(volume, 0x10000, 4096)
        && &sb[0x40..0x48] == b"_BHRfS_M"
    {
        return Probe {
            kind: FsKind::Btrfs,
            label: text(&sb[0x12B..0x22B]),
            uuid: uuid_text(&sb[0x20..0x30]),
        };
    }
    unknown
}

/// ext2, ext3 or ext4, told apart as blkid does: by the journal and by features ext3 lacks.
fn ext(head: &[u8]) -> Probe {
    let sb = &head[1024..2048];
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    // What ext3 knew: incompat filetype|recover|meta_bg, ro_compat sparse_super|large_file|btree_dir.
    let beyond_ext3 = incompat & !(0x0002 | 0x0004 | 0x0010) != 0 || ro_compat & !0x0007 != 0;
    let kind = if beyond_ext3 {
        FsKind::Ext4
    } else if compat & 0x0004 != 0 {
        FsKind::Ext3
    } else {
        FsKind::Ext2
    };
    Probe { kind, label: text(&sb[0x78..0x88]), uuid: uuid_text(&sb[0x68..0x78]) }
}

fn looks_like_fat(boot: &[u8]) -> bool {
    let bytes_per_sector = le16(boot, 11);
    let per_cluster = boot[13];
    let reserved = le16(boot, 14);
    let fats = boot[16];
    matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && per_cluster.is_power_of_two()
        && reserved >= 1
        && (1..=2).contains(&fats)
        && (boot.get(54..57) == Some(b"FAT") || boot.get(82..85) == Some(b"FAT"))
}
