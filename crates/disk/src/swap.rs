//! Swapping a disk image for a restored one in a single step.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{DiskError, Result};

/// Atomically exchange the files at `a` and `b` (same filesystem): at every instant each path
/// names one complete file, so a crash never leaves a VM without its disk.
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    let ca =
        CString::new(a.as_os_str().as_bytes()).map_err(|_| DiskError::image(a, "path holds a NUL byte"))?;
    let cb =
        CString::new(b.as_os_str().as_bytes()).map_err(|_| DiskError::image(b, "path holds a NUL byte"))?;
    // SAFETY: two valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE)
    };
    if rc != 0 {
        return Err(DiskError::io(a, std::io::Error::last_os_error()));
    }
    if let Some(dir) = a.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| DiskError::io(dir, e))?;
    }
    Ok(())
}
