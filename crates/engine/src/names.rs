//! Names operators choose (VMs, disk labels) become parts of vault object keys: check them once.

use crate::error::{EngineError, Result};

/// Accept 1–64 ASCII letters, digits, `.`, `-`, `_`, not starting with `.` or `-`.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "{kind} name {name:?} is not allowed: use 1-64 letters, digits, '.', '-' or '_', not starting with '.' or '-'"
        )))
    }
}

/// A random RFC 4122 version-4 UUID, for new VMs.
pub fn new_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| EngineError::Invalid(format!("no random numbers: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// A random locally administered MAC in QEMU's 52:54:00 range, for restored VMs.
pub fn new_mac() -> Result<String> {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).map_err(|e| EngineError::Invalid(format!("no random numbers: {e}")))?;
    Ok(format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]))
}

/// Random hex digits, for suffixes that keep names unique.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| EngineError::Invalid(format!("no random numbers: {e}")))?;
    Ok(hex::encode(b))
}
