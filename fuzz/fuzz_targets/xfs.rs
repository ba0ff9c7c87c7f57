//! XFS structures come from guest disks, which are untrusted: opening, listing, walking and
//! reading any bytes as XFS must end and must never panic. vmvault's XFS reader is its own
//! code, so no panic is silenced here: every one is a crash. The input is the start of the
//! volume; the rest of a 32 MiB volume reads as zeros (seeds: `fuzz/seeds.sh`).
#![no_main]

mod shared;

use std::sync::Arc;

use guestfs::Slice;
use guestfs::xfs::XfsFs;
use libfuzzer_sys::fuzz_target;
use shared::{Padded, walk};

const SIZE: u64 = 32 << 20;

fuzz_target!(|data: &[u8]| {
    let volume = Slice::whole(Arc::new(Padded { data: data.to_vec(), size: SIZE }));
    if let Ok(fs) = XfsFs::open(volume) {
        let _ = guestfs::GuestFs::warning(&fs);
        let mut budget = 2000;
        walk(&fs, b"/", 0, &mut budget, SIZE);
    }
});
