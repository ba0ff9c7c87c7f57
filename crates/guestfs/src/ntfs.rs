//! NTFS through the `ntfs` crate (read-only). Names are matched case-insensitively as NTFS
//! does; DOS 8.3 aliases and the system files (`$MFT`…) are not listed. Unix metadata is
//! synthesised: directories 0755, files 0644, no owner.

use std::cell::RefCell;
use std::io::{Read, Write};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::NtfsFileNamespace;
use ntfs::{Ntfs, NtfsFile};

use crate::error::{GuestError, Result};
use crate::guard;
use crate::reader::{Cursor, Slice};
use crate::tree::{Entry, EntryKind, GuestFs, copy_out, show};

/// Records below this number are NTFS's own metadata files.
const FIRST_USER_RECORD: u64 = 16;
/// Seconds between 1601-01-01 and 1970-01-01.
const NT_TO_UNIX_SECONDS: i64 = 11_644_473_600;
/// Most entries a directory may list before it is called hostile.
const MAX_ENTRIES: usize = 1_000_000;

/// An NTFS filesystem.
pub struct NtfsFs {
    ntfs: Ntfs,
    reader: RefCell<Cursor>,
}

fn corrupt(what: &str, e: ntfs::NtfsError) -> GuestError {
    GuestError::corrupt(what, e)
}

fn nt_time(t: ntfs::NtfsTime) -> (i64, u32) {
    let ticks = t.nt_timestamp();
    let secs = (ticks / 10_000_000) as i64 - NT_TO_UNIX_SECONDS;
    (secs, ((ticks % 10_000_000) * 100) as u32)
}

impl NtfsFs {
    /// Open the filesystem in `volume`.
    pub fn open(volume: Slice) -> Result<NtfsFs> {
        guard("NTFS boot sector", || {
            let mut reader = volume.cursor();
            let mut ntfs = Ntfs::new(&mut reader).map_err(|e| corrupt("NTFS boot sector", e))?;
            ntfs.read_upcase_table(&mut reader).map_err(|e| corrupt("NTFS $UpCase", e))?;
            Ok(NtfsFs { ntfs, reader: RefCell::new(reader) })
        })
    }

    /// The file at `path`, following directories by name.
    fn resolve(&self, path: &[u8], reader: &mut Cursor) -> Result<NtfsFile<'_>> {
        let what = show(path);
        let mut file = self.ntfs.root_directory(reader).map_err(|e| corrupt("NTFS root directory", e))?;
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            let name = std::str::from_utf8(part).map_err(|_| GuestError::NotFound { path: what.clone() })?;
            if !file.is_directory() {
                return Err(GuestError::NotADirectory { path: what });
            }
            let index = file.directory_index(reader).map_err(|e| corrupt(&what, e))?;
            let mut finder = index.finder();
            let found = NtfsFileNameIndex::find(&mut finder, &self.ntfs, reader, name)
                .ok_or_else(|| GuestError::NotFound { path: what.clone() })?
                .map_err(|e| corrupt(&what, e))?;
            let record = found.file_reference().file_record_number();
            if record < FIRST_USER_RECORD {
                return Err(GuestError::NotFound { path: what });
            }
            file = found.to_file(&self.ntfs, reader).map_err(|e| corrupt(&what, e))?;
        }
        Ok(file)
    }

    fn entry_of(&self, name: Vec<u8>, file: &NtfsFile<'_>, reader: &mut Cursor, what: &str) -> Result<Entry> {
        let info = file.info().map_err(|e| corrupt(what, e))?;
        let dir = file.is_directory();
        let size = if dir {
            0
        } else {
            match file.data(reader, "") {
                Some(Ok(item)) => {
                    item.to_attribute().map(|a| a.value_length()).map_err(|e| corrupt(what, e))?
                }
                Some(Err(e)) => return Err(corrupt(what, e)),
                None => 0,
            }
        };
        Ok(Entry {
            name,
            kind: if dir { EntryKind::Dir } else { EntryKind::File },
            size,
            mode: if dir { 0o040755 } else { 0o100644 },
            uid: None,
            gid: None,
            mtime: Some(nt_time(info.modification_time())),
        })
    }
}

impl GuestFs for NtfsFs {
    fn kind(&self) -> &'static str {
        "ntfs"
    }

    fn label(&self) -> Option<String> {
        let mut reader = self.reader.try_borrow_mut().ok()?;
        let name = self.ntfs.volume_name(&mut *reader)?.ok()?;
        let label = name.name().to_string_lossy();
        (!label.is_empty()).then_some(label)
    }

    fn list(&self, path: &[u8]) -> Result<Vec<Entry>> {
        let what = show(path);
        guard(&what, || {
            let mut reader = self.reader.borrow_mut();
            let dir = self.resolve(path, &mut reader)?;
            if !dir.is_directory() {
                return Err(GuestError::NotADirectory { path: what.clone() });
            }
            let index = dir.directory_index(&mut *reader).map_err(|e| corrupt(&what, e))?;
            let mut entries = index.entries();
            let mut records = Vec::new();
            while let Some(item) = entries.next(&mut *reader) {
                let item = item.map_err(|e| corrupt(&what, e))?;
                let Some(key) = item.key() else { continue };
                let file_name = key.map_err(|e| corrupt(&what, e))?;
                let record = item.file_reference().file_record_number();
                if file_name.namespace() == NtfsFileNamespace::Dos || record < FIRST_USER_RECORD {
                    continue;
                }
                records.push((file_name.name().to_string_lossy().into_bytes(), item.file_reference()));
                if records.len() > MAX_ENTRIES {
                    return Err(GuestError::corrupt(&what, "more than a million entries"));
                }
            }
            let mut out = Vec::with_capacity(records.len());
            for (name, reference) in records {
                let file = reference.to_file(&self.ntfs, &mut *reader).map_err(|e| corrupt(&what, e))?;
                out.push(self.entry_of(name, &file, &mut reader, &what)?);
            }
            Ok(out)
        })
    }

    fn stat(&self, path: &[u8]) -> Result<Entry> {
        let what = show(path);
        guard(&what, || {
            let mut reader = self.reader.borrow_mut();
            let file = self.resolve(path, &mut reader)?;
            self.entry_of(crate::tree::base_name(path), &file, &mut reader, &what)
        })
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        Err(GuestError::Unsupported { what: show(path), reason: "NTFS reparse points are not read".into() })
    }

    fn read_file(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        let what = show(path);
        guard(&what, || {
            let mut reader = self.reader.borrow_mut();
            let file = self.resolve(path, &mut reader)?;
            if file.is_directory() {
                return Err(GuestError::NotAFile { path: what.clone() });
            }
            let Some(item) = file.data(&mut *reader, "") else { return Ok(0) };
            let item = item.map_err(|e| corrupt(&what, e))?;
            let attribute = item.to_attribute().map_err(|e| corrupt(&what, e))?;
            let value = attribute.value(&mut *reader).map_err(|e| corrupt(&what, e))?;
            let mut data = value.attach(&mut *reader);
            copy_out(&what, |buf| data.read(buf).map_err(|e| GuestError::corrupt(&what, e)), out)
        })
    }
}
