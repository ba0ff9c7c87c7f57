//! `vmvault key …`: passphrase changes and the paper recovery key.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use vault::RecoveryKey;

use crate::{Context, secret};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Re-wrap the master key under a new passphrase; backups are not touched.
    ChangePassphrase {
        /// Read the new passphrase from this file (else $VMVAULT_NEW_PASSPHRASE, else a prompt).
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Print the master key as a recovery key a person can type back in.
    Export {
        /// Print it for paper: grouped characters and instructions.
        #[arg(long, required = true)]
        paper: bool,
    },
    /// Unlock the key once for this user, so scheduled and scripted runs need no passphrase.
    Unlock {
        /// How long it stays unlocked, e.g. 30m, 8h, 7d.
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        timeout: String,
    },
    /// Forget the unlocked key now.
    Lock,
    /// Set a new passphrase from a paper recovery key (lost passphrase or damaged key file).
    Import {
        /// Read the recovery key from this file (else $VMVAULT_RECOVERY_KEY, else a prompt).
        #[arg(long, value_name = "FILE")]
        recovery_key_file: Option<PathBuf>,
        /// Read the new passphrase from this file (else $VMVAULT_NEW_PASSPHRASE, else a prompt).
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
}

pub async fn run(context: &Context, command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::ChangePassphrase { new_passphrase_file } => {
            let vault = crate::commands::unlock(context).await?;
            let new = secret::new(new_passphrase_file.as_deref()).passphrase(true)?;
            vault.change_passphrase(&new).await?;
            println!("Passphrase changed for the vault at {}.", vault.vault().location());
        }
        KeyCommand::Export { paper: _ } => {
            let vault = crate::commands::unlock(context).await?;
            let recovery = vault.recovery_key()?;
            println!("vmvault recovery key for vault {}", vault.vault().config().id);
            println!();
            println!("    {}", recovery.text().as_str());
            println!();
            println!("Anyone holding this key can read every backup in the vault. Keep it offline.");
            println!("To set a new passphrase with it:  vmvault key import");
        }
        KeyCommand::Unlock { timeout } => {
            let seconds = parse_duration(&timeout)?;
            let vault = crate::commands::open(context).await?;
            if !vault.is_encrypted() {
                anyhow::bail!(
                    "the vault at {} is not encrypted; there is no key to unlock",
                    vault.location()
                );
            }
            let passphrase = secret::current(context.passphrase_file.as_deref()).passphrase(false)?;
            let vault = vault.unlock(&passphrase).await?;
            let id = vault.vault().config().id;
            let key = vault.master_key_for_cache().context("no master key")?;
            let place = match crate::agent::store(&id, &key, seconds)? {
                crate::agent::Store::Keyring => "the kernel keyring".to_string(),
                crate::agent::Store::File(path) => path.display().to_string(),
            };
            println!(
                "Key of vault {id} unlocked for {timeout} (kept in {place}); `vmvault key lock` forgets it."
            );
        }
        KeyCommand::Lock => {
            let vault = crate::commands::open(context).await?;
            let id = vault.config().id;
            if crate::agent::forget(&id)? {
                println!("Key of vault {id} locked.");
            } else {
                println!("Key of vault {id} was not unlocked.");
            }
        }
        KeyCommand::Import { recovery_key_file, new_passphrase_file } => {
            let vault = crate::commands::open(context).await?;
            let source = secret::Source {
                file: recovery_key_file.as_deref(),
                file_flag: "--recovery-key-file",
                env: "VMVAULT_RECOVERY_KEY",
                prompt: "Recovery key: ",
            };
            let recovery = RecoveryKey::parse(&source.read(false)?)?;
            let new = secret::new(new_passphrase_file.as_deref()).passphrase(true)?;
            let vault = vault.import_recovery_key(&recovery, &new).await?;
            println!(
                "New passphrase set for the vault at {} from its recovery key.",
                vault.vault().location()
            );
        }
    }
    Ok(())
}

/// Parse `30m`, `8h`, `7d`, `1h30m` into seconds.
fn parse_duration(text: &str) -> Result<u64> {
    let span: jiff::Span = text
        .parse()
        .or_else(|_| format!("PT{}", text.to_uppercase()).parse())
        .map_err(|_| anyhow::anyhow!("--timeout {text:?}: give a duration such as 30m, 8h or 7d"))?;
    let seconds = span.total((jiff::Unit::Second, jiff::civil::date(2000, 1, 1)))?;
    if !(1.0..=31.0 * 86400.0).contains(&seconds) {
        bail!("--timeout {text:?}: between 1 second and 31 days");
    }
    Ok(seconds as u64)
}
