//! Vault operations in a local directory and in an S3 bucket: concurrent writers in separate
//! processes, keyless chunk checks, dedup; and the local directory's own key rules.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use vault::backend::Backend;
use vault::{VaultError, catalog};

use common::*;

/// Environment variable that turns the `helper_process` test into a child worker.
const HELPER: &str = "VMVAULT_TEST_HELPER";
const CHUNKS_PER_WRITER: u64 = 24;
const INCREMENTS_PER_WRITER: u64 = 40;

#[derive(Serialize, Deserialize, Default)]
struct Counter {
    value: u64,
    writers: Vec<String>,
}

fn shared_chunk(n: u64) -> Vec<u8> {
    let mut data = compressible_data(200_000);
    data.extend_from_slice(&n.to_le_bytes());
    data
}

/// Not a test on its own: the body of the child processes the concurrency tests start.
/// It does nothing unless `VMVAULT_TEST_HELPER` is set (to `TASK:SYNC_DIR:VAULT`, the vault a
/// directory or an `s3://` URL configured by the `AWS_*` variables the parent passes).
#[tokio::test]
async fn helper_process() {
    let Ok(task) = std::env::var(HELPER) else { return };
    let mut parts = task.splitn(3, ':');
    let (task, sync, location) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    // Start together: wait until the parent creates the "go" file.
    while !Path::new(sync).join("go").exists() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let backend: Arc<dyn Backend> = if location.starts_with("s3://") {
        Arc::new(vault::backend::S3Backend::from_url(location).expect("S3 backend"))
    } else {
        common::backend(Path::new(location))
    };
    let vault = Place::on(backend).reopen().await;
    match task {
        "chunks" => {
            for n in 0..CHUNKS_PER_WRITER {
                vault.put_chunk(&shared_chunk(n)).await.expect("put chunk");
            }
            vault.vault().backend().flush().await.expect("flush");
        }
        "counter" => {
            let me = std::process::id().to_string();
            for _ in 0..INCREMENTS_PER_WRITER {
                catalog::update(
                    vault.vault().backend().as_ref(),
                    "catalog/counter.json",
                    |c: Option<Counter>| {
                        let mut c = c.unwrap_or_default();
                        c.value += 1;
                        if !c.writers.contains(&me) {
                            c.writers.push(me.clone());
                        }
                        Ok::<_, vault::VaultError>(c)
                    },
                )
                .await
                .expect("update counter");
            }
        }
        other => panic!("unknown helper task {other}"),
    }
}

/// Run `count` helper processes on the vault at `place` at once.
fn run_helpers(task: &str, place: &Place, count: usize) {
    let sync = tempfile::tempdir().unwrap();
    let location = match place.at() {
        at if at.starts_with("s3://") => at,
        _ => place.dir().display().to_string(),
    };
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..count)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "helper_process", "--nocapture", "--test-threads=1"])
                .env(HELPER, format!("{task}:{}:{location}", sync.path().display()))
                .envs(testkit::moto().settings())
                .spawn()
                .expect("start helper process")
        })
        .collect();
    std::fs::write(sync.path().join("go"), b"").unwrap();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a helper process failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_the_same_chunks_leave_a_valid_vault() {
    for place in places() {
        place.encrypted().await;
        run_helpers("chunks", &place, 3);

        let vault = place.reopen().await;
        for n in 0..CHUNKS_PER_WRITER {
            let data = shared_chunk(n);
            let id = vault.keys().chunk_id(&data);
            assert_eq!(vault.get_chunk(&id).await.unwrap(), data, "{}: chunk {n}", place.at());
        }
        let check = vault.vault().check_chunks().await.unwrap();
        assert_eq!(check.checked, CHUNKS_PER_WRITER, "{}: exactly one copy of each chunk", place.at());
        assert!(check.damaged.is_empty(), "{:?}", check.damaged);
        if !place.at().starts_with("s3://") {
            let leftovers: Vec<_> =
                testkit::files_under(&place.dir()).into_keys().filter(|p| p.contains(".tmp-")).collect();
            assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_catalog_updates_lose_nothing() {
    for place in places() {
        place.unencrypted().await;
        run_helpers("counter", &place, 2);

        let vault = place.reopen().await;
        let counter: Counter =
            catalog::read(vault.vault().backend().as_ref(), "catalog/counter.json").await.unwrap().unwrap();
        assert_eq!(counter.value, 2 * INCREMENTS_PER_WRITER, "{}: an update was lost", place.at());
        assert_eq!(counter.writers.len(), 2);
    }
}

#[tokio::test]
async fn keys_that_leave_the_vault_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir.path().join("v"));
    for bad in ["../escape", "/etc/passwd", "a/../../b", "chunks/.tmp-x", "", "a//b", "a\\b"] {
        let err = backend.put_if_absent(bad, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(err, VaultError::Invalid(_)), "{bad:?}: {err}");
    }
    assert!(!dir.path().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_chunk_checksum_verifies_without_the_key() {
    for place in places() {
        let vault = place.encrypted().await;
        let mut ids = vec![];
        for n in 0..6 {
            ids.push(vault.put_chunk(&random_data(n, 30_000 + n as usize)).await.unwrap().0);
        }
        // A fresh open, no passphrase: the server's view.
        let locked = place.open_locked().await;
        let report = locked.check_chunks().await.unwrap();
        assert_eq!(report.checked, 6, "{}", place.at());
        assert!(report.damaged.is_empty());

        place.flip(&vault::layout::chunk(&ids[3]), 1000).await;
        let report = locked.check_chunks().await.unwrap();
        assert_eq!(report.damaged.len(), 1, "{}", place.at());
        assert!(report.damaged[0].key.contains(&ids[3].to_hex()));
        assert!(matches!(report.damaged[0].error, VaultError::ChunkChecksum { .. }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_chunk_is_not_stored_twice() {
    for place in places() {
        let vault = place.unencrypted().await;
        let data = compressible_data(1 << 20);
        let (id1, added1) = vault.put_chunk(&data).await.unwrap();
        let (id2, added2) = vault.put_chunk(&data).await.unwrap();
        assert_eq!(id1, id2);
        assert!(added1 > 0 && added1 < data.len() as u64, "compressed: {added1}");
        assert_eq!(added2, 0, "{}", place.at());
        assert_eq!(vault.vault().info().await.unwrap().chunk_count, 1);
    }
}
