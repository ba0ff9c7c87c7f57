//! How a backup uploads through a real server on loopback: it asks which chunks the vault
//! lacks, a batch per question, and sends only those. Requests are counted by a wrapper
//! around the real client backend (every call goes through to the server).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use engine::NoProgress;
use engine::backup::BackupOptions;
use engine::catalog::Catalog;
use engine::limits::Limits;
use engine::services::vms::{self, NewVm};
use server::auth::Role;
use server::client::{RemoteBackend, Trust};
use server::run::{ServerConfig, serve};
use server::tls::Identity;
use server::tokens::TokenStore;
use vault::backend::{Backend, LocalBackend, ObjectInfo, Put, Version};
use vault::layout::chunk_id_of;
use vault::vault::SealedChunk;
use vault::{ChunkId, InitEncryption, KdfParams, Passphrase, Vault};

/// Requests one client made, by kind; and a delay added to each "missing" question, as a
/// distant server would take.
#[derive(Default)]
struct Counts {
    question_delay_ms: AtomicU64,
    chunk_heads: AtomicU64,
    questions: AtomicU64,
    asked: AtomicU64,
    chunk_puts: AtomicU64,
}

/// The real client backend, counting what it is asked to do.
struct Counting {
    inner: RemoteBackend,
    counts: Arc<Counts>,
}

#[async_trait]
impl Backend for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn get(&self, key: &str) -> vault::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> vault::Result<Option<u64>> {
        if chunk_id_of(key).is_some() {
            self.counts.chunk_heads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.head(key).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> vault::Result<Put> {
        if chunk_id_of(key).is_some() {
            self.counts.chunk_puts.fetch_add(1, Ordering::SeqCst);
        }
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
    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
    async fn missing_chunks(&self, ids: &[ChunkId]) -> vault::Result<Vec<ChunkId>> {
        self.counts.questions.fetch_add(1, Ordering::SeqCst);
        self.counts.asked.fetch_add(ids.len() as u64, Ordering::SeqCst);
        let delay = self.counts.question_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        self.inner.missing_chunks(ids).await
    }
}

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A 64 MiB raw disk with `blocks` distinct 4 MiB blocks of data, patterns from `first`.
fn disk_with(path: &Path, blocks: u64, first: u64) {
    sh("qemu-img", &["create", "-q", "-f", "raw", path.to_str().unwrap(), "64M"]);
    for b in 0..blocks {
        let cmd = format!("write -P {} {}M 4M", first + b, b * 4);
        sh("qemu-io", &["-f", "raw", "-c", &cmd, path.to_str().unwrap()]);
    }
}

/// A server on loopback serving a local vault under `dir`, and a counting client for it.
async fn server_and_client(dir: &Path) -> (Arc<Counting>, Arc<Counts>) {
    let state = dir.join("state");
    let identity = Identity::self_signed(&state, &["localhost".to_string()]).unwrap();
    let fingerprint = identity.fingerprint().unwrap();
    let (_, secret) = TokenStore::new(&state).create("host1", Role::Admin, &[]).unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        backend: Arc::new(LocalBackend::new(dir.join("vault"))),
        state,
        identity,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(config, move |bound| {
        let _ = tx.send(bound);
    }));
    let bound = rx.await.unwrap();
    let inner =
        RemoteBackend::new(&format!("https://{bound}"), &secret, &Trust::Fingerprint(fingerprint)).unwrap();
    let counts = Arc::new(Counts::default());
    (Arc::new(Counting { inner, counts: Arc::clone(&counts) }), counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_through_the_server_asks_in_batches_and_sends_only_missing_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, counts) = server_and_client(dir.path()).await;
    let init = InitEncryption::Passphrase(Passphrase::new("uploads".into()), KdfParams::DEFAULT);
    let vault = Arc::new(Vault::create(backend.clone(), init).await.unwrap());
    let (a, b) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
    disk_with(&a, 12, 0x11);
    sh("cp", &[a.to_str().unwrap(), b.to_str().unwrap()]);
    let c = dir.path().join("c.raw");
    disk_with(&c, 12, 0x51);
    for (name, disk) in [("vm-a", &a), ("vm-b", &b), ("vm-c", &c)] {
        let new = NewVm {
            name: name.into(),
            disks: vec![(Some("root".into()), disk.to_path_buf())],
            vcpus: 1,
            memory_mib: 256,
            ..Default::default()
        };
        vms::add(Catalog::of(vault.vault()), vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    }

    let first = engine::backup::backup(vault.clone(), "vm-a", BackupOptions::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    let (questions, asked) = (counts.questions.load(Ordering::SeqCst), counts.asked.load(Ordering::SeqCst));
    println!("vm-a: 12 new chunks asked about in {questions} question(s)");
    assert_eq!(counts.chunk_heads.load(Ordering::SeqCst), 0, "no chunk is looked up on its own");
    assert_eq!(asked, 12, "every new chunk is asked about once");
    assert!((1..=12).contains(&questions));
    assert_eq!(counts.chunk_puts.load(Ordering::SeqCst), 12, "each new chunk is sent once");
    assert!(first.bytes_new > 0);

    // A clone of the same disk: every chunk is asked about, none is sent.
    let second =
        engine::backup::backup(vault.clone(), "vm-b", BackupOptions::default(), Arc::new(NoProgress))
            .await
            .unwrap();
    assert_eq!(counts.asked.load(Ordering::SeqCst), 24);
    assert_eq!(counts.chunk_puts.load(Ordering::SeqCst), 12, "the vault had every chunk of the clone");
    assert_eq!(second.bytes_new, 0);
    assert_eq!(counts.chunk_heads.load(Ordering::SeqCst), 0);

    // When answers take 200 ms, chunks queue up meanwhile and the questions grow.
    counts.question_delay_ms.store(200, Ordering::SeqCst);
    let before = counts.questions.load(Ordering::SeqCst);
    engine::backup::backup(vault.clone(), "vm-c", BackupOptions::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    let questions = counts.questions.load(Ordering::SeqCst) - before;
    println!("vm-c, 200 ms per answer: 12 new chunks asked about in {questions} question(s)");
    assert_eq!(counts.asked.load(Ordering::SeqCst), 36);
    assert!(questions <= 6, "{questions} questions for 12 chunks: they were not batched");
    assert_eq!(counts.chunk_puts.load(Ordering::SeqCst), 24);

    let manifest = engine::points::find(&vault, "vm-b", &second.point_id).await.unwrap();
    let restored = dir.path().join("restored.raw");
    engine::restore::restore_disk(
        vault.clone(),
        &manifest,
        "root",
        &restored,
        disk::DiskFormat::Raw,
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    sh("qemu-img", &["compare", "-q", a.to_str().unwrap(), restored.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_question_covers_a_batch_and_only_the_missing_chunks_go_up() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, counts) = server_and_client(dir.path()).await;
    let vault = Vault::create(backend.clone(), InitEncryption::None).await.unwrap();
    let plaintext = |n: u8| vec![n; 64 << 10];
    for n in 0..6 {
        vault.put_chunk(&plaintext(n)).await.unwrap();
    }
    let puts_before = counts.chunk_puts.load(Ordering::SeqCst);
    let ids: Vec<ChunkId> = (0..16).map(|n| vault.keys().chunk_id(&plaintext(n))).collect();
    let session =
        vault::session::Session::begin(backend.clone(), "batch", "test", std::time::Duration::from_secs(60))
            .await
            .unwrap();
    let wanted = vault.chunks_to_upload(&session, &ids).await.unwrap();
    assert_eq!(counts.questions.load(Ordering::SeqCst), 1, "one question for the batch");
    assert_eq!(wanted, ids[6..].to_vec(), "the 10 chunks the vault lacks, in order");
    let sealed: Vec<SealedChunk> =
        (6..16).map(|n| vault.seal_chunk(ids[n as usize], &plaintext(n)).unwrap()).collect();
    let added = vault.put_sealed(sealed).await.unwrap();
    session.end().await.unwrap();
    assert_eq!(added.chunks, 10);
    assert_eq!(
        counts.chunk_puts.load(Ordering::SeqCst) - puts_before,
        10,
        "the 6 present chunks were not sent"
    );
    for n in 0..16 {
        assert_eq!(vault.get_chunk(&vault.keys().chunk_id(&[n; 64 << 10])).await.unwrap(), vec![n; 64 << 10]);
    }
}
