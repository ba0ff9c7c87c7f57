//! Typed errors of the vault crate.
//!
//! Every variant names the object it concerns (vault location, chunk id, file key) so the
//! binary can print one line that says what happened, where, and what to do next.

use std::path::PathBuf;

use crate::id::ChunkId;

/// Everything that can go wrong inside the vault crate.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{key}: not found in the vault at {location}")]
    NotFound { location: String, key: String },

    #[error("{key}: changed by someone else since it was read; read it again and retry")]
    Conflict { key: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{location}: {key}: {message}")]
    Storage { location: String, key: String, message: String },

    #[error("{location}: {what}: refused ({reason})")]
    Denied { location: String, what: String, reason: String },

    #[error("{location}: no vault here (no config file); create one with `vmvault vault init`")]
    NotAVault { location: String },

    #[error("{location}: a vault already exists here; nothing was changed")]
    AlreadyInitialized { location: String },

    #[error(
        "{what}: format version {found} is not supported (this vmvault reads version {supported}); upgrade vmvault"
    )]
    UnsupportedVersion { what: String, found: u32, supported: u32 },

    #[error("{what}: damaged ({reason}); run `vmvault verify` to list affected recovery points")]
    Corrupt { what: String, reason: String },

    #[error(
        "chunk {id}: stored bytes fail their checksum (damaged on disk or in transit); run `vmvault verify` to list affected recovery points"
    )]
    ChunkChecksum { id: ChunkId },

    #[error(
        "chunk {id}: content does not belong to this id (tampered with, or another chunk stored under its name)"
    )]
    ChunkAuthentication { id: ChunkId },

    #[error("{what}: signature does not match (tampered with, or written with another key)")]
    BadSignature { what: String },

    #[error("wrong passphrase for the vault at {location}; nothing was changed")]
    WrongPassphrase { location: String },

    #[error("the recovery key does not belong to the vault at {location}; nothing was changed")]
    WrongRecoveryKey { location: String },

    #[error(
        "recovery key not understood: {reason}; type it again exactly as printed (dashes and case do not matter)"
    )]
    BadRecoveryKey { reason: String },

    #[error("the vault at {location} is not encrypted; it has no key or passphrase")]
    NotEncrypted { location: String },

    #[error("the vault at {location} is encrypted; a passphrase is needed to unlock it")]
    Locked { location: String },

    #[error("no random numbers from the operating system: {0}")]
    Random(String),

    #[error(
        "{what} is in use by {holder} since {since}; wait for it to finish (`vmvault job wait {holder}`) or cancel it"
    )]
    Busy { what: String, holder: String, since: jiff::Timestamp },

    #[error("the job was cancelled; nothing was committed")]
    Cancelled,

    #[error("{0}")]
    Invalid(String),
}

impl VaultError {
    /// True when the same operation may succeed if the caller reads again and retries.
    pub fn is_retryable(&self) -> bool {
        matches!(self, VaultError::Conflict { .. })
    }

    /// A damaged object, named by `what`.
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        VaultError::Corrupt { what: what.into(), reason: reason.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VaultError::Io { path: path.into(), source }
    }
}

impl From<crate::id::BadId> for VaultError {
    fn from(e: crate::id::BadId) -> Self {
        VaultError::Invalid(e.to_string())
    }
}

/// Result type of the vault crate.
pub type Result<T, E = VaultError> = std::result::Result<T, E>;

/// Fill a buffer from the operating system's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| VaultError::Random(e.to_string()))
}
