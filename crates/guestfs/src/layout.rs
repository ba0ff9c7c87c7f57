//! What a VM's disk holds, volume by volume: partitions (or the whole disk), the logical
//! volumes of LVM groups with a PV on it (PVs on the VM's other disks taken into account), and
//! on each what `blkid` would name, with label and UUID. The OS root — the filesystem with
//! `/etc/os-release` or `Windows/System32` — is marked, and is what `files` commands use when
//! no volume is named. When the root may be on a volume vmvault cannot read, choosing fails
//! with what is there rather than fall back to another filesystem.

use std::sync::Arc;

use serde::Serialize;

use crate::error::{GuestError, Result};
use crate::lvm::{self, PhysicalVolume};
use crate::partition::{TableKind, read_table};
use crate::probe::{FsKind, probe};
use crate::reader::{BlockReader, Slice};
use crate::tree::GuestFs;

/// One disk of a VM, by its label.
#[derive(Clone)]
pub struct GuestDisk {
    /// The disk's label in the point (`vda`).
    pub label: String,
    /// Its bytes.
    pub reader: Arc<dyn BlockReader>,
}

/// A partition, the whole disk, or a logical volume, and what is on it.
#[derive(Clone, Debug, Serialize)]
pub struct Volume {
    /// How to name it: the partition number (`2`; `0` for the whole disk) or `vg/lv`.
    pub id: String,
    /// First byte on its disk (0 for an LV).
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition type by name, when there is a table.
    pub part_type: Option<String>,
    /// GPT partition name.
    pub part_name: Option<String>,
    /// The LV's segment type (`linear`, `striped`, `thin`…), for LVs.
    pub lv_type: Option<String>,
    /// What is on it, as `blkid` names it.
    pub fs: FsKind,
    /// Filesystem (or LUKS, swap) label.
    pub label: Option<String>,
    /// Filesystem (or PV, LUKS, swap) UUID.
    pub uuid: Option<String>,
    /// Whether it holds the guest's OS root.
    pub os_root: bool,
    /// Why vmvault cannot read it, or what it is part of.
    pub note: Option<String>,
    /// For a btrfs subvolume: its path in the filesystem.
    pub subvolume: Option<String>,
    #[serde(skip)]
    slice: Option<Slice>,
    /// For btrfs: the volumes on the point's disks that hold the filesystem's other devices.
    #[serde(skip)]
    members: Vec<Slice>,
}

impl Volume {
    /// Whether vmvault can open its files.
    pub fn readable(&self) -> bool {
        self.slice.is_some() && readable(self.fs)
    }

    /// Its bytes, when they can be read (an LV with a missing PV cannot).
    pub fn slice(&self) -> Option<&Slice> {
        self.slice.as_ref()
    }

    /// Whether it is an LVM PV whose group was assembled (its LVs are volumes of their own).
    pub fn is_assembled_pv(&self) -> bool {
        self.fs == FsKind::LvmMember && self.note.as_deref().is_some_and(|n| n.starts_with(PV_NOTE))
    }
}

/// The note on a PV whose group was assembled.
const PV_NOTE: &str = "PV of volume group";

fn readable(kind: FsKind) -> bool {
    matches!(
        kind,
        FsKind::Ext2
            | FsKind::Ext3
            | FsKind::Ext4
            | FsKind::Vfat
            | FsKind::Ntfs
            | FsKind::Xfs
            | FsKind::Btrfs
    )
}

/// A volume group with a PV on the disk.
#[derive(Clone, Debug, Serialize)]
pub struct GroupSummary {
    /// Its name.
    pub name: String,
    /// Where its PVs are (`vda:3`).
    pub pvs: Vec<String>,
    /// PVs its metadata names that no disk of the point holds.
    pub missing: Vec<String>,
    /// Its visible LVs.
    pub lvs: Vec<String>,
}

/// The volumes of one disk.
#[derive(Clone, Debug, Serialize)]
pub struct Layout {
    /// The disk's label.
    pub disk: String,
    /// Its partition table.
    pub table: TableKind,
    /// Its volumes, partitions first, then LVs.
    pub volumes: Vec<Volume>,
    /// The LVM groups with a PV on it.
    pub groups: Vec<GroupSummary>,
}

/// The note on a LUKS volume no passphrase was given for, and what to do.
const NO_PASSPHRASE: &str = "encrypted (LUKS): no passphrase was given (--luks-passphrase-file)";

/// A passphrase (or key file's bytes) to try on LUKS volumes; zeroized when dropped.
pub type Passphrase = zeroize::Zeroizing<Vec<u8>>;

/// Open a LUKS volume with the first passphrase that opens it: the volume then shows what is
/// inside (probed again, so an LVM PV inside LUKS is found too).
fn open_luks(v: &mut Volume, passphrases: &[Passphrase]) {
    let Some(slice) = v.slice.clone() else { return };
    if passphrases.is_empty() {
        v.note = Some(NO_PASSPHRASE.into());
        return;
    }
    let mut failed = None;
    for passphrase in passphrases {
        match crate::luks::unlock(&slice, passphrase) {
            Ok(unlocked) => {
                let header = unlocked.header();
                let note = format!(
                    "inside LUKS{} {} {} (unlocked)",
                    header.version, header.uuid, header.segment.cipher
                );
                let inner = Slice::whole(Arc::new(unlocked));
                let found = probe(&inner);
                (v.fs, v.label, v.uuid) = (found.kind, found.label, found.uuid);
                v.note = Some(note);
                v.slice = Some(inner);
                return;
            }
            Err(e) => failed = Some(e),
        }
    }
    v.note = failed.map(|e| format!("encrypted (LUKS): {e}"));
}

/// A member of an MD RAID1 array shows the array's data (each member holds all of it); a
/// member of another level says what it is part of.
fn open_md(v: &mut Volume) {
    let Some(slice) = v.slice.clone() else { return };
    let member = match crate::md::read_member(&slice, &format!("volume {}", v.id)) {
        Ok(Some(member)) => member,
        Ok(None) => return,
        Err(e) => {
            v.note = Some(e.to_string());
            return;
        }
    };
    let array = match &member.name {
        Some(name) => format!("MD array {name} ({})", member.uuid.as_deref().unwrap_or("no UUID")),
        None => format!("MD array {}", member.uuid.as_deref().unwrap_or("without a UUID")),
    };
    if member.level != 1 {
        v.note = Some(format!(
            "member of RAID{} {array}, metadata {}: vmvault reads RAID1 members only, and does not assemble arrays",
            member.level, member.metadata
        ));
        return;
    }
    let inner = slice.sub(member.data.0, member.data.1);
    let found = probe(&inner);
    (v.fs, v.label, v.uuid) = (found.kind, found.label, found.uuid);
    v.note = Some(format!(
        "inside RAID1 {array} of {} devices, metadata {}: this member read on its own",
        member.raid_disks, member.metadata
    ));
    v.slice = Some(inner);
}

/// The partitions (or whole disk) of one disk, probed, LUKS volumes opened where a
/// passphrase opens them, MD RAID1 members opened.
fn volumes_of(disk: &GuestDisk, passphrases: &[Passphrase]) -> Result<(TableKind, Vec<Volume>)> {
    let (table, mut volumes) = partitions(disk)?;
    for v in volumes.iter_mut().filter(|v| v.fs == FsKind::RaidMember) {
        open_md(v);
    }
    for v in volumes.iter_mut().filter(|v| v.fs == FsKind::Luks) {
        open_luks(v, passphrases);
    }
    Ok((table, volumes))
}

/// The partitions (or whole disk) of one disk, probed.
fn partitions(disk: &GuestDisk) -> Result<(TableKind, Vec<Volume>)> {
    let whole = Slice::whole(Arc::clone(&disk.reader));
    let (table, parts) = read_table(&whole)?;
    let volume = |id: String, slice: Slice, start, part_type, part_name| {
        let found = probe(&slice);
        Volume {
            id,
            start,
            size: slice.len(),
            part_type,
            part_name,
            lv_type: None,
            fs: found.kind,
            label: found.label,
            uuid: found.uuid,
            os_root: false,
            note: None,
            subvolume: None,
            slice: Some(slice),
            members: Vec::new(),
        }
    };
    if parts.is_empty() {
        return Ok((table, vec![volume("0".into(), whole.clone(), 0, None, None)]));
    }
    let volumes = parts
        .into_iter()
        .map(|p| {
            let slice = Slice::new(Arc::clone(&disk.reader), p.start, p.size);
            volume(p.number.to_string(), slice, p.start, Some(p.type_name), p.name)
        })
        .collect();
    Ok((table, volumes))
}

/// The layout of `disks[chosen]`, with LVs assembled from PVs on any of `disks`.
pub fn scan(disks: &[GuestDisk], chosen: usize) -> Result<Layout> {
    scan_unlocking(disks, chosen, &[])
}

/// [`scan`], opening LUKS volumes (on partitions, before LVM is assembled) with the first of
/// `passphrases` that opens each.
pub fn scan_unlocking(disks: &[GuestDisk], chosen: usize, passphrases: &[Passphrase]) -> Result<Layout> {
    let disk =
        disks.get(chosen).ok_or_else(|| GuestError::Invalid(format!("there is no disk number {chosen}")))?;
    let (table, mut volumes) = volumes_of(disk, passphrases)?;
    let mut pvs = Vec::new();
    let mut btrfs_devices = Vec::new();
    for (i, other) in disks.iter().enumerate() {
        let found = if i == chosen { volumes.clone() } else { volumes_of(other, passphrases)?.1 };
        for v in found.iter().filter(|v| v.fs == FsKind::Btrfs) {
            if let (Some(uuid), Some(slice)) = (&v.uuid, &v.slice) {
                btrfs_devices.push((uuid.clone(), format!("{}:{}", other.label, v.id), slice.clone()));
            }
        }
        for v in found.iter().filter(|v| v.fs == FsKind::LvmMember) {
            let Some(slice) = v.slice.clone() else { continue };
            let at = format!("{}:{}", other.label, v.id);
            match PhysicalVolume::read(&at, slice) {
                Ok(Some(pv)) => pvs.push(pv),
                Ok(None) => {}
                Err(e) if i == chosen => note_on(&mut volumes, &v.id, format!("its LVM metadata: {e}")),
                Err(_) => {}
            }
        }
    }
    let mine = |at: &str| at.strip_prefix(&disk.label).and_then(|r| r.strip_prefix(':')).map(str::to_string);
    let mut groups = Vec::new();
    for vg in lvm::assemble(&pvs) {
        let local: Vec<String> = vg.pvs.iter().filter_map(|p| mine(p)).collect();
        if local.is_empty() {
            continue;
        }
        for id in &local {
            note_on(&mut volumes, id, format!("{PV_NOTE} {}", vg.name));
        }
        for lv in &vg.lvs {
            volumes.push(lv_volume(&vg.name, lv, &vg.missing));
        }
        groups.push(GroupSummary {
            name: vg.name.clone(),
            pvs: vg.pvs.clone(),
            missing: vg.missing.clone(),
            lvs: vg.lvs.iter().map(|lv| lv.name.clone()).collect(),
        });
    }
    for v in volumes.iter_mut().filter(|v| v.fs == FsKind::Btrfs) {
        let me = format!("{}:{}", disk.label, v.id);
        let others: Vec<&(String, String, Slice)> =
            btrfs_devices.iter().filter(|(uuid, at, _)| Some(uuid) == v.uuid.as_ref() && *at != me).collect();
        if !others.is_empty() {
            let names: Vec<&str> = others.iter().map(|(_, at, _)| at.as_str()).collect();
            v.note = Some(format!("btrfs device, with {} of the same filesystem", names.join(", ")));
            v.members = others.into_iter().map(|(_, _, slice)| slice.clone()).collect();
        }
    }
    for v in &mut volumes {
        annotate(v);
    }
    let mut with_subvolumes = Vec::with_capacity(volumes.len());
    for v in volumes {
        let subvolumes = if v.fs == FsKind::Btrfs && v.readable() { subvolumes_of(&v) } else { Vec::new() };
        with_subvolumes.push(v);
        with_subvolumes.extend(subvolumes);
    }
    let mut volumes = with_subvolumes;
    // A btrfs root is usually a subvolume (Fedora's "root", Ubuntu's "@"): when the default
    // subvolume is not the root, the one whose own fstab mounts it as `/` (snapshots of the
    // root hold the same fstab, which names the root, not them), else the first that holds one.
    if !volumes.iter().any(|v| v.os_root) {
        let by_fstab = volumes.iter().position(|v| v.note.as_deref() == Some(FSTAB_ROOT_SUBVOLUME));
        let first = || volumes.iter().position(|v| v.note.as_deref() == Some(ROOT_SUBVOLUME));
        if let Some(i) = by_fstab.or_else(first) {
            volumes[i].os_root = true;
        }
    }
    for v in volumes
        .iter_mut()
        .filter(|v| matches!(v.note.as_deref(), Some(ROOT_SUBVOLUME | FSTAB_ROOT_SUBVOLUME)))
    {
        v.note = Some("btrfs subvolume".into());
    }
    Ok(Layout { disk: disk.label.clone(), table, volumes, groups })
}

fn note_on(volumes: &mut [Volume], id: &str, note: String) {
    if let Some(v) = volumes.iter_mut().find(|v| v.id == id) {
        v.note = Some(note);
    }
}

fn lv_volume(vg: &str, lv: &lvm::LogicalVolume, missing: &[String]) -> Volume {
    let slice = lv.reader.clone().map(Slice::whole);
    let found = slice.as_ref().map(probe);
    let mut note = lv.problem.clone();
    if note.is_some() && !missing.is_empty() {
        note = Some(format!("{}; missing PVs: {}", note.unwrap_or_default(), missing.join(", ")));
    }
    Volume {
        id: format!("{vg}/{}", lv.name),
        start: 0,
        size: lv.size,
        part_type: None,
        part_name: None,
        lv_type: Some(lv.kind.clone()),
        fs: found.as_ref().map_or(FsKind::Unknown, |p| p.kind),
        label: found.as_ref().and_then(|p| p.label.clone()),
        uuid: found.and_then(|p| p.uuid),
        os_root: false,
        note,
        subvolume: None,
        slice,
        members: Vec::new(),
    }
}

/// Say why a volume's files cannot be read, and mark the OS root.
fn annotate(v: &mut Volume) {
    if v.note.is_none() {
        v.note = match v.fs {
            FsKind::Luks => Some(NO_PASSPHRASE.into()),
            FsKind::RaidMember => Some("member of an MD RAID array: vmvault does not assemble arrays".into()),
            FsKind::LvmMember => Some("LVM PV whose volume group could not be read".into()),
            _ => None,
        };
    }
    if v.readable() {
        match open(v) {
            Ok(fs) => {
                v.os_root = is_os_root(fs.as_ref());
                // NTFS keeps its label in a file, not the boot sector.
                v.label = v.label.take().or_else(|| fs.label());
                if let Some(warning) = fs.warning() {
                    v.note = Some(match v.note.take() {
                        Some(note) => format!("{note}; {warning}"),
                        None => warning,
                    });
                }
            }
            Err(e) => v.note = Some(format!("cannot be opened: {e}")),
        }
    }
}

/// The notes a subvolume holding an OS root carries until one root is chosen.
const ROOT_SUBVOLUME: &str = "btrfs subvolume with an OS root";
const FSTAB_ROOT_SUBVOLUME: &str = "btrfs subvolume with an OS root that its fstab mounts as /";

/// A row for each subvolume of the btrfs on `v` (`3:home`).
fn subvolumes_of(v: &Volume) -> Vec<Volume> {
    let Some(slice) = v.slice.clone() else { return Vec::new() };
    let Ok(fs) = crate::btrfs::BtrfsFs::open_devices(slice, &v.members) else { return Vec::new() };
    let Ok(list) = fs.subvolumes() else { return Vec::new() };
    let mut out = Vec::new();
    for sub in list {
        let view = fs.at(&sub);
        let root = is_os_root(&view);
        let named = root && fstab_mounts_as_root(&view, &sub);
        let note = match (root, named) {
            (true, true) => FSTAB_ROOT_SUBVOLUME,
            (true, false) => ROOT_SUBVOLUME,
            _ => "btrfs subvolume",
        };
        out.push(Volume {
            id: format!("{}:{}", v.id, sub.path),
            subvolume: Some(sub.path),
            note: Some(note.into()),
            os_root: false,
            ..v.clone()
        });
    }
    out
}

/// Whether the `/etc/fstab` in subvolume `sub` mounts `sub` itself as `/` (`subvol=` its path
/// or `subvolid=` its id).
fn fstab_mounts_as_root(fs: &dyn GuestFs, sub: &crate::btrfs::Subvolume) -> bool {
    let mut fstab = Vec::new();
    if fs.stat(b"/etc/fstab").map(|e| e.size > 1 << 20).unwrap_or(true)
        || fs.read_file(b"/etc/fstab", &mut fstab).is_err()
    {
        return false;
    }
    String::from_utf8_lossy(&fstab).lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_none_or(|f| f.starts_with('#')) || fields.get(1) != Some(&"/") {
            return false;
        }
        fields.get(3).is_some_and(|options| {
            options.split(',').any(|o| {
                o.strip_prefix("subvol=").is_some_and(|p| p.trim_start_matches('/') == sub.path)
                    || o.strip_prefix("subvolid=").is_some_and(|id| id == sub.id.to_string())
            })
        })
    })
}

/// Whether a filesystem is a guest's OS root.
fn is_os_root(fs: &dyn GuestFs) -> bool {
    fs.stat(b"/etc/os-release").is_ok() || fs.stat(b"/Windows/System32").is_ok()
}

/// Open the filesystem of a volume.
pub fn open(volume: &Volume) -> Result<Box<dyn GuestFs>> {
    let unreadable = || GuestError::Unsupported {
        what: format!("volume {}", volume.id),
        reason: match &volume.note {
            Some(note) => format!("holds {} ({note}), not a filesystem vmvault can read", volume.fs.name()),
            None => {
                format!(
                    "holds {}, not a filesystem vmvault can read (ext2/3/4, XFS, btrfs, FAT, NTFS)",
                    volume.fs.name()
                )
            }
        },
    };
    let slice = volume.slice.clone().ok_or_else(unreadable)?;
    Ok(match volume.fs {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => Box::new(crate::ext::ExtFs::open(slice)?),
        FsKind::Vfat => Box::new(crate::fat::FatFs::open(slice)?),
        FsKind::Ntfs => Box::new(crate::ntfs::NtfsFs::open(slice)?),
        FsKind::Xfs => Box::new(crate::xfs::XfsFs::open(slice)?),
        FsKind::Btrfs => {
            let fs = crate::btrfs::BtrfsFs::open_devices(slice, &volume.members)?;
            match &volume.subvolume {
                Some(sub) => Box::new(fs.at_subvolume(sub)?),
                None => Box::new(fs),
            }
        }
        _ => return Err(unreadable()),
    })
}

impl Layout {
    /// The volume named `id`, or an error listing the names there are.
    pub fn find(&self, id: &str) -> Result<&Volume> {
        self.volumes.iter().find(|v| v.id == id).ok_or_else(|| {
            let known: Vec<&str> = self.volumes.iter().map(|v| v.id.as_str()).collect();
            GuestError::Invalid(format!(
                "disk {} has no volume {id:?} (it has: {})",
                self.disk,
                known.join(", ")
            ))
        })
    }

    /// The volume to use when none is named: the OS root; else, when every volume that may
    /// hold files is readable, the largest filesystem. Otherwise an error naming each
    /// volume that could hold the root and why it cannot be read.
    pub fn default_volume(&self) -> Result<&Volume> {
        if let Some(root) = self.volumes.iter().find(|v| v.os_root) {
            return Ok(root);
        }
        let hidden: Vec<String> = self
            .volumes
            .iter()
            .filter(|v| !v.readable() && might_hold_root(v))
            .map(|v| {
                format!(
                    "{} is {}{}",
                    v.id,
                    v.fs.name(),
                    v.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
                )
            })
            .collect();
        if !hidden.is_empty() {
            return Err(GuestError::Unsupported {
                what: format!("disk {}", self.disk),
                reason: format!(
                    "no readable filesystem holds an OS root (/etc/os-release or Windows/System32), and {}; \
                     --partition names the volume to read",
                    hidden.join("; ")
                ),
            });
        }
        self.volumes.iter().filter(|v| v.readable()).max_by_key(|v| v.size).ok_or_else(|| {
            GuestError::Unsupported {
                what: format!("disk {}", self.disk),
                reason: "holds no filesystem vmvault can read (ext2/3/4, XFS, btrfs, FAT, NTFS)".into(),
            }
        })
    }
}

/// Whether an unreadable volume could be where the root is (swap and PVs whose LVs are
/// listed cannot).
fn might_hold_root(v: &Volume) -> bool {
    match v.fs {
        FsKind::Swap => false,
        FsKind::LvmMember => !v.is_assembled_pv(),
        FsKind::Unknown => {
            v.lv_type.is_some() || v.size >= 64 << 20 && !v.part_type.as_deref().is_some_and(is_boot_type)
        }
        _ => true,
    }
}

fn is_boot_type(t: &str) -> bool {
    t == "BIOS boot" || t == "Microsoft reserved"
}

/// The table kind and volumes of a single disk (no other disks' PVs).
pub fn volumes(disk: Arc<dyn BlockReader>) -> Result<(TableKind, Vec<Volume>)> {
    let layout = scan(&[GuestDisk { label: "disk".into(), reader: disk }], 0)?;
    Ok((layout.table, layout.volumes))
}
