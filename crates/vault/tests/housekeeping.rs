//! A directory vault does not fill with litter: garbage collection removes the folders its
//! own runs leave and the temporary files of writers that died; `vault info` counts those.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vault::backend::LocalBackend;
use vault::gc::{self, GcOptions};
use vault::{InitEncryption, Vault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_leaves_no_folders_of_its_runs_and_removes_dead_writers_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vault");
    let unlocked = Vault::create(Arc::new(LocalBackend::new(&root)), InitEncryption::None).await.unwrap();
    unlocked.put_chunk(&[7u8; 4096]).await.unwrap();
    // A killed writer's temporary from an hour ago, and one being written right now.
    std::fs::create_dir_all(root.join("jobs")).unwrap();
    let old = root.join("jobs/.tmp-0123456789abcdef");
    std::fs::write(&old, b"half a record").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let fresh = root.join("jobs/.tmp-fedcba9876543210");
    std::fs::write(&fresh, b"being written").unwrap();

    let vault = || async { Vault::open(Arc::new(LocalBackend::new(&root))).await.unwrap() };
    assert_eq!(vault().await.info().await.unwrap().stale_temporaries, 1);
    let mut removed = 0;
    for _ in 0..3 {
        removed += gc::collect(vault().await, GcOptions::default()).await.unwrap().temporaries_removed;
    }
    assert_eq!(removed, 1);
    assert!(!old.exists(), "a dead writer's temporary is still there");
    assert!(fresh.exists(), "a temporary younger than a lease was removed");
    let runs: Vec<String> = std::fs::read_dir(root.join("gc"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(runs.is_empty(), "GC runs left folders: {runs:?}");
    assert_eq!(vault().await.info().await.unwrap().stale_temporaries, 0);
}
