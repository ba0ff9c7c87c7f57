//! ext2/3/4 structures come from guest disks, which are untrusted: opening, listing, walking,
//! reading and taking the extended attributes of any bytes as ext must end and must never
//! panic. This target keeps libFuzzer's panic hook, so a panic is a crash even where
//! `guestfs::guard` would contain it: the attribute and `inline_data` readers (vmvault's code
//! and its patches to ext4-view) are held to that. The input is a sparse image: records of a
//! little-endian u32 block number and 4 KiB of data, the rest of a 64 MiB volume zeros
//! (seeds: `fuzz/seeds.sh`).
#![no_main]

mod shared;

use std::sync::Arc;

use guestfs::Slice;
use guestfs::ext::ExtFs;
use libfuzzer_sys::fuzz_target;
use shared::{Sparse, walk};

const SIZE: u64 = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let volume = Slice::whole(Arc::new(Sparse::from_records(data, SIZE)));
    if let Ok(fs) = ExtFs::open(volume) {
        let mut budget = 1000;
        walk(&fs, b"/", 0, &mut budget, SIZE);
    }
});
