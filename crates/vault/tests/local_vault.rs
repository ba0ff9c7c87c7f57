//! The local directory backend: create-if-absent, compare-and-swap, durability rules, and
//! concurrent writers in separate processes.

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use vault::backend::{Backend, Put};
use vault::{Vault, VaultError, catalog};

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
/// It does nothing unless `VMVAULT_TEST_HELPER` is set.
#[tokio::test]
async fn helper_process() {
    let Ok(task) = std::env::var(HELPER) else { return };
    let (task, dir) = task.split_once(':').expect("TASK:DIR");
    let dir = Path::new(dir);
    // Start together: wait until the parent creates the "go" file.
    while !dir.join("go").exists() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let vault = reopen(&dir.join("vault")).await;
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

fn run_helpers(task: &str, dir: &Path, count: usize) {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..count)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "helper_process", "--nocapture", "--test-threads=1"])
                .env(HELPER, format!("{task}:{}", dir.display()))
                .spawn()
                .expect("start helper process")
        })
        .collect();
    std::fs::write(dir.join("go"), b"").unwrap();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a helper process failed");
    }
}

#[tokio::test]
async fn concurrent_writers_of_the_same_chunks_leave_a_valid_vault() {
    let dir = tempfile::tempdir().unwrap();
    encrypted_vault(&dir.path().join("vault")).await;
    run_helpers("chunks", dir.path(), 3);

    let vault = reopen(&dir.path().join("vault")).await;
    for n in 0..CHUNKS_PER_WRITER {
        let data = shared_chunk(n);
        let id = vault.keys().chunk_id(&data);
        assert_eq!(vault.get_chunk(&id).await.unwrap(), data, "chunk {n}");
    }
    let check = vault.vault().check_chunks().await.unwrap();
    assert_eq!(check.checked, CHUNKS_PER_WRITER, "exactly one copy of each chunk");
    assert!(check.damaged.is_empty(), "{:?}", check.damaged);
    let leftovers: Vec<_> = snapshot_tree(&dir.path().join("vault"))
        .into_iter()
        .filter(|(p, _)| p.contains(".tmp-"))
        .map(|(p, _)| p)
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[tokio::test]
async fn concurrent_catalog_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    unencrypted_vault(&dir.path().join("vault")).await;
    run_helpers("counter", dir.path(), 2);

    let vault = reopen(&dir.path().join("vault")).await;
    let counter: Counter =
        catalog::read(vault.vault().backend().as_ref(), "catalog/counter.json").await.unwrap().unwrap();
    assert_eq!(counter.value, 2 * INCREMENTS_PER_WRITER, "an update was lost");
    assert_eq!(counter.writers.len(), 2);
}

#[tokio::test]
async fn the_loser_of_a_compare_and_swap_gets_a_retryable_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    let key = "catalog/doc.json";
    let v1 = backend.compare_and_swap(key, None, Bytes::from_static(b"one")).await.unwrap();
    let err = backend.compare_and_swap(key, None, Bytes::from_static(b"again")).await.unwrap_err();
    assert!(err.is_retryable(), "create of an existing document conflicts: {err}");

    let (_, read_by_a) = backend.get_versioned(key).await.unwrap().unwrap();
    let (_, read_by_b) = backend.get_versioned(key).await.unwrap().unwrap();
    assert_eq!(read_by_a, v1);
    backend.compare_and_swap(key, Some(&read_by_a), Bytes::from_static(b"two by a")).await.unwrap();
    let err =
        backend.compare_and_swap(key, Some(&read_by_b), Bytes::from_static(b"two by b")).await.unwrap_err();
    assert!(matches!(err, VaultError::Conflict { .. }) && err.is_retryable(), "{err}");
    assert!(err.to_string().contains(key));
    assert_eq!(&backend.get(key).await.unwrap()[..], b"two by a", "the winner's update stands");
}

#[tokio::test]
async fn create_if_absent_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(dir.path());
    assert_eq!(backend.put_if_absent("a/b", Bytes::from_static(b"first")).await.unwrap(), Put::Created);
    assert_eq!(backend.put_if_absent("a/b", Bytes::from_static(b"second")).await.unwrap(), Put::Existed);
    assert_eq!(&backend.get("a/b").await.unwrap()[..], b"first");
    backend.flush().await.unwrap();
    let listed = backend.list("a/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key.as_str(), listed[0].size), ("a/b", 5));
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

#[tokio::test]
async fn every_stored_chunk_checksum_verifies_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let vault = encrypted_vault(dir.path()).await;
    let mut ids = vec![];
    for n in 0..6 {
        ids.push(vault.put_chunk(&random_data(n, 30_000 + n as usize)).await.unwrap().0);
    }
    // A fresh open, no passphrase: the server's view.
    let locked = Vault::open(backend(dir.path())).await.unwrap();
    let report = locked.check_chunks().await.unwrap();
    assert_eq!(report.checked, 6);
    assert!(report.damaged.is_empty());

    flip_byte(&dir.path().join(vault::vault::chunk_key(&ids[3])), 1000);
    let report = locked.check_chunks().await.unwrap();
    assert_eq!(report.damaged.len(), 1);
    assert!(report.damaged[0].key.contains(&ids[3].to_hex()));
    assert!(matches!(report.damaged[0].error, VaultError::ChunkChecksum { .. }));
}

#[tokio::test]
async fn a_stored_chunk_is_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let vault = unencrypted_vault(dir.path()).await;
    let data = compressible_data(1 << 20);
    let (id1, added1) = vault.put_chunk(&data).await.unwrap();
    let (id2, added2) = vault.put_chunk(&data).await.unwrap();
    assert_eq!(id1, id2);
    assert!(added1 > 0 && added1 < data.len() as u64, "compressed: {added1}");
    assert_eq!(added2, 0);
    assert_eq!(vault.vault().info().await.unwrap().chunk_count, 1);
}
