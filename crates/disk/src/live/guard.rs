//! The watch kept on a running VM while its snapshot lives. Fleecing copies the old content
//! of every block the guest overwrites into the scratch overlay; when that write fails (the
//! scratch is full), the guest's own write fails with it and QEMU pauses the VM (`io-error`).
//! The guard notices within a fraction of a second, stops the snapshot inside QEMU (exports
//! dropped, fleecing jobs cancelled, so the guest's writes go to its disk again), resumes the
//! VM, and says so: the backup then fails and commits nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{DiskError, Result};
use crate::qmp::QmpClient;
use crate::watch::Watch;

/// How often the VM's run state is asked for.
const POLL: Duration = Duration::from_millis(200);

/// How long the cancelled fleecing jobs may take to let go of the guest's disks.
const JOBS_GONE: Duration = Duration::from_secs(10);

/// What the guard stops when it trips.
pub(super) struct Stops {
    /// NBD export ids.
    pub(super) exports: Vec<String>,
    /// Fleecing block-job ids.
    pub(super) jobs: Vec<String>,
    /// Where the overlays are, for the message.
    pub(super) scratch: String,
}

/// Watch the VM behind `qmp`, whose run state was `initial` before the snapshot; the watch
/// trips (having stopped the snapshot and resumed the VM) when the VM came to harm.
pub(super) fn guard(qmp: Arc<Mutex<QmpClient>>, initial: String, stops: Stops, timeout: Duration) -> Watch {
    Watch::spawn(POLL, move || {
        let mut qmp = qmp.lock().ok()?;
        let why = harm(&mut qmp, &initial, timeout)?;
        Some(stop_and_resume(&mut qmp, &why, &stops, timeout))
    })
}

/// The VM's run state as QEMU reports it (`running`, `paused`, `io-error`, `inmigrate`…).
pub fn run_state(qmp: &mut QmpClient, timeout: Duration) -> Result<String> {
    let status = qmp.execute("query-status", json!({}), timeout)?;
    status["status"].as_str().map(str::to_string).ok_or_else(|| DiskError::Qmp {
        socket: qmp.socket().to_path_buf(),
        message: "query-status answered without a status".into(),
    })
}

fn state_of(qmp: &mut QmpClient, timeout: Duration) -> Option<String> {
    run_state(qmp, timeout).ok()
}

/// Whether the VM came to harm since the snapshot: paused on an I/O error, or a guest write
/// that failed (reported to the guest). A VM that QEMU no longer answers for is left to the
/// read, which fails on its own.
fn harm(qmp: &mut QmpClient, initial: &str, timeout: Duration) -> Option<String> {
    let state = state_of(qmp, timeout)?;
    let failed_write = qmp.take_events().into_iter().find(|e| e.name == "BLOCK_IO_ERROR");
    if state == "io-error" && initial != "io-error" {
        return Some("the VM paused on an I/O error".into());
    }
    failed_write.map(|e| {
        let device = e.data["device"].as_str().filter(|d| !d.is_empty()).or(e.data["node-name"].as_str());
        format!(
            "a guest write to {} failed ({})",
            device.unwrap_or("a disk"),
            e.data["reason"].as_str().unwrap_or("I/O error")
        )
    })
}

/// Drop the snapshot inside QEMU and resume the VM; the message says what happened.
fn stop_and_resume(qmp: &mut QmpClient, why: &str, stops: &Stops, timeout: Duration) -> String {
    for export in &stops.exports {
        let _ = qmp.execute("block-export-del", json!({ "id": export, "mode": "hard" }), timeout);
    }
    for job in &stops.jobs {
        let _ = qmp.execute("block-job-cancel", json!({ "device": job, "force": true }), timeout);
    }
    // The guest's failed write is retried on resume: only once fleecing is gone does it reach
    // the disk instead of the full scratch.
    let deadline = Instant::now() + JOBS_GONE;
    while Instant::now() < deadline {
        let jobs = qmp.execute("query-block-jobs", json!({}), timeout).unwrap_or_default();
        let ours = jobs
            .as_array()
            .into_iter()
            .flatten()
            .any(|j| j["device"].as_str().is_some_and(|d| stops.jobs.iter().any(|o| o == d)));
        if !ours {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = state_of(qmp, timeout).unwrap_or_else(|| "unknown".into());
    let resumed = match state.as_str() {
        "running" => "it is running".to_string(),
        _ => match qmp.execute("cont", json!({}), timeout) {
            Ok(_) if state_of(qmp, timeout).as_deref() == Some("running") => "it was resumed".into(),
            Ok(_) | Err(_) => format!(
                "it could not be resumed (state {}): resume it by hand (QMP `cont`, `virsh resume`)",
                state_of(qmp, timeout).unwrap_or_else(|| "unknown".into())
            ),
        },
    };
    format!(
        "{why} while the backup ran (most likely the fleecing scratch {} is full); the snapshot was \
         stopped inside QEMU and {resumed}. Nothing was committed; give the backup a scratch \
         directory with room for the guest's writes (--scratch, $VMVAULT_SCRATCH)",
        stops.scratch
    )
}
