//! The unlocked-key cache behind `vmvault key unlock`: one passphrase and one Argon2id run, then
//! scheduled and scripted commands find the master key here until it times out or `key lock`.
//!
//! Where it lives: the kernel's user keyring (key type `user`, description
//! `vmvault:<vault id>`, readable only by this uid, expired by the kernel), or where the kernel
//! refuses keyrings (some containers) a file `<runtime dir>/vmvault/<vault id>.key` of mode 0600
//! in a 0700 directory, holding the expiry time and the key. The trade-off: while unlocked, any
//! process of this user (root, for a hypervisor host) can read every backup without the
//! passphrase — as with ssh-agent. `key lock` ends it early.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use vault::VaultId;
use zeroize::Zeroizing;

const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_UNLINK: libc::c_long = 9;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_READ: libc::c_long = 11;
const KEYCTL_SET_TIMEOUT: libc::c_long = 15;
const KEYCTL_INVALIDATE: libc::c_long = 21;
/// Possessor and same-uid user may view, read, write, search, link, set attributes; no one else.
const KEY_PERMS: libc::c_long = 0x3f3f_0000;

/// Where a key was cached.
pub enum Store {
    /// The kernel user keyring.
    Keyring,
    /// A private runtime file.
    File(PathBuf),
}

fn description(vault: &VaultId) -> Result<CString> {
    Ok(CString::new(format!("vmvault:{vault}"))?)
}

fn runtime_file(vault: &VaultId) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        // SAFETY: getuid has no preconditions.
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vmvault-{}", unsafe { libc::getuid() })));
    base.join("vmvault").join(format!("{vault}.key"))
}

/// Cache the master key of `vault` for `seconds`.
pub fn store(vault: &VaultId, key: &Zeroizing<[u8; 32]>, seconds: u64) -> Result<Store> {
    forget(vault)?;
    let desc = description(vault)?;
    let kind = CString::new("user")?;
    // SAFETY: valid NUL-terminated strings and a 32-byte payload that outlive the call.
    let id = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            kind.as_ptr(),
            desc.as_ptr(),
            key.as_ptr(),
            key.len(),
            KEY_SPEC_USER_KEYRING,
        )
    };
    if id >= 0 {
        // SAFETY: keyctl with integer arguments only.
        let ok = unsafe {
            libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, id, KEY_PERMS) == 0
                && libc::syscall(libc::SYS_keyctl, KEYCTL_SET_TIMEOUT, id, seconds as libc::c_long) == 0
        };
        if ok {
            return Ok(Store::Keyring);
        }
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_INVALIDATE, id) };
    }
    let path = runtime_file(vault);
    store_file(&path, key, seconds)?;
    Ok(Store::File(path))
}

fn store_file(path: &Path, key: &Zeroizing<[u8; 32]>, seconds: u64) -> Result<()> {
    let dir = path.parent().context("runtime directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot protect {}", dir.display()))?;
    let expires = jiff::Timestamp::now().as_second().saturating_add(seconds as i64);
    let mut content = Zeroizing::new(Vec::with_capacity(40));
    content.extend_from_slice(&expires.to_le_bytes());
    content.extend_from_slice(key.as_ref());
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(&content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The cached master key of `vault`, if one is cached and still valid.
pub fn load(vault: &VaultId) -> Option<Zeroizing<[u8; 32]>> {
    load_keyring(vault).or_else(|| load_file(&runtime_file(vault)))
}

fn search_keyring(vault: &VaultId) -> Option<libc::c_long> {
    let desc = description(vault).ok()?;
    let kind = CString::new("user").ok()?;
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let id = unsafe {
        libc::syscall(libc::SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, kind.as_ptr(), desc.as_ptr(), 0)
    };
    (id >= 0).then_some(id)
}

fn load_keyring(vault: &VaultId) -> Option<Zeroizing<[u8; 32]>> {
    let id = search_keyring(vault)?;
    let mut key = Zeroizing::new([0u8; 32]);
    // SAFETY: a 32-byte buffer we own, its length passed alongside.
    let len = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_READ, id, key.as_mut_ptr(), key.len()) };
    (len == 32).then_some(key)
}

fn load_file(path: &Path) -> Option<Zeroizing<[u8; 32]>> {
    let meta = std::fs::metadata(path).ok()?;
    // SAFETY: getuid has no preconditions.
    if meta.uid() != unsafe { libc::getuid() } || meta.mode() & 0o077 != 0 || meta.len() != 40 {
        return None; // not ours, or readable by others: do not trust it
    }
    let content = Zeroizing::new(std::fs::read(path).ok()?);
    let mut expires = [0u8; 8];
    expires.copy_from_slice(content.get(..8)?);
    if i64::from_le_bytes(expires) <= jiff::Timestamp::now().as_second() {
        let _ = std::fs::remove_file(path);
        return None;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(content.get(8..40)?);
    Some(key)
}

/// Remove the cached key of `vault` from wherever it is. Returns whether one was there.
pub fn forget(vault: &VaultId) -> Result<bool> {
    let mut found = false;
    for _ in 0..8 {
        let Some(id) = search_keyring(vault) else { break };
        found = true;
        // SAFETY: keyctl with integer arguments only.
        let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_INVALIDATE, id) };
        if rc != 0 {
            // SAFETY: as above.
            let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_UNLINK, id, KEY_SPEC_USER_KEYRING) };
            if rc != 0 {
                bail!(
                    "cannot remove the cached key from the kernel keyring: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    let path = runtime_file(vault);
    if path.exists() {
        found = true;
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_file_holds_the_key_until_it_expires_and_is_refused_if_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmvault").join("v.key");
        let key = Zeroizing::new([7u8; 32]);
        store_file(&path, &key, 3600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_file(&path).as_deref(), Some(&[7u8; 32]));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_file(&path).is_none(), "a key file others can read is not trusted");

        std::fs::remove_file(&path).unwrap();
        store_file(&path, &key, 0).unwrap();
        assert!(load_file(&path).is_none(), "an expired key is not used");
        assert!(!path.exists(), "an expired key file is removed");
    }
}
