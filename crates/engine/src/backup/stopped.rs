//! The snapshot phase of a stopped VM: refuse images in use, start tracking writes with a new
//! bitmap in each qcow2 image, then lock the images against writers for the rest of the backup.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use disk::{DiskFormat, ImageLock, qemu};

use super::pending::Pending;
use super::plan::{Bases, HeldDisk, Plan, Source, Tracker, offline_bitmaps, plan_disk};
use crate::catalog::checkpoint::{BITMAP_PREFIX, Checkpoints, ImageIdentity, bitmap_name};
use crate::catalog::vm::DiskRecord;
use crate::error::{EngineError, Result};

/// Hold every selected disk of a stopped VM; what was held is released if one fails.
pub(super) fn hold_disks(
    vm: &str,
    point_id: &str,
    selected: Vec<DiskRecord>,
    checkpoints: &Checkpoints,
    mut bases: Bases,
    cancel: &AtomicBool,
) -> Result<Pending> {
    let mut pending = Pending::new(point_id, Vec::new(), None);
    for record in selected {
        if cancel.load(Ordering::SeqCst) {
            return Err(EngineError::Cancelled);
        }
        // Held as soon as it exists, so an error below still removes its new bitmap.
        pending.hold(hold_disk(vm, point_id, record, checkpoints, &mut bases)?);
    }
    Ok(pending)
}

fn hold_disk(
    vm: &str,
    point_id: &str,
    record: DiskRecord,
    checkpoints: &Checkpoints,
    bases: &mut Bases,
) -> Result<HeldDisk> {
    let info = disk::probe(&record.path)
        .map_err(|e| EngineError::Invalid(format!("disk {} of VM {vm:?}: {e}", record.label)))?;
    if disk::lock::is_in_use(&record.path)? {
        return Err(disk::DiskError::InUse { path: record.path.clone() }.into());
    }
    let tracked = info.format == DiskFormat::Qcow2 && !info.block_device;
    let plan = if tracked {
        let path = record.path.clone();
        let checkpoint = checkpoints.disks.get(&record.label);
        plan_disk(&record.path, info.size, &record.label, checkpoint, bases, Tracker::Bitmap, || {
            offline_bitmaps(&path)
        })?
    } else {
        Plan::Full { base: bases.take_previous(&record.label, info.size), note: None }
    };
    let source = match plan {
        Plan::Incremental { .. } => Source::QemuNbd,
        Plan::Full { .. } => Source::Image,
    };
    let mut disk =
        HeldDisk { size: info.size, plan, source, new_bitmap: None, identity: None, lock: None, record };
    if tracked {
        let bitmap = bitmap_name(point_id);
        qemu::add_bitmap(&disk.record.path, &bitmap)?;
        disk.new_bitmap = Some(bitmap);
        disk.identity = ImageIdentity::of(&disk.record.path).ok();
    }
    match ImageLock::acquire(&disk.record.path) {
        Ok(lock) => {
            disk.lock = Some(lock);
            Ok(disk)
        }
        Err(e) => {
            disk.abandon();
            Err(e.into())
        }
    }
}

/// Remove every vmvault bitmap but `keep`: older checkpoints and ones left by failed backups.
pub(super) fn remove_stale_bitmaps(path: &Path, keep: &str) -> Result<()> {
    for bitmap in qemu::bitmaps(path)? {
        if bitmap.name.starts_with(BITMAP_PREFIX) && bitmap.name != keep {
            qemu::remove_bitmap(path, &bitmap.name)?;
        }
    }
    Ok(())
}
