//! The one thing the crate needs from its caller: random reads of a disk.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::error::{GuestError, Result};

/// Random-access reads of a disk (a recovery point, an image file, a byte vector in tests).
pub trait BlockReader: Send + Sync {
    /// Size of the disk in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`; reading past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl BlockReader for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| past_end())?;
        let end = start.checked_add(buf.len()).ok_or_else(past_end)?;
        let src = self.get(start..end).ok_or_else(past_end)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl BlockReader for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

fn past_end() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the disk")
}

/// A window of a disk: a partition, or the whole disk.
#[derive(Clone)]
pub struct Slice {
    inner: Arc<dyn BlockReader>,
    start: u64,
    len: u64,
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slice({}..{})", self.start, self.start + self.len)
    }
}

impl Slice {
    /// The window `start..start+len` of `inner`, clipped to its size.
    pub fn new(inner: Arc<dyn BlockReader>, start: u64, len: u64) -> Slice {
        let size = inner.size();
        let start = start.min(size);
        let len = len.min(size - start);
        Slice { inner, start, len }
    }

    /// The whole disk.
    pub fn whole(inner: Arc<dyn BlockReader>) -> Slice {
        let len = inner.size();
        Slice { inner, start: 0, len }
    }

    /// The window `offset..offset+len` of this window, clipped to it (an MD member's data).
    pub fn sub(&self, offset: u64, len: u64) -> Slice {
        let offset = offset.min(self.len);
        Slice { inner: Arc::clone(&self.inner), start: self.start + offset, len: len.min(self.len - offset) }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Read exactly `buf.len()` bytes at `offset` within the window.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.len);
        if end.is_none() {
            return Err(GuestError::Read { offset, source: past_end() });
        }
        self.inner
            .read_at(self.start + offset, buf)
            .map_err(|source| GuestError::Read { offset: self.start + offset, source })
    }

    /// A `Read + Seek` view (with writes refused), for readers that want one.
    pub fn cursor(&self) -> Cursor {
        Cursor { slice: self.clone(), pos: 0 }
    }
}

/// A `Read + Write + Seek` view of a [`Slice`] whose writes fail: read-only filesystem
/// libraries take such a handle.
pub struct Cursor {
    slice: Slice,
    pos: u64,
}

impl Read for Cursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.slice.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.slice.inner.read_at(self.slice.start + self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.slice.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl Write for Cursor {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "guest disks are read-only"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
