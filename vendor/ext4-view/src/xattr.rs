//! vmvault patch: extended attribute entries, as ext2/3/4 lays them out
//! in an inode (after `i_extra_isize`) and in an external attribute
//! block. Used here to find the `system.data` attribute that holds the
//! rest of an `inline_data` file, and by vmvault to list attributes.

use crate::util::{read_u16le, read_u32le, usize_from_u32};
use alloc::vec::Vec;

/// The magic number before in-inode attributes and at the start of an
/// attribute block.
pub const XATTR_MAGIC: u32 = 0xEA02_0000;

/// Bytes of an inode before `i_extra_isize` extra ones.
const GOOD_OLD_INODE_SIZE: usize = 128;

/// Bytes of an entry before its name.
const ENTRY_HEADER: usize = 16;

/// Namespace index of `system.*` attributes.
pub const SYSTEM_INDEX: u8 = 7;

/// One attribute entry: where its value is, not the value itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XattrEntry<'a> {
    /// The namespace: 1 `user.`, 2 and 3 POSIX ACLs, 4 `trusted.`,
    /// 6 `security.`, 7 `system.`.
    pub index: u8,
    /// The name after the namespace prefix.
    pub name: &'a [u8],
    /// The value's offset from the start of the values' base.
    pub value_offset: usize,
    /// With `ea_inode`: the inode holding the value (0 if in place).
    pub value_inode: u32,
    /// The value's length in bytes.
    pub value_size: usize,
}

/// Where the in-inode attribute entries of the on-disk inode `inode`
/// start (their values are at offsets from the same place), if it has
/// any.
#[must_use]
pub fn inode_xattrs_start(inode: &[u8]) -> Option<usize> {
    if inode.len() <= GOOD_OLD_INODE_SIZE + 2 {
        return None;
    }
    let start = GOOD_OLD_INODE_SIZE
        .checked_add(usize::from(read_u16le(inode, GOOD_OLD_INODE_SIZE)))?;
    let magic = inode.get(start..start.checked_add(4)?)?;
    (read_u32le(magic, 0) == XATTR_MAGIC).then_some(start + 4)
}

/// The entries of `region` from byte `at` up to the four zero bytes
/// that end them (or the region's end). An entry that does not fit is
/// an error.
pub fn xattr_entries(
    region: &[u8],
    mut at: usize,
) -> Result<Vec<XattrEntry<'_>>, &'static str> {
    let mut out = Vec::new();
    while let Some(head) = region.get(at..at.saturating_add(4)) {
        if read_u32le(head, 0) == 0 {
            break;
        }
        let header = region
            .get(at..at.saturating_add(ENTRY_HEADER))
            .ok_or("an extended attribute entry past its block")?;
        let name_len = usize::from(header[0]);
        let name_at = at + ENTRY_HEADER;
        let name = region
            .get(name_at..name_at + name_len)
            .ok_or("an extended attribute name past its block")?;
        out.push(XattrEntry {
            index: header[1],
            name,
            value_offset: usize::from(read_u16le(header, 2)),
            value_inode: read_u32le(header, 4),
            value_size: usize_from_u32(read_u32le(header, 8)),
        });
        at = (name_at + name_len + 3) & !3;
    }
    Ok(out)
}

/// The value of `entry` kept in place, with values at offsets from
/// `base` in `region`.
#[must_use]
pub fn xattr_value<'a>(
    region: &'a [u8],
    base: usize,
    entry: &XattrEntry<'_>,
) -> Option<&'a [u8]> {
    let start = base.checked_add(entry.value_offset)?;
    region.get(start..start.checked_add(entry.value_size)?)
}

/// The `system.data` value of the on-disk inode `inode`: the bytes of
/// an `inline_data` file beyond the 60 in `i_block`. Empty if there is
/// none; `Err` if the attributes are malformed.
pub(crate) fn inline_data_tail(inode: &[u8]) -> Result<&[u8], &'static str> {
    let Some(start) = inode_xattrs_start(inode) else {
        return Ok(&[]);
    };
    for entry in xattr_entries(inode, start)? {
        if entry.index == SYSTEM_INDEX && entry.name == b"data" {
            if entry.value_inode != 0 {
                return Err("inline data in an attribute inode");
            }
            return xattr_value(inode, start, &entry)
                .ok_or("inline data past the inode");
        }
    }
    Ok(&[])
}
