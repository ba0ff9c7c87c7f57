//! A vault in a local directory.
//!
//! Durability: every object is written to a temporary file in its final directory, fsynced,
//! then linked (create-if-absent) or renamed (compare-and-swap) into place. Directory entries
//! become durable when the directory is fsynced: compare-and-swap does it at once,
//! create-if-absent remembers the directory and [`Backend::flush`] fsyncs them all, so a
//! backup pays one directory fsync per touched directory, not one per chunk.
//!
//! Compare-and-swap holds an advisory `flock` on `.cas-lock` for the few microseconds of
//! read-compare-rename. The kernel drops it when the process dies: there is no stale lock.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::direct;
use super::{Backend, ObjectInfo, Put, Version, check_key};
use crate::error::{Result, VaultError, random_bytes};

const CAS_LOCK: &str = ".cas-lock";
const TMP_PREFIX: &str = ".tmp-";

/// A vault stored in a directory of the local filesystem.
#[derive(Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    unsynced_dirs: Mutex<HashSet<PathBuf>>,
    /// Cleared once the filesystem refuses direct I/O: everything is buffered from then on.
    direct: AtomicBool,
}

impl LocalBackend {
    /// A backend rooted at `root`; the directory is created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            inner: Arc::new(Inner {
                root: root.into(),
                unsynced_dirs: Mutex::new(HashSet::new()),
                direct: AtomicBool::new(true),
            }),
        }
    }

    /// The directory this backend stores into.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| VaultError::Failed(format!("storage worker failed: {e}")))?
    }
}

impl Inner {
    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn not_found(&self, key: &str) -> VaultError {
        VaultError::NotFound { location: self.location(), key: key.to_string() }
    }

    /// Create the parent directories of `path`, remembering every directory whose entries
    /// changed so flush can make them durable.
    fn make_parent(&self, path: &Path) -> Result<PathBuf> {
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        if !parent.is_dir() {
            let mut missing = vec![];
            let mut dir = parent.as_path();
            while !dir.is_dir() {
                missing.push(dir.to_path_buf());
                match dir.parent() {
                    Some(p) => dir = p,
                    None => break,
                }
            }
            fs::create_dir_all(&parent).map_err(|e| VaultError::io(&parent, e))?;
            let mut unsynced = self.lock_unsynced();
            for created in missing {
                if let Some(p) = created.parent() {
                    unsynced.insert(p.to_path_buf());
                }
            }
        }
        Ok(parent)
    }

    fn lock_unsynced(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        // A panic while holding this lock cannot leave the set inconsistent: take it anyway.
        self.unsynced_dirs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Write `data` to a fresh temporary file in `dir`, fsynced.
    fn write_temp(&self, dir: &Path, data: &[u8]) -> Result<PathBuf> {
        let mut suffix = [0u8; 8];
        random_bytes(&mut suffix)?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(suffix)));
        let result = (|| {
            let create = |direct: bool| {
                let mut options = if direct { direct::options() } else { OpenOptions::new() };
                options.write(true).create_new(true);
                let open = || options.open(&tmp);
                // A folder emptied and removed by GC's tidying meanwhile is made again.
                match open() {
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        fs::create_dir_all(dir)?;
                        open()
                    }
                    other => other,
                }
            };
            if self.goes_direct(data.len() as u64) {
                match create(true).and_then(|mut file| direct::write(&mut file, data).map(|()| file)) {
                    Ok(file) => return file.sync_all(),
                    Err(e) if direct::unsupported(&e) => {
                        self.direct.store(false, Ordering::Relaxed);
                        let _ = fs::remove_file(&tmp);
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut file = create(false)?;
            file.write_all(data)?;
            file.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(VaultError::io(&tmp, e));
        }
        Ok(tmp)
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<Put> {
        let path = self.path(key)?;
        if path.exists() {
            return Ok(Put::Existed);
        }
        let dir = self.make_parent(&path)?;
        let tmp = self.write_temp(&dir, data)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                self.lock_unsynced().insert(dir);
                Ok(Put::Created)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Put::Existed),
            Err(e) => Err(VaultError::io(&path, e)),
        }
    }

    /// Whether an object of `len` bytes is written and read with direct I/O (see [`direct`]).
    fn goes_direct(&self, len: u64) -> bool {
        len >= direct::DIRECT_MIN && self.direct.load(Ordering::Relaxed)
    }

    fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        let len = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.not_found(key)),
            Err(e) => return Err(VaultError::io(&path, e)),
        };
        if self.goes_direct(len) {
            match direct::read(&path, len) {
                Ok(Some(data)) => return Ok(data),
                Ok(None) => {} // it changed meanwhile: read it as it is now
                Err(e) if direct::unsupported(&e) => self.direct.store(false, Ordering::Relaxed),
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.not_found(key)),
                Err(e) => return Err(VaultError::io(&path, e)),
            }
        }
        match fs::read(&path) {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) => Err(VaultError::io(&path, e)),
        }
    }

    fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        match self.get(key) {
            Ok(data) => {
                let version = content_version(&data);
                Ok(Some((data, version)))
            }
            Err(VaultError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn compare_and_swap(&self, key: &str, expected: Option<&Version>, data: &[u8]) -> Result<Version> {
        let path = self.path(key)?;
        let dir = self.make_parent(&path)?;
        let lock_path = self.root.join(CAS_LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| VaultError::io(&lock_path, e))?;
        lock.lock().map_err(|e| VaultError::io(&lock_path, e))?;
        let current = self.get_versioned(key)?.map(|(_, v)| v);
        if current.as_ref() != expected {
            return Err(VaultError::Conflict { key: key.to_string() });
        }
        let tmp = self.write_temp(&dir, data)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(VaultError::io(&path, e));
        }
        sync_dir(&dir)?;
        self.flush()?;
        drop(lock);
        Ok(content_version(data))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    self.lock_unsynced().insert(dir.to_path_buf());
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VaultError::io(&path, e)),
        }
    }

    fn temporaries(&self, older_than: std::time::Duration, remove: bool) -> Result<u64> {
        let cutoff = std::time::SystemTime::now().checked_sub(older_than).unwrap_or(std::time::UNIX_EPOCH);
        let mut found = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(VaultError::io(&dir, e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(path);
                } else if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX)
                    && meta.modified().is_ok_and(|m| m < cutoff)
                {
                    found += 1;
                    if remove {
                        match fs::remove_file(&path) {
                            Err(e) if e.kind() != ErrorKind::NotFound => {
                                return Err(VaultError::io(&path, e));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    fn remove_empty_folders(&self, prefix: &str) -> Result<()> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        let mut removed = Vec::new();
        remove_empty_dirs(&dir, &mut removed);
        // A removed folder has nothing left to make durable; its parent's entry changed.
        let mut unsynced = self.lock_unsynced();
        for gone in &removed {
            unsynced.remove(gone);
        }
        for gone in &removed {
            if let Some(parent) = gone.parent().filter(|p| p.exists()) {
                unsynced.insert(parent.to_path_buf());
            }
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir_part = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let start = if dir_part.is_empty() { self.root.clone() } else { self.path(dir_part)? };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(VaultError::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| VaultError::io(&dir, e))?;
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let file_type = entry.file_type().map_err(|e| VaultError::io(entry.path(), e))?;
                if file_type.is_dir() {
                    stack.push(entry.path());
                } else if file_type.is_file() {
                    let path = entry.path();
                    let Ok(rel) = path.strip_prefix(&self.root) else { continue };
                    let key = rel.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
                    if key.starts_with(prefix) {
                        let size = entry.metadata().map_err(|e| VaultError::io(&path, e))?.len();
                        out.push(ObjectInfo { key, size });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = self.lock_unsynced().drain().collect();
        for dir in &dirs {
            if let Err(e) = sync_dir(dir) {
                // Keep what is still unsynced so a later flush retries it.
                self.lock_unsynced().extend(dirs.iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| VaultError::io(dir, e))
}

fn content_version(data: &[u8]) -> Version {
    Version(blake3::hash(data).to_hex().to_string())
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let key = key.to_string();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let key = key.to_string();
        self.blocking(move |inner| {
            let path = inner.path(&key)?;
            match fs::metadata(&path) {
                Ok(meta) => Ok(Some(meta.len())),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(VaultError::io(&path, e)),
            }
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<Put> {
        let key = key.to_string();
        self.blocking(move |inner| inner.put_if_absent(&key, &data)).await
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        let key = key.to_string();
        self.blocking(move |inner| inner.get_versioned(&key)).await
    }

    async fn compare_and_swap(&self, key: &str, expected: Option<&Version>, data: Bytes) -> Result<Version> {
        let key = key.to_string();
        let expected = expected.cloned();
        self.blocking(move |inner| inner.compare_and_swap(&key, expected.as_ref(), &data)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.blocking(move |inner| inner.delete(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| inner.list(&prefix)).await
    }

    async fn temporaries(&self, older_than: std::time::Duration, remove: bool) -> Result<u64> {
        self.blocking(move |inner| inner.temporaries(older_than, remove)).await
    }

    async fn remove_empty_folders(&self, prefix: &str) -> Result<()> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| inner.remove_empty_folders(&prefix)).await
    }

    async fn flush(&self) -> Result<()> {
        self.blocking(|inner| inner.flush()).await
    }
}

/// Remove `dir` and the folders below it that hold nothing (depth first), noting each one
/// removed; anything that holds a file, or that a writer fills meanwhile, stays.
fn remove_empty_dirs(dir: &Path, removed: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path(), removed);
            }
        }
    }
    // Fails (and is left) when not empty.
    if fs::remove_dir(dir).is_ok() {
        removed.push(dir.to_path_buf());
    }
}
