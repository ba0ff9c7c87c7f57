//! Linux MD RAID members: the superblock of metadata 0.90 (at the end, in the last 64 KiB-
//! aligned 64 KiB) and 1.0 (8 KiB before the end), 1.1 (at the start) and 1.2 (4 KiB in),
//! checked (1.x by its checksum) and named. A RAID1 member holds the whole array's data at
//! its data offset, so it is read on its own, as `mdadm --build` would show it; other levels
//! are named, not assembled.

use crate::bytes::{le32, le64, uuid_text};
use crate::error::{GuestError, Result};
use crate::reader::Slice;

const MAGIC: u32 = 0xA92B_4EFC;
/// Bytes of a 1.x superblock before its device roles.
const V1_HEADER: usize = 256;
/// Most device roles a 1.x superblock lists (mdadm's limit is 1920).
const MAX_DEVICES: usize = 1920;

/// What a member's superblock says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `0.90`, `1.0`, `1.1` or `1.2`.
    pub metadata: &'static str,
    /// The RAID level (1 for mirrors; -1 linear, 0 striped, 4, 5, 6, 10).
    pub level: i32,
    /// The array's UUID.
    pub uuid: Option<String>,
    /// The array's name (1.x).
    pub name: Option<String>,
    /// Devices in the array.
    pub raid_disks: u32,
    /// Where the array's data starts on this member, and how long it is, in bytes.
    pub data: (u64, u64),
}

fn read(volume: &Slice, at: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    volume.read_at(at, &mut buf).ok()?;
    Some(buf)
}

/// Where a superblock may be, with its metadata version.
fn places(len: u64) -> Vec<(u64, &'static str)> {
    let mut out = vec![(0, "1.1"), (4096, "1.2")];
    if len >= 8192 {
        out.push(((len - 8192) & !4095, "1.0"));
    }
    if len >= 65536 {
        out.push(((len & !65535) - 65536, "0.90"));
    }
    out
}

/// Whether `volume` holds an MD superblock (cheap: one 4-byte check per place).
pub fn is_member(volume: &Slice) -> bool {
    places(volume.len()).into_iter().any(|(at, _)| read(volume, at, 4).is_some_and(|b| le32(&b, 0) == MAGIC))
}

/// The member superblock on `volume`, if it has one; `what` names the volume in errors.
pub fn read_member(volume: &Slice, what: &str) -> Result<Option<Member>> {
    for (at, metadata) in places(volume.len()) {
        let Some(head) = read(volume, at, 4096.min((volume.len() - at) as usize)) else { continue };
        if le32(&head, 0) != MAGIC {
            continue;
        }
        let member = if metadata == "0.90" { v090(&head, at) } else { v1(&head, metadata, what)? };
        if member.data.0.checked_add(member.data.1).is_none_or(|end| end > volume.len()) {
            return Err(GuestError::corrupt(what, "an MD superblock whose data lies past its device"));
        }
        return Ok(Some(member));
    }
    Ok(None)
}

fn v1(sb: &[u8], metadata: &'static str, what: &str) -> Result<Member> {
    if le32(sb, 4) != 1 {
        return Err(GuestError::corrupt(what, format!("an MD superblock of major version {}", le32(sb, 4))));
    }
    let max_dev = le32(sb, 220) as usize;
    let end = V1_HEADER + 2 * max_dev;
    if max_dev > MAX_DEVICES || end > sb.len() {
        return Err(GuestError::corrupt(what, "an MD superblock listing too many devices"));
    }
    // The checksum: the 32-bit words with its own field as zero, carries folded back in.
    let mut sum: u64 = sb[..end]
        .chunks(4)
        .enumerate()
        .map(|(i, w)| if i == 216 / 4 { 0 } else { u64::from(le32(&[w, &[0, 0, 0]].concat(), 0)) })
        .sum();
    sum = (sum & 0xFFFF_FFFF) + (sum >> 32);
    if sum as u32 != le32(sb, 216) {
        return Err(GuestError::corrupt(what, "an MD superblock whose checksum does not match"));
    }
    let name = sb[32..64].split(|&b| b == 0).next().filter(|n| !n.is_empty());
    Ok(Member {
        metadata,
        level: le32(sb, 72) as i32,
        uuid: uuid_text(&sb[16..32]),
        name: name.map(|n| String::from_utf8_lossy(n).into_owned()),
        raid_disks: le32(sb, 92),
        data: (le64(sb, 128).saturating_mul(512), le64(sb, 136).saturating_mul(512)),
    })
}

/// A 0.90 superblock (host-endian: little on the x86 hosts that write them); the data starts
/// at the device's start, its size in KiB.
fn v090(sb: &[u8], at: u64) -> Member {
    let uuid: Vec<u8> = [20, 52, 56, 60].iter().flat_map(|&o| sb[o..o + 4].iter().rev().copied()).collect();
    let size = u64::from(le32(sb, 32)) * 1024;
    Member {
        metadata: "0.90",
        level: le32(sb, 28) as i32,
        uuid: uuid_text(&uuid),
        name: None,
        raid_disks: le32(sb, 40),
        data: (0, if size == 0 { at } else { size.min(at) }),
    }
}
