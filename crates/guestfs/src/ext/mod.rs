//! ext2/3/4 through `ext4-view` (read-only, pure Rust), with extended attributes read
//! here ([`xattr`]).

mod error;
mod xattr;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use ext4_view::{Ext4, Ext4Read, Metadata};

use crate::error::Result;
use crate::guard;
use crate::reader::Slice;
use crate::tree::{Entry, EntryKind, GuestFs, base_name, copy_out, join, show};
use error::error;

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

/// A listed directory's names and their inodes.
type Names = Arc<HashMap<Vec<u8>, u32>>;

/// Directories whose names are kept.
const DIR_CACHE: usize = 64;

/// An ext2/3/4 filesystem.
pub struct ExtFs {
    fs: Ext4,
    /// The names of recently listed directories, by path: the files of a directory being
    /// extracted open by inode, not by a path lookup (linear in an unindexed directory).
    dirs: Mutex<HashMap<Vec<u8>, Names>>,
}

impl ExtFs {
    /// Open the filesystem in `volume`.
    pub fn open(volume: Slice) -> Result<ExtFs> {
        guard("ext4 superblock", || {
            Ext4::load(Box::new(SliceRead(volume)))
                .map(|fs| ExtFs { fs, dirs: Mutex::new(HashMap::new()) })
                .map_err(|e| error("ext4 superblock", e))
        })
    }
}

impl ExtFs {
    /// The inode of `path` if its directory was listed recently.
    fn listed_inode(&self, path: &[u8]) -> Option<u32> {
        let cut = path.iter().rposition(|&b| b == b'/')?;
        let parent: &[u8] = if cut == 0 { b"/" } else { &path[..cut] };
        let dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        dirs.get(parent)?.get(&path[cut + 1..]).copied()
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
            let mut names = HashMap::new();
            for item in self.fs.read_dir(path).map_err(|e| error(&what, e))? {
                let item = item.map_err(|e| error(&what, e))?;
                let name = item.file_name().as_ref().to_vec();
                if name == b"." || name == b".." {
                    continue;
                }
                let child = join(path, &name);
                let meta = item.metadata().map_err(|e| error(&show(&child), e))?;
                names.insert(name.clone(), meta.inode());
                out.push(entry(name, &meta));
            }
            let mut dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
            if dirs.len() >= DIR_CACHE {
                dirs.clear();
            }
            dirs.insert(path.to_vec(), Arc::new(names));
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

    fn xattrs(&self, path: &[u8]) -> Result<Vec<crate::xattr::Xattr>> {
        let what = show(path);
        guard(&what, || {
            let ino = match self.listed_inode(path) {
                Some(ino) => ino,
                None => self.fs.symlink_metadata(path).map_err(|e| error(&what, e))?.inode(),
            };
            xattr::read(&self.fs, ino, &what)
        })
    }

    fn read_file(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        let what = show(path);
        guard(&what, || {
            let mut file = match self.listed_inode(path) {
                Some(inode) => self.fs.open_inode(inode),
                None => self.fs.open(path),
            }
            .map_err(|e| error(&what, e))?;
            copy_out(&what, |buf| file.read_bytes(buf).map_err(|e| error(&what, e)), out)
        })
    }
}
