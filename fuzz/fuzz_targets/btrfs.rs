//! btrfs structures come from guest disks, which are untrusted: opening a btrfs (superblock,
//! chunk map, trees), listing its subvolumes, and walking and reading each must end and must
//! never panic; vmvault's btrfs reader is its own code, so no panic is silenced. A btrfs
//! spreads its metadata over the volume, so the input is a sparse image: records of a
//! little-endian u32 block number and 4 KiB of data, the rest of a 256 MiB volume zeros
//! (seeds: `fuzz/seeds.sh`).
#![no_main]

mod shared;

use std::sync::Arc;

use guestfs::btrfs::BtrfsFs;
use guestfs::Slice;
use libfuzzer_sys::fuzz_target;
use shared::{Sparse, walk};

const SIZE: u64 = 256 << 20;

fuzz_target!(|data: &[u8]| {
    let volume = Slice::whole(Arc::new(Sparse::from_records(data, SIZE)));
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
