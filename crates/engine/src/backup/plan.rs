//! How each disk of a backup will be read: in full or incrementally (the [`Plan`]), and from
//! where (the [`Source`]) — decided from the disk, its checkpoint and the earlier points.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use disk::ImageLock;
use disk::qemu;
use jiff::Timestamp;
use vault::FixedIndex;

use crate::catalog::checkpoint::{Checkpoint, Checkpoints, ImageIdentity};
use crate::catalog::vm::DiskRecord;
use crate::error::Result;
use crate::ledger::Repairs;

/// What the transfer phase reads of one disk.
pub(super) enum Plan {
    /// Every allocated block; `base` (the disk's previous index) only deduplicates, and
    /// `note` says why an incremental was not possible (`None` for a first backup).
    Full { base: Option<FixedIndex>, note: Option<String> },
    /// Only the blocks `bitmap` marks; the rest is copied from `base`.
    Incremental { bitmap: String, base: FixedIndex },
}

impl Plan {
    /// The dirty bitmap an incremental reads through.
    pub(super) fn bitmap(&self) -> Option<&str> {
        match self {
            Plan::Incremental { bitmap, .. } => Some(bitmap),
            Plan::Full { .. } => None,
        }
    }

    /// Why the disk is read in full although it has history.
    pub(super) fn note(&self) -> Option<String> {
        match self {
            Plan::Full { note, .. } => note.clone(),
            Plan::Incremental { .. } => None,
        }
    }
}

/// Where the transfer phase reads a disk from.
pub(super) enum Source {
    /// The stopped VM's image file itself (raw, qcow2 or a block device).
    Image,
    /// The stopped VM's qcow2 image exported read-only by qemu-nbd with the plan's bitmap.
    QemuNbd,
    /// The running VM's NBD export of the frozen view (QEMU's own, or libvirt's backup job),
    /// with the dirty bitmap an incremental reads under the name the export gives it.
    Live { socket: PathBuf, export: String, bitmap: Option<String> },
}

/// One disk held for the duration of a backup.
pub(super) struct HeldDisk {
    pub(super) record: DiskRecord,
    pub(super) size: u64,
    pub(super) plan: Plan,
    pub(super) source: Source,
    /// The bitmap this backup added to a stopped image (removed again if nothing commits).
    pub(super) new_bitmap: Option<String>,
    pub(super) identity: Option<ImageIdentity>,
    pub(super) lock: Option<ImageLock>,
}

impl HeldDisk {
    /// Undo what holding the disk changed: the point was not committed.
    pub(super) fn abandon(&mut self) {
        self.lock = None;
        if let Some(bitmap) = self.new_bitmap.take() {
            let _ = qemu::remove_bitmap(&self.record.path, &bitmap);
        }
    }
}

/// What planning needs to know of a bitmap, from qemu-img (stopped) or QMP (running).
pub(super) struct BitmapState {
    pub(super) name: String,
    pub(super) consistent: bool,
    pub(super) state: String,
}

/// The indexes a backup builds on: each disk's latest index (dedup) and the index of the
/// point each checkpoint starts from (incrementals).
#[derive(Default)]
pub(super) struct Bases {
    pub(super) previous: BTreeMap<String, FixedIndex>,
    pub(super) checkpointed: BTreeMap<String, FixedIndex>,
}

impl Bases {
    /// The disk's previous index, if its size still matches.
    pub(super) fn take_previous(&mut self, label: &str, size: u64) -> Option<FixedIndex> {
        self.previous.remove(label).filter(|i| i.disk_size() == size)
    }
}

/// What tracks a disk's changes since its checkpoint's point.
#[derive(Clone, Copy)]
pub(super) enum Tracker {
    /// A persistent bitmap vmvault added (to a stopped image, or through QMP).
    Bitmap,
    /// A libvirt checkpoint (and the bitmap libvirt keeps for it).
    #[cfg(feature = "libvirt")]
    Checkpoint,
}

/// Decide how a disk with change tracking is read: incrementally when its checkpoint, its
/// bitmap and the checkpoint's point all agree, else in full with a note saying why.
pub(super) fn plan_disk(
    path: &Path,
    size: u64,
    label: &str,
    checkpoint: Option<&Checkpoint>,
    bases: &mut Bases,
    tracker: Tracker,
    bitmaps: impl FnOnce() -> Result<Vec<BitmapState>>,
) -> Result<Plan> {
    let base = bases.take_previous(label, size);
    let Some(cp) = checkpoint else { return Ok(Plan::Full { base, note: None }) };
    let why = match incremental_refusal(path, size, cp, tracker, bitmaps)? {
        None => match bases.checkpointed.remove(label) {
            Some(index) if index.disk_size() == size => {
                return Ok(Plan::Incremental { bitmap: cp.bitmap.clone(), base: index });
            }
            Some(_) => format!("point {} has another disk size", cp.point_id),
            None => format!("point {} that the bitmap starts from is gone or unreadable", cp.point_id),
        },
        Some(why) => why,
    };
    Ok(Plan::Full { base, note: Some(format!("full read: {why}")) })
}

/// Why the disk's change tracking cannot be trusted, if it cannot.
fn incremental_refusal(
    path: &Path,
    size: u64,
    cp: &Checkpoint,
    tracker: Tracker,
    bitmaps: impl FnOnce() -> Result<Vec<BitmapState>>,
) -> Result<Option<String>> {
    if ImageIdentity::of(path).ok() != Some(cp.image) {
        return Ok(Some(format!("the image file was replaced since point {}", cp.point_id)));
    }
    if cp.size != size {
        return Ok(Some(format!("the disk changed size since point {}", cp.point_id)));
    }
    let bitmaps = bitmaps()?;
    Ok(match bitmaps.iter().find(|b| b.name == cp.bitmap) {
        None => Some(match tracker {
            Tracker::Bitmap => format!("change-tracking bitmap {} is missing", cp.bitmap),
            #[cfg(feature = "libvirt")]
            Tracker::Checkpoint => format!(
                "libvirt has no checkpoint {} (deleted behind vmvault's back, or the domain was redefined)",
                cp.bitmap
            ),
        }),
        Some(b) if !b.consistent => {
            Some(format!("change-tracking bitmap {} is inconsistent ({})", cp.bitmap, b.state))
        }
        Some(_) => None,
    })
}

/// A stopped image's bitmaps, as qemu-img reports them.
pub(super) fn offline_bitmaps(path: &Path) -> Result<Vec<BitmapState>> {
    Ok(qemu::bitmaps(path)?
        .into_iter()
        .map(|b| BitmapState {
            consistent: b.is_consistent(),
            state: if b.flags.is_empty() {
                "flags: none".into()
            } else {
                format!("flags: {}", b.flags.join(", "))
            },
            name: b.name,
        })
        .collect())
}

/// Everything decided before the snapshot phase.
pub(super) struct Prepared {
    /// What the operator should know already (damage found and stepped around).
    pub(super) notes: Vec<String>,
    pub(super) selected: Vec<DiskRecord>,
    pub(super) time: Timestamp,
    pub(super) point_id: String,
    pub(super) checkpoints: Checkpoints,
    pub(super) bases: Bases,
    pub(super) repairs: Repairs,
}
