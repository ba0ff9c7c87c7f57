//! Direct I/O (`O_DIRECT`) for the large objects of a local vault.
//!
//! Chunks are written once and read rarely, so caching them only costs: a backup of a few
//! GiB would push the host's hot data (its running VMs' pages) out of the page cache, and
//! on a host that is itself a VM (free page reporting, ballooning) every fresh page-cache
//! page is a fault in the hypervisor — measured here, buffered writes of new data cost
//! 11 µs of kernel time per 4 KiB page, direct writes almost none. Large objects therefore
//! go straight between vmvault's buffers and the disk; small ones (catalog documents,
//! manifests) keep the page cache, where they are read again and again.
//!
//! Direct I/O wants the buffer, the offset and the length aligned to the device's logical
//! block: [`ALIGN`] (4 KiB) covers every common device. A write pads the object to a whole
//! block and then cuts the file to its real length. A filesystem without direct I/O (tmpfs,
//! some network filesystems) refuses with `EINVAL`: the caller then writes buffered and
//! remembers not to try again.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;

/// Objects at least this large bypass the page cache.
pub(super) const DIRECT_MIN: u64 = 128 * 1024;
/// Alignment of direct I/O buffers, offsets and lengths.
const ALIGN: usize = 4096;

thread_local! {
    /// This thread's aligned staging buffer for writes, kept between calls: fresh memory is
    /// what direct I/O saves, so it is not allocated per object.
    static STAGING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether an error means "this filesystem does not do direct I/O" rather than a real failure.
pub(super) fn unsupported(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::InvalidInput || e.raw_os_error() == Some(libc::EINVAL)
}

/// The aligned window of `buf` able to hold `len` bytes rounded up to whole blocks.
fn aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let padded = len.div_ceil(ALIGN) * ALIGN;
    if buf.len() < padded + ALIGN {
        buf.resize(padded + ALIGN, 0);
    }
    let start = buf.as_ptr().align_offset(ALIGN);
    &mut buf[start..start + padded]
}

/// Options that open a file for direct I/O.
pub(super) fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(libc::O_DIRECT);
    options
}

/// Write `data` into `file` (opened with [`options`], empty) with direct I/O.
pub(super) fn write(file: &mut File, data: &[u8]) -> std::io::Result<()> {
    STAGING.with(|cell| {
        let mut buf = cell.borrow_mut();
        let window = aligned(&mut buf, data.len());
        window[..data.len()].copy_from_slice(data);
        window[data.len()..].fill(0);
        file.write_all(window)?;
        file.set_len(data.len() as u64)
    })
}

/// Read all of the file at `path`, `len` bytes long, with direct I/O; `None` when its length
/// is no longer `len`.
pub(super) fn read(path: &Path, len: u64) -> std::io::Result<Option<Bytes>> {
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("object too large to read"))?;
    let mut file = options().read(true).open(path)?;
    let mut buf = Vec::new();
    let window = aligned(&mut buf, len);
    let mut filled = 0;
    while filled < window.len() {
        match file.read(&mut window[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if filled != len {
        return Ok(None);
    }
    let start = buf.as_ptr().align_offset(ALIGN);
    Ok(Some(Bytes::from(buf).slice(start..start + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_of_any_length_is_written_and_read_back_exactly() {
        // In the source tree: a real disk, where `/tmp` may be a tmpfs without O_DIRECT.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        for len in [DIRECT_MIN as usize, 4096 * 40, 4096 * 40 + 1, 4 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let path = dir.path().join(format!("o{len}"));
            let mut file = options().write(true).create_new(true).open(&path).expect("open with O_DIRECT");
            write(&mut file, &data).expect("write");
            assert_eq!(std::fs::metadata(&path).expect("stat").len(), len as u64, "cut to its length");
            assert_eq!(
                read(&path, len as u64).expect("read"),
                Some(Bytes::from(data.clone())),
                "{len} bytes"
            );
            assert_eq!(read(&path, len as u64 + 1).expect("read"), None, "a length that changed is said");
            assert_eq!(std::fs::read(&path).expect("buffered read"), data);
        }
    }
}
