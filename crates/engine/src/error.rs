//! Typed errors of the engine: what went wrong, to which VM, disk or point — and, kept apart,
//! its [`ErrorKind`] (which decides the CLI's exit code and the server's HTTP status) and a
//! hint of what to do. Errors of the `disk` and `guestfs` crates get their kind here: they
//! reach people only through the engine.

use disk::DiskError;
use guestfs::GuestError;
pub use vault::ErrorKind;
use vault::VaultError;

/// A kind of catalog record, for [`EngineError::NotFound`] and [`EngineError::Exists`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A registered VM.
    Vm,
    /// A policy.
    Policy,
    /// A protected item (named by its VM).
    Item,
    /// A consistency group.
    Group,
    /// A job record.
    Job,
}

impl Record {
    /// The word for it in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Record::Vm => "VM",
            Record::Policy => "policy",
            Record::Item => "protected item",
            Record::Group => "consistency group",
            Record::Job => "job",
        }
    }

    /// Where to see the existing ones.
    fn list_command(self) -> &'static str {
        match self {
            Record::Vm => "vmvault vm list",
            Record::Policy => "vmvault policy list",
            Record::Item => "vmvault items",
            Record::Group => "vmvault group list",
            Record::Job => "vmvault jobs",
        }
    }
}

/// Everything a backup, a restore or a catalog change can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Vault(#[from] VaultError),

    #[error(transparent)]
    Disk(#[from] DiskError),

    #[error(transparent)]
    Guest(#[from] GuestError),

    #[error("no {} {name:?}", what.as_str())]
    NotFound { what: Record, name: String },

    #[error("{} {name:?} exists already; nothing was changed", what.as_str())]
    Exists { what: Record, name: String },

    #[error("VM {vm:?} has no disk {label:?} (its disks: {known})")]
    NoSuchDisk { vm: String, label: String, known: String },

    #[error("VM {vm:?} has no recovery point {point:?}")]
    NoSuchPoint { vm: String, point: String },

    #[error("recovery point {point} of VM {vm:?} has no disk {label:?}")]
    DiskNotInPoint { vm: String, point: String, label: String },

    /// The request is sound but the state of what it names forbids it (a protected VM
    /// removed, soft-deleted data backed up, a job that already ended cancelled).
    #[error("{message}")]
    Refused { message: String, hint: Option<String> },

    /// A file given as a raw disk that looks like no disk.
    #[error("{}: does not look like a disk ({why})", path.display())]
    Suspicious { path: std::path::PathBuf, why: String },

    #[error("{0}")]
    Limit(String),

    #[error("{0}")]
    Invalid(String),

    #[error("{0}")]
    Failed(String),

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

    /// Reading one disk of a backup failed.
    #[error("disk {label}: {source}")]
    BackupDisk {
        label: String,
        #[source]
        source: Box<EngineError>,
    },

    /// A backup that did not commit, and what became of what it had stored.
    #[error("{source}; {after}")]
    Uncommitted {
        #[source]
        source: Box<EngineError>,
        after: String,
    },
}

impl EngineError {
    /// A record that does not exist.
    pub fn not_found(what: Record, name: &str) -> Self {
        EngineError::NotFound { what, name: name.to_string() }
    }

    /// A record that exists already.
    pub fn exists(what: Record, name: &str) -> Self {
        EngineError::Exists { what, name: name.to_string() }
    }

    /// A request the current state forbids, with what to do first.
    pub fn refused(message: impl Into<String>, hint: impl Into<String>) -> Self {
        EngineError::Refused { message: message.into(), hint: Some(hint.into()) }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Vault(e) => e.kind(),
            EngineError::Disk(e) => disk_kind(e),
            EngineError::Guest(e) => guest_kind(e),
            EngineError::NotFound { .. }
            | EngineError::NoSuchDisk { .. }
            | EngineError::NoSuchPoint { .. }
            | EngineError::DiskNotInPoint { .. } => ErrorKind::NotFound,
            EngineError::Exists { .. } => ErrorKind::Exists,
            EngineError::Refused { .. } => ErrorKind::Refused,
            EngineError::Limit(_) => ErrorKind::Limit,
            EngineError::Invalid(_) | EngineError::Libvirt { .. } | EngineError::Suspicious { .. } => {
                ErrorKind::Invalid
            }
            EngineError::Failed(_) => ErrorKind::Failed,
            EngineError::RestoreDisk { source, .. }
            | EngineError::BackupDisk { source, .. }
            | EngineError::Uncommitted { source, .. } => source.kind(),
            EngineError::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// What the user can do about it, when there is something; kept out of the message.
    pub fn hint(&self) -> Option<String> {
        match self {
            EngineError::Vault(e) => e.hint(),
            EngineError::Disk(DiskError::InUse { .. }) => {
                Some("stop the VM first, or back it up live once it has a QMP socket".into())
            }
            EngineError::Disk(DiskError::ToolMissing { .. }) => Some("install qemu-utils".into()),
            EngineError::NotFound { what: Record::Vm, .. } => {
                Some("see `vmvault vm list`, or register it with `vmvault vm add`".into())
            }
            EngineError::NotFound { what, .. } => Some(format!("see `{}`", what.list_command())),
            EngineError::Exists { what: Record::Vm, name } => {
                Some(format!("pick another name or `vmvault vm remove {name}` first"))
            }
            EngineError::Exists { what: Record::Group, name } => {
                Some(format!("delete it first (`vmvault group delete {name}`) or pick another name"))
            }
            EngineError::Exists { what: Record::Policy, .. } => {
                Some("change it with `vmvault policy set` or pick another name".into())
            }
            EngineError::NoSuchPoint { vm, .. } => Some(format!("see `vmvault points {vm}`")),
            EngineError::Suspicious { .. } => {
                Some("if it really is the VM's disk, add it with --force".into())
            }
            EngineError::Refused { hint, .. } => hint.clone(),
            EngineError::Guest(GuestError::Unsupported { .. }) => {
                Some("see `vmvault files parts`; name a readable volume with --partition, or give the passphrase of a LUKS volume with --luks-passphrase-file".into())
            }
            EngineError::RestoreDisk { source, .. }
            | EngineError::BackupDisk { source, .. }
            | EngineError::Uncommitted { source, .. } => source.hint(),
            _ => None,
        }
    }
}

fn disk_kind(e: &DiskError) -> ErrorKind {
    match e {
        DiskError::InUse { .. } => ErrorKind::Busy,
        DiskError::Image { .. } => ErrorKind::Invalid,
        DiskError::Nbd { .. } | DiskError::NbdServer { .. } | DiskError::Qmp { .. } => ErrorKind::Unavailable,
        DiskError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Failed,
    }
}

fn guest_kind(e: &GuestError) -> ErrorKind {
    match e {
        GuestError::NotFound { .. } => ErrorKind::NotFound,
        GuestError::NotADirectory { .. } | GuestError::NotAFile { .. } | GuestError::Invalid(_) => {
            ErrorKind::Invalid
        }
        GuestError::Corrupt { .. } => ErrorKind::Damaged,
        _ => ErrorKind::Failed,
    }
}

/// Result type of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
