//! Who may do what to which vault object: one pure function of a token's role and VM scope,
//! the kind of access, and the object key — so the whole policy is one table, tested as one.
//!
//! Roles follow Azure Backup's: `reader` lists and shows; `backup-operator` registers VMs and
//! backs up, but can never delete or overwrite what exists (a compromised hypervisor host
//! cannot destroy its backups: chunks, indexes and manifests are write-once, and retention is
//! not its to change); `restore-operator` reads and restores; `admin` does everything.
//! A token scoped to VMs sees and touches only those VMs' objects (points, registration,
//! change tracking, protection, backup session); shared objects (chunks, policies, settings,
//! job records, GC state) carry no guest data and stay visible.

use serde::{Deserialize, Serialize};

/// A token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// List and show.
    Reader,
    /// Register VMs and back up; append-only.
    BackupOperator,
    /// Read and restore.
    RestoreOperator,
    /// Everything.
    Admin,
}

impl Role {
    /// The name used on the command line and in token files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::BackupOperator => "backup-operator",
            Role::RestoreOperator => "restore-operator",
            Role::Admin => "admin",
        }
    }

    /// Parse a `--role` argument.
    pub fn parse(text: &str) -> Option<Role> {
        [Role::Reader, Role::BackupOperator, Role::RestoreOperator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// A kind of access to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Get, head, list.
    Read,
    /// Write an object that does not exist yet.
    Create,
    /// Replace an existing mutable document.
    Update,
    /// Delete.
    Delete,
}

/// What kind of object a key names, and the VM it belongs to, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Object<'a> {
    /// `config`, `keys/…`: the vault's identity and wrapped key.
    Identity,
    /// `chunks/…`.
    Chunk,
    /// `points/<vm>/…`.
    Point(&'a str),
    /// `catalog/vms/<vm>.json`.
    VmRecord(&'a str),
    /// `catalog/checkpoints/<vm>.json`.
    Checkpoint(&'a str),
    /// `catalog/items/<vm>.json`: protection and retention.
    Item(&'a str),
    /// `sessions/backup-<vm>.json`.
    BackupSession(&'a str),
    /// `catalog/schedule/<vm>.json`: a host's scheduler claims a VM's run.
    ScheduleClaim(&'a str),
    /// `jobs/<id>.json`.
    Job,
    /// `jobs/<id>.cancel`: removed by the job when it ends.
    CancelRequest,
    /// `gc/<id>/rescued/<chunk>`.
    Rescue,
    /// Policies, settings, groups, schedule claims, GC state, anything else.
    Shared,
}

fn classify(key: &str) -> Object<'_> {
    let vm_json = |rest: &'static str| key.strip_prefix(rest).and_then(|r| r.strip_suffix(".json"));
    if key == "config" || key.starts_with("keys/") {
        Object::Identity
    } else if key.starts_with("chunks/") {
        Object::Chunk
    } else if let Some(rest) = key.strip_prefix("points/") {
        Object::Point(rest.split('/').next().unwrap_or_default())
    } else if let Some(vm) = vm_json("catalog/vms/") {
        Object::VmRecord(vm)
    } else if let Some(vm) = vm_json("catalog/checkpoints/") {
        Object::Checkpoint(vm)
    } else if let Some(vm) = vm_json("catalog/items/") {
        Object::Item(vm)
    } else if let Some(vm) = vm_json("catalog/schedule/").filter(|vm| *vm != "cleanup") {
        Object::ScheduleClaim(vm)
    } else if let Some(vm) = vm_json("sessions/backup-") {
        Object::BackupSession(vm)
    } else if key.starts_with("jobs/") && key.ends_with(".cancel") {
        Object::CancelRequest
    } else if key.starts_with("jobs/") {
        Object::Job
    } else if key.starts_with("gc/") && key.contains("/rescued/") {
        Object::Rescue
    } else {
        Object::Shared
    }
}

/// A token's rights: its role, and the VMs it is limited to (empty: all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// VMs it may see; empty means every VM.
    pub vms: Vec<String>,
}

impl Grant {
    fn sees(&self, vm: &str) -> bool {
        self.vms.is_empty() || self.vms.iter().any(|v| v == vm)
    }

    /// Whether this grant allows `access` to `key`.
    pub fn allows(&self, access: Access, key: &str) -> bool {
        use Access::*;
        use Role::*;
        let object = classify(key);
        let vm = match object {
            Object::Point(vm)
            | Object::VmRecord(vm)
            | Object::Checkpoint(vm)
            | Object::Item(vm)
            | Object::BackupSession(vm)
            | Object::ScheduleClaim(vm) => Some(vm),
            _ => None,
        };
        if vm.is_some_and(|vm| !self.sees(vm)) {
            return false;
        }
        if self.role == Admin {
            return true;
        }
        match (access, object) {
            (Read, _) => true,
            // What a backup writes: new chunks and points, a new VM, its change tracking, its
            // session, its job record, and rescues of condemned chunks it reuses.
            (Create, Object::Chunk | Object::Point(_) | Object::Rescue) => self.role == BackupOperator,
            (Create | Update, Object::Checkpoint(_)) => self.role == BackupOperator,
            (Create | Update | Delete, Object::BackupSession(_)) => self.role == BackupOperator,
            (Create | Update, Object::ScheduleClaim(_)) => self.role == BackupOperator,
            // A restore as a new VM registers it.
            (Create, Object::VmRecord(_)) => matches!(self.role, BackupOperator | RestoreOperator),
            (Create | Update, Object::Job) => matches!(self.role, BackupOperator | RestoreOperator),
            (Create | Delete, Object::CancelRequest) => matches!(self.role, BackupOperator | RestoreOperator),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every role against every kind of object and access: `R` read, `C` create, `U` update,
    /// `D` delete; a letter means allowed, `-` denied.
    #[test]
    fn the_role_table() {
        let table: &[(&str, [&str; 4])] = &[
            //  key                                 reader  backup-op restore-op admin
            ("config", ["R---", "R---", "R---", "RCUD"]),
            ("keys/master.key", ["R---", "R---", "R---", "RCUD"]),
            ("chunks/ab/abcd", ["R---", "RC--", "R---", "RCUD"]),
            ("points/web/p1/manifest.json", ["R---", "RC--", "R---", "RCUD"]),
            ("points/web/p1/vda.fidx", ["R---", "RC--", "R---", "RCUD"]),
            ("catalog/vms/web.json", ["R---", "RC--", "RC--", "RCUD"]),
            ("catalog/checkpoints/web.json", ["R---", "RCU-", "R---", "RCUD"]),
            ("catalog/items/web.json", ["R---", "R---", "R---", "RCUD"]),
            ("catalog/policies/gold.json", ["R---", "R---", "R---", "RCUD"]),
            ("catalog/settings.json", ["R---", "R---", "R---", "RCUD"]),
            ("catalog/groups/shop.json", ["R---", "R---", "R---", "RCUD"]),
            ("sessions/backup-web.json", ["R---", "RCUD", "R---", "RCUD"]),
            ("catalog/schedule/web.json", ["R---", "RCU-", "R---", "RCUD"]),
            ("catalog/schedule/cleanup.json", ["R---", "R---", "R---", "RCUD"]),
            ("jobs/20261129T000000Z-abcdef.json", ["R---", "RCU-", "RCU-", "RCUD"]),
            ("jobs/20261129T000000Z-abcdef.cancel", ["R---", "RC-D", "RC-D", "RCUD"]),
            ("gc/state.json", ["R---", "R---", "R---", "RCUD"]),
            ("gc/g1/condemned", ["R---", "R---", "R---", "RCUD"]),
            ("gc/g1/rescued/abcd", ["R---", "RC--", "R---", "RCUD"]),
        ];
        let roles = [Role::Reader, Role::BackupOperator, Role::RestoreOperator, Role::Admin];
        let accesses =
            [(Access::Read, 'R'), (Access::Create, 'C'), (Access::Update, 'U'), (Access::Delete, 'D')];
        for (key, row) in table {
            for (role, expected) in roles.iter().zip(row) {
                let grant = Grant { role: *role, vms: vec![] };
                let got: String = accesses
                    .iter()
                    .map(|(access, letter)| if grant.allows(*access, key) { *letter } else { '-' })
                    .collect();
                assert_eq!(&got, expected, "{} on {key}", role.as_str());
            }
        }
    }

    #[test]
    fn a_scoped_token_touches_only_its_vms() {
        let grant = Grant { role: Role::Admin, vms: vec!["web".into()] };
        assert!(grant.allows(Access::Delete, "points/web/p1/manifest.json"));
        for key in [
            "points/db/p1/manifest.json",
            "catalog/vms/db.json",
            "catalog/checkpoints/db.json",
            "catalog/items/db.json",
            "sessions/backup-db.json",
        ] {
            assert!(!grant.allows(Access::Read, key), "{key}");
        }
        // Shared objects carry no guest data and stay readable.
        assert!(grant.allows(Access::Read, "chunks/ab/abcd"));
        assert!(grant.allows(Access::Read, "catalog/policies/gold.json"));
        // A VM named like a prefix of another is still another VM.
        let scoped = Grant { role: Role::Reader, vms: vec!["web".into()] };
        assert!(!scoped.allows(Access::Read, "points/web2/p1/manifest.json"));
    }
}
