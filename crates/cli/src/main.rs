//! `vmvault`: back up and restore QEMU/KVM virtual machines into an encrypted vault.

/// `println!` through [`output`]: a closed pipe ends the command quietly.
macro_rules! println {
    () => { $crate::output::write(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*), true) };
}

/// `print!` through [`output`].
macro_rules! print {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*), false) };
}

mod output;

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
    /// Where the vault lives: a directory, s3://BUCKET/PREFIX or https://SERVER:PORT (default $VMVAULT_VAULT, else ~/.local/share/vmvault/vault).
    #[arg(long, global = true, env = "VMVAULT_VAULT", value_name = "LOCATION")]
    vault: Option<String>,

    /// Read the passphrase from this file (else $VMVAULT_PASSPHRASE, else a prompt on a terminal).
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<std::path::PathBuf>,

    /// For an https:// vault: the SHA-256 fingerprint of the server's certificate, as the
    /// server printed it (else $VMVAULT_FINGERPRINT).
    #[arg(long, global = true, env = "VMVAULT_FINGERPRINT", value_name = "SHA256")]
    fingerprint: Option<String>,

    /// For an https:// vault: trust the server's certificate by this CA file (PEM) instead.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "fingerprint")]
    ca_file: Option<std::path::PathBuf>,

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
    /// Back up a VM now (on demand): stopped, or running when it has a QMP socket (`vm add --qmp`).
    Backup {
        /// The VM.
        #[arg(required_unless_present = "group")]
        name: Option<String>,
        /// Back up every VM of this consistency group at one instant instead (`vmvault group`).
        #[arg(long, value_name = "GROUP", conflicts_with_all = ["name", "disks"])]
        group: Option<String>,
        /// Only this disk (give it more than once for several); default: every disk.
        #[arg(long = "disk", value_name = "LABEL")]
        disks: Vec<String>,
        /// Keep the point until this date or time (default: 30 days).
        #[arg(long, value_name = "DATE")]
        retain_until: Option<String>,
        /// Where a running VM's fleecing overlays grow (they receive what the guest overwrites
        /// during the backup; default $VMVAULT_SCRATCH, else /var/lib/vmvault/scratch for root,
        /// else ~/.local/state/vmvault/scratch).
        #[arg(long, value_name = "DIR")]
        scratch: Option<std::path::PathBuf>,
        /// Print a JSON summary instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a VM's recovery points.
    #[command(args_conflicts_with_subcommands = true)]
    Points {
        /// The VM.
        name: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        /// Remove a damaged point.
        #[command(subcommand)]
        action: Option<commands::backup::PointsAction>,
    },
    /// Restore disks or whole VMs from a recovery point.
    #[command(subcommand)]
    Restore(commands::restore::RestoreCommand),
    /// Create, list, show (with next run times), change and delete backup policies.
    #[command(subcommand)]
    Policy(commands::policy::PolicyCommand),
    /// Consistency groups: VMs of one application, backed up at one instant.
    #[command(subcommand)]
    Group(commands::group::GroupCommand),
    /// Put a VM under a policy (or move it to another).
    Protect {
        /// The VM.
        name: String,
        /// The policy.
        #[arg(long)]
        policy: String,
        /// Do not back up this disk (give it more than once for several).
        #[arg(long = "exclude-disk", value_name = "LABEL")]
        exclude: Vec<String>,
    },
    /// Stop protecting a VM, retaining its points or soft-deleting them.
    Unprotect {
        /// The VM.
        name: String,
        /// Keep every point.
        #[arg(long, conflicts_with = "delete_data", required_unless_present = "delete_data")]
        retain_data: bool,
        /// Soft-delete the data: purged after the soft-delete period unless undeleted.
        #[arg(long)]
        delete_data: bool,
    },
    /// Bring back a VM's soft-deleted data.
    Undelete {
        /// The VM.
        name: String,
    },
    /// Set a delete lock on a protected VM: no point expires, its data cannot be deleted.
    Lock {
        /// The VM.
        name: String,
    },
    /// Remove a VM's delete lock.
    Unlock {
        /// The VM.
        name: String,
    },
    /// List protected items: policy, state, lock, purge date.
    Items {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply retention and purge soft-deleted data whose period is over.
    Prune {
        /// Only this VM (default: every VM with points).
        name: Option<String>,
        /// Show what would expire; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete chunks no recovery point references (safe while backups run).
    Gc {
        /// Report what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Seconds to wait for backups that started before the collection.
        #[arg(long, default_value_t = 3600)]
        max_wait: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check recovery points: signatures, indexes, chunks; exit status 1 if anything is damaged.
    Verify {
        /// Only this VM.
        name: Option<String>,
        /// Only this point.
        #[arg(long)]
        point: Option<String>,
        /// Also decrypt and re-hash every chunk.
        #[arg(long)]
        read_data: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List jobs (backups, restores, prunes, GCs, verifies).
    Jobs {
        /// Only this VM's.
        #[arg(long)]
        vm: Option<String>,
        /// Only jobs in this status: in-progress, completed, completed-with-warnings, failed, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show, wait for or cancel one job.
    #[command(subcommand)]
    Job(commands::jobs::JobCommand),
    /// Browse and extract files of a recovery point without restoring its disk.
    #[command(subcommand)]
    Files(commands::files::FilesCommand),
    /// Serve a disk of a recovery point read-only over NBD (instant restore) until interrupted.
    Mount {
        /// The VM.
        name: String,
        /// Recovery point id, or `latest`.
        #[arg(long, default_value = "latest")]
        point: String,
        /// Disk label (default: the point's first disk).
        #[arg(long)]
        disk: Option<String>,
        /// Where to listen: unix:PATH or tcp:127.0.0.1:PORT.
        #[arg(long, value_name = "unix:PATH|tcp:HOST:PORT")]
        nbd: String,
    },
    /// Serve this vault to other hosts over HTTPS (and manage its API tokens).
    Server(commands::server::ServerArgs),
    /// Run scheduled backups and the daily cleanup until interrupted.
    Serve {
        /// Time of the daily cleanup (retention, purge, GC), UTC.
        #[arg(long, default_value = "03:00", value_name = "HH:MM")]
        cleanup_at: String,
    },
}

/// What every command gets besides its own arguments.
pub struct Context {
    /// The vault location as given or defaulted.
    pub location: location::Location,
    /// Passphrase file, if given.
    pub passphrase_file: Option<std::path::PathBuf>,
}

/// Let malloc keep and reuse the pipelines' freed 4 MiB buffers instead of returning them to
/// the kernel and faulting fresh zeroed pages in for the next chunk (by default glibc maps
/// large blocks one by one and trims the heap): what a backup or restore holds is bounded by
/// its buffer pool, so keeping it costs nothing, while fresh pages cost a page fault each —
/// in a VM with free page reporting, a fault in the hypervisor too.
fn reuse_freed_buffers() {
    // SAFETY: mallopt only sets two allocator parameters, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() -> ExitCode {
    reuse_freed_buffers();
    let cli = Cli::parse();
    let trust = match (cli.fingerprint, cli.ca_file) {
        (Some(fingerprint), _) => Some(server::client::Trust::Fingerprint(fingerprint)),
        (None, Some(ca)) => Some(server::client::Trust::CaFile(ca)),
        (None, None) => None,
    };
    let result = location::Location::resolve(cli.vault.as_deref(), trust).and_then(|location| {
        let context = Context { location, passphrase_file: cli.passphrase_file };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let result = runtime.block_on(async {
            match cli.command {
                Command::Demo { dir } => commands::demo::run_demo(dir).await,
                Command::Vault(cmd) => commands::vault::run(&context, cmd).await,
                Command::Key(cmd) => commands::key::run(&context, cmd).await,
                Command::Vm(cmd) => commands::vm::run(&context, cmd).await,
                Command::Backup { name, group, disks, retain_until, scratch, json } => {
                    let until = retain_until.as_deref();
                    match (name, group) {
                        (_, Some(group)) => {
                            commands::backup::backup_group(&context, &group, until, scratch, json).await
                        }
                        (Some(vm), None) => {
                            commands::backup::backup(&context, &vm, disks, until, scratch, json).await
                        }
                        (None, None) => Err(anyhow::anyhow!("name a VM, or a group with --group GROUP")),
                    }
                }
                Command::Points { name, json, action } => match (action, name) {
                    (Some(action), _) => commands::backup::points_action(&context, action).await,
                    (None, Some(name)) => commands::backup::list_points(&context, &name, json).await,
                    (None, None) => Err(anyhow::anyhow!("name a VM: `vmvault points VM`")),
                },
                Command::Restore(cmd) => commands::restore::run(&context, cmd).await,
                Command::Policy(cmd) => commands::policy::run(&context, cmd).await,
                Command::Group(cmd) => commands::group::run(&context, cmd).await,
                Command::Protect { name, policy, exclude } => {
                    commands::policy::protect(&context, &name, &policy, &exclude).await
                }
                Command::Unprotect { name, delete_data, .. } => {
                    commands::policy::unprotect(&context, &name, delete_data).await
                }
                Command::Undelete { name } => commands::policy::undelete(&context, &name).await,
                Command::Lock { name } => commands::policy::set_lock(&context, &name, true).await,
                Command::Unlock { name } => commands::policy::set_lock(&context, &name, false).await,
                Command::Items { json } => commands::policy::items(&context, json).await,
                Command::Prune { name, dry_run, json } => {
                    commands::maintenance::prune(&context, name.as_deref(), dry_run, json).await
                }
                Command::Gc { dry_run, max_wait, json } => {
                    commands::maintenance::gc(&context, dry_run, max_wait, json).await
                }
                Command::Verify { name, point, read_data, json } => {
                    commands::maintenance::run_verify(&context, name, point, read_data, json).await
                }
                Command::Jobs { vm, status, json } => {
                    commands::jobs::list(&context, vm.as_deref(), status.as_deref(), json).await
                }
                Command::Job(cmd) => commands::jobs::run(&context, cmd).await,
                Command::Files(cmd) => commands::files::run(&context, cmd).await,
                Command::Mount { name, point, disk, nbd } => {
                    commands::files::mount(&context, &name, &point, disk.as_deref(), &nbd).await
                }
                Command::Server(args) => commands::server::run(&context, args).await,
                Command::Serve { cleanup_at } => commands::maintenance::serve(&context, &cleanup_at).await,
            }
        });
        // Threads blocked in I/O (an NBD listener) must not keep the process alive.
        runtime.shutdown_background();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error),
    }
}

/// Print a failed command's error (one line) and its hint (its own line); the exit code says
/// the error's kind (see the README).
fn report(error: &anyhow::Error) -> ExitCode {
    // A reader that stopped reading (`| head`) ends the command quietly, as for `ls | head`.
    let closed_pipe = |c: &(dyn std::error::Error + 'static)| {
        c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    };
    if error.chain().any(closed_pipe) {
        return ExitCode::SUCCESS;
    }
    // Each cause once: a message that already says its cause is not followed by it again.
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    eprintln!("vmvault: error: {}", message.replace('\n', " "));
    let (kind, hint) = kind_and_hint(error);
    if let Some(hint) = hint {
        eprintln!("vmvault: hint: {hint}");
    }
    ExitCode::from(exit_code(kind))
}

/// The kind and hint of the first vmvault error in the chain.
fn kind_and_hint(error: &anyhow::Error) -> (vault::ErrorKind, Option<String>) {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<engine::EngineError>() {
            return (e.kind(), e.hint());
        }
        if let Some(e) = cause.downcast_ref::<vault::VaultError>() {
            return (e.kind(), e.hint());
        }
    }
    (vault::ErrorKind::Failed, None)
}

/// Exit codes by kind; 2 is also what a command line that does not parse exits with.
fn exit_code(kind: vault::ErrorKind) -> u8 {
    use vault::ErrorKind::*;
    match kind {
        Failed => 1,
        Invalid => 2,
        NotFound => 3,
        Exists => 4,
        Conflict | Refused | Busy => 5,
        Denied => 6,
        Unavailable => 7,
        Limit => 8,
        Cancelled => 9,
        Damaged => 10,
    }
}
