//! Typed errors of the engine: what went wrong, to which VM, disk or point, and what to do.

use disk::DiskError;
use vault::VaultError;

/// Everything a backup or restore can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Vault(#[from] VaultError),

    #[error(transparent)]
    Disk(#[from] DiskError),

    #[error(transparent)]
    Guest(#[from] guestfs::GuestError),

    #[error("VM {0:?} is not registered; see `vmvault vm list`, or register it with `vmvault vm add`")]
    NoSuchVm(String),

    #[error("VM {0:?} is already registered; pick another name or `vmvault vm remove` it first")]
    VmExists(String),

    #[error("VM {vm:?} has no disk {label:?} (its disks: {known})")]
    NoSuchDisk { vm: String, label: String, known: String },

    #[error("VM {vm:?} has no recovery point {point:?}; see `vmvault points {vm}`")]
    NoSuchPoint { vm: String, point: String },

    #[error("recovery point {point} of VM {vm:?} has no disk {label:?}")]
    DiskNotInPoint { vm: String, point: String, label: String },

    #[error("{0}")]
    Limit(String),

    #[error("{0}")]
    Invalid(String),

    #[error("{what}: {message}")]
    Libvirt { what: String, message: String },

    #[error("restoring disk {label:?} of VM {vm:?} failed: {source}")]
    RestoreDisk {
        vm: String,
        label: String,
        #[source]
        source: Box<EngineError>,
    },

    #[error("the job was cancelled; nothing was committed")]
    Cancelled,
}

/// Result type of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
