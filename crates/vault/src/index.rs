//! Fixed index: the ordered list of chunk ids that make up one disk of one recovery point.
//! Byte layout in docs/FORMAT.md ("Fixed index").

use crate::error::{Result, VaultError};
use crate::id::ChunkId;

/// Magic number of a fixed index.
pub const INDEX_MAGIC: [u8; 4] = *b"VMVI";
/// Version of the index layout this code writes and reads.
pub const INDEX_VERSION: u8 = 1;
/// Fixed header length.
pub const INDEX_HEADER_LEN: usize = 64;
/// The chunk size of every index this version writes: 4 MiB.
pub const CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Largest disk an index may describe (bounds allocation on hostile input): 64 TiB.
pub const MAX_DISK_SIZE: u64 = 64 << 40;

const CHECKSUM_AT: usize = 32;

/// One disk of one recovery point: its size and a chunk id per 4 MiB block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedIndex {
    disk_size: u64,
    entries: Vec<ChunkId>,
}

impl FixedIndex {
    /// An index of a disk of `disk_size` bytes whose blocks are all zeros so far.
    pub fn zeroed(disk_size: u64) -> Result<Self> {
        if disk_size > MAX_DISK_SIZE {
            return Err(VaultError::Invalid(format!(
                "disk of {disk_size} bytes is larger than the index limit of {MAX_DISK_SIZE}"
            )));
        }
        let count = entry_count(disk_size);
        Ok(FixedIndex { disk_size, entries: vec![ChunkId::ZERO; count as usize] })
    }

    /// Logical size of the disk in bytes.
    pub fn disk_size(&self) -> u64 {
        self.disk_size
    }

    /// Bytes per block (always [`CHUNK_SIZE`] in this version).
    pub fn chunk_size(&self) -> u32 {
        CHUNK_SIZE
    }

    /// Chunk ids in disk order; [`ChunkId::ZERO`] marks a block of zeros.
    pub fn entries(&self) -> &[ChunkId] {
        &self.entries
    }

    /// Set the chunk of block `block`; out-of-range blocks are a caller bug reported as an error.
    pub fn set(&mut self, block: usize, id: ChunkId) -> Result<()> {
        let len = self.entries.len();
        let slot = self.entries.get_mut(block).ok_or_else(|| {
            VaultError::Invalid(format!("block {block} is past the end of an index of {len} blocks"))
        })?;
        *slot = id;
        Ok(())
    }

    /// Length in bytes of block `block` (the last one may be short).
    pub fn block_len(&self, block: usize) -> u64 {
        let start = block as u64 * u64::from(CHUNK_SIZE);
        self.disk_size.saturating_sub(start).min(u64::from(CHUNK_SIZE))
    }

    /// Serialise; the checksum covers header and entries.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + 32 * self.entries.len());
        out.extend_from_slice(&INDEX_MAGIC);
        out.push(INDEX_VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.disk_size.to_le_bytes());
        out.extend_from_slice(&CHUNK_SIZE.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        out.extend_from_slice(&[0; 32]);
        for id in &self.entries {
            out.extend_from_slice(id.as_bytes());
        }
        let sum = blake3::hash(&out);
        out[CHECKSUM_AT..INDEX_HEADER_LEN].copy_from_slice(sum.as_bytes());
        out
    }

    /// The index's checksum: what a signed manifest records to bind this index to it.
    pub fn digest_of(encoded: &[u8]) -> Option<[u8; 32]> {
        encoded.get(CHECKSUM_AT..INDEX_HEADER_LEN)?.try_into().ok()
    }

    /// Every non-zero entry of an index read without any check — what a damaged index may
    /// reference. Only for GC, which must never miss a reference: a flipped bit makes one id
    /// wrong, and keeping a chunk nobody uses costs only space.
    pub fn ids_anyway(bytes: &[u8]) -> impl Iterator<Item = ChunkId> + '_ {
        bytes.get(INDEX_HEADER_LEN..).unwrap_or_default().chunks_exact(32).filter_map(|c| {
            let id = ChunkId::from_bytes(c.try_into().ok()?);
            (!id.is_zero()).then_some(id)
        })
    }

    /// Parse and check an index; `what` names it in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        let corrupt = |reason: String| VaultError::corrupt(what, reason);
        if bytes.len() < INDEX_HEADER_LEN {
            return Err(corrupt(format!("{} bytes, shorter than the header", bytes.len())));
        }
        if bytes[0..4] != INDEX_MAGIC {
            return Err(corrupt("not a vmvault index (bad magic)".into()));
        }
        let mut zeroed = bytes.to_vec();
        zeroed[CHECKSUM_AT..INDEX_HEADER_LEN].fill(0);
        if blake3::hash(&zeroed).as_bytes() != &bytes[CHECKSUM_AT..INDEX_HEADER_LEN] {
            return Err(corrupt("checksum mismatch (truncated or altered)".into()));
        }
        if bytes[4] != INDEX_VERSION {
            return Err(VaultError::UnsupportedVersion {
                what: what.to_string(),
                found: bytes[4].into(),
                supported: INDEX_VERSION.into(),
            });
        }
        if bytes[5..8] != [0; 3] || bytes[20..24] != [0; 4] {
            return Err(corrupt("reserved header bytes set".into()));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let disk_size = u64_at(8);
        let chunk_size = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let count = u64_at(24);
        if chunk_size != CHUNK_SIZE {
            return Err(corrupt(format!("chunk size {chunk_size}, expected {CHUNK_SIZE}")));
        }
        if disk_size > MAX_DISK_SIZE || count != entry_count(disk_size) {
            return Err(corrupt(format!("{count} entries do not fit a disk of {disk_size} bytes")));
        }
        let body = &bytes[INDEX_HEADER_LEN..];
        if body.len() as u64 != count * 32 {
            return Err(corrupt(format!("{} entry bytes, expected {}", body.len(), count * 32)));
        }
        let entries = body
            .chunks_exact(32)
            .map(|c| {
                let mut id = [0u8; 32];
                id.copy_from_slice(c);
                ChunkId::from_bytes(id)
            })
            .collect();
        Ok(FixedIndex { disk_size, entries })
    }
}

fn entry_count(disk_size: u64) -> u64 {
    disk_size.div_ceil(u64::from(CHUNK_SIZE))
}
