//! The scheduler behind `vmvault serve`: runs each protected item's backups when its policy
//! says, and a daily cleanup (retention, purge, GC).
//!
//! A run is *claimed* before it starts by moving the item's `last_slot` forward in
//! `catalog/schedule/<vm>.json` with compare-and-swap, so a restart (or a second scheduler on
//! the same vault) never makes a run twice. At start, a run that was due while the scheduler was
//! down is made once, if its day (or hourly window) is still open; older ones are not made
//! up. The clock is a parameter, so tests run weeks of schedule in milliseconds.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use vault::backend::Backend;
use vault::catalog;

use crate::catalog::Catalog;
use crate::catalog::item::{ProtectedItem, ProtectionState};
use crate::catalog::policy::Policy;
use crate::error::{EngineError, Result};
use crate::points::PointReader;
use crate::schedule::{Schedule, Slot};
use vault::layout::{self, ObjectKey};

const CLEANUP_NAME: &str = "cleanup";

/// Where the scheduler gets the time and how it waits.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
    /// Return at `until` (or soon after).
    fn sleep_until(&self, until: Timestamp) -> impl Future<Output = ()> + Send;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep_until(&self, until: Timestamp) {
        let wait = until.duration_since(Timestamp::now());
        if let Ok(wait) = Duration::try_from(wait) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What the scheduler does when something is due.
pub trait Runner: Send + Sync {
    /// Back up `vm` for the run due at `slot`.
    fn backup(&self, vm: &str, slot: Timestamp) -> impl Future<Output = Result<()>> + Send;
    /// Apply retention, purge soft-deleted data, collect garbage.
    fn cleanup(&self, slot: Timestamp) -> impl Future<Output = Result<()>> + Send;
}

/// How the scheduler behaves.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// When the daily cleanup runs (UTC).
    pub cleanup_at: Time,
    /// Longest sleep between looks at the catalog (so new items and policies are seen).
    pub rescan: SignedDuration,
    /// Stop once the clock reaches this (tests); `None` runs forever.
    pub until: Option<Timestamp>,
    /// Run the protected items' backups (a vault server, which has no key, does not).
    pub backups: bool,
    /// Run the daily cleanup (hosts using a vault server leave it to the server).
    pub cleanup: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            cleanup_at: Time::constant(3, 0, 0, 0),
            rescan: SignedDuration::from_secs(60),
            until: None,
            backups: true,
            cleanup: true,
        }
    }
}

/// The stored progress of one schedule (`catalog/schedule/<name>.json`); public so the
/// server can check one a client writes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The latest run claimed.
    last_slot: Option<Timestamp>,
}

fn state_key(name: &str) -> ObjectKey {
    if name == CLEANUP_NAME { layout::cleanup_claim() } else { layout::schedule_claim(name) }
}

/// Claim the run at `slot` unless a run at or after it was claimed already.
async fn claim(backend: &dyn Backend, name: &str, slot: Timestamp) -> Result<bool> {
    let mut claimed = false;
    catalog::update(backend, &state_key(name), |current: Option<ScheduleState>| {
        let mut state = current.unwrap_or_default();
        claimed = state.last_slot.is_none_or(|last| last < slot);
        if claimed {
            state.last_slot = Some(slot);
        }
        Ok::<_, EngineError>(state)
    })
    .await?;
    Ok(claimed)
}

async fn last_slot(backend: &dyn Backend, name: &str) -> Result<Option<Timestamp>> {
    Ok(catalog::read::<ScheduleState>(backend, &state_key(name)).await?.and_then(|s| s.last_slot))
}

/// One schedule the scheduler follows.
struct Due {
    name: String,
    schedule: Schedule,
    tz: TimeZone,
    /// Runs before this are never made (protection started or changed then).
    since: Timestamp,
    cleanup: bool,
}

async fn schedules(catalog: Catalog<'_>, options: &SchedulerOptions) -> Result<Vec<Due>> {
    let mut out = Vec::new();
    if options.cleanup {
        out.push(Due {
            name: CLEANUP_NAME.into(),
            schedule: Schedule::Daily { at: options.cleanup_at },
            tz: TimeZone::UTC,
            since: Timestamp::MIN,
            cleanup: true,
        });
    }
    if !options.backups {
        return Ok(out);
    }
    for item in catalog.list::<ProtectedItem>().await? {
        let Some(name) = item.policy.as_deref().filter(|_| item.state == ProtectionState::Protected) else {
            continue;
        };
        let Ok(policy) = catalog.get::<Policy>(name).await else { continue };
        let Ok(tz) = policy.tz() else { continue };
        out.push(Due {
            name: item.vm.clone(),
            schedule: policy.schedule,
            tz,
            since: item.since,
            cleanup: false,
        });
    }
    Ok(out)
}

/// Run the scheduler until `options.until` (forever when `None`).
pub async fn run<C: Clock, R: Runner>(
    vault: &vault::Vault,
    clock: &C,
    runner: &R,
    options: &SchedulerOptions,
) -> Result<()> {
    loop {
        let now = clock.now();
        if options.until.is_some_and(|until| now >= until) {
            return Ok(());
        }
        let backend = vault.backend();
        let all = schedules(Catalog::of(vault), options).await?;
        for due in &all {
            let done = last_slot(backend.as_ref(), &due.name).await?.unwrap_or(Timestamp::MIN).max(due.since);
            // Due now, or missed while down and its day or window still open.
            let Some(Slot { at, .. }) = due.schedule.missed(&due.tz, done, now) else { continue };
            if !claim(backend.as_ref(), &due.name, at).await? {
                continue;
            }
            // A failed run is recorded in its job; the schedule goes on.
            let _ = if due.cleanup { runner.cleanup(at).await } else { runner.backup(&due.name, at).await };
        }
        let now = clock.now();
        let mut wake = now.checked_add(options.rescan).unwrap_or(Timestamp::MAX);
        for due in &all {
            if let Some(next) = due.schedule.next_after(&due.tz, now) {
                wake = wake.min(next.at);
            }
        }
        if let Some(until) = options.until {
            wake = wake.min(until);
        }
        clock.sleep_until(wake).await;
    }
}

/// The runner `vmvault serve` uses: scheduled backups and cleanups as jobs in the vault.
pub struct VaultRunner {
    /// The unlocked vault (a scheduler needs the key to back up).
    pub vault: Arc<vault::UnlockedVault>,
    /// Options of the daily GC.
    pub gc: vault::gc::GcOptions,
}

impl Runner for VaultRunner {
    async fn backup(&self, vm: &str, _slot: Timestamp) -> Result<()> {
        let options =
            crate::backup::BackupOptions { kind: vault::PointKind::Scheduled, ..Default::default() };
        crate::backup::backup_job(Arc::clone(&self.vault), vm, options, Arc::new(crate::NoProgress)).await?;
        Ok(())
    }

    async fn cleanup(&self, _slot: Timestamp) -> Result<()> {
        cleanup(self.vault.as_ref().into(), self.gc.clone()).await
    }
}

/// The daily cleanup: retention and purge as one job, then garbage collection as another.
/// A client passes its unlocked vault; a server, the vault alone (see [`PointReader`]).
pub async fn cleanup(reader: PointReader<'_>, gc: vault::gc::GcOptions) -> Result<()> {
    crate::prune::prune_job(reader, None, Timestamp::now(), false).await?;
    crate::prune::gc_job(vault::Vault::open(Arc::clone(reader.vault().backend())).await?, gc).await?;
    Ok(())
}

/// The scheduler inside a vault server: it has no key, so it runs only the daily cleanup;
/// backups are scheduled by `vmvault serve` on the hosts that hold the key.
pub struct CleanupRunner {
    /// The served vault.
    pub vault: Arc<vault::Vault>,
    /// How GC behaves.
    pub gc: vault::gc::GcOptions,
}

impl Runner for CleanupRunner {
    async fn backup(&self, vm: &str, _slot: Timestamp) -> Result<()> {
        Err(EngineError::Invalid(format!(
            "backups of {vm} are scheduled by `vmvault serve` on the host that holds the key, not by the server"
        )))
    }

    async fn cleanup(&self, _slot: Timestamp) -> Result<()> {
        cleanup(self.vault.as_ref().into(), self.gc.clone()).await
    }
}
