//! btrfs, read-only, in vmvault's own reader: the trees ([`tree`]), one subvolume at a time
//! (the default subvolume unless another is chosen; subvolumes inside it appear as
//! directories and are entered), inodes, directories through their `DIR_INDEX` items, files
//! through inline, regular and preallocated extents, zlib-, LZO- and zstd-compressed extents
//! decompressed ([`compress`]). Nothing is written; the log tree is not replayed.

mod compress;
mod tree;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use crate::bytes::{le16, le32, le64};
use crate::error::{GuestError, Result};
use crate::reader::Slice;
use crate::tree::{Entry, EntryKind, GuestFs, LastLookup, base_name, show};
use crate::xattr::{MAX_COUNT, Xattr};
use tree::{
    DIR_INDEX, DIR_ITEM, EXTENT_DATA, INODE_ITEM, INODE_REF, Key, ROOT_ITEM, ROOT_REF, Volume, XATTR_ITEM,
};

/// The top-level subvolume's id.
const FS_TREE: u64 = 5;
/// The first inode of every subvolume: its root directory.
const ROOT_DIR: u64 = 256;
/// The root tree's directory that names the default subvolume.
const ROOT_TREE_DIR: u64 = 6;
/// Most entries one directory may list.
const MAX_ENTRIES: usize = 10_000_000;

fn bad(what: &str, reason: impl std::fmt::Display) -> GuestError {
    GuestError::corrupt(what, reason)
}

fn all_of(objectid: u64, ty: u8) -> (Key, Key) {
    (Key { objectid, ty, offset: 0 }, Key { objectid, ty, offset: u64::MAX })
}

/// An inode: which tree it is in and its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Ino {
    tree: u64,
    ino: u64,
}

/// The parts of an inode item used.
struct Inode {
    size: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: (i64, u32),
}

/// A subvolume.
#[derive(Clone, Debug)]
pub struct Subvolume {
    /// Its id.
    pub id: u64,
    /// Its path from the top-level subvolume.
    pub path: String,
}

/// A directory's names and what they point at.
type Names = Arc<HashMap<Vec<u8>, Ino>>;

/// Directories whose names are kept for lookups.
const DIR_CACHE: usize = 64;

/// A btrfs filesystem, one subvolume of it.
pub struct BtrfsFs {
    /// Shared by the views of one filesystem's subvolumes (with its node cache).
    volume: Arc<Volume>,
    /// Subvolume id → the logical address of its tree.
    roots: Arc<HashMap<u64, u64>>,
    top: u64,
    /// Names of recently looked-up directories.
    dirs: Mutex<HashMap<Ino, Names>>,
    /// The last path looked up and what it names.
    last: LastLookup<Ino>,
}

impl BtrfsFs {
    /// Open the filesystem in `device` at its default subvolume.
    pub fn open(device: Slice) -> Result<BtrfsFs> {
        BtrfsFs::open_devices(device, &[])
    }

    /// Open the filesystem in `device` whose other devices (RAID1, RAID0, single data spread
    /// over several disks) are among `others`, at its default subvolume.
    pub fn open_devices(device: Slice, others: &[Slice]) -> Result<BtrfsFs> {
        let volume = Volume::open(device, others)?;
        let (min, max) = (
            Key { objectid: 0, ty: ROOT_ITEM, offset: 0 },
            Key { objectid: u64::MAX, ty: ROOT_ITEM, offset: u64::MAX },
        );
        let mut roots = HashMap::new();
        for (key, data) in volume.search(volume.root, min, max, Some(ROOT_ITEM))? {
            if data.len() >= 239 && (key.objectid == FS_TREE || key.objectid >= ROOT_DIR) {
                roots.insert(key.objectid, le64(&data, 176));
            }
        }
        if !roots.contains_key(&FS_TREE) {
            return Err(bad("btrfs", "no top-level subvolume"));
        }
        let mut fs = BtrfsFs {
            volume: Arc::new(volume),
            roots: Arc::new(roots),
            top: FS_TREE,
            dirs: Mutex::new(HashMap::new()),
            last: LastLookup::new(),
        };
        // The default subvolume: the "default" entry of the root tree's directory.
        let (min, max) = all_of(ROOT_TREE_DIR, DIR_ITEM);
        for (_, data) in fs.volume.search(fs.volume.root, min, max, Some(DIR_ITEM))? {
            let target = le64(&data, 0);
            if fs.roots.contains_key(&target) {
                fs.top = target;
            }
        }
        Ok(fs)
    }

    /// The subvolumes, with their paths.
    pub fn subvolumes(&self) -> Result<Vec<Subvolume>> {
        let (min, max) = (
            Key { objectid: 0, ty: ROOT_REF, offset: 0 },
            Key { objectid: u64::MAX, ty: ROOT_REF, offset: u64::MAX },
        );
        let refs = self.volume.search(self.volume.root, min, max, Some(ROOT_REF))?;
        // (child → (parent, its path within the parent: the directory it is in, then its
        // name)); paths are built up from the top level.
        let mut parents: HashMap<u64, (u64, String)> = HashMap::new();
        for (k, d) in &refs {
            let len = usize::from(le16(d, 16));
            let name = String::from_utf8_lossy(d.get(18..18 + len).unwrap_or(&[])).into_owned();
            let mut within = self.dir_path(k.objectid, le64(d, 0))?;
            within.push(name);
            parents.insert(k.offset, (k.objectid, within.join("/")));
        }
        let mut out = Vec::new();
        for &id in parents.keys() {
            let mut parts = Vec::new();
            let mut at = id;
            while let Some((parent, name)) = parents.get(&at) {
                parts.push(name.clone());
                at = *parent;
                if parts.len() > 64 {
                    break;
                }
            }
            parts.reverse();
            out.push(Subvolume { id, path: parts.join("/") });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The names from subvolume `tree`'s root down to its directory `dir`, by the directories'
    /// `INODE_REF` items (a subvolume may sit in a plain directory: snapper's
    /// `.snapshots/1/snapshot`).
    fn dir_path(&self, tree: u64, mut dir: u64) -> Result<Vec<String>> {
        let mut parts = Vec::new();
        while dir != ROOT_DIR {
            if parts.len() >= 256 {
                return Err(bad("btrfs", "a subvolume nested deeper than 256 directories (a loop?)"));
            }
            let (min, max) = all_of(dir, INODE_REF);
            let items = self.volume.search(self.tree(tree)?, min, max, Some(INODE_REF))?;
            let (key, d) =
                items.first().ok_or_else(|| bad("btrfs", format!("directory {dir} has no name")))?;
            let len = usize::from(le16(d, 8));
            parts.push(String::from_utf8_lossy(d.get(10..10 + len).unwrap_or(&[])).into_owned());
            dir = key.offset;
        }
        parts.reverse();
        Ok(parts)
    }

    /// The same filesystem at subvolume `name` (a path as [`BtrfsFs::subvolumes`] gives
    /// it) or id.
    pub fn at_subvolume(&self, name: &str) -> Result<BtrfsFs> {
        let found = self
            .subvolumes()?
            .into_iter()
            .find(|s| s.path == name || s.id.to_string() == name)
            .ok_or_else(|| GuestError::NotFound { path: format!("btrfs subvolume {name:?}") })?;
        Ok(self.at(&found))
    }

    /// The same filesystem at `sub`, one of [`BtrfsFs::subvolumes`] (without listing them
    /// again).
    pub fn at(&self, sub: &Subvolume) -> BtrfsFs {
        BtrfsFs {
            volume: Arc::clone(&self.volume),
            roots: Arc::clone(&self.roots),
            top: sub.id,
            dirs: Mutex::new(HashMap::new()),
            last: LastLookup::new(),
        }
    }

    fn tree(&self, id: u64) -> Result<u64> {
        self.roots.get(&id).copied().ok_or_else(|| bad("btrfs", format!("no tree for subvolume {id}")))
    }

    fn inode(&self, at: Ino) -> Result<Inode> {
        let key = Key { objectid: at.ino, ty: INODE_ITEM, offset: 0 };
        let items = self.volume.search(self.tree(at.tree)?, key, key, Some(INODE_ITEM))?;
        let (_, d) = items
            .first()
            .ok_or_else(|| bad("btrfs", format!("inode {} of subvolume {} is missing", at.ino, at.tree)))?;
        if d.len() < 160 {
            return Err(bad("btrfs", format!("inode {} is cut short", at.ino)));
        }
        Ok(Inode {
            size: le64(d, 16),
            nlink: le32(d, 40),
            uid: le32(d, 44),
            gid: le32(d, 48),
            mode: le32(d, 52),
            mtime: (le64(d, 136) as i64, le32(d, 144).min(999_999_999)),
        })
    }

    /// The entries of directory `dir`: name and what it points at (a subvolume entry points
    /// at that subvolume's root directory).
    fn entries(&self, dir: Ino) -> Result<Vec<(Vec<u8>, Ino)>> {
        let (min, max) = all_of(dir.ino, DIR_INDEX);
        let items = self.volume.search(self.tree(dir.tree)?, min, max, Some(DIR_INDEX))?;
        if items.len() > MAX_ENTRIES {
            return Err(bad("btrfs", "a directory of more than 10 million entries"));
        }
        let mut out = Vec::with_capacity(items.len());
        for (_, d) in items {
            let len = usize::from(le16(&d, 27));
            let name =
                d.get(30..30 + len).ok_or_else(|| bad("btrfs", "a directory entry past its item"))?.to_vec();
            let target = match d.get(8).copied() {
                Some(ROOT_ITEM) => Ino { tree: le64(&d, 0), ino: ROOT_DIR },
                _ => Ino { tree: dir.tree, ino: le64(&d, 0) },
            };
            out.push((name, target));
        }
        Ok(out)
    }

    fn names(&self, dir: Ino) -> Result<Names> {
        if let Some(hit) = self.dirs.lock().unwrap_or_else(PoisonError::into_inner).get(&dir) {
            return Ok(Arc::clone(hit));
        }
        let names: Names = Arc::new(self.entries(dir)?.into_iter().collect());
        let mut cache = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= DIR_CACHE {
            cache.clear();
        }
        cache.insert(dir, Arc::clone(&names));
        Ok(names)
    }

    fn lookup(&self, path: &[u8]) -> Result<Ino> {
        self.last.get_or(path, || self.walk(path))
    }

    /// [`BtrfsFs::lookup`] without its cache.
    fn walk(&self, path: &[u8]) -> Result<Ino> {
        let mut at = Ino { tree: self.top, ino: ROOT_DIR };
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            if self.inode(at)?.mode & 0o170000 != 0o040000 {
                return Err(GuestError::NotADirectory { path: show(path) });
            }
            at = *self.names(at)?.get(part).ok_or_else(|| GuestError::NotFound { path: show(path) })?;
        }
        Ok(at)
    }

    fn entry(&self, name: Vec<u8>, at: Ino, node: &Inode) -> Entry {
        let kind = match node.mode & 0o170000 {
            0o040000 => EntryKind::Dir,
            0o100000 => EntryKind::File,
            0o120000 => EntryKind::Symlink,
            _ => EntryKind::Special,
        };
        Entry {
            name,
            kind,
            size: node.size,
            mode: node.mode,
            uid: Some(node.uid),
            gid: Some(node.gid),
            mtime: Some(node.mtime),
            // Inode numbers repeat across subvolumes: the tree id keeps them apart.
            links: Some(((at.tree << 40) ^ at.ino, node.nlink)),
        }
    }

    /// Copy `len` bytes of the file at `at` to `out`, extent by extent.
    fn copy(&self, at: Ino, len: u64, what: &str, out: &mut dyn Write) -> Result<u64> {
        let (min, max) = all_of(at.ino, EXTENT_DATA);
        let extents = self.volume.search(self.tree(at.tree)?, min, max, Some(EXTENT_DATA))?;
        let mut written = 0u64;
        let zeros = vec![0u8; 1 << 20];
        let mut emit = |bytes: &[u8], written: &mut u64| -> Result<()> {
            out.write_all(bytes).map_err(|source| GuestError::Write { path: what.to_string(), source })?;
            *written += bytes.len() as u64;
            Ok(())
        };
        let gap = |until: u64,
                   written: &mut u64,
                   emit: &mut dyn FnMut(&[u8], &mut u64) -> Result<()>|
         -> Result<()> {
            while *written < until {
                let n = (until - *written).min(zeros.len() as u64) as usize;
                emit(&zeros[..n], written)?;
            }
            Ok(())
        };
        for (key, d) in extents {
            if written >= len {
                break;
            }
            if key.offset < written {
                return Err(bad(what, "its extents overlap"));
            }
            if key.offset >= len {
                break;
            }
            gap(key.offset.min(len), &mut written, &mut emit)?;
            let (ram, compression, kind) =
                (le64(&d, 8), d.get(16).copied().unwrap_or(0), d.get(20).copied().unwrap_or(0));
            if d.get(17).copied().unwrap_or(0) != 0 {
                return Err(GuestError::Unsupported {
                    what: what.to_string(),
                    reason: "encrypted by btrfs".into(),
                });
            }
            let bytes = match kind {
                0 => {
                    let inline = d.get(21..).unwrap_or(&[]);
                    compress::decompress(compression, inline, ram).map_err(|r| bad(what, r))?
                }
                1 | 2 => {
                    let (disk, disk_len, offset, num) =
                        (le64(&d, 21), le64(&d, 29), le64(&d, 37), le64(&d, 45));
                    let end = key.offset.saturating_add(num).min(len);
                    if disk == 0 || kind == 2 {
                        gap(end, &mut written, &mut emit)?;
                        continue;
                    }
                    if compression == 0 {
                        let mut at_disk = disk
                            .checked_add(offset)
                            .ok_or_else(|| bad(what, "an extent beyond the address space"))?;
                        let mut buf = vec![0u8; 1 << 20];
                        while written < end {
                            let n = (end - written).min(buf.len() as u64) as usize;
                            self.volume.read_logical(at_disk, &mut buf[..n])?;
                            emit(&buf[..n], &mut written)?;
                            at_disk += n as u64;
                        }
                        continue;
                    }
                    if disk_len > 128 << 20 || ram > 128 << 20 {
                        return Err(bad(what, "a compressed extent larger than btrfs makes"));
                    }
                    let mut packed = vec![0u8; disk_len as usize];
                    self.volume.read_logical(disk, &mut packed)?;
                    let plain = compress::decompress(compression, &packed, ram).map_err(|r| bad(what, r))?;
                    let from = (offset as usize).min(plain.len());
                    let to = (from + (end - key.offset) as usize).min(plain.len());
                    plain[from..to].to_vec()
                }
                other => return Err(bad(what, format!("an extent of type {other}"))),
            };
            let n = (bytes.len() as u64).min(len - written) as usize;
            emit(&bytes[..n], &mut written)?;
        }
        gap(len, &mut written, &mut emit)?;
        Ok(written)
    }
}

impl GuestFs for BtrfsFs {
    fn kind(&self) -> &'static str {
        "btrfs"
    }

    fn label(&self) -> Option<String> {
        self.volume.label.clone()
    }

    fn warning(&self) -> Option<String> {
        let (found, all) = (self.volume.devices_found(), self.volume.device_count);
        (found < all).then(|| {
            format!(
                "only {found} of its {all} devices are on the disks of this point: what is only on the others cannot be read"
            )
        })
    }

    fn list(&self, path: &[u8]) -> Result<Vec<Entry>> {
        let dir = self.lookup(path)?;
        if self.inode(dir)?.mode & 0o170000 != 0o040000 {
            return Err(GuestError::NotADirectory { path: show(path) });
        }
        let mut out = Vec::new();
        for (name, at) in self.entries(dir)? {
            let node = self.inode(at)?;
            out.push(self.entry(name, at, &node));
        }
        Ok(out)
    }

    fn stat(&self, path: &[u8]) -> Result<Entry> {
        let at = self.lookup(path)?;
        let node = self.inode(at)?;
        Ok(self.entry(base_name(path), at, &node))
    }

    fn xattrs(&self, path: &[u8]) -> Result<Vec<Xattr>> {
        let at = self.lookup(path)?;
        let what = show(path);
        let (min, max) = all_of(at.ino, XATTR_ITEM);
        let mut out = Vec::new();
        // Each item packs one or more entries (names whose hashes collide): a directory
        // item's header, the name, then the value.
        for (_, d) in self.volume.search(self.tree(at.tree)?, min, max, Some(XATTR_ITEM))? {
            let mut pos = 0;
            while pos + 30 <= d.len() {
                let (value_len, name_len) =
                    (usize::from(le16(&d, pos + 25)), usize::from(le16(&d, pos + 27)));
                let name = d.get(pos + 30..pos + 30 + name_len);
                let value = d.get(pos + 30 + name_len..pos + 30 + name_len + value_len);
                let (Some(name), Some(value)) = (name, value) else {
                    return Err(bad(&what, "an extended attribute past its item"));
                };
                out.push(Xattr::new(&what, name.to_vec(), value.to_vec())?);
                if out.len() > MAX_COUNT {
                    return Err(bad(&what, "more extended attributes than a file may carry"));
                }
                pos += 30 + name_len + value_len;
            }
        }
        Ok(out)
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        let at = self.lookup(path)?;
        let node = self.inode(at)?;
        if node.mode & 0o170000 != 0o120000 {
            return Err(GuestError::Invalid(format!("{}: not a symlink", show(path))));
        }
        if node.size > 4096 {
            return Err(bad(&show(path), "a symlink target longer than 4 KiB"));
        }
        let mut target = Vec::new();
        self.copy(at, node.size, &show(path), &mut target)?;
        Ok(target)
    }

    fn read_file(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        let at = self.lookup(path)?;
        let node = self.inode(at)?;
        if node.mode & 0o170000 != 0o100000 {
            return Err(GuestError::NotAFile { path: show(path) });
        }
        self.copy(at, node.size, &show(path), out)
    }
}
