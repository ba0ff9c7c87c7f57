//! Disks as vmvault sees them: images and block devices to read and write, their allocation
//! maps, QEMU's image locks and tools, QMP and the guest agent, and the NBD protocol (client
//! and read-only server).
//!
//! This crate knows nothing of the vault: it moves bytes between disks and callers.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod error;
pub mod image;
pub mod live;
pub mod lock;
pub mod nbd;
pub mod qemu;
pub mod qmp;
pub mod scratch;
pub mod staged;
pub mod swap;
pub mod watch;
pub mod writer;

pub use error::{DiskError, Result};
pub use image::{BlockSource, DiskFormat, Extent, ImageInfo, open_source, probe};
pub use lock::ImageLock;
