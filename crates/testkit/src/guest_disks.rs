//! Guest disks as installers lay them out, built with the real tools and filled by the
//! kernel's own filesystem drivers: partition tables by `sfdisk`, filesystems by `mkfs.*`
//! on loop devices, LVM by `pvcreate`/`vgcreate`/`lvcreate -an` (there is no device-mapper
//! here, so an LV is written through a loop device at its offset in the PV). The reference a
//! reader is held to is the kernel's read-only mount of the same filesystem.
//!
//! The tests run as root; every loop device and mount is released when its guard drops.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use crate::guest_tree::{Node, differences, tree, xattrs};

/// Run a command; panic with its stderr if it fails. Returns its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 test path")
}

/// A loop device over part of an image file, detached when dropped.
pub struct Loop(pub String);

impl Loop {
    /// Attach `len` bytes of `image` from `offset`.
    pub fn attach(image: &Path, offset: u64, len: u64) -> Loop {
        let dev = run(
            "losetup",
            &["-f", "--show", "-o", &offset.to_string(), "--sizelimit", &len.to_string(), s(image)],
        );
        Loop(dev.trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A filesystem mounted at a directory (by the kernel, or ntfs-3g), unmounted when dropped.
pub struct Mount(pub PathBuf);

impl Mount {
    /// Mount `dev` at `at` (made if missing) with `-o opts`.
    pub fn new(dev: &str, at: &Path, opts: &str) -> Mount {
        Mount::with("mount", dev, at, opts)
    }

    /// Mount the NTFS on `dev` at `at` through ntfs-3g (FUSE) with `-o opts`.
    pub fn ntfs_3g(dev: &str, at: &Path, opts: &str) -> Mount {
        Mount::with("ntfs-3g", dev, at, opts)
    }

    fn with(tool: &str, dev: &str, at: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(at).expect("make a mount point");
        run(tool, &["-o", opts, dev, s(at)]);
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Write a partition table with `sfdisk`; returns each partition's (start, size) in bytes.
pub fn partition(image: &Path, script: &str) -> Vec<(u64, u64)> {
    use std::io::Write;
    let mut child = Command::new("sfdisk")
        .args(["-q", s(image)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run sfdisk");
    child.stdin.take().expect("sfdisk's stdin").write_all(script.as_bytes()).expect("feed sfdisk");
    assert!(child.wait().expect("wait for sfdisk").success(), "sfdisk {script:?}");
    let dump = run("sfdisk", &["-d", s(image)]);
    dump.lines()
        .filter(|l| l.contains("start="))
        .map(|l| {
            let field = |name: &str| -> u64 {
                let at = l.find(name).expect("an sfdisk field") + name.len();
                let rest = l[at..].trim_start();
                rest[..rest.find(',').unwrap_or(rest.len())].trim().parse().expect("a number")
            };
            (field("start=") * 512, field("size=") * 512)
        })
        .collect()
}

/// LVM commands that see every loop device (no devices file) and never touch device-mapper.
pub fn lvm(cmd: &str, args: &[&str]) -> String {
    let mut all = vec!["--devicesfile", ""];
    all.extend_from_slice(args);
    run(cmd, &all)
}

/// Make `pv` (a loop device) a PV of a new volume group `vg` with `extra` PVs beside it.
pub fn vg_create(vg: &str, pvs: &[&Loop]) {
    for pv in pvs {
        lvm("pvcreate", &["-q", &pv.0]);
    }
    let mut args = vec!["-q", vg];
    args.extend(pvs.iter().map(|p| p.0.as_str()));
    lvm("vgcreate", &args);
}

/// Create LV `vg/name` of `size` (`600M`) without activating it; `extra` as for lvcreate.
pub fn lv_create(vg: &str, name: &str, size: &str, extra: &[&str]) {
    let mut args = vec!["-q", "--driverloaded", "n", "-an", "-Zn", "-L", size, "-n", name];
    args.extend_from_slice(extra);
    args.push(vg);
    lvm("lvcreate", &args);
}

/// Byte offset within its PV and length of a linear LV.
pub fn lv_extent(vg: &str, name: &str, pv: &Loop) -> (u64, u64) {
    let number = |out: String| -> u64 { out.trim().trim_end_matches('B').parse().expect("an LVM number") };
    let pe_start =
        number(lvm("pvs", &["--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", &pv.0]));
    let extent =
        number(lvm("vgs", &["--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg]));
    let size = number(lvm(
        "lvs",
        &["--noheadings", "--units", "b", "--nosuffix", "-o", "lv_size", &format!("{vg}/{name}")],
    ));
    let ranges = lvm("lvs", &["--noheadings", "-o", "seg_pe_ranges", &format!("{vg}/{name}")]);
    let range = ranges.trim();
    let (dev, pes) = range.rsplit_once(':').expect("a PE range");
    assert_eq!(dev, pv.0, "{vg}/{name} is not linear on {}", pv.0);
    let first: u64 = pes.split('-').next().and_then(|n| n.parse().ok()).expect("a first PE");
    (pe_start + first * extent, size)
}

/// Write `image` (a filesystem made for it) into LV `vg/name` as LVM maps it onto `pvs`:
/// segment by segment, stripe by stripe — what device-mapper would do if it were here.
pub fn write_lv(vg: &str, name: &str, image: &Path, pvs: &[&Loop]) {
    use std::os::unix::fs::FileExt;
    let number = |t: &str| -> u64 { t.trim().parse().expect("an LVM number") };
    let pe_start = |dev: &str| {
        number(&lvm("pvs", &["--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", dev]))
    };
    let extent =
        number(&lvm("vgs", &["--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg]));
    let data = std::fs::read(image).expect("read the LV's image");
    let segments = lvm(
        "lvs",
        &[
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            ";",
            "--segments",
            "-o",
            "seg_start,seg_size,stripe_size,seg_pe_ranges",
            &format!("{vg}/{name}"),
        ],
    );
    let open = |dev: &str| {
        assert!(pvs.iter().any(|p| p.0 == dev), "{vg}/{name} uses {dev}, which is not one of the PVs given");
        std::fs::OpenOptions::new().write(true).open(dev).expect("open a PV")
    };
    for line in segments.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.trim().split(';').collect();
        let (start, size, stripe) = (number(fields[0]), number(fields[1]), number(fields[2]));
        let ranges: Vec<(String, u64)> = fields[3]
            .split_whitespace()
            .map(|r| {
                let (dev, pes) = r.rsplit_once(':').expect("a PE range");
                (dev.to_string(), pe_start(dev) + number(pes.split('-').next().expect("a PE")) * extent)
            })
            .collect();
        let unit = if ranges.len() == 1 { size } else { stripe };
        let mut at = 0;
        while at < size {
            let chunk = at / unit;
            let (dev, base) = &ranges[(chunk % ranges.len() as u64) as usize];
            let pv_at = base + (chunk / ranges.len() as u64) * unit;
            let piece = &data[(start + at) as usize..(start + at + unit) as usize];
            open(dev).write_all_at(piece, pv_at).expect("write into a PV");
            at += unit;
        }
    }
}

/// A Linux root as installers leave it, written through the kernel into `root` (a mounted
/// filesystem): `/etc/os-release` a link into `/usr/lib`, `/etc/hostname`, directories of
/// every size (inline, one block, many blocks, thousands of entries), a file in thousands of
/// extents with holes, a preallocated file, hard links, long and short symlinks, owners, modes, and times
/// before 1970 and (when `far_times`) after 2038.
pub fn fill_linux_root(root: &Path, hostname: &str, far_times: bool) {
    let p = |rel: &str| root.join(rel);
    for d in ["etc/ssh", "usr/lib", "usr/share/many", "var/lib/medium", "home/ana", "srv/empty"] {
        std::fs::create_dir_all(p(d)).expect("make a guest directory");
    }
    std::fs::write(p("etc/hostname"), format!("{hostname}\n")).expect("write");
    std::fs::write(p("usr/lib/os-release"), format!("NAME=\"Test Linux\"\nID=test\nVARIANT={hostname}\n"))
        .expect("write");
    std::os::unix::fs::symlink("../usr/lib/os-release", p("etc/os-release")).expect("symlink");
    std::fs::write(p("etc/ssh/sshd_config"), "PermitRootLogin no\n".repeat(300)).expect("write");
    for i in 0..40 {
        std::fs::write(p(&format!("var/lib/medium/entry-{i:03}.conf")), format!("value {i}\n"))
            .expect("write");
    }
    for i in 0..5000 {
        std::fs::write(p(&format!("usr/share/many/file-with-a-longer-name-{i:05}")), format!("{i}\n"))
            .expect("write");
    }
    let big: Vec<u8> = (0..12_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(p("home/ana/big.bin"), &big).expect("write");
    // Data in every other 4 KiB: thousands of extents and holes between them.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(p("home/ana/fragmented.bin")).expect("create");
        for i in 0..3000u64 {
            f.write_all_at(&[(i % 251) as u8; 4096], i * 8192).expect("write");
        }
        f.set_len(3000 * 8192 + 100_000).expect("extend with a hole");
    }
    run("fallocate", &["-l", "4M", s(&p("home/ana/prealloc.bin"))]);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(p("home/ana/prealloc.bin")).expect("open");
        f.write_all_at(b"written into preallocated space", 1 << 20).expect("write");
    }
    std::fs::write(p("home/ana/empty"), b"").expect("write");
    std::fs::hard_link(p("home/ana/big.bin"), p("home/ana/big-again.bin")).expect("hard link");
    std::fs::hard_link(p("etc/hostname"), p("srv/hostname-link")).expect("hard link");
    std::os::unix::fs::symlink("big.bin", p("home/ana/short-link")).expect("symlink");
    let long = format!("/{}target", "a-long-directory-name/".repeat(40));
    std::os::unix::fs::symlink(&long, p("home/ana/long-link")).expect("symlink");
    std::fs::set_permissions(p("home/ana/big.bin"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    run("chown", &["-R", "1000:1000", s(&p("home/ana"))]);
    run("chmod", &["0750", s(&p("etc/ssh/sshd_config"))]);
    run("touch", &["-d", "1965-05-05 05:05:05", s(&p("etc/ssh/sshd_config"))]);
    run("touch", &["-d", "2023-07-14 08:09:10", s(&p("etc/hostname"))]);
    if far_times {
        run("touch", &["-d", "2040-01-02 03:04:05", s(&p("home/ana/big.bin"))]);
    }
    set_linux_xattrs(root);
    run("sync", &[]);
}

/// Extended attributes as a Linux install carries them, set through the kernel: SELinux
/// labels (with their NUL, as SELinux writes them), a file capability, POSIX ACLs (access and
/// default, with named users and groups), `trusted.*`, and `user.*` values of 1000 and 3500
/// bytes (on XFS: a leaf and a remote value).
pub fn set_linux_xattrs(root: &Path) {
    let p = |rel: &str| s(&root.join(rel)).to_string();
    std::fs::create_dir_all(root.join("usr/bin")).expect("make a guest directory");
    std::fs::write(root.join("usr/bin/ping"), b"\x7fELF not really\n").expect("write");
    run("setcap", &["cap_net_raw+ep", &p("usr/bin/ping")]);
    for (rel, label) in
        [("etc/hostname", "system_u:object_r:hostname_etc_t:s0"), ("etc", "system_u:object_r:etc_t:s0")]
    {
        let hex: String = label.bytes().chain([0]).map(|b| format!("{b:02x}")).collect();
        run("setfattr", &["-h", "-n", "security.selinux", "-v", &format!("0x{hex}"), &p(rel)]);
    }
    run(
        "setfattr",
        &["-h", "-n", "security.selinux", "-v", "system_u:object_r:etc_t:s0", &p("etc/os-release")],
    );
    run("setfacl", &["-m", "u:1001:rwx,g:1002:r-x", &p("home/ana")]);
    run("setfacl", &["-d", "-m", "u:1001:r-x,g::r-x", &p("home/ana")]);
    run("setfacl", &["-m", "u:1003:r--", &p("home/ana/big.bin")]);
    run("setfattr", &["-n", "trusted.md5", "-v", "0x0123456789abcdef", &p("etc/hostname")]);
    run("setfattr", &["-n", "user.origin", "-v", "test suite", &p("home/ana/big.bin")]);
    run("setfattr", &["-n", "user.mid", "-v", &"m".repeat(1000), &p("home/ana/fragmented.bin")]);
    run("setfattr", &["-n", "user.big", "-v", &"b".repeat(3500), &p("etc/ssh/sshd_config")]);
}

/// A Windows C: as Windows leaves it, written through ntfs-3g into `root`: `Windows/System32`,
/// a user's documents, a file in hundreds of fragments (its run list overflows its record into
/// an `$ATTRIBUTE_LIST`: the volume is filled with small files, every other one deleted, then
/// the file written into the holes), a folder with NTFS compression on (its files LZNT1),
/// two names that differ only in case, a symlink and a junction (reparse points set as
/// Windows writes them), and a file with an alternate data stream.
pub fn fill_windows(root: &Path) {
    let p = |rel: &str| root.join(rel);
    for d in ["Windows/System32/drivers/etc", "Users/Ana/Documents", "Program Files/App", "Compressed"] {
        std::fs::create_dir_all(p(d)).expect("make a guest directory");
    }
    std::fs::write(p("Windows/System32/drivers/etc/hosts"), "127.0.0.1 localhost\r\n").expect("write");
    let doc: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 17) as u8).collect();
    std::fs::write(p("Users/Ana/Documents/report.docx"), &doc).expect("write");
    // Fragmentation: fill the free space with 32 KiB files, free every other one.
    let filler = p("filler");
    std::fs::create_dir_all(&filler).expect("mkdir");
    let mut made = 0;
    while std::fs::write(filler.join(format!("{made}")), vec![0xAB; 32768]).is_ok() {
        made += 1;
    }
    for i in (0..made).step_by(2) {
        std::fs::remove_file(filler.join(format!("{i}"))).expect("free a hole");
    }
    let _ = std::fs::remove_file(filler.join(format!("{made}")));
    let frag: Vec<u8> = (0..40_000_000u32).map(|i| (i.wrapping_mul(40_503) >> 5) as u8).collect();
    {
        // In 64 KiB writes, as a program writes: ntfs-3g fills the holes one by one.
        use std::io::Write;
        let mut f = std::fs::File::create(p("Program Files/App/data.pak")).expect("create");
        for piece in frag.chunks(65536) {
            f.write_all(piece).expect("write the fragmented file");
        }
    }
    for i in (1..made).step_by(2) {
        std::fs::remove_file(filler.join(format!("{i}"))).expect("remove a filler");
    }
    std::fs::remove_dir(&filler).expect("remove the filler folder");
    // Compression: the folder's attribute makes ntfs-3g (mounted with -o compression) write LZNT1.
    run("setfattr", &["-n", "system.ntfs_attrib_be", "-v", "0x00000800", s(&p("Compressed"))]);
    std::fs::write(p("Compressed/log.txt"), "a line that compresses well\r\n".repeat(50_000)).expect("write");
    let mixed: Vec<u8> = (0..300_000u32).map(|i| if i % 3 == 0 { (i >> 3) as u8 } else { b'x' }).collect();
    std::fs::write(p("Compressed/mixed.bin"), mixed).expect("write");
    // Case twins (POSIX namespace names: Windows itself cannot make them, ntfs-3g can).
    std::fs::write(p("Index.html"), "upper\n").expect("write");
    std::fs::write(p("index.html"), "lower\n").expect("write");
    // Reparse points as Windows writes them: a relative symlink and a junction.
    std::fs::write(p("Users/Ana/link-to-report"), b"").expect("write");
    run(
        "setfattr",
        &[
            "-n",
            "system.ntfs_reparse_data",
            "-v",
            &symlink_reparse("Documents\\report.docx", true),
            s(&p("Users/Ana/link-to-report")),
        ],
    );
    std::fs::create_dir_all(p("Users/Ana/Docs")).expect("mkdir");
    run(
        "setfattr",
        &[
            "-n",
            "system.ntfs_reparse_data",
            "-v",
            &junction_reparse("\\??\\C:\\Users\\Ana\\Documents"),
            s(&p("Users/Ana/Docs")),
        ],
    );
    // An alternate data stream (ntfs-3g's default streams interface: a user.* xattr).
    run(
        "setfattr",
        &[
            "-n",
            "user.Zone.Identifier",
            "-v",
            "[ZoneTransfer] ZoneId=3",
            s(&p("Users/Ana/Documents/report.docx")),
        ],
    );
    run("sync", &[]);
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Hex (`0x…`, for setfattr) of a reparse buffer: tag, the two names, and `flags` for symlinks.
fn reparse(tag: u32, substitute: &str, print: &str, flags: Option<u32>) -> String {
    let (sub, prn) = (utf16(substitute), utf16(print));
    let mut body = Vec::new();
    for v in [0u16, sub.len() as u16, sub.len() as u16 + 2, prn.len() as u16] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(f) = flags {
        body.extend_from_slice(&f.to_le_bytes());
    }
    body.extend_from_slice(&sub);
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&prn);
    body.extend_from_slice(&[0, 0]);
    let mut out = Vec::new();
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&body);
    format!("0x{}", out.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A symlink reparse point (IO_REPARSE_TAG_SYMLINK) to `target`.
fn symlink_reparse(target: &str, relative: bool) -> String {
    reparse(0xA000_000C, target, target, Some(u32::from(relative)))
}

/// A junction (IO_REPARSE_TAG_MOUNT_POINT) to `target` (`\??\C:\…`).
fn junction_reparse(target: &str) -> String {
    reparse(0xA000_0003, target, target.trim_start_matches("\\??\\"), None)
}

/// Encrypt `inner` (a filesystem image) into a new LUKS2 volume `out` with cryptsetup itself:
/// `cryptsetup reencrypt --encrypt` works offline on an image file without device-mapper.
/// `kdf` is cryptsetup's `--pbkdf` (`pbkdf2`, `argon2i`, `argon2id`), kept cheap for tests.
pub fn luks2_encrypt(inner: &Path, out: &Path, passphrase: &[u8], kdf: &str) {
    let header = 16u64 << 20;
    let key_file = out.with_extension("key");
    std::fs::write(&key_file, passphrase).expect("write the key file");
    run("cp", &["--sparse=always", s(inner), s(out)]);
    let len = std::fs::metadata(inner).expect("stat the inner image").len();
    run("truncate", &["-s", &(len + header).to_string(), s(out)]);
    let mut args = vec!["reencrypt", "--encrypt", "--type", "luks2", "--reduce-device-size", "16M", "-q"];
    args.extend(["--key-file", s(&key_file), "--pbkdf", kdf]);
    if kdf == "pbkdf2" {
        args.extend(["--pbkdf-force-iterations", "1000"]);
    } else {
        args.extend(["--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4"]);
    }
    args.push(s(out));
    run("cryptsetup", &args);
    std::fs::remove_file(&key_file).expect("remove the key file");
}

/// Encrypt `inner` into a new LUKS1 volume `out`: the header and keyslot by `cryptsetup
/// luksFormat` on a loop device, the data by Python's `cryptography` (OpenSSL's AES-XTS) with
/// the volume key `cryptsetup luksDump --dump-master-key` shows — offline LUKS1 encryption
/// needs device-mapper, which this machine lacks.
pub fn luks1_encrypt(inner: &Path, out: &Path, passphrase: &[u8]) {
    let key_file = out.with_extension("key");
    std::fs::write(&key_file, passphrase).expect("write the key file");
    let len = std::fs::metadata(inner).expect("stat the inner image").len();
    run("truncate", &["-s", &(len + (2 << 20)).to_string(), s(out)]);
    let dev = Loop::attach(out, 0, len + (2 << 20));
    run(
        "cryptsetup",
        &[
            "luksFormat",
            "--type",
            "luks1",
            "-q",
            "--key-file",
            s(&key_file),
            "--pbkdf-force-iterations",
            "1000",
            &dev.0,
        ],
    );
    let dump =
        run("cryptsetup", &["luksDump", "--dump-master-key", "-q", "--key-file", s(&key_file), &dev.0]);
    drop(dev);
    std::fs::remove_file(&key_file).expect("remove the key file");
    let payload: u64 = dump
        .lines()
        .find_map(|l| l.strip_prefix("Payload offset:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a payload offset");
    let key: String = dump
        .split("MK dump:")
        .nth(1)
        .expect("a master key dump")
        .split_whitespace()
        .take_while(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    let script = format!(
        "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
         key = bytes.fromhex('{key}')\n\
         src = open('{inner}', 'rb')\n\
         dst = open('{out}', 'r+b')\n\
         dst.seek({payload} * 512)\n\
         sector = 0\n\
         while True:\n\
         \x20   block = src.read(512)\n\
         \x20   if not block: break\n\
         \x20   enc = Cipher(algorithms.AES(key), modes.XTS(sector.to_bytes(16, 'little'))).encryptor()\n\
         \x20   dst.write(enc.update(block) + enc.finalize())\n\
         \x20   sector += 1\n",
        inner = s(inner),
        out = s(out),
    );
    run("python3", &["-c", &script]);
}
