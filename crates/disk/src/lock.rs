//! QEMU's image locks, checked and taken the way QEMU does, so vmvault and a VM never use an
//! image in conflicting ways.
//!
//! QEMU (and qemu-img, qemu-nbd, qemu-io) hold open-file-description (OFD) locks on single
//! bytes of every image they open: byte 100+i while holding permission i, byte 200+i while
//! refusing to share permission i (0 consistent read, 1 write, 2 write-unchanged, 3 resize).
//! Any lock in bytes 100..=203 means another program has the image open.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{DiskError, Result};

const LOCK_FIRST: i64 = 100;
const LOCK_LEN: i64 = 104;
const PERM_CONSISTENT_READ: i64 = 100;
const UNSHARE_WRITE: i64 = 201;
const UNSHARE_RESIZE: i64 = 203;

/// An image held for reading: a VM cannot open it for writing while this lives.
pub struct ImageLock {
    _file: File,
    path: PathBuf,
}

impl ImageLock {
    /// Refuse if any program holds QEMU locks on the image; otherwise hold read locks that keep
    /// writers out until dropped.
    pub fn acquire(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| DiskError::io(path, e))?;
        if is_locked(&file, path)? {
            return Err(DiskError::InUse { path: path.to_path_buf() });
        }
        for byte in [PERM_CONSISTENT_READ, UNSHARE_WRITE, UNSHARE_RESIZE] {
            set_read_lock(&file, byte).map_err(|e| match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EACCES) => DiskError::InUse { path: path.to_path_buf() },
                _ => DiskError::io(path, e),
            })?;
        }
        Ok(ImageLock { _file: file, path: path.to_path_buf() })
    }

    /// The locked image.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether any program holds a QEMU image lock on `path`.
pub fn is_in_use(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|e| DiskError::io(path, e))?;
    is_locked(&file, path)
}

fn flock(kind: libc::c_short, start: i64, len: i64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start;
    lock.l_len = len;
    lock
}

fn is_locked(file: &File, path: &Path) -> Result<bool> {
    let mut lock = flock(libc::F_WRLCK as libc::c_short, LOCK_FIRST, LOCK_LEN);
    // SAFETY: valid fd and a pointer to an initialised flock that outlives the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return Err(DiskError::io(path, std::io::Error::last_os_error()));
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

fn set_read_lock(file: &File, byte: i64) -> std::io::Result<()> {
    let lock = flock(libc::F_RDLCK as libc::c_short, byte, 1);
    // SAFETY: valid fd and a pointer to an initialised flock that outlives the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc != 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}
