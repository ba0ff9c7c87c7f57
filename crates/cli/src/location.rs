//! Turning `--vault LOCATION` into a backend.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use vault::backend::{Backend, LocalBackend, S3Backend};

/// The vault the user named: a directory, or `s3://BUCKET/PREFIX` of S3-compatible object
/// storage configured by the `AWS_*` variables.
pub struct Location {
    backend: Arc<dyn Backend>,
}

impl Location {
    /// `--vault` / `$VMVAULT_VAULT`, else `~/.local/share/vmvault/vault`.
    pub fn resolve(given: Option<&str>) -> Result<Self> {
        let backend: Arc<dyn Backend> = match given {
            Some(text) if text.starts_with("s3://") => Arc::new(S3Backend::from_url(text)?),
            Some(text) if text.contains("://") => {
                bail!("{text}: a vault is a directory or an s3://BUCKET/PREFIX URL")
            }
            Some(text) if !text.is_empty() => Arc::new(LocalBackend::new(PathBuf::from(text))),
            _ => {
                let home = std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .context("no vault given and $HOME is not set: pass --vault DIR or set VMVAULT_VAULT")?;
                Arc::new(LocalBackend::new(PathBuf::from(home).join(".local/share/vmvault/vault")))
            }
        };
        Ok(Location { backend })
    }

    /// The storage backend for this location.
    pub fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }
}
