//! XFS inodes: the core (v1/v2/v3, big timestamps, 64-bit extent counts), the data fork
//! in its local, extent-list and B+tree forms, and reads of a fork's bytes with holes and
//! unwritten (preallocated) extents read as zeros.

use std::collections::HashSet;

use super::disk::Disk;
use crate::bytes::{be16, be32, be64};
use crate::error::{GuestError, Result};

/// The data fork's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Device nodes: no data.
    Device,
    /// Data inside the inode (short directories, short symlinks).
    Local,
    /// A list of extents inside the inode.
    Extents,
    /// A B+tree of extents rooted in the inode.
    Btree,
}

/// The parts of an inode vmvault uses.
#[derive(Clone, Debug)]
pub struct Inode {
    /// Its number.
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u16,
    /// Names it has.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: (i64, u32),
    /// Size in bytes.
    pub size: u64,
    /// Data fork format.
    pub format: Format,
    /// Data extents, as the core counts them.
    pub nextents: u64,
    /// Whether its data is on a realtime device.
    pub realtime: bool,
    /// The data fork's bytes within the inode.
    pub fork: Vec<u8>,
    /// The attribute fork, if the inode has one: extended attributes.
    pub attr: Option<AttrFork>,
}

/// An inode's attribute fork: its format, extent count and bytes within the inode.
#[derive(Clone, Debug)]
pub struct AttrFork {
    /// Local (short form), extents or B+tree.
    pub format: Format,
    /// Extents, as the core counts them.
    pub nextents: u64,
    /// Its bytes within the inode.
    pub bytes: Vec<u8>,
}

/// One mapping of file blocks to filesystem blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First file block.
    pub offset: u64,
    /// First filesystem block (AG-encoded).
    pub block: u64,
    /// Blocks.
    pub count: u64,
    /// Allocated but never written: reads as zeros.
    pub unwritten: bool,
}

const DIFLAG_REALTIME: u16 = 0x0001;
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const DIFLAG2_NREXT64: u64 = 1 << 4;
const BMAP_MAGIC: u32 = 0x424D_4150;
const BMAP_CRC_MAGIC: u32 = 0x424D_4133;
/// Most extents one file may map (a 1 TiB file in 64 KiB pieces is 16 Mi).
const MAX_EXTENTS: usize = 1 << 24;
const MAX_BTREE_LEVELS: u16 = 9;

fn corrupt(ino: u64, reason: impl std::fmt::Display) -> GuestError {
    GuestError::corrupt(format!("XFS inode {ino}"), reason)
}

/// A timestamp: seconds and nanoseconds, or with big timestamps nanoseconds since 1901-12-13.
fn timestamp(raw: &[u8], big: bool) -> (i64, u32) {
    if big {
        let ns = be64(raw, 0);
        ((ns / 1_000_000_000) as i64 - (1i64 << 31), (ns % 1_000_000_000) as u32)
    } else {
        (i64::from(be32(raw, 0) as i32), be32(raw, 4).min(999_999_999))
    }
}

/// Read inode `ino`.
pub fn read_inode(disk: &Disk, ino: u64) -> Result<Inode> {
    let sb = &disk.sb;
    let per_ag_bits = u32::from(sb.ag_blk_log) + u32::from(sb.inop_blog);
    let agno = ino.checked_shr(per_ag_bits).unwrap_or(u64::MAX);
    let agino = ino & ((1u64 << per_ag_bits) - 1);
    let agbno = agino >> sb.inop_blog;
    let index = agino & ((1u64 << sb.inop_blog) - 1);
    if agno >= u64::from(sb.ag_count) || agbno >= u64::from(sb.ag_blocks) {
        return Err(corrupt(ino, "its number lies outside the filesystem"));
    }
    let at = (agno * u64::from(sb.ag_blocks) + agbno) * u64::from(sb.block_size)
        + index * u64::from(sb.inode_size);
    let mut raw = vec![0u8; usize::from(sb.inode_size)];
    disk.slice.read_at(at, &mut raw)?;
    if be16(&raw, 0) != 0x494E {
        return Err(corrupt(ino, "no inode magic"));
    }
    let version = raw[4];
    let core = match version {
        1 | 2 => 100,
        3 => 176,
        v => return Err(corrupt(ino, format!("unknown inode version {v}"))),
    };
    let flags2 = if version == 3 { be64(&raw, 120) } else { 0 };
    let nextents = if flags2 & DIFLAG2_NREXT64 != 0 { be64(&raw, 24) } else { u64::from(be32(&raw, 76)) };
    let fork_end = match raw[82] {
        0 => raw.len(),
        off => core + usize::from(off) * 8,
    };
    let fork =
        raw.get(core..fork_end).ok_or_else(|| corrupt(ino, "its attribute fork offset is out of range"))?;
    let format = fork_format(ino, raw[5], "data")?;
    let attr = match raw[82] {
        0 => None,
        _ => Some(AttrFork {
            format: fork_format(ino, raw[83], "attribute")?,
            nextents: if flags2 & DIFLAG2_NREXT64 != 0 {
                u64::from(be32(&raw, 76))
            } else {
                u64::from(be16(&raw, 80))
            },
            bytes: raw.get(fork_end..).unwrap_or(&[]).to_vec(),
        }),
    };
    let big = flags2 & DIFLAG2_BIGTIME != 0;
    Ok(Inode {
        ino,
        mode: be16(&raw, 2),
        nlink: if version == 1 { u32::from(be16(&raw, 6)) } else { be32(&raw, 16) },
        uid: be32(&raw, 8),
        gid: be32(&raw, 12),
        mtime: timestamp(&raw[40..48], big),
        size: be64(&raw, 56),
        format,
        nextents,
        realtime: be16(&raw, 90) & DIFLAG_REALTIME != 0,
        fork: fork.to_vec(),
        attr,
    })
}

fn fork_format(ino: u64, raw: u8, which: &str) -> Result<Format> {
    Ok(match raw {
        0 => Format::Device,
        1 => Format::Local,
        2 => Format::Extents,
        3 => Format::Btree,
        f => return Err(corrupt(ino, format!("unknown {which} fork format {f}"))),
    })
}

/// The data extents of `inode`, sorted by file offset.
pub fn extents(disk: &Disk, inode: &Inode) -> Result<Vec<Extent>> {
    fork_extents(disk, inode.ino, inode.format, inode.nextents, &inode.fork)
}

/// The extents of a fork in `format` whose bytes in the inode are `fork`, sorted by offset.
pub fn fork_extents(
    disk: &Disk,
    ino: u64,
    format: Format,
    nextents: u64,
    fork: &[u8],
) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    match format {
        Format::Extents => {
            let n = usize::try_from(nextents).unwrap_or(usize::MAX);
            if n > fork.len() / 16 {
                return Err(corrupt(ino, "more extents than its fork holds"));
            }
            out.extend(fork.chunks_exact(16).take(n).map(extent));
        }
        Format::Btree => {
            let level = be16(fork, 0);
            let count = usize::from(be16(fork, 2));
            let max = fork.len().saturating_sub(4) / 16;
            if level == 0 || level > MAX_BTREE_LEVELS || count > max {
                return Err(corrupt(ino, "a malformed extent B+tree root"));
            }
            let mut seen = HashSet::new();
            for i in 0..count {
                let child = be64(fork, 4 + max * 8 + i * 8);
                bmbt_block(disk, ino, child, level - 1, &mut seen, &mut out)?;
            }
        }
        Format::Local | Format::Device => {}
    }
    let bs = u64::from(disk.sb.block_size);
    if out.iter().any(|e| e.offset.checked_add(e.count).and_then(|n| n.checked_mul(bs)).is_none()) {
        return Err(corrupt(ino, "an extent beyond the largest file"));
    }
    out.sort_by_key(|e| e.offset);
    if out.windows(2).any(|w| w[0].offset + w[0].count > w[1].offset) {
        return Err(corrupt(ino, "its extents overlap"));
    }
    Ok(out)
}

fn bmbt_block(
    disk: &Disk,
    ino: u64,
    block: u64,
    level: u16,
    seen: &mut HashSet<u64>,
    out: &mut Vec<Extent>,
) -> Result<()> {
    if !seen.insert(block) {
        return Err(corrupt(ino, "its extent B+tree has a loop"));
    }
    let raw = disk.read_blocks(block, 1)?;
    let (magic, header) = (be32(&raw, 0), if disk.sb.v5 { 72 } else { 24 });
    if magic != if disk.sb.v5 { BMAP_CRC_MAGIC } else { BMAP_MAGIC } || be16(&raw, 4) != level {
        return Err(corrupt(ino, format!("extent B+tree block {block} is not one")));
    }
    let count = usize::from(be16(&raw, 6));
    let max = (raw.len() - header) / 16;
    if count > max {
        return Err(corrupt(ino, format!("extent B+tree block {block} claims too many records")));
    }
    if level == 0 {
        if out.len() + count > MAX_EXTENTS {
            return Err(corrupt(ino, "more than 16 Mi extents"));
        }
        out.extend(raw[header..header + count * 16].chunks_exact(16).map(extent));
        return Ok(());
    }
    for i in 0..count {
        let child = be64(&raw, header + max * 8 + i * 8);
        bmbt_block(disk, ino, child, level - 1, seen, out)?;
    }
    Ok(())
}

/// Fill `buf` with the fork's bytes from `pos` (holes and unwritten extents are zeros).
pub fn read_mapped(disk: &Disk, extents: &[Extent], pos: u64, buf: &mut [u8]) -> Result<()> {
    buf.fill(0);
    let bs = u64::from(disk.sb.block_size);
    let end = pos + buf.len() as u64;
    let first = extents.partition_point(|e| (e.offset + e.count) * bs <= pos);
    for e in &extents[first..] {
        let (e_start, e_end) = (e.offset * bs, (e.offset + e.count) * bs);
        if e_start >= end {
            break;
        }
        if e.unwritten {
            continue;
        }
        let from = e_start.max(pos);
        let to = e_end.min(end);
        let at = disk.block_byte(e.block, e.count)? + (from - e_start);
        disk.slice.read_at(at, &mut buf[(from - pos) as usize..(to - pos) as usize])?;
    }
    Ok(())
}

fn extent(rec: &[u8]) -> Extent {
    let hi = be64(rec, 0);
    let lo = be64(rec, 8);
    Extent {
        unwritten: hi >> 63 != 0,
        offset: (hi >> 9) & ((1u64 << 54) - 1),
        block: ((hi & 0x1FF) << 43) | (lo >> 21),
        count: lo & ((1u64 << 21) - 1),
    }
}
