//! `vmvault key …`: passphrase changes and the paper recovery key.

use std::path::PathBuf;

use anyhow::Result;
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
            println!("    {}", recovery.as_str());
            println!();
            println!("Anyone holding this key can read every backup in the vault. Keep it offline.");
            println!("To set a new passphrase with it:  vmvault key import");
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
