//! Policies: when a protected item is backed up and how long its points are kept, in
//! `catalog/policies/<name>.json`, so every host using the vault shares them.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use vault::layout::{self, ObjectKey, Prefix};

use super::Record;
use crate::error::{Record as RecordKind, Result};
use crate::names::check_name;
use crate::retention::Retention;
use crate::schedule::{Schedule, time_zone};

/// A backup policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Unique name.
    pub name: String,
    /// When backups run, in wall-clock time of `timezone`.
    pub schedule: Schedule,
    /// IANA time zone of the schedule and of the retention buckets.
    pub timezone: String,
    /// How long points are kept.
    pub retention: Retention,
    /// When it was created.
    pub created: Timestamp,
}

impl Policy {
    /// Check every part of a policy an operator gave.
    pub fn new(name: &str, schedule: &str, timezone: &str, retention: Retention) -> Result<Policy> {
        check_name("policy", name)?;
        time_zone(timezone)?;
        retention.check()?;
        Ok(Policy {
            name: name.to_string(),
            schedule: schedule.parse()?,
            timezone: timezone.to_string(),
            retention,
            created: Timestamp::now(),
        })
    }

    /// The policy's time zone.
    pub fn tz(&self) -> Result<TimeZone> {
        time_zone(&self.timezone)
    }
}

impl Record for Policy {
    const KIND: RecordKind = RecordKind::Policy;
    fn object_key(name: &str) -> ObjectKey {
        layout::policy(name)
    }
    fn prefix() -> Prefix {
        layout::policies()
    }
    fn name(&self) -> &str {
        &self.name
    }
}
