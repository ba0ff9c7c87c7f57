//! Which filesystems a disk holds: the partition table, then each partition's magic numbers.
//! Unknown filesystems are listed as such, not errors.

use std::sync::Arc;

use serde::Serialize;

use crate::error::{GuestError, Result};
use crate::partition::{TableKind, read_table};
use crate::reader::{BlockReader, Slice};
use crate::tree::GuestFs;

/// A filesystem type vmvault can read, or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext2, ext3, ext4.
    Ext,
    /// FAT12/16/32.
    Fat,
    /// NTFS.
    Ntfs,
    /// Anything else (swap, LVM, empty…).
    Unknown,
}

/// A partition (or the whole disk) and what is on it.
#[derive(Clone, Debug, Serialize)]
pub struct Volume {
    /// Partition number; 0 for a filesystem on the whole disk.
    pub number: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition type, when there is a table.
    pub part_type: Option<String>,
    /// GPT partition name.
    pub part_name: Option<String>,
    /// Filesystem found.
    pub fs: FsKind,
    /// Filesystem label.
    pub label: Option<String>,
}

/// Look at a volume's first sectors for a known filesystem.
pub fn detect(volume: &Slice) -> FsKind {
    let mut head = vec![0u8; 4096.min(volume.len() as usize)];
    if volume.read_at(0, &mut head).is_err() {
        return FsKind::Unknown;
    }
    if head.get(1080..1082) == Some(&[0x53, 0xEF]) {
        return FsKind::Ext;
    }
    if head.get(3..11) == Some(b"NTFS    ") {
        return FsKind::Ntfs;
    }
    if head.get(510..512) == Some(&[0x55, 0xAA]) && looks_like_fat(&head) {
        return FsKind::Fat;
    }
    FsKind::Unknown
}

fn looks_like_fat(boot: &[u8]) -> bool {
    let bytes_per_sector = u16::from_le_bytes([boot[11], boot[12]]);
    let per_cluster = boot[13];
    let reserved = u16::from_le_bytes([boot[14], boot[15]]);
    let fats = boot[16];
    matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && per_cluster.is_power_of_two()
        && reserved >= 1
        && (1..=2).contains(&fats)
        && (boot.get(54..57) == Some(b"FAT") || boot.get(82..85) == Some(b"FAT"))
}

/// The table kind and every volume of a disk, with the filesystem each holds.
pub fn volumes(disk: Arc<dyn BlockReader>) -> Result<(TableKind, Vec<Volume>)> {
    let whole = Slice::whole(Arc::clone(&disk));
    let (table, parts) = read_table(&whole)?;
    let mut out: Vec<Volume> = if parts.is_empty() {
        vec![Volume {
            number: 0,
            start: 0,
            size: whole.len(),
            part_type: None,
            part_name: None,
            fs: detect(&whole),
            label: None,
        }]
    } else {
        parts
            .into_iter()
            .map(|p| {
                let slice = Slice::new(Arc::clone(&disk), p.start, p.size);
                Volume {
                    number: p.number,
                    start: p.start,
                    size: p.size,
                    part_type: Some(p.type_name),
                    part_name: p.name,
                    fs: detect(&slice),
                    label: None,
                }
            })
            .collect()
    };
    for volume in &mut out {
        if volume.fs != FsKind::Unknown {
            volume.label = open_volume(Arc::clone(&disk), volume).ok().and_then(|fs| fs.label());
        }
    }
    Ok((table, out))
}

/// Open the filesystem of a volume.
pub fn open_volume(disk: Arc<dyn BlockReader>, volume: &Volume) -> Result<Box<dyn GuestFs>> {
    let slice = Slice::new(disk, volume.start, volume.size);
    Ok(match volume.fs {
        FsKind::Ext => Box::new(crate::ext::ExtFs::open(slice)?),
        FsKind::Fat => Box::new(crate::fat::FatFs::open(slice)?),
        FsKind::Ntfs => Box::new(crate::ntfs::NtfsFs::open(slice)?),
        FsKind::Unknown => {
            return Err(GuestError::Unsupported {
                what: format!("partition {}", volume.number),
                reason: "no filesystem vmvault can read (ext2/3/4, FAT, NTFS)".into(),
            });
        }
    })
}

/// The volume `files` commands use when none is named: the largest readable filesystem.
pub fn default_volume(volumes: &[Volume]) -> Option<&Volume> {
    volumes.iter().filter(|v| v.fs != FsKind::Unknown).max_by_key(|v| v.size)
}
