//! `vmvault vault …`: create and inspect vaults.

use anyhow::Result;
use clap::Subcommand;
use vault::{Encryption, InitEncryption, KdfParams, Vault, VaultInfo};

use crate::{Context, secret};

#[derive(Subcommand)]
pub enum VaultCommand {
    /// Create a vault (encrypted unless --no-encryption).
    Init {
        /// Store chunks unencrypted (still compressed, deduplicated and checksummed).
        #[arg(long)]
        no_encryption: bool,
    },
    /// Show the vault's identity, format, encryption, size and settings. Shows no secret.
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Change vault settings that guard data.
    Set {
        /// Days soft-deleted data waits before it is purged (at least 14; soft delete cannot be turned off).
        #[arg(long, value_name = "DAYS")]
        soft_delete_days: Option<u32>,
        /// On-demand backups allowed per VM and calendar day.
        #[arg(long, value_name = "N")]
        on_demand_per_day: Option<u32>,
    },
}

pub async fn run(context: &Context, command: VaultCommand) -> Result<()> {
    match command {
        VaultCommand::Init { no_encryption } => init(context, no_encryption).await,
        VaultCommand::Info { json } => info(context, json).await,
        VaultCommand::Set { soft_delete_days, on_demand_per_day } => {
            let vault = crate::commands::open(context).await?;
            let settings = engine::catalog::settings::update(engine::catalog::Catalog::of(&vault), |s| {
                if let Some(days) = soft_delete_days {
                    s.soft_delete_days = days;
                }
                if let Some(n) = on_demand_per_day {
                    s.on_demand_per_day = n;
                }
            })
            .await?;
            println!(
                "soft delete {} days; on-demand backups {} a day per VM.",
                settings.soft_delete_days, settings.on_demand_per_day
            );
            Ok(())
        }
    }
}

async fn init(context: &Context, no_encryption: bool) -> Result<()> {
    let backend = context.location.backend();
    let encryption = if no_encryption {
        InitEncryption::None
    } else {
        let passphrase = secret::current(context.passphrase_file.as_deref()).passphrase(true)?;
        InitEncryption::Passphrase(passphrase, KdfParams::DEFAULT)
    };
    let vault = Vault::create(backend, encryption).await?;
    let config = vault.vault().config();
    if no_encryption {
        println!("Created an unencrypted vault at {} (id {}).", vault.vault().location(), config.id);
        println!("Anyone who can read that location can read the backups in it.");
    } else {
        println!("Created an encrypted vault at {} (id {}).", vault.vault().location(), config.id);
        println!();
        println!("Only your passphrase opens it. vmvault cannot recover a lost passphrase:");
        println!("if you lose it, every backup in this vault is lost.");
        println!("Print a recovery key now and keep it offline:  vmvault key export --paper");
    }
    Ok(())
}

async fn info(context: &Context, json: bool) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    let info = vault.info().await?;
    let settings = engine::catalog::settings::load(engine::catalog::Catalog::of(&vault)).await?;
    if json {
        let mut value = serde_json::to_value(&info)?;
        value["settings"] = serde_json::to_value(&settings)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_info(&info);
        println!("soft delete {} days (cannot be turned off)", settings.soft_delete_days);
        println!("on-demand   at most {} backups a day per VM", settings.on_demand_per_day);
    }
    Ok(())
}

fn print_info(info: &VaultInfo) {
    println!("vault       {}", info.location);
    println!("id          {}", info.id);
    println!("format      version {}", info.format_version);
    println!("created     {}", info.created);
    match (info.encryption, info.kdf) {
        (Encryption::Aes256Gcm, Some(kdf)) => println!(
            "encryption  AES-256-GCM; key wrapped with Argon2id ({} MiB, {} passes, {} lane(s))",
            kdf.memory_kib / 1024,
            kdf.iterations,
            kdf.parallelism
        ),
        (Encryption::Aes256Gcm, None) => println!("encryption  AES-256-GCM"),
        (Encryption::None, _) => println!("encryption  none"),
    }
    println!("chunk size  {} MiB", info.chunk_size / (1024 * 1024));
    println!("chunks      {} ({})", info.chunk_count, human_bytes(info.chunk_bytes));
    if info.stale_temporaries > 0 {
        println!(
            "leftovers   {} temporary files of interrupted writes (the next `vmvault gc` removes them)",
            info.stale_temporaries
        );
    }
}

pub use engine::progress::human_bytes;
