//! The point being made, until its manifest is committed: everything the backup changed on the
//! host (image locks, a bitmap added to each stopped image, a running VM's snapshot — QEMU's
//! own or libvirt's backup job — and its exports). Dropped without [`Pending::committed`] — an
//! error, an early `?`, a cancel, a panic in a worker — it undoes all of it, so no path can
//! leave a half-state behind.

use disk::live::LiveSnapshot;

#[cfg(feature = "libvirt")]
use super::libvirt_job::LibvirtJob;
use super::plan::HeldDisk;
use crate::catalog::checkpoint::{BITMAP_PREFIX, bitmap_name};

/// The snapshot of a running VM.
pub(super) enum Running {
    /// Made by vmvault over QEMU's monitor.
    Qemu(LiveSnapshot),
    /// Libvirt's pull-mode backup job.
    #[cfg(feature = "libvirt")]
    Libvirt(LibvirtJob),
}

impl Running {
    /// Why the snapshot had to be stopped to spare the VM, if it was.
    fn harmed(&self) -> Option<String> {
        match self {
            Running::Qemu(live) => live.harmed(),
            #[cfg(feature = "libvirt")]
            Running::Libvirt(job) => job.harmed(),
        }
    }

    /// End it: after a committed point its change tracking carries on from the new point,
    /// otherwise from the previous one. Problems are notes.
    pub(super) fn finish(self, committed: bool, point_id: &str) -> Vec<String> {
        match self {
            Running::Qemu(live) => live.finish(committed, &bitmap_name(point_id), BITMAP_PREFIX),
            #[cfg(feature = "libvirt")]
            Running::Libvirt(job) => job.finish(committed),
        }
    }
}

/// The disks and live snapshot of a point not yet committed.
pub(super) struct Pending {
    pub(super) disks: Vec<HeldDisk>,
    live: Option<Running>,
    point_id: String,
}

/// What a committed point still holds: released by the clean-up after the commit.
pub(super) struct Committed {
    pub(super) disks: Vec<HeldDisk>,
    pub(super) live: Option<Running>,
}

impl Pending {
    /// Hold these disks (and a running VM's snapshot) for the point `point_id`.
    pub(super) fn new(point_id: &str, disks: Vec<HeldDisk>, live: Option<Running>) -> Pending {
        Pending { disks, live, point_id: point_id.to_string() }
    }

    /// Add a disk held while the snapshot phase goes on.
    pub(super) fn hold(&mut self, disk: HeldDisk) {
        self.disks.push(disk);
    }

    /// Why the running VM's snapshot had to be stopped to spare the VM, if it was.
    pub(super) fn harmed(&self) -> Option<String> {
        self.live.as_ref().and_then(Running::harmed)
    }

    /// The manifest is committed: nothing is undone any more.
    pub(super) fn committed(mut self) -> Committed {
        Committed { disks: std::mem::take(&mut self.disks), live: self.live.take() }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.disks.iter_mut().for_each(HeldDisk::abandon);
        if let Some(live) = self.live.take() {
            live.finish(false, &self.point_id);
        }
    }
}
