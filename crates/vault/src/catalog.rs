//! Catalog documents: small JSON documents (VMs, policies, protected items, settings) updated
//! by compare-and-swap, so two writers never lose each other's update.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Backend;
use crate::error::{Result, VaultError};

/// How often [`update`] re-reads and retries after losing a race before giving up.
pub const MAX_ATTEMPTS: usize = 64;

/// Read a catalog document; `None` if it does not exist.
pub async fn read<T: DeserializeOwned>(backend: &dyn Backend, key: &str) -> Result<Option<T>> {
    match backend.get_versioned(key).await? {
        Some((bytes, _)) => Ok(Some(parse(&bytes, key)?)),
        None => Ok(None),
    }
}

/// Every `.json` document under `prefix`, in key order (one vanishing meanwhile is skipped).
pub async fn read_all<T: DeserializeOwned>(backend: &dyn Backend, prefix: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for object in backend.list(prefix).await? {
        if object.key.ends_with(".json")
            && let Some(doc) = read(backend, &object.key).await?
        {
            out.push(doc);
        }
    }
    Ok(out)
}

/// Create a document that must not exist yet; [`VaultError::Exists`] if it does.
pub async fn create<T: Serialize>(backend: &dyn Backend, key: &str, value: &T) -> Result<()> {
    match backend.compare_and_swap(key, None, Bytes::from(encode(value, key)?)).await {
        Ok(_) => Ok(()),
        Err(VaultError::Conflict { .. }) => Err(VaultError::Exists { key: key.to_string() }),
        Err(e) => Err(e),
    }
}

/// Read-modify-write a document: `change` gets the current value (or `None`) and returns the
/// new one. On a lost race the document is read again and `change` runs again.
pub async fn update<T, F, E>(backend: &dyn Backend, key: &str, change: F) -> std::result::Result<T, E>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<T>) -> std::result::Result<T, E>,
    E: From<VaultError>,
{
    read_modify_write(backend, key, change, false).await
}

/// As [`update`], for a document its writer may rebuild: one that no longer parses is
/// replaced (`change` gets `None`), by compare-and-swap over the damaged copy.
pub async fn update_replacing_damaged<T, F, E>(
    backend: &dyn Backend,
    key: &str,
    change: F,
) -> std::result::Result<T, E>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<T>) -> std::result::Result<T, E>,
    E: From<VaultError>,
{
    read_modify_write(backend, key, change, true).await
}

async fn read_modify_write<T, F, E>(
    backend: &dyn Backend,
    key: &str,
    mut change: F,
    replace_damaged: bool,
) -> std::result::Result<T, E>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<T>) -> std::result::Result<T, E>,
    E: From<VaultError>,
{
    for _ in 0..MAX_ATTEMPTS {
        let current = backend.get_versioned(key).await?;
        let (value, version) = match current {
            Some((bytes, version)) => match parse(&bytes, key) {
                Ok(value) => (Some(value), Some(version)),
                Err(_) if replace_damaged => (None, Some(version)),
                Err(e) => return Err(e.into()),
            },
            None => (None, None),
        };
        let new = change(value)?;
        let bytes = encode(&new, key)?;
        match backend.compare_and_swap(key, version.as_ref(), Bytes::from(bytes)).await {
            Ok(_) => return Ok(new),
            Err(e) if e.is_retryable() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(VaultError::Conflict { key: key.to_string() }.into())
}

fn encode<T: Serialize>(value: &T, key: &str) -> Result<Vec<u8>> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| VaultError::Failed(format!("{key}: serialise: {e}")))?;
    bytes.extend_from_slice(b"\n");
    Ok(bytes)
}

fn parse<T: DeserializeOwned>(bytes: &[u8], key: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| VaultError::corrupt(key, format!("JSON: {e}")))
}
