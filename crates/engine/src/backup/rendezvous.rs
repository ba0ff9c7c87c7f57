//! The rendezvous of a consistency group's backup. Its members' snapshot phases meet at three
//! steps: *ready* (pre-scripts run, disks planned), *frozen* (every member's file systems
//! frozen — the group's instant), *taken* (every member's snapshot transaction done). Only
//! then does any member thaw, so the members' snapshot transactions run back to back while
//! every guest is quiesced. A member that fails or is cancelled before *taken* stops them all
//! and no member makes a point; after it, the members' transfers are independent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use vault::PointGroup;

use crate::catalog::group::ConsistencyGroup;
use crate::error::{EngineError, Result};

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
struct Arrivals {
    arrived: [Vec<String>; 3],
    broken: Option<String>,
    instant: Option<Timestamp>,
}

/// Where the members of one group backup meet during their snapshot phases (see the module
/// documentation).
pub struct GroupRendezvous {
    name: String,
    members: Vec<String>,
    state: Mutex<Arrivals>,
    changed: Condvar,
}

impl std::fmt::Debug for GroupRendezvous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRendezvous").field("name", &self.name).field("members", &self.members).finish()
    }
}

impl GroupRendezvous {
    /// A rendezvous for these members.
    pub fn new(group: &ConsistencyGroup) -> Arc<GroupRendezvous> {
        Arc::new(GroupRendezvous {
            name: group.name.clone(),
            members: group.members.clone(),
            state: Mutex::new(Arrivals::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arrivals> {
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
