//! The NTFS pieces vmvault decodes itself, on bytes from guest disks: LZNT1-compressed units
//! (first input byte even) and reparse point buffers — symlinks, junctions, Interix links
//! (odd). Each must end and never panic, whatever the bytes.
#![no_main]

use guestfs::ntfs::{lznt1, reparse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    if selector % 2 == 0 {
        // A compression unit is 16 clusters: 64 KiB with 4 KiB clusters.
        let mut out = vec![0u8; 65536];
        if let Ok(n) = lznt1::decompress(rest, &mut out) {
            assert!(n <= out.len());
        }
    } else {
        let _ = reparse::tag(rest);
        let _ = reparse::target(rest);
        let _ = reparse::interix_target(rest);
    }
});
