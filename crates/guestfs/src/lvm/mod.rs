//! LVM2 volume groups, read-only: the label and metadata area of each physical volume (PV),
//! the volume group's text metadata (the newest copy on any of its PVs), and each logical
//! volume (LV) as a [`BlockReader`] that maps its extents onto the PVs — linear and striped
//! segments, across PVs on several disks of one VM. Thin, RAID, mirror, cache and snapshot
//! LVs are listed with what they are, not read. Nothing is activated or written.

mod config;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::bytes::{le32, le64};
use crate::error::Result;
use crate::reader::{BlockReader, Slice};

pub use config::{Value, parse};

const SECTOR: u64 = 512;
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER: u64 = 512;
/// At most this many segments and stripes per LV are accepted.
const MAX_SEGMENTS: usize = 4096;
const MAX_STRIPES: usize = 128;

/// Where the PV header is in a volume's first 4 KiB: LVM writes its label in one of the
/// first four sectors.
fn pv_header(head: &[u8]) -> Option<&[u8]> {
    (0..4).find_map(|sector| {
        let at = sector * SECTOR as usize;
        let label = head.get(at..at + 32)?;
        if &label[0..8] != b"LABELONE" || &label[24..32] != b"LVM2 001" {
            return None;
        }
        let offset = le32(label, 20) as usize;
        head.get(at + offset..).filter(|h| h.len() >= 40)
    })
}

/// The PV UUID as LVM prints it (`xxxxxx-xxxx-…`), if `head` (a volume's first 4 KiB)
/// holds an LVM2 label.
pub fn pv_uuid(head: &[u8]) -> Option<String> {
    let raw = pv_header(head)?.get(..32)?;
    let raw = std::str::from_utf8(raw).ok()?;
    Some(dashed(raw))
}

/// LVM's display form of a 32-character id: 6-4-4-4-4-4-6.
fn dashed(raw: &str) -> String {
    let mut out = String::new();
    let mut at = 0;
    for (i, len) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(raw.get(at..at + len).unwrap_or(""));
        at += len;
    }
    out
}

/// A PV as found on a volume, with its volume group's metadata as that PV holds it.
#[derive(Clone)]
pub struct PhysicalVolume {
    /// The PV UUID (display form).
    pub uuid: String,
    /// Which volume of the VM holds it (as `files parts` names it).
    pub volume_id: String,
    slice: Slice,
    metadata: Option<Value>,
}

impl PhysicalVolume {
    /// Read the PV label and metadata of `slice`; `None` if it holds no LVM2 label.
    pub fn read(volume_id: &str, slice: Slice) -> Result<Option<PhysicalVolume>> {
        let mut head = vec![0u8; 4096.min(slice.len() as usize)];
        slice.read_at(0, &mut head)?;
        let Some(header) = pv_header(&head) else { return Ok(None) };
        let uuid = dashed(&String::from_utf8_lossy(&header[..32]));
        // Data areas, then metadata areas, each a list of (offset, size) ended by zeros.
        let mut areas = header[40..].chunks_exact(16).map(|e| (le64(e, 0), le64(e, 8)));
        for (offset, _) in areas.by_ref() {
            if offset == 0 {
                break;
            }
        }
        let mut metadata = None;
        for (offset, size) in areas.take(8) {
            if offset == 0 {
                break;
            }
            if let Some(text) = read_metadata_area(&slice, offset, size)? {
                metadata = Some(parse(&text)?);
                break;
            }
        }
        Ok(Some(PhysicalVolume { uuid, volume_id: volume_id.to_string(), slice, metadata }))
    }
}

/// The current metadata text of the area at `offset` (`size` bytes) of a PV.
fn read_metadata_area(pv: &Slice, offset: u64, size: u64) -> Result<Option<Vec<u8>>> {
    let mut header = [0u8; 64];
    if offset.checked_add(size).is_none_or(|end| end > pv.len()) || size < MDA_HEADER {
        return Ok(None);
    }
    pv.read_at(offset, &mut header)?;
    if &header[4..20] != MDA_MAGIC {
        return Ok(None);
    }
    let (text_at, text_len) = (le64(&header, 40), le64(&header, 48));
    if text_len == 0 || text_at < MDA_HEADER || text_at >= size || text_len > size - MDA_HEADER {
        return Ok(None);
    }
    // The text may wrap from the end of the area to just after its header.
    let first = text_len.min(size - text_at);
    let mut text = vec![0u8; text_len as usize];
    pv.read_at(offset + text_at, &mut text[..first as usize])?;
    if first < text_len {
        pv.read_at(offset + MDA_HEADER, &mut text[first as usize..])?;
    }
    Ok(Some(text))
}

/// A logical volume: its place in the group and, when vmvault can read it, its bytes.
#[derive(Clone)]
pub struct LogicalVolume {
    /// Its name within the group.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The segment type (`linear`, `striped`, `thin`, `raid1`…).
    pub kind: String,
    /// Its bytes, when every PV it uses is present and its type is readable.
    pub reader: Option<Arc<dyn BlockReader>>,
    /// Why it cannot be read.
    pub problem: Option<String>,
}

/// A volume group assembled from the PVs found.
#[derive(Clone)]
pub struct VolumeGroup {
    /// Its name.
    pub name: String,
    /// The volumes (`files parts` ids) holding its PVs.
    pub pvs: Vec<String>,
    /// PVs named in its metadata but not on any disk of the point.
    pub missing: Vec<String>,
    /// Its visible logical volumes.
    pub lvs: Vec<LogicalVolume>,
}

/// Group the PVs found into volume groups (newest metadata wins) and map their LVs.
pub fn assemble(pvs: &[PhysicalVolume]) -> Vec<VolumeGroup> {
    // The newest metadata of each VG, by VG id.
    let mut newest: HashMap<String, (i64, String, &Value)> = HashMap::new();
    for pv in pvs {
        let Some(top) = &pv.metadata else { continue };
        for (name, vg) in top.entries() {
            if vg.get("physical_volumes").is_none() {
                continue;
            }
            let id = vg.str("id").unwrap_or(name).to_string();
            let seqno = vg.int("seqno").unwrap_or(0);
            if newest.get(&id).is_none_or(|(s, _, _)| *s < seqno) {
                newest.insert(id, (seqno, name.clone(), vg));
            }
        }
    }
    let mut groups: Vec<VolumeGroup> =
        newest.into_values().map(|(_, name, vg)| group(&name, vg, pvs)).collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    groups
}

fn group(name: &str, vg: &Value, found: &[PhysicalVolume]) -> VolumeGroup {
    let mut members: HashMap<&str, (&PhysicalVolume, u64)> = HashMap::new();
    let mut pvs = Vec::new();
    let mut missing = Vec::new();
    if let Some(section) = vg.get("physical_volumes") {
        for (key, pv) in section.entries() {
            let id = pv.str("id").unwrap_or("");
            match found.iter().find(|f| f.uuid == id) {
                Some(f) => {
                    let pe_start = pv.int("pe_start").unwrap_or(0).max(0) as u64 * SECTOR;
                    members.insert(key.as_str(), (f, pe_start));
                    pvs.push(f.volume_id.clone());
                }
                None => missing.push(format!("{key} ({id})")),
            }
        }
    }
    let extent = vg.int("extent_size").unwrap_or(0).max(0) as u64 * SECTOR;
    let mut lvs = Vec::new();
    if let Some(section) = vg.get("logical_volumes") {
        for (lv_name, lv) in section.entries() {
            let visible =
                lv.list("status").is_some_and(|s| s.iter().any(|v| *v == Value::Str("VISIBLE".into())));
            if visible {
                lvs.push(logical_volume(lv_name, lv, extent, &members));
            }
        }
    }
    VolumeGroup { name: name.to_string(), pvs, missing, lvs }
}

fn logical_volume(
    name: &str,
    lv: &Value,
    extent: u64,
    members: &HashMap<&str, (&PhysicalVolume, u64)>,
) -> LogicalVolume {
    let mut segments = Vec::new();
    let mut kinds = Vec::new();
    let mut problem = None;
    for (key, seg) in lv.entries().iter().filter(|(k, _)| k.starts_with("segment")) {
        let Value::Section(_) = seg else { continue };
        let kind = seg.str("type").unwrap_or("?").to_string();
        if !kinds.contains(&kind) {
            kinds.push(kind.clone());
        }
        match mapped_segment(seg, &kind, extent, members) {
            Ok(s) => segments.push(s),
            Err(reason) => {
                problem.get_or_insert(format!("{key}: {reason}"));
            }
        }
        if segments.len() > MAX_SEGMENTS {
            problem.get_or_insert("more than 4096 segments".into());
            break;
        }
    }
    segments.sort_by_key(|s: &Segment| s.start);
    let size = segments.iter().map(|s| s.start + s.len).max().unwrap_or(0);
    let contiguous = segments.windows(2).all(|w| w[0].start + w[0].len == w[1].start);
    if problem.is_none() && !contiguous {
        problem = Some("its segments overlap or leave gaps".into());
    }
    if problem.is_none() && segments.is_empty() {
        problem = Some("it has no segments".into());
    }
    let kind = if kinds == ["striped"] && segments.iter().all(|s| s.stripes.len() == 1) {
        "linear".to_string()
    } else {
        kinds.join("+")
    };
    let reader: Option<Arc<dyn BlockReader>> =
        problem.is_none().then(|| Arc::new(MappedVolume { size, segments }) as Arc<dyn BlockReader>);
    LogicalVolume { name: name.to_string(), size, kind, reader, problem }
}

/// A run of an LV's bytes laid over one or more PV areas (striped when more than one).
struct Segment {
    start: u64,
    len: u64,
    stripe_size: u64,
    stripes: Vec<(Slice, u64)>,
}

fn mapped_segment(
    seg: &Value,
    kind: &str,
    extent: u64,
    members: &HashMap<&str, (&PhysicalVolume, u64)>,
) -> std::result::Result<Segment, String> {
    if kind != "striped" {
        return Err(format!("{kind} volumes are not readable by vmvault (only linear and striped)"));
    }
    let bytes = |n: i64| u64::try_from(n).ok().and_then(|n| n.checked_mul(extent));
    let start = seg.int("start_extent").and_then(bytes).ok_or("no start_extent")?;
    let len = seg.int("extent_count").and_then(bytes).ok_or("no extent_count")?;
    let list = seg.list("stripes").ok_or("no stripes")?;
    if list.is_empty() || list.len() % 2 != 0 || list.len() / 2 > MAX_STRIPES {
        return Err("a malformed stripes list".into());
    }
    let count = (list.len() / 2) as u64;
    let stripe_size = if count > 1 {
        seg.int("stripe_size")
            .and_then(|n| u64::try_from(n).ok())
            .and_then(|n| n.checked_mul(SECTOR))
            .filter(|&n| n > 0)
            .ok_or("a striped segment without a stripe_size")?
    } else {
        len.max(1)
    };
    if len % count != 0 {
        return Err("extents do not divide among its stripes".into());
    }
    let mut stripes = Vec::new();
    for pair in list.chunks(2) {
        let (Value::Str(pv), Value::Int(first)) = (&pair[0], &pair[1]) else {
            return Err("a malformed stripes list".into());
        };
        let (member, pe_start) =
            members.get(pv.as_str()).ok_or_else(|| format!("{pv} is on a disk that is not in this point"))?;
        let at = bytes(*first).and_then(|b| b.checked_add(*pe_start)).ok_or("an extent out of range")?;
        if at.checked_add(len / count).is_none_or(|end| end > member.slice.len()) {
            return Err(format!("it runs past the end of {pv}"));
        }
        stripes.push((member.slice.clone(), at));
    }
    Ok(Segment { start, len, stripe_size, stripes })
}

/// An LV's bytes: reads are split along segments and stripes.
struct MappedVolume {
    size: u64,
    segments: Vec<Segment>,
}

impl BlockReader for MappedVolume {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let i = self.segments.partition_point(|s| s.start + s.len <= at);
            let seg =
                self.segments.get(i).filter(|s| s.start <= at).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the LV")
                })?;
            let rel = at - seg.start;
            let count = seg.stripes.len() as u64;
            let chunk = rel / seg.stripe_size;
            let within = rel % seg.stripe_size;
            let (pv, base) = &seg.stripes[(chunk % count) as usize];
            let pv_at = base + (chunk / count) * seg.stripe_size + within;
            let n = ((seg.stripe_size - within).min(seg.len - rel) as usize).min(buf.len() - done);
            pv.read_at(pv_at, &mut buf[done..done + n]).map_err(io::Error::other)?;
            done += n;
        }
        Ok(())
    }
}
