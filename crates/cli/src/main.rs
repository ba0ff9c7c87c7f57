//! `vmvault`: back up and restore QEMU/KVM virtual machines into an encrypted vault.

mod agent;
mod commands;
mod location;
mod progress;
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
    /// Build a small VM, back it up, change it, back it up again, restore and prove it; no setup.
    Demo {
        /// Directory for the VM, the vault and the restores (default: a new one under $TMPDIR).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Create and inspect vaults.
    #[command(subcommand)]
    Vault(commands::vault::VaultCommand),
    /// Manage the vault's key: passphrase, paper recovery key.
    #[command(subcommand)]
    Key(commands::key::KeyCommand),
    /// Register and inspect VMs.
    #[command(subcommand)]
    Vm(commands::vm::VmCommand),
    /// Back up a VM now (on demand). The VM must be stopped.
    Backup {
        /// The VM.
        name: String,
        /// Only this disk (give it more than once for several); default: every disk.
        #[arg(long = "disk", value_name = "LABEL")]
        disks: Vec<String>,
        /// Keep the point until this date or time (default: 30 days).
        #[arg(long, value_name = "DATE")]
        retain_until: Option<String>,
        /// Print a JSON summary instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a VM's recovery points.
    Points {
        /// The VM.
        name: String,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Restore disks or whole VMs from a recovery point.
    #[command(subcommand)]
    Restore(commands::restore::RestoreCommand),
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
                Command::Demo { dir } => commands::demo::run_demo(dir).await,
                Command::Vault(cmd) => commands::vault::run(&context, cmd).await,
                Command::Key(cmd) => commands::key::run(&context, cmd).await,
                Command::Vm(cmd) => commands::vm::run(&context, cmd).await,
                Command::Backup { name, disks, retain_until, json } => {
                    commands::backup::backup(&context, &name, disks, retain_until.as_deref(), json).await
                }
                Command::Points { name, json } => commands::backup::list_points(&context, &name, json).await,
                Command::Restore(cmd) => commands::restore::run(&context, cmd).await,
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
