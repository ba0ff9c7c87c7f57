//! NTFS through the `ntfs` crate (read-only), with what it leaves to its caller done here:
//! names are matched exactly (NTFS's POSIX namespace allows names that differ only in case,
//! and each must give its own file); LZNT1-compressed files are decompressed ([`lznt1`]);
//! symlink and junction reparse points and Interix links are symlinks ([`reparse`]); files
//! whose data is not in them (EFS-encrypted, deduplicated, cloud placeholders) are errors
//! that say so, never their stub bytes. DOS 8.3 aliases and the system files (`$MFT`…) are
//! not listed. Unix metadata is synthesised: directories 0755, files 0644, no owner.

pub mod lznt1;
mod record;
pub mod reparse;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::rc::Rc;

use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::structured_values::{NtfsAttributeList, NtfsFileAttributeFlags, NtfsFileNamespace};
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsFile};

use crate::error::{GuestError, Result};
use crate::guard;
use crate::reader::{Cursor, Slice};
use crate::tree::{Entry, EntryKind, GuestFs, copy_out, show};
use record::ZeroPast;

/// Records below this number are NTFS's own metadata files.
const FIRST_USER_RECORD: u64 = 16;
/// Seconds between 1601-01-01 and 1970-01-01.
const NT_TO_UNIX_SECONDS: i64 = 11_644_473_600;
/// Most entries a directory may list before it is called hostile.
const MAX_ENTRIES: usize = 1_000_000;
/// Directories whose name lookups are kept.
const DIR_CACHE: usize = 64;
/// Largest reparse buffer NTFS allows.
const MAX_REPARSE: u64 = 16 * 1024;
/// Clusters in a compression unit (NTFS compresses only with clusters of 4 KiB or less).
const UNIT_CLUSTERS: u64 = 16;

/// A stream's runs: where each is on the volume (`None`: sparse) and its length in bytes.
type Runs = Vec<(Option<u64>, u64)>;

/// A directory's names (exact, as bytes) and the records they name.
type Names = Rc<HashMap<Vec<u8>, u64>>;

/// An NTFS filesystem.
pub struct NtfsFs {
    ntfs: Ntfs,
    volume: Slice,
    reader: RefCell<Cursor>,
    dirs: RefCell<HashMap<u64, Names>>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> GuestError {
    GuestError::corrupt(what, e)
}

fn unsupported(what: &str, reason: impl Into<String>) -> GuestError {
    GuestError::Unsupported { what: what.to_string(), reason: reason.into() }
}

fn nt_time(t: ntfs::NtfsTime) -> (i64, u32) {
    let ticks = t.nt_timestamp();
    let secs = (ticks / 10_000_000) as i64 - NT_TO_UNIX_SECONDS;
    (secs, ((ticks % 10_000_000) * 100) as u32)
}

/// The runs of a non-resident value; `None` for a resident one.
fn runs_of(value: &NtfsAttributeValue<'_, '_>, what: &str) -> Result<Option<Runs>> {
    let NtfsAttributeValue::NonResident(v) = value else { return Ok(None) };
    v.data_runs()
        .map(|run| run.map(|r| (r.data_position().value().map(|p| p.get()), r.allocated_size())))
        .collect::<std::result::Result<Runs, _>>()
        .map(Some)
        .map_err(|e| corrupt(what, e))
}

/// The initialized size of `attribute` (non-resident) of `file`: where its valid data ends.
fn valid_length(
    volume: &Slice,
    file: &NtfsFile<'_>,
    attribute: &ntfs::NtfsAttribute<'_, '_>,
    what: &str,
) -> Result<u64> {
    let (Some(record), Some(at)) = (file.position().value(), attribute.position().value()) else {
        return Err(GuestError::corrupt(what, "an attribute at no position"));
    };
    let offset = at
        .get()
        .checked_sub(record.get())
        .ok_or_else(|| GuestError::corrupt(what, "an attribute before its record"))?;
    record::initialized_size(volume, record.get(), file.allocated_size(), offset, what)
}

/// The unnamed $DATA of a file with an `$ATTRIBUTE_LIST`, its pieces put together.
struct Listed {
    /// Its size.
    len: u64,
    /// Its initialized size: bytes past it read as zeros.
    valid: u64,
    flags: NtfsAttributeFlags,
    runs: Runs,
}

/// What a file record is, as far as listing and reading go.
struct Node {
    /// Its file record and how many names it has.
    links: (u64, u32),
    kind: EntryKind,
    size: u64,
    mtime: (i64, u32),
    /// A symlink's or junction's target.
    link: Option<Vec<u8>>,
    /// Why its data cannot be read, if it cannot.
    unreadable: Option<String>,
}

impl NtfsFs {
    /// Open the filesystem in `volume`.
    pub fn open(volume: Slice) -> Result<NtfsFs> {
        guard("NTFS boot sector", || {
            let mut reader = volume.cursor();
            let mut ntfs = Ntfs::new(&mut reader).map_err(|e| corrupt("NTFS boot sector", e))?;
            ntfs.read_upcase_table(&mut reader).map_err(|e| corrupt("NTFS $UpCase", e))?;
            Ok(NtfsFs { ntfs, volume, reader: RefCell::new(reader), dirs: RefCell::new(HashMap::new()) })
        })
    }

    /// The names of a directory with their records (long and POSIX names; no DOS aliases,
    /// no system files).
    fn entries(&self, dir: &NtfsFile<'_>, reader: &mut Cursor, what: &str) -> Result<Vec<(Vec<u8>, u64)>> {
        let index = dir.directory_index(reader).map_err(|e| corrupt(what, e))?;
        let mut entries = index.entries();
        let mut out = Vec::new();
        while let Some(item) = entries.next(reader) {
            let item = item.map_err(|e| corrupt(what, e))?;
            let Some(key) = item.key() else { continue };
            let file_name = key.map_err(|e| corrupt(what, e))?;
            let record = item.file_reference().file_record_number();
            if file_name.namespace() == NtfsFileNamespace::Dos || record < FIRST_USER_RECORD {
                continue;
            }
            out.push((file_name.name().to_string_lossy().into_bytes(), record));
            if out.len() > MAX_ENTRIES {
                return Err(GuestError::corrupt(what, "more than a million entries"));
            }
        }
        Ok(out)
    }

    fn names(&self, dir: &NtfsFile<'_>, reader: &mut Cursor, what: &str) -> Result<Names> {
        let record = dir.file_record_number();
        if let Some(hit) = self.dirs.borrow().get(&record) {
            return Ok(Rc::clone(hit));
        }
        let names: Names = Rc::new(self.entries(dir, reader, what)?.into_iter().collect());
        let mut cache = self.dirs.borrow_mut();
        if cache.len() >= DIR_CACHE {
            cache.clear();
        }
        cache.insert(record, Rc::clone(&names));
        Ok(names)
    }

    /// The file at `path`, each component matched exactly.
    fn resolve(&self, path: &[u8], reader: &mut Cursor) -> Result<NtfsFile<'_>> {
        let what = show(path);
        let mut file = self.ntfs.root_directory(reader).map_err(|e| corrupt("NTFS root directory", e))?;
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            if !file.is_directory() {
                return Err(GuestError::NotADirectory { path: what });
            }
            let record = *self
                .names(&file, reader, &what)?
                .get(part)
                .ok_or_else(|| GuestError::NotFound { path: what.clone() })?;
            file = self.ntfs.file(reader, record).map_err(|e| corrupt(&what, e))?;
        }
        Ok(file)
    }

    /// The value of the file's `ty` attribute (at most `max` bytes), if it has one.
    fn small_attribute(
        &self,
        file: &NtfsFile<'_>,
        ty: NtfsAttributeType,
        max: u64,
        reader: &mut Cursor,
        what: &str,
    ) -> Result<Option<Vec<u8>>> {
        let mut attributes = file.attributes();
        while let Some(item) = attributes.next(reader) {
            let item = item.map_err(|e| corrupt(what, e))?;
            let attribute = item.to_attribute().map_err(|e| corrupt(what, e))?;
            if attribute.ty().map_err(|e| corrupt(what, e))? != ty {
                continue;
            }
            let len = attribute.value_length();
            if len > max {
                return Err(GuestError::corrupt(
                    what,
                    format!("an attribute of {len} bytes where at most {max} fit"),
                ));
            }
            let mut value = attribute.value(reader).map_err(|e| corrupt(what, e))?.attach(reader);
            let mut out = vec![0u8; len as usize];
            value.read_exact(&mut out).map_err(|e| corrupt(what, e))?;
            return Ok(Some(out));
        }
        Ok(None)
    }

    fn node(&self, file: &NtfsFile<'_>, reader: &mut Cursor, what: &str) -> Result<Node> {
        let info = file.info().map_err(|e| corrupt(what, e))?;
        let attrs = info.file_attributes();
        let mtime = nt_time(info.modification_time());
        let dir = file.is_directory();
        let mut node = Node {
            links: (file.file_record_number(), u32::from(file.hard_link_count())),
            kind: if dir { EntryKind::Dir } else { EntryKind::File },
            size: 0,
            mtime,
            link: None,
            unreadable: None,
        };
        if attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
            let buffer = self
                .small_attribute(file, NtfsAttributeType::ReparsePoint, MAX_REPARSE, reader, what)?
                .ok_or_else(|| {
                    GuestError::corrupt(what, "marked a reparse point but has no $REPARSE_POINT")
                })?;
            if let Some(target) = reparse::target(&buffer) {
                node.kind = EntryKind::Symlink;
                node.size = target.len() as u64;
                node.link = Some(target);
                return Ok(node);
            }
            node.unreadable = Some(format!(
                "a reparse point with tag {:#010x} (deduplicated, a cloud placeholder or similar): its data is not in the file",
                reparse::tag(&buffer)
            ));
        }
        if dir {
            return Ok(node);
        }
        if attrs.contains(NtfsFileAttributeFlags::ENCRYPTED) {
            node.unreadable = Some("encrypted with EFS: vmvault cannot decrypt it".into());
        }
        node.size = match self.listed_data(file, reader, what)? {
            Some(listed) => listed.len,
            None => file
                .data(reader, "")
                .ok_or_else(|| GuestError::corrupt(what, "a file without its unnamed $DATA attribute"))?
                .map_err(|e| corrupt(what, e))?
                .to_attribute()
                .map_err(|e| corrupt(what, e))?
                .value_length(),
        };
        if attrs.contains(NtfsFileAttributeFlags::SYSTEM) && node.size <= 4096 && node.size >= 8 {
            let mut data = Vec::new();
            self.copy_data(file, reader, what, &mut data)?;
            if let Some(target) = reparse::interix_target(&data) {
                node.kind = EntryKind::Symlink;
                node.size = target.len() as u64;
                node.link = Some(target);
            }
        }
        Ok(node)
    }

    /// The unnamed $DATA of a file whose attributes overflowed into an `$ATTRIBUTE_LIST`:
    /// its pieces (in several records) put back together in VCN order, as the size, the
    /// attribute flags and the runs. `None` when the file has no attribute list.
    fn listed_data(&self, file: &NtfsFile<'_>, reader: &mut Cursor, what: &str) -> Result<Option<Listed>> {
        let mut list = None;
        for attribute in file.attributes_raw() {
            let attribute = attribute.map_err(|e| corrupt(what, e))?;
            if attribute.ty().map_err(|e| corrupt(what, e))? == NtfsAttributeType::AttributeList {
                list = Some(
                    attribute
                        .structured_value::<_, NtfsAttributeList>(reader)
                        .map_err(|e| corrupt(what, e))?,
                );
                break;
            }
        }
        let Some(list) = list else { return Ok(None) };
        let mut pieces = Vec::new();
        let mut entries = list.entries();
        while let Some(entry) = entries.next(reader) {
            let entry = entry.map_err(|e| corrupt(what, e))?;
            if entry.ty().map_err(|e| corrupt(what, e))? != NtfsAttributeType::Data
                || entry.name_length() != 0
            {
                continue;
            }
            let record = entry.to_file(&self.ntfs, reader).map_err(|e| corrupt(what, e))?;
            let attribute = entry.to_attribute(&record).map_err(|e| corrupt(what, e))?;
            let (len, flags) = (attribute.value_length(), attribute.flags());
            let value = attribute.value(reader).map_err(|e| corrupt(what, e))?;
            let Some(runs) = runs_of(&value, what)? else { return Ok(None) };
            let vcn = entry.lowest_vcn().value();
            // Only the first piece's header holds the stream's sizes.
            let valid = if vcn == 0 { valid_length(&self.volume, &record, &attribute, what)? } else { 0 };
            pieces.push((vcn, len, flags, runs, valid));
            if pieces.len() > MAX_ENTRIES {
                return Err(GuestError::corrupt(what, "more than a million $DATA pieces"));
            }
        }
        pieces.sort_by_key(|p| p.0);
        let Some(&(first_vcn, len, flags, valid)) = pieces.first().map(|p| (p.0, p.1, p.2, p.4)).as_ref()
        else {
            return Ok(None);
        };
        if first_vcn != 0 {
            return Err(GuestError::corrupt(what, "its $DATA pieces do not start at the file's start"));
        }
        let runs = pieces.into_iter().flat_map(|p| p.3).collect();
        Ok(Some(Listed { len, valid, flags, runs }))
    }

    /// Copy the unnamed $DATA of `file` to `out`, decompressing LZNT1.
    fn copy_data(
        &self,
        file: &NtfsFile<'_>,
        reader: &mut Cursor,
        what: &str,
        out: &mut dyn Write,
    ) -> Result<u64> {
        if let Some(Listed { len, valid, flags, runs }) = self.listed_data(file, reader, what)? {
            if flags.contains(NtfsAttributeFlags::ENCRYPTED) {
                return Err(unsupported(what, "encrypted with EFS: vmvault cannot decrypt it"));
            }
            let mut out = ZeroPast::new(out, valid);
            if flags.contains(NtfsAttributeFlags::COMPRESSED) {
                return self.copy_compressed(&runs, len, what, &mut out);
            }
            return self.copy_runs(&runs, len, what, &mut out);
        }
        let item = file
            .data(reader, "")
            .ok_or_else(|| GuestError::corrupt(what, "a file without its unnamed $DATA attribute"))?
            .map_err(|e| corrupt(what, e))?;
        let attribute = item.to_attribute().map_err(|e| corrupt(what, e))?;
        let flags = attribute.flags();
        if flags.contains(NtfsAttributeFlags::ENCRYPTED) {
            return Err(unsupported(what, "encrypted with EFS: vmvault cannot decrypt it"));
        }
        let len = attribute.value_length();
        let valid =
            if attribute.is_resident() { len } else { valid_length(&self.volume, file, &attribute, what)? };
        let out = &mut ZeroPast::new(out, valid);
        let value = attribute.value(reader).map_err(|e| corrupt(what, e))?;
        if !flags.contains(NtfsAttributeFlags::COMPRESSED) {
            let mut data = value.attach(reader);
            return copy_out(what, |buf| data.read(buf).map_err(|e| GuestError::corrupt(what, e)), out);
        }
        let Some(runs) = runs_of(&value, what)? else {
            if !matches!(value, NtfsAttributeValue::Resident(_)) {
                return Err(unsupported(
                    what,
                    "compressed and split over several file records: not readable yet",
                ));
            }
            let mut data = value.attach(reader);
            return copy_out(what, |buf| data.read(buf).map_err(|e| GuestError::corrupt(what, e)), out);
        };
        self.copy_compressed(&runs, len, what, out)
    }

    /// A plain stream of `len` bytes from its runs (sparse runs are zeros).
    fn copy_runs(&self, runs: &Runs, len: u64, what: &str, out: &mut dyn Write) -> Result<u64> {
        let mut buf = vec![0u8; 1 << 20];
        let mut written = 0u64;
        for &(position, size) in runs {
            let mut done = 0u64;
            while done < size && written < len {
                let n = (size - done).min(len - written).min(buf.len() as u64) as usize;
                match position {
                    Some(p) => self.volume.read_at(p + done, &mut buf[..n])?,
                    None => buf[..n].fill(0),
                }
                out.write_all(&buf[..n])
                    .map_err(|source| GuestError::Write { path: what.to_string(), source })?;
                done += n as u64;
                written += n as u64;
            }
        }
        if written < len {
            return Err(GuestError::corrupt(what, "its runs end before its data"));
        }
        Ok(written)
    }

    /// A compressed stream, unit by unit: a unit whose clusters are all allocated is stored
    /// as is, one with none is zeros, one with some is LZNT1 in those it has.
    fn copy_compressed(&self, runs: &Runs, len: u64, what: &str, out: &mut dyn Write) -> Result<u64> {
        let unit = u64::from(self.ntfs.cluster_size()) * UNIT_CLUSTERS;
        if unit > 1 << 20 {
            return Err(unsupported(what, "compressed with clusters larger than 64 KiB"));
        }
        let mut pieces = runs.iter().copied().filter(|(_, n)| *n > 0);
        let mut current = pieces.next();
        let mut plain = vec![0u8; unit as usize];
        let mut packed = Vec::with_capacity(unit as usize);
        let mut written = 0u64;
        while written < len {
            packed.clear();
            let mut allocated = 0u64;
            let mut need = unit;
            while need > 0 {
                let Some((position, size)) = current else { break };
                let take = size.min(need);
                if let Some(p) = position {
                    let at = packed.len();
                    packed.resize(at + take as usize, 0);
                    self.volume.read_at(p, &mut packed[at..])?;
                    allocated += take;
                }
                need -= take;
                current = if take == size {
                    pieces.next()
                } else {
                    Some((position.map(|p| p + take), size - take))
                };
            }
            plain.fill(0);
            if allocated == unit {
                plain.copy_from_slice(&packed);
            } else if allocated > 0 {
                lznt1::decompress(&packed, &mut plain).map_err(|reason| GuestError::corrupt(what, reason))?;
            }
            let n = (len - written).min(unit) as usize;
            out.write_all(&plain[..n])
                .map_err(|source| GuestError::Write { path: what.to_string(), source })?;
            written += n as u64;
            if need == unit && current.is_none() {
                // The runs end before the data does: the rest is not on the disk.
                return Err(GuestError::corrupt(what, "its runs end before its data"));
            }
        }
        Ok(written)
    }

    fn entry(&self, name: Vec<u8>, node: &Node) -> Entry {
        let mode = match node.kind {
            EntryKind::Dir => 0o040755,
            EntryKind::Symlink => 0o120777,
            _ => 0o100644,
        };
        Entry {
            name,
            kind: node.kind,
            size: node.size,
            mode,
            uid: None,
            gid: None,
            mtime: Some(node.mtime),
            links: Some(node.links),
        }
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
            let mut out = Vec::new();
            for (name, record) in self.entries(&dir, &mut reader, &what)? {
                let file = self.ntfs.file(&mut *reader, record).map_err(|e| corrupt(&what, e))?;
                let node = self.node(&file, &mut reader, &show(&crate::tree::join(path, &name)))?;
                out.push(self.entry(name, &node));
            }
            Ok(out)
        })
    }

    fn stat(&self, path: &[u8]) -> Result<Entry> {
        let what = show(path);
        guard(&what, || {
            let mut reader = self.reader.borrow_mut();
            let file = self.resolve(path, &mut reader)?;
            let node = self.node(&file, &mut reader, &what)?;
            Ok(self.entry(crate::tree::base_name(path), &node))
        })
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        let what = show(path);
        guard(&what, || {
            let mut reader = self.reader.borrow_mut();
            let file = self.resolve(path, &mut reader)?;
            self.node(&file, &mut reader, &what)?
                .link
                .ok_or_else(|| GuestError::Invalid(format!("{what}: not a symlink")))
        })
    }

    fn streams(&self, path: &[u8]) -> Result<Vec<(Vec<u8>, u64)>> {
        let what = show(path);
        guard(&what, || {
            let mut reader = self.reader.borrow_mut();
            let file = self.resolve(path, &mut reader)?;
            let mut out = Vec::new();
            let mut attributes = file.attributes();
            while let Some(item) = attributes.next(&mut *reader) {
                let item = item.map_err(|e| corrupt(&what, e))?;
                let attribute = item.to_attribute().map_err(|e| corrupt(&what, e))?;
                if attribute.ty().map_err(|e| corrupt(&what, e))? != NtfsAttributeType::Data {
                    continue;
                }
                let name = attribute.name().map_err(|e| corrupt(&what, e))?.to_string_lossy();
                if !name.is_empty() && !out.iter().any(|(n, _): &(Vec<u8>, u64)| n == name.as_bytes()) {
                    out.push((name.into_bytes(), attribute.value_length()));
                }
            }
            Ok(out)
        })
    }

    fn read_stream(&self, path: &[u8], stream: &[u8], out: &mut dyn Write) -> Result<u64> {
        let what = format!("{}:{}", show(path), String::from_utf8_lossy(stream));
        guard(&what, || {
            let mut reader = self.reader.borrow_mut();
            let file = self.resolve(path, &mut reader)?;
            let name =
                std::str::from_utf8(stream).map_err(|_| GuestError::NotFound { path: what.clone() })?;
            let item = file
                .data(&mut *reader, name)
                .ok_or_else(|| GuestError::NotFound { path: what.clone() })?
                .map_err(|e| corrupt(&what, e))?;
            let attribute = item.to_attribute().map_err(|e| corrupt(&what, e))?;
            if attribute.flags().intersects(NtfsAttributeFlags::COMPRESSED | NtfsAttributeFlags::ENCRYPTED) {
                return Err(unsupported(&what, "a compressed or encrypted stream: not readable yet"));
            }
            let valid = if attribute.is_resident() {
                attribute.value_length()
            } else {
                valid_length(&self.volume, &file, &attribute, &what)?
            };
            let value = attribute.value(&mut *reader).map_err(|e| corrupt(&what, e))?;
            let mut data = value.attach(&mut *reader);
            let out = &mut ZeroPast::new(out, valid);
            copy_out(&what, |buf| data.read(buf).map_err(|e| GuestError::corrupt(&what, e)), out)
        })
    }

    fn read_file(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        let what = show(path);
        guard(&what, || {
            let mut reader = self.reader.borrow_mut();
            let file = self.resolve(path, &mut reader)?;
            let node = self.node(&file, &mut reader, &what)?;
            if node.kind != EntryKind::File {
                return Err(GuestError::NotAFile { path: what.clone() });
            }
            if let Some(reason) = node.unreadable {
                return Err(unsupported(&what, reason));
            }
            self.copy_data(&file, &mut reader, &what, out)
        })
    }
}
