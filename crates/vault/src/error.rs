//! Typed errors of the vault crate, and the [`ErrorKind`] every vmvault error is sorted into.
//!
//! Every variant names the object it concerns (vault location, chunk id, object key) so the
//! binary can print one line that says what happened and where. What to do next is kept
//! apart, in [`VaultError::hint`]: the CLI prints it on its own line, the server returns it as
//! its own field, so no message carries a command line to a web client.

use std::path::PathBuf;

use serde::Serialize;

use crate::id::ChunkId;

/// What kind of failure an error is, whichever crate made it. The CLI turns the kind into
/// its exit code and the server into an HTTP status; a caller decides by kind whether to
/// retry, never by the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The VM, policy, point, job or object named does not exist.
    NotFound,
    /// Something of that name exists already.
    Exists,
    /// Someone else changed it meanwhile; read it again and retry.
    Conflict,
    /// The state of what the request names forbids it (a protected VM removed, a job that
    /// ended cancelled); something must change first.
    Refused,
    /// The request itself is wrong: a bad name, value or combination.
    Invalid,
    /// Stored data failed a check: damaged or tampered with.
    Damaged,
    /// Not allowed: a wrong passphrase or key, a token's role, a lock.
    Denied,
    /// The store or a server did not answer; trying later may work.
    Unavailable,
    /// Another job holds what this one needs; wait for it.
    Busy,
    /// Cancelled on request.
    Cancelled,
    /// One of the product's limits would be exceeded.
    Limit,
    /// Anything else: the host, a tool or vmvault itself failed.
    Failed,
}

impl ErrorKind {
    /// The kind's name, as the API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Exists => "exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Refused => "refused",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Damaged => "damaged",
            ErrorKind::Denied => "denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Busy => "busy",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Limit => "limit",
            ErrorKind::Failed => "failed",
        }
    }
}

/// Everything that can go wrong inside the vault crate.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{key}: not found in the vault at {location}")]
    NotFound { location: String, key: String },

    #[error("{key}: exists already; nothing was changed")]
    Exists { key: String },

    #[error("{key}: changed by someone else since it was read")]
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

    #[error("{location}: no vault here (no config file)")]
    NotAVault { location: String },

    #[error("{location}: a vault already exists here; nothing was changed")]
    AlreadyInitialized { location: String },

    #[error("{what}: format version {found} is not supported (this vmvault reads version {supported})")]
    UnsupportedVersion { what: String, found: u32, supported: u32 },

    #[error("{what}: damaged ({reason})")]
    Corrupt { what: String, reason: String },

    #[error("chunk {id}: stored bytes fail their checksum (damaged on disk or in transit)")]
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

    #[error("recovery key not understood: {reason}")]
    BadRecoveryKey { reason: String },

    #[error("the vault at {location} is not encrypted; it has no key or passphrase")]
    NotEncrypted { location: String },

    #[error("the vault at {location} is encrypted; a passphrase is needed to unlock it")]
    Locked { location: String },

    #[error("no random numbers from the operating system: {0}")]
    Random(String),

    #[error("{what} is in use by {holder} since {since}")]
    Busy { what: String, holder: String, since: jiff::Timestamp },

    #[error("{0}")]
    Blocked(String),

    #[error("the job was cancelled; nothing was committed")]
    Cancelled,

    #[error("{0}")]
    Invalid(String),

    #[error("{0}")]
    Failed(String),
}

impl VaultError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use VaultError::*;
        match self {
            NotFound { .. } | NotAVault { .. } => ErrorKind::NotFound,
            Exists { .. } | AlreadyInitialized { .. } => ErrorKind::Exists,
            Conflict { .. } => ErrorKind::Conflict,
            Storage { .. } => ErrorKind::Unavailable,
            Denied { .. } | WrongPassphrase { .. } | WrongRecoveryKey { .. } | Locked { .. } => {
                ErrorKind::Denied
            }
            Corrupt { .. } | ChunkChecksum { .. } | ChunkAuthentication { .. } | BadSignature { .. } => {
                ErrorKind::Damaged
            }
            UnsupportedVersion { .. } | BadRecoveryKey { .. } | NotEncrypted { .. } | Invalid(_) => {
                ErrorKind::Invalid
            }
            Busy { .. } | Blocked(_) => ErrorKind::Busy,
            Cancelled => ErrorKind::Cancelled,
            Io { source, .. } if is_out_of_space(source) => ErrorKind::Limit,
            Io { .. } | Random(_) | Failed(_) => ErrorKind::Failed,
        }
    }

    /// What the user can do about it, when there is something.
    pub fn hint(&self) -> Option<String> {
        use VaultError::*;
        Some(match self {
            NotAVault { .. } => "create one with `vmvault vault init`".into(),
            Conflict { .. } => "read it again and retry".into(),
            UnsupportedVersion { .. } => "upgrade vmvault".into(),
            Corrupt { .. } | ChunkChecksum { .. } => {
                "run `vmvault verify` to list affected recovery points".into()
            }
            BadRecoveryKey { .. } => {
                "type it again exactly as printed (dashes and case do not matter)".into()
            }
            Busy { holder, .. } => {
                format!("wait for it to finish (`vmvault job wait {holder}`) or cancel it")
            }
            Locked { .. } => "give the passphrase, or unlock the key with `vmvault key unlock`".into(),
            Io { source, .. } if is_out_of_space(source) => {
                "free space on the vault's disk (`vmvault prune`, then `vmvault gc`) or give it more".into()
            }
            _ => return None,
        })
    }

    /// The same error with the vault's location replaced by `shown`: a server names its vault
    /// to clients without its path.
    pub fn with_location_shown_as(mut self, shown: &str) -> Self {
        use VaultError::*;
        match &mut self {
            NotFound { location, .. }
            | Storage { location, .. }
            | Denied { location, .. }
            | NotAVault { location }
            | AlreadyInitialized { location }
            | WrongPassphrase { location }
            | WrongRecoveryKey { location }
            | NotEncrypted { location }
            | Locked { location } => *location = shown.to_string(),
            _ => {}
        }
        self
    }

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

/// A full disk or a used-up quota: a limit of the store, not a fault of vmvault.
fn is_out_of_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}
