//! Running a job: every backup, restore, prune, GC and verify runs inside [`run_job`], which
//! keeps its record ([`crate::catalog::job`]) in the vault so any process can watch it, wait
//! for it or cancel it.
//!
//! A running job rewrites its record every [`TICK`] (the heartbeat) and at the same time looks
//! for a cancel request (`jobs/<id>.cancel`, written by `vmvault job cancel`). A record whose
//! heartbeat is older than [`STALE_AFTER`] belongs to a process that died: it reads as failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use vault::backend::Backend;
use vault::catalog;
use vault::lease::Holder;

use crate::error::{EngineError, ErrorKind, Result};
use crate::names::random_hex;
use crate::progress::Progress;
use vault::layout::{self, ObjectKey};

pub use crate::catalog::job::{DiskProgress, JobRecord, JobStatus, Operation, PhaseRecord, STALE_AFTER};

/// How often a running job looks for a cancel request.
pub const TICK: Duration = Duration::from_millis(250);

/// Every how many ticks a running job rewrites its record (its heartbeat).
const TICKS_PER_WRITE: u32 = 4;

fn record_key(id: &str) -> ObjectKey {
    layout::job(id)
}

fn cancel_key(id: &str) -> ObjectKey {
    layout::job_cancel(id)
}

struct Shared {
    backend: Arc<dyn Backend>,
    /// Held while a write is made, so writes leave this process in order.
    writing: tokio::sync::Mutex<()>,
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

    /// Store the record as it is now. Writes are made one at a time, each reads the stored
    /// record first (compare-and-swap), and a record that reached its final state is never
    /// replaced by an earlier one: a progress or heartbeat write that lands after `finish`
    /// — a detached write, a request still in flight — cannot make a job read as running or
    /// failed again.
    async fn write(&self) -> Result<()> {
        let _one_at_a_time = self.writing.lock().await;
        let mut record = self.snapshot();
        record.heartbeat = Timestamp::now();
        let key = record_key(&record.id);
        catalog::update(self.backend.as_ref(), &key, |stored: Option<JobRecord>| {
            Ok::<_, EngineError>(match stored {
                Some(stored) if stored.status.is_final() && !record.status.is_final() => stored,
                _ => record.clone(),
            })
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
            writing: tokio::sync::Mutex::new(()),
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
                Err(e) if e.kind() == ErrorKind::Cancelled => JobStatus::Cancelled,
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
