//! A job record never lies: with a store that answers job-record writes late and out of order
//! (a test-only delay: real stores are slow at random, but not on cue), a committed backup
//! always reads as completed, naming its point.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::{create, qemu_io};
use engine::NoProgress;
use engine::backup::{BackupOptions, backup_job};
use engine::catalog::Catalog;
use engine::jobs::JobStatus;
use engine::limits::Limits;
use engine::services::vms::{self, NewVm};
use vault::backend::{Backend, LocalBackend, ObjectInfo, Put, Version};
use vault::layout::ObjectClass;
use vault::{InitEncryption, Vault};

/// A local directory whose job-record swaps take 0–150 ms, differently each time.
struct SlowJobs {
    inner: LocalBackend,
    writes: AtomicU64,
}

#[async_trait]
impl Backend for SlowJobs {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn get(&self, key: &str) -> vault::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> vault::Result<Option<u64>> {
        self.inner.head(key).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> vault::Result<Put> {
        self.inner.put_if_absent(key, data).await
    }
    async fn get_versioned(&self, key: &str) -> vault::Result<Option<(Bytes, Version)>> {
        self.inner.get_versioned(key).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&Version>,
        data: Bytes,
    ) -> vault::Result<Version> {
        if matches!(ObjectClass::of(key), ObjectClass::Job(_)) {
            let n = self.writes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis([0, 150, 20, 90, 5, 60, 120, 0, 40][n as usize % 9]))
                .await;
        }
        self.inner.compare_and_swap(key, expected, data).await
    }
    async fn delete(&self, key: &str) -> vault::Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> vault::Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn flush(&self) -> vault::Result<()> {
        self.inner.flush().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_short_backups_on_a_slow_store_all_read_as_completed() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        Arc::new(SlowJobs { inner: LocalBackend::new(dir.path().join("vault")), writes: AtomicU64::new(0) });
    let vault = Arc::new(Vault::create(backend, InitEncryption::None).await.unwrap());
    let image = dir.path().join("vm.raw");
    create(&image, "raw", "4M");
    let new =
        NewVm { name: "vm".into(), disks: vec![(Some("vda".into()), image.clone())], ..Default::default() };
    vms::add(Catalog::of(vault.vault()), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    let options = BackupOptions { kind: vault::PointKind::Scheduled, ..Default::default() };
    let mut wrong = Vec::new();
    for round in 0..50 {
        qemu_io(&image, "raw", &format!("write -P {} 0 64k", round % 250 + 1));
        let (summary, _) =
            backup_job(Arc::clone(&vault), "vm", options.clone(), Arc::new(NoProgress)).await.unwrap();
        // Late writes have had their time to land.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let jobs = engine::catalog::job::list(Catalog::of(vault.vault()), Some("vm"), None).await.unwrap();
        let job = jobs.iter().find(|j| j.point.as_deref() == Some(summary.point_id.as_str()));
        match job {
            Some(job) if job.status == JobStatus::Completed => {}
            other => wrong.push(format!("round {round}: {:?}", other.map(|j| (j.status, j.error.clone())))),
        }
    }
    assert!(wrong.is_empty(), "{} of 50 committed backups read wrong: {wrong:?}", wrong.len());
}
