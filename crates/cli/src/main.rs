//! `vmvault`: back up and restore QEMU/KVM virtual machines into an encrypted vault.

mod commands;
mod location;
mod secret;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command-line arguments.
#[derive(Parser)]
#[command(name = "vmvault", version, about = "Encrypted, deduplicated backups of QEMU/KVM virtual machines")]
struct Cli {
    /// Where the vault lives: a directory (default $VMVAULT_VAULT, else ~/.local/share/vmvault/vault).
    #[arg(long, global = true, env = "VMVAULT_VAULT", value_name = "LOCATION")]
    vault: Option<String>,

    /// Read the passphrase from this file (else $VMVAULT_PASSPHRASE, else a prompt on a terminal).
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create and inspect vaults.
    #[command(subcommand)]
    Vault(commands::vault::VaultCommand),
    /// Manage the vault's key: passphrase, paper recovery key.
    #[command(subcommand)]
    Key(commands::key::KeyCommand),
}

/// What every command gets besides its own arguments.
pub struct Context {
    /// The vault location as given or defaulted.
    pub location: location::Location,
    /// Passphrase file, if given.
    pub passphrase_file: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = location::Location::resolve(cli.vault.as_deref()).and_then(|location| {
        let context = Context { location, passphrase_file: cli.passphrase_file };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async {
            match cli.command {
                Command::Vault(cmd) => commands::vault::run(&context, cmd).await,
                Command::Key(cmd) => commands::key::run(&context, cmd).await,
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("vmvault: error: {message}");
            ExitCode::FAILURE
        }
    }
}
