//! What a backup is asked to do: the disks, the kind of point, the job, the scratch directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use jiff::Timestamp;
use vault::PointKind;

use super::rendezvous::GroupRendezvous;

/// What to back up and how to label the point.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Disk labels to include; empty means all.
    pub disks: Vec<String>,
    /// Scheduled or on-demand.
    pub kind: PointKind,
    /// Keep an on-demand point until then.
    pub retain_until: Option<Timestamp>,
    /// Set to cancel; checked between blocks and between the steps of every phase.
    pub cancel: Arc<AtomicBool>,
    /// The job this backup runs in (names its writer session).
    pub job_id: String,
    /// Lease of the backup's writer session (how soon a crashed backup stops blocking others).
    pub session_lease: Duration,
    /// The consistency group backup this one is a member of (see [`super::group`]).
    pub group: Option<Arc<GroupRendezvous>>,
    /// Where a running VM's fleecing overlays grow during the backup (see [`default_scratch`]).
    pub scratch: PathBuf,
}

/// The scratch directory when none is given: `$VMVAULT_SCRATCH`, else the host's vmvault
/// state directory — `/var/lib/vmvault/scratch` for root, `$XDG_STATE_HOME/vmvault/scratch`
/// (`~/.local/state/vmvault/scratch`) otherwise — on a real disk rather than `/tmp`, which is
/// a small tmpfs on many distributions.
pub fn default_scratch() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMVAULT_SCRATCH").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid(2) has no failure mode.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/vmvault/scratch");
    }
    let state =
        std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()).map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".local/state"))
        });
    match state {
        Some(state) => state.join("vmvault/scratch"),
        None => std::env::temp_dir().join("vmvault-scratch"),
    }
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            disks: vec![],
            kind: PointKind::OnDemand,
            retain_until: None,
            cancel: Arc::new(AtomicBool::new(false)),
            job_id: format!("backup-{}", std::process::id()),
            session_lease: vault::lease::DEFAULT_LEASE,
            group: None,
            scratch: default_scratch(),
        }
    }
}
