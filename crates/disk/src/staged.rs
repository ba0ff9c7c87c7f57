//! A restored file is written under a temporary name beside its target and gets the target's
//! name only when it is complete, so nothing half-written ever stands at a final name.
//!
//! The temporary is `.<target name>.vmvault-partial-<pid>` in the target's directory. Dropped
//! before [`Staged::finish`] (an error, a cancel, a panic) the temporary is removed; a process
//! killed outright leaves it, and the next restore to the same target removes every such
//! temporary whose process is gone.

use std::path::{Path, PathBuf};

use crate::error::{DiskError, Result};

const PARTIAL: &str = ".vmvault-partial-";

/// A file being written under a temporary name for `target`.
#[derive(Debug)]
pub struct Staged {
    partial: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Staged {
    /// Begin a file for `target`, which must not exist; leftovers of killed restores to the
    /// same target are removed first.
    pub fn begin(target: &Path) -> Result<Staged> {
        if target.symlink_metadata().is_ok() {
            return Err(DiskError::image(
                target,
                "already exists; vmvault does not overwrite files when restoring",
            ));
        }
        let name = target
            .file_name()
            .ok_or_else(|| DiskError::image(target, "names no file"))?
            .to_string_lossy()
            .into_owned();
        let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let prefix = format!(".{name}{PARTIAL}");
        remove_leftovers(dir, &prefix)?;
        let partial = dir.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        Ok(Staged { partial, target: target.to_path_buf(), done: false })
    }

    /// Where to write meanwhile.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// The file is complete: give it the target's name (never replacing a file that appeared
    /// there meanwhile), durably.
    pub fn finish(mut self) -> Result<PathBuf> {
        std::fs::File::open(&self.partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| DiskError::io(&self.partial, e))?;
        // A hard link is created only if the name is free: no restore ever replaces a file.
        std::fs::hard_link(&self.partial, &self.target).map_err(|e| DiskError::io(&self.target, e))?;
        std::fs::remove_file(&self.partial).map_err(|e| DiskError::io(&self.partial, e))?;
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| DiskError::io(dir, e))?;
        }
        self.done = true;
        Ok(self.target.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Remove `<prefix><pid>` files of processes that no longer run.
fn remove_leftovers(dir: &Path, prefix: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            std::fs::remove_file(entry.path()).map_err(|e| DiskError::io(entry.path(), e))?;
        }
    }
    Ok(())
}
