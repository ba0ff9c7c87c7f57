//! The XFS volume under the reader: its primary superblock, checked before anything trusts
//! it, and reads of filesystem blocks by their allocation-group-encoded numbers.

use crate::bytes::{be16, be32, be64};
use crate::error::{GuestError, Result};
use crate::reader::Slice;

/// The superblock fields the reader uses.
#[derive(Clone, Debug)]
pub struct Superblock {
    pub block_size: u32,
    pub ag_blocks: u32,
    pub ag_count: u32,
    pub ag_blk_log: u8,
    pub inode_size: u16,
    pub inop_blog: u8,
    pub dir_block_size: u32,
    pub root_ino: u64,
    pub v5: bool,
    pub ftype: bool,
    pub label: Option<String>,
    pub log_start: u64,
    pub log_blocks: u32,
}

const SB_FEATURES2_FTYPE: u32 = 0x200;
const SB_INCOMPAT_FTYPE: u32 = 0x1;

impl Superblock {
    /// Read and check the primary superblock.
    pub fn read(slice: &Slice) -> Result<Superblock> {
        let mut raw = [0u8; 512];
        slice.read_at(0, &mut raw)?;
        let bad = |reason: &str| GuestError::corrupt("XFS superblock", reason);
        if &raw[0..4] != b"XFSB" {
            return Err(bad("no XFS magic"));
        }
        let version = be16(&raw, 100) & 0xF;
        let block_size = be32(&raw, 4);
        let (block_log, inode_log, inop_blog, ag_blk_log) = (raw[120], raw[122], raw[123], raw[124]);
        let inode_size = be16(&raw, 104);
        let ok = (4..=5).contains(&version)
            && (9..=16).contains(&block_log)
            && block_size == 1 << block_log
            && (8..=11).contains(&inode_log)
            && u32::from(inode_size) == 1 << inode_log
            && u32::from(inop_blog) == u32::from(block_log) - u32::from(inode_log)
            && (1..=31).contains(&ag_blk_log)
            && raw[192] <= 8;
        if !ok {
            return Err(bad("its geometry is inconsistent"));
        }
        let ag_blocks = be32(&raw, 84);
        let ag_count = be32(&raw, 88);
        if ag_blocks == 0 || u64::from(ag_blocks) > 1 << ag_blk_log || ag_count == 0 {
            return Err(bad("its allocation groups are inconsistent"));
        }
        let v5 = version == 5;
        let ftype = if v5 {
            be32(&raw, 216) & SB_INCOMPAT_FTYPE != 0
        } else {
            be32(&raw, 200) & SB_FEATURES2_FTYPE != 0
        };
        let label_end = raw[108..120].iter().position(|&c| c == 0).unwrap_or(12);
        let label = String::from_utf8_lossy(&raw[108..108 + label_end]).trim().to_string();
        Ok(Superblock {
            block_size,
            ag_blocks,
            ag_count,
            ag_blk_log,
            inode_size,
            inop_blog,
            dir_block_size: block_size << raw[192],
            root_ino: be64(&raw, 56),
            v5,
            ftype,
            label: (!label.is_empty()).then_some(label),
            log_start: be64(&raw, 48),
            log_blocks: be32(&raw, 96),
        })
    }
}

/// A volume holding XFS, with its geometry.
pub struct Disk {
    /// The volume.
    pub slice: Slice,
    /// Its superblock.
    pub sb: Superblock,
}

impl Disk {
    /// The byte of filesystem block `block` (AG-encoded), checking `count` blocks fit its AG.
    pub fn block_byte(&self, block: u64, count: u64) -> Result<u64> {
        let sb = &self.sb;
        let agno = block >> sb.ag_blk_log;
        let agbno = block & ((1u64 << sb.ag_blk_log) - 1);
        if agno >= u64::from(sb.ag_count) || agbno + count > u64::from(sb.ag_blocks) {
            return Err(GuestError::corrupt("XFS", format!("block {block} lies outside the filesystem")));
        }
        Ok((agno * u64::from(sb.ag_blocks) + agbno) * u64::from(sb.block_size))
    }

    /// Read `count` blocks from `block`.
    pub fn read_blocks(&self, block: u64, count: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; (count * u64::from(self.sb.block_size)) as usize];
        self.slice.read_at(self.block_byte(block, count)?, &mut buf)?;
        Ok(buf)
    }
}
