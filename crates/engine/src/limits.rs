//! Limits from Azure Backup's support matrix, enforced with messages that say which limit.

use std::path::Path;

use crate::error::{EngineError, Result};

/// Configurable limits; the defaults are Azure's.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Data disks per VM (the OS disk comes on top).
    pub max_data_disks: usize,
    /// Largest disk in bytes.
    pub max_disk_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_data_disks: 16, max_disk_bytes: 4095 << 30 }
    }
}

impl Limits {
    /// One OS disk plus at most `max_data_disks` data disks.
    pub fn check_disk_count(&self, vm: &str, disks: usize) -> Result<()> {
        if disks > self.max_data_disks + 1 {
            return Err(EngineError::Limit(format!(
                "VM {vm:?} has {} data disks; at most {} are supported (plus the OS disk)",
                disks - 1,
                self.max_data_disks
            )));
        }
        Ok(())
    }

    /// Disks larger than the limit are refused when registered.
    pub fn check_disk_size(&self, path: &Path, size: u64) -> Result<()> {
        if size > self.max_disk_bytes {
            return Err(EngineError::Limit(format!(
                "{}: {} GiB is larger than the {} GiB a disk may have",
                path.display(),
                size.div_ceil(1 << 30),
                self.max_disk_bytes >> 30
            )));
        }
        Ok(())
    }
}
