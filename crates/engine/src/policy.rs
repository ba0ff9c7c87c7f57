//! Policies: when a protected item is backed up and how long its points are kept. Stored in
//! the catalog (`catalog/policies/<name>.json`) so every host using the vault shares them.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use vault::backend::Backend;
use vault::catalog;

use crate::error::{EngineError, Result};
use crate::names::check_name;
use crate::retention::Retention;
use crate::schedule::{Schedule, time_zone};
use vault::layout::{self, ObjectKey};

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

fn key(name: &str) -> ObjectKey {
    layout::policy(name)
}

/// Store a new policy; refuses an existing name.
pub async fn create(backend: &dyn Backend, policy: &Policy) -> Result<()> {
    match catalog::create(backend, &key(&policy.name), policy).await {
        Err(vault::VaultError::Conflict { .. }) => Err(EngineError::Invalid(format!(
            "policy {:?} exists; change it with `vmvault policy set` or pick another name",
            policy.name
        ))),
        other => Ok(other?),
    }
}

/// One policy by name.
pub async fn get(backend: &dyn Backend, name: &str) -> Result<Policy> {
    check_name("policy", name)?;
    catalog::read(backend, &key(name))
        .await?
        .ok_or_else(|| EngineError::Invalid(format!("no policy {name:?}; see `vmvault policy list`")))
}

/// Change a policy in place; `change` may edit any part but the name.
pub async fn update(
    backend: &dyn Backend,
    name: &str,
    change: impl Fn(&mut Policy) -> Result<()>,
) -> Result<Policy> {
    check_name("policy", name)?;
    catalog::update(backend, &key(name), |current: Option<Policy>| {
        let mut policy = current
            .ok_or_else(|| EngineError::Invalid(format!("no policy {name:?}; see `vmvault policy list`")))?;
        change(&mut policy)?;
        policy.tz()?;
        policy.retention.check()?;
        Ok(policy)
    })
    .await
}

/// Every policy, by name.
pub async fn list(backend: &dyn Backend) -> Result<Vec<Policy>> {
    let mut out: Vec<Policy> = catalog::read_all(backend, &layout::policies()).await?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Delete a policy no item uses.
pub async fn delete(backend: &dyn Backend, name: &str) -> Result<()> {
    get(backend, name).await?;
    let users: Vec<String> = crate::protection::list(backend)
        .await?
        .into_iter()
        .filter(|item| item.policy.as_deref() == Some(name))
        .map(|item| item.vm)
        .collect();
    if !users.is_empty() {
        return Err(EngineError::Invalid(format!(
            "policy {name:?} protects {}; move them to another policy first (`vmvault protect VM --policy P`)",
            users.join(", ")
        )));
    }
    Ok(backend.delete(&key(name)).await?)
}
