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
use vault::layout::ObjectClass;

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

    /// Whether this grant allows `access` to `key`; the key is classified by
    /// [`vault::layout`], the same module that names what the engine writes.
    pub fn allows(&self, access: Access, key: &str) -> bool {
        use Access::*;
        use ObjectClass as O;
        use Role::*;
        let object = ObjectClass::of(key);
        if object.vm().is_some_and(|vm| !self.sees(vm)) {
            return false;
        }
        if self.role == Admin {
            return true;
        }
        let backup_session = object.session_vm().is_some();
        match (access, object) {
            (Read, _) => true,
            // What a backup writes: new chunks and points, a new VM, its change tracking, its
            // session, its job record, and rescues of condemned chunks it reuses.
            (Create, O::Chunk(_) | O::Manifest { .. } | O::Index { .. } | O::GcRescue { .. }) => {
                self.role == BackupOperator
            }
            // A backup notes in the verify record the damaged chunks it wrote again.
            (Create | Update, O::Checkpoints(_) | O::Verified(_)) => self.role == BackupOperator,
            (Create | Update | Delete, O::Session(_)) if backup_session => self.role == BackupOperator,
            (Create | Update, O::ScheduleClaim(_)) => self.role == BackupOperator,
            // A restore as a new VM registers it.
            (Create, O::Vm(_)) => matches!(self.role, BackupOperator | RestoreOperator),
            (Create | Update, O::Job(_)) => matches!(self.role, BackupOperator | RestoreOperator),
            (Create | Delete, O::JobCancel(_)) => matches!(self.role, BackupOperator | RestoreOperator),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault::ChunkId;
    use vault::layout::{self, ObjectKey};

    /// Every role against every kind of object and access: `R` read, `C` create, `U` update,
    /// `D` delete; a letter means allowed, `-` denied.
    #[test]
    fn the_role_table() {
        let chunk = ChunkId::from_bytes([0xab; 32]);
        let table: &[(ObjectKey, [&str; 4])] = &[
            //  key                                 reader  backup-op restore-op admin
            (layout::config(), ["R---", "R---", "R---", "RCUD"]),
            (layout::key_file(), ["R---", "R---", "R---", "RCUD"]),
            (layout::chunk(&chunk), ["R---", "RC--", "R---", "RCUD"]),
            (layout::manifest("web", "p1"), ["R---", "RC--", "R---", "RCUD"]),
            (layout::index("web", "p1", "vda"), ["R---", "RC--", "R---", "RCUD"]),
            (layout::vm("web"), ["R---", "RC--", "RC--", "RCUD"]),
            (layout::checkpoints("web"), ["R---", "RCU-", "R---", "RCUD"]),
            (layout::verified("web"), ["R---", "RCU-", "R---", "RCUD"]),
            (layout::item("web"), ["R---", "R---", "R---", "RCUD"]),
            (layout::policy("gold"), ["R---", "R---", "R---", "RCUD"]),
            (layout::settings(), ["R---", "R---", "R---", "RCUD"]),
            (layout::group("shop"), ["R---", "R---", "R---", "RCUD"]),
            (layout::session("backup-web"), ["R---", "RCUD", "R---", "RCUD"]),
            (layout::schedule_claim("web"), ["R---", "RCU-", "R---", "RCUD"]),
            (layout::cleanup_claim(), ["R---", "R---", "R---", "RCUD"]),
            (layout::job("20261129T000000Z-abcdef"), ["R---", "RCU-", "RCU-", "RCUD"]),
            (layout::job_cancel("20261129T000000Z-abcdef"), ["R---", "RC-D", "RC-D", "RCUD"]),
            (layout::gc_state(), ["R---", "R---", "R---", "RCUD"]),
            (layout::gc_condemned("g1"), ["R---", "R---", "R---", "RCUD"]),
            (layout::gc_rescue("g1", &chunk), ["R---", "RC--", "R---", "RCUD"]),
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
        assert!(grant.allows(Access::Delete, &layout::manifest("web", "p1")));
        for key in [
            layout::manifest("db", "p1"),
            layout::vm("db"),
            layout::checkpoints("db"),
            layout::item("db"),
            layout::session("backup-db"),
        ] {
            assert!(!grant.allows(Access::Read, &key), "{key}");
        }
        // Shared objects carry no guest data and stay readable.
        assert!(grant.allows(Access::Read, &layout::chunk(&ChunkId::from_bytes([1; 32]))));
        assert!(grant.allows(Access::Read, &layout::policy("gold")));
        // A VM named like a prefix of another is still another VM.
        let scoped = Grant { role: Role::Reader, vms: vec!["web".into()] };
        assert!(!scoped.allows(Access::Read, &layout::manifest("web2", "p1")));
    }
}
