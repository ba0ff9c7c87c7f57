//! The snapshot phase of a running VM: its pre-script, a freeze through the guest agent, one
//! QMP transaction that takes every disk's view at one instant (meeting the other members of a
//! consistency group at each step), the thaw at once, the post-script — and the consistency
//! level all that earned.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use disk::DiskFormat;
use disk::live::LiveSnapshot;
use disk::qmp::{GuestAgent, QmpClient};
use disk::scratch::WorkDir;
use vault::Consistency;

use super::pending::{Pending, Running};
use super::plan::{Bases, BitmapState, HeldDisk, Plan, Source, Tracker, plan_disk};
use super::read::{socket_dir, work_name};
use super::rendezvous::Step;
use crate::catalog::checkpoint::{Checkpoints, ImageIdentity, bitmap_name};
use crate::catalog::vm::DiskRecord;
use crate::error::{EngineError, Result};
use crate::progress::human_bytes;
use crate::scripts::ScriptConfig;

/// How long one QMP command may take.
pub(super) const QMP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the guest agent may take to freeze or thaw.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Thaws what a freeze froze; an error says why it could not.
pub(super) type Thaw = Box<dyn FnOnce() -> std::result::Result<(), String> + Send>;

/// What became of the guest's file systems around the snapshot instant.
pub(super) enum Freeze {
    /// Frozen (through the agent, ours or libvirt's), thawed by this.
    Held(Thaw),
    /// Not attempted: switched off (`fsFreezeEnabled: false`), or no agent answers. Scripts
    /// alone may still make the point application-consistent.
    Skipped(Option<String>),
    /// The agent answered but could not freeze: the guest's state is unknown.
    Failed(String),
}

/// Freeze the guest's filesystems through its agent.
fn freeze(qga: Option<&Path>) -> Freeze {
    let Some(socket) = qga else {
        return Freeze::Skipped(Some(
            "the VM has no guest agent socket (`vm add --qga`): file systems were not frozen".into(),
        ));
    };
    let mut agent = match GuestAgent::connect(socket, Duration::from_secs(2)) {
        Ok(agent) => agent,
        Err(e) => {
            return Freeze::Skipped(Some(format!("guest agent absent ({e}): file systems were not frozen")));
        }
    };
    match agent.execute("guest-fsfreeze-freeze", serde_json::json!({}), AGENT_TIMEOUT) {
        Ok(_) => Freeze::Held(Box::new(move || {
            agent
                .execute("guest-fsfreeze-thaw", serde_json::json!({}), AGENT_TIMEOUT)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })),
        Err(e) => {
            // A partial freeze must never stay: thaw whatever froze.
            let _ = agent.execute("guest-fsfreeze-thaw", serde_json::json!({}), AGENT_TIMEOUT);
            Freeze::Failed(format!(
                "file-system freeze failed ({e}); the point is not application-consistent"
            ))
        }
    }
}

/// How the freeze went, for [`judge`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frozen {
    Held,
    Skipped,
    Failed,
}

/// Thaw at once after the snapshot instant; returns how the freeze went, and notes.
fn thaw(freeze: Freeze) -> (Frozen, Vec<String>) {
    match freeze {
        Freeze::Held(thaw) => match thaw() {
            Ok(()) => (Frozen::Held, vec![]),
            Err(e) => (Frozen::Held, vec![format!("thawing the guest's file systems failed: {e}")]),
        },
        Freeze::Skipped(note) => (Frozen::Skipped, note.into_iter().collect()),
        Freeze::Failed(note) => (Frozen::Failed, vec![note]),
    }
}

type ScriptRun = Option<std::result::Result<(), String>>;

/// The consistency a live point reached: application when the scripts ran and succeeded and
/// no freeze failed (a skipped one leaves quiescing to the scripts); file-system when only the
/// freeze held; crash otherwise. Failed scripts are noted.
fn judge(frozen: Frozen, pre: ScriptRun, post: ScriptRun, notes: &mut Vec<String>) -> Consistency {
    let scripts_ran = pre.is_some() || post.is_some();
    let mut scripts_ok = scripts_ran;
    for run in [pre, post].into_iter().flatten() {
        if let Err(why) = run {
            notes.push(format!("{why}; continuing (continueBackupOnFailure)"));
            scripts_ok = false;
        }
    }
    match (scripts_ok, frozen) {
        (true, Frozen::Held | Frozen::Skipped) => Consistency::Application,
        (_, Frozen::Held) => Consistency::FileSystem,
        _ => Consistency::Crash,
    }
}

/// How a live snapshot phase quiesced the guest.
pub(super) struct Quiesced {
    pub(super) consistency: Consistency,
    pub(super) notes: Vec<String>,
    pub(super) freeze_to_thaw: Option<Duration>,
}

impl Default for Quiesced {
    fn default() -> Self {
        Quiesced { consistency: Consistency::Crash, notes: vec![], freeze_to_thaw: None }
    }
}

/// A running VM's snapshot, taken and thawed.
pub(super) struct LiveTaken {
    pub(super) pending: Pending,
    pub(super) quiesced: Quiesced,
}

/// Snapshot phase of a running VM: pre-script, then (once the group, if any, is ready) freeze,
/// one QMP transaction for every disk (see `disk::live`), thaw at once — also on error —, then
/// the post-script. `meet` waits for the other members of a group at each step.
pub(super) fn live_phase<P: Planned>(
    planned: Result<P>,
    point_id: &str,
    scripts: Option<&ScriptConfig>,
    meet: impl Fn(Step) -> Result<()>,
) -> Result<LiveTaken> {
    // Pre-script first: an application flushes before the file systems freeze.
    let pre = match scripts {
        Some(config) => config.run_pre()?,
        None => None,
    };
    let freeze_enabled = scripts.is_none_or(|c| c.fs_freeze_enabled);
    let (taken, frozen, mut notes, window) = match planned.and_then(|plan| meet(Step::Ready).map(|()| plan)) {
        Err(e) => (Err(e), Frozen::Skipped, vec![], None),
        Ok(plan) => {
            let before = Instant::now();
            let agent = match plan.not_running() {
                Some(state) => Freeze::Skipped(Some(format!(
                    "the VM is not running ({state}): its guest agent cannot answer, so file systems \
                     were not frozen"
                ))),
                None if freeze_enabled => plan.freeze(),
                None => Freeze::Skipped(None),
            };
            // The guest pauses from a freeze that held; else only for the transaction.
            let started = if matches!(agent, Freeze::Held(_)) { before } else { Instant::now() };
            // A pending point dropped on an error finishes the live snapshot unsuccessfully.
            let taken = meet(Step::Frozen)
                .and_then(|()| plan.take(point_id))
                .and_then(|pending| meet(Step::Taken).map(|()| pending));
            let (frozen, notes) = thaw(agent);
            (taken, frozen, notes, Some(started.elapsed()))
        }
    };
    // The post-script runs whenever the pre-script did, so the application resumes.
    let post = match scripts {
        Some(config) => config.run_post(),
        None => Ok(None),
    };
    let pending = taken?;
    let post = post?;
    let consistency = judge(frozen, pre, post, &mut notes);
    Ok(LiveTaken { pending, quiesced: Quiesced { consistency, notes, freeze_to_thaw: window } })
}

/// A running VM's disks planned, nothing changed yet: what the snapshot phase needs of it,
/// whether QEMU runs it directly ([`LivePlan`]) or libvirt does.
pub(super) trait Planned {
    /// What the VM is doing instead of running (a paused VM's agent cannot answer).
    fn not_running(&self) -> Option<String>;
    /// Freeze the guest's file systems.
    fn freeze(&self) -> Freeze;
    /// The snapshot instant: a view of every disk at once, held until the point commits.
    fn take(self, point_id: &str) -> Result<Pending>;
}

/// A running VM's disks planned from QEMU's own bitmaps; nothing in QEMU changed yet.
pub(super) struct LivePlan {
    qmp: QmpClient,
    held: Vec<HeldDisk>,
    /// Per disk: its image, the bitmap to export, whether the snapshot tracks it.
    exports: Vec<(PathBuf, Option<String>, bool)>,
    /// Where the fleecing overlays go.
    scratch: PathBuf,
    /// QEMU's run state when planned (`running`, `paused`, `io-error`…).
    state: String,
    /// The guest agent's socket.
    qga: Option<PathBuf>,
}

/// Plan a running VM's disks from QEMU's own bitmaps.
pub(super) fn plan_live(
    mut qmp: QmpClient,
    selected: Vec<DiskRecord>,
    checkpoints: &Checkpoints,
    mut bases: Bases,
    scratch: &Path,
    qga: Option<&Path>,
) -> Result<LivePlan> {
    let state = disk::live::run_state(&mut qmp, QMP_TIMEOUT)?;
    let mut held = Vec::new();
    let mut exports = Vec::new();
    for record in selected {
        let info = disk::probe(&record.path)?;
        let (_, bitmaps) = disk::live::find_node(&mut qmp, &record.path, QMP_TIMEOUT)?;
        // Only qcow2 stores a persistent bitmap: any other disk (raw file, LV, block device) is
        // read in full each time, deduplicated against its previous point.
        if info.format != DiskFormat::Qcow2 {
            let base = bases.take_previous(&record.label, info.size);
            let note = "full read: a raw disk holds no change-tracking bitmap (read in full, deduplicated)";
            exports.push((record.path.clone(), None, false));
            held.push(HeldDisk {
                size: info.size,
                plan: Plan::Full { base, note: Some(note.to_string()) },
                source: Source::Image,
                new_bitmap: None,
                // No identity: no checkpoint is recorded for it.
                identity: None,
                lock: None,
                record,
            });
            continue;
        }
        let states: Vec<BitmapState> = bitmaps
            .into_iter()
            .map(|b| BitmapState {
                consistent: b.recording && !b.inconsistent,
                state: format!("recording: {}, inconsistent: {}", b.recording, b.inconsistent),
                name: b.name,
            })
            .collect();
        let checkpoint = checkpoints.disks.get(&record.label);
        let plan = plan_disk(
            &record.path,
            info.size,
            &record.label,
            checkpoint,
            &mut bases,
            Tracker::Bitmap,
            || Ok(states),
        )?;
        exports.push((record.path.clone(), plan.bitmap().map(String::from), true));
        held.push(HeldDisk {
            size: info.size,
            plan,
            // Set once the snapshot exists.
            source: Source::Image,
            new_bitmap: None,
            identity: ImageIdentity::of(&record.path).ok(),
            lock: None,
            record,
        });
    }
    Ok(LivePlan {
        qmp,
        held,
        exports,
        scratch: scratch.to_path_buf(),
        state,
        qga: qga.map(Path::to_path_buf),
    })
}

impl Planned for LivePlan {
    fn not_running(&self) -> Option<String> {
        (self.state != "running").then(|| format!("QEMU reports {:?}", self.state))
    }

    fn freeze(&self) -> Freeze {
        freeze(self.qga.as_deref())
    }

    /// One transaction freezes a view of every disk. Until the point commits, the live
    /// snapshot owns the new bitmap (`finish` merges or keeps it).
    fn take(self, point_id: &str) -> Result<Pending> {
        let LivePlan { qmp, mut held, exports, scratch, .. } = self;
        let scratch = WorkDir::create(&scratch, &work_name(point_id))?;
        check_room(&scratch, held.iter().map(|d| d.size).sum())?;
        let sockets = socket_dir(point_id)?;
        let live = LiveSnapshot::start(qmp, &exports, &bitmap_name(point_id), scratch, sockets, QMP_TIMEOUT)?;
        for (disk, live_disk) in held.iter_mut().zip(live.disks()) {
            disk.source = Source::Live {
                socket: live.socket().to_path_buf(),
                export: live_disk.export.clone(),
                bitmap: live_disk.previous_bitmap.clone(),
            };
        }
        Ok(Pending::new(point_id, held, Some(Running::Qemu(live))))
    }
}

/// The fleecing overlays grow by every block the guest overwrites while the backup runs, at
/// most to the disks' size: a scratch directory without that room could fill and pause the
/// guest, so the snapshot is not taken.
pub(super) fn check_room(scratch: &WorkDir, needed: u64) -> Result<()> {
    let free = disk::scratch::free_bytes(scratch.path())?;
    if free >= needed {
        return Ok(());
    }
    Err(EngineError::Limit(format!(
        "scratch directory {} has {} free, but the fleecing overlays of this VM's disks may grow \
         to {} (what the guest overwrites during the backup); the VM was not touched. Give the \
         backup a scratch directory with room: --scratch DIR or $VMVAULT_SCRATCH",
        scratch.path().parent().unwrap_or(scratch.path()).display(),
        human_bytes(free),
        human_bytes(needed)
    )))
}
