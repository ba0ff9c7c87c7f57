//! ext2/3/4 through `ext4-view` (read-only, pure Rust).

use std::io::Write;

use ext4_view::{Ext4, Ext4Error, Ext4Read, Metadata};

use crate::error::{GuestError, Result};
use crate::guard;
use crate::reader::Slice;
use crate::tree::{Entry, EntryKind, GuestFs, base_name, copy_out, join, show};

struct SliceRead(Slice);

impl Ext4Read for SliceRead {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.read_at(start, dst).map_err(|e| Box::new(e) as _)
    }
}

/// An ext2/3/4 filesystem.
pub struct ExtFs {
    fs: Ext4,
}

impl ExtFs {
    /// Open the filesystem in `volume`.
    pub fn open(volume: Slice) -> Result<ExtFs> {
        guard("ext4 superblock", || {
            Ext4::load(Box::new(SliceRead(volume)))
                .map(|fs| ExtFs { fs })
                .map_err(|e| error("ext4 superblock", e))
        })
    }
}

fn error(what: &str, e: Ext4Error) -> GuestError {
    match e {
        Ext4Error::NotFound => GuestError::NotFound { path: what.to_string() },
        Ext4Error::NotADirectory => GuestError::NotADirectory { path: what.to_string() },
        Ext4Error::IsADirectory | Ext4Error::IsASpecialFile => {
            GuestError::NotAFile { path: what.to_string() }
        }
        Ext4Error::Encrypted => GuestError::Unsupported {
            what: what.to_string(),
            reason: "encrypted by the guest (fscrypt)".into(),
        },
        other => GuestError::corrupt(what, other),
    }
}

fn entry(name: Vec<u8>, m: &Metadata) -> Entry {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_regular_file() {
        EntryKind::File
    } else {
        EntryKind::Special
    };
    let modified = m.modified();
    Entry {
        name,
        kind,
        size: m.len(),
        mode: u32::from(m.mode()),
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        mtime: Some((modified.seconds(), modified.nanoseconds())),
        links: Some((u64::from(m.inode()), u32::from(m.links()))),
    }
}

impl GuestFs for ExtFs {
    fn kind(&self) -> &'static str {
        "ext4"
    }

    fn label(&self) -> Option<String> {
        let label = self.fs.label().to_str().ok()?.to_string();
        (!label.is_empty()).then_some(label)
    }

    fn list(&self, path: &[u8]) -> Result<Vec<Entry>> {
        let what = show(path);
        guard(&what, || {
            let mut out = Vec::new();
            for item in self.fs.read_dir(path).map_err(|e| error(&what, e))? {
                let item = item.map_err(|e| error(&what, e))?;
                let name = item.file_name().as_ref().to_vec();
                if name == b"." || name == b".." {
                    continue;
                }
                let child = join(path, &name);
                let meta = item.metadata().map_err(|e| error(&show(&child), e))?;
                out.push(entry(name, &meta));
            }
            Ok(out)
        })
    }

    fn stat(&self, path: &[u8]) -> Result<Entry> {
        let what = show(path);
        guard(&what, || {
            let meta = self.fs.symlink_metadata(path).map_err(|e| error(&what, e))?;
            Ok(entry(base_name(path), &meta))
        })
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        let what = show(path);
        guard(&what, || Ok(self.fs.read_link(path).map_err(|e| error(&what, e))?.as_ref().to_vec()))
    }

    fn read_file(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        let what = show(path);
        guard(&what, || {
            let mut file = self.fs.open(path).map_err(|e| error(&what, e))?;
            copy_out(&what, |buf| file.read_bytes(buf).map_err(|e| error(&what, e)), out)
        })
    }
}
