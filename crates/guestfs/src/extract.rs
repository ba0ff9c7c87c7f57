//! Extraction of guest files and trees into a directory of the host, and walks of guest trees.
//!
//! The guest filesystem is hostile until proven otherwise, so extraction never writes outside
//! its target directory:
//! - names are single path components: empty names, `.`, `..`, and names holding `/` or NUL
//!   are skipped with a warning;
//! - every directory written into was created by this extraction (or is the target itself, or
//!   a real directory already inside it — never a symlink), so no path ever passes through a
//!   link;
//! - files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`: an existing name (a duplicate in the
//!   guest, a symlink planted earlier) is never opened, the entry is skipped with a warning;
//! - symlinks are created as links, never followed; device nodes, FIFOs and sockets are skipped;
//! - a file with several names is written once and its other names made hard links to it
//!   (within one extraction); runs of zeros are left as holes, so sparse files stay sparse;
//! - extended attributes (ACLs, SELinux labels, capabilities; with [`Options::xattrs`]) are
//!   set with `lsetxattr`, never through a link; setuid and setgid bits are kept only when
//!   running as root, who also sets owners;
//! - a directory whose listing equals one of its ancestors' (a hard-linked loop or a cluster
//!   chain pointing back) is not descended, and walks stop at fixed depth and size budgets.
//!
//! A file or directory that cannot be read is reported and skipped; the rest goes on.

use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

use crate::error::{GuestError, Result};
use crate::tree::{Entry, EntryKind, GuestFs, join, show};

pub use crate::glob::glob;

/// Deepest directory nesting walked.
pub const MAX_DEPTH: usize = 256;
/// Most entries one walk visits.
pub const MAX_ENTRIES: u64 = 10_000_000;

/// What an extraction did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExtractReport {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Names made hard links to a file written earlier in the same extraction.
    pub hard_links: u64,
    /// Named streams written beside their files (`NAME:STREAM`), with `streams` on.
    pub streams: u64,
    /// Extended attributes set (ACLs, SELinux labels, capabilities…), with `xattrs` on.
    pub xattrs: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries skipped on purpose (unsafe names, duplicates, special files).
    pub warnings: Vec<String>,
    /// Files or directories that could not be read or written.
    pub errors: Vec<String>,
}

/// What an extraction writes beyond files, directories and links.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Write each file's named streams (NTFS alternate data streams) beside it, as
    /// `NAME:STREAM`.
    pub streams: bool,
    /// Set each entry's extended attributes: POSIX ACLs, `user.*`, and — which needs root —
    /// `security.*` (SELinux labels, file capabilities) and `trusted.*`.
    pub xattrs: bool,
}

impl Default for Options {
    /// What an operator gets without options: no streams; extended attributes when running
    /// as root (who alone may set all of them).
    fn default() -> Options {
        Options { streams: false, xattrs: running_as_root() }
    }
}

/// Loop detection and budgets of one walk.
struct Walk {
    ancestors: Vec<u64>,
    visited: u64,
    /// Where the first name of each multiply-linked inode was written.
    linked: std::collections::HashMap<u64, std::path::PathBuf>,
    options: Options,
    /// Extended attributes the host refused, by name and error: each is reported once.
    refused: std::collections::HashSet<(Vec<u8>, i32)>,
}

impl Walk {
    fn new() -> Walk {
        Walk {
            ancestors: Vec::new(),
            visited: 0,
            linked: std::collections::HashMap::new(),
            options: Options::default(),
            refused: std::collections::HashSet::new(),
        }
    }

    /// Enter a directory with this listing; `Err` names why not.
    fn enter(&mut self, path: &[u8], listing: &[Entry]) -> std::result::Result<(), String> {
        if self.ancestors.len() >= MAX_DEPTH {
            return Err(format!("{}: nested deeper than {MAX_DEPTH} directories; not descended", show(path)));
        }
        self.visited += listing.len() as u64;
        if self.visited > MAX_ENTRIES {
            return Err(format!("{}: more than {MAX_ENTRIES} entries walked; stopped", show(path)));
        }
        let print = fingerprint(listing);
        if !listing.is_empty() && self.ancestors.contains(&print) {
            return Err(format!(
                "{}: directory loop (it repeats a directory above it); not descended",
                show(path)
            ));
        }
        self.ancestors.push(print);
        Ok(())
    }

    fn leave(&mut self) {
        self.ancestors.pop();
    }
}

/// What a directory lists, reduced to a number: a directory that reappears below itself lists
/// the same.
fn fingerprint(listing: &[Entry]) -> u64 {
    let mut h = DefaultHasher::new();
    for e in listing {
        (&e.name, e.kind as u8, e.size, e.mode, e.uid, e.gid, e.mtime).hash(&mut h);
    }
    h.finish()
}

/// A guest name that is safe as one component of a host path.
fn safe_name(name: &[u8]) -> Option<&OsStr> {
    let ok = !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0);
    ok.then(|| OsStr::from_bytes(name))
}

/// Whether this process runs as root: who may set owners, setuid bits and `security.*`
/// attributes.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Extract `paths` (files, symlinks or directory trees) into `dest`, which is created if
/// missing. Each lands in `dest` under its own name; `/` extracts the root's contents.
pub fn extract(fs: &dyn GuestFs, paths: &[Vec<u8>], dest: &Path) -> Result<ExtractReport> {
    extract_with(fs, paths, dest, Options::default())
}

/// [`extract`] with `options`.
pub fn extract_with(
    fs: &dyn GuestFs,
    paths: &[Vec<u8>],
    dest: &Path,
    options: Options,
) -> Result<ExtractReport> {
    std::fs::create_dir_all(dest)
        .map_err(|source| GuestError::Write { path: dest.display().to_string(), source })?;
    let meta = std::fs::symlink_metadata(dest)
        .map_err(|source| GuestError::Write { path: dest.display().to_string(), source })?;
    if !meta.is_dir() {
        return Err(GuestError::Invalid(format!("{}: not a directory", dest.display())));
    }
    let mut report = ExtractReport::default();
    let mut walk = Walk::new();
    walk.options = options;
    let root = running_as_root();
    for path in paths {
        let entry = match fs.stat(path) {
            Ok(entry) => entry,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        if path.iter().all(|&b| b == b'/') {
            // The root: its contents go straight into dest.
            extract_children(fs, path, dest, &mut walk, root, &mut report);
            continue;
        }
        place(fs, path, &entry, dest, &mut walk, root, &mut report);
    }
    Ok(report)
}

fn extract_children(
    fs: &dyn GuestFs,
    path: &[u8],
    host_dir: &Path,
    walk: &mut Walk,
    root: bool,
    report: &mut ExtractReport,
) {
    let listing = match fs.list(path) {
        Ok(listing) => listing,
        Err(e) => {
            report.errors.push(e.to_string());
            return;
        }
    };
    if let Err(why) = walk.enter(path, &listing) {
        report.errors.push(why);
        return;
    }
    for child in &listing {
        place(fs, &join(path, &child.name), child, host_dir, walk, root, report);
    }
    walk.leave();
}

/// Put one guest entry into the (trusted) host directory `parent`.
fn place(
    fs: &dyn GuestFs,
    path: &[u8],
    entry: &Entry,
    parent: &Path,
    walk: &mut Walk,
    root: bool,
    report: &mut ExtractReport,
) {
    let Some(name) = safe_name(&entry.name) else {
        report.warnings.push(format!("{}: unsafe name {:?}, skipped", show(path), entry.display_name()));
        return;
    };
    let target = parent.join(name);
    match entry.kind {
        EntryKind::Dir => {
            match std::fs::create_dir(&target) {
                Ok(()) => report.dirs += 1,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let real_dir = std::fs::symlink_metadata(&target).map(|m| m.is_dir()).unwrap_or(false);
                    if !real_dir {
                        report
                            .warnings
                            .push(format!("{}: a non-directory of that name exists, skipped", show(path)));
                        return;
                    }
                }
                Err(e) => {
                    report.errors.push(format!("{}: {e}", target.display()));
                    return;
                }
            }
            // Writable by us while we fill it; its own mode is set afterwards.
            let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700));
            extract_children(fs, path, &target, walk, root, report);
            finish_metadata(fs, path, &target, entry, walk, root, report);
        }
        EntryKind::File => {
            let shared = entry.links.filter(|&(_, names)| names > 1).map(|(inode, _)| inode);
            if let Some(first) = shared.and_then(|inode| walk.linked.get(&inode)) {
                match std::fs::hard_link(first, &target) {
                    Ok(()) => {
                        report.hard_links += 1;
                        return;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        report.warnings.push(format!("{}: duplicate name, skipped", show(path)));
                        return;
                    }
                    // Another filesystem under the target, say: a copy instead.
                    Err(e) => report
                        .warnings
                        .push(format!("{}: written as a copy, not a hard link ({e})", show(path))),
                }
            }
            let file = match new_file(&target) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    report.warnings.push(format!("{}: duplicate name, skipped", show(path)));
                    return;
                }
                Err(e) => {
                    report.errors.push(format!("{}: {e}", target.display()));
                    return;
                }
            };
            let mut sparse = Sparse { file: &file, at: 0, written: 0, target: &target };
            match fs.read_file(path, &mut sparse).and_then(|n| sparse.finish().map(|()| n)) {
                Ok(n) => {
                    report.files += 1;
                    report.bytes += n;
                    drop(file);
                    finish_metadata(fs, path, &target, entry, walk, root, report);
                    if let Some(inode) = shared {
                        walk.linked.insert(inode, target.clone());
                    }
                    if walk.options.streams {
                        write_streams(fs, path, &entry.name, parent, report);
                    }
                }
                Err(e) => {
                    drop(file);
                    let _ = std::fs::remove_file(&target);
                    report.errors.push(e.to_string());
                }
            }
        }
        EntryKind::Symlink => {
            let link = match fs.read_link(path) {
                Ok(link) => link,
                Err(e) => {
                    report.errors.push(e.to_string());
                    return;
                }
            };
            if link.contains(&0) {
                report.warnings.push(format!("{}: symlink target holds NUL, skipped", show(path)));
                return;
            }
            match std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target) {
                Ok(()) => {
                    report.symlinks += 1;
                    finish_metadata(fs, path, &target, entry, walk, root, report);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    report.warnings.push(format!("{}: duplicate name, skipped", show(path)));
                }
                Err(e) => report.errors.push(format!("{}: {e}", target.display())),
            }
        }
        EntryKind::Special => {
            report.warnings.push(format!("{}: device node, FIFO or socket, skipped", show(path)));
        }
    }
}

/// The named streams of the file at `path` as `NAME:STREAM` files in `parent` (new files
/// only, names checked like any other).
fn write_streams(fs: &dyn GuestFs, path: &[u8], name: &[u8], parent: &Path, report: &mut ExtractReport) {
    let streams = match fs.streams(path) {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(e.to_string());
            return;
        }
    };
    for (stream, _) in streams {
        let mut full = name.to_vec();
        full.push(b':');
        full.extend_from_slice(&stream);
        let Some(host_name) = safe_name(&full).filter(|_| !stream.contains(&b':')) else {
            report.warnings.push(format!(
                "{}: stream {:?} has an unsafe name, skipped",
                show(path),
                String::from_utf8_lossy(&stream)
            ));
            continue;
        };
        let target = parent.join(host_name);
        let mut file = match new_file(&target) {
            Ok(f) => f,
            Err(e) => {
                report.warnings.push(format!("{}: {e}, stream skipped", target.display()));
                continue;
            }
        };
        match fs.read_stream(path, &stream, &mut file) {
            Ok(n) => {
                report.streams += 1;
                report.bytes += n;
            }
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&target);
                report.errors.push(e.to_string());
            }
        }
    }
}

/// A new file of ours: never an existing name, never through a link.
fn new_file(target: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(0o600).open(target)
}

/// A file written at increasing offsets whose all-zero 4 KiB blocks are skipped, leaving
/// holes; `finish` sets the length when it ends in skipped zeros, so they become a hole too.
struct Sparse<'a> {
    file: &'a File,
    /// Bytes taken so far.
    at: u64,
    /// The end of the last bytes written to the file.
    written: u64,
    target: &'a Path,
}

const SPARSE_BLOCK: usize = 4096;

impl Sparse<'_> {
    fn finish(&mut self) -> Result<()> {
        if self.written == self.at {
            return Ok(());
        }
        self.file
            .set_len(self.at)
            .map_err(|source| GuestError::Write { path: self.target.display().to_string(), source })
    }
}

impl std::io::Write for Sparse<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        // A run of blocks with data, written in one call when it ends.
        let mut run: Option<(usize, u64)> = None;
        while done < buf.len() {
            // Blocks aligned to the file's offsets, so holes fall on block boundaries.
            let within = (self.at % SPARSE_BLOCK as u64) as usize;
            let n = (SPARSE_BLOCK - within).min(buf.len() - done);
            let data = buf[done..done + n].iter().any(|&b| b != 0);
            match (data, run) {
                (true, None) => run = Some((done, self.at)),
                (false, Some((from, at))) => {
                    self.file.write_all_at(&buf[from..done], at)?;
                    self.written = self.at;
                    run = None;
                }
                _ => {}
            }
            self.at += n as u64;
            done += n;
        }
        if let Some((from, at)) = run {
            self.file.write_all_at(&buf[from..], at)?;
            self.written = self.at;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Owner (as root), extended attributes (with `xattrs` on), permission bits (setuid and
/// setgid only as root) and mtime, without following links. In that order: a change of owner
/// clears file capabilities and setuid bits, so they come after it; the attributes come
/// before the permission bits, which may take away our own right to write them.
fn finish_metadata(
    fs: &dyn GuestFs,
    path: &[u8],
    target: &Path,
    entry: &Entry,
    walk: &mut Walk,
    root: bool,
    report: &mut ExtractReport,
) {
    if root
        && let (Some(uid), Some(gid)) = (entry.uid, entry.gid)
        && let Err(e) = std::os::unix::fs::lchown(target, Some(uid), Some(gid))
    {
        report.warnings.push(format!("{}: owner not set: {e}", target.display()));
    }
    if walk.options.xattrs {
        set_xattrs(fs, path, target, walk, report);
    }
    if entry.kind != EntryKind::Symlink {
        let mode = entry.mode & if root { 0o7777 } else { 0o1777 };
        let _ = std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode));
    }
    if let Some((secs, nanos)) = entry.mtime {
        set_times_nofollow(target, secs, nanos);
    }
}

/// The guest entry's extended attributes on `target` (never following a link). What the
/// host refuses (no support on the target's filesystem, no privilege) is a warning, once per
/// attribute name and reason; what cannot be read from the guest is an error.
fn set_xattrs(fs: &dyn GuestFs, path: &[u8], target: &Path, walk: &mut Walk, report: &mut ExtractReport) {
    let attrs = match fs.xattrs(path) {
        Ok(attrs) => attrs,
        Err(e) => {
            report.errors.push(format!("{}: extended attributes not restored: {e}", show(path)));
            return;
        }
    };
    if attrs.is_empty() {
        return;
    }
    let Ok(c_path) = CString::new(target.as_os_str().as_bytes()) else { return };
    for attr in attrs {
        let Ok(c_name) = CString::new(attr.name.clone()) else {
            report.warnings.push(format!("{}: an extended attribute name holding NUL, skipped", show(path)));
            continue;
        };
        // SAFETY: both strings are NUL-terminated and the value pointer and length describe
        // a live buffer.
        let rc = unsafe {
            libc::lsetxattr(c_path.as_ptr(), c_name.as_ptr(), attr.value.as_ptr().cast(), attr.value.len(), 0)
        };
        if rc == 0 {
            report.xattrs += 1;
            continue;
        }
        let err = std::io::Error::last_os_error();
        if walk.refused.insert((attr.name.clone(), err.raw_os_error().unwrap_or(0))) {
            report.warnings.push(format!(
                "{}: extended attribute {} not set on the host: {err} (not repeated for other files)",
                show(path),
                String::from_utf8_lossy(&attr.name)
            ));
        }
    }
}

fn set_times_nofollow(target: &Path, secs: i64, nanos: u32) {
    let Ok(c_path) = CString::new(target.as_os_str().as_bytes()) else { return };
    let t = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: i64::from(nanos.min(999_999_999)) as _ };
    let times = [t, t];
    // SAFETY: c_path is a valid NUL-terminated string and times points at two timespecs.
    unsafe {
        libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW);
    }
}

/// One match of [`find`].
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    /// Guest path.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
}

/// Every entry under `start` whose name matches the glob `pattern` (`*`, `?`, `[…]`).
/// Unreadable directories and loops are reported in the second list.
pub fn find(fs: &dyn GuestFs, start: &[u8], pattern: &str) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let mut walk = Walk::new();
    find_in(fs, start, pattern.as_bytes(), &mut walk, &mut found, &mut problems);
    (found, problems)
}

fn find_in(
    fs: &dyn GuestFs,
    dir: &[u8],
    pattern: &[u8],
    walk: &mut Walk,
    found: &mut Vec<Found>,
    problems: &mut Vec<String>,
) {
    let listing = match fs.list(dir) {
        Ok(listing) => listing,
        Err(e) => {
            problems.push(e.to_string());
            return;
        }
    };
    if let Err(why) = walk.enter(dir, &listing) {
        problems.push(why);
        return;
    }
    for entry in &listing {
        let path = join(dir, &entry.name);
        if glob(pattern, &entry.name) {
            found.push(Found { path: show(&path), kind: entry.kind, size: entry.size });
        }
        if entry.kind == EntryKind::Dir && safe_name(&entry.name).is_some() {
            find_in(fs, &path, pattern, walk, found, problems);
        }
    }
    walk.leave();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"x\0y"] {
            assert!(safe_name(bad).is_none(), "{bad:?}");
        }
        assert!(safe_name(b"..hidden").is_some());
    }
}
