//! What verify last found in each point of a VM, in `catalog/verified/<vm>.json`: so that
//! `points` can show a point DAMAGED whose manifest still reads (a chunk of it is bad), a
//! backup never builds on such a point, and the chunks it names are written again when a
//! backup reads the same data.
//!
//! The record is advice, never the truth about a point: verify rewrites it, a point pruned
//! since simply has an entry nobody reads, and a damaged chunk a backup has written again is
//! moved from `damage` to `repaired`.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vault::ChunkId;
use vault::layout::{self, ObjectKey};

use super::Catalog;
use crate::error::{EngineError, ErrorKind, Result};

/// One damaged object verify found in a point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `chunk <id>`, or the key of a manifest or index.
    pub object: String,
    /// What was wrong with it.
    pub problem: String,
}

impl Finding {
    /// The chunk it names, if it names one.
    fn chunk(&self) -> Option<ChunkId> {
        self.object.strip_prefix("chunk ")?.parse().ok()
    }
}

/// What one verify found in one point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointVerdict {
    /// When verify looked.
    pub at: Timestamp,
    /// Whether it decrypted and re-hashed every chunk.
    pub read_data: bool,
    /// The verify job.
    #[serde(default)]
    pub job: Option<String>,
    /// What is damaged; empty when the point was found whole.
    pub damage: Vec<Finding>,
    /// Damaged chunks a later backup wrote again (the point may be whole again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<Finding>,
}

impl PointVerdict {
    /// Whether verify found the point damaged (and no backup has repaired all of it since).
    pub fn is_damaged(&self) -> bool {
        !self.damage.is_empty()
    }

    /// One line for listings and notes: what was found, and when.
    pub fn summary(&self) -> String {
        let first = self.damage.first().map(|f| format!("{}: {}", f.object, f.problem)).unwrap_or_default();
        let more = match self.damage.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        format!("verify at {} found {first}{more}", self.at.strftime("%Y-%m-%d %H:%M:%SZ"))
    }

    /// The damaged chunks it names.
    fn chunks(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.damage.iter().filter_map(Finding::chunk)
    }
}

/// Verify's findings for every point of one VM, by point id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    /// By point id.
    pub points: BTreeMap<String, PointVerdict>,
}

impl VerifyRecord {
    /// The verdict on `point`, if verify has looked at it.
    pub fn of(&self, point: &str) -> Option<&PointVerdict> {
        self.points.get(point)
    }

    /// Every chunk some point's verdict names as damaged.
    pub fn damaged_chunks(&self) -> HashSet<ChunkId> {
        self.points.values().flat_map(PointVerdict::chunks).collect()
    }
}

fn object_key(vm: &str) -> ObjectKey {
    layout::verified(vm)
}

/// The VM's verify record: empty if verify never ran on it, or if the record no longer parses
/// (advice only: verify reports such a record and replaces it).
pub async fn load(catalog: Catalog<'_>, vm: &str) -> Result<VerifyRecord> {
    match vault::catalog::read(catalog.backend(), &object_key(vm)).await {
        Ok(record) => Ok(record.unwrap_or_default()),
        Err(e) if e.kind() == ErrorKind::Damaged => Ok(VerifyRecord::default()),
        Err(e) => Err(e.into()),
    }
}

/// Record verdicts on some points, keeping those on others that still exist (`existing`); a
/// record that no longer parses is replaced (verify is its author).
pub async fn record(
    catalog: Catalog<'_>,
    vm: &str,
    verdicts: &BTreeMap<String, PointVerdict>,
    existing: &HashSet<String>,
) -> Result<()> {
    vault::catalog::update_replacing_damaged(
        catalog.backend(),
        &object_key(vm),
        |current: Option<VerifyRecord>| {
            let mut record = current.unwrap_or_default();
            record.points.retain(|point, _| existing.contains(point));
            record.points.extend(verdicts.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok::<_, EngineError>(record)
        },
    )
    .await?;
    Ok(())
}

/// Note that a backup wrote these damaged chunks again: each verdict naming one moves it to
/// `repaired`.
pub async fn repaired(catalog: Catalog<'_>, vm: &str, chunks: &HashSet<ChunkId>) -> Result<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    vault::catalog::update(catalog.backend(), &object_key(vm), |current: Option<VerifyRecord>| {
        let mut record = current.unwrap_or_default();
        for verdict in record.points.values_mut() {
            let (fixed, left): (Vec<Finding>, Vec<Finding>) = std::mem::take(&mut verdict.damage)
                .into_iter()
                .partition(|f| f.chunk().is_some_and(|id| chunks.contains(&id)));
            verdict.damage = left;
            verdict.repaired.extend(fixed);
        }
        Ok::<_, EngineError>(record)
    })
    .await?;
    Ok(())
}

/// Forget a VM's verify record (the VM was removed).
pub async fn forget(catalog: Catalog<'_>, vm: &str) -> Result<()> {
    catalog.backend().delete(&object_key(vm)).await?;
    Ok(())
}
