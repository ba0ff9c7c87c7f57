//! Limits from Azure Backup's support matrix, enforced with messages that say which limit.

use std::path::Path;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use vault::{Manifest, PointKind};

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

/// Longest an on-demand point may be kept (Azure's limit for on-demand retention).
pub const MAX_RETAIN_YEARS: i64 = 99;

/// The latest `--retain-until` an on-demand backup made at `now` may ask for.
pub fn latest_retain_until(now: Timestamp) -> Timestamp {
    now.checked_add(jiff::SignedDuration::from_hours(24 * 365 * MAX_RETAIN_YEARS + 24 * 24))
        .unwrap_or(Timestamp::MAX)
}

/// Most recovery points an item may have; a backup that would make more fails.
pub const MAX_POINTS: usize = 9999;

/// Refuse a backup that would exceed an item's point limits: [`MAX_POINTS`] points, and
/// `per_day` on-demand backups per calendar day in `tz` (the policy's zone, or UTC).
pub fn check_point_limits(
    vm: &str,
    history: &[Manifest],
    kind: PointKind,
    per_day: u32,
    tz: &TimeZone,
    now: Timestamp,
) -> Result<()> {
    if history.len() >= MAX_POINTS {
        return Err(EngineError::Limit(format!(
            "VM {vm:?} has {} recovery points, the most an item may have; let old points expire \
             (`vmvault unlock {vm}` if a delete lock holds them, then `vmvault prune {vm}`)",
            history.len()
        )));
    }
    if kind != PointKind::OnDemand {
        return Ok(());
    }
    let today = tz.to_datetime(now).date();
    let taken = history
        .iter()
        .filter(|m| m.kind == PointKind::OnDemand && tz.to_datetime(m.time).date() == today)
        .count();
    if taken >= per_day as usize {
        return Err(EngineError::Limit(format!(
            "VM {vm:?} already has {taken} on-demand backups today ({today}, {}); at most {per_day} a day are \
             allowed (vault setting `on_demand_per_day`)",
            tz.iana_name().unwrap_or("UTC")
        )));
    }
    Ok(())
}
