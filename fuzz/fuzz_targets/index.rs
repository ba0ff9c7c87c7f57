//! Fixed indexes come from storage that is not trusted: decoding must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = vault::FixedIndex::decode(data, "fuzz") {
        assert_eq!(index.encode(), data);
    }
});
