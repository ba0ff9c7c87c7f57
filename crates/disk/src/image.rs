//! Disk images and block devices as vmvault reads them: format, size, allocated extents and
//! random reads, whatever the format.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use imago::{FormatAccess, FormatDriverBuilder, Mapping, PermissiveImplicitOpenGate};
use serde::{Deserialize, Serialize};

use crate::error::{DiskError, Result};

/// The formats vmvault backs up and restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// Plain bytes: a raw file or a block device.
    Raw,
}

impl DiskFormat {
    /// The name qemu-img uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

impl std::str::FromStr for DiskFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "qcow2" => Ok(DiskFormat::Qcow2),
            "raw" => Ok(DiskFormat::Raw),
            other => Err(format!("unknown disk format {other:?} (qcow2 or raw)")),
        }
    }
}

/// What probing a disk found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The path probed.
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// Logical (virtual) size in bytes.
    pub size: u64,
    /// Whether it is a block device rather than a file.
    pub block_device: bool,
}

const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Detect format and size of an image file or block device.
pub fn probe(path: &Path) -> Result<ImageInfo> {
    let mut file = File::open(path).map_err(|e| DiskError::io(path, e))?;
    let meta = file.metadata().map_err(|e| DiskError::io(path, e))?;
    let block_device = meta.file_type().is_block_device();
    if !block_device && !meta.is_file() {
        return Err(DiskError::image(path, "not a regular file or a block device"));
    }
    let mut header = [0u8; 32];
    let got = read_up_to(&mut file, &mut header).map_err(|e| DiskError::io(path, e))?;
    if got >= 32 && header[0..4] == QCOW2_MAGIC {
        let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if version != 2 && version != 3 {
            return Err(DiskError::image(path, format!("qcow2 version {version} is not supported")));
        }
        let mut size = [0u8; 8];
        size.copy_from_slice(&header[24..32]);
        let size = u64::from_be_bytes(size);
        return Ok(ImageInfo { path: path.to_path_buf(), format: DiskFormat::Qcow2, size, block_device });
    }
    let size = file.seek(SeekFrom::End(0)).map_err(|e| DiskError::io(path, e))?;
    Ok(ImageInfo { path: path.to_path_buf(), format: DiskFormat::Raw, size, block_device })
}

/// Whether a file's first 4 KiB read as text (valid UTF-8, no NUL, lines and mostly
/// printable characters): a file given as a raw disk by mistake, not a disk. A disk starts
/// with a boot sector, a partition table, a superblock or zeros.
pub fn looks_like_text(path: &Path) -> Result<bool> {
    let mut file = File::open(path).map_err(|e| DiskError::io(path, e))?;
    let mut head = [0u8; 4096];
    let got = read_up_to(&mut file, &mut head).map_err(|e| DiskError::io(path, e))?;
    let head = &head[..got];
    // A character cut at the end of the 4 KiB is still text.
    let valid = match std::str::from_utf8(head) {
        Ok(_) => head,
        Err(e) if e.error_len().is_none() => &head[..e.valid_up_to()],
        Err(_) => return Ok(false),
    };
    let Ok(text) = std::str::from_utf8(valid) else { return Ok(false) };
    let printable = text.chars().filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')).count();
    Ok(got > 0 && !head.contains(&0) && text.contains('\n') && printable * 100 >= text.chars().count() * 95)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match file.read(&mut buf[total..])? {
            0 => break,
            n => total += n,
        }
    }
    Ok(total)
}

/// A byte range of a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Start in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// Random-access reads of a disk plus the map of where its data is: what a backup reads from.
pub trait BlockSource: Send {
    /// Logical size in bytes.
    fn size(&self) -> u64;

    /// Ranges that may hold data, in order; everything else reads as zeros.
    fn allocated(&mut self) -> Result<Vec<Extent>>;

    /// Fill `buf` from `offset`; reads past the end are an error.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

/// Open a disk for reading in the format it was registered with.
pub fn open_source(path: &Path, format: DiskFormat) -> Result<Box<dyn BlockSource>> {
    match format {
        DiskFormat::Qcow2 => Ok(Box::new(Qcow2Source::open(path)?)),
        DiskFormat::Raw => Ok(Box::new(RawSource::open(path)?)),
    }
}

/// A qcow2 image read in-process with imago (backing files included).
pub struct Qcow2Source {
    path: PathBuf,
    access: FormatAccess<imago::file::File>,
}

impl Qcow2Source {
    /// Open read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let image = imago::qcow2::Qcow2::<imago::file::File>::builder_path(path)
            .open(PermissiveImplicitOpenGate::default())
            .map_err(|e| DiskError::image(path, format!("cannot open as qcow2: {e}")))?;
        Ok(Qcow2Source { path: path.to_path_buf(), access: FormatAccess::new(image) })
    }
}

impl BlockSource for Qcow2Source {
    fn size(&self) -> u64 {
        self.access.size()
    }

    fn allocated(&mut self) -> Result<Vec<Extent>> {
        let size = self.access.size();
        let mut out: Vec<Extent> = Vec::new();
        let mut offset = 0;
        while offset < size {
            let (mapping, length) = self
                .access
                .get_mapping(offset, size - offset)
                .map_err(|e| DiskError::image(&self.path, format!("reading the qcow2 mapping: {e}")))?;
            let length = length.min(size - offset);
            let data = match mapping {
                Mapping::Raw { .. } | Mapping::Special { .. } => true,
                Mapping::Zero { .. } => false,
                Mapping::Eof { .. } => break,
                _ => true,
            };
            if length == 0 {
                return Err(DiskError::image(
                    &self.path,
                    format!("qcow2 mapping made no progress at {offset}"),
                ));
            }
            if data {
                push_extent(&mut out, offset, length);
            }
            offset += length;
        }
        Ok(out)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.access
            .read(&mut *buf, offset)
            .map_err(|e| DiskError::image(&self.path, format!("read at {offset}: {e}")))
    }
}

/// A raw image file or block device, read with pread; holes found with SEEK_DATA/SEEK_HOLE.
pub struct RawSource {
    path: PathBuf,
    file: File,
    size: u64,
    block_device: bool,
}

impl RawSource {
    /// Open read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let info = probe(path)?;
        let file = File::open(path).map_err(|e| DiskError::io(path, e))?;
        Ok(RawSource { path: path.to_path_buf(), file, size: info.size, block_device: info.block_device })
    }
}

impl BlockSource for RawSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn allocated(&mut self) -> Result<Vec<Extent>> {
        if self.block_device {
            return Ok(vec![Extent { offset: 0, length: self.size }]);
        }
        let fd = self.file.as_raw_fd();
        let mut out = Vec::new();
        let mut offset = 0u64;
        while offset < self.size {
            // SAFETY: lseek on an fd we own; no memory is touched.
            let data = unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_DATA) };
            if data < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ENXIO) => break,
                    // A filesystem without SEEK_DATA: treat everything as data.
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                        return Ok(vec![Extent { offset: 0, length: self.size }]);
                    }
                    _ => return Err(DiskError::io(&self.path, err)),
                }
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            if hole < 0 {
                return Err(DiskError::io(&self.path, std::io::Error::last_os_error()));
            }
            let (start, end) = (data as u64, (hole as u64).min(self.size));
            if end <= start {
                break;
            }
            push_extent(&mut out, start, end - start);
            offset = end;
        }
        Ok(out)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| DiskError::io(&self.path, e))
    }
}

/// Append an extent, merging with the previous one when they touch.
pub fn push_extent(out: &mut Vec<Extent>, offset: u64, length: u64) {
    match out.last_mut() {
        Some(last) if last.offset + last.length == offset => last.length += length,
        _ => out.push(Extent { offset, length }),
    }
}
