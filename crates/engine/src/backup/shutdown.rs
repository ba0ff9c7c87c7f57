//! Whether a stopped VM that libvirt does not manage was shut down cleanly, as its file
//! systems tell: an ext2/3/4 file system that was unmounted cleanly is marked valid and needs
//! no journal recovery. When every file system found on the VM's disks says so (FAT, as on an
//! EFI system partition, swap, and LVM PVs — their LVs are judged — do not count), the point
//! is file-system-consistent; anything else (a dirty journal, a file system vmvault cannot
//! judge) leaves it crash-consistent.

use std::io;
use std::sync::{Arc, Mutex};

use disk::BlockSource;
use guestfs::{BlockReader, FsKind, Slice, volumes};

use super::plan::HeldDisk;

/// ext's superblock: 1024 bytes in, magic at 0x38, state at 0x3A, incompatible features at 0x60.
const SUPERBLOCK: u64 = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const STATE_VALID: u16 = 0x0001;
const INCOMPAT_RECOVER: u32 = 0x0004;

/// A disk image as guestfs reads it.
struct Image(Mutex<Box<dyn BlockSource>>);

impl BlockReader for Image {
    fn size(&self) -> u64 {
        self.0.lock().map(|s| s.size()).unwrap_or(0)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut source = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        source.read_at(offset, buf).map_err(io::Error::other)
    }
}

/// The note for a point whose file systems were all unmounted cleanly; `None` when one was
/// not, or cannot be told.
pub(super) fn cleanly_unmounted(disks: &[HeldDisk]) -> Option<String> {
    let mut clean = 0;
    for held in disks {
        let source = disk::open_source(&held.record.path, held.record.format).ok()?;
        let image: Arc<dyn BlockReader> = Arc::new(Image(Mutex::new(source)));
        let (_, found) = volumes(Arc::clone(&image)).ok()?;
        for volume in found {
            match volume.fs {
                FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 if ext_clean(volume.slice()?)? => clean += 1,
                FsKind::Vfat | FsKind::Swap => {}
                FsKind::LvmMember if volume.is_assembled_pv() => {}
                FsKind::Unknown if is_swap(volume.part_type.as_deref()) => {}
                _ => return None,
            }
        }
    }
    (clean > 0).then(|| {
        format!(
            "the guest's {clean} ext file systems were unmounted cleanly: the point is file-system-consistent"
        )
    })
}

/// Whether the ext file system of `volume` is marked valid and needs no recovery; `None`
/// when its superblock cannot be read.
fn ext_clean(volume: &Slice) -> Option<bool> {
    let mut sb = [0u8; 0x64];
    volume.read_at(SUPERBLOCK, &mut sb).ok()?;
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    if u16_at(0x38) != EXT_MAGIC {
        return None;
    }
    let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
    Some(u16_at(0x3A) & STATE_VALID != 0 && incompat & INCOMPAT_RECOVER == 0)
}

/// A swap partition by its type (`Linux swap`), formatted or not: nothing to be consistent.
fn is_swap(part_type: Option<&str>) -> bool {
    part_type.is_some_and(|t| t.contains("swap"))
}
