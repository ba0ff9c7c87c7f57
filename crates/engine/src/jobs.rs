//! Jobs: every backup, restore, prune, GC and verify is recorded in the vault
//! (`jobs/<id>.json`) with its phases, per-disk progress, warnings and outcome, so any
//! process — another shell, the scheduler, later the server — can watch it, wait for it or
//! cancel it.
//!
//! A running job rewrites its record every [`TICK`] (the heartbeat) and at the same time looks
//! for a cancel request (`jobs/<id>.cancel`, written by `vmvault job cancel`). A record whose
//! heartbeat is older than [`STALE_AFTER`] belongs to a process that died: it reads as failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use vault::backend::Backend;
use vault::catalog;
use vault::lease::Holder;

use crate::error::{EngineError, Result};
use crate::names::random_hex;
use crate::progress::Progress;
use vault::layout::{self, ObjectKey};

/// How often a running job looks for a cancel request.
pub const TICK: Duration = Duration::from_millis(250);

/// Every how many ticks a running job rewrites its record (its heartbeat).
const TICKS_PER_WRITE: u32 = 4;

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

fn record_key(id: &str) -> ObjectKey {
    layout::job(id)
}

fn cancel_key(id: &str) -> ObjectKey {
    layout::job_cancel(id)
}

fn check_job_id(id: &str) -> Result<()> {
    crate::names::check_name("job", id)
}

struct Shared {
    backend: Arc<dyn Backend>,
    record: Mutex<JobRecord>,
    current_disk: Mutex<Option<usize>>,
    cancel: Arc<AtomicBool>,
    forward: Arc<dyn Progress>,
}

impl Shared {
    fn edit<T>(&self, f: impl FnOnce(&mut JobRecord) -> T) -> T {
        f(&mut self.record.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn snapshot(&self) -> JobRecord {
        self.edit(|r| r.clone())
    }

    async fn write(&self) -> Result<()> {
        let mut record = self.snapshot();
        record.heartbeat = Timestamp::now();
        let key = record_key(&record.id);
        catalog::update(self.backend.as_ref(), &key, |_: Option<JobRecord>| {
            Ok::<_, EngineError>(record.clone())
        })
        .await?;
        Ok(())
    }

    async fn poll_cancel(&self) -> Result<bool> {
        let id = self.edit(|r| r.id.clone());
        if self.backend.head(&cancel_key(&id)).await?.is_some() {
            self.cancel.store(true, Ordering::SeqCst);
        }
        Ok(self.cancel.load(Ordering::SeqCst))
    }
}

/// A running job. Also a [`Progress`], which records per-disk progress and forwards it.
#[derive(Clone)]
pub struct Job {
    shared: Arc<Shared>,
    ticker: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Job {
    /// Record a new job as in progress and start its heartbeat.
    pub async fn start(
        backend: Arc<dyn Backend>,
        operation: Operation,
        vm: Option<&str>,
        forward: Arc<dyn Progress>,
    ) -> Result<Job> {
        let now = Timestamp::now();
        let id = format!("{}-{}", now.strftime("%Y%m%dT%H%M%SZ"), random_hex(3)?);
        let holder = Holder::this_process();
        let record = JobRecord {
            id,
            operation,
            vm: vm.map(str::to_string),
            status: JobStatus::InProgress,
            phases: vec![],
            disks: vec![],
            started: now,
            ended: None,
            heartbeat: now,
            warnings: vec![],
            error: None,
            point: None,
            host: holder.to_string(),
            holder: Some(holder),
            freeze_to_thaw_ms: None,
        };
        let shared = Arc::new(Shared {
            backend,
            record: Mutex::new(record),
            current_disk: Mutex::new(None),
            cancel: Arc::new(AtomicBool::new(false)),
            forward,
        });
        shared.write().await?;
        let ticking = Arc::clone(&shared);
        let ticker = tokio::spawn(async move {
            for tick in 1u32.. {
                tokio::time::sleep(TICK).await;
                let _ = ticking.poll_cancel().await;
                if tick % TICKS_PER_WRITE == 0 {
                    let _ = ticking.write().await;
                }
            }
        });
        Ok(Job { shared, ticker: Arc::new(Mutex::new(Some(ticker))) })
    }

    /// The job's id.
    pub fn id(&self) -> String {
        self.shared.edit(|r| r.id.clone())
    }

    /// The flag a cancel request sets; pipelines check it between steps.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.cancel)
    }

    /// Look for a cancel request now (not only at the next tick).
    pub async fn cancel_requested(&self) -> Result<bool> {
        self.shared.poll_cancel().await
    }

    /// Add a warning.
    pub fn warn(&self, warning: impl Into<String>) {
        let warning = warning.into();
        self.shared.edit(|r| r.warnings.push(warning));
    }

    /// Record the recovery point the job made or used.
    pub fn set_point(&self, point: &str) {
        self.shared.edit(|r| r.point = Some(point.to_string()));
    }

    /// Record how long a live backup paused the guest.
    pub fn set_freeze_to_thaw_ms(&self, ms: u64) {
        self.shared.edit(|r| r.freeze_to_thaw_ms = Some(ms));
    }

    /// The record as it is now.
    pub fn record(&self) -> JobRecord {
        self.shared.snapshot()
    }

    /// End the job with the outcome of its work, write the final record.
    pub async fn finish<T>(&self, outcome: &Result<T>) -> Result<JobRecord> {
        if let Some(ticker) = self.ticker.lock().unwrap_or_else(PoisonError::into_inner).take() {
            ticker.abort();
        }
        let now = Timestamp::now();
        self.shared.edit(|r| {
            for phase in r.phases.iter_mut().filter(|p| p.ended.is_none()) {
                phase.ended = Some(now);
            }
            r.ended = Some(now);
            r.status = match outcome {
                Ok(_) if r.warnings.is_empty() => JobStatus::Completed,
                Ok(_) => JobStatus::CompletedWithWarnings,
                Err(EngineError::Cancelled | EngineError::Vault(vault::VaultError::Cancelled)) => {
                    JobStatus::Cancelled
                }
                Err(_) => JobStatus::Failed,
            };
            if let Err(e) = outcome {
                r.error = Some(e.to_string());
            }
        });
        self.shared.write().await?;
        let id = self.id();
        self.shared.backend.delete(&cancel_key(&id)).await?;
        Ok(self.record())
    }
}

impl Progress for Job {
    fn phase(&self, name: &str) {
        let now = Timestamp::now();
        self.shared.edit(|r| {
            for phase in r.phases.iter_mut().filter(|p| p.ended.is_none()) {
                phase.ended = Some(now);
            }
            r.phases.push(PhaseRecord { name: name.to_string(), started: now, ended: None });
        });
        // Watchers see a new phase at once, not at the next heartbeat.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = Arc::clone(&self.shared);
            runtime.spawn(async move {
                let _ = shared.write().await;
            });
        }
        self.shared.forward.phase(name);
    }

    fn start(&self, label: &str, total: u64) {
        let index = self.shared.edit(|r| {
            r.disks.push(DiskProgress { label: label.to_string(), total, done: 0 });
            r.disks.len() - 1
        });
        *self.shared.current_disk.lock().unwrap_or_else(PoisonError::into_inner) = Some(index);
        self.shared.forward.start(label, total);
    }

    fn advance(&self, bytes: u64) {
        let current = *self.shared.current_disk.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = current {
            self.shared.edit(|r| {
                if let Some(d) = r.disks.get_mut(i) {
                    d.done = (d.done + bytes).min(d.total);
                }
            });
        }
        self.shared.forward.advance(bytes);
    }

    fn finish(&self) {
        self.shared.forward.finish();
    }

    fn is_cancelled(&self) -> bool {
        self.shared.cancel.load(Ordering::SeqCst)
    }
}

/// Run `work` as a job: recorded as in progress, then with its outcome. `work` gets the job
/// for its cancel flag, progress and warnings.
pub async fn run_job<T, F, Fut>(
    backend: Arc<dyn Backend>,
    operation: Operation,
    vm: Option<&str>,
    forward: Arc<dyn Progress>,
    work: F,
) -> Result<(T, JobRecord)>
where
    F: FnOnce(Job) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let job = Job::start(backend, operation, vm, forward).await?;
    let result = work(job.clone()).await;
    let record = job.finish(&result).await;
    let value = result?;
    Ok((value, record?))
}

/// One job's record, as seen now.
pub async fn get(backend: &dyn Backend, id: &str) -> Result<JobRecord> {
    check_job_id(id)?;
    let record: Option<JobRecord> = catalog::read(backend, &record_key(id)).await?;
    record
        .map(|r| r.as_seen(Timestamp::now()))
        .ok_or_else(|| EngineError::Invalid(format!("no job {id:?}; see `vmvault jobs`")))
}

/// Every job, oldest first, filtered by VM and status.
pub async fn list(
    backend: &dyn Backend,
    vm: Option<&str>,
    status: Option<JobStatus>,
) -> Result<Vec<JobRecord>> {
    let now = Timestamp::now();
    let mut out: Vec<JobRecord> = catalog::read_all::<JobRecord>(backend, &layout::jobs())
        .await?
        .into_iter()
        .map(|record| record.as_seen(now))
        .filter(|r| vm.is_none_or(|v| r.vm.as_deref() == Some(v)) && status.is_none_or(|s| r.status == s))
        .collect();
    out.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Ask a running job to stop; it notices within a tick, in any phase.
pub async fn request_cancel(backend: &dyn Backend, id: &str) -> Result<JobRecord> {
    let record = get(backend, id).await?;
    if record.status.is_final() {
        return Err(EngineError::Invalid(format!(
            "job {id} already ended ({}); there is nothing to cancel",
            record.status.as_str()
        )));
    }
    backend.put_if_absent(&cancel_key(id), Bytes::new()).await?;
    backend.flush().await?;
    Ok(record)
}

/// How long the records of ended jobs are kept.
pub const KEEP_ENDED_JOBS: SignedDuration = SignedDuration::from_hours(24 * 90);

/// Forget jobs that ended more than [`KEEP_ENDED_JOBS`] before `now`; returns how many.
pub async fn forget_old(backend: &dyn Backend, now: Timestamp) -> Result<usize> {
    let mut forgotten = 0;
    for job in list(backend, None, None).await? {
        // A job whose process died has no end: its last heartbeat stands for it.
        let ended = job.ended.unwrap_or(job.heartbeat);
        if job.status.is_final() && now.duration_since(ended) > KEEP_ENDED_JOBS {
            backend.delete(&record_key(&job.id)).await?;
            forgotten += 1;
        }
    }
    Ok(forgotten)
}

/// Wait until a job ends (or its process is found dead), looking every `poll`.
pub async fn wait(backend: &dyn Backend, id: &str, poll: Duration) -> Result<JobRecord> {
    loop {
        let record = get(backend, id).await?;
        if record.status.is_final() {
            return Ok(record);
        }
        tokio::time::sleep(poll).await;
    }
}
