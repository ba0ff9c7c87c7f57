//! NTFS as mkntfs and ntfs-3g leave it, read back through vmvault: a file whose valid data
//! ends before its size (its initialized size, as Windows leaves a file extended without
//! writing, e.g. by `SetFileValidData` or a preallocating database) reads as zeros past it —
//! as ntfs-3g shows it — never as the stale bytes its clusters hold.

use std::path::Path;
use std::sync::Arc;

use guestfs::ntfs::NtfsFs;
use guestfs::{BlockReader, GuestFs, Slice};
use testkit::guest_disks::{Mount, run};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn bytes_past_a_files_initialized_size_read_as_zeros_not_stale_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ntfs.img");
    run("truncate", &["-s", "32M", s(&image)]);
    run("mkntfs", &["-q", "-F", "-f", s(&image)]);
    let mnt = dir.path().join("mnt");
    {
        let _m = Mount::ntfs_3g(s(&image), &mnt, "rw");
        std::fs::write(mnt.join("valid.bin"), vec![b'S'; 65536]).unwrap();
        std::fs::write(mnt.join("whole.bin"), vec![b'W'; 8192]).unwrap();
    }
    // Windows' view of a file extended without writing: data size and allocation 64 KiB, valid
    // data 4 KiB. The header of valid.bin's $DATA holds its allocated, data and initialized
    // sizes in a row; its initialized size becomes 4 KiB (not across a sector's fixup bytes).
    let mut bytes = std::fs::read(&image).unwrap();
    let sizes: Vec<u8> = [65536u64; 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let found: Vec<usize> =
        bytes.windows(sizes.len()).enumerate().filter(|(_, w)| *w == sizes).map(|(i, _)| i).collect();
    assert_eq!(found.len(), 1, "valid.bin's $DATA header");
    let at = found[0] + 16;
    assert!(at % 512 < 504, "the initialized size crosses a fixup");
    bytes[at..at + 8].copy_from_slice(&4096u64.to_le_bytes());
    std::fs::write(&image, &bytes).unwrap();
    drop(bytes);
    let want = {
        let _m = Mount::ntfs_3g(s(&image), &mnt, "ro");
        (std::fs::read(mnt.join("valid.bin")).unwrap(), std::fs::read(mnt.join("whole.bin")).unwrap())
    };
    let mut expected = vec![b'S'; 4096];
    expected.resize(65536, 0);
    assert_eq!(want.0, expected, "ntfs-3g's view");

    let disk: Arc<dyn BlockReader> = Arc::new(std::fs::File::open(&image).unwrap());
    let fs = NtfsFs::open(Slice::whole(disk)).unwrap();
    let mut got = Vec::new();
    fs.read_file(b"/valid.bin", &mut got).unwrap();
    assert!(
        got == want.0,
        "vmvault read {} stale bytes",
        got.iter().skip(4096).filter(|&&b| b == b'S').count()
    );
    let mut whole = Vec::new();
    fs.read_file(b"/whole.bin", &mut whole).unwrap();
    assert_eq!(whole, want.1);
}
