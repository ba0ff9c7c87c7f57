//! `vmvault files parts|ls|get|cat|find`: single files out of a recovery point, read in
//! process from the vault without restoring the disk.

use engine::catalog::Catalog;
use engine::catalog::item::ProtectedItem;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use engine::files::PointDisk;
use engine::jobs::{Operation, run_job};
use guestfs::tree::{Entry, EntryKind, normalize, show};

use crate::Context;
use crate::commands::vault::human_bytes;

/// Which disk of which point, and which partition.
#[derive(Args, Clone)]
pub struct Source {
    /// The VM.
    name: String,
    /// Recovery point id, or `latest`.
    #[arg(long, default_value = "latest")]
    point: String,
    /// Disk label (default: the point's first disk).
    #[arg(long)]
    disk: Option<String>,
    /// Volume as `files parts` shows it: a partition number (`0`: the whole disk), an LVM
    /// logical volume (`vg/lv`) or a btrfs subvolume (`3:home`). Default: the guest's OS root.
    #[arg(long)]
    partition: Option<String>,
    /// A file holding the passphrase (or the key file) of the guest's LUKS volumes, read as
    /// bytes (a trailing newline is also tried without it); may be given more than once.
    /// Else $VMVAULT_LUKS_PASSPHRASE, else a prompt on a terminal when a volume is LUKS.
    #[arg(long = "luks-passphrase-file", value_name = "FILE")]
    luks_passphrase_file: Vec<PathBuf>,
}

/// The LUKS passphrases to try: the files given, $VMVAULT_LUKS_PASSPHRASE, or — when neither
/// is there, the disk has a LUKS volume and this is a terminal — one typed at a prompt.
fn luks_passphrases(source: &Source, disk: &PointDisk) -> Result<Vec<guestfs::Passphrase>> {
    let mut out = Vec::new();
    let mut add = |bytes: Vec<u8>| {
        if let Some(trimmed) = bytes.strip_suffix(b"\n").filter(|t| !t.is_empty()) {
            out.push(guestfs::Passphrase::new(trimmed.to_vec()));
        }
        out.push(guestfs::Passphrase::new(bytes));
    };
    for path in &source.luks_passphrase_file {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read --luks-passphrase-file {}: {e}", path.display()))?;
        add(bytes);
    }
    if let Some(text) = std::env::var_os("VMVAULT_LUKS_PASSPHRASE") {
        add(std::os::unix::ffi::OsStrExt::as_bytes(text.as_os_str()).to_vec());
    }
    if out.is_empty() && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let layout = disk.layout()?;
        if let Some(v) = layout.volumes.iter().find(|v| v.fs == guestfs::FsKind::Luks) {
            let prompt = format!("LUKS passphrase for volume {} of disk {}: ", v.id, disk.label);
            let typed = zeroize::Zeroizing::new(rpassword::prompt_password(prompt)?);
            out.push(guestfs::Passphrase::new(typed.as_bytes().to_vec()));
        }
    }
    Ok(out)
}

#[derive(Subcommand)]
pub enum FilesCommand {
    /// List the partitions and filesystems of a disk in a point.
    Parts {
        #[command(flatten)]
        source: Source,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a directory.
    Ls {
        #[command(flatten)]
        source: Source,
        /// Guest path (default `/`).
        #[arg(default_value = "/")]
        path: String,
        /// Mode, owner, size and time too.
        #[arg(long, short = 'l')]
        long: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Extract files and directory trees into DIR (never writing outside it).
    Get {
        #[command(flatten)]
        source: Source,
        /// Guest paths.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Where to put them (created if missing).
        #[arg(long)]
        to: PathBuf,
        /// Also write each file's named streams (NTFS alternate data streams) beside it,
        /// as `NAME:STREAM`.
        #[arg(long)]
        streams: bool,
        /// Set extended attributes: POSIX ACLs, SELinux labels, file capabilities, `user.*`
        /// (default when run as root; `security.*` and `trusted.*` need root).
        #[arg(long, overrides_with = "no_xattrs")]
        xattrs: bool,
        /// Do not set extended attributes.
        #[arg(long)]
        no_xattrs: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write one file to standard output (following symlinks inside the guest).
    Cat {
        #[command(flatten)]
        source: Source,
        /// Guest path; symlinks in it are followed within the guest (never on the host).
        path: String,
    },
    /// Find entries whose name matches a glob (`*`, `?`, `[…]`).
    Find {
        #[command(flatten)]
        source: Source,
        /// Where to start (default `/`).
        #[arg(default_value = "/")]
        path: String,
        /// Name pattern.
        #[arg(long = "name", id = "pattern")]
        pattern: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl FilesCommand {
    fn source(&self) -> &Source {
        match self {
            FilesCommand::Parts { source, .. }
            | FilesCommand::Ls { source, .. }
            | FilesCommand::Get { source, .. }
            | FilesCommand::Cat { source, .. }
            | FilesCommand::Find { source, .. } => source,
        }
    }
}

pub async fn run(context: &Context, command: FilesCommand) -> Result<()> {
    let vault = Arc::new(crate::commands::unlock(context).await?);
    let source = command.source().clone();
    let source_for_keys = source.clone();
    let backend = Arc::clone(vault.vault().backend());
    let item = Catalog::of(vault.vault()).find::<ProtectedItem>(&source.name).await?;
    engine::services::protection::check_not_soft_deleted(item.as_ref(), &source.name)?;
    let mut disk =
        PointDisk::open(Arc::clone(&vault), &source.name, &source.point, source.disk.as_deref()).await?;
    let disk = tokio::task::spawn_blocking(move || -> Result<PointDisk> {
        let passphrases = luks_passphrases(&source_for_keys, &disk)?;
        disk.unlock_with(passphrases);
        Ok(disk)
    })
    .await??;
    if let FilesCommand::Get { paths, to, json, streams, xattrs, no_xattrs, .. } = command {
        let xattrs = !no_xattrs && (xattrs || guestfs::extract::running_as_root());
        let (report, job) = run_job(
            backend,
            Operation::FileRestore,
            Some(&source.name),
            Arc::new(engine::NoProgress),
            |job| async move {
                job.set_point(&disk.manifest.point_id);
                let job_id = job.id();
                let report = tokio::task::spawn_blocking(move || -> engine::Result<_> {
                    let (_, fs) = disk.filesystem(source.partition.as_deref())?;
                    let paths = paths.iter().map(|p| normalize(p)).collect::<guestfs::Result<Vec<_>>>()?;
                    let options = guestfs::extract::Options { streams, xattrs };
                    engine::files::extract_marked(fs.as_ref(), &paths, &to, &job_id, options)
                })
                .await
                .map_err(|e| engine::EngineError::Invalid(format!("file restore worker failed: {e}")))??;
                report.warnings.iter().for_each(|w| job.warn(w.clone()));
                report.errors.iter().for_each(|e| job.warn(e.clone()));
                Ok(report)
            },
        )
        .await?;
        crate::commands::emit(json, &report, |report| {
            println!(
                "Extracted {} files, {} hard links, {} streams, {} directories, {} symlinks, {} extended attributes ({}). Job {}.",
                report.files,
                report.hard_links,
                report.streams,
                report.dirs,
                report.symlinks,
                report.xattrs,
                human_bytes(report.bytes),
                job.id
            );
            for w in &report.warnings {
                println!("  skipped: {w}");
            }
            for e in &report.errors {
                println!("  failed:  {e}");
            }
        })?;
        if !report.errors.is_empty() {
            bail!(
                "{} entries could not be extracted (listed above); the rest is in place, marked {}",
                report.errors.len(),
                engine::files::INCOMPLETE_MARKER
            );
        }
        return Ok(());
    }
    tokio::task::spawn_blocking(move || browse(&disk, command)).await?
}

/// The read-only commands, on a blocking thread.
fn browse(disk: &PointDisk, command: FilesCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        FilesCommand::Parts { json, .. } => {
            let layout = disk.layout()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&layout)?)?;
                return Ok(());
            }
            let table = match layout.table {
                guestfs::partition::TableKind::Gpt => "a GPT partition table",
                guestfs::partition::TableKind::Mbr => "an MBR partition table",
                guestfs::partition::TableKind::None => "no partition table",
            };
            writeln!(out, "Disk {} of point {}: {table}", disk.label, disk.manifest.point_id)?;
            writeln!(
                out,
                "{:<12} {:>12} {:>10} {:<24} {:<18} {:<12} {:<38} NOTE",
                "VOLUME", "START", "SIZE", "TYPE", "FS", "LABEL", "UUID"
            )?;
            for v in &layout.volumes {
                let kind = match (&v.part_type, &v.part_name, &v.lv_type) {
                    (_, _, Some(lv)) => format!("LV, {lv}"),
                    (Some(t), Some(n), _) => format!("{t} ({n})"),
                    (Some(t), None, _) => t.clone(),
                    _ => "-".into(),
                };
                let fs =
                    if v.os_root { format!("{} (OS root)", v.fs.name()) } else { v.fs.name().to_string() };
                writeln!(
                    out,
                    "{:<12} {:>12} {:>10} {:<24} {:<18} {:<12} {:<38} {}",
                    v.id,
                    v.start,
                    human_bytes(v.size),
                    kind,
                    fs,
                    v.label.as_deref().unwrap_or("-"),
                    v.uuid.as_deref().unwrap_or("-"),
                    v.note.as_deref().unwrap_or("")
                )?;
            }
            for g in &layout.groups {
                writeln!(out, "Volume group {}: PVs {}; LVs {}", g.name, g.pvs.join(", "), g.lvs.join(", "))?;
                if !g.missing.is_empty() {
                    writeln!(out, "  missing PVs (not on any disk of this point): {}", g.missing.join(", "))?;
                }
            }
        }
        FilesCommand::Ls { source, path, long, json } => {
            let (_, fs) = disk.filesystem(source.partition.as_deref())?;
            let path = normalize(&path)?;
            let entry = fs.stat(&path)?;
            let is_dir = entry.kind == EntryKind::Dir;
            let mut entries = if is_dir { fs.list(&path)? } else { vec![entry] };
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                let dir = if is_dir { path.clone() } else { parent_of(&path) };
                let list: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| entry_json(fs.as_ref(), &guestfs::tree::join(&dir, &e.name), e))
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                for e in &entries {
                    if long {
                        writeln!(out, "{}", long_line(e))?;
                    } else {
                        writeln!(
                            out,
                            "{}{}",
                            e.display_name(),
                            if e.kind == EntryKind::Dir { "/" } else { "" }
                        )?;
                    }
                }
            }
        }
        FilesCommand::Cat { source, path } => {
            let (_, fs) = disk.filesystem(source.partition.as_deref())?;
            let path = guestfs::tree::resolve(fs.as_ref(), &normalize(&path)?)?;
            let entry = fs.stat(&path)?;
            if entry.kind != EntryKind::File {
                bail!("{}: not a regular file", show(&path));
            }
            fs.read_file(&path, &mut out)?;
        }
        FilesCommand::Find { source, path, pattern, json } => {
            let (_, fs) = disk.filesystem(source.partition.as_deref())?;
            let (found, problems) = guestfs::extract::find(fs.as_ref(), &normalize(&path)?, &pattern);
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&found)?)?;
            } else {
                for f in &found {
                    writeln!(out, "{}", f.path)?;
                }
            }
            for p in &problems {
                eprintln!("vmvault: warning: {p}");
            }
        }
        FilesCommand::Get { .. } => {}
    }
    Ok(())
}

/// `path` without its last component (`/` for a top-level entry).
fn parent_of(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/".to_vec(),
        Some(i) => path[..i].to_vec(),
    }
}

/// Everything `files get` restores of an entry: kind, size, mode, owner, time, its inode and
/// link count (hard links), a symlink's target and the extended attributes.
/// What cannot be read of an entry (a damaged link target or attribute) is named on it, as
/// `error`; the rest of the listing goes on.
fn entry_json(fs: &dyn guestfs::GuestFs, path: &[u8], e: &Entry) -> serde_json::Value {
    let mut errors = Vec::new();
    let target = match e.kind {
        EntryKind::Symlink => fs
            .read_link(path)
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .map_err(|err| errors.push(err.to_string()))
            .ok(),
        _ => None,
    };
    let xattrs: Vec<serde_json::Value> = match fs.xattrs(path) {
        Ok(list) => list.iter().map(xattr_json).collect(),
        Err(err) => {
            errors.push(err.to_string());
            Vec::new()
        }
    };
    serde_json::json!({
        "name": e.display_name(),
        "kind": e.kind,
        "size": e.size,
        "mode": format!("{:o}", e.mode & 0o7777),
        "uid": e.uid,
        "gid": e.gid,
        "mtime": e.mtime.and_then(|(s, n)| jiff::Timestamp::new(s, n as i32).ok()).map(|t| t.to_string()),
        "inode": e.links.map(|(inode, _)| inode),
        "links": e.links.map(|(_, links)| links),
        "target": target,
        "xattrs": xattrs,
        "error": (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

/// An extended attribute for a listing: its value as text when it is text (an SELinux label
/// without its NUL), an ACL in `getfacl`'s short form, and always in hex.
fn xattr_json(x: &guestfs::xattr::Xattr) -> serde_json::Value {
    let trimmed = x.value.strip_suffix(b"\0").unwrap_or(&x.value);
    let text = std::str::from_utf8(trimmed).ok().filter(|t| !t.chars().any(char::is_control));
    serde_json::json!({
        "name": String::from_utf8_lossy(&x.name),
        "text": text,
        "acl": if x.is_acl() { guestfs::xattr::acl_text(&x.value) } else { None },
        "hex": x.value.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    })
}

fn long_line(e: &Entry) -> String {
    let kind = match e.kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::File => '-',
        EntryKind::Special => '?',
    };
    let bits = e.mode & 0o777;
    let rwx: String = (0..9)
        .map(|i| {
            let on = bits & (0o400 >> i) != 0;
            match (on, i % 3) {
                (false, _) => '-',
                (true, 0) => 'r',
                (true, 1) => 'w',
                (true, _) => 'x',
            }
        })
        .collect();
    let time = e
        .mtime
        .and_then(|(s, n)| jiff::Timestamp::new(s, n as i32).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into());
    format!(
        "{kind}{rwx} {:>5} {:>5} {:>12} {time} {}",
        e.uid.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
        e.gid.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
        e.size,
        e.display_name()
    )
}

/// `vmvault mount NAME --point ID [--disk L] --nbd unix:PATH|tcp:HOST:PORT`: serve a disk of a
/// point read-only over NBD until interrupted.
pub async fn mount(context: &Context, vm: &str, point: &str, disk: Option<&str>, nbd: &str) -> Result<()> {
    use disk::nbd::server::{ExportSource, Listen, serve};
    let Some(listen) = Listen::parse(nbd) else {
        bail!("--nbd {nbd:?}: say unix:PATH or tcp:127.0.0.1:PORT");
    };
    if let Listen::Tcp(addr) = &listen
        && !(addr.starts_with("127.") || addr.starts_with("[::1]") || addr.starts_with("localhost:"))
    {
        eprintln!(
            "vmvault: warning: {addr} is not a loopback address; NBD has no authentication, anyone who can reach it reads the disk"
        );
    }
    let vault = Arc::new(crate::commands::unlock(context).await?);
    let item = Catalog::of(vault.vault()).find::<ProtectedItem>(vm).await?;
    engine::services::protection::check_not_soft_deleted(item.as_ref(), vm)?;
    let disk = PointDisk::open(Arc::clone(&vault), vm, point, disk).await?;
    let uri = match &listen {
        Listen::Unix(path) => format!("nbd+unix:///?socket={}", path.display()),
        Listen::Tcp(addr) => format!("nbd://{addr}"),
    };
    let socket = match &listen {
        Listen::Unix(path) => Some(path.clone()),
        Listen::Tcp(_) => None,
    };
    let (label, point_id) = (disk.label.clone(), disk.manifest.point_id.clone());
    let source: Arc<dyn ExportSource> = disk.reader;
    let server = tokio::task::spawn_blocking(move || {
        serve(&listen, &label, source, || {
            eprintln!(
                "vmvault: serving disk {label} of point {point_id} read-only at {uri} until interrupted \
                 (e.g. qemu-img create -f qcow2 -F raw -b '{uri}' overlay.qcow2)"
            )
        })
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        result = server => result.map_err(anyhow::Error::from).and_then(|r| r.map_err(anyhow::Error::from)),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
    };
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
    result
}
