//! Partition tables: GPT, MBR with logical partitions in an extended partition, or none.
//! Sectors are 512 bytes. Checksums of GPT headers are not required to hold (a damaged table
//! is still worth reading), but every offset and count is bounds-checked against the disk.

use std::collections::HashSet;

use serde::Serialize;

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
    /// The type, named when known (`linux`, `efi`, `ntfs/exfat`, `fat32`, GUIDs or hex otherwise).
    pub type_name: String,
    /// GPT partition name, if any.
    pub name: Option<String>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).unwrap_or(0)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).unwrap_or(0)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
        .unwrap_or(0)
}

/// Read the partition table of `disk`.
pub fn read_table(disk: &Slice) -> Result<(TableKind, Vec<Partition>)> {
    if disk.len() < SECTOR {
        return Ok((TableKind::None, vec![]));
    }
    let mut mbr = [0u8; 512];
    disk.read_at(0, &mut mbr)?;
    if u16_at(&mbr, 510) != 0xAA55 {
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
        let (start, sectors) = (u64::from(u32_at(e, 8)), u64::from(u32_at(e, 12)));
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
        if u16_at(&ebr, 510) != 0xAA55 {
            break;
        }
        let first = &ebr[446..462];
        let next = &ebr[462..478];
        if first[4] != 0 && u32_at(first, 12) != 0 {
            let start = ebr_at + u64::from(u32_at(first, 8)) * SECTOR;
            let size = u64::from(u32_at(first, 12)) * SECTOR;
            push_checked(disk, parts, number, start, size, mbr_type(first[4]), None);
            number += 1;
        }
        if next[4] == 0 || u32_at(next, 8) == 0 {
            break;
        }
        ebr_at = extended_start + u64::from(u32_at(next, 8)) * SECTOR;
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
    let entries_lba = u64_at(&header, 72);
    let count = u32_at(&header, 80).min(MAX_GPT_ENTRIES);
    let entry_size = u32_at(&header, 84);
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
        let (first, last) = (u64_at(entry, 32), u64_at(entry, 40));
        if last < first {
            continue;
        }
        let name_units: Vec<u16> =
            (0..36).map(|k| u16_at(entry, 56 + 2 * k)).take_while(|&u| u != 0).collect();
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
        u32_at(g, 0),
        u16_at(g, 4),
        u16_at(g, 6),
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

fn gpt_type(g: &[u8]) -> String {
    let text = guid_text(g);
    let name = match text.as_str() {
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "linux",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "efi",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "microsoft-basic-data",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "linux-swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "linux-lvm",
        "21686148-6449-6E6F-744E-656564454649" => "bios-boot",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "microsoft-reserved",
        _ => return text,
    };
    name.to_string()
}

fn mbr_type(kind: u8) -> String {
    match kind {
        0x83 => "linux".into(),
        0x82 => "linux-swap".into(),
        0x8E => "linux-lvm".into(),
        0x07 => "ntfs/exfat".into(),
        0x0B | 0x0C => "fat32".into(),
        0x04 | 0x06 | 0x0E => "fat16".into(),
        0x01 => "fat12".into(),
        0xEF => "efi".into(),
        other => format!("0x{other:02x}"),
    }
}
