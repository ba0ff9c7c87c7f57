//! The manifest of a recovery point: which disks it holds and which index describes each.
//! Holds no guest data, so it is stored as signed plaintext (see [`crate::signed`]).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VaultError};
use crate::keys::Keys;
use crate::point_key::PointKey;
use crate::signed;

/// Value of the manifest's `format` member.
pub const MANIFEST_FORMAT: &str = "vmvault-manifest";
/// Version of the manifest document this code writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// Who asked for a recovery point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointKind {
    /// Made by a policy's schedule.
    Scheduled,
    /// Asked for by an operator.
    OnDemand,
}

impl PointKind {
    /// The name used in JSON and listings.
    pub fn as_str(&self) -> &'static str {
        match self {
            PointKind::Scheduled => "scheduled",
            PointKind::OnDemand => "on-demand",
        }
    }
}

/// How consistent the disks of a point are with each other and with the guest's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Applications flushed their state (pre/post scripts and freeze succeeded).
    Application,
    /// Filesystems were frozen.
    FileSystem,
    /// As if the power had been cut.
    Crash,
}

impl Consistency {
    /// The name used in JSON and listings.
    pub fn as_str(&self) -> &'static str {
        match self {
            Consistency::Application => "application",
            Consistency::FileSystem => "file-system",
            Consistency::Crash => "crash",
        }
    }
}

/// The consistency group a point was made in: every member's point of one group backup
/// records the same instant, so an operator restores a multi-VM application as one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointGroup {
    /// The group's name.
    pub name: String,
    /// When every member was quiesced, just before the members' snapshot transactions.
    pub instant: Timestamp,
}

/// One disk of a recovery point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDisk {
    /// The disk's label within its VM (`vda`, `data`, ...).
    pub label: String,
    /// Logical size in bytes.
    pub size: u64,
    /// Object key of the disk's fixed index.
    pub index: String,
    /// Checksum of that index (hex), binding it to this signed manifest.
    pub index_digest: String,
    /// Stored bytes this disk added to the vault when the point was made.
    #[serde(default)]
    pub stored_new: u64,
}

/// A recovery point's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Always [`MANIFEST_VERSION`] for what this code writes.
    pub version: u32,
    /// The point's id.
    pub point_id: String,
    /// Name of the VM at backup time.
    pub vm: String,
    /// When the snapshot was taken.
    pub time: Timestamp,
    /// Scheduled or on-demand.
    pub kind: PointKind,
    /// Consistency level reached.
    pub consistency: Consistency,
    /// Until when an on-demand point is kept.
    #[serde(default)]
    pub retain_until: Option<Timestamp>,
    /// The disks, in VM order.
    pub disks: Vec<ManifestDisk>,
    /// The consistency group, when the point was made by a group backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<PointGroup>,
}

impl Manifest {
    /// Serialise, sign with the point key and add the MAC.
    pub fn encode(&self, keys: &Keys) -> Result<Vec<u8>> {
        signed::sign_point(keys, self)
    }

    /// Check the signature and parse; `what` names the manifest in errors.
    pub fn decode(keys: &Keys, bytes: &[u8], what: &str) -> Result<Self> {
        let manifest: Manifest = signed::verify(keys, bytes, what)?;
        manifest.check_format(what)?;
        Ok(manifest)
    }

    /// Parse without the key (servers, GC): structure only, never trusted for restores.
    pub fn decode_unverified(bytes: &[u8], what: &str) -> Result<Self> {
        let manifest: Manifest = signed::read_unverified(bytes, what)?;
        manifest.check_format(what)?;
        Ok(manifest)
    }

    /// Parse without the vault key, after checking the point signature with the vault's
    /// public point key: what a server prunes by.
    pub fn decode_signed(bytes: &[u8], key: &PointKey, what: &str) -> Result<Self> {
        let manifest: Manifest = signed::read_point(bytes, key, what)?;
        manifest.check_format(what)?;
        Ok(manifest)
    }

    fn check_format(&self, what: &str) -> Result<()> {
        if self.format != MANIFEST_FORMAT {
            return Err(VaultError::corrupt(what, format!("format {:?} is not a manifest", self.format)));
        }
        if self.version != MANIFEST_VERSION {
            return Err(VaultError::UnsupportedVersion {
                what: what.to_string(),
                found: self.version,
                supported: MANIFEST_VERSION,
            });
        }
        Ok(())
    }
}
