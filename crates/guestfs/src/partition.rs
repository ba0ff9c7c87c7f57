//! Partition tables: GPT, MBR with logical partitions in an extended partition, or none.
//! Sectors are 512 bytes. Checksums of GPT headers are not required to hold (a damaged table
//! is still worth reading), but every offset and count is bounds-checked against the disk.

use std::collections::HashSet;

use serde::Serialize;

use crate::bytes::{le16, le32, le64};
use crate::error::Result;
use crate::reader::Slice;

const SECTOR: u64 = 512;
const MAX_GPT_ENTRIES: u32 = 1024;
const MAX_LOGICAL: usize = 128;

/// What kind of table a disk has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// GUID partition table.
    Gpt,
    /// DOS/MBR table.
    Mbr,
    /// No table: a filesystem (or nothing) on the whole disk.
    None,
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// Number as Linux counts them: GPT entries 1…, MBR primaries 1–4, logicals from 5.
    pub number: u32,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// The type by `fdisk`'s name (`Linux filesystem`, `EFI System`, `Linux LVM`…), else its GUID or hex byte.
    pub type_name: String,
    /// GPT partition name, if any.
    pub name: Option<String>,
}

/// Read the partition table of `disk`.
pub fn read_table(disk: &Slice) -> Result<(TableKind, Vec<Partition>)> {
    if disk.len() < SECTOR {
        return Ok((TableKind::None, vec![]));
    }
    let mut mbr = [0u8; 512];
    disk.read_at(0, &mut mbr)?;
    if le16(&mbr, 510) != 0xAA55 {
        return Ok((TableKind::None, vec![]));
    }
    let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + i * 16..446 + (i + 1) * 16]).collect();
    // A status byte other than 0x00/0x80 means this is a boot sector (FAT, NTFS), not a table.
    if entries.iter().any(|e| e[0] != 0 && e[0] != 0x80) {
        return Ok((TableKind::None, vec![]));
    }
    if entries.iter().any(|e| e[4] == 0xEE)
        && let Some(parts) = read_gpt(disk)?
    {
        return Ok((TableKind::Gpt, parts));
    }
    let mut parts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let kind = e[4];
        let (start, sectors) = (u64::from(le32(e, 8)), u64::from(le32(e, 12)));
        if kind == 0 || sectors == 0 {
            continue;
        }
        if matches!(kind, 0x05 | 0x0F | 0x85) {
            read_logical(disk, start * SECTOR, &mut parts)?;
            continue;
        }
        push_checked(disk, &mut parts, i as u32 + 1, start * SECTOR, sectors * SECTOR, mbr_type(kind), None);
    }
    if parts.is_empty() {
        return Ok((TableKind::None, vec![]));
    }
    parts.sort_by_key(|p| p.number);
    Ok((TableKind::Mbr, parts))
}

/// Keep a partition only if it lies within the disk.
fn push_checked(
    disk: &Slice,
    parts: &mut Vec<Partition>,
    number: u32,
    start: u64,
    size: u64,
    type_name: String,
    name: Option<String>,
) {
    if size > 0 && start.checked_add(size).is_some_and(|end| end <= disk.len()) {
        parts.push(Partition { number, start, size, type_name, name });
    }
}

/// Follow the chain of extended boot records; logical partitions are numbered from 5.
fn read_logical(disk: &Slice, extended_start: u64, parts: &mut Vec<Partition>) -> Result<()> {
    let mut ebr_at = extended_start;
    let mut seen = HashSet::new();
    let mut number = 5;
    while seen.insert(ebr_at) && seen.len() <= MAX_LOGICAL && ebr_at + SECTOR <= disk.len() {
        let mut ebr = [0u8; 512];
        disk.read_at(ebr_at, &mut ebr)?;
        if le16(&ebr, 510) != 0xAA55 {
            break;
        }
        let first = &ebr[446..462];
        let next = &ebr[462..478];
        if first[4] != 0 && le32(first, 12) != 0 {
            let start = ebr_at + u64::from(le32(first, 8)) * SECTOR;
            let size = u64::from(le32(first, 12)) * SECTOR;
            push_checked(disk, parts, number, start, size, mbr_type(first[4]), None);
            number += 1;
        }
        if next[4] == 0 || le32(next, 8) == 0 {
            break;
        }
        ebr_at = extended_start + u64::from(le32(next, 8)) * SECTOR;
    }
    Ok(())
}

fn read_gpt(disk: &Slice) -> Result<Option<Vec<Partition>>> {
    if disk.len() < 2 * SECTOR {
        return Ok(None);
    }
    let mut header = [0u8; 512];
    disk.read_at(SECTOR, &mut header)?;
    if &header[0..8] != b"EFI PART" {
        return Ok(None);
    }
    let entries_lba = le64(&header, 72);
    let count = le32(&header, 80).min(MAX_GPT_ENTRIES);
    let entry_size = le32(&header, 84);
    if !(128..=4096).contains(&entry_size) || !entry_size.is_multiple_of(8) {
        return Ok(None);
    }
    let Some(table_start) = entries_lba.checked_mul(SECTOR) else { return Ok(None) };
    let table_len = u64::from(count) * u64::from(entry_size);
    if table_start.checked_add(table_len).is_none_or(|end| end > disk.len()) {
        return Ok(None);
    }
    let mut table = vec![0u8; table_len as usize];
    disk.read_at(table_start, &mut table)?;
    let mut parts = Vec::new();
    for (i, entry) in table.chunks(entry_size as usize).enumerate() {
        let type_guid = &entry[0..16];
        if type_guid.iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le64(entry, 32), le64(entry, 40));
        if last < first {
            continue;
        }
        let name_units: Vec<u16> = (0..36).map(|k| le16(entry, 56 + 2 * k)).take_while(|&u| u != 0).collect();
        let name = String::from_utf16_lossy(&name_units);
        let (Some(start), Some(size)) =
            (first.checked_mul(SECTOR), (last - first).checked_add(1).and_then(|n| n.checked_mul(SECTOR)))
        else {
            continue;
        };
        push_checked(
            disk,
            &mut parts,
            i as u32 + 1,
            start,
            size,
            gpt_type(type_guid),
            (!name.is_empty()).then_some(name),
        );
    }
    Ok(Some(parts))
}

/// A GUID as text: the first three fields little-endian, as GPT stores them.
fn guid_text(g: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

/// GPT type GUIDs by the names `fdisk` and the Discoverable Partitions Specification use.
const GPT_TYPES: &[(&str, &str)] = &[
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)"),
    ("44479540-F297-41B2-9AF7-D131D5F0458A", "Linux root (x86)"),
    ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "Linux root (ARM-64)"),
    ("8484680C-9521-48C6-9C11-B0720656F69E", "Linux /usr (x86-64)"),
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"),
    ("4D21B016-B534-45C2-A9FB-5C16E091FD2D", "Linux variable data"),
    ("7EC6F557-3BC5-4ACA-B293-16EF5DF639D1", "Linux temporary data"),
    ("3B8F8425-20E0-4F3B-907F-1A25A76F98E8", "Linux server data"),
    ("BC13C2FF-59E6-4262-A352-B275FD6F7172", "Linux extended boot"),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"),
    ("CA7D7CCB-63ED-4C53-861C-1742536059CC", "Linux LUKS"),
    ("7FFEC5C9-2D00-49B7-8941-3EA10A5586B7", "Linux dm-crypt"),
    ("8DA63339-0007-60C0-C436-083AC8230908", "Linux reserved"),
    ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data"),
    ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"),
    ("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery environment"),
    ("5808C8AA-7E8F-42E0-85D2-E1E90434CFB3", "Microsoft LDM metadata"),
    ("AF9B60A0-1431-4F62-BC68-3311714A69AD", "Microsoft LDM data"),
    ("E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D", "Microsoft Storage Spaces"),
    ("6A898CC3-1DD2-11B2-99A6-080020736631", "Solaris /usr & Apple ZFS"),
    ("516E7CB6-6ECF-11D6-8FF8-00022D09712B", "FreeBSD UFS"),
];

fn gpt_type(g: &[u8]) -> String {
    let text = guid_text(g);
    GPT_TYPES.iter().find(|(guid, _)| *guid == text).map_or(text, |(_, name)| (*name).to_string())
}

/// MBR type bytes by `fdisk`'s names.
fn mbr_type(kind: u8) -> String {
    let name = match kind {
        0x01 => "FAT12",
        0x04 | 0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0B => "W95 FAT32",
        0x0C => "W95 FAT32 (LBA)",
        0x0E => "W95 FAT16 (LBA)",
        0x27 => "Hidden NTFS WinRE",
        0x82 => "Linux swap / Solaris",
        0x83 => "Linux",
        0x8E => "Linux LVM",
        0xA5 => "FreeBSD",
        0xEE => "GPT",
        0xEF => "EFI (FAT-12/16/32)",
        0xFD => "Linux raid autodetect",
        other => return format!("0x{other:02x}"),
    };
    name.to_string()
}
