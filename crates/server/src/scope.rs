//! Job records name their VM inside, not in their key (`jobs/<id>.json`), so what a
//! VM-scoped token may see of them is decided by reading them: only the jobs of its own VMs,
//! never a job of another VM or one for the whole vault (prune, GC), which could name others.

use serde::Deserialize;
use vault::VaultError;
use vault::backend::Backend;
use vault::layout::{self, ObjectClass, ObjectKey};

use crate::auth::Grant;

/// The job record a key belongs to: `jobs/<id>.json` itself, or the record its cancel request
/// `jobs/<id>.cancel` is for.
fn job_record_of(key: &str) -> Option<ObjectKey> {
    ObjectClass::of(key).job_id().map(layout::job)
}

/// Whether `grant` may see the job record `bytes` (anything unreadable counts as not its own).
fn sees_job(grant: &Grant, bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct JobVm {
        vm: Option<String>,
    }
    grant.vms.is_empty()
        || serde_json::from_slice::<JobVm>(bytes)
            .ok()
            .and_then(|job| job.vm)
            .is_some_and(|vm| grant.vms.contains(&vm))
}

/// Whether `grant` may touch the job object `key`: the record as stored, if there is one, and
/// the new content of a record being written (`new`) must both be jobs of its VMs.
pub async fn may_touch_job(
    backend: &dyn Backend,
    grant: &Grant,
    key: &str,
    new: Option<&[u8]>,
) -> Result<bool, VaultError> {
    let Some(record) = job_record_of(key).filter(|_| !grant.vms.is_empty()) else { return Ok(true) };
    if let Some(new) = new.filter(|_| record.as_str() == key)
        && !sees_job(grant, new)
    {
        return Ok(false);
    }
    Ok(match backend.get(&record).await {
        Ok(stored) => sees_job(grant, &stored),
        Err(VaultError::NotFound { .. }) => true,
        Err(e) => return Err(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn a_scoped_grant_sees_only_jobs_of_its_vms() {
        let scoped = Grant { role: Role::Reader, vms: vec!["web".into()] };
        let all = Grant { role: Role::Reader, vms: vec![] };
        assert!(sees_job(&scoped, br#"{"vm": "web", "id": "j1"}"#));
        for other in [&br#"{"vm": "db"}"#[..], br#"{"vm": null}"#, b"{}", b"not json"] {
            assert!(!sees_job(&scoped, other), "{}", String::from_utf8_lossy(other));
            assert!(sees_job(&all, other));
        }
        assert_eq!(job_record_of(&layout::job_cancel("j1")), Some(layout::job("j1")));
        assert_eq!(job_record_of(&layout::job("j1")), Some(layout::job("j1")));
        assert_eq!(job_record_of(&layout::manifest("web", "p")), None);
    }
}
