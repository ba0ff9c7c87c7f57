//! Partition tables come from guest disks, which are untrusted: parsing must never panic, and
//! every partition found must lie within the disk.
#![no_main]

use std::sync::Arc;

use guestfs::reader::Slice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let disk = Slice::whole(Arc::new(data.to_vec()));
    if let Ok((_, parts)) = guestfs::partition::read_table(&disk) {
        for p in parts {
            assert!(p.start + p.size <= len);
        }
    }
});
