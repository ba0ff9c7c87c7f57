//! Whether an XFS log was cleanly unmounted: the log is a ring of 512-byte blocks stamped
//! with a cycle number; the head is where the cycle drops, and a clean log's last record
//! before the head is an unmount record. A filesystem copied while mounted (a crash-consistent
//! point) has a dirty log, which vmvault does not replay: the listing says so.

use super::disk::Disk;
use crate::bytes::be32;

const BLOCK: u64 = 512;
const RECORD_MAGIC: u32 = 0xFEED_BABE;
const UNMOUNT_TRANS: u8 = 0x20;
/// How far back from the head a record header is looked for.
const SCAN_BACK: u64 = 512 * 1024;

/// What the log says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogState {
    /// Cleanly unmounted.
    Clean,
    /// Not cleanly unmounted: changes in the log are not on the filesystem.
    Dirty,
    /// Could not be told (an external log, or a log vmvault could not follow).
    Unknown(String),
}

fn cycle(block: &[u8]) -> u32 {
    if be32(block, 0) == RECORD_MAGIC { be32(block, 4) } else { be32(block, 0) }
}

/// Read the log of `disk`, whose internal log starts at filesystem block `start` and is
/// `blocks` filesystem blocks long.
pub fn state(disk: &Disk, start: u64, blocks: u64) -> LogState {
    if start == 0 {
        return LogState::Unknown("the log is on an external device".into());
    }
    let Ok(base) = disk.block_byte(start, blocks) else {
        return LogState::Unknown("the log lies outside the filesystem".into());
    };
    let n = blocks * u64::from(disk.sb.block_size) / BLOCK;
    // `count` 512-byte blocks from block `at` of the log.
    let read = |at: u64, count: u64| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; (count * BLOCK) as usize];
        disk.slice.read_at(base + at * BLOCK, &mut buf).ok()?;
        Some(buf)
    };
    let cycle_at = |b: u64| read(b, 1).map(|d| cycle(&d));
    let (Some(first), Some(last)) = (cycle_at(0), cycle_at(n.saturating_sub(1))) else {
        return LogState::Unknown("the log could not be read".into());
    };
    if first == 0 {
        return LogState::Unknown("the log was never written".into());
    }
    // The head: the first block whose cycle is not the first block's (none: the ring's end).
    let head = if last == first {
        n
    } else {
        let (mut lo, mut hi) = (0u64, n - 1);
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            match cycle_at(mid) {
                Some(c) if c == first => lo = mid,
                Some(_) => hi = mid,
                None => return LogState::Unknown("the log could not be read".into()),
            }
        }
        hi
    };
    // The last record header before the head.
    let from = head.saturating_sub(SCAN_BACK / BLOCK);
    let Some(window) = read(from, head - from) else {
        return LogState::Unknown("the log could not be read".into());
    };
    let record = (0..(head - from))
        .rev()
        .map(|i| i as usize * BLOCK as usize)
        .find(|&at| be32(&window, at) == RECORD_MAGIC && be32(&window, at + 4) == first);
    let Some(at) = record else {
        return LogState::Unknown("no log record found before the head".into());
    };
    // One operation, flagged as an unmount, in the block after the header.
    let header = &window[at..];
    let ops = be32(header, 40);
    let size = be32(header, 320).max(32 * 1024);
    let data = at + (size.div_ceil(32 * 1024) as usize) * BLOCK as usize;
    let flags = window.get(data + 9).copied().or_else(|| read(from + (data as u64) / BLOCK, 1).map(|b| b[9]));
    match flags {
        Some(f) if ops == 1 && f & UNMOUNT_TRANS != 0 => LogState::Clean,
        Some(_) => LogState::Dirty,
        None => LogState::Unknown("the last log record could not be read".into()),
    }
}
