//! Typed errors of the disk crate; each names the image, socket or tool concerned.

use std::path::PathBuf;

/// Everything that can go wrong reading, writing or exporting a disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path}: in use by a running QEMU or another program (it holds the image lock); stop the VM first, or back it up live once it has a QMP socket"
    )]
    InUse { path: PathBuf },

    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },

    #[error("{tool} failed on {target}: {message}")]
    Tool { tool: String, target: String, message: String },

    #[error("{tool} is not installed or not on PATH; install qemu-utils")]
    ToolMissing { tool: String },

    #[error("NBD server {server}: {message}")]
    Nbd { server: String, message: String },

    #[error("QEMU at {socket}: {message}")]
    Qmp { socket: PathBuf, message: String },

    #[error("NBD server {server} has no metadata context {context}")]
    NbdContextMissing { server: String, context: String },

    #[error("NBD server {server} reported error {errno}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    NbdServer { server: String, errno: u32, message: String },
}

impl DiskError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DiskError::Io { path: path.into(), source }
    }

    pub(crate) fn image(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DiskError::Image { path: path.into(), message: message.into() }
    }
}

/// Result type of the disk crate.
pub type Result<T, E = DiskError> = std::result::Result<T, E>;
