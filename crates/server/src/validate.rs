//! What the server checks in every object written to it, by the object's class, so that a
//! client holding a write token — a hypervisor host that may be compromised — can add to the
//! vault only what vmvault itself would write:
//!
//! - a **chunk** is a well-formed blob whose stored checksum holds, no larger than a chunk;
//! - an **index** is a well-formed fixed index;
//! - a **manifest** names the VM and point of its key, carries a valid point signature under
//!   the vault's public point key (a vault made before points were signed has none: structure
//!   only), is not dated in the future, and every index and chunk it
//!   references is already in the vault (a manifest is the last object of a point);
//! - a **document** (job record, session, checkpoints, verify record, schedule claim, catalog
//!   record) parses as its schema and names what its key names;
//! - anything else is not an object vmvault writes, and is refused.
//!
//! The role table ([`crate::auth`]) decides who may write a class; this module decides what
//! may be written. Malformed input is [`ErrorKind::Invalid`] (400); a manifest that is
//! well-formed but forged, unsigned or incomplete is [`ErrorKind::Damaged`] (422).

use std::collections::HashSet;
use std::sync::Arc;

use engine::catalog::checkpoint::Checkpoints;
use engine::catalog::group::ConsistencyGroup;
use engine::catalog::item::ProtectedItem;
use engine::catalog::job::JobRecord;
use engine::catalog::policy::Policy;
use engine::catalog::settings::Settings;
use engine::catalog::verified::VerifyRecord;
use engine::catalog::vm::VmRecord;
use engine::scheduler::ScheduleState;
use jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use vault::backend::Backend;
use vault::layout::ObjectClass;
use vault::session::SessionRecord;
use vault::{ChunkId, ErrorKind, FixedIndex, Manifest, Vault};

/// Largest stored chunk: a whole block, stored uncompressed, with its header, nonce and tag.
pub const MAX_CHUNK_OBJECT: usize = vault::index::CHUNK_SIZE as usize + 4096;

/// Largest document (job records, sessions, catalog records).
pub const MAX_DOCUMENT: usize = 4 << 20;

/// How far in the future a point may be dated (clocks differ a little).
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(5);

/// Why a write was refused: what, and its kind (which decides the status).
#[derive(Debug)]
pub struct Rejected {
    /// Invalid (malformed) or Damaged (forged or incomplete).
    pub kind: ErrorKind,
    /// One line naming the key.
    pub message: String,
}

fn malformed(key: &str, why: impl std::fmt::Display) -> Rejected {
    Rejected { kind: ErrorKind::Invalid, message: format!("{key}: {why}") }
}

fn forged(key: &str, why: impl std::fmt::Display) -> Rejected {
    Rejected { kind: ErrorKind::Damaged, message: format!("{key}: refused: {why}") }
}

/// Check `body` as the object `key` names, in the vault `backend` serves (a manifest's
/// signature and the objects it references are checked against it).
pub async fn check_write(backend: &Arc<dyn Backend>, key: &str, body: &[u8]) -> Result<(), Rejected> {
    check_contents(key, body)?;
    if let ObjectClass::Manifest { vm, point } = ObjectClass::of(key) {
        let vault = Vault::open(Arc::clone(backend)).await.map_err(|e| forged(key, e))?;
        check_manifest(&vault, key, vm, point, body).await?;
    }
    Ok(())
}

/// Everything that can be checked of `body` without the vault: its class, its size, its
/// format (for a manifest, only that it is not too big; [`check_write`] does the rest). No
/// input makes it panic (fuzz target `upload`).
pub fn check_contents(key: &str, body: &[u8]) -> Result<(), Rejected> {
    use ObjectClass as O;
    let class = ObjectClass::of(key);
    if !matches!(class, O::Chunk(_)) && body.len() > MAX_DOCUMENT {
        return Err(malformed(key, format!("{} bytes, more than a document may hold", body.len())));
    }
    match class {
        O::Chunk(id) => check_chunk(key, &id, body),
        O::Index { .. } => FixedIndex::decode(body, key).map(|_| ()).map_err(|e| malformed(key, e)),
        O::Manifest { .. } => Ok(()),
        O::Job(id) => named::<JobRecord>(key, body, |r| r.id == id),
        O::GcRescue { chunk, .. } if chunk.parse::<ChunkId>().is_err() => {
            Err(malformed(key, "names no chunk"))
        }
        O::JobCancel(_) | O::GcRescue { .. } if body.len() <= 1024 => Ok(()),
        O::Session(name) => named::<SessionRecord>(key, body, |s| s.name == name),
        O::Checkpoints(_) => parses::<Checkpoints>(key, body),
        O::Verified(_) => parses::<VerifyRecord>(key, body),
        O::ScheduleClaim(_) | O::CleanupClaim => parses::<ScheduleState>(key, body),
        O::Vm(name) => named::<VmRecord>(key, body, |r| r.name == name),
        O::Item(vm) => named::<ProtectedItem>(key, body, |r| r.vm == vm),
        O::Policy(name) => named::<Policy>(key, body, |r| r.name == name),
        O::Group(name) => named::<ConsistencyGroup>(key, body, |r| r.name == name),
        O::Settings => parses::<Settings>(key, body),
        // The vault's own: written by `vault init`, key commands and GC, with an admin token.
        O::Config | O::KeyFile | O::GcState | O::GcCondemned(_) => Ok(()),
        O::JobCancel(_) | O::GcRescue { .. } => Err(malformed(key, "a marker object holds no data")),
        O::PointOther { .. } | O::Unknown => Err(malformed(key, "not an object vmvault writes")),
    }
}

fn check_chunk(key: &str, id: &ChunkId, body: &[u8]) -> Result<(), Rejected> {
    if body.len() > MAX_CHUNK_OBJECT {
        return Err(malformed(key, format!("{} bytes, more than a chunk may hold", body.len())));
    }
    vault::blob::check(id, body).map_err(|e| Rejected { kind: e.kind(), message: e.to_string() })
}

fn parses<T: DeserializeOwned>(key: &str, body: &[u8]) -> Result<(), Rejected> {
    named::<T>(key, body, |_| true)
}

/// Parses as a `T`, and `names_its_key` holds of it.
fn named<T: DeserializeOwned>(
    key: &str,
    body: &[u8],
    names_its_key: impl Fn(&T) -> bool,
) -> Result<(), Rejected> {
    let value: T =
        serde_json::from_slice(body).map_err(|e| malformed(key, format!("does not parse ({e})")))?;
    if names_its_key(&value) { Ok(()) } else { Err(malformed(key, "names another object than its key")) }
}

async fn check_manifest(
    vault: &Vault,
    key: &str,
    vm: &str,
    point: &str,
    body: &[u8],
) -> Result<(), Rejected> {
    // A vault made before points were signed has no point key: its manifests are checked on
    // structure alone, as its own prune reads them.
    let manifest = match vault.config().point_public().map_err(|e| forged(key, e))? {
        Some(verifier) => Manifest::decode_signed(body, &verifier, key),
        None => Manifest::decode_unverified(body, key),
    }
    .map_err(|e| forged(key, e))?;
    if manifest.vm != vm || manifest.point_id != point {
        return Err(forged(key, format!("it is point {}/{}", manifest.vm, manifest.point_id)));
    }
    // A host holds the key and can sign: what it cannot do is date a point ahead, which would
    // make retention take it for the newest and let genuine points expire.
    let latest = Timestamp::now() + CLOCK_SKEW;
    if manifest.time > latest {
        return Err(forged(key, format!("it is dated {}, in the future", manifest.time)));
    }
    match point_id_time(point) {
        Some(named) if named <= latest => {}
        Some(named) => return Err(forged(key, format!("its id names {named}, in the future"))),
        None => return Err(forged(key, "its id does not start with the point's time")),
    }
    let backend = vault.backend();
    for disk in &manifest.disks {
        if !matches!(ObjectClass::of(&disk.index), ObjectClass::Index { vm: v, point: p, .. } if v == vm && p == point)
        {
            return Err(forged(key, format!("disk {} names an index of another point", disk.label)));
        }
        let index =
            vault.get_index(&disk.index, Some(&disk.index_digest)).await.map_err(|e| forged(key, e))?;
        let ids: Vec<ChunkId> = index
            .entries()
            .iter()
            .filter(|id| !id.is_zero())
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for batch in ids.chunks(4096) {
            let missing = backend.missing_chunks(batch).await.map_err(|e| forged(key, e))?;
            if let Some(first) = missing.first() {
                return Err(forged(
                    key,
                    format!(
                        "{} chunks of disk {} are not in the vault (first: {first})",
                        missing.len(),
                        disk.label
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The time a point id starts with (`YYYYMMDDTHHMMSSZ-…`, see `engine::points::new_point_id`).
fn point_id_time(point: &str) -> Option<Timestamp> {
    let stamp = point.get(..16)?;
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}
