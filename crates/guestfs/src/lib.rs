//! Partition tables and read-only guest filesystems over any random-access block reader, and
//! extraction of guest files that never writes outside its target directory.
//!
//! A backed-up disk is untrusted input: every structure read here may be hostile. Parsers
//! check bounds before they index, errors name the file or directory they concern, and the
//! third-party filesystem readers run behind [`guard`], so a panic in one of them becomes an
//! error for that file, not a crash. Directory walks detect loops and stop at fixed budgets.
//!
//! The crate knows nothing of vaults or disk images: callers hand it a [`BlockReader`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod btrfs;
pub mod bytes;
pub mod error;
pub mod ext;
pub mod extract;
pub mod fat;
pub mod glob;
pub mod layout;
pub mod luks;
pub mod lvm;
pub mod md;
pub mod ntfs;
pub mod partition;
pub mod probe;
pub mod reader;
pub mod tree;
pub mod xattr;
pub mod xfs;

pub use error::{GuestError, Result};
pub use layout::{GuestDisk, Layout, Passphrase, Volume, open as open_volume, scan, scan_unlocking, volumes};
pub use probe::FsKind;
pub use reader::{BlockReader, Slice};
pub use tree::{Entry, EntryKind, GuestFs};

/// Run a third-party parser, turning a panic into an error about `what`.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => Err(GuestError::Corrupt {
            what: what.to_string(),
            reason: "the filesystem reader gave up on malformed data".into(),
        }),
    }
}
