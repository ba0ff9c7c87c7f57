//! Creating, changing and deleting policies.

use crate::catalog::Catalog;
use crate::catalog::item::ProtectedItem;
use crate::catalog::policy::Policy;
use crate::error::{EngineError, Result};

/// Store a new policy; refuses an existing name, and a time zone or retention that would not
/// work.
pub async fn create(catalog: Catalog<'_>, policy: &Policy) -> Result<()> {
    policy.tz()?;
    policy.retention.check()?;
    catalog.create(policy).await
}

/// Change a policy in place; `change` may edit any part but the name. The result is checked
/// as a new policy would be.
pub async fn update(
    catalog: Catalog<'_>,
    name: &str,
    change: impl Fn(&mut Policy) -> Result<()>,
) -> Result<Policy> {
    catalog
        .update(name, |mut policy: Policy| {
            change(&mut policy)?;
            policy.name = name.to_string();
            policy.tz()?;
            policy.retention.check()?;
            Ok(policy)
        })
        .await
}

/// Delete a policy no item uses.
pub async fn delete(catalog: Catalog<'_>, name: &str) -> Result<()> {
    super::delete_unreferenced::<Policy, _, _>(catalog, name, || refuse_if_used(catalog, name)).await?;
    Ok(())
}

async fn refuse_if_used(catalog: Catalog<'_>, name: &str) -> Result<()> {
    let users: Vec<String> = catalog
        .list::<ProtectedItem>()
        .await?
        .into_iter()
        .filter(|item| item.policy.as_deref() == Some(name))
        .map(|item| item.vm)
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    Err(EngineError::refused(
        format!("policy {name:?} protects {}", users.join(", ")),
        "move them to another policy first (`vmvault protect VM --policy P`)",
    ))
}
