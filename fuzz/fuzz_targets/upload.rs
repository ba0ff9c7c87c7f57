//! What a client uploads to the server is checked by its key's class before it is stored:
//! no key and body make the check panic. The first byte says where the key ends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let (key, body) = rest.split_at((split as usize).min(rest.len()));
    let Ok(key) = std::str::from_utf8(key) else { return };
    let _ = server::validate::check_contents(key, body);
});
