//! XFS directories: short form (inside the inode) and the block, leaf and node forms, whose
//! entries all live in data blocks below the 32 GiB leaf offset — so listing any of them
//! means reading those data blocks; the hash index above is not needed for a listing.

use super::disk::Disk;
use super::inode::{Format, Inode, extents, read_mapped};
use crate::bytes::{be16, be32, be64};
use crate::error::{GuestError, Result};

/// One name in a directory.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// The name (raw bytes).
    pub name: Vec<u8>,
    /// The inode it names.
    pub ino: u64,
}

const BLOCK_MAGIC: u32 = 0x5844_3242; // XD2B
const DATA_MAGIC: u32 = 0x5844_3244; // XD2D
const BLOCK_CRC_MAGIC: u32 = 0x5844_4233; // XDB3
const DATA_CRC_MAGIC: u32 = 0x5844_4433; // XDD3
/// Directory data lives below this byte offset of the directory; leaf and free-index
/// blocks above it.
const LEAF_OFFSET: u64 = 32 << 30;
/// Most entries one directory may hold.
const MAX_ENTRIES: usize = 10_000_000;

fn corrupt(ino: u64, reason: impl std::fmt::Display) -> GuestError {
    GuestError::corrupt(format!("XFS directory inode {ino}"), reason)
}

/// The entries of directory `dir` (without `.` and `..`).
pub fn read_dir(disk: &Disk, dir: &Inode) -> Result<Vec<DirEntry>> {
    match dir.format {
        Format::Local => short_form(disk, dir),
        Format::Extents | Format::Btree => data_blocks(disk, dir),
        Format::Device => Err(corrupt(dir.ino, "a directory with a device fork")),
    }
}

fn short_form(disk: &Disk, dir: &Inode) -> Result<Vec<DirEntry>> {
    let f = &dir.fork;
    let (count, i8count) = (usize::from(*f.first().unwrap_or(&0)), *f.get(1).unwrap_or(&0));
    let ino_len = if i8count > 0 { 8 } else { 4 };
    let count = if i8count > 0 { usize::from(i8count) } else { count };
    let mut at = 2 + ino_len;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len =
            usize::from(*f.get(at).ok_or_else(|| corrupt(dir.ino, "a short-form entry past its fork"))?);
        let name_at = at + 3;
        let ino_at = name_at + len + usize::from(disk.sb.ftype);
        let name = f.get(name_at..name_at + len);
        let raw = f.get(ino_at..ino_at + ino_len);
        let (Some(name), Some(raw)) = (name, raw) else {
            return Err(corrupt(dir.ino, "a short-form entry past its fork"));
        };
        let ino = if ino_len == 8 { be64(raw, 0) } else { u64::from(be32(raw, 0)) };
        out.push(DirEntry { name: name.to_vec(), ino });
        at = ino_at + ino_len;
    }
    Ok(out)
}

fn data_blocks(disk: &Disk, dir: &Inode) -> Result<Vec<DirEntry>> {
    let extents = extents(disk, dir)?;
    let bs = u64::from(disk.sb.block_size);
    let dbs = u64::from(disk.sb.dir_block_size);
    // Every directory block some data extent touches, in order.
    let mut blocks: Vec<u64> = Vec::new();
    for e in &extents {
        let start = e.offset * bs;
        let end = ((e.offset + e.count) * bs).min(LEAF_OFFSET);
        let mut b = start / dbs;
        while b * dbs < end {
            if blocks.last() != Some(&b) {
                blocks.push(b);
            }
            b += 1;
            if blocks.len() > MAX_ENTRIES / 8 {
                return Err(corrupt(dir.ino, "too many directory blocks"));
            }
        }
    }
    let mut out = Vec::new();
    let mut raw = vec![0u8; dbs as usize];
    for b in blocks {
        read_mapped(disk, &extents, b * dbs, &mut raw)?;
        data_block(disk, dir.ino, &raw, &mut out)?;
        if out.len() > MAX_ENTRIES {
            return Err(corrupt(dir.ino, "more than 10 million entries"));
        }
    }
    Ok(out)
}

/// The entries of one directory data block (single-block directories end in a leaf).
fn data_block(disk: &Disk, ino: u64, raw: &[u8], out: &mut Vec<DirEntry>) -> Result<()> {
    let magic = be32(raw, 0);
    let (header, single) = match magic {
        BLOCK_MAGIC if !disk.sb.v5 => (16, true),
        DATA_MAGIC if !disk.sb.v5 => (16, false),
        BLOCK_CRC_MAGIC if disk.sb.v5 => (64, true),
        DATA_CRC_MAGIC if disk.sb.v5 => (64, false),
        _ => return Err(corrupt(ino, format!("a directory block with magic {magic:#010x}"))),
    };
    let end = if single {
        let leaves = be32(raw, raw.len() - 8) as usize;
        raw.len()
            .checked_sub(8 + leaves.saturating_mul(8))
            .filter(|&e| e >= header)
            .ok_or_else(|| corrupt(ino, "a block directory whose leaf overflows it"))?
    } else {
        raw.len()
    };
    let mut at = header;
    while at + 8 <= end {
        if be16(raw, at) == 0xFFFF {
            let len = usize::from(be16(raw, at + 2));
            if len < 8 || len % 8 != 0 {
                return Err(corrupt(ino, "a free space record of a bad length"));
            }
            at += len;
            continue;
        }
        let ino_of = be64(raw, at);
        let len = usize::from(raw[at + 8]);
        let name = raw
            .get(at + 9..at + 9 + len)
            .filter(|_| len > 0)
            .ok_or_else(|| corrupt(ino, "an entry past its block"))?;
        if name != b"." && name != b".." {
            out.push(DirEntry { name: name.to_vec(), ino: ino_of });
        }
        at += (9 + len + usize::from(disk.sb.ftype) + 2).div_ceil(8) * 8;
    }
    Ok(())
}
