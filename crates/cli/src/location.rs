//! Turning `--vault LOCATION` into a backend.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use vault::backend::{Backend, LocalBackend};

/// A vault location as the user named it.
pub enum Location {
    /// A local directory.
    Directory(PathBuf),
}

impl Location {
    /// `--vault` / `$VMVAULT_VAULT`, else `~/.local/share/vmvault/vault`.
    pub fn resolve(given: Option<&str>) -> Result<Self> {
        match given {
            Some(text) if text.contains("://") => {
                bail!("{text}: only local directories are supported as vaults so far")
            }
            Some(text) if !text.is_empty() => Ok(Location::Directory(PathBuf::from(text))),
            _ => {
                let home = std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .context("no vault given and $HOME is not set: pass --vault DIR or set VMVAULT_VAULT")?;
                Ok(Location::Directory(PathBuf::from(home).join(".local/share/vmvault/vault")))
            }
        }
    }

    /// The storage backend for this location.
    pub fn backend(&self) -> Arc<dyn Backend> {
        match self {
            Location::Directory(dir) => Arc::new(LocalBackend::new(dir.clone())),
        }
    }
}
