//! What an NTFS link points at: symlink and junction reparse points as Windows writes them,
//! and the Interix symlinks older ntfs-3g wrote (a system file holding `IntxLNK\1` and a
//! UTF-16 target). Targets become guest paths with `/`: relative ones stay relative, a
//! drive-absolute `C:\Users` becomes `/Users` (the volume's own root).

use crate::bytes::{le16, le32};

/// IO_REPARSE_TAG_SYMLINK.
pub const TAG_SYMLINK: u32 = 0xA000_000C;
/// IO_REPARSE_TAG_MOUNT_POINT (junctions).
pub const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// The start of an Interix symlink's data.
pub const INTERIX_LINK: &[u8; 8] = b"IntxLNK\x01";

/// A reparse buffer's tag.
pub fn tag(buffer: &[u8]) -> u32 {
    le32(buffer, 0)
}

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

/// The target of a symlink or junction reparse buffer, as a guest path.
pub fn target(buffer: &[u8]) -> Option<Vec<u8>> {
    let (names_at, relative): (usize, bool) = match tag(buffer) {
        TAG_SYMLINK => (20, le32(buffer, 16) & 1 == 1),
        TAG_MOUNT_POINT => (16, false),
        _ => return None,
    };
    let (sub_at, sub_len) = (usize::from(le16(buffer, 8)), usize::from(le16(buffer, 10)));
    let start = names_at.checked_add(sub_at)?;
    let name = utf16(buffer.get(start..start.checked_add(sub_len)?)?);
    Some(guest_path(&name, relative))
}

/// The target of an Interix symlink's data.
pub fn interix_target(data: &[u8]) -> Option<Vec<u8>> {
    let rest = data.strip_prefix(INTERIX_LINK)?;
    let name = utf16(rest);
    Some(name.trim_end_matches('\0').as_bytes().to_vec())
}

fn guest_path(name: &str, relative: bool) -> Vec<u8> {
    let slashes = name.replace('\\', "/");
    if relative {
        return slashes.into_bytes();
    }
    let bare = slashes.strip_prefix("/??/").unwrap_or(&slashes);
    // `C:/Users/…`: the same volume's root.
    let bytes = bare.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        let rest = &bare[2..];
        return if rest.starts_with('/') {
            rest.as_bytes().to_vec()
        } else {
            format!("/{rest}").into_bytes()
        };
    }
    bare.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(tag: u32, name: &str, flags: Option<u32>) -> Vec<u8> {
        let sub: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut body = Vec::new();
        for v in [0u16, sub.len() as u16, sub.len() as u16 + 2, sub.len() as u16] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(f) = flags {
            body.extend_from_slice(&f.to_le_bytes());
        }
        body.extend_from_slice(&sub);
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&sub);
        let mut out = tag.to_le_bytes().to_vec();
        out.extend_from_slice(&(body.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn symlinks_and_junctions_become_guest_paths() {
        assert_eq!(target(&buffer(TAG_SYMLINK, "Documents\\a.txt", Some(1))).unwrap(), b"Documents/a.txt");
        assert_eq!(target(&buffer(TAG_SYMLINK, "\\??\\C:\\Windows", Some(0))).unwrap(), b"/Windows");
        assert_eq!(target(&buffer(TAG_MOUNT_POINT, "\\??\\C:\\Users\\Ana", None)).unwrap(), b"/Users/Ana");
        assert_eq!(target(&buffer(0x8000_0013, "x", None)), None);
        assert_eq!(target(&[0x0C, 0, 0, 0xA0, 50, 0]), None);
    }
}
