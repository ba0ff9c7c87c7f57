//! The snapshot and transfer phases of one backup, on a blocking thread: a running VM is
//! snapshotted live (through QEMU's monitor, or libvirt's backup API for a domain libvirt
//! manages), a stopped one has its images held; then every held disk is read.

use std::sync::atomic::Ordering;

use disk::qmp::QmpClient;
use vault::{Consistency, UnlockedVault};

#[cfg(feature = "libvirt")]
pub(super) use super::libvirt::Found;
use super::live::{QMP_TIMEOUT, Quiesced, live_phase, plan_live};
use super::options::BackupOptions;
use super::pending::Pending;
use super::plan::Prepared;
use super::read::{self, DiskResult};
use super::rendezvous::Step;
use super::{shutdown, stopped};
use crate::catalog::vm::{DiskRecord, VmRecord};
use crate::error::{EngineError, Result};
use crate::transfer::Transfer;

/// A libvirt domain as the backup found it (none without libvirt).
#[cfg(not(feature = "libvirt"))]
pub(super) enum Found {}

#[cfg(not(feature = "libvirt"))]
impl Found {
    /// What changed since the last backup.
    pub(super) fn take_notes(&mut self) -> Vec<String> {
        match *self {}
    }
}

/// How the VM is found when the backup starts.
pub(super) enum Runner {
    /// Not running: its images are read as they are. `libvirt_clean` is how libvirt says it
    /// stopped (the guest shut itself down, or not); without libvirt the guest's file systems
    /// tell.
    Stopped { libvirt_clean: Option<bool> },
    /// QEMU runs it, and vmvault has its monitor.
    Qemu(QmpClient),
    /// libvirt runs it.
    #[cfg(feature = "libvirt")]
    Libvirt(Found),
}

/// The VM's registration brought up to date by libvirt, when libvirt manages it, with the
/// domain as found and notes on what changed.
pub(super) async fn refresh(vault: &UnlockedVault, vm: VmRecord) -> Result<(VmRecord, Option<Found>)> {
    let Some(link) = vm.libvirt.clone() else { return Ok((vm, None)) };
    #[cfg(feature = "libvirt")]
    {
        let (vm, found) =
            super::libvirt::refresh(crate::catalog::Catalog::of(vault.vault()), vm, &link).await?;
        Ok((vm, Some(found)))
    }
    #[cfg(not(feature = "libvirt"))]
    {
        let _ = vault;
        Err(crate::libvirt::absent(&link.uri))
    }
}

/// How the VM runs. A VM whose QMP socket answers is running: it is backed up live. One that
/// does not answer is treated as stopped (its images must then be free).
pub(super) fn runner(vm: &VmRecord, selected: &[DiskRecord], found: Option<Found>) -> Result<Runner> {
    #[cfg(feature = "libvirt")]
    if let Some(found) = found {
        use crate::libvirt::host::DomainState;
        return Ok(match found.state {
            DomainState::ShutOff { clean } => Runner::Stopped { libvirt_clean: Some(clean) },
            _ => Runner::Libvirt(found),
        });
    }
    #[cfg(not(feature = "libvirt"))]
    if let Some(never) = found {
        match never {}
    }
    let Some(socket) = &vm.qmp else { return Ok(Runner::Stopped { libvirt_clean: None }) };
    match QmpClient::connect(socket, QMP_TIMEOUT) {
        Ok(client) => Ok(Runner::Qemu(client)),
        Err(e) if selected.iter().any(|d| disk::lock::is_in_use(&d.path).unwrap_or(false)) => {
            Err(EngineError::Invalid(format!(
                "VM {:?} is running but its QMP socket does not answer ({e}); check `vm show {}`",
                vm.name, vm.name
            )))
        }
        Err(_) => Ok(Runner::Stopped { libvirt_clean: None }),
    }
}

/// The snapshot and transfer phases, on a blocking thread: hold the disks (frozen at one
/// instant for a running VM, meeting the group at each step), then read them.
pub(super) fn snapshot_and_read(
    transfer: &Transfer<'_>,
    vm: &VmRecord,
    prepared: Prepared,
    runner: Runner,
    options: &BackupOptions,
) -> Result<(Pending, Vec<DiskResult>, Quiesced)> {
    let Prepared { selected, point_id, checkpoints, bases, .. } = prepared;
    transfer.progress.phase("snapshot");
    let cancel = &options.cancel;
    let meet = |step: Step| options.group.as_ref().map_or(Ok(()), |g| g.wait(&vm.name, step, cancel));
    let (pending, quiesced) = match runner {
        Runner::Qemu(qmp) => {
            let planned = plan_live(qmp, selected, &checkpoints, bases, &options.scratch, vm.qga.as_deref());
            let taken = live_phase(planned, &point_id, vm.scripts.as_ref(), meet)?;
            (taken.pending, taken.quiesced)
        }
        #[cfg(feature = "libvirt")]
        Runner::Libvirt(found) => {
            let planned =
                super::libvirt::plan_libvirt(found, selected, &checkpoints, bases, &options.scratch);
            let taken = live_phase(planned, &point_id, vm.scripts.as_ref(), meet)?;
            (taken.pending, taken.quiesced)
        }
        Runner::Stopped { libvirt_clean } => {
            let pending = stopped::hold_disks(&vm.name, &point_id, selected, &checkpoints, bases, cancel)?;
            // A stopped member has nothing to freeze, but keeps the group's steps.
            [Step::Ready, Step::Frozen, Step::Taken].into_iter().try_for_each(&meet)?;
            let clean = match libvirt_clean {
                Some(true) => {
                    Some("libvirt reports the guest shut itself down: its file systems are consistent".into())
                }
                Some(false) => None,
                None => shutdown::cleanly_unmounted(&pending.disks),
            };
            let quiesced = match clean {
                Some(note) => {
                    Quiesced { consistency: Consistency::FileSystem, notes: vec![note], freeze_to_thaw: None }
                }
                None => Quiesced::default(),
            };
            (pending, quiesced)
        }
    };
    if cancel.load(Ordering::SeqCst) {
        return Err(EngineError::Cancelled);
    }
    transfer.progress.phase("transfer");
    let done = read::read_all(transfer, &pending.disks, &point_id);
    // A snapshot stopped to spare the VM explains why the read failed, and fails a read that
    // did not.
    if let Some(why) = pending.harmed() {
        return Err(EngineError::Failed(why));
    }
    Ok((pending, done?, quiesced))
}
