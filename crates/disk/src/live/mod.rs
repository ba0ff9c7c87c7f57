//! A point-in-time view of a running VM's disks, made through QMP the way libvirt's pull-mode
//! backup does: one `transaction` adds the next persistent dirty bitmap, freezes the previous
//! one, and starts `blockdev-backup sync=none` of each disk into a temporary qcow2 *fleecing*
//! overlay (which receives the old content of every block the guest overwrites afterwards);
//! then QEMU's own NBD server exports the overlays read-only, with the previous bitmaps. The
//! guest runs on; what the export shows stays as it was at the transaction.

mod guard;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{DiskError, Result};
use crate::qmp::QmpClient;
use crate::scratch::WorkDir;
use crate::watch::Watch;
pub use guard::run_state;
use guard::{Stops, guard};

/// One disk of the running VM as the snapshot sees it.
#[derive(Clone, Debug)]
pub struct LiveDisk {
    /// The image file.
    pub path: PathBuf,
    /// Its format node in QEMU.
    pub node: String,
    /// The NBD export name of its frozen view.
    pub export: String,
    /// The bitmap that tracked writes since the previous point, frozen at the snapshot.
    pub previous_bitmap: Option<String>,
    /// Whether the snapshot adds the next bitmap: only a format that can store one (qcow2)
    /// is tracked; a raw image, an LV or a block device is read in full each time.
    pub tracked: bool,
    fleece_file: PathBuf,
    fleece_node: String,
    job: String,
}

/// A persistent dirty bitmap as QEMU reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveBitmap {
    /// Its name.
    pub name: String,
    /// Whether it still records writes.
    pub recording: bool,
    /// Whether QEMU marks it inconsistent (left in use by a crash).
    pub inconsistent: bool,
}

/// The running snapshot: QEMU's NBD export of every included disk, watched (see [`guard`])
/// until it is finished.
pub struct LiveSnapshot {
    qmp: Arc<Mutex<QmpClient>>,
    socket: PathBuf,
    disks: Vec<LiveDisk>,
    server_started: bool,
    timeout: Duration,
    guard: Option<Watch>,
    scratch: WorkDir,
    /// Held only to be removed with the snapshot.
    _sockets: WorkDir,
}

/// The format node and persistent bitmaps of the device whose image is `path`.
pub fn find_node(qmp: &mut QmpClient, path: &Path, timeout: Duration) -> Result<(String, Vec<LiveBitmap>)> {
    let blocks = qmp.execute("query-block", json!({}), timeout)?;
    let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for block in blocks.as_array().into_iter().flatten() {
        let inserted = &block["inserted"];
        let Some(file) = inserted["file"].as_str() else { continue };
        let same = std::fs::canonicalize(file).map(|f| f == wanted).unwrap_or(false);
        if !same {
            continue;
        }

        let node = inserted["node-name"].as_str().unwrap_or_default().to_string();
        let bitmaps = block["inserted"]["dirty-bitmaps"]
            .as_array()
            .or_else(|| block["dirty-bitmaps"].as_array())
            .into_iter()
            .flatten()
            .filter(|b| b["persistent"].as_bool().unwrap_or(false))
            .map(|b| LiveBitmap {
                name: b["name"].as_str().unwrap_or_default().to_string(),
                recording: b["recording"].as_bool().unwrap_or(true),
                inconsistent: b["inconsistent"].as_bool().unwrap_or(false),
            })
            .collect();
        return Ok((node, bitmaps));
    }
    Err(DiskError::Qmp {
        socket: qmp.socket().to_path_buf(),
        message: format!("the running VM has no disk backed by {}; is this the right VM?", path.display()),
    })
}

impl LiveSnapshot {
    /// Take the snapshot of `disks` (image path, previous bitmap to export, whether to track
    /// it) with `new_bitmap` added to each tracked one, the overlays in `scratch` and the NBD
    /// socket in `sockets` (both removed once the snapshot is finished).
    pub fn start(
        mut qmp: QmpClient,
        disks: &[(PathBuf, Option<String>, bool)],
        new_bitmap: &str,
        scratch: WorkDir,
        sockets: WorkDir,
        timeout: Duration,
    ) -> Result<LiveSnapshot> {
        let socket = sockets.path().join("qemu-export.sock");
        let initial = run_state(&mut qmp, timeout)?;
        let mut live: Vec<LiveDisk> = Vec::new();
        for (i, (path, previous, tracked)) in disks.iter().enumerate() {
            let (node, _) = find_node(&mut qmp, path, timeout)?;
            live.push(LiveDisk {
                path: path.clone(),
                node,
                export: format!("vmvault-{i}"),
                previous_bitmap: previous.clone(),
                tracked: *tracked,
                fleece_file: scratch.path().join(format!("fleece-{i}.qcow2")),
                fleece_node: format!("vmvault-fleece-{i}"),
                job: format!("vmvault-backup-{i}"),
            });
        }
        let qmp = Arc::new(Mutex::new(qmp));
        let mut snapshot = LiveSnapshot {
            qmp,
            socket,
            disks: live,
            server_started: false,
            timeout,
            guard: None,
            scratch,
            _sockets: sockets,
        };
        if let Err(e) = snapshot.prepare_and_freeze(new_bitmap) {
            snapshot.finish(false, new_bitmap, "");
            return Err(e);
        }
        let stops = Stops {
            exports: snapshot.disks.iter().map(|d| d.export.clone()).collect(),
            jobs: snapshot.disks.iter().map(|d| d.job.clone()).collect(),
            scratch: snapshot
                .scratch
                .path()
                .parent()
                .unwrap_or(snapshot.scratch.path())
                .display()
                .to_string(),
        };
        snapshot.guard = Some(guard(Arc::clone(&snapshot.qmp), initial, stops, timeout));
        Ok(snapshot)
    }

    /// Why the snapshot had to be stopped to spare the VM (it paused on an I/O error of the
    /// scratch, or a guest write failed), and what was done about it; `None` while all is well.
    /// A backup whose snapshot tripped must not commit.
    pub fn harmed(&self) -> Option<String> {
        self.guard.as_ref().and_then(Watch::tripped)
    }

    fn prepare_and_freeze(&mut self, new_bitmap: &str) -> Result<()> {
        let t = self.timeout;
        let qmp = Arc::clone(&self.qmp);
        let mut qmp = lock(&qmp)?;
        // Overlays: empty qcow2 files the size of each disk, backed by the live node.
        for d in &self.disks {
            let size = node_size(&mut qmp, &d.node, t)?;
            crate::qemu::create_image(&d.fleece_file, crate::DiskFormat::Qcow2, size)?;
            qmp.execute(
                "blockdev-add",
                json!({
                    "driver": "qcow2",
                    "node-name": d.fleece_node,
                    "file": { "driver": "file", "filename": d.fleece_file },
                    "backing": d.node,
                }),
                t,
            )?;
        }
        // One instant for every disk: new bitmaps start, previous ones stop, fleecing starts.
        let mut actions: Vec<Value> = Vec::new();
        for d in self.disks.iter() {
            if d.tracked {
                actions.push(json!({ "type": "block-dirty-bitmap-add",
                    "data": { "node": d.node, "name": new_bitmap, "persistent": true } }));
            }
            if let Some(previous) = &d.previous_bitmap {
                actions.push(json!({ "type": "block-dirty-bitmap-disable",
                    "data": { "node": d.node, "name": previous } }));
            }
            actions.push(json!({ "type": "blockdev-backup",
                "data": { "device": d.node, "target": d.fleece_node, "sync": "none", "job-id": d.job } }));
        }
        qmp.execute("transaction", json!({ "actions": actions }), t)?;
        qmp.execute(
            "nbd-server-start",
            json!({ "addr": { "type": "unix", "data": { "path": self.socket } } }),
            t,
        )?;
        self.server_started = true;
        for d in &self.disks {
            let mut export = json!({ "type": "nbd", "id": d.export, "node-name": d.fleece_node,
                "name": d.export, "writable": false });
            if let Some(previous) = &d.previous_bitmap {
                export["bitmaps"] = json!([{ "node": d.node, "name": previous }]);
            }
            qmp.execute("block-export-add", export, t)?;
        }
        Ok(())
    }

    /// The unix socket of QEMU's NBD server.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The disks, in the order given.
    pub fn disks(&self) -> &[LiveDisk] {
        &self.disks
    }

    /// Tear the snapshot down. After a committed point the previous bitmaps, and any other
    /// bitmap whose name starts with `stale_prefix`, are removed (the new ones carry on); otherwise the new bitmaps are merged back into the previous ones,
    /// which record again, so the next backup is still incremental and misses nothing.
    /// Problems are returned as notes: the point's fate is already decided.
    pub fn finish(mut self, committed: bool, new_bitmap: &str, stale_prefix: &str) -> Vec<String> {
        let t = self.timeout;
        // The guard stops first: the snapshot goes now.
        self.guard = None;
        let mut notes = Vec::new();
        let monitor = Arc::clone(&self.qmp);
        let mut qmp = match lock(&monitor) {
            Ok(qmp) => qmp,
            Err(e) => return vec![e.to_string()],
        };
        let mut step = |qmp: &mut QmpClient, command: &str, args: Value| {
            if let Err(e) = qmp.execute(command, args, t) {
                notes.push(e.to_string());
            }
        };
        for d in &self.disks {
            step(&mut qmp, "block-export-del", json!({ "id": d.export, "mode": "hard" }));
        }
        if self.server_started {
            step(&mut qmp, "nbd-server-stop", json!({}));
        }
        for d in &self.disks {
            step(&mut qmp, "block-job-cancel", json!({ "device": d.job, "force": true }));
        }
        // The cancelled jobs let go of the overlays before they can be removed.
        std::thread::sleep(Duration::from_millis(100));
        for d in &self.disks {
            step(&mut qmp, "blockdev-del", json!({ "node-name": d.fleece_node }));
            let _ = std::fs::remove_file(&d.fleece_file);
            if !d.tracked {
                continue;
            }
            match (&d.previous_bitmap, committed) {
                (_, true) => {
                    // The new bitmap is the only checkpoint now: drop the previous one and any
                    // left by backups that died before they could clean up.
                    let stale: Vec<String> = find_node(&mut qmp, &d.path, t)
                        .map(|(_, bitmaps)| bitmaps.into_iter().map(|b| b.name).collect::<Vec<_>>())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|name| name.starts_with(stale_prefix) && name != new_bitmap)
                        .collect();
                    for name in stale {
                        step(&mut qmp, "block-dirty-bitmap-remove", json!({ "node": d.node, "name": name }));
                    }
                }
                (Some(previous), false) => {
                    step(
                        &mut qmp,
                        "block-dirty-bitmap-merge",
                        json!({ "node": d.node, "target": previous, "bitmaps": [new_bitmap] }),
                    );
                    step(&mut qmp, "block-dirty-bitmap-enable", json!({ "node": d.node, "name": previous }));
                    step(
                        &mut qmp,
                        "block-dirty-bitmap-remove",
                        json!({ "node": d.node, "name": new_bitmap }),
                    );
                }
                (None, false) => {
                    step(&mut qmp, "block-dirty-bitmap-remove", json!({ "node": d.node, "name": new_bitmap }))
                }
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        notes
    }
}

/// The monitor, shared with the guard.
fn lock(qmp: &Mutex<QmpClient>) -> Result<MutexGuard<'_, QmpClient>> {
    qmp.lock().map_err(|_| DiskError::Qmp {
        socket: PathBuf::new(),
        message: "the monitor connection was poisoned by a panic".into(),
    })
}

/// The virtual size of the block node `node`.
fn node_size(qmp: &mut QmpClient, node: &str, timeout: Duration) -> Result<u64> {
    let nodes = qmp.execute("query-named-block-nodes", json!({ "flat": true }), timeout)?;
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["node-name"] == node)
        .and_then(|n| n["image"]["virtual-size"].as_u64())
        .ok_or_else(|| DiskError::Qmp {
            socket: qmp.socket().to_path_buf(),
            message: format!("node {node} reports no size"),
        })
}
