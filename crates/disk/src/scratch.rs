//! The scratch directory of a backup: where a live snapshot's fleecing overlays grow (they
//! receive the old content of every block the guest overwrites while the backup runs) and
//! where NBD sockets live. A full scratch pauses the guest, so its room is checked before the
//! snapshot, and the work directory is removed with everything in it when the backup ends.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{DiskError, Result};

/// One backup's own directory under the scratch directory, removed when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Make `base/name` (and `base`, if missing) for one backup.
    pub fn create(base: &Path, name: &str) -> Result<WorkDir> {
        let path = base.join(name);
        std::fs::create_dir_all(&path).map_err(|e| DiskError::io(&path, e))?;
        Ok(WorkDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Bytes an unprivileged writer may still put on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| DiskError::image(path, "the path holds a NUL byte"))?;
    // SAFETY: statvfs(3) fills the zeroed struct from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return Err(DiskError::io(path, std::io::Error::last_os_error()));
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}
