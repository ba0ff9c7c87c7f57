//! A booted guest OS for tests where the guest matters: the small Debian 12 image that
//! `.ci/guest-image` builds once and caches outside the clone (its PID 1 starts
//! qemu-guest-agent and a writer that appends a numbered, synced line to
//! `/var/log/writer.log` every 100 ms), booted under plain QEMU with TCG.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the guest may take to reach its agent (seconds under TCG; generous for a loaded
/// machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// The cached guest image (qcow2, 2 GiB virtual, ext4 root on `/dev/vda1`): `$VMVAULT_GUEST_IMAGE`
/// when set, else what `.ci/guest-image` builds or finds in its cache. Never written by a
/// test: boot [`overlay`]s of it.
pub fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Some(path) = std::env::var_os("VMVAULT_GUEST_IMAGE").filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/guest-image");
        let out = Command::new("sh").arg(&script).output().expect("run .ci/guest-image");
        assert!(
            out.status.success(),
            ".ci/guest-image failed (needs root, debootstrap, extlinux): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// A qcow2 overlay of the guest image at `path`, for one guest to write.
pub fn overlay(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(image())
        .arg(path)
        .output()
        .expect("run qemu-img");
    assert!(out.status.success(), "qemu-img create: {}", String::from_utf8_lossy(&out.stderr));
}

/// A booted guest under plain QEMU, killed (SIGKILL) when dropped. Its sockets are in the
/// directory given: `qmp.sock` (the monitor vmvault uses), `guest.sock` (a second monitor for
/// the test), `qga.sock` (the guest agent); the serial console goes to `serial.log`.
pub struct BootedGuest {
    /// Its process id.
    pub pid: i32,
}

impl BootedGuest {
    /// Boot `root` (an [`overlay`]) as `vda`, with `data` disks (path, format) as `vdb`, `vdc`…
    /// (QEMU device ids `vda`, `vdb`…), and wait until the guest says it is ready.
    pub fn boot(dir: &Path, root: &Path, data: &[(&Path, &str)]) -> BootedGuest {
        let disks = std::iter::once((root, "qcow2"))
            .chain(data.iter().copied())
            .enumerate()
            .flat_map(|(i, (path, format))| crate::qemu::disk_args(i, path, format));
        let _ = std::fs::remove_file(dir.join("serial.log"));
        let mut args: Vec<String> =
            ["-machine", "q35,accel=tcg", "-cpu", "qemu64", "-m", "512"].map(String::from).into();
        args.extend(["-serial".into(), format!("file:{}", dir.join("serial.log").display())]);
        args.extend(disks);
        let guest = BootedGuest { pid: crate::qemu::launch(dir, &args) };
        wait_ready(&dir.join("serial.log"));
        guest
    }
}

/// Wait for the guest's "ready" line on its serial console.
pub fn wait_ready(serial: &Path) {
    let start = Instant::now();
    while start.elapsed() < BOOT_TIMEOUT {
        if std::fs::read_to_string(serial).is_ok_and(|s| s.contains("vmvault-guest: ready")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "the guest did not boot in {BOOT_TIMEOUT:?}; its console: {}",
        std::fs::read_to_string(serial).unwrap_or_default()
    );
}

impl Drop for BootedGuest {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test started.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
    }
}

/// What a restored root disk of the guest shows: whether `e2fsck -fn` of its root partition
/// (1 MiB in) found it clean without journal recovery, what e2fsck said, and the writer's log
/// in it (read by debugfs). `image` is raw.
pub fn check_root(image: &Path) -> (bool, String, String) {
    let out = Command::new("losetup")
        .args(["--show", "-f", "-r", "-o", "1048576"])
        .arg(image)
        .output()
        .expect("losetup");
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let fsck = Command::new("e2fsck").args(["-fn", &dev]).output().expect("e2fsck");
    let text = format!("{}{}", String::from_utf8_lossy(&fsck.stdout), String::from_utf8_lossy(&fsck.stderr));
    let clean = fsck.status.code() == Some(0) && !text.contains("journal");
    let cat =
        Command::new("debugfs").args(["-R", "cat /var/log/writer.log", &dev]).output().expect("debugfs");
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    (clean, text, String::from_utf8_lossy(&cat.stdout).into_owned())
}
