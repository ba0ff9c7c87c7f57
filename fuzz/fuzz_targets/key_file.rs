//! Key files come from storage that is not trusted: decoding must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vault::keyfile::KeyFile::decode(data, "fuzz");
    let _ = vault::RecoveryKey::parse(&String::from_utf8_lossy(data));
});
