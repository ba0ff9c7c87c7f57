//! Manifests come from storage that is not trusted: decoding must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault::{Keys, Manifest, VaultId};

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::decode_unverified(data, "fuzz");
    let keys = Keys::unencrypted(&"00112233445566778899aabbccddeeff".parse::<VaultId>().unwrap());
    let _ = Manifest::decode(&keys, data, "fuzz");
    let _ = Manifest::decode_signed(data, &keys.point_public(), "fuzz");
});
