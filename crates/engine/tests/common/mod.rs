//! Shared helpers: real images made with qemu-img/qemu-io, a real vault in a temp directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use engine::NoProgress;
use engine::backup::{BackupOptions, BackupSummary};
use engine::limits::Limits;
use engine::registry::{self, NewVm};
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

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub vault: Arc<UnlockedVault>,
}

impl Lab {
    pub async fn new(encrypted: bool) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LocalBackend::new(dir.path().join("vault")));
        let init = if encrypted {
            InitEncryption::Passphrase(Passphrase::new("lab passphrase".into()), KdfParams::DEFAULT)
        } else {
            InitEncryption::None
        };
        let vault = Arc::new(Vault::create(backend, init).await.unwrap());
        Lab { dir, vault }
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
        let record = registry::prepare(new, &Limits::default()).unwrap();
        registry::add(self.vault.vault().backend().as_ref(), record).await.unwrap();
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

    /// Every byte of every file in the vault.
    pub fn vault_bytes(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = vec![];
        let mut stack = vec![self.path("vault")];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out
    }
}
