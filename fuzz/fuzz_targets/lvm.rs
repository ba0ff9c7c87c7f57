//! LVM labels and metadata come from guest disks, which are untrusted: reading a PV, parsing
//! its text metadata, assembling its volume group and reading its LVs must never panic, and
//! an LV must never read outside its PVs. The input is the start of a 64 MiB disk (the rest
//! reads as zeros); it is also parsed directly as metadata text (seeds: `fuzz/seeds.sh`).
#![no_main]

mod shared;

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use shared::Padded;

fuzz_target!(|data: &[u8]| {
    let _ = guestfs::lvm::parse(data);
    let reader = Arc::new(Padded { data: data.to_vec(), size: 64 << 20 });
    let disk = guestfs::GuestDisk { label: "vda".into(), reader };
    let Ok(layout) = guestfs::scan(&[disk], 0) else { return };
    for volume in &layout.volumes {
        if let Some(slice) = volume.slice() {
            let mut buf = vec![0u8; 4096.min(slice.len() as usize)];
            let _ = slice.read_at(0, &mut buf);
            let _ = slice.read_at(slice.len().saturating_sub(buf.len() as u64), &mut buf);
        }
    }
});
