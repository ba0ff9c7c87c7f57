//! `vmvault restore …`: disks, whole VMs, and disks swapped into a stopped VM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use disk::DiskFormat;
use engine::catalog::Catalog;
use engine::catalog::item::ProtectedItem;
use engine::catalog::vm::VmRecord;
use engine::jobs::{Job, Operation, run_job};
use engine::libvirt::Attach;
use engine::{points, restore};
use vault::UnlockedVault;

use crate::Context;
use crate::commands::vault::human_bytes;

#[derive(Subcommand)]
pub enum RestoreCommand {
    /// Restore one disk to a new file (sparse: zero regions are not written).
    Disk {
        /// The VM.
        name: String,
        /// Recovery point id, or `latest`.
        #[arg(long)]
        point: String,
        /// Disk label.
        #[arg(long)]
        disk: String,
        /// File to create.
        #[arg(long)]
        to: PathBuf,
        /// Format of the new file (default: the disk's registered format).
        #[arg(long)]
        format: Option<DiskFormat>,
    },
    /// Restore every disk as a new VM, with a libvirt XML and a qemu command line, and register it.
    Vm {
        /// The VM.
        name: String,
        /// Recovery point id, or `latest`.
        #[arg(long)]
        point: String,
        /// Name of the new VM.
        #[arg(long = "as", value_name = "NEWNAME")]
        new_name: String,
        /// Directory for its disks and definition.
        #[arg(long)]
        to: PathBuf,
        /// Define it in libvirt (from the source's definition when vmvault read it from libvirt).
        #[arg(long)]
        define: bool,
        /// Start it once defined.
        #[arg(long, requires = "define")]
        start: bool,
        /// Attach its NICs to this libvirt network (default: where the source's were).
        #[arg(long, value_name = "NAME", conflicts_with = "bridge")]
        network: Option<String>,
        /// Attach its NICs to this host bridge instead.
        #[arg(long, value_name = "BRIDGE")]
        bridge: Option<String>,
        /// The libvirt URI for --define (default $VMVAULT_LIBVIRT, else qemu:///system).
        #[arg(long, value_name = "URI")]
        libvirt: Option<String>,
    },
    /// Replace disks of a stopped VM with their content in a point; the current disk is kept aside.
    Replace {
        /// The VM.
        name: String,
        /// Recovery point id, or `latest`.
        #[arg(long)]
        point: String,
        /// Disk label (default: every disk in the point); give it more than once for several.
        #[arg(long = "disk")]
        disks: Vec<String>,
    },
}

impl RestoreCommand {
    fn vm(&self) -> &str {
        match self {
            RestoreCommand::Disk { name, .. }
            | RestoreCommand::Vm { name, .. }
            | RestoreCommand::Replace { name, .. } => name,
        }
    }
}

pub async fn run(context: &Context, command: RestoreCommand) -> Result<()> {
    let vault = Arc::new(crate::commands::unlock(context).await?);
    let backend = vault.vault().backend().clone();
    let name = command.vm().to_string();
    let item = Catalog::of(vault.vault()).find::<ProtectedItem>(&name).await?;
    engine::services::protection::check_not_soft_deleted(item.as_ref(), &name)?;
    let progress = crate::progress::for_terminal(false);
    let (lines, job) = run_job(Arc::clone(&backend), Operation::Restore, Some(&name), progress, |job| {
        restore(vault, command, Arc::new(job))
    })
    .await?;
    for line in lines {
        println!("{line}");
    }
    println!("  job {}", job.id);
    Ok(())
}

/// Do the restore; returns what to tell the operator.
async fn restore(
    vault: Arc<UnlockedVault>,
    command: RestoreCommand,
    progress: Arc<Job>,
) -> engine::Result<Vec<String>> {
    let mut out = Vec::new();
    match command {
        RestoreCommand::Disk { name, point, disk, to, format } => {
            let vm: VmRecord = Catalog::of(vault.vault()).get(&name).await?;
            let manifest = points::find(&vault, &name, &point).await?;
            progress.set_point(&manifest.point_id);
            let format =
                format.or_else(|| vm.disk(&disk).ok().map(|d| d.format)).unwrap_or(DiskFormat::Qcow2);
            let started = std::time::Instant::now();
            let r = restore::restore_disk(vault, &manifest, &disk, &to, format, progress).await?;
            out.push(format!(
                "Restored disk {} of VM {name} from point {} to {} ({}, {} of data written in {:.1} s).",
                r.label,
                manifest.point_id,
                r.path.display(),
                r.format.as_str(),
                human_bytes(r.bytes_written),
                started.elapsed().as_secs_f64()
            ));
        }
        RestoreCommand::Vm { name, point, new_name, to, define, start, network, bridge, libvirt } => {
            let vm: VmRecord = Catalog::of(vault.vault()).get(&name).await?;
            let manifest = points::find(&vault, &name, &point).await?;
            progress.set_point(&manifest.point_id);
            let attach = match (network, bridge) {
                (Some(n), _) => Attach::Network(n),
                (None, Some(b)) => Attach::Bridge(b),
                (None, None) => Attach::AsSource,
            };
            let r =
                restore::restore_vm(Arc::clone(&vault), &vm, &manifest, &new_name, &to, &attach, progress)
                    .await?;
            out.push(format!(
                "Restored VM {name} point {} as new VM {new_name} (uuid {}).",
                manifest.point_id, r.vm.uuid
            ));
            for d in &r.disks {
                out.push(format!("  disk {:<8} {}", d.label, d.path.display()));
            }
            for n in &r.vm.nics {
                out.push(format!("  nic  {}", n.mac));
            }
            if define {
                let uri = libvirt.unwrap_or_else(engine::libvirt::default_uri);
                restore::define_restored(&vault, &r, &uri, start).await?;
                let how = if start { "defined and started" } else { "defined" };
                out.push(format!("  libvirt: {how} as domain {new_name} on {uri}"));
            } else {
                out.push(format!("  libvirt: virsh define {}", r.libvirt_xml.display()));
            }
            out.push(format!("  qemu:    {}", r.qemu_script.display()));
        }
        RestoreCommand::Replace { name, point, disks } => {
            let vm: VmRecord = Catalog::of(vault.vault()).get(&name).await?;
            let manifest = points::find(&vault, &name, &point).await?;
            progress.set_point(&manifest.point_id);
            for r in restore::restore_replace(vault, &vm, &manifest, &disks, progress).await? {
                out.push(format!(
                    "Replaced disk {} of VM {name} ({}) with point {}; the previous content is kept at {}.",
                    r.label,
                    r.path.display(),
                    manifest.point_id,
                    r.kept_aside.display()
                ));
            }
        }
    }
    Ok(out)
}
