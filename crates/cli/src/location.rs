//! Turning `--vault LOCATION` into a backend.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use server::client::{RemoteBackend, Trust};
use vault::backend::{Backend, LocalBackend, S3Backend};

/// The vault the user named: a directory, `s3://BUCKET/PREFIX` of S3-compatible object
/// storage configured by the `AWS_*` variables, or a vmvault server (`https://HOST:PORT`,
/// with `$VMVAULT_TOKEN` and a pinned fingerprint or CA file).
pub struct Location {
    backend: Arc<dyn Backend>,
    server: Option<Arc<RemoteBackend>>,
}

impl Location {
    /// `--vault` / `$VMVAULT_VAULT`, else `~/.local/share/vmvault/vault`.
    pub fn resolve(given: Option<&str>, trust: Option<Trust>) -> Result<Self> {
        let backend: Arc<dyn Backend> = match given {
            Some(text) if text.starts_with("s3://") => Arc::new(S3Backend::from_url(text)?),
            Some(text) if text.starts_with("https://") => {
                let token = std::env::var("VMVAULT_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
                    .context("a vault server needs a token: set VMVAULT_TOKEN (made with `vmvault server token create`)")?;
                let trust = trust.context(
                    "a vault server needs --fingerprint (as the server printed it at start) or --ca-file",
                )?;
                let remote = Arc::new(RemoteBackend::new(text, &token, &trust)?);
                return Ok(Location { backend: remote.clone(), server: Some(remote) });
            }
            Some(text) if text.contains("://") => {
                bail!("{text}: a vault is a directory, s3://BUCKET/PREFIX or https://SERVER:PORT")
            }
            Some(text) if !text.is_empty() => Arc::new(LocalBackend::new(PathBuf::from(text))),
            _ => {
                let home = std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .context("no vault given and $HOME is not set: pass --vault DIR or set VMVAULT_VAULT")?;
                Arc::new(LocalBackend::new(PathBuf::from(home).join(".local/share/vmvault/vault")))
            }
        };
        Ok(Location { backend, server: None })
    }

    /// The vault server, when the vault is served by one: cleanups then run there.
    pub fn server(&self) -> Option<&RemoteBackend> {
        self.server.as_deref()
    }

    /// The storage backend for this location.
    pub fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }
}
