//! `vmvault vm …`: the VM registry.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use engine::catalog::Catalog;
use engine::catalog::vm::{Nic, VmRecord};
use engine::limits::Limits;
use engine::services::vms;
use engine::services::vms::NewVm;

use crate::Context;
use crate::commands::vault::human_bytes;

#[derive(Subcommand)]
pub enum VmCommand {
    /// Register a VM from its disks (qcow2 or raw files, block devices).
    Add {
        /// The VM's name.
        name: String,
        /// A disk, as [LABEL=]PATH; give it once per disk, the OS disk first.
        #[arg(long = "disk", required = true, value_name = "[LABEL=]PATH")]
        disks: Vec<String>,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 1024, value_name = "MIB")]
        memory: u64,
        /// A network interface, as MAC[,NETWORK].
        #[arg(long = "nic", value_name = "MAC[,NETWORK]")]
        nics: Vec<String>,
        /// QMP socket of the VM's running QEMU (for live backups).
        #[arg(long, value_name = "SOCKET")]
        qmp: Option<PathBuf>,
        /// Guest agent socket (qemu-ga), to freeze filesystems during the snapshot.
        #[arg(long, value_name = "SOCKET")]
        qga: Option<PathBuf>,
        /// Accept a raw disk that looks like no disk (smaller than 1 MiB, or text).
        #[arg(long)]
        force: bool,
    },
    /// Register libvirt domains: read from libvirt itself (by name or UUID, or --all), so every
    /// backup goes through libvirt; or from a domain XML file (`virsh dumpxml NAME > FILE`).
    ImportLibvirt {
        /// Domain names or UUIDs, or domain XML files.
        #[arg(required_unless_present = "all")]
        domains: Vec<String>,
        /// Every domain libvirt knows (those already registered are skipped).
        #[arg(long, conflicts_with = "domains")]
        all: bool,
        /// The libvirt URI (default $VMVAULT_LIBVIRT, else qemu:///system).
        #[arg(long, value_name = "URI")]
        libvirt: Option<String>,
    },
    /// List registered VMs.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one VM.
    Show {
        /// The VM's name.
        name: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Forget a VM. Its recovery points stay in the vault.
    Remove {
        /// The VM's name.
        name: String,
    },
    /// Set the pre/post-snapshot scripts of live backups from a JSON file in Azure's
    /// VMSnapshotScriptPluginConfig form (preScriptLocation, postScriptLocation, preScriptParams,
    /// postScriptParams, preScriptNoOfRetries, postScriptNoOfRetries, timeoutInSeconds,
    /// continueBackupOnFailure, fsFreezeEnabled), or clear them.
    Scripts {
        /// The VM's name.
        name: String,
        /// The configuration file.
        #[arg(long, conflicts_with = "clear", required_unless_present = "clear")]
        config: Option<PathBuf>,
        /// Remove the scripts.
        #[arg(long)]
        clear: bool,
    },
}

pub async fn run(context: &Context, command: VmCommand) -> Result<()> {
    let vault = crate::commands::open(context).await?;
    let catalog = Catalog::of(&vault);
    match command {
        VmCommand::Add { name, disks, vcpus, memory, nics, qmp, qga, force } => {
            let disks = disks
                .iter()
                .map(|d| match d.split_once('=') {
                    Some((label, path)) => (Some(label.to_string()), PathBuf::from(path)),
                    None => (None, PathBuf::from(d)),
                })
                .collect();
            let nics = nics
                .iter()
                .map(|n| match n.split_once(',') {
                    Some((mac, net)) => {
                        Nic { mac: mac.to_lowercase(), network: Some(net.to_string()), bridge: false }
                    }
                    None => Nic { mac: n.to_lowercase(), network: None, bridge: false },
                })
                .collect();
            let new = NewVm {
                name,
                uuid: None,
                disks,
                vcpus,
                memory_mib: memory,
                nics,
                qmp,
                qga,
                force,
                libvirt: None,
            };
            let record = vms::add(catalog, vms::prepare(new, &Limits::default())?).await?;
            print_registered(&record);
        }
        VmCommand::ImportLibvirt { domains, all, libvirt } => {
            let uri = libvirt.unwrap_or_else(engine::libvirt::default_uri);
            let (files, names): (Vec<String>, Vec<String>) =
                domains.into_iter().partition(|d| std::path::Path::new(d).is_file());
            let mut new: Vec<NewVm> =
                files.iter().map(|f| engine::libvirt::parse_domain(f.as_ref())).collect::<Result<_, _>>()?;
            if all || !names.is_empty() {
                new.extend(engine::libvirt::read_domains(&uri, &names, all)?);
            }
            for vm in new {
                if all && catalog.find::<VmRecord>(&vm.name).await?.is_some() {
                    println!("VM {} is registered already: skipped.", vm.name);
                    continue;
                }
                let record = vms::add(catalog, vms::prepare(vm, &Limits::default())?).await?;
                print_registered(&record);
            }
        }
        VmCommand::List { json } => {
            let vms = catalog.list::<VmRecord>().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else if vms.is_empty() {
                println!("No VMs registered. Register one with `vmvault vm add NAME --disk PATH`.");
            } else {
                println!("{:<24} {:>5} {:>8} {:>6}  DISKS", "NAME", "VCPUS", "MEMORY", "NICS");
                for vm in vms {
                    let disks: Vec<String> = vm.disks.iter().map(|d| d.label.clone()).collect();
                    println!(
                        "{:<24} {:>5} {:>6}Mi {:>6}  {}",
                        vm.name,
                        vm.vcpus,
                        vm.memory_mib,
                        vm.nics.len(),
                        disks.join(",")
                    );
                }
            }
        }
        VmCommand::Show { name, json } => {
            let vm: VmRecord = catalog.get(&name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vm)?);
            } else {
                print_vm(&vm);
            }
        }
        VmCommand::Scripts { name, config, clear } => {
            let scripts = if clear {
                None
            } else {
                config.as_deref().map(engine::scripts::ScriptConfig::load).transpose()?
            };
            vms::set_scripts(catalog, &name, scripts.clone()).await?;
            match scripts {
                Some(s) => println!(
                    "VM {name}: pre-script {}, post-script {}, timeout {} s, continue on failure: {}, freeze: {}.",
                    s.pre_script_location
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.post_script_location
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.timeout_in_seconds,
                    s.continue_backup_on_failure,
                    s.fs_freeze_enabled
                ),
                None => println!("VM {name}: no scripts."),
            }
        }
        VmCommand::Remove { name } => {
            vms::remove(catalog, &name).await?;
            println!("VM {name} removed from the registry; its recovery points stay in the vault.");
        }
    }
    Ok(())
}

fn print_registered(vm: &VmRecord) {
    println!("Registered VM {} with {} disk(s).", vm.name, vm.disks.len());
    print_vm(vm);
}

fn print_vm(vm: &VmRecord) {
    println!("name     {}", vm.name);
    println!("uuid     {}", vm.uuid);
    println!("vcpus    {}", vm.vcpus);
    println!("memory   {} MiB", vm.memory_mib);
    for d in &vm.disks {
        println!(
            "disk     {:<8} {:<6} {:>10}  {}",
            d.label,
            d.format.as_str(),
            human_bytes(d.size),
            d.path.display()
        );
    }
    for n in &vm.nics {
        println!("nic      {} {}", n.mac, n.network.as_deref().unwrap_or(""));
    }
    if let Some(qmp) = &vm.qmp {
        println!("qmp      {}", qmp.display());
    }
    if let Some(qga) = &vm.qga {
        println!("agent    {}", qga.display());
    }
    if let Some(s) = &vm.scripts {
        let show =
            |p: &Option<PathBuf>| p.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into());
        println!(
            "scripts  pre {} post {} (timeout {} s, continue on failure: {}, freeze: {})",
            show(&s.pre_script_location),
            show(&s.post_script_location),
            s.timeout_in_seconds,
            s.continue_backup_on_failure,
            s.fs_freeze_enabled
        );
    }
}
