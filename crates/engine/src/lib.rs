//! vmvault's engine: the backup and restore pipelines, the VM registry and change tracking.
//!
//! It talks to disks through the `disk` crate and to the vault through the `vault` crate, and
//! reports progress through [`progress::Progress`]; it never prints.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod backup;
pub mod catalog;
pub mod chunk_cache;
pub mod error;
pub mod files;
pub mod jobs;
pub mod ledger;
pub mod libvirt;
pub mod limits;
pub mod names;
pub mod points;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod scripts;
pub mod services;
pub mod transfer;
pub mod verify;

pub use error::{EngineError, ErrorKind, Record, Result};
pub use progress::{NoProgress, Progress};
