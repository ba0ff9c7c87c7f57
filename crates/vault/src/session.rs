//! Writer sessions: a running backup announces itself so garbage collection knows whom to wait
//! for, and so two backups of one VM never run at once.
//!
//! A session is a catalog document `sessions/<name>.json` that its holder refreshes every few
//! seconds. It is a lease, not a lock: a holder that dies simply stops refreshing, and after
//! the lease anyone may take the name over — nothing ever needs unlocking by hand.
//!
//! On start a session reads the GC state (see [`crate::gc`]). If a collection has condemned
//! chunks, the session keeps that list and *rescues* any condemned chunk it reuses instead of
//! writing, so the collection spares it; if a collection is deleting, the session waits until
//! it has finished before it reuses anything. Why that is enough is the concurrency table of
//! docs/ARCHITECTURE.md.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::catalog;
use crate::error::{Result, VaultError};
use crate::id::ChunkId;
use crate::layout::{self, ObjectKey};
use crate::lease::{self, GcPhase, Holder, is_fresh};

/// The stored form of a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    /// What the session is for (`backup-<vm>`).
    pub name: String,
    /// The job that holds it.
    pub job: String,
    /// When it started.
    pub started: Timestamp,
    /// Last refresh.
    pub heartbeat: Timestamp,
    /// Seconds after the last refresh at which the session counts as dead.
    pub lease_s: u64,
    /// Id of the collection whose condemned chunks this session knows and rescues.
    #[serde(default)]
    pub gc_seen: Option<String>,
    /// Who holds it.
    #[serde(default)]
    pub holder: Option<Holder>,
}

impl SessionRecord {
    /// Whether its holder still refreshes it (and, on this machine, still runs).
    pub fn is_live(&self, now: Timestamp) -> bool {
        is_fresh(self.heartbeat, self.lease_s, now) && !self.holder.as_ref().is_some_and(Holder::is_gone)
    }
}

/// What a rescue achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rescue {
    /// The chunks will not be deleted.
    Kept,
    /// The collection was already deleting: the chunks may be gone and must be written again.
    Lost,
}

/// A live session. End it with [`Session::end`]. Dropped without that (an error path, a
/// panic), it releases itself in the background; if even that cannot run, its lease runs out.
pub struct Session {
    backend: Arc<dyn Backend>,
    key: ObjectKey,
    job: String,
    condemned: Option<(String, HashSet<ChunkId>)>,
    heartbeat: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl Session {
    /// Start a session named `name` for `job`. Fails with [`VaultError::Busy`] while another
    /// live session holds the name.
    pub async fn begin(backend: Arc<dyn Backend>, name: &str, job: &str, lease: Duration) -> Result<Session> {
        let key = layout::session(name);
        let now = Timestamp::now();
        let mut record = SessionRecord {
            name: name.to_string(),
            job: job.to_string(),
            started: now,
            heartbeat: now,
            lease_s: lease.as_secs().max(1),
            gc_seen: None,
            holder: Some(Holder::this_process()),
        };
        catalog::update(backend.as_ref(), &key, |current: Option<SessionRecord>| match current {
            Some(other) if other.is_live(Timestamp::now()) && other.job != job => {
                Err(VaultError::Busy { what: name.to_string(), holder: other.job, since: other.started })
            }
            _ => Ok(record.clone()),
        })
        .await?;

        // Learn what a collection has condemned; never start while one is deleting.
        let condemned = loop {
            match lease::read_gc_state(backend.as_ref()).await? {
                Some((state, _)) if state.is_live(Timestamp::now()) && state.phase == GcPhase::Deleting => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some((state, _)) if state.is_live(Timestamp::now()) && state.phase == GcPhase::Condemned => {
                    let ids = lease::read_condemned(backend.as_ref(), &state.id).await?;
                    break Some((state.id, ids));
                }
                _ => break None,
            }
        };
        if let Some((gc_id, _)) = &condemned {
            record.gc_seen = Some(gc_id.clone());
            record.heartbeat = Timestamp::now();
            catalog::update(backend.as_ref(), &key, |_: Option<SessionRecord>| {
                Ok::<_, VaultError>(record.clone())
            })
            .await?;
        }

        let heartbeat = tokio::spawn(refresh(Arc::clone(&backend), key.clone(), job.to_string(), lease));
        Ok(Session { backend, key, job: job.to_string(), condemned, heartbeat, ended: false })
    }

    /// Whether a collection has condemned this chunk: reusing it needs a [`Session::rescue`].
    pub fn is_condemned(&self, id: &ChunkId) -> bool {
        self.condemned.as_ref().is_some_and(|(_, ids)| ids.contains(id))
    }

    /// Ask the collection that condemned these chunks to spare them. Returns
    /// [`Rescue::Lost`] (after that collection finished) when it was already deleting.
    pub async fn rescue(&self, ids: &[ChunkId]) -> Result<Rescue> {
        let Some((gc_id, condemned)) = &self.condemned else { return Ok(Rescue::Kept) };
        let wanted: Vec<&ChunkId> = ids.iter().filter(|id| condemned.contains(id)).collect();
        if wanted.is_empty() {
            return Ok(Rescue::Kept);
        }
        for id in &wanted {
            self.backend.put_if_absent(&layout::gc_rescue(gc_id, id), Bytes::new()).await?;
        }
        self.backend.flush().await?;
        // The collection reads rescues after it starts deleting: a rescue written while it
        // was still condemning is certainly seen.
        loop {
            match lease::read_gc_state(self.backend.as_ref()).await? {
                Some((state, _)) if state.id == *gc_id && state.is_live(Timestamp::now()) => {
                    match state.phase {
                        GcPhase::Marking | GcPhase::Condemned => return Ok(Rescue::Kept),
                        GcPhase::Deleting => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                _ => return Ok(Rescue::Lost),
            }
        }
    }

    /// End the session: the name is free again.
    pub async fn end(mut self) -> Result<()> {
        self.ended = true;
        self.heartbeat.abort();
        self.backend.delete(&self.key).await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.ended {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (backend, key, job) = (Arc::clone(&self.backend), self.key.clone(), self.job.clone());
            runtime.spawn(async move { release(backend.as_ref(), &key, &job).await });
        }
    }
}

/// Delete a session's document if it is still this job's (after its lease, another may own it).
async fn release(backend: &dyn Backend, key: &ObjectKey, job: &str) {
    if let Ok(Some(record)) = catalog::read::<SessionRecord>(backend, key).await
        && record.job == job
    {
        let _ = backend.delete(key).await;
    }
}

/// Keep a session alive: refresh its heartbeat four times per lease.
async fn refresh(backend: Arc<dyn Backend>, key: ObjectKey, job: String, lease: Duration) {
    let period = (lease / 4).max(Duration::from_millis(250));
    loop {
        tokio::time::sleep(period).await;
        let result =
            catalog::update(backend.as_ref(), &key, |current: Option<SessionRecord>| match current {
                Some(mut record) if record.job == job => {
                    record.heartbeat = Timestamp::now();
                    Ok(record)
                }
                _ => Err(VaultError::Conflict { key: key.to_string() }),
            })
            .await;
        if result.is_err() {
            return;
        }
    }
}

/// Every session document, live or not.
pub async fn list(backend: &dyn Backend) -> Result<Vec<SessionRecord>> {
    catalog::read_all(backend, &layout::sessions()).await
}

/// A session by name.
pub async fn get(backend: &dyn Backend, name: &str) -> Result<Option<SessionRecord>> {
    catalog::read(backend, &layout::session(name)).await
}
