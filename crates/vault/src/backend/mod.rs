//! Where vault objects are kept. One trait, so a local directory and object storage are both
//! first-class and callers never know which they talk to.
//!
//! Objects are named by keys: `/`-separated relative paths of ASCII letters, digits, `.`, `-`
//! and `_`, never starting with `.`. Two kinds of write exist, matching what object stores
//! can do atomically:
//! - create-if-absent, for content-addressed and write-once objects (chunks, indexes,
//!   manifests): a second writer of the same key finds it present and writes nothing;
//! - compare-and-swap, for small mutable documents (catalog, key file): the writer names
//!   the version it read, and loses with [`VaultError::Conflict`] if someone wrote since.

mod direct;
mod local;
mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

pub use local::LocalBackend;
pub use s3::{MULTIPART_FROM, S3Backend};

use crate::error::{Result, VaultError};
use crate::id::ChunkId;
use crate::layout;

/// Lookups a backend runs at once when it answers "which chunks are missing" one by one.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// Opaque version of a mutable document, as returned by a read and required by a swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version(pub String);

/// What a create-if-absent write found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// This call stored the object.
    Created,
    /// The object was already there; nothing was written.
    Existed,
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Storage for vault objects.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Human-readable location for messages (a path or a URL), never holding credentials.
    fn location(&self) -> String;

    /// Read a whole object; [`VaultError::NotFound`] if it is absent.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Size of an object, or `None` if it is absent.
    async fn head(&self, key: &str) -> Result<Option<u64>>;

    /// Store an object unless one with this key exists. Durable after [`Backend::flush`].
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<Put>;

    /// Read a mutable document with its version; `None` if it is absent.
    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>>;

    /// Replace a mutable document if its version is still `expected` (`None`: must be absent).
    /// Durable on return. Returns the new version.
    async fn compare_and_swap(&self, key: &str, expected: Option<&Version>, data: Bytes) -> Result<Version>;

    /// Delete an object; deleting an absent object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// All objects whose key starts with `prefix` (a directory-like prefix ending in `/`).
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Make every earlier `put_if_absent` and `delete` durable. Called before a manifest is
    /// committed, so a committed point never references a chunk a crash could lose.
    async fn flush(&self) -> Result<()>;

    /// Whether every request crosses a network. A backup then asks which of its new chunks
    /// the vault lacks a batch at a time, and seals and uploads those on other threads,
    /// instead of looking up each chunk on its own (cheap only on a local disk).
    fn is_remote(&self) -> bool {
        false
    }

    /// Temporary files of writes that never finished (their writer died) and are older than
    /// `older_than`: counted, and removed when `remove`. Stores whose writes are atomic by
    /// themselves (object stores) have none.
    async fn temporaries(&self, older_than: std::time::Duration, remove: bool) -> Result<u64> {
        let _ = (older_than, remove);
        Ok(0)
    }

    /// Remove the folders left empty under `prefix` (and `prefix` itself, if empty): objects
    /// deleted from a directory store leave their folders. Object stores have no folders.
    async fn remove_empty_folders(&self, prefix: &str) -> Result<()> {
        let _ = prefix;
        Ok(())
    }

    /// The chunks of `ids` the vault does not hold, in the order given. A server answers a
    /// whole batch in one request; other backends look the chunks up several at a time.
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let found: Vec<(ChunkId, bool)> =
            futures::stream::iter(ids.iter().copied())
                .map(|id| async move {
                    Ok::<_, VaultError>((id, self.head(&layout::chunk(&id)).await?.is_some()))
                })
                .buffered(LOOKUPS_IN_FLIGHT)
                .try_collect()
                .await?;
        Ok(found.into_iter().filter(|(_, present)| !present).map(|(id, _)| id).collect())
    }
}

/// Longest object key, and longest part of one, a backend accepts (vmvault's are far shorter).
pub const MAX_KEY_LEN: usize = 1024;
const MAX_PART_LEN: usize = 255;

/// Refuse keys that could name something outside the vault or a temporary file, or that no
/// file system could hold.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.split('/').all(|part| {
            !part.is_empty()
                && part.len() <= MAX_PART_LEN
                && !part.starts_with('.')
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        });
    if ok {
        return Ok(());
    }
    let shown: String = key.chars().take(80).collect();
    let more = if shown.len() < key.len() { "…" } else { "" };
    Err(VaultError::Invalid(format!("{shown:?}{more} is not a valid vault object key")))
}
