//! vmvault's engine: the backup and restore pipelines, the VM registry and change tracking.
//!
//! It talks to disks through the `disk` crate and to the vault through the `vault` crate, and
//! reports progress through [`progress::Progress`]; it never prints.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod backup;
pub mod checkpoint;
pub mod error;
pub mod files;
pub mod group;
pub mod jobs;
pub mod libvirt;
pub mod limits;
pub mod names;
pub mod points;
pub mod policy;
pub mod progress;
pub mod protection;
pub mod prune;
pub mod registry;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod scripts;
pub mod settings;
pub mod transfer;

pub use error::{EngineError, Result};
pub use progress::{NoProgress, Progress};
