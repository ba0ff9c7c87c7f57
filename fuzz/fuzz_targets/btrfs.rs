//! btrfs structures come from guest disks, which are untrusted: opening a btrfs (superblock,
//! chunk map, trees), listing its subvolumes, and walking and reading each must end and must
//! never panic; vmvault's btrfs reader is its own code, so no panic is silenced. A btrfs
//! spreads its metadata over the volume, so the input is a sparse image: records of a
//! little-endian u32 block number and 4 KiB of data, the rest of a 256 MiB volume zeros
//! (seeds: `fuzz/seeds.sh`).
#![no_main]

mod shared;

use std::collections::HashMap;
use std::sync::Arc;

use guestfs::btrfs::BtrfsFs;
use guestfs::{BlockReader, Slice};
use libfuzzer_sys::fuzz_target;
use shared::walk;

const BLOCK: usize = 4096;
const SIZE: u64 = 256 << 20;

struct Sparse(HashMap<u64, Vec<u8>>);

impl BlockReader for Sparse {
    fn size(&self) -> u64 {
        SIZE
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        for (i, byte) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *byte = self.0.get(&(at / BLOCK as u64)).map_or(0, |b| b[(at % BLOCK as u64) as usize]);
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut blocks = HashMap::new();
    for record in data.chunks_exact(4 + BLOCK) {
        let index = u64::from(u32::from_le_bytes([record[0], record[1], record[2], record[3]])) % (SIZE / BLOCK as u64);
        blocks.insert(index, record[4..].to_vec());
    }
    let volume = Slice::whole(Arc::new(Sparse(blocks)));
    let Ok(fs) = BtrfsFs::open(volume) else { return };
    let mut budget = 1000;
    walk(&fs, b"/", 0, &mut budget, SIZE);
    for sub in fs.subvolumes().unwrap_or_default().into_iter().take(4) {
        if let Ok(at) = fs.at_subvolume(&sub.path) {
            let mut budget = 500;
            walk(&at, b"/", 0, &mut budget, SIZE);
        }
    }
});
