//! The transfer phase: read blocks, drop zeros, hash, skip what the vault has, compress,
//! encrypt and store the rest, on all cores, with memory bounded by a fixed buffer pool.
//!
//! One thread reads blocks in disk order (sequential I/O) into pooled 4 MiB buffers; worker
//! threads (one per core) take them from a bounded channel and do the CPU work and the store
//! calls; the buffer goes back to the pool. A full pool stops the reader: backpressure.
//!
//! On a remote vault (a server, object storage) a lookup is a round trip, so new chunks go on
//! through three more stages, all running at once: asker threads ask the vault which chunks of
//! a batch it lacks (one request per batch), sealer threads (one per worker) seal only those,
//! and uploader threads send them several at a time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, PoisonError};

use disk::{BlockSource, Extent};
use tokio::runtime::Handle;
use vault::vault::SealedChunk;
use vault::{ChunkId, FixedIndex, UnlockedVault};

use crate::error::{EngineError, Result};
use crate::ledger::{Repairs, Stored};
use crate::progress::Progress;

/// What one disk's transfer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Bytes read from the disk.
    pub bytes_read: u64,
    /// Of those, bytes in all-zero blocks (never stored).
    pub bytes_zero: u64,
    /// Stored bytes added to the vault.
    pub bytes_new: u64,
    /// Chunks added to the vault.
    pub chunks_new: u64,
}

/// Worker threads for a pipeline: two per core, because each also waits on storage (reads,
/// fsyncs) and a waiting worker should not leave its core idle.
pub fn worker_count() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2) * 2
}

/// How to get the content of one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRead {
    /// Block number.
    pub block: usize,
    /// Read only these ranges (offsets within the block) and take the rest from this chunk of
    /// the previous point; `None` reads the whole block.
    pub patch: Option<Patch>,
}

/// The changed ranges of a block and the chunk holding its previous content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patch {
    /// The block's chunk in the previous point.
    pub base: ChunkId,
    /// Changed byte ranges within the block, in order.
    pub ranges: Vec<std::ops::Range<usize>>,
}

/// Read these blocks whole.
pub fn whole(blocks: &[usize]) -> Vec<BlockRead> {
    blocks.iter().map(|&block| BlockRead { block, patch: None }).collect()
}

/// Blocks touched by `dirty` extents. Only the dirty ranges of a block are read from the disk
/// and the rest is taken from its chunk in `base`, when that chunk is zeros (nothing to fetch)
/// or the block is less than half dirty; otherwise the whole block is read.
pub fn patched(dirty: &[Extent], base: &FixedIndex) -> Vec<BlockRead> {
    let cs = u64::from(vault::index::CHUNK_SIZE);
    let mut out: Vec<BlockRead> = Vec::new();
    for e in dirty {
        let end = (e.offset + e.length).min(base.disk_size());
        let mut at = e.offset;
        while at < end {
            let block = (at / cs) as usize;
            let block_start = block as u64 * cs;
            let stop = end.min(block_start + cs);
            let range = (at - block_start) as usize..(stop - block_start) as usize;
            match out.last_mut() {
                Some(last) if last.block == block => {
                    if let Some(p) = &mut last.patch {
                        p.ranges.push(range);
                    }
                }
                _ => out.push(BlockRead {
                    block,
                    patch: Some(Patch { base: base.entries()[block], ranges: vec![range] }),
                }),
            }
            at = stop;
        }
    }
    for read in &mut out {
        let len = base.block_len(read.block) as usize;
        let Some(patch) = &read.patch else { continue };
        let dirty: usize = patch.ranges.iter().map(|r| r.len()).sum();
        if dirty == len || (!patch.base.is_zero() && dirty * 2 >= len) {
            read.patch = None;
        }
    }
    out
}

/// Block numbers (of [`vault::index::CHUNK_SIZE`] bytes) that overlap any of `extents`.
pub fn blocks_of(extents: &[Extent], disk_size: u64) -> Vec<usize> {
    let cs = u64::from(vault::index::CHUNK_SIZE);
    let mut out: Vec<usize> = Vec::new();
    for e in extents {
        let end = (e.offset + e.length).min(disk_size);
        if e.offset < end {
            out.extend((e.offset / cs) as usize..=((end - 1) / cs) as usize);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether a buffer is all zeros; compares 4 KiB at a time without early exits inside a
/// page, which the compiler vectorises.
pub fn is_zero(data: &[u8]) -> bool {
    let mut pages = data.chunks_exact(4096);
    for page in &mut pages {
        let mut acc = 0u64;
        for word in page.chunks_exact(8) {
            acc |=
                u64::from_ne_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
        }
        if acc != 0 {
            return false;
        }
    }
    pages.remainder().iter().all(|&b| b == 0)
}

/// Everything a transfer needs from its caller.
pub struct Transfer<'a> {
    /// Where chunks go.
    pub vault: &'a UnlockedVault,
    /// The backup's writer session, through which reused chunks are kept from GC.
    pub session: &'a vault::session::Session,
    /// The runtime the backend's async calls run on.
    pub handle: Handle,
    /// Set by a cancel request; checked between blocks.
    pub cancel: &'a AtomicBool,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// Damaged chunks to write again when their data comes by.
    pub repairs: &'a Repairs,
    /// Where the chunks this transfer adds are noted.
    pub stored: &'a Stored,
    /// Worker threads.
    pub workers: usize,
}

/// Threads of the remote stages besides the sealers (one per worker).
const ASKERS: usize = 2;
const UPLOADERS: usize = 2;
/// New chunks (4 MiB each) waiting to be asked about, and most chunks one question names.
const ASK_QUEUE: usize = 8;
const ASK_BATCH: usize = 16;
/// Chunks waiting for a sealer, and sealed chunks waiting for an uploader.
const SEAL_QUEUE: usize = 4;
const PUT_QUEUE: usize = 4;
/// Most sealed chunks one uploader sends at once.
const PUT_BATCH: usize = 4;

struct Shared<'a> {
    transfer: &'a Transfer<'a>,
    known: Mutex<HashSet<ChunkId>>,
    results: Mutex<Vec<(usize, ChunkId)>>,
    failure: Mutex<Option<EngineError>>,
    stop: AtomicBool,
    bytes_zero: AtomicU64,
    bytes_new: AtomicU64,
    chunks_new: AtomicU64,
}

impl<'a> Shared<'a> {
    fn new(transfer: &'a Transfer<'a>, known: HashSet<ChunkId>, blocks: usize) -> Shared<'a> {
        Shared {
            transfer,
            known: Mutex::new(known),
            results: Mutex::new(Vec::with_capacity(blocks)),
            failure: Mutex::new(None),
            stop: AtomicBool::new(false),
            bytes_zero: AtomicU64::new(0),
            bytes_new: AtomicU64::new(0),
            chunks_new: AtomicU64::new(0),
        }
    }
}

/// `size` block buffers, handed out through a channel: a reader waits when all are in use.
fn buffer_pool(size: usize) -> (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) {
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(size);
    for _ in 0..size {
        let _ = free_tx.send(Vec::with_capacity(vault::index::CHUNK_SIZE as usize));
    }
    (free_tx, free_rx)
}

impl Transfer<'_> {
    /// Read `blocks` and set their entries in `index`, one reader thread per source (all views
    /// of the same disk: one keeps reads sequential, several overlap scattered reads). `known`
    /// holds ids the vault is known to have (the previous point's): neither looked up nor stored.
    pub fn run(
        &self,
        sources: Vec<Box<dyn BlockSource>>,
        blocks: &[BlockRead],
        index: &mut FixedIndex,
        known: HashSet<ChunkId>,
    ) -> Result<TransferStats> {
        let known = known.into_iter().filter(|id| !self.repairs.wants(id)).collect();
        let shared = Shared::new(self, known, blocks.len());
        let workers = self.workers.max(1);
        let pool_size = workers * 2 + 2;
        let (work_tx, work_rx) = sync_channel::<Work>(pool_size);
        let (free_tx, free_rx) = buffer_pool(pool_size);
        let work_rx = Mutex::new(work_rx);
        let free_rx = Mutex::new(free_rx);
        let cursor = AtomicUsize::new(0);
        let bytes_read = AtomicU64::new(0);
        let reader = Reader {
            shared: &shared,
            blocks,
            index,
            cursor: &cursor,
            free_rx: &free_rx,
            bytes_read: &bytes_read,
        };
        let remote = self.vault.vault().backend().is_remote();
        let (ask_tx, ask_rx) = sync_channel::<NewChunk>(ASK_QUEUE);
        let (seal_tx, seal_rx) = sync_channel::<NewChunk>(SEAL_QUEUE);
        let (put_tx, put_rx) = sync_channel::<SealedChunk>(PUT_QUEUE);
        let (ask_rx, seal_rx, put_rx) = (Mutex::new(ask_rx), Mutex::new(seal_rx), Mutex::new(put_rx));
        std::thread::scope(|scope| {
            if remote {
                let shared = &shared;
                for _ in 0..ASKERS {
                    let (ask_rx, seal_tx) = (&ask_rx, seal_tx.clone());
                    scope.spawn(move || {
                        stage(shared, ask_rx, ASK_BATCH, |batch| ask(shared, batch, &seal_tx))
                    });
                }
                for _ in 0..workers {
                    let (seal_rx, put_tx) = (&seal_rx, put_tx.clone());
                    scope.spawn(move || stage(shared, seal_rx, 1, |batch| seal(shared, batch, &put_tx)));
                }
                for _ in 0..UPLOADERS {
                    scope.spawn(|| stage(shared, &put_rx, PUT_BATCH, |batch| put(shared, batch)));
                }
            }
            drop((seal_tx, put_tx));
            for _ in 0..workers {
                let (shared, work_rx, free_tx) = (&shared, &work_rx, free_tx.clone());
                let upload = remote.then(|| ask_tx.clone());
                scope.spawn(move || worker(shared, work_rx, free_tx, upload));
            }
            drop((free_tx, ask_tx));
            for mut source in sources {
                let (reader, work_tx) = (&reader, work_tx.clone());
                scope.spawn(move || {
                    if let Err(e) = reader.read(source.as_mut(), &work_tx) {
                        reader.shared.fail(e);
                    }
                });
            }
            drop(work_tx);
        });
        if let Some(e) = shared.failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
            return Err(e);
        }
        let bytes_read = bytes_read.into_inner();
        for (block, id) in shared.results.into_inner().unwrap_or_else(PoisonError::into_inner) {
            index.set(block, id)?;
        }
        Ok(TransferStats {
            bytes_read,
            bytes_zero: shared.bytes_zero.into_inner(),
            bytes_new: shared.bytes_new.into_inner(),
            chunks_new: shared.chunks_new.into_inner(),
        })
    }
}

/// One block on its way to a worker: a pooled buffer holding the whole block, or only its
/// patched ranges.
type Work = (usize, Vec<u8>, Option<Patch>);

/// The reading side: threads that each take the next block and read it from their source.
struct Reader<'a> {
    shared: &'a Shared<'a>,
    blocks: &'a [BlockRead],
    index: &'a FixedIndex,
    cursor: &'a AtomicUsize,
    free_rx: &'a Mutex<Receiver<Vec<u8>>>,
    bytes_read: &'a AtomicU64,
}

impl Reader<'_> {
    fn read(&self, source: &mut dyn BlockSource, work_tx: &SyncSender<Work>) -> Result<()> {
        let cs = u64::from(vault::index::CHUNK_SIZE);
        loop {
            if self.shared.transfer.cancel.load(Ordering::SeqCst) {
                return Err(EngineError::Cancelled);
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(()); // another thread failed; its error is reported
            }
            let Some(read) = self.blocks.get(self.cursor.fetch_add(1, Ordering::SeqCst)) else {
                return Ok(());
            };
            let block = read.block;
            let next_buffer = self.free_rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
            let Ok(mut buf) = next_buffer else { return Ok(()) };
            let len = self.index.block_len(block) as usize;
            buf.resize(len, 0);
            let mut read_now = 0u64;
            match &read.patch {
                None => {
                    source.read_at(block as u64 * cs, &mut buf)?;
                    read_now += len as u64;
                }
                Some(patch) => {
                    for r in &patch.ranges {
                        let piece = buf.get_mut(r.clone()).ok_or_else(|| {
                            EngineError::Invalid(format!("changed range {r:?} is outside block {block}"))
                        })?;
                        source.read_at(block as u64 * cs + r.start as u64, piece)?;
                        read_now += r.len() as u64;
                    }
                }
            }
            self.bytes_read.fetch_add(read_now, Ordering::Relaxed);
            self.shared.transfer.progress.advance(len as u64);
            if work_tx.send((block, buf, read.patch.clone())).is_err() {
                return Ok(());
            }
        }
    }
}

/// Faults a test injects into the pipeline, for what a real part cannot produce (a worker
/// that panics). Nothing in vmvault sets them; they cost one atomic load per block.
#[doc(hidden)]
pub mod fault {
    use std::sync::atomic::{AtomicI64, Ordering};

    /// Blocks left before a worker panics; negative: never.
    static PANIC_AFTER: AtomicI64 = AtomicI64::new(-1);

    /// Test-only: the worker that finishes the `blocks`-th next block panics (once).
    pub fn panic_worker_after(blocks: u32) {
        PANIC_AFTER.store(i64::from(blocks.max(1)) - 1, Ordering::SeqCst);
    }

    #[allow(clippy::panic)] // the injected fault itself
    pub(super) fn block_done() {
        if PANIC_AFTER.load(Ordering::Relaxed) >= 0 && PANIC_AFTER.fetch_sub(1, Ordering::SeqCst) == 0 {
            PANIC_AFTER.store(-1, Ordering::SeqCst);
            panic!("injected fault: a transfer worker panicked");
        }
    }
}

/// A chunk the previous point did not have: its id and plaintext, for the remote stages.
type NewChunk = (ChunkId, Vec<u8>);

/// Where a worker's new chunks go: straight into the vault, or to the askers.
type Upload = Option<SyncSender<NewChunk>>;

fn worker(
    shared: &Shared<'_>,
    work_rx: &Mutex<Receiver<Work>>,
    free_tx: SyncSender<Vec<u8>>,
    upload: Upload,
) {
    loop {
        let next = work_rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((block, data, patch)) = next else { return };
        if !shared.stop.load(Ordering::SeqCst) {
            let stored = match &patch {
                None => store_block(shared, &data, &upload),
                Some(patch) => {
                    apply_patch(shared, &data, patch).and_then(|merged| store_block(shared, &merged, &upload))
                }
            };
            match stored {
                Ok(id) => shared.results.lock().unwrap_or_else(PoisonError::into_inner).push((block, id)),
                Err(e) => shared.fail(e),
            }
            fault::block_done();
        }
        let _ = free_tx.send(data);
    }
}

/// Take the next batch: wait for one item, then whatever else is queued, up to `most`.
fn next_batch<T>(rx: &Mutex<Receiver<T>>, most: usize) -> Option<Vec<T>> {
    let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
    let mut batch = vec![rx.recv().ok()?];
    while batch.len() < most {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Run one remote stage's thread: take batches until the queue closes. After a failure
/// anywhere it only drains, so no thread upstream waits on a full queue.
fn stage<T>(
    shared: &Shared<'_>,
    rx: &Mutex<Receiver<T>>,
    most: usize,
    mut work: impl FnMut(Vec<T>) -> Result<()>,
) {
    while let Some(batch) = next_batch(rx, most) {
        if shared.stop.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = work(batch) {
            shared.fail(e);
        }
    }
}

/// One question for the batch; pass on to the sealers only what the vault lacks.
fn ask(shared: &Shared<'_>, batch: Vec<NewChunk>, seal_tx: &SyncSender<NewChunk>) -> Result<()> {
    let transfer = shared.transfer;
    let ids: Vec<ChunkId> = batch.iter().map(|(id, _)| *id).collect();
    let wanted: HashSet<ChunkId> = transfer
        .handle
        .block_on(transfer.vault.chunks_to_upload(transfer.session, &ids))?
        .into_iter()
        .collect();
    for chunk in batch.into_iter().filter(|(id, _)| wanted.contains(id)) {
        if seal_tx.send(chunk).is_err() {
            break; // the sealers stopped on a failure, which is reported
        }
    }
    Ok(())
}

fn seal(shared: &Shared<'_>, batch: Vec<NewChunk>, put_tx: &SyncSender<SealedChunk>) -> Result<()> {
    for (id, data) in batch {
        if put_tx.send(shared.transfer.vault.seal_chunk(id, &data)?).is_err() {
            break;
        }
    }
    Ok(())
}

fn put(shared: &Shared<'_>, batch: Vec<SealedChunk>) -> Result<()> {
    let transfer = shared.transfer;
    let added = transfer.handle.block_on(transfer.vault.put_sealed(batch))?;
    shared.count_new(added.chunks, added.bytes);
    transfer.stored.chunks(&added.ids, added.bytes);
    Ok(())
}

impl Shared<'_> {
    /// Stop the transfer; the first failure is the one reported.
    fn fail(&self, e: EngineError) {
        self.stop.store(true, Ordering::SeqCst);
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
    }

    fn count_new(&self, chunks: u64, bytes: u64) {
        self.chunks_new.fetch_add(chunks, Ordering::Relaxed);
        self.bytes_new.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The block's previous content with the changed ranges of `data` laid over it.
fn apply_patch(shared: &Shared<'_>, data: &[u8], patch: &Patch) -> Result<Vec<u8>> {
    let vault = shared.transfer.vault;
    let mut merged = if patch.base.is_zero() {
        vec![0u8; data.len()]
    } else {
        shared.transfer.handle.block_on(vault.get_chunk(&patch.base))?
    };
    if merged.len() != data.len() {
        return Err(vault::VaultError::corrupt(
            format!("chunk {}", patch.base),
            "its length differs from the block it held in the previous point",
        )
        .into());
    }
    for r in &patch.ranges {
        merged[r.clone()].copy_from_slice(&data[r.clone()]);
    }
    Ok(merged)
}

fn store_block(shared: &Shared<'_>, data: &[u8], upload: &Upload) -> Result<ChunkId> {
    if is_zero(data) {
        shared.bytes_zero.fetch_add(data.len() as u64, Ordering::Relaxed);
        return Ok(ChunkId::ZERO);
    }
    let vault = shared.transfer.vault;
    let id = vault.keys().chunk_id(data);
    if !shared.known.lock().unwrap_or_else(PoisonError::into_inner).insert(id) {
        return Ok(id);
    }
    if shared.transfer.repairs.wants(&id) {
        shared.transfer.repairs.rewrite(vault, &shared.transfer.handle, &id, data);
        return Ok(id);
    }
    if let Some(upload) = upload {
        // A closed queue means the remote stages stopped on a failure, which is reported.
        let _ = upload.send((id, data.to_vec()));
        return Ok(id);
    }
    let added = shared.transfer.handle.block_on(vault.store_chunk_for(shared.transfer.session, &id, data))?;
    if added > 0 {
        shared.count_new(1, added);
        shared.transfer.stored.chunks(&[id], added);
    }
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // a list of one changed range is meant
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn index_with_data_in_block_1() -> FixedIndex {
        let mut index = FixedIndex::zeroed(16 * MIB).expect("index");
        index.set(1, ChunkId::from_bytes([9; 32])).expect("set");
        index
    }

    #[test]
    fn changed_ranges_over_zeros_are_always_patched() {
        let index = index_with_data_in_block_1();
        let reads = patched(&[Extent { offset: 8 * MIB, length: 3 * MIB }], &index);
        assert_eq!(reads.len(), 1);
        let patch = reads[0].patch.as_ref().expect("zeros below: read only the changed range");
        assert_eq!((reads[0].block, patch.base), (2, ChunkId::ZERO));
        assert_eq!(patch.ranges, vec![0..(3 * MIB) as usize]);
    }

    #[test]
    fn a_mostly_changed_block_over_data_is_read_whole_and_a_fully_changed_one_too() {
        let index = index_with_data_in_block_1();
        let half = patched(&[Extent { offset: 4 * MIB, length: 2 * MIB }], &index);
        assert_eq!(half[0].patch, None, "half of a data block changed: read it whole");
        let little = patched(&[Extent { offset: 5 * MIB, length: 64 << 10 }], &index);
        assert_eq!(little[0].patch.as_ref().map(|p| p.base), Some(ChunkId::from_bytes([9; 32])));
        let full = patched(&[Extent { offset: 8 * MIB, length: 4 * MIB }], &index);
        assert_eq!(full[0].patch, None, "nothing of the old block is left: read it whole");
    }

    #[test]
    fn an_extent_across_blocks_is_split_at_the_boundary() {
        let index = index_with_data_in_block_1();
        let reads = patched(&[Extent { offset: 3 * MIB, length: 2 * MIB }], &index);
        let blocks: Vec<usize> = reads.iter().map(|r| r.block).collect();
        assert_eq!(blocks, vec![0, 1]);
        assert_eq!(
            reads[0].patch.as_ref().map(|p| p.ranges.clone()),
            Some(vec![(3 * MIB) as usize..(4 * MIB) as usize])
        );
        assert_eq!(reads[1].patch.as_ref().map(|p| p.ranges.clone()), Some(vec![0..MIB as usize]));
        assert_eq!(blocks_of(&[Extent { offset: 3 * MIB, length: 2 * MIB }], 16 * MIB), vec![0, 1]);
    }

    #[test]
    fn zero_detection_sees_a_single_byte() {
        let mut data = vec![0u8; 4 * MIB as usize + 3];
        assert!(is_zero(&data));
        data[4 * MIB as usize + 2] = 1;
        assert!(!is_zero(&data));
        data[4 * MIB as usize + 2] = 0;
        data[12345] = 0x80;
        assert!(!is_zero(&data));
    }
}
