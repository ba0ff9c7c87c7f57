//! XFS extended attributes: the attribute fork in its short form (inside the inode), as one
//! leaf block, or as a dabtree of leaves (walked from the leftmost leaf along the sibling
//! links), with values local to the leaf or in remote blocks. Namespaces come from the
//! entry flags; ACLs (`SGI_ACL_FILE`, `SGI_ACL_DEFAULT` in the root namespace) become the
//! kernel's POSIX ACL values.

use std::collections::HashSet;

use super::disk::Disk;
use super::inode::{AttrFork, Extent, Format, Inode, fork_extents, read_mapped};
use crate::bytes::{be16, be32};
use crate::error::{GuestError, Result};
use crate::xattr::{ACL_ACCESS, ACL_DEFAULT, MAX_COUNT, Xattr, acl_from_xfs};

const LEAF_MAGIC: u16 = 0xFBEE;
const LEAF_CRC_MAGIC: u16 = 0x3BEE;
const NODE_MAGIC: u16 = 0xFEBE;
const NODE_CRC_MAGIC: u16 = 0x3EBE;
const REMOTE_CRC_MAGIC: u32 = 0x5841_524D; // XARM
/// The header of each v5 remote value block.
const REMOTE_HEADER: usize = 56;
const FLAG_LOCAL: u8 = 0x01;
const FLAG_ROOT: u8 = 0x02;
const FLAG_SECURE: u8 = 0x04;
/// Parent pointers (an internal index of names, not an attribute) and half-written ones.
const FLAG_PARENT: u8 = 0x08;
const FLAG_INCOMPLETE: u8 = 0x80;
/// Deepest dabtree walked.
const MAX_LEVELS: usize = 8;

fn corrupt(ino: u64, reason: impl std::fmt::Display) -> GuestError {
    GuestError::corrupt(format!("XFS inode {ino} attributes"), reason)
}

/// The extended attributes of `inode`.
pub fn read_attrs(disk: &Disk, inode: &Inode) -> Result<Vec<Xattr>> {
    let Some(fork) = &inode.attr else { return Ok(Vec::new()) };
    let mut raw = Vec::new();
    match fork.format {
        Format::Local => short_form(inode.ino, &fork.bytes, &mut raw)?,
        Format::Extents | Format::Btree => {
            let blocks = Blocks::new(disk, inode.ino, fork)?;
            // A fork whose attributes were all removed keeps its format with no blocks.
            if !blocks.extents.is_empty() {
                blocks.walk(&mut raw)?;
            }
        }
        Format::Device => return Err(corrupt(inode.ino, "an attribute fork of device format")),
    }
    let what = format!("XFS inode {}", inode.ino);
    raw.into_iter().filter_map(|(flags, name, value)| named(&what, flags, name, value).transpose()).collect()
}

/// An attribute as Linux names it, or `None` for entries that are not attributes.
fn named(what: &str, flags: u8, name: Vec<u8>, value: Vec<u8>) -> Result<Option<Xattr>> {
    if flags & (FLAG_PARENT | FLAG_INCOMPLETE) != 0 {
        return Ok(None);
    }
    let attr = if flags & FLAG_ROOT != 0 {
        match name.as_slice() {
            b"SGI_ACL_FILE" => Xattr::new(what, ACL_ACCESS.to_vec(), acl_from_xfs(what, &value)?)?,
            b"SGI_ACL_DEFAULT" => Xattr::new(what, ACL_DEFAULT.to_vec(), acl_from_xfs(what, &value)?)?,
            _ => Xattr::new(what, [&b"trusted."[..], &name].concat(), value)?,
        }
    } else if flags & FLAG_SECURE != 0 {
        Xattr::new(what, [&b"security."[..], &name].concat(), value)?
    } else {
        Xattr::new(what, [&b"user."[..], &name].concat(), value)?
    };
    Ok(Some(attr))
}

type Raw = Vec<(u8, Vec<u8>, Vec<u8>)>;

/// The short form: a 4-byte header (total size, count), then name/value entries.
fn short_form(ino: u64, fork: &[u8], out: &mut Raw) -> Result<()> {
    let total = usize::from(be16(fork, 0)).min(fork.len());
    let count = usize::from(fork.get(2).copied().unwrap_or(0));
    let mut at = 4;
    for _ in 0..count {
        let (name_len, value_len) = (
            usize::from(fork.get(at).copied().unwrap_or(0)),
            usize::from(fork.get(at + 1).copied().unwrap_or(0)),
        );
        let flags = fork.get(at + 2).copied().unwrap_or(0);
        let name = fork.get(at + 3..at + 3 + name_len);
        let value = fork.get(at + 3 + name_len..at + 3 + name_len + value_len);
        let (Some(name), Some(value)) = (name, value) else {
            return Err(corrupt(ino, "a short-form attribute past its fork"));
        };
        if at + 3 + name_len + value_len > total {
            return Err(corrupt(ino, "a short-form attribute past the fork's stated size"));
        }
        out.push((flags, name.to_vec(), value.to_vec()));
        at += 3 + name_len + value_len;
    }
    Ok(())
}

/// The attribute fork's blocks, read by their offset within the fork.
struct Blocks<'a> {
    disk: &'a Disk,
    ino: u64,
    extents: Vec<Extent>,
    size: usize,
}

impl<'a> Blocks<'a> {
    fn new(disk: &'a Disk, ino: u64, fork: &AttrFork) -> Result<Blocks<'a>> {
        let extents = fork_extents(disk, ino, fork.format, fork.nextents, &fork.bytes)?;
        Ok(Blocks { disk, ino, extents, size: disk.sb.block_size as usize })
    }

    fn read(&self, dablk: u64, count: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.size * count];
        read_mapped(self.disk, &self.extents, dablk * self.size as u64, &mut buf)?;
        Ok(buf)
    }

    /// Every leaf's entries: down the leftmost path from block 0, then along the leaves.
    fn walk(&self, out: &mut Raw) -> Result<()> {
        let v5 = self.disk.sb.v5;
        let mut dablk = 0u64;
        let mut block = self.read(dablk, 1)?;
        for _ in 0..MAX_LEVELS {
            let magic = be16(&block, 8);
            if magic != if v5 { NODE_CRC_MAGIC } else { NODE_MAGIC } {
                break;
            }
            let (count_at, first) = if v5 { (56, 64) } else { (12, 16) };
            if be16(&block, count_at) == 0 {
                return Err(corrupt(self.ino, "an empty attribute node"));
            }
            dablk = u64::from(be32(&block, first + 4));
            block = self.read(dablk, 1)?;
        }
        let mut seen = HashSet::new();
        loop {
            if !seen.insert(dablk) {
                return Err(corrupt(self.ino, "its attribute leaves form a loop"));
            }
            self.leaf(&block, out)?;
            if out.len() > MAX_COUNT {
                return Err(corrupt(self.ino, "more attributes than a file may carry"));
            }
            let next = u64::from(be32(&block, 0));
            if next == 0 {
                return Ok(());
            }
            dablk = next;
            block = self.read(dablk, 1)?;
        }
    }

    fn leaf(&self, block: &[u8], out: &mut Raw) -> Result<()> {
        let v5 = self.disk.sb.v5;
        if be16(block, 8) != if v5 { LEAF_CRC_MAGIC } else { LEAF_MAGIC } {
            return Err(corrupt(self.ino, "an attribute block that is not a leaf"));
        }
        let (count, first) =
            if v5 { (usize::from(be16(block, 56)), 80) } else { (usize::from(be16(block, 12)), 32) };
        if first + count * 8 > block.len() {
            return Err(corrupt(self.ino, "an attribute leaf claiming more entries than it holds"));
        }
        for i in 0..count {
            let e = first + i * 8;
            let (at, flags) = (usize::from(be16(block, e + 4)), block.get(e + 6).copied().unwrap_or(0));
            let past = || corrupt(self.ino, "an attribute name past its leaf");
            if flags & FLAG_LOCAL != 0 {
                let value_len = usize::from(be16(block, at));
                let name_len = usize::from(block.get(at + 2).copied().ok_or_else(past)?);
                let name = block.get(at + 3..at + 3 + name_len).ok_or_else(past)?;
                let value = block.get(at + 3 + name_len..at + 3 + name_len + value_len).ok_or_else(past)?;
                out.push((flags, name.to_vec(), value.to_vec()));
            } else {
                let (value_blk, value_len) = (u64::from(be32(block, at)), be32(block, at + 4) as usize);
                let name_len = usize::from(block.get(at + 8).copied().ok_or_else(past)?);
                let name = block.get(at + 9..at + 9 + name_len).ok_or_else(past)?.to_vec();
                if value_len > crate::xattr::MAX_VALUE {
                    return Err(corrupt(self.ino, "a remote attribute value larger than 64 KiB"));
                }
                out.push((flags, name, self.remote(value_blk, value_len)?));
            }
        }
        Ok(())
    }

    /// A value kept in blocks of its own (with a header per block on v5).
    fn remote(&self, dablk: u64, len: usize) -> Result<Vec<u8>> {
        if !self.disk.sb.v5 {
            let mut value = self.read(dablk, len.div_ceil(self.size))?;
            value.truncate(len);
            return Ok(value);
        }
        let per_block = self.size - REMOTE_HEADER;
        let raw = self.read(dablk, len.div_ceil(per_block))?;
        let mut value = Vec::with_capacity(len);
        for block in raw.chunks(self.size) {
            if be32(block, 0) != REMOTE_CRC_MAGIC {
                return Err(corrupt(self.ino, "a remote attribute block without its header"));
            }
            value.extend_from_slice(block.get(REMOTE_HEADER..).unwrap_or(&[]));
        }
        value.truncate(len);
        Ok(value)
    }
}
