//! File-level access to recovery points: a disk of a point as a random-access block reader
//! that fetches and opens chunks only when read, through a small cache — so listing a
//! directory of a 100 GiB disk touches a handful of chunks. The guest's partitions and
//! filesystems are read by the `guestfs` crate on top of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use guestfs::{BlockReader, GuestDisk, GuestFs, Layout, Volume};
use tokio::runtime::Handle;
use vault::{FixedIndex, Manifest, UnlockedVault};

use crate::error::{EngineError, Result};
use crate::points;

use crate::chunk_cache::ChunkCache;
pub use crate::chunk_cache::{CACHE_CHUNKS, CACHE_CHUNKS_MAX};

/// One disk of a recovery point, readable at any offset. Reads must come from threads
/// outside the async runtime (the chunks are fetched by blocking on it).
pub struct PointReader {
    vault: Arc<UnlockedVault>,
    index: FixedIndex,
    handle: Handle,
    cache: Mutex<ChunkCache>,
    fetched: AtomicU64,
}

impl PointReader {
    /// A reader over `label` of `manifest`; call from within the runtime.
    pub async fn open(vault: Arc<UnlockedVault>, manifest: &Manifest, label: &str) -> Result<PointReader> {
        let index = points::disk_index(&vault, manifest, label).await?;
        Ok(PointReader {
            vault,
            index,
            handle: Handle::current(),
            cache: Mutex::new(ChunkCache::default()),
            fetched: AtomicU64::new(0),
        })
    }

    /// Chunks fetched from the vault so far (cache misses).
    pub fn chunks_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The disk's index (which blocks are zero).
    pub fn index(&self) -> &FixedIndex {
        &self.index
    }

    fn block(&self, block: usize) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(block) {
            return Ok(hit);
        }
        let id = self.index.entries()[block];
        let data = self.handle.block_on(self.vault.get_chunk(&id)).map_err(std::io::Error::other)?;
        if data.len() as u64 != self.index.block_len(block) {
            return Err(std::io::Error::other(format!(
                "chunk {id}: length differs from its place in the index"
            )));
        }
        self.fetched.fetch_add(1, Ordering::Relaxed);
        let data = Arc::new(data);
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(block, Arc::clone(&data));
        Ok(data)
    }
}

impl BlockReader for PointReader {
    fn size(&self) -> u64 {
        self.index.disk_size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let chunk = u64::from(self.index.chunk_size());
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.size()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the disk",
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let block = (at / chunk) as usize;
            let within = (at % chunk) as usize;
            let n = (buf.len() - done).min(self.index.block_len(block) as usize - within);
            let out = &mut buf[done..done + n];
            if self.index.entries()[block].is_zero() {
                out.fill(0);
            } else {
                out.copy_from_slice(&self.block(block)?[within..within + n]);
            }
            done += n;
        }
        Ok(())
    }
}

/// A point's disk served over NBD (`vmvault mount`): zero chunks are reported as holes.
impl disk::nbd::server::ExportSource for PointReader {
    fn size(&self) -> u64 {
        self.index.disk_size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        BlockReader::read_at(self, offset, buf)
    }

    fn granularity(&self) -> u64 {
        u64::from(self.index.chunk_size())
    }

    fn is_zero(&self, offset: u64) -> bool {
        let block = (offset / u64::from(self.index.chunk_size())) as usize;
        self.index.entries().get(block).is_none_or(|id| id.is_zero())
    }
}

/// A disk of a point opened for browsing, with the point's other disks beside it (an LVM
/// volume group may span them).
pub struct PointDisk {
    /// The point.
    pub manifest: Manifest,
    /// The disk's label.
    pub label: String,
    /// The reader (also counts chunk fetches).
    pub reader: Arc<PointReader>,
    disks: Vec<GuestDisk>,
    chosen: usize,
    passphrases: Vec<guestfs::Passphrase>,
}

impl PointDisk {
    /// Open disk `label` (default: the point's first) of point `point` (`latest` allowed) of `vm`.
    pub async fn open(
        vault: Arc<UnlockedVault>,
        vm: &str,
        point: &str,
        label: Option<&str>,
    ) -> Result<PointDisk> {
        let manifest = points::find(&vault, vm, point).await?;
        let label = match label {
            Some(l) => l.to_string(),
            None => manifest.disks.first().map(|d| d.label.clone()).ok_or_else(|| {
                EngineError::Invalid(format!("point {} of VM {vm:?} holds no disk", manifest.point_id))
            })?,
        };
        let reader = Arc::new(PointReader::open(Arc::clone(&vault), &manifest, &label).await?);
        let mut disks = Vec::new();
        let mut chosen = 0;
        for d in &manifest.disks {
            let this: Arc<PointReader> = if d.label == label {
                chosen = disks.len();
                Arc::clone(&reader)
            } else {
                Arc::new(PointReader::open(Arc::clone(&vault), &manifest, &d.label).await?)
            };
            disks.push(GuestDisk { label: d.label.clone(), reader: this as Arc<dyn BlockReader> });
        }
        Ok(PointDisk { manifest, label, reader, disks, chosen, passphrases: Vec::new() })
    }

    /// Passphrases to open the guest's LUKS volumes with (each tried on each).
    pub fn unlock_with(&mut self, passphrases: Vec<guestfs::Passphrase>) {
        self.passphrases.extend(passphrases);
    }

    /// The disk's partitions and LVs, probed, LUKS volumes opened where a passphrase given
    /// opens them (blocking: call from a blocking thread).
    pub fn layout(&self) -> Result<Layout> {
        Ok(guestfs::scan_unlocking(&self.disks, self.chosen, &self.passphrases)?)
    }

    /// Open volume `id` (a partition number, `0` for the whole disk, or `vg/lv`); by default
    /// the OS root (see [`Layout::default_volume`]).
    pub fn filesystem(&self, id: Option<&str>) -> Result<(Volume, Box<dyn GuestFs>)> {
        let layout = self.layout()?;
        let volume = match id {
            Some(id) => layout.find(id)?,
            None => layout.default_volume()?,
        };
        let fs = guestfs::open_volume(volume)?;
        Ok((volume.clone(), fs))
    }
}

/// The file a file restore keeps at the top of its target while it writes, and leaves there
/// when it was interrupted or could not extract everything: what is beside it is incomplete.
pub const INCOMPLETE_MARKER: &str = ".vmvault-incomplete";

/// Extract `paths` of `fs` into `to` (see `guestfs::extract`), marked incomplete until every
/// entry is in place. Returns the extraction's report; the marker stays when it lists errors.
pub fn extract_marked(
    fs: &dyn GuestFs,
    paths: &[Vec<u8>],
    to: &std::path::Path,
    job_id: &str,
    options: guestfs::extract::Options,
) -> Result<guestfs::extract::ExtractReport> {
    let io =
        |path: &std::path::Path, e: std::io::Error| EngineError::Failed(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    let marker = to.join(INCOMPLETE_MARKER);
    // Never through a link someone left there: the marker is a new file of ours.
    match std::fs::remove_file(&marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&marker, e)),
        _ => {}
    }
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).map_err(|e| io(&marker, e))?;
    let note = format!(
        "vmvault file restore job {job_id} writes here. If that job has ended, it was interrupted or could not \
         extract everything: what is here is incomplete.\n"
    );
    std::io::Write::write_all(&mut file, note.as_bytes()).map_err(|e| io(&marker, e))?;
    drop(file);
    let report = guestfs::extract::extract_with(fs, paths, to, options)?;
    if report.errors.is_empty() {
        std::fs::remove_file(&marker).map_err(|e| io(&marker, e))?;
    }
    Ok(report)
}
