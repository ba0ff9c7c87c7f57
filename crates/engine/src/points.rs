//! Recovery points of a VM: where their files live, listing them, loading one.

use std::fmt;

use jiff::Timestamp;
use serde::Serialize;
use vault::point_key::PointKey;
use vault::{Consistency, FixedIndex, Manifest, PointKind, UnlockedVault, Vault};

use crate::catalog::Catalog;
use crate::catalog::verified::{self, PointVerdict, VerifyRecord};
use crate::error::{EngineError, ErrorKind, Result};
use crate::names::random_hex;

use vault::layout::{self, ObjectClass};

/// A new point id: the UTC time, sortable, plus random digits so two points never collide.
pub fn new_point_id(time: Timestamp) -> Result<String> {
    Ok(format!("{}-{}", time.strftime("%Y%m%dT%H%M%SZ"), random_hex(2)?))
}

/// A recovery point as people see it: what `vmvault points` lists and the API answers. Read
/// from its manifest, which is the stored form ([`Manifest`]).
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryPoint {
    /// Point id.
    pub id: String,
    /// Snapshot time.
    pub time: Timestamp,
    /// Scheduled or on-demand.
    pub kind: PointKind,
    /// Consistency reached.
    pub consistency: Consistency,
    /// Sum of the disks' logical sizes.
    pub logical_bytes: u64,
    /// Stored bytes this point added to the vault.
    pub stored_bytes: u64,
    /// Until when an on-demand point is kept.
    pub retain_until: Option<Timestamp>,
    /// Labels of the disks it holds.
    pub disks: Vec<String>,
    /// The consistency group and its instant, for a point of a group backup.
    pub group: Option<vault::PointGroup>,
}

impl From<&Manifest> for RecoveryPoint {
    fn from(m: &Manifest) -> Self {
        RecoveryPoint {
            id: m.point_id.clone(),
            time: m.time,
            kind: m.kind,
            consistency: m.consistency,
            logical_bytes: m.disks.iter().map(|d| d.size).sum(),
            stored_bytes: m.disks.iter().map(|d| d.stored_new).sum(),
            retain_until: m.retain_until,
            disks: m.disks.iter().map(|d| d.label.clone()).collect(),
            group: m.group.clone(),
        }
    }
}

/// How points are read: by a client with the key (every manifest verified), or by a server
/// without it, on structure alone — enough to apply retention and delete what expired, never
/// trusted for a restore.
#[derive(Clone, Copy)]
pub enum PointReader<'a> {
    /// With the key.
    Verified(&'a UnlockedVault),
    /// Without the key: each manifest's point signature is checked with the config's public
    /// point key (vaults made before points were signed: structure only).
    Structure(&'a Vault),
}

impl<'a> From<&'a UnlockedVault> for PointReader<'a> {
    fn from(vault: &'a UnlockedVault) -> Self {
        PointReader::Verified(vault)
    }
}

impl<'a> From<&'a Vault> for PointReader<'a> {
    fn from(vault: &'a Vault) -> Self {
        PointReader::Structure(vault)
    }
}

impl PointReader<'_> {
    /// The vault.
    pub fn vault(&self) -> &Vault {
        match self {
            PointReader::Verified(vault) => vault.vault(),
            PointReader::Structure(vault) => vault,
        }
    }

    /// One manifest; `verifier` is the config's public point key, for a reader without the
    /// vault's key.
    async fn manifest(&self, key: &str, verifier: Option<&PointKey>) -> Result<Manifest> {
        Ok(match self {
            PointReader::Verified(vault) => vault.get_manifest(key).await?,
            PointReader::Structure(vault) => {
                let bytes = vault.backend().get(key).await?;
                match verifier {
                    Some(verifier) => Manifest::decode_signed(&bytes, verifier, key)?,
                    None => Manifest::decode_unverified(&bytes, key)?,
                }
            }
        })
    }

    /// Every committed point of `vm`, oldest first; a damaged manifest stops the listing
    /// (what prune needs: it never decides about points it cannot read).
    pub async fn list(&self, vm: &str) -> Result<Vec<Manifest>> {
        let (points, damaged) = self.scan(vm).await?;
        match damaged.into_iter().next() {
            Some(DamagedPoint { cause: DamageCause::Unreadable(error), .. }) => Err(error),
            _ => Ok(points),
        }
    }

    /// Every readable point of `vm`, oldest first, and apart from them the points whose
    /// manifest is damaged — for what must go on around damage (backups, latest-point reads).
    pub async fn scan(&self, vm: &str) -> Result<(Vec<Manifest>, Vec<DamagedPoint>)> {
        crate::names::check_name("VM", vm)?;
        let verifier = match self {
            PointReader::Verified(_) => None,
            PointReader::Structure(vault) => vault.config().point_public()?,
        };
        let (mut out, mut damaged) = (Vec::new(), Vec::new());
        for object in self.vault().backend().list(&layout::points_of(vm)).await? {
            let ObjectClass::Manifest { point, .. } = ObjectClass::of(&object.key) else { continue };
            match self.manifest(&object.key, verifier.as_ref()).await {
                Ok(manifest) => out.push(manifest),
                Err(error) if error.kind() == ErrorKind::Damaged => {
                    damaged.push(DamagedPoint {
                        point: point.to_string(),
                        cause: DamageCause::Unreadable(error),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.point_id.cmp(&b.point_id)));
        Ok((out, damaged))
    }
}

/// A damaged point: its id, and what is wrong.
#[derive(Debug)]
pub struct DamagedPoint {
    /// The point id (from its object key).
    pub point: String,
    /// What is wrong with it.
    pub cause: DamageCause,
}

/// How a point is known to be damaged.
#[derive(Debug)]
pub enum DamageCause {
    /// Its manifest cannot be read.
    Unreadable(EngineError),
    /// Its manifest reads, but the last verify found damage in it (an index or a chunk).
    FoundByVerify(PointVerdict),
}

impl fmt::Display for DamageCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageCause::Unreadable(error) => error.fmt(f),
            DamageCause::FoundByVerify(verdict) => f.write_str(&verdict.summary()),
        }
    }
}

/// The points of a VM as an operator must see them: the intact ones, oldest first, and the
/// damaged ones — by a manifest that does not read, or by what the last verify recorded.
#[derive(Debug, Default)]
pub struct Survey {
    /// Points nothing is known to be wrong with, oldest first.
    pub intact: Vec<Manifest>,
    /// Points known to be damaged.
    pub damaged: Vec<DamagedPoint>,
    /// The VM's verify record (empty when verify never ran or its record does not read).
    pub verified: VerifyRecord,
}

/// Survey the points of `vm` ([`Survey`]).
pub async fn survey(vault: &UnlockedVault, vm: &str) -> Result<Survey> {
    let (readable, mut damaged) = PointReader::Verified(vault).scan(vm).await?;
    let record = verified::load(Catalog::of(vault.vault()), vm).await?;
    let mut intact = Vec::with_capacity(readable.len());
    for manifest in readable {
        match record.of(&manifest.point_id).filter(|v| v.is_damaged()) {
            Some(verdict) => damaged.push(DamagedPoint {
                point: manifest.point_id.clone(),
                cause: DamageCause::FoundByVerify(verdict.clone()),
            }),
            None => intact.push(manifest),
        }
    }
    damaged.sort_by(|a, b| a.point.cmp(&b.point));
    Ok(Survey { intact, damaged, verified: record })
}

/// Every committed point of `vm`, oldest first, each manifest verified.
pub async fn list(vault: &UnlockedVault, vm: &str) -> Result<Vec<Manifest>> {
    PointReader::Verified(vault).list(vm).await
}

/// One point by id, or the newest with `latest`.
pub async fn find(vault: &UnlockedVault, vm: &str, point: &str) -> Result<Manifest> {
    if point == "latest" {
        // The newest intact point: a damaged one never stands in the way.
        return survey(vault, vm)
            .await?
            .intact
            .pop()
            .ok_or_else(|| EngineError::NoSuchPoint { vm: vm.to_string(), point: point.to_string() });
    }
    crate::names::check_name("point", point)?;
    match vault.get_manifest(&layout::manifest(vm, point)).await {
        Ok(m) => Ok(m),
        Err(vault::VaultError::NotFound { .. }) => {
            Err(EngineError::NoSuchPoint { vm: vm.to_string(), point: point.to_string() })
        }
        Err(e) => Err(e.into()),
    }
}

/// Remove a damaged point at once: its manifest (first, so the point stops existing), then
/// every index beside it; its chunks are left for GC. An intact point is refused: retention is
/// the only way intact points go. Returns what was wrong with it.
pub async fn delete_damaged(vault: &UnlockedVault, vm: &str, point: &str) -> Result<String> {
    crate::names::check_name("VM", vm)?;
    crate::names::check_name("point", point)?;
    let backend = vault.vault().backend();
    let manifest_key = layout::manifest(vm, point);
    if backend.head(&manifest_key).await?.is_none() {
        return Err(EngineError::NoSuchPoint { vm: vm.to_string(), point: point.to_string() });
    }
    let problem = match damage_of(vault, &manifest_key).await? {
        Some(problem) => Some(problem),
        None => damage_found_again(vault, vm, point).await?,
    };
    let problem = match problem {
        Some(problem) => problem,
        None => {
            return Err(EngineError::refused(
                format!("point {point} of VM {vm:?} is intact; only retention removes intact points"),
                format!("see `vmvault verify {vm} --point {point}`"),
            ));
        }
    };
    backend.delete(&manifest_key).await?;
    let prefix = layout::points_of(vm);
    for object in backend.list(&prefix).await? {
        if matches!(ObjectClass::of(&object.key), ObjectClass::Index { point: p, .. } if p == point) {
            backend.delete(&object.key).await?;
        }
    }
    backend.flush().await?;
    Ok(problem)
}

/// What is damaged in a point, if anything: its manifest, or one of its indexes.
async fn damage_of(vault: &UnlockedVault, manifest_key: &layout::ObjectKey) -> Result<Option<String>> {
    let manifest = match vault.get_manifest(manifest_key).await {
        Ok(manifest) => manifest,
        Err(e) if e.kind() == ErrorKind::Damaged => return Ok(Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    for disk in &manifest.disks {
        match disk_index(vault, &manifest, &disk.label).await {
            Ok(_) => {}
            // An index its manifest names but the vault lacks is damage too.
            Err(e) if matches!(e.kind(), ErrorKind::Damaged | ErrorKind::NotFound) => {
                return Ok(Some(e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// For a point the last verify found damaged (a chunk, say), the damage if a verify of that
/// point alone still finds it: a point a backup has repaired since is intact again.
async fn damage_found_again(vault: &UnlockedVault, vm: &str, point: &str) -> Result<Option<String>> {
    let record = verified::load(Catalog::of(vault.vault()), vm).await?;
    let Some(verdict) = record.of(point).filter(|v| v.is_damaged()) else { return Ok(None) };
    let scope = vault::verify::VerifyScope {
        vm: Some(vm.to_string()),
        point: Some(point.to_string()),
        read_data: verdict.read_data,
        ..Default::default()
    };
    let report = vault::verify::verify(vault.vault(), Some(vault.keys()), &scope).await?;
    Ok(report.damage.first().map(|d| format!("{}: {}", d.object, d.problem)))
}

/// The verified index of one disk of a point.
pub async fn disk_index(vault: &UnlockedVault, manifest: &Manifest, label: &str) -> Result<FixedIndex> {
    let disk =
        manifest.disks.iter().find(|d| d.label == label).ok_or_else(|| EngineError::DiskNotInPoint {
            vm: manifest.vm.clone(),
            point: manifest.point_id.clone(),
            label: label.to_string(),
        })?;
    let index = vault.vault().get_index(&disk.index, Some(&disk.index_digest)).await?;
    if index.disk_size() != disk.size {
        return Err(vault::VaultError::corrupt(&disk.index, "disk size differs from its manifest").into());
    }
    Ok(index)
}
