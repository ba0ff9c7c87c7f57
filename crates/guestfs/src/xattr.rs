//! Extended attributes as Linux names them and `setxattr` takes them: `user.*`, `trusted.*`,
//! `security.*` (SELinux labels, file capabilities) and the POSIX ACLs
//! `system.posix_acl_access` / `system.posix_acl_default` in the kernel's own value format.
//! Each filesystem stores them its own way (ext and XFS keep ACLs in private encodings);
//! its reader hands them here to become one [`Xattr`] list.

use crate::bytes::{be16, be32, le16, le32};
use crate::error::{GuestError, Result};

/// The largest value Linux accepts (`XATTR_SIZE_MAX`).
pub const MAX_VALUE: usize = 64 * 1024;
/// Most attributes one file may carry here (a filesystem block holds far fewer).
pub const MAX_COUNT: usize = 4096;

/// The POSIX ACL of a file, as `system.posix_acl_access` names it.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// A directory's default ACL, as `system.posix_acl_default` names it.
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// One extended attribute: its full Linux name (`security.selinux`) and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    /// The name with its namespace prefix.
    pub name: Vec<u8>,
    /// The value, in the format `setxattr` takes.
    pub value: Vec<u8>,
}

impl Xattr {
    /// An attribute whose value fits Linux's limit; `what` names the file for the error.
    pub fn new(what: &str, name: Vec<u8>, value: Vec<u8>) -> Result<Xattr> {
        if value.len() > MAX_VALUE {
            return Err(GuestError::corrupt(
                what,
                format!("extended attribute {} is larger than 64 KiB", String::from_utf8_lossy(&name)),
            ));
        }
        Ok(Xattr { name, value })
    }

    /// Whether this is a POSIX ACL.
    pub fn is_acl(&self) -> bool {
        self.name == ACL_ACCESS || self.name == ACL_DEFAULT
    }
}

const ACL_XATTR_VERSION: u32 = 2;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
const TAG_USER: u16 = 0x02;
const TAG_GROUP: u16 = 0x08;
/// The tags an ACL entry may carry: user_obj, user, group_obj, group, mask, other.
const TAGS: [u16; 6] = [0x01, TAG_USER, 0x04, TAG_GROUP, 0x10, 0x20];
/// Most entries one ACL may hold (ext4's own limit is lower).
const MAX_ACL_ENTRIES: usize = 8192;

/// One ACL entry: tag, permission bits, and the user or group id for named entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AclEntry {
    tag: u16,
    perm: u16,
    id: u32,
}

fn acl_entry(what: &str, tag: u16, perm: u16, id: u32) -> Result<AclEntry> {
    if !TAGS.contains(&tag) || perm & !7 != 0 {
        return Err(GuestError::corrupt(
            what,
            format!("an ACL entry with tag {tag:#x} and permissions {perm:#o}"),
        ));
    }
    let named = tag == TAG_USER || tag == TAG_GROUP;
    Ok(AclEntry { tag, perm, id: if named { id } else { ACL_UNDEFINED_ID } })
}

/// The kernel's `posix_acl_xattr` value of `entries`.
fn encode(entries: &[AclEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * 8);
    out.extend_from_slice(&ACL_XATTR_VERSION.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

/// An ACL in ext2/3/4's on-disk encoding (version 1; short entries for the owner, group,
/// mask and other, long ones with an id for named users and groups) as the kernel's value.
pub fn acl_from_ext(what: &str, raw: &[u8]) -> Result<Vec<u8>> {
    if le32(raw, 0) != 1 || raw.len() < 4 {
        return Err(GuestError::corrupt(what, "an ext ACL without its version 1 header"));
    }
    let mut entries = Vec::new();
    let mut at = 4;
    while at < raw.len() {
        if entries.len() >= MAX_ACL_ENTRIES {
            return Err(GuestError::corrupt(what, "an ACL with too many entries"));
        }
        let (tag, perm) = (le16(raw, at), le16(raw, at + 2));
        let named = tag == TAG_USER || tag == TAG_GROUP;
        let len = if named { 8 } else { 4 };
        if at + len > raw.len() {
            return Err(GuestError::corrupt(what, "an ext ACL cut short"));
        }
        entries.push(acl_entry(what, tag, perm, le32(raw, at + 4))?);
        at += len;
    }
    Ok(encode(&entries))
}

/// An ACL in XFS's encoding (big-endian count, then tag, id and permissions per entry) as
/// the kernel's value.
pub fn acl_from_xfs(what: &str, raw: &[u8]) -> Result<Vec<u8>> {
    let count = be32(raw, 0) as usize;
    if count > MAX_ACL_ENTRIES || raw.len() != 4 + count * 12 {
        return Err(GuestError::corrupt(what, "an XFS ACL whose entry count does not match its size"));
    }
    let entries = raw[4..]
        .chunks_exact(12)
        .map(|e| {
            let tag = u16::try_from(be32(e, 0)).unwrap_or(u16::MAX);
            acl_entry(what, tag, be16(e, 8), be32(e, 4))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(encode(&entries))
}

/// A kernel ACL value in `getfacl`'s short text form (`user::rw-,user:1000:r--,…`), for
/// listings; `None` if the value is not a well-formed ACL.
pub fn acl_text(value: &[u8]) -> Option<String> {
    if le32(value, 0) != ACL_XATTR_VERSION || value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
        return None;
    }
    let parts: Option<Vec<String>> = value[4..]
        .chunks_exact(8)
        .map(|e| {
            let (tag, perm, id) = (le16(e, 0), le16(e, 2), le32(e, 4));
            let rwx: String = [(4, 'r'), (2, 'w'), (1, 'x')]
                .iter()
                .map(|&(b, c)| if perm & b != 0 { c } else { '-' })
                .collect();
            let who = match tag {
                0x01 => "user::".to_string(),
                TAG_USER => format!("user:{id}:"),
                0x04 => "group::".to_string(),
                TAG_GROUP => format!("group:{id}:"),
                0x10 => "mask::".to_string(),
                0x20 => "other::".to_string(),
                _ => return None,
            };
            Some(format!("{who}{rwx}"))
        })
        .collect();
    parts.map(|p| p.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ext_acl_becomes_the_kernel_value() {
        // user::rw-, user:1000:r--, group::r--, mask::r--, other::---
        let mut raw = 1u32.to_le_bytes().to_vec();
        for (tag, perm, id) in
            [(1u16, 6u16, None), (2, 4, Some(1000u32)), (4, 4, None), (0x10, 4, None), (0x20, 0, None)]
        {
            raw.extend_from_slice(&tag.to_le_bytes());
            raw.extend_from_slice(&perm.to_le_bytes());
            if let Some(id) = id {
                raw.extend_from_slice(&id.to_le_bytes());
            }
        }
        let value = acl_from_ext("t", &raw).unwrap();
        assert_eq!(acl_text(&value).unwrap(), "user::rw-,user:1000:r--,group::r--,mask::r--,other::---");
    }

    #[test]
    fn malformed_acls_are_refused() {
        assert!(acl_from_ext("t", &[2, 0, 0, 0]).is_err());
        assert!(acl_from_ext("t", &[1, 0, 0, 0, 2, 0, 4]).is_err());
        assert!(acl_from_xfs("t", &[0, 0, 0, 2, 0]).is_err());
        let mut bad_tag = 1u32.to_be_bytes().to_vec();
        bad_tag.extend_from_slice(&[0, 0, 0, 0x40, 0, 0, 0, 0, 0, 7, 0, 0]);
        assert!(acl_from_xfs("t", &bad_tag).is_err());
    }
}
