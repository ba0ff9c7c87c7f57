//! ext2/3/4 extended attributes: those kept in the inode after its fixed fields and those in
//! the external block its `i_file_acl` names (shared between inodes with the same set),
//! values in place or, with `ea_inode`, in an inode of their own. Names are stored as a
//! namespace index plus a suffix; ACLs in ext's compact encoding, turned into the kernel's.

use ext4_view::Ext4;
use ext4_view::xattr::{SYSTEM_INDEX, XATTR_MAGIC, inode_xattrs_start, xattr_entries, xattr_value};

use super::error::error;
use crate::bytes::{le16, le32};
use crate::error::{GuestError, Result};
use crate::xattr::{ACL_ACCESS, ACL_DEFAULT, MAX_COUNT, MAX_VALUE, Xattr, acl_from_ext};

/// The header of an external attribute block.
const BLOCK_HEADER: usize = 32;

/// The extended attributes of inode `ino`.
pub fn read(fs: &Ext4, ino: u32, what: &str) -> Result<Vec<Xattr>> {
    let raw = fs.inode_bytes(ino).map_err(|e| error(what, e))?;
    let mut out = Vec::new();
    if let Some(start) = inode_xattrs_start(&raw) {
        entries(fs, what, &raw, start, start, &mut out)?;
    }
    let block = u64::from(le32(&raw, 0x68)) | u64::from(le16(&raw, 0x76)) << 32;
    if block != 0 {
        let data = fs.block_bytes(block).map_err(|e| error(what, e))?;
        if le32(&data, 0) != XATTR_MAGIC || le32(&data, 8) != 1 {
            return Err(GuestError::corrupt(what, format!("extended attribute block {block} is not one")));
        }
        entries(fs, what, &data, BLOCK_HEADER, 0, &mut out)?;
    }
    Ok(out)
}

/// The entries of `region` from `at`, whose in-place values are at offsets from `base`.
fn entries(fs: &Ext4, what: &str, region: &[u8], at: usize, base: usize, out: &mut Vec<Xattr>) -> Result<()> {
    for entry in xattr_entries(region, at).map_err(|why| GuestError::corrupt(what, why))? {
        if entry.value_size > MAX_VALUE {
            return Err(GuestError::corrupt(what, "an extended attribute value larger than 64 KiB"));
        }
        // The rest of an inline_data file: its content, not an attribute.
        if entry.index == SYSTEM_INDEX && entry.name == b"data" {
            continue;
        }
        let value = if entry.value_inode != 0 {
            value_inode(fs, what, entry.value_inode, entry.value_size)?
        } else {
            xattr_value(region, base, &entry)
                .ok_or_else(|| GuestError::corrupt(what, "an extended attribute value past its block"))?
                .to_vec()
        };
        out.push(named(what, entry.index, entry.name, value)?);
        if out.len() > MAX_COUNT {
            return Err(GuestError::corrupt(what, "more extended attributes than a file may carry"));
        }
    }
    Ok(())
}

/// A value kept in an inode of its own (`ea_inode`).
fn value_inode(fs: &Ext4, what: &str, inum: u32, size: usize) -> Result<Vec<u8>> {
    let mut file = fs.open_inode(inum).map_err(|e| error(what, e))?;
    let mut value = vec![0u8; size];
    let mut done = 0;
    while done < size {
        let n = file.read_bytes(&mut value[done..]).map_err(|e| error(what, e))?;
        if n == 0 {
            return Err(GuestError::corrupt(
                what,
                format!("extended attribute inode {inum} is shorter than its value"),
            ));
        }
        done += n;
    }
    Ok(value)
}

/// The attribute with namespace `index` and name `suffix`, as Linux names it.
fn named(what: &str, index: u8, suffix: &[u8], value: Vec<u8>) -> Result<Xattr> {
    let prefix: &[u8] = match index {
        1 => b"user.",
        2 => return Xattr::new(what, ACL_ACCESS.to_vec(), acl_from_ext(what, &value)?),
        3 => return Xattr::new(what, ACL_DEFAULT.to_vec(), acl_from_ext(what, &value)?),
        4 => b"trusted.",
        6 => b"security.",
        SYSTEM_INDEX => b"system.",
        8 => b"system.richacl",
        other => {
            return Err(GuestError::Unsupported {
                what: what.to_string(),
                reason: format!("an extended attribute in namespace {other}, which Linux no longer has"),
            });
        }
    };
    Xattr::new(what, [prefix, suffix].concat(), value)
}
