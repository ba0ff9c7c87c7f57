//! Chunk blobs come from storage that is not trusted: decoding must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::{ChunkId, Keys, VaultId};

fuzz_target!(|data: &[u8]| {
    let id = ChunkId::from_bytes([7; 32]);
    let _ = vault::blob::check(&id, data);
    let keys = Keys::unencrypted(&"00112233445566778899aabbccddeeff".parse::<VaultId>().unwrap());
    let _ = vault::blob::open(&keys, &id, data);
});
