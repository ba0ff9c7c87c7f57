//! The one place that names vault objects: every object key is built here, and every key can
//! be parsed back into the [`ObjectClass`] it names.
//!
//! Nothing else in vmvault spells a prefix. The backend stores opaque keys; GC, verify, the
//! engine's catalog and the server's role table all go through this module, so what the
//! server allows and what the engine writes cannot drift apart.
//!
//! ```text
//! config                                  ObjectClass::Config
//! keys/master.key                         ObjectClass::KeyFile
//! chunks/<2 hex>/<64 hex>                 ObjectClass::Chunk
//! points/<vm>/<point>/manifest.json       ObjectClass::Manifest
//! points/<vm>/<point>/<disk>.fidx         ObjectClass::Index
//! catalog/vms/<vm>.json                   ObjectClass::Vm
//! catalog/policies/<name>.json            ObjectClass::Policy
//! catalog/items/<vm>.json                 ObjectClass::Item
//! catalog/groups/<name>.json              ObjectClass::Group
//! catalog/checkpoints/<vm>.json           ObjectClass::Checkpoints
//! catalog/verified/<vm>.json              ObjectClass::Verified
//! catalog/settings.json                   ObjectClass::Settings
//! catalog/schedule/<vm>.json              ObjectClass::ScheduleClaim
//! catalog/schedule/cleanup.json           ObjectClass::CleanupClaim
//! sessions/<name>.json                    ObjectClass::Session (backups: backup-<vm>)
//! gc/state.json                           ObjectClass::GcState
//! gc/<gc id>/condemned                    ObjectClass::GcCondemned
//! gc/<gc id>/rescued/<64 hex>             ObjectClass::GcRescue
//! jobs/<id>.json                          ObjectClass::Job
//! jobs/<id>.cancel                        ObjectClass::JobCancel
//! ```

use std::fmt;
use std::ops::Deref;

use crate::id::ChunkId;

const CONFIG: &str = "config";
const KEY_FILE: &str = "keys/master.key";
const CHUNKS: &str = "chunks/";
const POINTS: &str = "points/";
const MANIFEST_FILE: &str = "manifest.json";
const INDEX_EXT: &str = ".fidx";
const VMS: &str = "catalog/vms/";
const POLICIES: &str = "catalog/policies/";
const ITEMS: &str = "catalog/items/";
const GROUPS: &str = "catalog/groups/";
const CHECKPOINTS: &str = "catalog/checkpoints/";
const VERIFIED: &str = "catalog/verified/";
const SETTINGS: &str = "catalog/settings.json";
const SCHEDULE: &str = "catalog/schedule/";
const CLEANUP_CLAIM: &str = "cleanup";
const SESSIONS: &str = "sessions/";
const BACKUP_SESSION: &str = "backup-";
const GC: &str = "gc/";
const GC_STATE: &str = "gc/state.json";
const JOBS: &str = "jobs/";
const JSON: &str = ".json";
const CANCEL: &str = ".cancel";

/// The storage name of one vault object: what a backend stores it under. Built only by this
/// module, so its shape is always one of the classes below.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The key as the backend sees it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What this key names.
    pub fn class(&self) -> ObjectClass<'_> {
        ObjectClass::of(&self.0)
    }
}

impl Deref for ObjectKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ObjectKey> for String {
    fn from(key: ObjectKey) -> String {
        key.0
    }
}

impl From<&ObjectKey> for String {
    fn from(key: &ObjectKey) -> String {
        key.0.clone()
    }
}

fn key(parts: &[&str]) -> ObjectKey {
    ObjectKey(parts.concat())
}

/// The vault's signed config: a vault exists once this object does.
pub fn config() -> ObjectKey {
    key(&[CONFIG])
}

/// The wrapped master key.
pub fn key_file() -> ObjectKey {
    key(&[KEY_FILE])
}

/// A chunk: `chunks/<first two hex digits>/<64 hex digits>`.
pub fn chunk(id: &ChunkId) -> ObjectKey {
    let hex = id.to_hex();
    key(&[CHUNKS, &hex[..2], "/", &hex])
}

/// A point's manifest; a recovery point exists exactly when this object does.
pub fn manifest(vm: &str, point: &str) -> ObjectKey {
    key(&[POINTS, vm, "/", point, "/", MANIFEST_FILE])
}

/// One disk's fixed index in a point.
pub fn index(vm: &str, point: &str, disk: &str) -> ObjectKey {
    key(&[POINTS, vm, "/", point, "/", disk, INDEX_EXT])
}

/// A registered VM.
pub fn vm(name: &str) -> ObjectKey {
    key(&[VMS, name, JSON])
}

/// A policy.
pub fn policy(name: &str) -> ObjectKey {
    key(&[POLICIES, name, JSON])
}

/// A protected item (named by its VM).
pub fn item(vm: &str) -> ObjectKey {
    key(&[ITEMS, vm, JSON])
}

/// A consistency group.
pub fn group(name: &str) -> ObjectKey {
    key(&[GROUPS, name, JSON])
}

/// A VM's change-tracking checkpoints.
pub fn checkpoints(vm: &str) -> ObjectKey {
    key(&[CHECKPOINTS, vm, JSON])
}

/// What verify last found in each point of a VM.
pub fn verified(vm: &str) -> ObjectKey {
    key(&[VERIFIED, vm, JSON])
}

/// The vault-wide settings document.
pub fn settings() -> ObjectKey {
    key(&[SETTINGS])
}

/// The scheduler's claim of a VM's scheduled runs.
pub fn schedule_claim(vm: &str) -> ObjectKey {
    key(&[SCHEDULE, vm, JSON])
}

/// The scheduler's claim of the daily cleanup.
pub fn cleanup_claim() -> ObjectKey {
    key(&[SCHEDULE, CLEANUP_CLAIM, JSON])
}

/// A writer session's lease document.
pub fn session(name: &str) -> ObjectKey {
    key(&[SESSIONS, name, JSON])
}

/// The session name a backup of `vm` holds, so two backups of one VM never run at once.
pub fn backup_session_name(vm: &str) -> String {
    [BACKUP_SESSION, vm].concat()
}

/// The garbage collector's shared state.
pub fn gc_state() -> ObjectKey {
    key(&[GC_STATE])
}

/// The chunks one collection condemned.
pub fn gc_condemned(gc_id: &str) -> ObjectKey {
    key(&[GC, gc_id, "/condemned"])
}

/// A backup's rescue of one condemned chunk from one collection.
pub fn gc_rescue(gc_id: &str, id: &ChunkId) -> ObjectKey {
    key(&[GC, gc_id, "/rescued/", &id.to_hex()])
}

/// A job record.
pub fn job(id: &str) -> ObjectKey {
    key(&[JOBS, id, JSON])
}

/// A request to cancel a job.
pub fn job_cancel(id: &str) -> ObjectKey {
    key(&[JOBS, id, CANCEL])
}

/// A folder-like group of objects, for listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// The prefix as the backend's `list` takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Prefix {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn prefix(parts: &[&str]) -> Prefix {
    Prefix(parts.concat())
}

/// Every chunk.
pub fn chunks() -> Prefix {
    prefix(&[CHUNKS])
}

/// Every point of every VM.
pub fn points() -> Prefix {
    prefix(&[POINTS])
}

/// Every point of one VM.
pub fn points_of(vm: &str) -> Prefix {
    prefix(&[POINTS, vm, "/"])
}

/// Every registered VM.
pub fn vms() -> Prefix {
    prefix(&[VMS])
}

/// Every policy.
pub fn policies() -> Prefix {
    prefix(&[POLICIES])
}

/// Every protected item.
pub fn items() -> Prefix {
    prefix(&[ITEMS])
}

/// Every consistency group.
pub fn groups() -> Prefix {
    prefix(&[GROUPS])
}

/// Every VM's change-tracking document.
pub fn checkpoint_documents() -> Prefix {
    prefix(&[CHECKPOINTS])
}

/// Every VM's verify record.
pub fn verified_documents() -> Prefix {
    prefix(&[VERIFIED])
}

/// Every writer session.
pub fn sessions() -> Prefix {
    prefix(&[SESSIONS])
}

/// Every job record and cancel request.
pub fn jobs() -> Prefix {
    prefix(&[JOBS])
}

/// Everything one collection left (its condemned list and the rescues of it).
pub fn gc_run(gc_id: &str) -> Prefix {
    prefix(&[GC, gc_id, "/"])
}

/// The rescues made of one collection's condemned chunks.
pub fn gc_rescues(gc_id: &str) -> Prefix {
    prefix(&[GC, gc_id, "/rescued/"])
}

/// What an object key names, parsed back from its text. Names borrow from the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectClass<'a> {
    /// `config`.
    Config,
    /// `keys/master.key`.
    KeyFile,
    /// A well-formed chunk key.
    Chunk(ChunkId),
    /// A point's manifest.
    Manifest { vm: &'a str, point: &'a str },
    /// One disk's index in a point.
    Index { vm: &'a str, point: &'a str, disk: &'a str },
    /// Any other object under a VM's points (never written by vmvault).
    PointOther { vm: &'a str },
    /// A registered VM.
    Vm(&'a str),
    /// A policy.
    Policy(&'a str),
    /// A protected item.
    Item(&'a str),
    /// A consistency group.
    Group(&'a str),
    /// A VM's checkpoints.
    Checkpoints(&'a str),
    /// What verify last found in a VM's points.
    Verified(&'a str),
    /// The settings document.
    Settings,
    /// A scheduler's claim of a VM's runs.
    ScheduleClaim(&'a str),
    /// A scheduler's claim of the daily cleanup.
    CleanupClaim,
    /// A writer session; [`ObjectClass::session_vm`] tells whose backup it is.
    Session(&'a str),
    /// GC state.
    GcState,
    /// A collection's condemned list.
    GcCondemned(&'a str),
    /// A rescue of a condemned chunk.
    GcRescue { gc_id: &'a str, chunk: &'a str },
    /// A job record.
    Job(&'a str),
    /// A job's cancel request.
    JobCancel(&'a str),
    /// Anything else: not an object vmvault writes.
    Unknown,
}

/// A class made from the one name in its key.
type Named<'a> = fn(&'a str) -> ObjectClass<'a>;

/// One path segment: not empty, no `/`.
fn segment(text: &str) -> Option<&str> {
    (!text.is_empty() && !text.contains('/')).then_some(text)
}

/// `<prefix><name><suffix>` with `name` one segment.
fn named<'a>(key: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    segment(key.strip_prefix(prefix)?.strip_suffix(suffix)?)
}

impl<'a> ObjectClass<'a> {
    /// Classify any key text (for example one a client sent to the server).
    pub fn of(key: &'a str) -> ObjectClass<'a> {
        use ObjectClass::*;
        match key {
            CONFIG => return Config,
            KEY_FILE => return KeyFile,
            SETTINGS => return Settings,
            GC_STATE => return GcState,
            _ => {}
        }
        if key.starts_with(CHUNKS) {
            return chunk_id_of(key).map_or(Unknown, Chunk);
        }
        if let Some(rest) = key.strip_prefix(POINTS) {
            return Self::point(rest);
        }
        if let Some(name) = named(key, SCHEDULE, JSON) {
            return if name == CLEANUP_CLAIM { CleanupClaim } else { ScheduleClaim(name) };
        }
        let documents: [(&str, Named<'a>); 6] = [
            (VMS, Vm),
            (POLICIES, Policy),
            (ITEMS, Item),
            (GROUPS, Group),
            (CHECKPOINTS, Checkpoints),
            (VERIFIED, Verified),
        ];
        for (prefix, class) in documents {
            if let Some(name) = named(key, prefix, JSON) {
                return class(name);
            }
        }
        if let Some(name) = named(key, SESSIONS, JSON) {
            return Session(name);
        }
        if let Some(id) = named(key, JOBS, JSON) {
            return Job(id);
        }
        if let Some(id) = named(key, JOBS, CANCEL) {
            return JobCancel(id);
        }
        if let Some(rest) = key.strip_prefix(GC) {
            let mut parts = rest.split('/');
            return match (parts.next().and_then(segment), parts.next(), parts.next(), parts.next()) {
                (Some(gc_id), Some("condemned"), None, None) => GcCondemned(gc_id),
                (Some(gc_id), Some("rescued"), Some(chunk), None) if segment(chunk).is_some() => {
                    GcRescue { gc_id, chunk }
                }
                _ => Unknown,
            };
        }
        Unknown
    }

    fn point(rest: &'a str) -> ObjectClass<'a> {
        let mut parts = rest.split('/');
        let (Some(vm), point, file, extra) =
            (parts.next().and_then(segment), parts.next(), parts.next(), parts.next())
        else {
            return ObjectClass::Unknown;
        };
        match (point.and_then(segment), file.and_then(segment), extra) {
            (Some(point), Some(MANIFEST_FILE), None) => ObjectClass::Manifest { vm, point },
            (Some(point), Some(file), None) => match file.strip_suffix(INDEX_EXT).and_then(segment) {
                Some(disk) => ObjectClass::Index { vm, point, disk },
                None => ObjectClass::PointOther { vm },
            },
            _ => ObjectClass::PointOther { vm },
        }
    }

    /// The VM this object belongs to, if it belongs to one.
    pub fn vm(&self) -> Option<&'a str> {
        use ObjectClass::*;
        match *self {
            Manifest { vm, .. } | Index { vm, .. } | PointOther { vm } => Some(vm),
            Vm(vm) | Item(vm) | Checkpoints(vm) | Verified(vm) | ScheduleClaim(vm) => Some(vm),
            Session(_) => self.session_vm(),
            _ => None,
        }
    }

    /// For a backup's session, the VM being backed up.
    pub fn session_vm(&self) -> Option<&'a str> {
        match *self {
            ObjectClass::Session(name) => name.strip_prefix(BACKUP_SESSION).and_then(segment),
            _ => None,
        }
    }

    /// For a job record or cancel request, the job id (whose record is [`job`]).
    pub fn job_id(&self) -> Option<&'a str> {
        match *self {
            ObjectClass::Job(id) | ObjectClass::JobCancel(id) => Some(id),
            _ => None,
        }
    }
}

/// Parse a chunk's key back into its id; `None` for anything else, including a key that
/// names an id in another spelling (upper-case hex) than the one [`chunk`] writes.
pub fn chunk_id_of(key: &str) -> Option<ChunkId> {
    let hex = key.strip_prefix(CHUNKS)?.split_once('/')?.1;
    let id: ChunkId = hex.parse().ok()?;
    (chunk(&id).as_str() == key).then_some(id)
}

/// For a key listed under [`points`], the VM it belongs to.
pub fn vm_under_points(key: &str) -> Option<&str> {
    ObjectClass::of(key).vm().filter(|_| key.starts_with(POINTS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_back_to_its_class() {
        let id = ChunkId::from_bytes([0xab; 32]);
        let hex = id.to_hex();
        let cases: Vec<(ObjectKey, ObjectClass)> = vec![
            (config(), ObjectClass::Config),
            (key_file(), ObjectClass::KeyFile),
            (chunk(&id), ObjectClass::Chunk(id)),
            (manifest("web", "p1"), ObjectClass::Manifest { vm: "web", point: "p1" }),
            (index("web", "p1", "vda"), ObjectClass::Index { vm: "web", point: "p1", disk: "vda" }),
            (vm("web"), ObjectClass::Vm("web")),
            (policy("gold"), ObjectClass::Policy("gold")),
            (item("web"), ObjectClass::Item("web")),
            (group("shop"), ObjectClass::Group("shop")),
            (checkpoints("web"), ObjectClass::Checkpoints("web")),
            (verified("web"), ObjectClass::Verified("web")),
            (settings(), ObjectClass::Settings),
            (schedule_claim("web"), ObjectClass::ScheduleClaim("web")),
            (cleanup_claim(), ObjectClass::CleanupClaim),
            (session("backup-web"), ObjectClass::Session("backup-web")),
            (gc_state(), ObjectClass::GcState),
            (gc_condemned("g1"), ObjectClass::GcCondemned("g1")),
            (gc_rescue("g1", &id), ObjectClass::GcRescue { gc_id: "g1", chunk: &hex }),
            (job("j1"), ObjectClass::Job("j1")),
            (job_cancel("j1"), ObjectClass::JobCancel("j1")),
        ];
        for (key, class) in &cases {
            assert_eq!(key.class(), *class, "{key}");
        }
        assert_eq!(session(&backup_session_name("web")).class().vm(), Some("web"));
        assert_eq!(session("other").class().vm(), None);
        assert_eq!(job_cancel("j1").class().job_id(), Some("j1"));
    }

    #[test]
    fn keys_vmvault_never_writes_are_unknown_or_other() {
        for text in
            ["", "chunks/zz/junk", "chunks/ab", "catalog/vms/x/y.json", "jobs/x/y.json", "gc/g1/x", "other"]
        {
            assert_eq!(ObjectClass::of(text), ObjectClass::Unknown, "{text}");
        }
        assert_eq!(ObjectClass::of("points/web/p1/notes.txt"), ObjectClass::PointOther { vm: "web" });
        assert_eq!(ObjectClass::of("points/web"), ObjectClass::PointOther { vm: "web" });
        assert_eq!(vm_under_points("points/web/p1/manifest.json"), Some("web"));
        assert_eq!(vm_under_points("catalog/vms/web.json"), None);
    }

    #[test]
    fn prefixes_cover_their_keys() {
        let id = ChunkId::from_bytes([1; 32]);
        assert!(chunk(&id).starts_with(chunks().as_str()));
        assert!(manifest("web", "p").starts_with(points_of("web").as_str()));
        assert!(!manifest("web2", "p").starts_with(points_of("web").as_str()));
        assert!(index("web", "p", "d").starts_with(points().as_str()));
        assert!(vm("a").starts_with(vms().as_str()));
        assert!(policy("a").starts_with(policies().as_str()));
        assert!(item("a").starts_with(items().as_str()));
        assert!(group("a").starts_with(groups().as_str()));
        assert!(checkpoints("a").starts_with(checkpoint_documents().as_str()));
        assert!(verified("a").starts_with(verified_documents().as_str()));
        assert!(session("a").starts_with(sessions().as_str()));
        assert!(job("a").starts_with(jobs().as_str()) && job_cancel("a").starts_with(jobs().as_str()));
        assert!(gc_rescue("g", &id).starts_with(gc_rescues("g").as_str()));
        assert!(gc_condemned("g").starts_with(gc_run("g").as_str()));
    }
}
