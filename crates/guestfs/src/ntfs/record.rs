//! What the `ntfs` crate parses but does not give out: the initialized size of a non-resident
//! attribute (its valid data length). Bytes past it are allocated but were never written, and
//! read as zeros — on the volume they hold whatever was there before, so a reader that copies
//! them restores stale data. The size is read from the file record on the volume, with the
//! record's update-sequence fixups applied.

use crate::bytes::{le16, le64};
use crate::error::{GuestError, Result};
use crate::reader::Slice;

/// The stride of update-sequence fixups in a file record.
const FIXUP_STRIDE: usize = 512;
/// Where a non-resident attribute header keeps its initialized size.
const INITIALIZED_SIZE: usize = 0x38;
/// Largest file record read (NTFS uses 1 KiB; 4 KiB on 4Kn disks).
const MAX_RECORD: u32 = 64 * 1024;

/// The file record of `size` bytes at `record` on `volume`, its fixups applied.
fn read_record(volume: &Slice, record: u64, size: u32, what: &str) -> Result<Vec<u8>> {
    if size == 0 || size > MAX_RECORD {
        return Err(GuestError::corrupt(what, format!("a file record of {size} bytes")));
    }
    let mut data = vec![0u8; size as usize];
    volume.read_at(record, &mut data)?;
    let (at, count) = (usize::from(le16(&data, 4)), usize::from(le16(&data, 6)));
    let usn = le16(&data, at);
    for i in 1..count {
        let end = i * FIXUP_STRIDE;
        let (Some(saved), true) =
            (data.get(at + 2 * i..at + 2 * i + 2).map(<[u8]>::to_vec), end <= data.len())
        else {
            return Err(GuestError::corrupt(what, "a file record's update sequence past its end"));
        };
        if le16(&data, end - 2) != usn {
            return Err(GuestError::corrupt(what, "a torn file record (its update sequence does not match)"));
        }
        data[end - 2..end].copy_from_slice(&saved);
    }
    Ok(data)
}

/// The initialized size of the non-resident attribute `attribute_offset` bytes into the file
/// record of `size` bytes at `record`.
pub fn initialized_size(
    volume: &Slice,
    record: u64,
    size: u32,
    attribute_offset: u64,
    what: &str,
) -> Result<u64> {
    let data = read_record(volume, record, size, what)?;
    let at = usize::try_from(attribute_offset).unwrap_or(usize::MAX).saturating_add(INITIALIZED_SIZE);
    if at.saturating_add(8) > data.len() {
        return Err(GuestError::corrupt(what, "an attribute header past its file record"));
    }
    Ok(le64(&data, at))
}

/// A writer that passes on the first `valid` bytes and writes zeros for the rest: a stream's
/// bytes past its initialized size, whatever the clusters hold.
pub struct ZeroPast<'a> {
    out: &'a mut dyn std::io::Write,
    at: u64,
    valid: u64,
}

impl<'a> ZeroPast<'a> {
    /// Bytes from `valid` on become zeros.
    pub fn new(out: &'a mut dyn std::io::Write, valid: u64) -> ZeroPast<'a> {
        ZeroPast { out, at: 0, valid }
    }
}

impl std::io::Write for ZeroPast<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let keep = usize::try_from(self.valid.saturating_sub(self.at)).unwrap_or(usize::MAX).min(buf.len());
        self.out.write_all(&buf[..keep])?;
        if keep < buf.len() {
            self.out.write_all(&vec![0u8; buf.len() - keep])?;
        }
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
