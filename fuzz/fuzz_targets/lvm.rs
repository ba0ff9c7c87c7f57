//! LVM labels and metadata come from guest disks, which are untrusted: reading a PV, parsing
//! its text metadata, assembling its volume group and reading its LVs must never panic, and
//! an LV must never read outside its PVs. The input is the start of a 64 MiB disk (the rest
//! reads as zeros); it is also parsed directly as metadata text (seeds: `fuzz/seeds.sh`).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

struct Padded(Vec<u8>);

const SIZE: u64 = 64 << 20;

impl guestfs::BlockReader for Padded {
    fn size(&self) -> u64 {
        SIZE
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= SIZE);
        assert!(end.is_some(), "a read past the end of the disk: an LV escaped its PV");
        buf.fill(0);
        let start = offset as usize;
        if start < self.0.len() {
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = guestfs::lvm::parse(data);
    let disk = guestfs::GuestDisk { label: "vda".into(), reader: Arc::new(Padded(data.to_vec())) };
    let Ok(layout) = guestfs::scan(&[disk], 0) else { return };
    for volume in &layout.volumes {
        if let Some(slice) = volume.slice() {
            let mut buf = vec![0u8; 4096.min(slice.len() as usize)];
            let _ = slice.read_at(0, &mut buf);
            let _ = slice.read_at(slice.len().saturating_sub(buf.len() as u64), &mut buf);
        }
    }
});
