//! Consistency groups: VMs that make up one application and are backed up at one instant.
//!
//! A group is a catalog document (`catalog/groups/<name>.json`). A group backup runs one
//! backup job per member, side by side; their snapshot phases meet at three rendezvous of a
//! [`GroupSnapshot`]: *ready* (pre-scripts run, disks planned), *frozen* (every member's file
//! systems frozen — the group's instant), *taken* (every member's snapshot transaction done).
//! Only then does any member thaw, so the members' snapshot transactions run back to back
//! while every guest is quiesced. A member that fails or is cancelled before *taken* stops
//! them all and no member makes a point; after it, the members' transfers are independent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vault::backend::Backend;
use vault::{PointGroup, UnlockedVault, catalog};

use crate::backup::{BackupOptions, BackupSummary};
use crate::error::{EngineError, Result};
use crate::jobs::JobRecord;
use crate::names::check_name;
use crate::progress::Progress;

const GROUPS_PREFIX: &str = "catalog/groups/";

/// A consistency group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyGroup {
    /// Unique name.
    pub name: String,
    /// Its VMs, in the order given.
    pub members: Vec<String>,
    /// When it was created.
    pub created: Timestamp,
}

fn key(name: &str) -> String {
    format!("{GROUPS_PREFIX}{name}.json")
}

fn no_group(name: &str) -> EngineError {
    EngineError::Invalid(format!("no consistency group {name:?}; see `vmvault group list`"))
}

/// Store a new group of registered VMs (at least two, each once).
pub async fn create(backend: &dyn Backend, name: &str, members: &[String]) -> Result<ConsistencyGroup> {
    check_name("group", name)?;
    for (i, vm) in members.iter().enumerate() {
        crate::registry::get(backend, vm).await?;
        if members[..i].contains(vm) {
            return Err(EngineError::Invalid(format!("VM {vm:?} is named twice; name each member once")));
        }
    }
    if members.len() < 2 {
        return Err(EngineError::Invalid(format!(
            "a consistency group needs at least two VMs; {name:?} was given {}",
            members.len()
        )));
    }
    let group =
        ConsistencyGroup { name: name.to_string(), members: members.to_vec(), created: Timestamp::now() };
    match catalog::create(backend, &key(name), &group).await {
        Err(vault::VaultError::Conflict { .. }) => Err(EngineError::Invalid(format!(
            "consistency group {name:?} exists; delete it first (`vmvault group delete {name}`) or pick another name"
        ))),
        other => other.map(|()| group).map_err(Into::into),
    }
}

/// One group by name.
pub async fn get(backend: &dyn Backend, name: &str) -> Result<ConsistencyGroup> {
    check_name("group", name)?;
    catalog::read(backend, &key(name)).await?.ok_or_else(|| no_group(name))
}

/// Every group, by name.
pub async fn list(backend: &dyn Backend) -> Result<Vec<ConsistencyGroup>> {
    let mut out: Vec<ConsistencyGroup> = catalog::read_all(backend, GROUPS_PREFIX).await?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The groups a VM belongs to.
pub async fn of_vm(backend: &dyn Backend, vm: &str) -> Result<Vec<String>> {
    Ok(list(backend)
        .await?
        .into_iter()
        .filter(|g| g.members.iter().any(|m| m == vm))
        .map(|g| g.name)
        .collect())
}

/// Forget a group; its members and their points stay.
pub async fn delete(backend: &dyn Backend, name: &str) -> Result<()> {
    get(backend, name).await?;
    Ok(backend.delete(&key(name)).await?)
}

/// A rendezvous of a group's snapshot phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Pre-scripts done and disks planned; nothing frozen yet.
    Ready,
    /// Every member's file systems frozen (or freezing skipped): the group's instant.
    Frozen,
    /// Every member's snapshot transaction done; members may thaw.
    Taken,
}

impl Step {
    fn index(self) -> usize {
        self as usize
    }

    /// How long a member waits for the others at this step. Before *ready* the others may be
    /// running pre-scripts (each bounded by its own timeout); after it guests are frozen, so
    /// the wait is short.
    fn timeout(self) -> Duration {
        match self {
            Step::Ready => Duration::from_secs(2 * 3600),
            Step::Frozen | Step::Taken => FROZEN_WAIT,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Step::Ready => "ready",
            Step::Frozen => "frozen",
            Step::Taken => "snapshot taken",
        }
    }
}

/// Longest a frozen member waits for the others to freeze or to take their snapshot.
pub const FROZEN_WAIT: Duration = Duration::from_secs(60);

/// How often a waiting member looks at its cancel flag.
const POLL: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Rendezvous {
    arrived: [Vec<String>; 3],
    broken: Option<String>,
    instant: Option<Timestamp>,
}

/// The shared snapshot phase of one group backup (see the module documentation).
pub struct GroupSnapshot {
    name: String,
    members: Vec<String>,
    state: Mutex<Rendezvous>,
    changed: Condvar,
}

impl std::fmt::Debug for GroupSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSnapshot").field("name", &self.name).field("members", &self.members).finish()
    }
}

impl GroupSnapshot {
    /// A rendezvous for these members.
    pub fn new(group: &ConsistencyGroup) -> Arc<GroupSnapshot> {
        Arc::new(GroupSnapshot {
            name: group.name.clone(),
            members: group.members.clone(),
            state: Mutex::new(Rendezvous::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rendezvous> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn broken(&self, why: &str) -> EngineError {
        EngineError::Invalid(format!("consistency group {}: {why}; no member made a point", self.name))
    }

    /// Arrive at `step` and wait until every member has, the group is stopped, the wait times
    /// out or `cancel` is set (the last two stop the group).
    pub fn wait(&self, vm: &str, step: Step, cancel: &AtomicBool) -> Result<()> {
        let deadline = Instant::now() + step.timeout();
        let mut state = self.lock();
        state.arrived[step.index()].push(vm.to_string());
        if step == Step::Frozen && state.arrived[step.index()].len() == self.members.len() {
            state.instant = Some(Timestamp::now());
        }
        self.changed.notify_all();
        loop {
            if let Some(why) = &state.broken {
                return Err(self.broken(why));
            }
            if state.arrived[step.index()].len() >= self.members.len() {
                return Ok(());
            }
            if cancel.load(Ordering::SeqCst) {
                state.broken = Some(format!("member {vm} was cancelled"));
                self.changed.notify_all();
                return Err(EngineError::Cancelled);
            }
            if Instant::now() >= deadline {
                let late: Vec<&str> = self
                    .members
                    .iter()
                    .filter(|m| !state.arrived[step.index()].contains(m))
                    .map(String::as_str)
                    .collect();
                let why = format!(
                    "{} did not reach the {} step within {} s",
                    late.join(", "),
                    step.as_str(),
                    step.timeout().as_secs()
                );
                state.broken = Some(why.clone());
                self.changed.notify_all();
                return Err(self.broken(&why));
            }
            state = self.changed.wait_timeout(state, POLL).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// A member failed: members still in the snapshot phase stop; those past it go on.
    pub fn fail(&self, vm: &str, why: &str) {
        let mut state = self.lock();
        if state.broken.is_none() {
            state.broken = Some(format!("member {vm} failed: {why}"));
        }
        self.changed.notify_all();
    }

    /// What each member's point records: the group and its instant (once every member froze).
    pub fn point_group(&self) -> Option<PointGroup> {
        self.lock().instant.map(|instant| PointGroup { name: self.name.clone(), instant })
    }
}

/// What a group backup did for one member.
pub struct MemberOutcome {
    /// The member VM.
    pub vm: String,
    /// Its backup and job, or why it failed.
    pub result: Result<(BackupSummary, JobRecord)>,
}

/// Back up every member of a group at one instant: one job per member, run side by side.
pub async fn backup_group(
    vault: Arc<UnlockedVault>,
    name: &str,
    options: BackupOptions,
    progress: impl Fn(&str) -> Arc<dyn Progress>,
) -> Result<Vec<MemberOutcome>> {
    let group = get(vault.vault().backend().as_ref(), name).await?;
    let snapshot = GroupSnapshot::new(&group);
    let mut running = Vec::new();
    for vm in &group.members {
        let options = BackupOptions { group: Some(Arc::clone(&snapshot)), ..options.clone() };
        let (vault, vm, snapshot, progress) =
            (Arc::clone(&vault), vm.clone(), Arc::clone(&snapshot), progress(vm));
        running.push(tokio::spawn(async move {
            let result = crate::backup::backup_job(vault, &vm, options, progress).await;
            if let Err(e) = &result {
                snapshot.fail(&vm, &e.to_string());
            }
            MemberOutcome { vm, result }
        }));
    }
    let mut outcomes = Vec::new();
    for (vm, task) in group.members.iter().zip(running) {
        outcomes.push(task.await.unwrap_or_else(|e| MemberOutcome {
            vm: vm.clone(),
            result: Err(EngineError::Invalid(format!("backup of {vm} stopped: {e}"))),
        }));
    }
    Ok(outcomes)
}
