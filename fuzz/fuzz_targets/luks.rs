//! LUKS headers come from guest disks, which are untrusted: parsing a LUKS1 or LUKS2 header
//! (its JSON too: under the fuzzer the header checksum is not required) and opening a keyslot
//! must never panic. Keyslots whose key derivation would be expensive are only parsed, not
//! tried. The input is the start of a 32 MiB volume (seeds: `fuzz/seeds.sh`).
#![no_main]

mod shared;

use std::sync::Arc;

use guestfs::Slice;
use guestfs::luks::Kdf;
use libfuzzer_sys::fuzz_target;
use shared::Padded;

fuzz_target!(|data: &[u8]| {
    let volume = Slice::whole(Arc::new(Padded { data: data.to_vec(), size: 32 << 20 }));
    let Ok(header) = guestfs::luks::read_header(&volume) else { return };
    let cheap = header.keyslots.iter().all(|k| match &k.kdf {
        Kdf::Pbkdf2 { iterations, .. } => *iterations <= 2000,
        Kdf::Argon2 { time, memory_kib, .. } => *time <= 4 && *memory_kib <= 1024,
    }) && header.digests.iter().all(|d| d.iterations <= 2000);
    if cheap && let Ok(unlocked) = guestfs::luks::unlock(&volume, b"fuzz") {
        let mut buf = [0u8; 4096];
        let _ = guestfs::BlockReader::read_at(&unlocked, 0, &mut buf);
    }
});
