//! File-level access to recovery points: a disk of a point as a random-access block reader
//! that fetches and opens chunks only when read, through a small cache — so listing a
//! directory of a 100 GiB disk touches a handful of chunks. The guest's partitions and
//! filesystems are read by the `guestfs` crate on top of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use guestfs::detect::{Volume, default_volume};
use guestfs::{BlockReader, GuestFs};
use tokio::runtime::Handle;
use vault::{FixedIndex, Manifest, UnlockedVault};

use crate::error::{EngineError, Result};
use crate::points;

/// Chunks kept open in memory per reader (4 MiB each).
pub const CACHE_CHUNKS: usize = 16;

/// One disk of a recovery point, readable at any offset. Reads must come from threads
/// outside the async runtime (the chunks are fetched by blocking on it).
pub struct PointReader {
    vault: Arc<UnlockedVault>,
    index: FixedIndex,
    handle: Handle,
    cache: Mutex<VecDeque<(usize, Arc<Vec<u8>>)>>,
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
            cache: Mutex::new(VecDeque::new()),
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
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pos) = cache.iter().position(|(b, _)| *b == block) {
                let hit = cache.remove(pos).map(|(_, data)| data);
                if let Some(data) = hit {
                    cache.push_front((block, Arc::clone(&data)));
                    return Ok(data);
                }
            }
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
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.push_front((block, Arc::clone(&data)));
        cache.truncate(CACHE_CHUNKS);
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

/// A disk of a point opened for browsing: its volumes and the reader under them.
pub struct PointDisk {
    /// The point.
    pub manifest: Manifest,
    /// The disk's label.
    pub label: String,
    /// The reader (also counts chunk fetches).
    pub reader: Arc<PointReader>,
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
        let reader = Arc::new(PointReader::open(vault, &manifest, &label).await?);
        Ok(PointDisk { manifest, label, reader })
    }

    /// Partition table and volumes (blocking: call from a blocking thread).
    pub fn volumes(&self) -> Result<(guestfs::partition::TableKind, Vec<Volume>)> {
        Ok(guestfs::volumes(Arc::clone(&self.reader) as Arc<dyn BlockReader>)?)
    }

    /// Open partition `number` (default: the largest readable filesystem; 0 = whole disk).
    pub fn filesystem(&self, number: Option<u32>) -> Result<(Volume, Box<dyn GuestFs>)> {
        let (_, volumes) = self.volumes()?;
        let volume = match number {
            Some(n) => volumes.iter().find(|v| v.number == n).ok_or_else(|| {
                let known: Vec<String> = volumes.iter().map(|v| v.number.to_string()).collect();
                EngineError::Invalid(format!(
                    "disk {} of point {} has no partition {n} (it has: {}); see `vmvault files parts`",
                    self.label,
                    self.manifest.point_id,
                    known.join(", ")
                ))
            })?,
            None => default_volume(&volumes).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "disk {} of point {} holds no filesystem vmvault can read (ext2/3/4, FAT, NTFS); see `vmvault files parts`",
                    self.label, self.manifest.point_id
                ))
            })?,
        };
        let fs = guestfs::open_volume(Arc::clone(&self.reader) as Arc<dyn BlockReader>, volume)?;
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
    let report = guestfs::extract::extract(fs, paths, to)?;
    if report.errors.is_empty() {
        std::fs::remove_file(&marker).map_err(|e| io(&marker, e))?;
    }
    Ok(report)
}
