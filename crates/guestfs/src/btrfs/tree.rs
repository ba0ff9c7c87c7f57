//! btrfs's trees, read-only: the superblock, the logical→physical map (the chunks in the
//! superblock's system array, then the chunk tree), and a search of any B-tree for the items
//! with keys in a range. Nodes are checked (owner-independent: their own bytenr and level)
//! before use, descents are bounded, and a small cache keeps recently read nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::bytes::{le16, le32, le64};
use crate::error::{GuestError, Result};
use crate::reader::Slice;

/// Where the primary superblock is.
pub const SUPERBLOCK: u64 = 0x10000;
/// Item types used here.
pub const INODE_ITEM: u8 = 1;
/// An inode's name in its directory, keyed by the directory.
pub const INODE_REF: u8 = 12;
/// Extended attributes of an inode, keyed by the hash of the name.
pub const XATTR_ITEM: u8 = 24;
pub const DIR_ITEM: u8 = 84;
pub const DIR_INDEX: u8 = 96;
pub const EXTENT_DATA: u8 = 108;
pub const ROOT_ITEM: u8 = 132;
pub const ROOT_REF: u8 = 156;
const CHUNK_ITEM: u8 = 228;
const MAX_LEVEL: u8 = 8;
const NODE_CACHE: usize = 256;
const HEADER: usize = 0x65;

/// An item's key: object, type, offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub objectid: u64,
    pub ty: u8,
    pub offset: u64,
}

impl Key {
    fn at(b: &[u8], at: usize) -> Key {
        Key { objectid: le64(b, at), ty: b.get(at + 8).copied().unwrap_or(0), offset: le64(b, at + 9) }
    }
}

fn bad(reason: impl std::fmt::Display) -> GuestError {
    GuestError::corrupt("btrfs", reason)
}

/// One chunk: logical range, and where its copies (or stripes) are.
#[derive(Clone, Debug)]
struct Chunk {
    logical: u64,
    length: u64,
    stripe_len: u64,
    kind: u64,
    stripes: Vec<(u64, u64)>,
}

const RAID0: u64 = 1 << 3;
const RAID10: u64 = 1 << 6;
const RAID5_6: u64 = (1 << 7) | (1 << 8);

/// The superblock fields used, and the volume's devices and chunks.
pub struct Volume {
    devices: HashMap<u64, Slice>,
    chunks: Vec<Chunk>,
    pub nodesize: u32,
    pub root: u64,
    pub label: Option<String>,
    /// How many devices the filesystem has, by its superblock.
    pub device_count: u64,
    cache: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
}

fn parse_chunk(key: Key, b: &[u8]) -> Option<Chunk> {
    let stripes = usize::from(le16(b, 44));
    if stripes == 0 || b.len() < 48 + stripes * 32 {
        return None;
    }
    Some(Chunk {
        logical: key.offset,
        length: le64(b, 0),
        stripe_len: le64(b, 16),
        kind: le64(b, 24),
        stripes: (0..stripes).map(|i| (le64(b, 48 + i * 32), le64(b, 56 + i * 32))).collect(),
    })
}

impl Volume {
    /// Read the superblock of the device with `slice`, and take as its other devices those of
    /// `others` that belong to the same filesystem (their devids from their own superblocks).
    pub fn open(slice: Slice, others: &[Slice]) -> Result<Volume> {
        let mut sb = vec![0u8; 4096];
        slice.read_at(SUPERBLOCK, &mut sb)?;
        if &sb[0x40..0x48] != b"_BHRfS_M" {
            return Err(bad("no btrfs magic"));
        }
        let nodesize = le32(&sb, 0x94);
        let sectorsize = le32(&sb, 0x90);
        if !(4096..=65536).contains(&nodesize) || !nodesize.is_power_of_two() || !sectorsize.is_power_of_two()
        {
            return Err(bad("an impossible node or sector size"));
        }
        let devid = le64(&sb, 0xc9);
        let mut devices = HashMap::from([(devid, slice)]);
        for other in others {
            let mut theirs = vec![0u8; 4096];
            if other.read_at(SUPERBLOCK, &mut theirs).is_ok()
                && theirs[0x40..0x48] == sb[0x40..0x48]
                && theirs[0x20..0x30] == sb[0x20..0x30]
            {
                devices.entry(le64(&theirs, 0xc9)).or_insert_with(|| other.clone());
            }
        }
        let mut volume = Volume {
            devices,
            chunks: Vec::new(),
            nodesize,
            root: le64(&sb, 0x50),
            label: {
                let raw = &sb[0x12b..0x22b];
                let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                let l = String::from_utf8_lossy(&raw[..end]).to_string();
                (!l.is_empty()).then_some(l)
            },
            device_count: le64(&sb, 0x88),
            cache: Mutex::new(HashMap::new()),
        };
        // The system chunks, enough to read the chunk tree.
        let size = (le32(&sb, 0xa0) as usize).min(2048);
        let array = &sb[0x32b..0x32b + size];
        let mut at = 0;
        while at + 17 + 48 <= array.len() {
            let key = Key::at(array, at);
            let chunk = parse_chunk(key, &array[at + 17..]).ok_or_else(|| bad("a malformed system chunk"))?;
            at += 17 + 48 + chunk.stripes.len() * 32;
            volume.chunks.push(chunk);
        }
        let chunk_root = le64(&sb, 0x58);
        let items = volume.search(
            chunk_root,
            Key { objectid: 0, ty: 0, offset: 0 },
            Key { objectid: u64::MAX, ty: u8::MAX, offset: u64::MAX },
            Some(CHUNK_ITEM),
        )?;
        let mut chunks = Vec::new();
        for (key, data) in items {
            if key.ty == CHUNK_ITEM {
                chunks.push(parse_chunk(key, &data).ok_or_else(|| bad("a malformed chunk item"))?);
            }
        }
        if !chunks.is_empty() {
            volume.chunks = chunks;
        }
        volume.chunks.sort_by_key(|c| c.logical);
        Ok(volume)
    }

    /// Bytes at a logical address, from the first copy whose device is here.
    pub fn read_logical(&self, logical: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = logical.saturating_add(done as u64);
            let i = self.chunks.partition_point(|c| c.logical.saturating_add(c.length) <= at);
            let chunk = self
                .chunks
                .get(i)
                .filter(|c| c.logical <= at)
                .ok_or_else(|| bad(format!("logical address {at} is in no chunk")))?;
            let rel = at - chunk.logical;
            let mut n = ((chunk.length - rel) as usize).min(buf.len() - done);
            let (device, physical) = if chunk.kind & RAID5_6 != 0 {
                return Err(GuestError::Unsupported {
                    what: "btrfs".into(),
                    reason: "RAID5/6 chunks are not readable yet".into(),
                });
            } else if chunk.kind & (RAID0 | RAID10) != 0 {
                let copies = if chunk.kind & RAID10 != 0 { 2 } else { 1 };
                let width = (chunk.stripes.len() / copies).max(1) as u64;
                let stripe_len = chunk.stripe_len.max(4096);
                let nr = rel / stripe_len;
                let within = rel % stripe_len;
                n = n.min((stripe_len - within) as usize);
                let index = (nr % width) as usize * copies;
                let copies = chunk
                    .stripes
                    .get(index..index + copies)
                    .ok_or_else(|| bad("a striped chunk with too few stripes"))?;
                let (dev, off) = self.present(copies)?;
                (dev, off.saturating_add((nr / width).saturating_mul(stripe_len)).saturating_add(within))
            } else {
                let (dev, off) = self.present(&chunk.stripes)?;
                (dev, off.saturating_add(rel))
            };
            device.read_at(physical, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// How many of the filesystem's devices were found.
    pub fn devices_found(&self) -> u64 {
        self.devices.len() as u64
    }

    /// The first of `stripes` whose device is present.
    fn present(&self, stripes: &[(u64, u64)]) -> Result<(&Slice, u64)> {
        stripes.iter().find_map(|(dev, off)| self.devices.get(dev).map(|s| (s, *off))).ok_or_else(|| {
            GuestError::Unsupported {
                what: "btrfs".into(),
                reason: format!(
                    "its data is on device {} of the filesystem, which is not in this point",
                    stripes.first().map_or(0, |s| s.0)
                ),
            }
        })
    }

    fn node(&self, logical: u64) -> Result<Arc<Vec<u8>>> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(&logical) {
            return Ok(Arc::clone(hit));
        }
        let mut raw = vec![0u8; self.nodesize as usize];
        self.read_logical(logical, &mut raw)?;
        if le64(&raw, 0x30) != logical {
            return Err(bad(format!("the node at {logical} says it is elsewhere")));
        }
        let raw = Arc::new(raw);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= NODE_CACHE {
            cache.clear();
        }
        cache.insert(logical, Arc::clone(&raw));
        Ok(raw)
    }

    /// Every item of the tree at `root` with `min <= key <= max` (of type `ty`, if given),
    /// in key order.
    pub fn search(&self, root: u64, min: Key, max: Key, ty: Option<u8>) -> Result<Vec<(Key, Vec<u8>)>> {
        let mut out = Vec::new();
        self.descend(root, min, max, ty, MAX_LEVEL + 1, &mut out)?;
        Ok(out)
    }

    fn descend(
        &self,
        at: u64,
        min: Key,
        max: Key,
        ty: Option<u8>,
        depth: u8,
        out: &mut Vec<(Key, Vec<u8>)>,
    ) -> Result<()> {
        if depth == 0 {
            return Err(bad("a tree deeper than btrfs allows"));
        }
        let node = self.node(at)?;
        let count = le32(&node, 0x60) as usize;
        let level = node[0x64];
        if level >= depth || level > MAX_LEVEL {
            return Err(bad(format!(
                "the node at {at} has level {level} below a node of level {}",
                depth - 1
            )));
        }
        if level == 0 {
            if HEADER + count * 25 > node.len() {
                return Err(bad(format!("the leaf at {at} claims {count} items")));
            }
            for i in 0..count {
                let item = HEADER + i * 25;
                let key = Key::at(&node, item);
                if key < min || key > max || ty.is_some_and(|t| t != key.ty) {
                    continue;
                }
                let (offset, size) = (le32(&node, item + 17) as usize, le32(&node, item + 21) as usize);
                let data = node
                    .get(HEADER + offset..HEADER + offset + size)
                    .ok_or_else(|| bad(format!("an item past the end of the leaf at {at}")))?;
                out.push((key, data.to_vec()));
            }
            return Ok(());
        }
        if HEADER + count * 33 > node.len() {
            return Err(bad(format!("the node at {at} claims {count} children")));
        }
        for i in 0..count {
            let item = HEADER + i * 33;
            let key = Key::at(&node, item);
            let next = (i + 1 < count).then(|| Key::at(&node, item + 33));
            // A child holds keys from its own key up to the next child's.
            if key > max || next.is_some_and(|n| n <= min) {
                continue;
            }
            self.descend(le64(&node, item + 17), min, max, ty, level, out)?;
        }
        Ok(())
    }
}
