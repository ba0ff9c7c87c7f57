//! Errors of guest filesystem access: each names the path or structure it concerns.

/// Everything reading a guest disk can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("reading the disk at byte {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: std::io::Error,
    },

    #[error("{what}: damaged or hostile structure ({reason})")]
    Corrupt { what: String, reason: String },

    #[error("{path}: no such file or directory in the guest filesystem")]
    NotFound { path: String },

    #[error("{path}: not a directory")]
    NotADirectory { path: String },

    #[error("{path}: not a regular file")]
    NotAFile { path: String },

    #[error("{what}: {reason}")]
    Unsupported { what: String, reason: String },

    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),
}

impl GuestError {
    /// A damaged structure.
    pub fn corrupt(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        GuestError::Corrupt { what: what.into(), reason: reason.to_string() }
    }
}

/// Result type of the guestfs crate.
pub type Result<T, E = GuestError> = std::result::Result<T, E>;
