//! Shared helpers: real images made with qemu-img/qemu-io, a real vault in a temp directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use engine::NoProgress;
use engine::backup::{BackupOptions, BackupSummary};
use engine::catalog::Catalog;
use engine::limits::Limits;
use engine::services::vms::{self, NewVm};
use vault::backend::LocalBackend;
use vault::{InitEncryption, KdfParams, Passphrase, UnlockedVault, Vault};

pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn qemu_io(image: &Path, format: &str, cmd: &str) {
    sh("qemu-io", &["-f", format, "-c", cmd, image.to_str().unwrap()]);
}

pub fn create(image: &Path, format: &str, size: &str) {
    sh("qemu-img", &["create", "-q", "-f", format, image.to_str().unwrap(), size]);
}

/// `qemu-img compare` of two images: true when identical.
pub fn same(a: &Path, b: &Path) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-q", a.to_str().unwrap(), b.to_str().unwrap()])
        .status()
        .unwrap()
        .success()
}

/// A copy of an image as it is now, to compare a restore with.
pub fn capture(image: &Path, to: &Path) -> PathBuf {
    sh("cp", &["--sparse=always", image.to_str().unwrap(), to.to_str().unwrap()]);
    to.to_path_buf()
}

/// Where a lab's vault lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// `<lab>/vault`.
    Local,
    /// A new bucket on the test process's moto_server.
    S3,
}

/// Run an `async fn NAME(store: Store)` as two tests, `NAME::local` and `NAME::s3`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name($crate::common::Store::Local).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$name($crate::common::Store::S3).await
            }
        }
    )*};
}

/// Open a disk of the latest point of `vm` and run `f` on it on a blocking thread.
pub async fn with_disk<R: Send + 'static>(
    lab: &Lab,
    vm: &str,
    label: &str,
    f: impl FnOnce(engine::files::PointDisk) -> R + Send + 'static,
) -> R {
    let disk =
        engine::files::PointDisk::open(Arc::clone(&lab.vault), vm, "latest", Some(label)).await.unwrap();
    tokio::task::spawn_blocking(move || f(disk)).await.unwrap()
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub vault: Arc<UnlockedVault>,
}

impl Lab {
    pub async fn new(encrypted: bool) -> Lab {
        Lab::on(Store::Local, encrypted).await
    }

    pub async fn on(store: Store, encrypted: bool) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn vault::backend::Backend> = match store {
            Store::Local => Arc::new(LocalBackend::new(dir.path().join("vault"))),
            Store::S3 => testkit::moto().backend(&testkit::moto().new_vault_url()),
        };
        let init = if encrypted {
            InitEncryption::Passphrase(Passphrase::new("lab passphrase".into()), KdfParams::DEFAULT)
        } else {
            InitEncryption::None
        };
        let vault = Arc::new(Vault::create(backend, init).await.unwrap());
        Lab { dir, vault }
    }

    /// The lab vault's catalog.
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog::of(self.vault.vault())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn register(&self, name: &str, disks: &[(&str, &Path)]) {
        let new = NewVm {
            name: name.into(),
            disks: disks.iter().map(|(l, p)| (Some(l.to_string()), p.to_path_buf())).collect(),
            vcpus: 2,
            memory_mib: 512,
            ..Default::default()
        };
        let record = vms::prepare(new, &Limits::default()).unwrap();
        vms::add(self.catalog(), record).await.unwrap();
    }

    pub async fn backup(&self, vm: &str) -> BackupSummary {
        engine::backup::backup(Arc::clone(&self.vault), vm, BackupOptions::default(), Arc::new(NoProgress))
            .await
            .unwrap_or_else(|e| panic!("backup of {vm}: {e}"))
    }

    pub async fn restore(&self, vm: &str, point: &str, disk: &str, to: &Path, format: disk::DiskFormat) {
        let manifest = engine::points::find(&self.vault, vm, point).await.unwrap();
        engine::restore::restore_disk(
            Arc::clone(&self.vault),
            &manifest,
            disk,
            to,
            format,
            Arc::new(NoProgress),
        )
        .await
        .unwrap_or_else(|e| panic!("restore {vm}/{point}/{disk}: {e}"));
    }

    /// How many chunks the vault stores.
    pub async fn chunk_count(&self) -> usize {
        self.vault.vault().backend().list(&vault::layout::chunks()).await.unwrap().len()
    }

    /// The vault opened without its key, as a server opens it.
    pub async fn keyless(&self) -> vault::Vault {
        vault::Vault::open(Arc::clone(self.vault.vault().backend())).await.unwrap()
    }

    /// Delete an object behind the vault's back.
    pub async fn remove_object(&self, key: &str) {
        self.vault.vault().backend().delete(key).await.unwrap();
    }

    /// Flip one bit in the middle of an object behind the vault's back.
    pub async fn flip_object(&self, key: &str) {
        let backend = self.vault.vault().backend();
        let (bytes, version) = backend.get_versioned(key).await.unwrap().unwrap();
        let mut bytes = bytes.to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        backend.compare_and_swap(key, Some(&version), bytes.into()).await.unwrap();
    }

    /// Every object of the vault with its bytes, whichever store holds it.
    pub async fn objects(&self) -> Vec<(String, Vec<u8>)> {
        let backend = self.vault.vault().backend();
        let mut out = vec![];
        for object in backend.list("").await.unwrap() {
            out.push((object.key.clone(), backend.get(&object.key).await.unwrap().to_vec()));
        }
        out
    }
}

/// Progress that runs `during` once, when the transfer phase starts (after the snapshot).
pub struct DuringTransfer(pub std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl engine::Progress for DuringTransfer {
    fn phase(&self, name: &str) {
        if name == "transfer"
            && let Some(f) = self.0.lock().unwrap().take()
        {
            f();
        }
    }
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Run `command` in the guest through its agent at `qga` (guest-exec) and return its exit
/// code and standard output.
pub fn guest_exec(qga: &Path, command: &str) -> (i64, String) {
    use base64::Engine as _;
    let t = std::time::Duration::from_secs(30);
    let mut agent = disk::qmp::GuestAgent::connect(qga, t).unwrap();
    let args = serde_json::json!({ "path": "/bin/sh", "arg": ["-c", command], "capture-output": true });
    let pid = agent.execute("guest-exec", args, t).unwrap()["pid"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let status = agent.execute("guest-exec-status", serde_json::json!({ "pid": pid }), t).unwrap();
        if status["exited"].as_bool() == Some(true) {
            let out = status["out-data"].as_str().unwrap_or_default();
            let out = base64::engine::general_purpose::STANDARD.decode(out).unwrap();
            return (status["exitcode"].as_i64().unwrap_or(-1), String::from_utf8_lossy(&out).into_owned());
        }
        assert!(std::time::Instant::now() < deadline, "guest command {command:?} did not finish");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
