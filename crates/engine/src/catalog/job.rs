//! Job records: every backup, restore, prune, GC and verify is recorded in the vault
//! (`jobs/<id>.json`) with its phases, per-disk progress, warnings and outcome, so any
//! process can watch it, wait for it or cancel it. The running side is [`crate::jobs`].

use std::time::Duration;

use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use vault::layout;
use vault::lease::Holder;

use super::Catalog;
use crate::error::{EngineError, Record, Result};

/// A running job that has not written its record for this long is dead.
pub const STALE_AFTER: SignedDuration = SignedDuration::from_secs(60);

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// A backup of a VM.
    Backup,
    /// A restore of disks or a VM.
    Restore,
    /// Files extracted from a recovery point.
    FileRestore,
    /// Retention and purge.
    Prune,
    /// Garbage collection.
    Gc,
    /// Integrity check.
    Verify,
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    /// Running.
    InProgress,
    /// Done.
    Completed,
    /// Done, with things the operator should read.
    CompletedWithWarnings,
    /// Ended with an error.
    Failed,
    /// Stopped on request; nothing was committed.
    Cancelled,
}

impl JobStatus {
    /// The name used in listings and `--status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::InProgress => "in-progress",
            JobStatus::Completed => "completed",
            JobStatus::CompletedWithWarnings => "completed-with-warnings",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parse a `--status` argument.
    pub fn parse(text: &str) -> Result<JobStatus> {
        [
            JobStatus::InProgress,
            JobStatus::Completed,
            JobStatus::CompletedWithWarnings,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| {
            EngineError::Invalid(format!(
                "{text:?} is not a job status (in-progress, completed, completed-with-warnings, failed, cancelled)"
            ))
        })
    }

    /// Whether the job has ended.
    pub fn is_final(&self) -> bool {
        *self != JobStatus::InProgress
    }
}

/// One phase of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// `snapshot`, `transfer`, `commit`…
    pub name: String,
    /// When it began.
    pub started: Timestamp,
    /// When it ended.
    pub ended: Option<Timestamp>,
}

/// Progress of one disk (or one part of a job).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiskProgress {
    /// Disk label or part name.
    pub label: String,
    /// Bytes to do.
    pub total: u64,
    /// Bytes done.
    pub done: u64,
}

/// The stored record of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// Sortable id: start time and random digits.
    pub id: String,
    /// What it does.
    pub operation: Operation,
    /// The VM it concerns, if any.
    pub vm: Option<String>,
    /// Where it stands.
    pub status: JobStatus,
    /// Phases so far; the last without an end is the current one.
    pub phases: Vec<PhaseRecord>,
    /// Per-disk progress.
    pub disks: Vec<DiskProgress>,
    /// When it started.
    pub started: Timestamp,
    /// When it ended.
    pub ended: Option<Timestamp>,
    /// Last time the running process wrote the record.
    pub heartbeat: Timestamp,
    /// Things the operator should know.
    pub warnings: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The recovery point it made or used.
    pub point: Option<String>,
    /// Host and process running it.
    pub host: String,
    /// The process running it, to tell at once that it died on this machine.
    #[serde(default)]
    pub holder: Option<Holder>,
    /// A live backup's pause of the guest, freeze to thaw, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_to_thaw_ms: Option<u64>,
}

impl JobRecord {
    /// The record as it should be read at `now`: a running job whose process stopped writing
    /// it is reported failed.
    pub fn as_seen(mut self, now: Timestamp) -> JobRecord {
        let dead = now.duration_since(self.heartbeat) > STALE_AFTER
            || self.holder.as_ref().is_some_and(Holder::is_gone);
        if self.status == JobStatus::InProgress && dead {
            self.status = JobStatus::Failed;
            self.error = Some(format!(
                "the process running it ({}) stopped responding at {}; nothing was committed after that",
                self.host, self.heartbeat
            ));
        }
        self
    }

    /// The current phase.
    pub fn phase(&self) -> Option<&str> {
        self.phases.last().filter(|p| p.ended.is_none()).map(|p| p.name.as_str())
    }
}

/// One job's record, as seen now.
pub async fn get(catalog: Catalog<'_>, id: &str) -> Result<JobRecord> {
    crate::names::check_name("job", id)?;
    let record: Option<JobRecord> = vault::catalog::read(catalog.backend(), &layout::job(id)).await?;
    record.map(|r| r.as_seen(Timestamp::now())).ok_or_else(|| EngineError::not_found(Record::Job, id))
}

/// Every job, oldest first, filtered by VM and status.
pub async fn list(
    catalog: Catalog<'_>,
    vm: Option<&str>,
    status: Option<JobStatus>,
) -> Result<Vec<JobRecord>> {
    let now = Timestamp::now();
    let mut out: Vec<JobRecord> = vault::catalog::read_all::<JobRecord>(catalog.backend(), &layout::jobs())
        .await?
        .into_iter()
        .map(|record| record.as_seen(now))
        .filter(|r| vm.is_none_or(|v| r.vm.as_deref() == Some(v)) && status.is_none_or(|s| r.status == s))
        .collect();
    out.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Ask a running job to stop; it notices within a tick, in any phase.
pub async fn request_cancel(catalog: Catalog<'_>, id: &str) -> Result<JobRecord> {
    let record = get(catalog, id).await?;
    let backend = catalog.backend();
    if record.status.is_final() {
        return Err(EngineError::Refused {
            message: format!(
                "job {id} already ended ({}); there is nothing to cancel",
                record.status.as_str()
            ),
            hint: None,
        });
    }
    backend.put_if_absent(&layout::job_cancel(id), Bytes::new()).await?;
    backend.flush().await?;
    Ok(record)
}

/// How long the records of ended jobs are kept.
pub const KEEP_ENDED_JOBS: SignedDuration = SignedDuration::from_hours(24 * 90);

/// Forget jobs that ended more than [`KEEP_ENDED_JOBS`] before `now`; returns how many.
pub async fn forget_old(catalog: Catalog<'_>, now: Timestamp) -> Result<usize> {
    let mut forgotten = 0;
    for job in list(catalog, None, None).await? {
        // A job whose process died has no end: its last heartbeat stands for it.
        let ended = job.ended.unwrap_or(job.heartbeat);
        if job.status.is_final() && now.duration_since(ended) > KEEP_ENDED_JOBS {
            catalog.backend().delete(&layout::job(&job.id)).await?;
            forgotten += 1;
        }
    }
    Ok(forgotten)
}

/// Wait until a job ends (or its process is found dead), looking every `poll`.
pub async fn wait(catalog: Catalog<'_>, id: &str, poll: Duration) -> Result<JobRecord> {
    loop {
        let record = get(catalog, id).await?;
        if record.status.is_final() {
            return Ok(record);
        }
        tokio::time::sleep(poll).await;
    }
}
