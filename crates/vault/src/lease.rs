//! Leases: the records that backup sessions ([`crate::session`]) and garbage collection
//! ([`crate::gc`]) share — who holds a lease, when it counts as dead, and the collection's
//! state that sessions read. The protocol between them is argued in docs/ARCHITECTURE.md.

use std::collections::HashSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Version};
use crate::error::{Result, VaultError};
use crate::id::ChunkId;
use crate::layout;

/// How long a session or a collection stays alive without a refresh.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);

/// Which machine and process hold a lease, so that a holder that died on this machine is
/// recognised at once instead of after its lease runs out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `/etc/machine-id` (else the host name).
    pub machine: String,
    /// Host name, for people.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (tells a reused pid apart).
    pub start: u64,
}

impl Holder {
    /// This process.
    pub fn this_process() -> Holder {
        let pid = std::process::id();
        Holder { machine: machine_id(), host: host_name(), pid, start: process_start(pid).unwrap_or(0) }
    }

    /// True when the holder ran on this machine and its process is gone.
    pub fn is_gone(&self) -> bool {
        self.machine == machine_id() && process_start(self.pid) != Some(self.start)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pid {}", self.host, self.pid)
    }
}

fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(host_name)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`; `None` when there is no such process.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn is_fresh(heartbeat: Timestamp, lease_s: u64, now: Timestamp) -> bool {
    let age = now.duration_since(heartbeat);
    age < SignedDuration::from_secs(lease_s.min(i64::MAX as u64) as i64)
}

/// Phases of a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GcPhase {
    /// Listing chunks and references.
    Marking,
    /// Candidates published; waiting for older sessions.
    Condemned,
    /// Deleting; sessions wait.
    Deleting,
}

/// The stored state of a collection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GcState {
    /// Id of the collection.
    pub id: String,
    /// Where it is.
    pub phase: GcPhase,
    /// When it started.
    pub started: Timestamp,
    /// Last refresh.
    pub heartbeat: Timestamp,
    /// Seconds after the last refresh at which it counts as dead.
    pub lease_s: u64,
    /// Who runs it.
    #[serde(default)]
    pub holder: Option<Holder>,
}

impl GcState {
    /// Whether its process still refreshes it (and, on this machine, still runs).
    pub fn is_live(&self, now: Timestamp) -> bool {
        is_fresh(self.heartbeat, self.lease_s, now) && !self.holder.as_ref().is_some_and(Holder::is_gone)
    }
}

pub(crate) async fn read_gc_state(backend: &dyn Backend) -> Result<Option<(GcState, Version)>> {
    match backend.get_versioned(&layout::gc_state()).await? {
        Some((bytes, version)) => {
            let state = serde_json::from_slice(&bytes)
                .map_err(|e| VaultError::corrupt(layout::gc_state(), format!("JSON: {e}")))?;
            Ok(Some((state, version)))
        }
        None => Ok(None),
    }
}

pub(crate) async fn read_condemned(backend: &dyn Backend, gc_id: &str) -> Result<HashSet<ChunkId>> {
    let key = layout::gc_condemned(gc_id);
    let bytes = backend.get(&key).await?;
    bytes
        .chunks(32)
        .map(|b| {
            <[u8; 32]>::try_from(b).map(ChunkId::from_bytes).map_err(|_| VaultError::corrupt(&key, "length"))
        })
        .collect()
}
