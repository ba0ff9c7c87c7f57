//! Vault-wide settings that guard data: how long soft-deleted data waits before it is purged,
//! and how many on-demand backups an item may take a day. Stored in `catalog/settings.json`.

use serde::{Deserialize, Serialize};
use vault::layout;

use super::Catalog;
use crate::error::{EngineError, Result};

/// Fewest days soft-deleted data is kept; soft delete cannot be shortened below this or turned off.
pub const MIN_SOFT_DELETE_DAYS: u32 = 14;

/// The settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Days between deleting an item's data and purging it.
    pub soft_delete_days: u32,
    /// On-demand backups allowed per item and calendar day.
    pub on_demand_per_day: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { soft_delete_days: MIN_SOFT_DELETE_DAYS, on_demand_per_day: 4 }
    }
}

impl Settings {
    fn check(&self) -> Result<()> {
        if self.soft_delete_days < MIN_SOFT_DELETE_DAYS {
            return Err(EngineError::Limit(format!(
                "soft delete keeps deleted data at least {MIN_SOFT_DELETE_DAYS} days and cannot be turned off; \
                 {} is too few",
                self.soft_delete_days
            )));
        }
        if self.on_demand_per_day == 0 {
            return Err(EngineError::Limit("on-demand backups per day must be at least 1".into()));
        }
        Ok(())
    }
}

/// The vault's settings (the defaults until someone changes them).
pub async fn load(catalog: Catalog<'_>) -> Result<Settings> {
    Ok(vault::catalog::read(catalog.backend(), &layout::settings()).await?.unwrap_or_default())
}

/// Change settings; refuses values that would weaken soft delete.
pub async fn update(catalog: Catalog<'_>, change: impl Fn(&mut Settings)) -> Result<Settings> {
    vault::catalog::update(catalog.backend(), &layout::settings(), |current: Option<Settings>| {
        let mut settings = current.unwrap_or_default();
        change(&mut settings);
        settings.check()?;
        Ok(settings)
    })
    .await
}
