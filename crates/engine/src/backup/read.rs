//! The transfer phase of one backup: each held disk read from its [`Source`] as its [`Plan`]
//! says, through the chunk pipeline ([`crate::transfer`]), into a new fixed index.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use disk::nbd::NbdSource;
use disk::qemu::NbdExport;
use disk::scratch::WorkDir;
use disk::{BlockSource, DiskFormat};
use vault::{ChunkId, FixedIndex};

use super::plan::{HeldDisk, Plan, Source};
use crate::error::{EngineError, Result};
use crate::transfer::{BlockRead, Transfer, TransferStats, blocks_of, patched, whole};

/// NBD connections an NBD read goes through (qemu-nbd serves this many at once).
const NBD_READERS: usize = disk::qemu::NBD_CLIENTS;

/// What reading one disk produced: its index, the counts, and why it was read in full.
pub(super) type DiskResult = (FixedIndex, TransferStats, Option<String>);

/// Read every held disk in turn.
pub(super) fn read_all(
    transfer: &Transfer<'_>,
    held: &[HeldDisk],
    point_id: &str,
) -> Result<Vec<DiskResult>> {
    let mut out = Vec::new();
    for disk in held {
        transfer.progress.start(&disk.record.label, disk.size);
        out.push(read_disk(transfer, disk, point_id)?);
        transfer.progress.finish();
    }
    Ok(out)
}

fn read_disk(transfer: &Transfer<'_>, disk: &HeldDisk, point_id: &str) -> Result<DiskResult> {
    let label = &disk.record.label;
    let named = |e: EngineError| match e {
        EngineError::Cancelled => e,
        other => EngineError::BackupDisk { label: label.clone(), source: Box::new(other) },
    };
    let note = disk.plan.note();
    match &disk.source {
        Source::Live { socket, export, bitmap } => {
            read_nbd(transfer, disk.size, &disk.plan, socket, export, bitmap.as_deref())
                .map(|(index, stats)| (index, stats, note))
                .map_err(|e| match e {
                    EngineError::Cancelled => e,
                    other => EngineError::Invalid(format!(
                        "disk {label}: reading the running VM's snapshot failed ({other}); did QEMU exit? \
                     Nothing was committed"
                    )),
                })
        }
        Source::QemuNbd => {
            let dir = socket_dir(point_id)?;
            let result = (|| {
                let socket = dir.path().join("nbd.sock");
                let export =
                    NbdExport::start(&disk.record.path, DiskFormat::Qcow2, disk.plan.bitmap(), &socket)?;
                read_nbd(transfer, disk.size, &disk.plan, export.socket(), "", disk.plan.bitmap())
            })();
            result.map(|(index, stats)| (index, stats, note)).map_err(named)
        }
        Source::Image => {
            let mut source: Box<dyn BlockSource> = disk::open_source(&disk.record.path, disk.record.format)?;
            let blocks = whole(&blocks_of(&source.allocated()?, disk.size));
            let mut index = FixedIndex::zeroed(disk.size)?;
            skip_progress(transfer, &index, &blocks);
            let stats =
                transfer.run(vec![source], &blocks, &mut index, known_of(&disk.plan)).map_err(named)?;
            Ok((index, stats, note))
        }
    }
}

/// The chunks the plan's base already holds: found there, a block is not stored again.
fn known_of(plan: &Plan) -> HashSet<ChunkId> {
    let base = match plan {
        Plan::Full { base, .. } => base.as_ref(),
        Plan::Incremental { base, .. } => Some(base),
    };
    base.iter().flat_map(|b| b.entries().iter().copied()).filter(|id| !id.is_zero()).collect()
}

/// Read a disk through an NBD export (qemu-nbd's, a running QEMU's or libvirt's): the dirty
/// blocks of the plan's bitmap (exported as `bitmap`) over its base, or every allocated block.
fn read_nbd(
    transfer: &Transfer<'_>,
    size: u64,
    plan: &Plan,
    socket: &Path,
    export: &str,
    bitmap: Option<&str>,
) -> Result<(FixedIndex, TransferStats)> {
    // qemu-nbd exits once its last client leaves (also when this process is killed): the
    // first connection stays open until the readers are connected.
    let mut first = NbdSource::connect_named(socket, export, bitmap.filter(|_| plan.bitmap().is_some()))?;
    let (blocks, mut index) = match plan {
        Plan::Incremental { base, .. } => (patched(&first.dirty()?, base), base.clone()),
        Plan::Full { .. } => (whole(&blocks_of(&first.allocated()?, size)), FixedIndex::zeroed(size)?),
    };
    // Several connections keep several reads in flight.
    let sources = (0..NBD_READERS)
        .map(|_| Ok(Box::new(NbdSource::connect_named(socket, export, None)?) as Box<dyn BlockSource>))
        .collect::<Result<Vec<_>>>()?;
    drop(first);
    skip_progress(transfer, &index, &blocks);
    let stats = transfer.run(sources, &blocks, &mut index, known_of(plan))?;
    Ok((index, stats))
}

/// Count the blocks that will not be read as done at once, so progress covers the whole disk.
fn skip_progress(transfer: &Transfer<'_>, index: &FixedIndex, blocks: &[BlockRead]) {
    let planned: u64 = blocks.iter().map(|b| index.block_len(b.block)).sum();
    transfer.progress.advance(index.disk_size().saturating_sub(planned));
}

/// A private directory for the NBD sockets of one backup (short: a socket path has at most
/// 107 bytes), removed when dropped.
pub(super) fn socket_dir(point_id: &str) -> Result<WorkDir> {
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    Ok(WorkDir::create(&base, &work_name(point_id))?)
}

/// The name of one backup's own directory (under the socket or the scratch directory).
pub(super) fn work_name(point_id: &str) -> String {
    format!("vmvault-{point_id}-{}", std::process::id())
}
