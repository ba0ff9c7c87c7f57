//! XFS structures come from guest disks, which are untrusted: opening, listing, walking and
//! reading any bytes as XFS must end and must never panic. vmvault's XFS reader is its own
//! code, so no panic is silenced here: every one is a crash. The input is the start of the
//! volume; the rest of a 32 MiB volume reads as zeros (seeds: `fuzz/seeds.sh`).
#![no_main]

use std::sync::Arc;

use guestfs::tree::{EntryKind, join};
use guestfs::xfs::XfsFs;
use guestfs::{GuestFs, Slice};
use libfuzzer_sys::fuzz_target;

/// A volume whose first bytes are the input and the rest zeros.
struct Padded(Vec<u8>);

const SIZE: u64 = 32 << 20;

impl guestfs::BlockReader for Padded {
    fn size(&self) -> u64 {
        SIZE
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        let start = offset as usize;
        if start < self.0.len() {
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
        }
        Ok(())
    }
}

fn walk(fs: &dyn GuestFs, dir: &[u8], depth: usize, budget: &mut usize) {
    let Ok(entries) = fs.list(dir) else { return };
    for e in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let path = join(dir, &e.name);
        let _ = fs.stat(&path);
        match e.kind {
            EntryKind::Dir if depth < 8 => walk(fs, &path, depth + 1, budget),
            EntryKind::File => {
                let _ = fs.read_file(&path, &mut std::io::sink());
            }
            EntryKind::Symlink => {
                let _ = fs.read_link(&path);
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let volume = Slice::whole(Arc::new(Padded(data.to_vec())));
    if let Ok(fs) = XfsFs::open(volume) {
        let mut budget = 2000;
        walk(&fs, b"/", 0, &mut budget);
    }
});
