//! Who wrote each job record and backup session (`<state>/owners.json`, mode 0600): a record
//! one token created may be changed or deleted only by that token or an admin, so one host
//! cannot make another host's completed backup read as failed, or make GC forget a running
//! backup by deleting its session. A record with no owner noted (written before the server kept
//! owners, or by an admin) may be changed by any token allowed to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vault::layout::{self, ObjectClass};

/// The owners of the records that have one, by object key.
pub struct Owners {
    path: PathBuf,
    owners: Mutex<BTreeMap<String, String>>,
}

/// Whether a key is a record with an owner, and which record that is (a cancel request
/// belongs to its job's record).
pub fn owned_record(key: &str) -> Option<String> {
    match ObjectClass::of(key) {
        ObjectClass::Job(id) | ObjectClass::JobCancel(id) => Some(layout::job(id).into()),
        ObjectClass::Session(_) => Some(key.to_string()),
        _ => None,
    }
}

/// Whether `key` is a record whose writer is noted (a cancel request is not: it belongs to its
/// job's record).
fn has_owner(key: &str) -> bool {
    matches!(ObjectClass::of(key), ObjectClass::Job(_) | ObjectClass::Session(_))
}

impl Owners {
    /// The owners kept in the server's state directory (none yet if the file is absent or
    /// unreadable: then nothing is refused for want of an owner).
    pub fn load(state: &Path) -> Owners {
        let path = state.join("owners.json");
        let owners =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Owners { path, owners: Mutex::new(owners) }
    }

    /// Whether `token` may change or delete `key`: it is no owned record, or has no owner, or
    /// `token` owns it.
    pub fn may_change(&self, key: &str, token: &str) -> bool {
        let Some(record) = owned_record(key) else { return true };
        let owners = self.owners.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        owners.get(&record).is_none_or(|owner| owner == token)
    }

    /// Note that `token` created `key` (a job record or session).
    pub fn created(&self, key: &str, token: &str) -> std::io::Result<()> {
        if !has_owner(key) {
            return Ok(());
        }
        self.change(|owners| {
            owners.insert(key.to_string(), token.to_string());
        })
    }

    /// Forget the owner of a deleted record.
    pub fn deleted(&self, key: &str) -> std::io::Result<()> {
        if !has_owner(key) {
            return Ok(());
        }
        self.change(|owners| {
            owners.remove(key);
        })
    }

    fn change(&self, edit: impl FnOnce(&mut BTreeMap<String, String>)) -> std::io::Result<()> {
        let mut owners = self.owners.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        edit(&mut owners);
        let bytes = serde_json::to_vec(&*owners).map_err(std::io::Error::other)?;
        let temporary = self.path.with_extension("json.tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &self.path)
    }
}
