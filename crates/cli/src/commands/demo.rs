//! `vmvault demo`: the whole main job on a fresh machine with nothing configured — build a small
//! VM with real filesystems, back it up, change it, back it up incrementally, restore, and prove
//! the restores with `qemu-img compare`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use ::vault::backend::LocalBackend;
use ::vault::{InitEncryption, KdfParams, Passphrase, UnlockedVault, Vault};
use anyhow::{Context as _, Result, bail};
use disk::DiskFormat;
use engine::backup::{BackupOptions, BackupSummary};
use engine::catalog::Catalog;
use engine::catalog::vm::Nic;
use engine::limits::Limits;
use engine::services::vms::{self, NewVm};
use engine::{points, restore};

use crate::commands::vault::human_bytes;

const DEMO_PASSPHRASE: &str = "vmvault-demo";

fn run(tool: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(tool).args(args).output().with_context(|| {
        format!("{tool} is needed by the demo: install qemu-utils and e2fsprogs (apt-get install qemu-utils e2fsprogs)")
    })?;
    if !out.status.success() {
        bail!("{tool} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("the demo directory's path is not UTF-8")
}

/// Some files a small Linux guest might have: text, config, a binary blob.
fn guest_tree(root: &Path) -> Result<u64> {
    let mut bytes = 0u64;
    for (dir, count) in [("etc", 40), ("home/alice/notes", 120), ("var/log", 30), ("srv/www", 60)] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for i in 0..count {
            let line = format!(
                "{} line of file {i} in {}: the quick brown fox jumps over the lazy dog\n",
                i * 7,
                dir.display()
            );
            let text = line.repeat(50 + (i * 37) % 400);
            bytes += text.len() as u64;
            std::fs::write(dir.join(format!("file-{i:03}.txt")), text)?;
        }
    }
    let mut blob = vec![0u8; 24 << 20];
    getrandom_fill(&mut blob)?;
    bytes += blob.len() as u64;
    std::fs::write(root.join("srv/app.bin"), &blob)?;
    std::os::unix::fs::symlink("www/file-000.txt", root.join("srv/index.txt"))?;
    Ok(bytes)
}

/// Whether the named subtrees of `a` and `b` hold the same files, bytes and symlink targets.
fn trees_equal(a: &Path, b: &Path, parts: &[&str]) -> Result<bool> {
    let mut stack: Vec<PathBuf> = parts.iter().map(PathBuf::from).collect();
    while let Some(rel) = stack.pop() {
        let (x, y) = (a.join(&rel), b.join(&rel));
        let (mx, my) = (std::fs::symlink_metadata(&x)?, std::fs::symlink_metadata(&y)?);
        if mx.file_type() != my.file_type() {
            return Ok(false);
        }
        if mx.file_type().is_symlink() {
            if std::fs::read_link(&x)? != std::fs::read_link(&y)? {
                return Ok(false);
            }
        } else if mx.is_dir() {
            let mut names: Vec<_> =
                std::fs::read_dir(&x)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
            let mut other: Vec<_> =
                std::fs::read_dir(&y)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
            names.sort();
            other.sort();
            if names != other {
                return Ok(false);
            }
            stack.extend(names.into_iter().map(|n| rel.join(n)));
        } else if std::fs::read(&x)? != std::fs::read(&y)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn getrandom_fill(buf: &mut [u8]) -> Result<()> {
    let mut f = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, buf)?;
    Ok(())
}

fn same(a: &Path, b: &Path) -> Result<bool> {
    let status = Command::new("qemu-img").args(["compare", "-q", path_str(a)?, path_str(b)?]).status()?;
    Ok(status.success())
}

fn line(label: &str, s: &BackupSummary) {
    let mode = s
        .disks
        .iter()
        .map(|d| format!("{} {:?}", d.label, d.mode).to_lowercase())
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "  {label:<17} {} logical, {} read in {:.2} s ({:.0} MB/s), {} new in the vault  [{mode}]",
        human_bytes(s.logical_bytes),
        human_bytes(s.bytes_read),
        s.duration_s,
        s.bytes_read as f64 / s.duration_s.max(1e-6) / 1e6,
        human_bytes(s.bytes_new)
    );
    for note in &s.notes {
        println!("  note: {note}");
    }
}

async fn restore_and_prove(
    vault: &Arc<UnlockedVault>,
    point: &str,
    label: &str,
    expected: &Path,
    to: &Path,
) -> Result<()> {
    let manifest = points::find(vault, "demo", point).await?;
    let format = if label == "vda" { DiskFormat::Qcow2 } else { DiskFormat::Raw };
    let started = Instant::now();
    let r =
        restore::restore_disk(Arc::clone(vault), &manifest, label, to, format, Arc::new(engine::NoProgress))
            .await?;
    let secs = started.elapsed().as_secs_f64();
    let verdict =
        if same(expected, to)? { "identical" } else { bail!("restore of {label} from {point} differs") };
    println!(
        "  restore {label:<4} {point}  {} written in {:.2} s ({:.0} MB/s) -> qemu-img compare: {verdict}",
        human_bytes(r.bytes_written),
        secs,
        r.bytes_written as f64 / secs.max(1e-6) / 1e6
    );
    Ok(())
}

/// Run the demo in `dir` (created; must not hold a demo already).
pub async fn run_demo(dir: Option<PathBuf>) -> Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir()
            .join(format!("vmvault-demo-{}", jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S"))),
    };
    if dir.join("vault").exists() {
        bail!("{} already holds a demo; remove it or pass another --dir", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::path::absolute(&dir)?;
    println!("vmvault demo in {}", dir.display());

    // 1. A VM: an ext4 root disk (qcow2) and a raw data disk.
    let tree = dir.join("guest-files");
    let content = guest_tree(&tree)?;
    let root_raw = dir.join("root.raw");
    run("mkfs.ext4", &["-q", "-F", "-L", "demo-root", "-d", path_str(&tree)?, path_str(&root_raw)?, "1G"])?;
    let vda = dir.join("demo-vda.qcow2");
    run("qemu-img", &["convert", "-f", "raw", "-O", "qcow2", path_str(&root_raw)?, path_str(&vda)?])?;
    std::fs::remove_file(&root_raw)?;
    let data = dir.join("demo-data.raw");
    run("qemu-img", &["create", "-q", "-f", "raw", path_str(&data)?, "512M"])?;
    let random = dir.join("random.bin");
    let mut noise = vec![0u8; 32 << 20];
    getrandom_fill(&mut noise)?;
    std::fs::write(&random, &noise)?;
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -s {} 64M 32M", path_str(&random)?),
            "-c",
            "write -P 0x61 200M 48M",
            path_str(&data)?,
        ],
    )?;
    std::fs::remove_file(&random)?;
    println!(
        "  built VM demo      vda 1 GiB qcow2 with ext4 (mkfs.ext4 -d, {} of files), data 512 MiB raw",
        human_bytes(content)
    );

    // 2. An encrypted vault.
    let backend = Arc::new(LocalBackend::new(dir.join("vault")));
    let init = InitEncryption::Passphrase(Passphrase::new(DEMO_PASSPHRASE.into()), KdfParams::DEFAULT);
    let vault = Arc::new(Vault::create(backend, init).await?);
    println!(
        "  vault              {} (encrypted; demo passphrase {DEMO_PASSPHRASE:?} — never use it for real data)",
        dir.join("vault").display()
    );
    let new = NewVm {
        name: "demo".into(),
        disks: vec![(Some("vda".into()), vda.clone()), (Some("data".into()), data.clone())],
        vcpus: 2,
        memory_mib: 1024,
        nics: vec![Nic { mac: "52:54:00:de:4d:01".into(), network: Some("default".into()), bridge: false }],
        ..Default::default()
    };
    vms::add(Catalog::of(vault.vault()), vms::prepare(new, &Limits::default())?).await?;

    // 3. Full backup, scattered writes, incremental backup.
    let progress = crate::progress::for_terminal(false);
    let (full, _) = engine::backup::backup_job(
        Arc::clone(&vault),
        "demo",
        BackupOptions::default(),
        Arc::clone(&progress),
    )
    .await?;
    line("full backup", &full);
    let vda_at_full = dir.join("vda-at-full.qcow2");
    std::fs::copy(&vda, &vda_at_full)?;
    let mut io_args = vec!["-f".to_string(), "qcow2".to_string()];
    for i in 0..16u64 {
        io_args.push("-c".into());
        io_args.push(format!("write -P 0x{:x} {} 64k", 0x70 + i, (i * 61 + 7) << 20));
    }
    io_args.push(path_str(&vda)?.to_string());
    let io_args: Vec<&str> = io_args.iter().map(String::as_str).collect();
    run("qemu-io", &io_args)?;
    run("qemu-io", &["-f", "raw", "-c", "write -P 0x62 300M 1M", path_str(&data)?])?;
    println!("  changed            16 x 64 KiB scattered in vda, 1 MiB in data (qemu-io)");
    let (incremental, _) =
        engine::backup::backup_job(Arc::clone(&vault), "demo", BackupOptions::default(), progress).await?;
    line("incremental backup", &incremental);

    // 4. Restores, proven.
    let restored = dir.join("restored");
    std::fs::create_dir_all(&restored)?;
    restore_and_prove(&vault, &full.point_id, "vda", &vda_at_full, &restored.join("vda-full.qcow2")).await?;
    restore_and_prove(&vault, &incremental.point_id, "vda", &vda, &restored.join("vda-incremental.qcow2"))
        .await?;
    restore_and_prove(&vault, &incremental.point_id, "data", &data, &restored.join("data-incremental.raw"))
        .await?;

    // 5. Files straight out of the first point, without restoring its disk.
    let files_to = restored.join("files");
    let disk =
        engine::files::PointDisk::open(Arc::clone(&vault), "demo", &full.point_id, Some("vda")).await?;
    let reader = Arc::clone(&disk.reader);
    let started = Instant::now();
    let report = tokio::task::spawn_blocking({
        let files_to = files_to.clone();
        move || -> Result<guestfs::extract::ExtractReport> {
            let (_, fs) = disk.filesystem(None)?;
            Ok(guestfs::extract::extract(
                fs.as_ref(),
                &[b"/etc".to_vec(), b"/home".to_vec(), b"/srv".to_vec()],
                &files_to,
            )?)
        }
    })
    .await??;
    let verdict = if trees_equal(&tree, &files_to, &["etc", "home", "srv"])? {
        "identical to the source tree"
    } else {
        bail!("files extracted from {} differ from the source tree", full.point_id)
    };
    println!(
        "  files   vda  {}  {} files, {} symlink(s) extracted in {:.2} s ({} chunks read) -> {verdict}",
        full.point_id,
        report.files,
        report.symlinks,
        started.elapsed().as_secs_f64(),
        reader.chunks_fetched()
    );

    let info = vault.vault().info().await?;
    println!(
        "  vault holds        {} chunks, {} stored for {} of disks in 2 recovery points",
        info.chunk_count,
        human_bytes(info.chunk_bytes),
        human_bytes(full.logical_bytes + incremental.logical_bytes)
    );
    println!();
    println!("Try it yourself:");
    println!("  export VMVAULT_VAULT={} VMVAULT_PASSPHRASE={DEMO_PASSPHRASE}", dir.join("vault").display());
    println!("  vmvault points demo");
    println!("  vmvault files ls demo --point {} /srv --long", full.point_id);
    println!("  vmvault restore vm demo --point latest --as demo-copy --to {}", dir.join("copy").display());
    Ok(())
}
