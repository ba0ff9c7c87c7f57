//! Change tracking for stopped qcow2 disks: which persistent dirty bitmap belongs to which
//! recovery point, and when one can be trusted.
//!
//! A backup adds the bitmap `vmvault-<new point>` before it reads, so every later write is
//! tracked; once the point is committed, the record names that bitmap and older `vmvault-`
//! bitmaps are removed. The next backup reads only what that bitmap marks, and copies the rest
//! from the recorded point's index. Whenever the record and the image disagree, it reads the
//! whole disk instead (deduplicated against the previous point) and says why.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vault::layout::{self, ObjectKey};

use super::Catalog;
use crate::error::{EngineError, Result};

/// Prefix of the bitmaps vmvault owns.
pub const BITMAP_PREFIX: &str = "vmvault-";

/// Name of the bitmap that tracks writes after the point `point_id`.
pub fn bitmap_name(point_id: &str) -> String {
    format!("{BITMAP_PREFIX}{point_id}")
}

/// Which file an image is: replacing the file (a restore, a copy) changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIdentity {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl ImageIdentity {
    /// Identity of the file at `path`.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(ImageIdentity { dev: meta.dev(), ino: meta.ino() })
    }
}

/// The change-tracking state of one disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Bitmap tracking writes since `point_id`.
    pub bitmap: String,
    /// The point the bitmap starts from.
    pub point_id: String,
    /// The image file the bitmap lives in.
    pub image: ImageIdentity,
    /// Disk size when the point was made.
    pub size: u64,
}

/// Checkpoints of all disks of one VM, by disk label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoints {
    /// By disk label.
    pub disks: BTreeMap<String, Checkpoint>,
}

fn object_key(vm: &str) -> ObjectKey {
    layout::checkpoints(vm)
}

/// The VM's checkpoints (empty if it has none yet).
pub async fn load(catalog: Catalog<'_>, vm: &str) -> Result<Checkpoints> {
    Ok(vault::catalog::read(catalog.backend(), &object_key(vm)).await?.unwrap_or_default())
}

/// Record new checkpoints for some disks, keeping the others. A document that no longer
/// parses is replaced: the other disks are then read in full once, which is all it costs.
pub async fn record(catalog: Catalog<'_>, vm: &str, new: &BTreeMap<String, Checkpoint>) -> Result<()> {
    vault::catalog::update_replacing_damaged(
        catalog.backend(),
        &object_key(vm),
        |current: Option<Checkpoints>| {
            let mut all = current.unwrap_or_default();
            all.disks.extend(new.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok::<_, EngineError>(all)
        },
    )
    .await?;
    Ok(())
}

/// Forget a VM's checkpoints (the VM was removed).
pub async fn forget(catalog: Catalog<'_>, vm: &str) -> Result<()> {
    catalog.backend().delete(&object_key(vm)).await?;
    Ok(())
}
