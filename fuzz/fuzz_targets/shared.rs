//! What the guest-disk fuzz targets share: a disk whose first bytes are the input, and a walk
//! over every entry of a guest filesystem within a budget.
#![allow(dead_code)] // not every target uses every item

use guestfs::GuestFs;
use guestfs::tree::{EntryKind, join};

/// A disk of `size` bytes whose first bytes are the input and the rest zeros.
pub struct Padded {
    pub data: Vec<u8>,
    pub size: u64,
}

impl guestfs::BlockReader for Padded {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.size);
        assert!(end.is_some(), "a read past the end of the disk got through the reader's checks");
        buf.fill(0);
        let start = offset as usize;
        if start < self.data.len() {
            let n = buf.len().min(self.data.len() - start);
            buf[..n].copy_from_slice(&self.data[start..start + n]);
        }
        Ok(())
    }
}

/// A sparse disk of `size` bytes made from records of a little-endian u32 block number and
/// 4 KiB of data (for filesystems whose metadata is spread over the volume); the rest zeros.
pub struct Sparse {
    blocks: std::collections::HashMap<u64, Vec<u8>>,
    size: u64,
}

/// The block size of [`Sparse`] records.
pub const BLOCK: usize = 4096;

impl Sparse {
    pub fn from_records(data: &[u8], size: u64) -> Sparse {
        let mut blocks = std::collections::HashMap::new();
        for record in data.chunks_exact(4 + BLOCK) {
            let index = u64::from(u32::from_le_bytes([record[0], record[1], record[2], record[3]])) % (size / BLOCK as u64);
            blocks.insert(index, record[4..].to_vec());
        }
        Sparse { blocks, size }
    }
}

impl guestfs::BlockReader for Sparse {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let block = BLOCK as u64;
        for (i, byte) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *byte = self.blocks.get(&(at / block)).map_or(0, |b| b[(at % block) as usize]);
        }
        Ok(())
    }
}

/// List, stat, read and take the extended attributes of everything under `dir`, at most
/// `budget` entries and 8 levels deep.
/// Files larger than `max_file` are not read: a sparse file may claim any size, and reading
/// exabytes of holes proves nothing.
pub fn walk(fs: &dyn GuestFs, dir: &[u8], depth: usize, budget: &mut usize, max_file: u64) {
    let Ok(entries) = fs.list(dir) else { return };
    for e in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let path = join(dir, &e.name);
        let _ = fs.stat(&path);
        let _ = fs.xattrs(&path);
        match e.kind {
            EntryKind::Dir if depth < 8 => walk(fs, &path, depth + 1, budget, max_file),
            EntryKind::File if e.size <= max_file => {
                let _ = fs.read_file(&path, &mut std::io::sink());
            }
            EntryKind::Symlink => {
                let _ = fs.read_link(&path);
            }
            _ => {}
        }
    }
}
