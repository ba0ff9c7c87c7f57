//! One module per command group.

pub mod backup;
pub mod demo;
pub mod files;
pub mod group;
pub mod jobs;
pub mod key;
pub mod maintenance;
pub mod policy;
pub mod restore;
pub mod server;
pub mod vault;
pub mod vm;

use ::vault::{MasterKey, UnlockedVault, Vault};
use anyhow::Result;

use crate::{Context, agent, secret};

/// Open the vault at the context's location without its key.
pub async fn open(context: &Context) -> Result<Vault> {
    Ok(Vault::open(context.location.backend()).await?)
}

/// Open and unlock the vault: an unencrypted one needs nothing; an encrypted one takes the key
/// cached by `vmvault key unlock`, else the passphrase.
pub async fn unlock(context: &Context) -> Result<UnlockedVault> {
    let vault = open(context).await?;
    if !vault.is_encrypted() {
        return Ok(vault.unlock_unencrypted()?);
    }
    let vault = match agent::load(&vault.config().id) {
        Some(key) => match vault.unlock_with_master(MasterKey::from_bytes(key)) {
            Ok(unlocked) => return Ok(unlocked),
            // A stale cached key (the vault was recreated): fall back to the passphrase.
            Err(_) => open(context).await?,
        },
        None => vault,
    };
    let passphrase = secret::current(context.passphrase_file.as_deref()).passphrase(false)?;
    Ok(vault.unlock(&passphrase).await?)
}

/// Print `value` as pretty JSON when `json` is set, else run `text` to print it for people.
pub fn emit<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce(&T)) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        text(value);
    }
    Ok(())
}
