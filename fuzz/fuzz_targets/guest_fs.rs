//! Guest filesystems are untrusted: detecting, opening, listing, walking and reading any bytes
//! as ext4, XFS, FAT or NTFS (on partitions or LVM LVs) must end (no hang) and must not panic
//! in vmvault's code. Panics inside the third-party readers are contained by `guestfs::guard` and become errors, so the panic
//! hook is silenced for them; a panic anywhere else still reaches libFuzzer and is a crash.
#![no_main]

mod shared;

use std::sync::{Arc, Once};

use guestfs::BlockReader;
use libfuzzer_sys::fuzz_target;
use shared::walk;

static QUIET: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let disk: Arc<dyn BlockReader> = Arc::new(data.to_vec());
    let Ok((_, volumes)) = guestfs::volumes(Arc::clone(&disk)) else { return };
    for volume in &volumes {
        if let Ok(fs) = guestfs::open_volume(volume) {
            let mut budget = 2000;
            walk(fs.as_ref(), b"/", 0, &mut budget, disk.size());
            let _ = guestfs::extract::find(fs.as_ref(), b"/", "*");
        }
    }
});
