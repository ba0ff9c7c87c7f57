//! XFS, read-only (v4 and v5): the primary superblock, inodes found by number, directories
//! in all their forms, files through extent lists and B+trees, symlinks inline or in blocks.
//! Written here rather than taken from a crate: none of the young XFS crates had been
//! fuzzed or read v4, v5 and big timestamps together. The log is not replayed: a
//! filesystem copied while mounted shows what was on disk, as `mount -o norecovery` would.
//!
//! Every number comes from the guest and is checked before use; nothing here panics on
//! malformed input (the `guest_fs` fuzz target holds it to that).

mod attr;
mod dir;
mod disk;
mod inode;
mod log;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use crate::bytes::be32;
use crate::error::{GuestError, Result};
use crate::reader::Slice;
use crate::tree::{Entry, EntryKind, GuestFs, LastLookup, base_name, show};
use crate::xattr::Xattr;
use dir::{DirEntry, read_dir};
use disk::{Disk, Superblock};
use inode::{Format, Inode, extents, read_inode, read_mapped};

/// Most symlink target length XFS allows.
const MAX_LINK: u64 = 1024;
/// Directories whose name lookups are kept.
const DIR_CACHE: usize = 64;

/// A directory's names and the inodes they name.
type Names = Arc<HashMap<Vec<u8>, u64>>;

/// An XFS filesystem.
pub struct XfsFs {
    disk: Disk,
    /// Name → inode of recently resolved directories, by directory inode.
    dirs: Mutex<HashMap<u64, Names>>,
    /// The last path looked up and its inode.
    last: LastLookup<Inode>,
}

impl XfsFs {
    /// Open the filesystem in `volume`.
    pub fn open(volume: Slice) -> Result<XfsFs> {
        let sb = Superblock::read(&volume)?;
        let fs = XfsFs {
            disk: Disk { slice: volume, sb },
            dirs: Mutex::new(HashMap::new()),
            last: LastLookup::new(),
        };
        let root = read_inode(&fs.disk, fs.disk.sb.root_ino)?;
        if root.mode & 0o170000 != 0o040000 {
            return Err(GuestError::corrupt("XFS root inode", "not a directory"));
        }
        Ok(fs)
    }

    /// Names of directory `dir`, for lookups (cached).
    fn names(&self, dir: &Inode) -> Result<Names> {
        if let Some(hit) = self.dirs.lock().unwrap_or_else(PoisonError::into_inner).get(&dir.ino) {
            return Ok(Arc::clone(hit));
        }
        let names: HashMap<Vec<u8>, u64> =
            read_dir(&self.disk, dir)?.into_iter().map(|e| (e.name, e.ino)).collect();
        let names = Arc::new(names);
        let mut cache = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= DIR_CACHE {
            cache.clear();
        }
        cache.insert(dir.ino, Arc::clone(&names));
        Ok(names)
    }

    /// The inode at `path`, not following a final symlink (links on the way are not followed
    /// either: guest paths name what is there).
    fn lookup(&self, path: &[u8]) -> Result<Inode> {
        self.last.get_or(path, || self.walk(path))
    }

    /// [`XfsFs::lookup`] without its cache.
    fn walk(&self, path: &[u8]) -> Result<Inode> {
        let mut node = read_inode(&self.disk, self.disk.sb.root_ino)?;
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            if kind_of(node.mode) != EntryKind::Dir {
                return Err(GuestError::NotADirectory { path: show(path) });
            }
            let ino =
                *self.names(&node)?.get(part).ok_or_else(|| GuestError::NotFound { path: show(path) })?;
            node = read_inode(&self.disk, ino)?;
        }
        Ok(node)
    }

    fn entry(&self, name: Vec<u8>, node: &Inode) -> Entry {
        Entry {
            name,
            kind: kind_of(node.mode),
            size: node.size,
            mode: u32::from(node.mode),
            uid: Some(node.uid),
            gid: Some(node.gid),
            mtime: Some(node.mtime),
            links: Some((node.ino, node.nlink)),
        }
    }

    /// The bytes of a data fork in extents, up to `len`.
    fn fork_bytes(&self, node: &Inode, len: u64) -> Result<Vec<u8>> {
        let extents = extents(&self.disk, node)?;
        let mut buf = vec![0u8; len as usize];
        read_mapped(&self.disk, &extents, 0, &mut buf)?;
        Ok(buf)
    }
}

fn kind_of(mode: u16) -> EntryKind {
    match mode & 0o170000 {
        0o040000 => EntryKind::Dir,
        0o100000 => EntryKind::File,
        0o120000 => EntryKind::Symlink,
        _ => EntryKind::Special,
    }
}

impl GuestFs for XfsFs {
    fn kind(&self) -> &'static str {
        "xfs"
    }

    fn label(&self) -> Option<String> {
        self.disk.sb.label.clone()
    }

    fn warning(&self) -> Option<String> {
        match log::state(&self.disk, self.disk.sb.log_start, u64::from(self.disk.sb.log_blocks)) {
            log::LogState::Clean => None,
            log::LogState::Dirty => Some(
                "its log is dirty (copied while mounted): the log is not replayed, so its last changes may be missing"
                    .into(),
            ),
            log::LogState::Unknown(why) => Some(format!("whether its log is clean is unknown: {why}")),
        }
    }

    fn list(&self, path: &[u8]) -> Result<Vec<Entry>> {
        let dir = self.lookup(path)?;
        if kind_of(dir.mode) != EntryKind::Dir {
            return Err(GuestError::NotADirectory { path: show(path) });
        }
        let entries: Vec<DirEntry> = read_dir(&self.disk, &dir)?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let node = read_inode(&self.disk, e.ino)?;
            out.push(self.entry(e.name, &node));
        }
        Ok(out)
    }

    fn stat(&self, path: &[u8]) -> Result<Entry> {
        let node = self.lookup(path)?;
        Ok(self.entry(base_name(path), &node))
    }

    fn xattrs(&self, path: &[u8]) -> Result<Vec<Xattr>> {
        attr::read_attrs(&self.disk, &self.lookup(path)?)
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        let node = self.lookup(path)?;
        if kind_of(node.mode) != EntryKind::Symlink {
            return Err(GuestError::Invalid(format!("{}: not a symlink", show(path))));
        }
        if node.size == 0 || node.size > MAX_LINK {
            return Err(GuestError::corrupt(show(path), "a symlink target of an impossible length"));
        }
        if node.format == Format::Local {
            return node
                .fork
                .get(..node.size as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| GuestError::corrupt(show(path), "a symlink target past its inode"));
        }
        if !self.disk.sb.v5 {
            return self.fork_bytes(&node, node.size);
        }
        // v5 remote symlinks: each block starts with a 56-byte header ("XSLM").
        let bs = u64::from(self.disk.sb.block_size);
        let per_block = bs - 56;
        let blocks = node.size.div_ceil(per_block);
        let raw = self.fork_bytes(&node, blocks * bs)?;
        let mut target = Vec::new();
        for block in raw.chunks(bs as usize) {
            if be32(block, 0) != 0x5853_4C4D {
                return Err(GuestError::corrupt(show(path), "a symlink block without its header"));
            }
            target.extend_from_slice(&block[56..]);
        }
        target.truncate(node.size as usize);
        Ok(target)
    }

    fn read_file(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        let node = self.lookup(path)?;
        if kind_of(node.mode) != EntryKind::File {
            return Err(GuestError::NotAFile { path: show(path) });
        }
        if node.realtime {
            return Err(GuestError::Unsupported {
                what: show(path),
                reason: "its data is on an XFS realtime device, which is not part of the disk".into(),
            });
        }
        let extents = if node.format == Format::Local { Vec::new() } else { extents(&self.disk, &node)? };
        let mut pos = 0u64;
        let what = show(path);
        crate::tree::copy_out(
            &what,
            |buf| {
                let n = (node.size - pos).min(buf.len() as u64) as usize;
                if node.format == Format::Local {
                    let src = node
                        .fork
                        .get(pos as usize..pos as usize + n)
                        .ok_or_else(|| GuestError::corrupt(show(path), "inline data past its inode"))?;
                    buf[..n].copy_from_slice(src);
                } else {
                    read_mapped(&self.disk, &extents, pos, &mut buf[..n])?;
                }
                pos += n as u64;
                Ok(n)
            },
            out,
        )
    }
}
