//! GC and prune killed outright (SIGKILL), ten times in each phase: while GC marks and
//! condemns, while it waits for an older backup, while it deletes, and while prune deletes
//! expired points. After every kill `verify --read-data` passes, the points that should be
//! there restore bit-exact, and the next GC completes and leaves no garbage.
//!
//! The vault is an S3 bucket (moto) reached through a slow link (a proxy adding 25 ms per
//! request, as a store across a WAN): on loopback a collection of this vault finishes before a
//! kill can land in a chosen phase. Checks and setup go to the bucket directly. The backup GC
//! waits for is a real `vmvault backup`, paused with SIGSTOP while its session is live.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Lab, same};
use testkit::slow_link::SlowLink;
use vault::backend::{Backend, S3Backend};
use vault::layout;

const TRIALS: usize = 10;
const BLOCK: u64 = 4 << 20;
/// Blocks of `web` with data: each rewritten block is one chunk of garbage once its point goes.
const WEB_BLOCKS: u64 = 80;
/// Long-kept points of `tiny`: objects GC must read while it marks.
const TINY_POINTS: usize = 30;
/// Expiring points one prune trial deletes.
const PRUNE_POINTS: usize = 20;

struct Rig {
    lab: Lab,
    link: SlowLink,
    store: Arc<S3Backend>,
    runtime: tokio::runtime::Runtime,
    /// Points that must survive every trial, with a copy of their disk as they saw it.
    kept: Vec<(String, String, PathBuf)>,
}

/// 4 KiB of fresh random bytes at the start of each of `blocks` blocks: a new chunk each.
fn scramble(image: &Path, blocks: u64) {
    let mut random = vec![0u8; 4096];
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    for block in 0..blocks {
        urandom.read_exact(&mut random).unwrap();
        file.seek(SeekFrom::Start(block * BLOCK)).unwrap();
        file.write_all(&random).unwrap();
    }
    file.sync_all().unwrap();
}

fn sparse_file(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

fn sparse_copy(from: &Path, to: &Path) -> PathBuf {
    let status = Command::new("cp").arg("--sparse=always").arg(from).arg(to).status().unwrap();
    assert!(status.success());
    to.to_path_buf()
}

/// A time `seconds` from now, for `--retain-until`.
fn in_seconds(seconds: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds)).to_string()
}

impl Rig {
    /// `web` (80 blocks of data) and `tiny` (30 points) backed up and kept; `db` for the
    /// backup GC waits for.
    fn new() -> Rig {
        let lab = Lab::s3(None);
        lab.ok(&["vault", "init", "--no-encryption"]);
        lab.ok(&["vault", "set", "--on-demand-per-day", "100000"]);
        let link = SlowLink::start(testkit::moto().endpoint(), Duration::from_millis(25));
        let store = testkit::moto().backend(&lab.vault);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut rig = Rig { lab, link, store, runtime, kept: Vec::new() };
        for (vm, size) in
            [("web", WEB_BLOCKS * BLOCK), ("tiny", 2 << 20), ("db", 16 * BLOCK), ("temp", 2 << 20)]
        {
            let image = rig.image(vm);
            sparse_file(&image, size);
            rig.lab.ok(&["vm", "add", vm, "--disk", &format!("vda={}", image.display()), "--force"]);
        }
        scramble(&rig.image("web"), WEB_BLOCKS);
        rig.keep("web");
        for _ in 0..TINY_POINTS {
            scramble(&rig.image("tiny"), 1);
            rig.keep("tiny");
        }
        rig
    }

    fn image(&self, vm: &str) -> PathBuf {
        self.lab.path(&format!("{vm}.raw"))
    }

    /// Back up `vm` (kept until tomorrow) and remember its disk as the point saw it.
    fn keep(&mut self, vm: &str) {
        let point = self.backup(vm, &["--retain-until", &in_seconds(86_400)]);
        let copy = sparse_copy(&self.image(vm), &self.lab.path(&format!("{vm}-{point}.raw")));
        self.kept.push((vm.to_string(), point, copy));
    }

    fn backup(&self, vm: &str, extra: &[&str]) -> String {
        let mut args = vec!["backup", vm, "--json"];
        args.extend(extra);
        self.lab.json(&args)["point_id"].as_str().unwrap().to_string()
    }

    /// `vmvault ARGS` through the slow link.
    fn slow(&self, args: &[&str]) -> Command {
        let mut cmd = self.lab.cmd(args);
        cmd.env("AWS_ENDPOINT_URL", self.link.endpoint()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.runtime.block_on(async {
            match self.store.get(key).await {
                Ok(bytes) => Some(bytes.to_vec()),
                Err(e) if e.kind() == vault::ErrorKind::NotFound => None,
                Err(e) => panic!("{key}: {e}"),
            }
        })
    }

    fn count(&self, prefix: &str) -> usize {
        self.runtime.block_on(self.store.list(prefix)).unwrap().len()
    }

    /// The phase `gc/state.json` names, if a collection left or holds one.
    fn gc_phase(&self) -> Option<String> {
        let state: serde_json::Value = serde_json::from_slice(&self.get(&layout::gc_state())?).ok()?;
        Some(state["phase"].as_str()?.to_string())
    }

    /// Make `WEB_BLOCKS` chunks of garbage: a new point of `web` over fresh data, expired and
    /// pruned.
    fn make_garbage(&self) {
        scramble(&self.image("web"), WEB_BLOCKS);
        self.backup("web", &["--retain-until", &in_seconds(2)]);
        std::thread::sleep(Duration::from_millis(2100));
        self.lab.ok(&["prune", "web"]);
        assert_eq!(self.manifests("web"), 1, "the expired point of web was not pruned");
    }

    /// How many points `vm` has in the bucket.
    fn manifests(&self, vm: &str) -> usize {
        let objects = self.runtime.block_on(self.store.list(&layout::points_of(vm))).unwrap();
        objects.iter().filter(|o| o.key.ends_with("manifest.json")).count()
    }

    /// Start `vmvault gc` through the slow link and kill it once the collection is in `phase`
    /// and `ready` holds, a little later each trial; the state it leaves must still name that
    /// phase.
    fn kill_gc_in(&self, phase: &str, trial: usize, ready: impl Fn() -> bool) {
        let mut gc = self.slow(&["gc"]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.gc_phase().as_deref() != Some(phase) || !ready() {
            assert!(gc.try_wait().unwrap().is_none(), "gc ended before it reached {phase}");
            assert!(Instant::now() < deadline, "gc never reached {phase}");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(40 * trial as u64));
        kill(&mut gc, "gc");
        assert_eq!(self.gc_phase().as_deref(), Some(phase), "the kill landed after {phase}");
    }

    /// Every kept point (and `also`) restores bit-exact, `verify --read-data` passes, and the
    /// next GC completes and leaves exactly the chunks the points use.
    fn check(&self, also: &[(String, String, PathBuf)], what: &str) {
        let verify = self.lab.run(&["verify", "--read-data"]);
        assert!(verify.status.success(), "{what}: verify: {}", String::from_utf8_lossy(&verify.stdout));
        for (vm, point, expected) in self.kept.iter().chain(also) {
            let to = self.lab.path("restored.raw");
            let _ = std::fs::remove_file(&to);
            let args = ["restore", "disk", vm, "--point", point, "--disk", "vda", "--format", "raw"];
            self.lab.ok(&[&args[..], &["--to", to.to_str().unwrap()]].concat());
            assert!(same(&to, expected), "{what}: point {point} of {vm} does not restore bit-exact");
        }
        let gc = self.lab.json(&["gc", "--json"]);
        assert_eq!(gc["dry_run"], false, "{gc}");
        let again = self.lab.json(&["gc", "--json"]);
        assert_eq!(again["condemned"], 0, "{what}: garbage is left after a completed GC: {again}");
        assert_eq!(self.gc_phase(), None, "{what}: a completed GC left its state");
    }
}

/// SIGKILL `child`; it must not have finished first.
fn kill(child: &mut Child, what: &str) {
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "{what} finished ({status}) before the kill landed");
}

#[test]
fn gc_killed_while_it_marks_and_condemns() {
    let rig = Rig::new();
    for trial in 0..TRIALS {
        rig.make_garbage();
        rig.kill_gc_in("marking", trial, || true);
        rig.check(&[], &format!("killed while marking, trial {trial}"));
    }
}

#[test]
fn gc_killed_while_it_deletes() {
    let rig = Rig::new();
    for trial in 0..TRIALS {
        rig.make_garbage();
        let before = rig.count(&layout::chunks());
        // Killed among the deletes: after the first, before the last.
        rig.kill_gc_in("deleting", trial, || rig.count(&layout::chunks()) < before);
        let after = rig.count(&layout::chunks());
        assert!(after > before - WEB_BLOCKS as usize, "trial {trial}: every delete was done before the kill");
        rig.check(&[], &format!("killed while deleting, trial {trial}"));
    }
}

#[test]
fn gc_killed_while_it_waits_for_an_older_backup() {
    let mut rig = Rig::new();
    let mut made = Vec::new();
    for trial in 0..TRIALS {
        rig.make_garbage();
        // A backup of `db` that started before the collection, paused while its session lives.
        scramble(&rig.image("db"), 16);
        let expected = sparse_copy(&rig.image("db"), &rig.lab.path(&format!("db-{trial}.raw")));
        let mut backup = rig.lab.cmd(&["backup", "db", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
        let session = layout::session(&layout::backup_session_name("db"));
        while rig.get(&session).is_none() {
            assert!(backup.try_wait().unwrap().is_none(), "the backup of db ended before it was paused");
            std::thread::sleep(Duration::from_millis(1));
        }
        signal(&backup, libc::SIGSTOP);
        rig.kill_gc_in("condemned", trial, || true);
        signal(&backup, libc::SIGCONT);
        let mut out = String::new();
        backup.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(backup.wait().unwrap().success(), "the paused backup failed after the killed GC");
        let point: serde_json::Value = serde_json::from_str(&out).unwrap();
        made.push(("db".to_string(), point["point_id"].as_str().unwrap().to_string(), expected));
        rig.check(&made, &format!("killed while waiting, trial {trial}"));
    }
    rig.kept.extend(made);
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

#[test]
fn prune_killed_while_it_deletes_expired_points() {
    let rig = Rig::new();
    let manifests = |rig: &Rig| rig.manifests("temp");
    for trial in 0..TRIALS {
        for _ in 0..PRUNE_POINTS {
            scramble(&rig.image("temp"), 1);
            rig.backup("temp", &["--retain-until", &in_seconds(3)]);
        }
        std::thread::sleep(Duration::from_secs(3));
        let mut prune = rig.slow(&["prune"]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while manifests(&rig) == PRUNE_POINTS {
            assert!(prune.try_wait().unwrap().is_none(), "prune ended before it deleted a point");
            assert!(Instant::now() < deadline, "prune never deleted a point");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(20 * trial as u64));
        kill(&mut prune, "prune");
        let left = manifests(&rig);
        assert!(left > 0, "trial {trial}: prune deleted every point before the kill");
        rig.check(&[], &format!("prune killed, trial {trial}"));
        rig.lab.ok(&["prune"]);
        assert_eq!(manifests(&rig), 0, "trial {trial}: the next prune left expired points");
        let gc = rig.lab.json(&["gc", "--json"]);
        assert!(gc["deleted"].as_u64().unwrap() > 0, "{gc}");
    }
}
