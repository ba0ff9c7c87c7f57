//! `vmvault server`: serve a vault to many hosts over HTTPS, and manage its API tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use server::auth::Role;
use server::tls::Identity;
use server::tokens::TokenStore;

use crate::Context;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    command: Option<ServerCommand>,
    /// Address to listen on (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8443")]
    listen: String,
    /// The server's own state: tokens and its self-signed certificate (default
    /// $VMVAULT_SERVER_STATE, else ~/.local/share/vmvault/server).
    #[arg(long, global = true, env = "VMVAULT_SERVER_STATE", value_name = "DIR")]
    state: Option<PathBuf>,
    /// TLS certificate (PEM) to use instead of a self-signed one; needs --key.
    #[arg(long, requires = "key", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert", value_name = "FILE")]
    key: Option<PathBuf>,
    /// More names for the self-signed certificate (besides localhost and 127.0.0.1).
    #[arg(long = "name", value_name = "HOSTNAME")]
    names: Vec<String>,
    /// Run the daily cleanup (retention, purge, GC) inside the server, without the key.
    #[arg(long)]
    scheduler: bool,
    /// Time of that cleanup, UTC.
    #[arg(long, default_value = "03:00", value_name = "HH:MM", requires = "scheduler")]
    cleanup_at: String,
}

#[derive(Subcommand)]
enum ServerCommand {
    /// API tokens of this server.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token; its secret is printed once and stored only as a hash.
    Create {
        /// Its name (shown in logs instead of the secret).
        name: String,
        /// reader, backup-operator, restore-operator or admin.
        #[arg(long)]
        role: String,
        /// Limit it to this VM (repeat for several); default: every VM.
        #[arg(long = "vm", value_name = "VM")]
        vms: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token at once.
    Revoke {
        /// The token's name.
        name: String,
    },
}

fn state_dir(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no --state given and $HOME is not set")?;
    Ok(PathBuf::from(home).join(".local/share/vmvault/server"))
}

pub async fn run(context: &Context, args: ServerArgs) -> Result<()> {
    let state = state_dir(args.state.as_deref())?;
    let tokens = TokenStore::new(&state);
    match args.command {
        Some(ServerCommand::Token(TokenCommand::Create { name, role, vms })) => {
            let role = Role::parse(&role).with_context(|| {
                format!("--role {role:?}: reader, backup-operator, restore-operator or admin")
            })?;
            let (token, secret) = tokens.create(&name, role, &vms)?;
            println!("{secret}");
            eprintln!(
                "Token {} ({}{}) created; the line above is its secret, shown only now. Clients use it as VMVAULT_TOKEN.",
                token.name,
                token.role.as_str(),
                if token.vms.is_empty() { String::new() } else { format!(", VMs {}", token.vms.join(", ")) }
            );
        }
        Some(ServerCommand::Token(TokenCommand::List)) => {
            for t in tokens.list()? {
                let vms = if t.vms.is_empty() { "all VMs".to_string() } else { t.vms.join(",") };
                println!("{:<20} {:<17} {:<20} created {}", t.name, t.role.as_str(), vms, t.created);
            }
        }
        Some(ServerCommand::Token(TokenCommand::Revoke { name })) => {
            tokens.revoke(&name)?;
            println!("Token {name} revoked.");
        }
        None => {
            let cleanup_at = args.scheduler.then(|| args.cleanup_at.clone());
            let tls = (args.cert.as_deref(), args.key.as_deref());
            serve(context, &args.listen, &state, tls, &args.names, cleanup_at.as_deref()).await?
        }
    }
    Ok(())
}

async fn serve(
    context: &Context,
    listen: &str,
    state: &Path,
    (cert, key): (Option<&Path>, Option<&Path>),
    names: &[String],
    cleanup_at: Option<&str>,
) -> Result<()> {
    let listen: SocketAddr =
        listen.parse().with_context(|| format!("--listen {listen:?}: give HOST:PORT"))?;
    let backend = context.location.backend();
    // The vault must exist: the server serves one, it does not make one.
    let vault = std::sync::Arc::new(vault::Vault::open(std::sync::Arc::clone(&backend)).await?);
    if let Some(at) = cleanup_at {
        let options = engine::scheduler::SchedulerOptions {
            cleanup_at: crate::commands::maintenance::cleanup_time(at)?,
            backups: false,
            ..Default::default()
        };
        let runner = engine::scheduler::CleanupRunner {
            vault: std::sync::Arc::clone(&vault),
            gc: vault::gc::GcOptions::default(),
        };
        eprintln!(
            "Daily cleanup (retention, purge, GC) at {at} UTC inside the server; jobs appear in `vmvault jobs`."
        );
        tokio::spawn(async move {
            if let Err(e) =
                engine::scheduler::run(&vault, &engine::scheduler::SystemClock, &runner, &options).await
            {
                eprintln!("{} scheduler stopped: {e}", jiff::Timestamp::now());
            }
        });
    }
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Identity::load(cert, key)?,
        _ => Identity::self_signed(state, names)?,
    };
    let fingerprint = identity.fingerprint()?;
    if TokenStore::new(state).list()?.is_empty() {
        eprintln!(
            "No API tokens yet: make one with `vmvault server token create NAME --role admin --state {}`.",
            state.display()
        );
    }
    let location = backend.location();
    let config = server::run::ServerConfig { listen, backend, state: state.to_path_buf(), identity };
    server::run::serve(config, |bound| {
        println!("vmvault server on https://{bound} serving {location}");
        println!("certificate SHA-256 fingerprint {fingerprint}");
    })
    .await?;
    bail!("the server stopped")
}
