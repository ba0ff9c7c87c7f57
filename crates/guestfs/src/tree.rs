//! What every guest filesystem offers: list a directory, look at an entry without following
//! it, read a symlink's target, copy a file's bytes. Paths are absolute byte strings
//! (`/etc/hosts`): guest names need not be UTF-8.

use std::io::Write;

use serde::Serialize;

use crate::error::Result;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device node, FIFO or socket.
    Special,
}

/// One directory entry with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name within its directory (raw bytes).
    pub name: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (files, symlink targets).
    pub size: u64,
    /// Unix permission bits and type (ext); synthesised for FAT and NTFS.
    pub mode: u32,
    /// Owner, where the filesystem has one.
    pub uid: Option<u32>,
    /// Group, where the filesystem has one.
    pub gid: Option<u32>,
    /// Modification time: seconds and nanoseconds since the Unix epoch.
    pub mtime: Option<(i64, u32)>,
    /// The inode (or file record) it names and how many names that has, where the
    /// filesystem tells: what lets extraction keep hard links as links.
    pub links: Option<(u64, u32)>,
}

impl Entry {
    /// The name for people (invalid UTF-8 shown as U+FFFD).
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A read-only guest filesystem.
pub trait GuestFs {
    /// `ext4`, `vfat`, `ntfs`.
    fn kind(&self) -> &'static str;
    /// Volume label, if it has one.
    fn label(&self) -> Option<String>;
    /// Something a reader of this filesystem should know (a journal or log not replayed).
    fn warning(&self) -> Option<String> {
        None
    }
    /// The entries of the directory at `path` (without `.` and `..`).
    fn list(&self, path: &[u8]) -> Result<Vec<Entry>>;
    /// The entry at `path`, not following a final symlink.
    fn stat(&self, path: &[u8]) -> Result<Entry>;
    /// Where the symlink at `path` points.
    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>>;
    /// Copy the regular file at `path` to `out`; returns the bytes written.
    fn read_file(&self, path: &[u8], out: &mut dyn Write) -> Result<u64>;
    /// The extended attributes of the entry at `path` (not following a final symlink), as
    /// Linux names them: `user.*`, `trusted.*`, `security.*`, POSIX ACLs. None on
    /// filesystems that have no such attributes.
    fn xattrs(&self, path: &[u8]) -> Result<Vec<crate::xattr::Xattr>> {
        let _ = path;
        Ok(Vec::new())
    }
    /// The named data streams of the file at `path` (NTFS alternate data streams) with
    /// their sizes; none on filesystems without them.
    fn streams(&self, path: &[u8]) -> Result<Vec<(Vec<u8>, u64)>> {
        let _ = path;
        Ok(Vec::new())
    }
    /// Copy the named stream `stream` of the file at `path` to `out`.
    fn read_stream(&self, path: &[u8], stream: &[u8], out: &mut dyn Write) -> Result<u64> {
        let _ = (stream, out);
        Err(crate::GuestError::Unsupported {
            what: show(path),
            reason: "this filesystem has no named streams".into(),
        })
    }
}

/// The last path a reader looked up and what it named: extraction reads a file's data and then
/// its attributes by the same path, so the second lookup is free.
pub(crate) struct LastLookup<T>(std::sync::Mutex<Option<(Vec<u8>, T)>>);

impl<T: Clone> LastLookup<T> {
    /// Nothing looked up yet.
    pub(crate) fn new() -> LastLookup<T> {
        LastLookup(std::sync::Mutex::new(None))
    }

    /// What `path` names: the last answer if it was for `path`, else `walk`'s, kept.
    pub(crate) fn get_or(&self, path: &[u8], walk: impl FnOnce() -> Result<T>) -> Result<T> {
        if let Some((p, found)) = &*self.lock()
            && p == path
        {
            return Ok(found.clone());
        }
        let found = walk()?;
        *self.lock() = Some((path.to_vec(), found.clone()));
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Vec<u8>, T)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Copy a file's bytes to `out` through `read` (a reader's `read`, errors already mapped);
/// returns the bytes copied. One loop for every filesystem.
pub(crate) fn copy_out(
    what: &str,
    mut read: impl FnMut(&mut [u8]) -> Result<usize>,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        out.write_all(&buf[..n])
            .map_err(|source| crate::GuestError::Write { path: what.to_string(), source })?;
        total += n as u64;
    }
}

/// Most symlinks followed in resolving one path (the kernel's limit).
pub const MAX_LINKS: usize = 40;

/// `path` with every symlink in it followed as the guest would follow it, within the guest's
/// own root: an absolute target starts again from the guest's `/`, and `..` never climbs
/// above it. The host's filesystem is never consulted.
pub fn resolve(fs: &dyn GuestFs, path: &[u8]) -> Result<Vec<u8>> {
    let parts = |p: &[u8]| -> Vec<Vec<u8>> { p.split(|&b| b == b'/').rev().map(<[u8]>::to_vec).collect() };
    let mut todo = parts(path);
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    let here = |done: &[Vec<u8>]| -> Vec<u8> {
        let mut out = Vec::new();
        for d in done {
            out.push(b'/');
            out.extend_from_slice(d);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        out
    };
    while let Some(part) = todo.pop() {
        match part.as_slice() {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(part);
        let at = here(&done);
        if fs.stat(&at)?.kind != EntryKind::Symlink {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(crate::GuestError::Invalid(format!(
                "{}: more than {MAX_LINKS} symlinks to follow (a loop?)",
                show(path)
            )));
        }
        let target = fs.read_link(&at)?;
        done.pop();
        if target.starts_with(b"/") {
            done.clear();
        }
        todo.extend(parts(&target));
    }
    Ok(here(&done))
}

/// `dir` + `/` + `name`.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = dir.to_vec();
    if !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// A path as given by an operator, made absolute and stripped of empty and `.` parts.
/// `..` is refused: a guest path never climbs.
pub fn normalize(path: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(crate::GuestError::Invalid(format!(
                    "{path:?}: `..` is not allowed in a guest path"
                )));
            }
            name => {
                out.push(b'/');
                out.extend_from_slice(name.as_bytes());
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

/// The last component of a path (`/` for the root).
pub fn base_name(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) if i + 1 < path.len() => path[i + 1..].to_vec(),
        _ => b"/".to_vec(),
    }
}

/// Display a guest path.
pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}
