//! One module per command group.

pub mod backup;
pub mod key;
pub mod restore;
pub mod vault;
pub mod vm;

use ::vault::{UnlockedVault, Vault};
use anyhow::Result;

use crate::{Context, secret};

/// Open the vault at the context's location without its key.
pub async fn open(context: &Context) -> Result<Vault> {
    Ok(Vault::open(context.location.backend()).await?)
}

/// Open and unlock the vault, asking for the passphrase only if it is encrypted.
pub async fn unlock(context: &Context) -> Result<UnlockedVault> {
    let vault = open(context).await?;
    if vault.is_encrypted() {
        let passphrase = secret::current(context.passphrase_file.as_deref()).passphrase(false)?;
        Ok(vault.unlock(&passphrase).await?)
    } else {
        Ok(vault.unlock_unencrypted()?)
    }
}
