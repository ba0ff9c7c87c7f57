//! Backups of VMs libvirt manages. Every backup first asks libvirt for the domain (by UUID),
//! its state and its current definition, so attached, detached and resized disks are handled
//! and noted, and nothing stale is kept. A running domain is snapshotted through libvirt's
//! backup API in pull mode (see [`super::libvirt_job`]): a checkpoint per point, the previous
//! one as each disk's incremental base, the guest frozen through libvirt's agent calls. When
//! vmvault's checkpoint record and libvirt disagree (checkpoint gone, bitmap broken, domain
//! redefined) the disk is read in full, deduplicated, with a note — never a wrong
//! incremental — and the new checkpoint makes the next one incremental again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use disk::DiskFormat;
use disk::scratch::WorkDir;

use super::libvirt_job::{JobDisk, LibvirtJob};
use super::live::{Freeze, Planned, check_room};
use super::pending::{Pending, Running};
use super::plan::{Bases, BitmapState, HeldDisk, Plan, Source, Tracker, plan_disk};
use super::read::work_name;
use crate::catalog::Catalog;
use crate::catalog::checkpoint::{Checkpoints, ImageIdentity, bitmap_name};
use crate::catalog::vm::{DiskRecord, LibvirtLink, VmRecord};
use crate::error::{EngineError, Result};
use crate::libvirt::definition::{devices, disk_of};
use crate::libvirt::host::{Domain, DomainState, Host};
use crate::progress::human_bytes;
use crate::services::vms::owner_of;

/// A libvirt domain as the backup found it.
pub(super) struct Found {
    pub(super) domain: Arc<Domain>,
    pub(super) state: DomainState,
    /// Every disk target of the domain (the backup and checkpoint XML name them all).
    targets: Vec<String>,
    /// The user and group QEMU runs as (its DAC label), when the definition says.
    owner: Option<(u32, u32)>,
    /// What changed since the last backup.
    pub(super) notes: Vec<String>,
}

impl Found {
    /// What changed since the last backup.
    pub(super) fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

/// Ask libvirt for the VM's domain and bring the registration up to date with its current
/// definition: disks attached since are added (read in full from this point on), detached
/// ones dropped (their points stay), resized ones noted.
pub(super) async fn refresh(
    catalog: Catalog<'_>,
    vm: VmRecord,
    link: &LibvirtLink,
) -> Result<(VmRecord, Found)> {
    let host = Host::connect(&link.uri)?;
    let domain = host.domain(&vm.uuid)?;
    let state = domain.state()?;
    let definition = domain.xml(true)?;
    // What QEMU runs; when shut off, the persistent definition is all there is.
    let xml = if state.is_active() { domain.xml(false)? } else { definition.clone() };
    let others: Vec<VmRecord> =
        catalog.list::<VmRecord>().await?.into_iter().filter(|other| other.name != vm.name).collect();
    let doc = roxmltree::Document::parse(&xml).map_err(|e| EngineError::Libvirt {
        what: format!("the definition of domain {}", domain.name()),
        message: format!("not XML: {e}"),
    })?;
    let (disks, notes) = current_disks(&vm, &others, &doc)?;
    let targets =
        devices(&doc.root_element()).iter().filter_map(|d| disk_of(d)?.target.map(str::to_string)).collect();
    let owner = qemu_owner(&doc);
    let found = Found { domain: Arc::new(domain), state, targets, owner, notes };
    if disks == vm.disks && definition == link.definition {
        return Ok((vm, found));
    }
    let vm = catalog
        .update(&vm.name, |mut record: VmRecord| {
            record.disks = disks.clone();
            record.libvirt = Some(LibvirtLink { uri: link.uri.clone(), definition: definition.clone() });
            Ok(record)
        })
        .await?;
    Ok((vm, found))
}

/// The domain's disks now, and notes on what changed from the registration.
fn current_disks(
    vm: &VmRecord,
    others: &[VmRecord],
    doc: &roxmltree::Document,
) -> Result<(Vec<DiskRecord>, Vec<String>)> {
    let mut disks = Vec::new();
    let mut notes = Vec::new();
    for dev in devices(&doc.root_element()) {
        let Some(node) = disk_of(&dev) else { continue };
        let label = node.target.unwrap_or_default().to_string();
        let Some(source) = node.source else {
            notes.push(format!(
                "disk {label} has no file or block source (a volume or network disk): not backed up"
            ));
            continue;
        };
        let path = PathBuf::from(source);
        let known = vm.disks.iter().any(|d| d.label == label && d.path == path);
        if !known && let Some((owner, theirs)) = owner_of(others, &path) {
            notes.push(format!(
                "disk {label} ({source}) is disk {theirs} of VM {owner:?} already: not backed up with this VM \
                 (a disk belongs to one VM)"
            ));
            continue;
        }
        let info = disk::probe(&path)?;
        match vm.disks.iter().find(|d| d.label == label) {
            None => notes
                .push(format!("disk {label} ({source}) was attached since the last backup: read in full")),
            Some(old) if old.path != path => {
                notes.push(format!("disk {label} is now {source} (was {}): read in full", old.path.display()))
            }
            Some(old) if old.size != info.size => notes.push(format!(
                "disk {label} changed size from {} to {}",
                human_bytes(old.size),
                human_bytes(info.size)
            )),
            Some(_) => {}
        }
        disks.push(DiskRecord { label, path, format: info.format, size: info.size });
    }
    for old in vm.disks.iter().filter(|d| !disks.iter().any(|n| n.label == d.label)) {
        notes.push(format!(
            "disk {} was detached from the domain: no longer backed up (its points stay)",
            old.label
        ));
    }
    Ok((disks, notes))
}

/// A running domain's disks planned from its checkpoints; nothing changed yet.
pub(super) struct LibvirtPlan {
    found: Found,
    held: Vec<HeldDisk>,
    jobs: Vec<JobDisk>,
    scratch: PathBuf,
}

/// Plan a running domain's disks: qcow2 ones incrementally from their checkpoint when libvirt
/// still has it, the others (raw, LVs, block devices: no bitmap) in full, deduplicated.
pub(super) fn plan_libvirt(
    found: Found,
    selected: Vec<DiskRecord>,
    checkpoints: &Checkpoints,
    mut bases: Bases,
    scratch: &Path,
) -> Result<LibvirtPlan> {
    let names = found.domain.checkpoints()?;
    let mut held = Vec::new();
    let mut jobs = Vec::new();
    // The records were probed just now, by `refresh`.
    for record in selected {
        let size = record.size;
        let tracked = record.format == DiskFormat::Qcow2;
        let plan = if tracked {
            let states = names
                .iter()
                .map(|n| BitmapState {
                    name: n.clone(),
                    consistent: true,
                    state: "libvirt checkpoint".into(),
                })
                .collect();
            let checkpoint = checkpoints.disks.get(&record.label);
            plan_disk(&record.path, size, &record.label, checkpoint, &mut bases, Tracker::Checkpoint, || {
                Ok(states)
            })?
        } else {
            let base = bases.take_previous(&record.label, size);
            let note = "full read: a raw disk holds no change-tracking bitmap (read in full, deduplicated)";
            Plan::Full { base, note: Some(note.into()) }
        };
        jobs.push(JobDisk {
            label: record.label.clone(),
            incremental: plan.bitmap().map(String::from),
            tracked,
        });
        held.push(HeldDisk {
            size,
            plan,
            source: Source::Image,
            new_bitmap: None,
            identity: if tracked { ImageIdentity::of(&record.path).ok() } else { None },
            lock: None,
            record,
        });
    }
    Ok(LibvirtPlan { found, held, jobs, scratch: scratch.to_path_buf() })
}

impl Planned for LibvirtPlan {
    fn not_running(&self) -> Option<String> {
        match self.found.state {
            DomainState::Running => None,
            DomainState::Paused { io_error: true } => {
                Some("libvirt reports it paused on an I/O error".into())
            }
            DomainState::Paused { io_error: false } => Some("libvirt reports it paused".into()),
            other => Some(format!("libvirt reports {other:?}")),
        }
    }

    fn freeze(&self) -> Freeze {
        let domain = Arc::clone(&self.found.domain);
        match domain.freeze() {
            Ok(_) => Freeze::Held(Box::new(move || domain.thaw().map_err(|e| e.to_string()))),
            Err(e) => {
                let text = e.to_string();
                if text.contains("not configured") {
                    Freeze::Skipped(Some(
                        "the domain has no guest-agent channel (org.qemu.guest_agent.0): file systems were \
                         not frozen"
                            .into(),
                    ))
                } else if text.contains("not responding") || text.contains("not connected") {
                    Freeze::Skipped(Some(format!(
                        "the guest agent does not answer libvirt (is qemu-guest-agent installed and running \
                         in the guest?): file systems were not frozen ({text})"
                    )))
                } else {
                    Freeze::Failed(format!(
                        "file-system freeze through libvirt failed ({text}); the point is not \
                                            application-consistent"
                    ))
                }
            }
        }
    }

    /// libvirt's backup job starts, and creates the new checkpoint, at one instant for every
    /// disk. An incremental libvirt refuses (a bitmap missing or broken in the image) is
    /// begun again in full.
    fn take(self, point_id: &str) -> Result<Pending> {
        let LibvirtPlan { found, mut held, mut jobs, scratch } = self;
        let all = &found.targets;
        let checkpoint = bitmap_name(point_id);
        let owner = found.owner;
        let needed = held.iter().map(|d| d.size).sum();
        let work = || -> Result<WorkDir> {
            let dir = WorkDir::create(&scratch, &work_name(point_id))?;
            give_to(dir.path(), owner)?;
            check_room(&dir, needed)?;
            Ok(dir)
        };
        let job = match LibvirtJob::begin(Arc::clone(&found.domain), work()?, &jobs, all, &checkpoint) {
            Err(e) if jobs.iter().any(|j| j.incremental.is_some()) => {
                for (disk, job) in held.iter_mut().zip(jobs.iter_mut()) {
                    if let Some(from) = job.incremental.take()
                        && let Plan::Incremental { base, .. } = &disk.plan
                    {
                        let note = format!(
                            "full read: libvirt refused the incremental from checkpoint {from} ({e})"
                        );
                        disk.plan = Plan::Full { base: Some(base.clone()), note: Some(note) };
                    }
                }
                LibvirtJob::begin(Arc::clone(&found.domain), work()?, &jobs, all, &checkpoint)?
            }
            other => other?,
        };
        for (disk, j) in held.iter_mut().zip(&jobs) {
            disk.source = Source::Live {
                socket: job.socket().to_path_buf(),
                export: j.label.clone(),
                bitmap: j.incremental.as_ref().map(|_| format!("backup-{}", j.label)),
            };
        }
        Ok(Pending::new(point_id, held, Some(Running::Libvirt(job))))
    }
}

/// The user and group QEMU runs as for this domain (its DAC label, `+64055:+64055`): the
/// scratch directory must be theirs, since QEMU writes the scratch files and the socket.
fn qemu_owner(doc: &roxmltree::Document) -> Option<(u32, u32)> {
    let label = doc
        .descendants()
        .filter(|n| n.has_tag_name("seclabel") && n.attribute("model") == Some("dac"))
        .find_map(|n| n.children().find(|c| c.has_tag_name("label")).and_then(|l| l.text()))?;
    let (user, group) = label.split_once(':')?;
    Some((user.trim_start_matches('+').parse().ok()?, group.trim_start_matches('+').parse().ok()?))
}

fn give_to(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let Some((uid, gid)) = owner else { return Ok(()) };
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
        EngineError::Invalid(format!(
            "{}: cannot give the scratch directory to QEMU's user {uid}:{gid} ({e}); run the backup as root",
            dir.display()
        ))
    })
}
