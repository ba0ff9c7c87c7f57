//! FAT12/16/32 with long names through `fatfs` (used read-only: its writes are refused by
//! the reader). Times are local time without a zone, as FAT stores them; they are taken as
//! UTC. Unix metadata is synthesised: directories 0755, files 0644, no owner.

use std::io::{Read, Write};

use fatfs::{Dir, FileSystem, FsOptions};

use crate::error::{GuestError, Result};
use crate::guard;
use crate::reader::{Cursor, Slice};
use crate::tree::{Entry, EntryKind, GuestFs, base_name, copy_out, show};

/// Most entries a directory may list before it is called hostile (a looping cluster chain
/// would list forever).
const MAX_ENTRIES: usize = 65_536 * 16;

/// A FAT filesystem.
pub struct FatFs {
    fs: FileSystem<Cursor>,
}

impl FatFs {
    /// Open the filesystem in `volume`.
    pub fn open(volume: Slice) -> Result<FatFs> {
        guard("FAT boot sector", || {
            let options = FsOptions::new().update_accessed_date(false);
            FileSystem::new(volume.cursor(), options)
                .map(|fs| FatFs { fs })
                .map_err(|e| GuestError::corrupt("FAT boot sector", e))
        })
    }

    fn dir(&self, path: &[u8], what: &str) -> Result<Dir<'_, Cursor>> {
        let text = std::str::from_utf8(path).map_err(|_| GuestError::NotFound { path: what.to_string() })?;
        let trimmed = text.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(self.fs.root_dir());
        }
        self.fs.root_dir().open_dir(trimmed).map_err(|e| io_error(what, e))
    }

    /// The directory holding `path` and the entry's name in it.
    fn parent<'a>(&self, path: &'a [u8], what: &str) -> Result<(Dir<'_, Cursor>, &'a [u8])> {
        let cut = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
        Ok((self.dir(&path[..cut], what)?, &path[cut + 1..]))
    }
}

fn io_error(what: &str, e: std::io::Error) -> GuestError {
    match e.kind() {
        std::io::ErrorKind::NotFound => GuestError::NotFound { path: what.to_string() },
        _ => GuestError::corrupt(what, e),
    }
}

fn to_unix(dt: fatfs::DateTime) -> Option<(i64, u32)> {
    let date = dt.date;
    let time = dt.time;
    let days = days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day))?;
    let secs = days * 86_400 + i64::from(time.hour) * 3600 + i64::from(time.min) * 60 + i64::from(time.sec);
    Some((secs, u32::from(time.millis) * 1_000_000))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

fn entry_of(e: &fatfs::DirEntry<'_, Cursor>) -> Entry {
    let dir = e.is_dir();
    Entry {
        name: e.file_name().into_bytes(),
        kind: if dir { EntryKind::Dir } else { EntryKind::File },
        size: if dir { 0 } else { e.len() },
        mode: if dir { 0o040755 } else { 0o100644 },
        uid: None,
        gid: None,
        mtime: to_unix(e.modified()),
        links: None,
    }
}

impl GuestFs for FatFs {
    fn kind(&self) -> &'static str {
        "vfat"
    }

    fn label(&self) -> Option<String> {
        let label = self.fs.volume_label().trim().to_string();
        (!label.is_empty() && label != "NO NAME").then_some(label)
    }

    fn list(&self, path: &[u8]) -> Result<Vec<Entry>> {
        let what = show(path);
        guard(&what, || {
            let mut out = Vec::new();
            for item in self.dir(path, &what)?.iter() {
                let item = item.map_err(|e| io_error(&what, e))?;
                let name = item.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                out.push(entry_of(&item));
                if out.len() > MAX_ENTRIES {
                    return Err(GuestError::corrupt(&what, "endless directory (a looping cluster chain)"));
                }
            }
            Ok(out)
        })
    }

    fn stat(&self, path: &[u8]) -> Result<Entry> {
        let what = show(path);
        guard(&what, || {
            if path.iter().all(|&b| b == b'/') {
                return Ok(Entry {
                    name: b"/".to_vec(),
                    kind: EntryKind::Dir,
                    size: 0,
                    mode: 0o040755,
                    uid: None,
                    gid: None,
                    mtime: None,
                    links: None,
                });
            }
            let (dir, name) = self.parent(path, &what)?;
            let wanted = String::from_utf8_lossy(name).to_lowercase();
            for item in dir.iter().take(MAX_ENTRIES) {
                let item = item.map_err(|e| io_error(&what, e))?;
                if item.file_name().to_lowercase() == wanted
                    || item.short_file_name().to_lowercase() == wanted
                {
                    let mut entry = entry_of(&item);
                    entry.name = base_name(path);
                    return Ok(entry);
                }
            }
            Err(GuestError::NotFound { path: what.clone() })
        })
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        Err(GuestError::Unsupported { what: show(path), reason: "FAT has no symbolic links".into() })
    }

    fn read_file(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        let what = show(path);
        guard(&what, || {
            let (dir, name) = self.parent(path, &what)?;
            let name = std::str::from_utf8(name).map_err(|_| GuestError::NotFound { path: what.clone() })?;
            let mut file = dir.open_file(name).map_err(|e| io_error(&what, e))?;
            copy_out(&what, |buf| file.read(buf).map_err(|e| GuestError::corrupt(&what, e)), out)
        })
    }
}
