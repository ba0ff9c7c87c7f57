//! A running libvirt domain's pull-mode backup job, from `backupBegin` to its end. libvirt
//! creates the checkpoint `vmvault-<point>` at the backup instant, fleeces each disk into a
//! scratch file in the backup's scratch directory, and exports the frozen views (and, for an
//! incremental, the blocks changed since the previous checkpoint as the dirty bitmap
//! `backup-<disk>`) on a unix socket there. While the job lives a guard watches the domain: if
//! it pauses on an I/O error (a full scratch), the job is ended, the domain resumed, and the
//! backup fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use disk::scratch::WorkDir;
use disk::watch::Watch;

use crate::catalog::checkpoint::BITMAP_PREFIX;
use crate::error::Result;
use crate::libvirt::definition::escape;
use crate::libvirt::host::{Domain, DomainState};

/// How often the guard asks for the domain's state.
const POLL: Duration = Duration::from_millis(200);

/// One disk of the job.
pub(super) struct JobDisk {
    /// Its target name (`vda`), which is also its export name.
    pub(super) label: String,
    /// The checkpoint an incremental read starts from; `None` reads it in full.
    pub(super) incremental: Option<String>,
    /// Whether the new checkpoint tracks it (only qcow2 can hold the bitmap).
    pub(super) tracked: bool,
}

/// The running job; ended (and its checkpoint kept or dropped) by [`LibvirtJob::finish`].
pub(super) struct LibvirtJob {
    domain: Arc<Domain>,
    socket: PathBuf,
    checkpoint: String,
    guard: Option<Watch>,
    _scratch: WorkDir,
}

/// The `<domainbackup>` of a pull-mode backup of `disks` (others are skipped).
fn backup_xml(socket: &Path, scratch: &Path, disks: &[JobDisk], all: &[String]) -> String {
    let mut x = format!(
        "<domainbackup mode='pull'>\n  <server transport='unix' socket='{}'/>\n  <disks>\n",
        escape(&socket.display().to_string())
    );
    for label in all {
        match disks.iter().find(|d| &d.label == label) {
            Some(d) => {
                let mode = match &d.incremental {
                    Some(cp) => format!("backupmode='incremental' incremental='{}'", escape(cp)),
                    None => "backupmode='full'".into(),
                };
                let file = scratch.join(format!("{label}.scratch"));
                x.push_str(&format!(
                    "    <disk name='{}' backup='yes' type='file' {mode}>\n      <scratch file='{}'/>\n    </disk>\n",
                    escape(label),
                    escape(&file.display().to_string())
                ));
            }
            None => x.push_str(&format!("    <disk name='{}' backup='no'/>\n", escape(label))),
        }
    }
    x.push_str("  </disks>\n</domainbackup>\n");
    x
}

/// The `<domaincheckpoint>` created at the backup instant.
fn checkpoint_xml(name: &str, disks: &[JobDisk], all: &[String]) -> String {
    let mut x = format!("<domaincheckpoint>\n  <name>{}</name>\n  <disks>\n", escape(name));
    for label in all {
        let tracked = disks.iter().any(|d| &d.label == label && d.tracked);
        let how = if tracked { "bitmap" } else { "no" };
        x.push_str(&format!("    <disk name='{}' checkpoint='{how}'/>\n", escape(label)));
    }
    x.push_str("  </disks>\n</domaincheckpoint>\n");
    x
}

impl LibvirtJob {
    /// Begin the job for `disks` of the domain (whose disks are `all`), creating the
    /// checkpoint `checkpoint`, its files in `scratch`.
    pub(super) fn begin(
        domain: Arc<Domain>,
        scratch: WorkDir,
        disks: &[JobDisk],
        all: &[String],
        checkpoint: &str,
    ) -> Result<LibvirtJob> {
        let socket = scratch.path().join("nbd.sock");
        let backup = backup_xml(&socket, scratch.path(), disks, all);
        let initial = domain.state()?;
        domain.begin_backup(&backup, Some(&checkpoint_xml(checkpoint, disks, all)))?;
        let scratch_dir = scratch.path().parent().unwrap_or(scratch.path()).display().to_string();
        let guard = guard(Arc::clone(&domain), initial, scratch_dir);
        Ok(LibvirtJob {
            domain,
            socket,
            checkpoint: checkpoint.to_string(),
            guard: Some(guard),
            _scratch: scratch,
        })
    }

    /// The unix socket of the job's NBD server.
    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Why the job had to be ended to spare the domain, and what was done; `None` while all
    /// is well.
    pub(super) fn harmed(&self) -> Option<String> {
        self.guard.as_ref().and_then(Watch::tripped)
    }

    /// End the job. After a committed point the older vmvault checkpoints are deleted (the
    /// new one carries on); otherwise the new checkpoint is deleted, libvirt merging its
    /// bitmap back into the previous one, so the next backup still misses nothing.
    pub(super) fn finish(mut self, committed: bool) -> Vec<String> {
        let tripped = self.guard.take().and_then(|g| g.tripped());
        let mut notes = Vec::new();
        if tripped.is_none()
            && self.domain.backup_running()
            && let Err(e) = self.domain.end_job()
        {
            notes.push(e.to_string());
        }
        let names = match self.domain.checkpoints() {
            Ok(names) => names,
            Err(e) => return [notes, vec![e.to_string()]].concat(),
        };
        let doomed: Vec<&String> = if committed {
            names.iter().filter(|n| n.starts_with(BITMAP_PREFIX) && **n != self.checkpoint).collect()
        } else {
            names.iter().filter(|n| **n == self.checkpoint).collect()
        };
        for name in doomed {
            if let Err(e) = self.domain.delete_checkpoint(name) {
                notes.push(e.to_string());
            }
        }
        notes
    }
}

/// Watch the domain while the job lives (it was `initial` before the job began).
fn guard(domain: Arc<Domain>, initial: DomainState, scratch: String) -> Watch {
    Watch::spawn(POLL, move || {
        let why = match domain.state() {
            Ok(DomainState::Paused { io_error: true })
                if initial != (DomainState::Paused { io_error: true }) =>
            {
                rescue(&domain, &scratch)
            }
            Ok(DomainState::ShutOff { .. }) => "the domain stopped while the backup ran".into(),
            _ if !domain.backup_running() => {
                "libvirt's backup job ended before vmvault finished reading (was libvirtd restarted?)".into()
            }
            _ => return None,
        };
        Some(format!("{why}. Nothing was committed"))
    })
}

/// The domain paused on a failed write while fleecing: end the job (libvirt drops the
/// fleecing, so the retried write reaches the disk), resume the domain, say so.
fn rescue(domain: &Domain, scratch: &str) -> String {
    let _ = domain.end_job();
    let deadline = Instant::now() + Duration::from_secs(10);
    while domain.backup_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let resumed = match domain.resume().and_then(|()| domain.state()) {
        Ok(DomainState::Running) => "it was resumed".to_string(),
        Ok(state) => {
            format!("it could not be resumed ({state:?}): resume it with `virsh resume {}`", domain.name())
        }
        Err(e) => format!("it could not be resumed ({e}): resume it with `virsh resume {}`", domain.name()),
    };
    format!(
        "domain {} paused on an I/O error while the backup ran (most likely the fleecing scratch {scratch} \
         is full); the backup job was ended and {resumed}; give the backup a scratch directory with \
         room for the guest's writes (--scratch, $VMVAULT_SCRATCH)",
        domain.name()
    )
}
