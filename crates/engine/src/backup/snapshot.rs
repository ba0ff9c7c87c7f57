//! The snapshot and transfer phases of one backup, on a blocking thread: a running VM is
//! snapshotted live, a stopped one has its images held; then every held disk is read.

use std::sync::atomic::Ordering;

use disk::qmp::QmpClient;

use super::live::{QMP_TIMEOUT, Quiesced, live_phase, plan_live};
use super::options::BackupOptions;
use super::pending::Pending;
use super::plan::Prepared;
use super::read::{self, DiskResult};
use super::rendezvous::Step;
use super::stopped;
use crate::catalog::vm::{DiskRecord, VmRecord};
use crate::error::{EngineError, Result};
use crate::transfer::Transfer;

/// A VM whose QMP socket answers is running: it is backed up live. One that does not answer is
/// treated as stopped (its images must then be free).
pub(super) fn connect_qmp(vm: &VmRecord, selected: &[DiskRecord]) -> Result<Option<QmpClient>> {
    let Some(socket) = &vm.qmp else { return Ok(None) };
    match QmpClient::connect(socket, QMP_TIMEOUT) {
        Ok(client) => Ok(Some(client)),
        Err(e) if selected.iter().any(|d| disk::lock::is_in_use(&d.path).unwrap_or(false)) => {
            Err(EngineError::Invalid(format!(
                "VM {:?} is running but its QMP socket does not answer ({e}); check `vm show {}`",
                vm.name, vm.name
            )))
        }
        Err(_) => Ok(None),
    }
}

/// The snapshot and transfer phases, on a blocking thread: hold the disks (frozen at one
/// instant for a running VM, meeting the group at each step), then read them.
pub(super) fn snapshot_and_read(
    transfer: &Transfer<'_>,
    vm: &VmRecord,
    prepared: Prepared,
    qmp: Option<QmpClient>,
    options: &BackupOptions,
) -> Result<(Pending, Vec<DiskResult>, Quiesced)> {
    let Prepared { selected, point_id, checkpoints, bases, .. } = prepared;
    transfer.progress.phase("snapshot");
    let cancel = &options.cancel;
    let meet = |step: Step| options.group.as_ref().map_or(Ok(()), |g| g.wait(&vm.name, step, cancel));
    let (pending, quiesced) = match qmp {
        Some(qmp) => {
            let planned = plan_live(qmp, selected, &checkpoints, bases, &options.scratch);
            let taken = live_phase(planned, &point_id, vm.qga.as_deref(), vm.scripts.as_ref(), meet)?;
            (taken.pending, taken.quiesced)
        }
        None => {
            let pending = stopped::hold_disks(&vm.name, &point_id, selected, &checkpoints, bases, cancel)?;
            // A stopped member has nothing to freeze, but keeps the group's steps.
            [Step::Ready, Step::Frozen, Step::Taken].into_iter().try_for_each(&meet)?;
            (pending, Quiesced::default())
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
