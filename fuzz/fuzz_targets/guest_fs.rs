//! Guest filesystems are untrusted: detecting, opening, listing, walking and reading any bytes
//! as ext4, XFS, FAT or NTFS (on partitions or LVM LVs) must end (no hang) and must not panic in vmvault's code. Panics inside
//! the third-party readers are contained by `guestfs::guard` and become errors, so the panic
//! hook is silenced for them; a panic anywhere else still reaches libFuzzer and is a crash.
#![no_main]

use std::sync::{Arc, Once};

use guestfs::tree::{EntryKind, join};
use guestfs::{BlockReader, GuestFs};
use libfuzzer_sys::fuzz_target;

static QUIET: Once = Once::new();

fn walk(fs: &dyn GuestFs, dir: &[u8], depth: usize, budget: &mut usize) {
    let Ok(entries) = fs.list(dir) else { return };
    for e in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let path = join(dir, &e.name);
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
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let disk: Arc<dyn BlockReader> = Arc::new(data.to_vec());
    let Ok((_, volumes)) = guestfs::volumes(Arc::clone(&disk)) else { return };
    for volume in &volumes {
        if let Ok(fs) = guestfs::open_volume(volume) {
            let mut budget = 2000;
            walk(fs.as_ref(), b"/", 0, &mut budget);
            let _ = guestfs::extract::find(fs.as_ref(), b"/", "*");
        }
    }
});
