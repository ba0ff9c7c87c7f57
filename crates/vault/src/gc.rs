//! Garbage collection without locks: condemn, wait, re-check, delete.
//!
//! 1. **Mark and condemn.** The collection claims `gc/state.json` (a lease like a session's),
//!    lists every chunk, then every committed manifest and its indexes; chunks no point
//!    references are *condemned*: written to `gc/<id>/condemned`, and the state says so.
//! 2. **Wait.** Every backup session that started before it could see the condemned list is
//!    waited for (until it ends or its lease runs out). Sessions that saw the list rescue any
//!    condemned chunk they reuse (`gc/<id>/rescued/<chunk>`).
//! 3. **Seal and re-check.** The state moves to *deleting*; from then on new sessions wait
//!    and late rescues count as lost. Manifests are listed again.
//! 4. **Delete** the chunks condemned in step 1, not rescued, and not referenced by any point
//!    committed meanwhile.
//!
//! Why no chunk a backup will reference is deleted, step by step against every other
//! operation, is the concurrency table of docs/ARCHITECTURE.md.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;

use crate::backend::{Backend, Version};
use crate::error::{Result, VaultError};
use crate::id::ChunkId;
use crate::index::FixedIndex;
use crate::layout::{self, ObjectClass};
use crate::lease::{self, GcPhase, GcState, Holder};
use crate::manifest::Manifest;
use crate::session;
use crate::vault::Vault;

/// How a collection behaves.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Lease of the collection's state.
    pub lease: Duration,
    /// How long to wait for older backups before giving up (deleting nothing).
    pub max_wait: Duration,
    /// Only report what would be deleted.
    pub dry_run: bool,
    /// Set to stop: before deleting, nothing is deleted; while deleting, the rest is kept.
    pub cancel: Arc<AtomicBool>,
    /// Collect only these chunks, if unreferenced (what a backup that did not commit had
    /// stored); `None`: every unreferenced chunk.
    pub only: Option<Arc<HashSet<ChunkId>>>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            lease: lease::DEFAULT_LEASE,
            max_wait: Duration::from_secs(3600),
            dry_run: false,
            cancel: Arc::default(),
            only: None,
        }
    }
}

/// What a collection found and did.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct GcReport {
    /// Chunks in the vault when it started.
    pub chunks: u64,
    /// Of those, referenced by a point.
    pub referenced: u64,
    /// Unreferenced when it started.
    pub condemned: u64,
    /// Spared because a backup reused them.
    pub rescued: u64,
    /// Spared because a point committed meanwhile references them.
    pub referenced_meanwhile: u64,
    /// Deleted.
    pub deleted: u64,
    /// Stored bytes deleted.
    pub bytes_freed: u64,
    /// Seconds spent waiting for older backups.
    pub waited_s: f64,
    /// Nothing was deleted (dry run).
    pub dry_run: bool,
    /// Temporary files of writers that died (older than a lease) removed.
    #[serde(default)]
    pub temporaries_removed: u64,
    /// Damaged points met (`vm/point: what is wrong`): their chunks were kept.
    #[serde(default)]
    pub damaged_points: Vec<String>,
}

/// What the committed points reference, and the points found damaged on the way.
#[derive(Debug, Default)]
pub struct References {
    /// Every chunk some point may use.
    pub chunks: HashSet<ChunkId>,
    /// `vm/point: what is wrong`, for each damaged manifest or index met.
    pub damaged: Vec<String>,
}

/// Every chunk a committed point references, read from manifests and indexes without the
/// key (structure only: GC never needs to trust content, only to not miss a reference).
///
/// A damaged point is a reference like any other until it is deleted: when its manifest does
/// not parse, every index beside it counts; when an index fails its checks, every id in it
/// counts. Only an index a manifest names but the vault lacks leaves the references unknown:
/// then nothing is deleted, and the error names the point to remove.
pub async fn referenced_chunks(vault: &Vault) -> Result<References> {
    let backend = vault.backend();
    let objects = backend.list(&layout::points()).await?;
    let mut out = References::default();
    for object in &objects {
        let ObjectClass::Manifest { vm, point } = ObjectClass::of(&object.key) else { continue };
        let bytes = match backend.get(&object.key).await {
            Ok(bytes) => bytes,
            // Pruned between the listing and now: it references nothing any more.
            Err(VaultError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let indexes: Vec<String> = match Manifest::decode_unverified(&bytes, &object.key) {
            Ok(manifest) => manifest.disks.into_iter().map(|d| d.index).collect(),
            Err(e) => {
                out.damaged.push(format!("{vm}/{point}: {e}"));
                objects
                .iter()
                .filter(|o| matches!(ObjectClass::of(&o.key), ObjectClass::Index { vm: v, point: p, .. } if v == vm && p == point))
                .map(|o| o.key.clone())
                .collect()
            }
        };
        for key in indexes {
            match backend.get(&key).await {
                Ok(index) => {
                    if let Err(e) = FixedIndex::decode(&index, &key) {
                        out.damaged.push(format!("{vm}/{point}: {e}"));
                    }
                    out.chunks.extend(FixedIndex::ids_anyway(&index));
                }
                Err(VaultError::NotFound { .. }) if backend.head(&object.key).await?.is_none() => continue,
                Err(e) => {
                    return Err(VaultError::corrupt(
                        format!("recovery point {vm}/{point}"),
                        format!(
                            "garbage collection cannot tell which chunks it uses ({key}: {e}); nothing was \
                             deleted — remove the point with `vmvault points delete {vm} --point {point} \
                             --damaged`, then run gc again"
                        ),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// A collection between condemning and deleting; the steps are separate so tests can
/// interleave backups with them.
pub struct Collection {
    backend: Arc<dyn Backend>,
    vault: Vault,
    state: GcState,
    version: Version,
    options: GcOptions,
    candidates: HashMap<ChunkId, u64>,
    waiting: Vec<session::SessionRecord>,
    report: GcReport,
}

impl Collection {
    /// Step 1: claim the collection, mark, condemn, and note which sessions to wait for.
    pub async fn condemn(vault: Vault, options: GcOptions) -> Result<Collection> {
        let backend = Arc::clone(vault.backend());
        let now = Timestamp::now();
        let mut id = [0u8; 8];
        crate::error::random_bytes(&mut id)?;
        let state = GcState {
            id: format!("{}-{}", now.strftime("%Y%m%dT%H%M%SZ"), hex::encode(id)),
            phase: GcPhase::Marking,
            started: now,
            heartbeat: now,
            lease_s: options.lease.as_secs().max(1),
            holder: Some(Holder::this_process()),
        };
        let expected = match lease::read_gc_state(backend.as_ref()).await? {
            Some((other, _)) if other.is_live(now) => {
                return Err(VaultError::Busy {
                    what: "garbage collection".into(),
                    holder: other.id,
                    since: other.started,
                });
            }
            Some((stale, version)) => {
                remove_leftovers(backend.as_ref(), &stale.id).await?;
                Some(version)
            }
            None => None,
        };
        let version =
            backend.compare_and_swap(&layout::gc_state(), expected.as_ref(), encode(&state)?).await?;
        let mut collection = Collection {
            backend: Arc::clone(&backend),
            vault,
            state,
            version,
            options,
            candidates: HashMap::new(),
            waiting: vec![],
            report: GcReport::default(),
        };
        if let Err(e) = collection.mark().await {
            collection.abandon().await;
            return Err(e);
        }
        Ok(collection)
    }

    async fn mark(&mut self) -> Result<()> {
        // Chunks first, references second: a point committed in between only adds references.
        let chunks: HashMap<ChunkId, u64> = self
            .backend
            .list(&layout::chunks())
            .await?
            .into_iter()
            .filter_map(|o| layout::chunk_id_of(&o.key).map(|id| (id, o.size)))
            .filter(|(id, _)| self.options.only.as_ref().is_none_or(|only| only.contains(id)))
            .collect();
        let References { chunks: referenced, damaged } = referenced_chunks(&self.vault).await?;
        self.report.damaged_points = damaged;
        self.report.chunks = chunks.len() as u64;
        self.report.referenced = chunks.keys().filter(|id| referenced.contains(id)).count() as u64;
        self.candidates = chunks.into_iter().filter(|(id, _)| !referenced.contains(id)).collect();
        self.report.condemned = self.candidates.len() as u64;

        let mut list = Vec::with_capacity(self.candidates.len() * 32);
        for id in self.candidates.keys() {
            list.extend_from_slice(id.as_bytes());
        }
        self.backend.put_if_absent(&layout::gc_condemned(&self.state.id), Bytes::from(list)).await?;
        self.backend.flush().await?;
        self.set_phase(GcPhase::Condemned).await?;

        // Sessions listed now that did not see this collection's list must end first.
        let now = Timestamp::now();
        self.waiting = session::list(self.backend.as_ref())
            .await?
            .into_iter()
            .filter(|s| s.is_live(now) && s.gc_seen.as_deref() != Some(self.state.id.as_str()))
            .collect();
        Ok(())
    }

    /// Chunks condemned in step 1.
    pub fn condemned(&self) -> impl Iterator<Item = &ChunkId> {
        self.candidates.keys()
    }

    /// Jobs of the backups still to wait for.
    pub fn waiting_for(&self) -> Vec<String> {
        self.waiting.iter().map(|s| s.job.clone()).collect()
    }

    /// Step 2, one look: drop sessions that ended or died. True when none is left.
    pub async fn poll_sessions(&mut self) -> Result<bool> {
        let now = Timestamp::now();
        let mut still = Vec::new();
        for old in std::mem::take(&mut self.waiting) {
            if let Some(current) = session::get(self.backend.as_ref(), &old.name).await?
                && current.job == old.job
                && current.is_live(now)
            {
                still.push(current);
            }
        }
        self.waiting = still;
        self.heartbeat().await?;
        Ok(self.waiting.is_empty())
    }

    /// Step 2: wait until every older session ended, at most `max_wait`.
    pub async fn wait_for_sessions(&mut self) -> Result<()> {
        let start = Instant::now();
        while !self.poll_sessions().await? {
            if self.options.cancel.load(Ordering::SeqCst) {
                return Err(VaultError::Cancelled);
            }
            if start.elapsed() >= self.options.max_wait {
                return Err(VaultError::Blocked(format!(
                    "garbage collection waited {} s for backups that started before it ({}); nothing was \
                     deleted — run it again when they have finished",
                    start.elapsed().as_secs(),
                    self.waiting_for().join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.report.waited_s = start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Steps 3 and 4: seal, re-check, delete. Requires step 2 to have finished; otherwise the
    /// collection is abandoned and nothing is deleted.
    pub async fn sweep(mut self) -> Result<GcReport> {
        if !self.waiting.is_empty() {
            self.abandon().await;
            return Err(VaultError::Blocked(format!(
                "garbage collection cannot delete while older backups run ({})",
                self.waiting_for().join(", ")
            )));
        }
        let result = self.seal_and_delete().await;
        self.abandon().await;
        result?;
        // Writes whose writer died long ago leave temporary files behind (a directory store).
        if !self.options.dry_run {
            self.report.temporaries_removed = self.backend.temporaries(self.options.lease, true).await?;
        }
        Ok(self.report.clone())
    }

    async fn seal_and_delete(&mut self) -> Result<()> {
        if self.options.cancel.load(Ordering::SeqCst) {
            return Err(VaultError::Cancelled);
        }
        if self.options.dry_run {
            self.report.dry_run = true;
            self.report.bytes_freed = self.candidates.values().sum();
            self.report.deleted = self.candidates.len() as u64;
            return Ok(());
        }
        self.set_phase(GcPhase::Deleting).await?;
        let rescued: HashSet<ChunkId> = self
            .backend
            .list(&layout::gc_rescues(&self.state.id))
            .await?
            .iter()
            .filter_map(|o| o.key.rsplit('/').next().and_then(|hex| hex.parse().ok()))
            .collect();
        let referenced = referenced_chunks(&self.vault).await?.chunks;
        let mut last_beat = Instant::now();
        let candidates = std::mem::take(&mut self.candidates);
        for (id, size) in &candidates {
            if self.options.cancel.load(Ordering::SeqCst) {
                break;
            }
            if rescued.contains(id) {
                self.report.rescued += 1;
            } else if referenced.contains(id) {
                self.report.referenced_meanwhile += 1;
            } else {
                self.backend.delete(&layout::chunk(id)).await?;
                self.report.deleted += 1;
                self.report.bytes_freed += size;
            }
            if last_beat.elapsed() > self.options.lease / 4 {
                self.heartbeat().await?;
                last_beat = Instant::now();
            }
        }
        self.candidates = candidates;
        self.backend.flush().await
    }

    /// Give up: remove the state and the lists; nothing more is deleted.
    pub async fn abandon(&mut self) {
        let _ = remove_leftovers(self.backend.as_ref(), &self.state.id).await;
        if let Ok(Some((state, _))) = lease::read_gc_state(self.backend.as_ref()).await
            && state.id == self.state.id
        {
            let _ = self.backend.delete(&layout::gc_state()).await;
        }
    }

    async fn set_phase(&mut self, phase: GcPhase) -> Result<()> {
        self.state.phase = phase;
        self.heartbeat().await
    }

    async fn heartbeat(&mut self) -> Result<()> {
        self.state.heartbeat = Timestamp::now();
        self.version = self
            .backend
            .compare_and_swap(&layout::gc_state(), Some(&self.version), encode(&self.state)?)
            .await
            .map_err(|e| match e {
                VaultError::Conflict { .. } => VaultError::Blocked(
                    "garbage collection lost its lease (another collection took over); nothing more was deleted"
                        .into(),
                ),
                other => other,
            })?;
        Ok(())
    }
}

/// Run a whole collection.
pub async fn collect(vault: Vault, options: GcOptions) -> Result<GcReport> {
    let mut collection = Collection::condemn(vault, options).await?;
    if let Err(e) = collection.wait_for_sessions().await {
        collection.abandon().await;
        return Err(e);
    }
    collection.sweep().await
}

/// Remove what a collection left: its condemned list, its rescues, and their folders.
async fn remove_leftovers(backend: &dyn Backend, gc_id: &str) -> Result<()> {
    let run = layout::gc_run(gc_id);
    for object in backend.list(&run).await? {
        backend.delete(&object.key).await?;
    }
    backend.remove_empty_folders(&run).await
}

fn encode(state: &GcState) -> Result<Bytes> {
    serde_json::to_vec_pretty(state)
        .map(Bytes::from)
        .map_err(|e| VaultError::Failed(format!("{}: serialise: {e}", layout::gc_state())))
}
