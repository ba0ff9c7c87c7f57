//! Verify: is every recovery point whole? Checks manifests (signatures when the key is at
//! hand), index checksums, that every referenced chunk exists and its stored checksum holds,
//! and — reading data — that each chunk decrypts and hashes back to its id. Each damaged chunk
//! is reported with every point, disk and offset it affects, so the operator knows what is lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::blob;
use crate::error::{Result, VaultError};
use crate::id::ChunkId;
use crate::index::FixedIndex;
use crate::keys::Keys;
use crate::layout::{self, ObjectClass};
use crate::manifest::Manifest;
use crate::vault::Vault;

/// Which points to verify.
#[derive(Clone, Debug, Default)]
pub struct VerifyScope {
    /// Only this VM's points.
    pub vm: Option<String>,
    /// Only this point.
    pub point: Option<String>,
    /// Decrypt and re-hash every chunk (needs the key).
    pub read_data: bool,
    /// Set to stop between chunks.
    pub cancel: Arc<AtomicBool>,
}

/// Where a damaged chunk is used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkUse {
    /// VM.
    pub vm: String,
    /// Point id.
    pub point: String,
    /// Disk label.
    pub disk: String,
    /// Byte offsets in the disk where the chunk's content belongs.
    pub offsets: Vec<u64>,
}

/// One problem found.
#[derive(Clone, Debug, Serialize)]
pub struct Damage {
    /// The damaged object: `chunk <id>`, or the key of a manifest or index.
    pub object: String,
    /// What is wrong.
    pub problem: String,
    /// Points, disks and offsets that cannot be restored whole because of it.
    pub affects: Vec<ChunkUse>,
}

/// What verify found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Points checked.
    pub points: u64,
    /// Distinct chunks checked.
    pub chunks: u64,
    /// Stored bytes read.
    pub bytes_read: u64,
    /// Whether chunk contents were decrypted and re-hashed.
    pub read_data: bool,
    /// Whether manifest signatures were checked (the key was at hand).
    pub signatures_checked: bool,
    /// Everything damaged.
    pub damage: Vec<Damage>,
    /// The points looked at, as (VM, point id): what a record of this verify covers.
    #[serde(skip)]
    pub checked: Vec<(String, String)>,
}

impl VerifyReport {
    /// Every point some damage affects, as `vm/point`.
    pub fn affected_points(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .damage
            .iter()
            .flat_map(|d| {
                d.affects
                    .iter()
                    .map(|u| if u.point.is_empty() { u.vm.clone() } else { format!("{}/{}", u.vm, u.point) })
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Verify the points in `scope`. `keys` (an unlocked vault's) enables signature checks and
/// `read_data`; without them the structure and stored checksums are still checked.
pub async fn verify(vault: &Vault, keys: Option<&Keys>, scope: &VerifyScope) -> Result<VerifyReport> {
    if scope.read_data && keys.is_none() {
        return Err(VaultError::Locked { location: vault.location() });
    }
    let backend = vault.backend();
    let prefix = match &scope.vm {
        Some(vm) => layout::points_of(vm),
        None => layout::points(),
    };
    let mut report =
        VerifyReport { read_data: scope.read_data, signatures_checked: keys.is_some(), ..Default::default() };
    // chunk → (vm, point, disk) → offsets
    let mut uses: BTreeMap<ChunkId, Vec<ChunkUse>> = BTreeMap::new();
    for object in backend.list(&prefix).await? {
        let ObjectClass::Manifest { vm, point } = ObjectClass::of(&object.key) else { continue };
        if scope.point.as_ref().is_some_and(|wanted| wanted != point) {
            continue;
        }
        let manifest = match load_manifest(vault, keys, &object.key).await {
            Ok(m) => m,
            // Pruned between the listing and now: not a point any more, not damage.
            Err(VaultError::NotFound { .. }) => continue,
            Err(e) => {
                // A manifest that cannot be read affects its own point, named by its key.
                report.points += 1;
                report.checked.push((vm.to_string(), point.to_string()));
                let affects = vec![ChunkUse {
                    vm: vm.to_string(),
                    point: point.to_string(),
                    disk: String::new(),
                    offsets: vec![],
                }];
                report.damage.push(Damage { object: object.key.clone(), problem: e.to_string(), affects });
                continue;
            }
        };
        report.points += 1;
        report.checked.push((vm.to_string(), point.to_string()));
        for disk in &manifest.disks {
            let index = match vault.get_index(&disk.index, Some(&disk.index_digest)).await {
                Ok(index) => index,
                Err(e) => {
                    report.damage.push(Damage {
                        object: disk.index.clone(),
                        problem: e.to_string(),
                        affects: vec![ChunkUse {
                            vm: manifest.vm.clone(),
                            point: manifest.point_id.clone(),
                            disk: disk.label.clone(),
                            offsets: vec![],
                        }],
                    });
                    continue;
                }
            };
            record_uses(&mut uses, &manifest, &disk.label, &index);
        }
    }

    for (id, chunk_uses) in uses {
        if scope.cancel.load(Ordering::SeqCst) {
            return Err(VaultError::Cancelled);
        }
        report.chunks += 1;
        let problem = match backend.get(&layout::chunk(&id)).await {
            Ok(bytes) => {
                report.bytes_read += bytes.len() as u64;
                check_chunk(keys.filter(|_| scope.read_data), &id, &bytes).err().map(|e| e.to_string())
            }
            Err(VaultError::NotFound { .. }) => Some("missing from the vault".to_string()),
            Err(e) => return Err(e),
        };
        // A chunk of points pruned (and collected) since the listing is not damage: only the
        // uses whose manifest is still there count.
        let chunk_uses = match problem {
            Some(_) => still_committed(vault, chunk_uses).await?,
            None => chunk_uses,
        };
        if let Some(problem) = problem.filter(|_| !chunk_uses.is_empty()) {
            report.damage.push(Damage { object: format!("chunk {id}"), problem, affects: chunk_uses });
        }
    }
    Ok(report)
}

/// The uses whose point still exists.
async fn still_committed(vault: &Vault, uses: Vec<ChunkUse>) -> Result<Vec<ChunkUse>> {
    let mut out = Vec::new();
    for chunk_use in uses {
        if vault.backend().head(&layout::manifest(&chunk_use.vm, &chunk_use.point)).await?.is_some() {
            out.push(chunk_use);
        }
    }
    Ok(out)
}

async fn load_manifest(vault: &Vault, keys: Option<&Keys>, key: &str) -> Result<Manifest> {
    let bytes = vault.backend().get(key).await?;
    match keys {
        Some(keys) => Manifest::decode(keys, &bytes, key),
        None => Manifest::decode_unverified(&bytes, key),
    }
}

fn record_uses(
    uses: &mut BTreeMap<ChunkId, Vec<ChunkUse>>,
    manifest: &Manifest,
    disk: &str,
    index: &FixedIndex,
) {
    let chunk = u64::from(index.chunk_size());
    for (block, id) in index.entries().iter().enumerate() {
        if id.is_zero() {
            continue;
        }
        let list = uses.entry(*id).or_default();
        let offset = block as u64 * chunk;
        match list.iter_mut().find(|u| u.point == manifest.point_id && u.disk == disk && u.vm == manifest.vm)
        {
            Some(u) => u.offsets.push(offset),
            None => list.push(ChunkUse {
                vm: manifest.vm.clone(),
                point: manifest.point_id.clone(),
                disk: disk.to_string(),
                offsets: vec![offset],
            }),
        }
    }
}

/// The stored checksum always; with keys, also decryption and the id re-computed from the
/// plaintext.
fn check_chunk(keys: Option<&Keys>, id: &ChunkId, bytes: &[u8]) -> Result<()> {
    match keys {
        None => blob::check(id, bytes),
        Some(keys) => {
            let plaintext = blob::open(keys, id, bytes)?;
            if keys.chunk_id(&plaintext) != *id {
                return Err(VaultError::ChunkAuthentication { id: *id });
            }
            Ok(())
        }
    }
}
