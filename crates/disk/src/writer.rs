//! Writing restored disks: sparse raw files, or qcow2 images written in-process with imago.
//! Only data is written; ranges never written read as zeros.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};

use crate::error::{DiskError, Result};
use crate::image::DiskFormat;
use crate::qemu;

/// Where a restore writes a disk's data.
pub trait BlockSink: Send {
    /// Write `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;

    /// Make everything durable and close.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Create a new image of `size` bytes at `path` (which must not exist) and open it for writing.
pub fn create_sink(path: &Path, format: DiskFormat, size: u64) -> Result<Box<dyn BlockSink>> {
    if path.exists() {
        return Err(DiskError::image(
            path,
            "already exists; vmvault does not overwrite files when restoring",
        ));
    }
    match format {
        DiskFormat::Raw => {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| DiskError::io(path, e))?;
            file.set_len(size).map_err(|e| DiskError::io(path, e))?;
            Ok(Box::new(RawSink { path: path.to_path_buf(), file }))
        }
        DiskFormat::Qcow2 => {
            qemu::create_image(path, DiskFormat::Qcow2, size)?;
            let image = imago::qcow2::Qcow2::<imago::file::File>::builder_path(path)
                .write(true)
                .open(PermissiveImplicitOpenGate::default())
                .map_err(|e| DiskError::image(path, format!("cannot open the new qcow2 image: {e}")))?;
            Ok(Box::new(Qcow2Sink { path: path.to_path_buf(), access: FormatAccess::new(image) }))
        }
    }
}

struct RawSink {
    path: PathBuf,
    file: File,
}

impl BlockSink for RawSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, offset).map_err(|e| DiskError::io(&self.path, e))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.file.sync_all().map_err(|e| DiskError::io(&self.path, e))
    }
}

struct Qcow2Sink {
    path: PathBuf,
    access: FormatAccess<imago::file::File>,
}

impl BlockSink for Qcow2Sink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.access
            .write(data, offset)
            .map_err(|e| DiskError::image(&self.path, format!("write at {offset}: {e}")))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.access.flush().map_err(|e| DiskError::image(&self.path, format!("flush: {e}")))?;
        self.access.sync().map_err(|e| DiskError::image(&self.path, format!("sync: {e}")))
    }
}
