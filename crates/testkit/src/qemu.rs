//! A real QEMU for live-backup tests: qemu-system-x86_64 under TCG, no guest OS.

use std::path::Path;
use std::process::Command;

/// A daemonized QEMU, killed (SIGKILL) when dropped.
pub struct Qemu {
    /// Its process id, to kill it mid-test.
    pub pid: i32,
}

impl Qemu {
    /// Start QEMU with `image` (qcow2) as its virtio disk `vda` (node `disk0`). Its sockets go
    /// in `dir`: `qmp.sock` (the monitor vmvault uses), `guest.sock` (a second monitor, through
    /// which tests write as the guest would) and `qga.sock` (a guest-agent channel nothing
    /// answers on).
    pub fn start(dir: &Path, image: &Path) -> Qemu {
        Qemu::start_with_raw(dir, image, None)
    }

    /// As [`Qemu::start`], with a raw image as a second disk `vdb` (node `disk1`) when given.
    pub fn start_with_raw(dir: &Path, image: &Path, raw: Option<&Path>) -> Qemu {
        let mut args: Vec<String> =
            ["-machine", "q35,accel=tcg", "-m", "128", "-nographic"].map(String::from).into();
        args.extend(disk_args(0, image, "qcow2"));
        if let Some(raw) = raw {
            args.extend(disk_args(1, raw, "raw"));
        }
        Qemu { pid: launch(dir, &args) }
    }
}

/// The arguments of virtio disk number `index`: node `disk<index>`, device id `vda`, `vdb`…
pub(crate) fn disk_args(index: usize, path: &Path, format: &str) -> [String; 4] {
    [
        "-blockdev".into(),
        format!("driver={format},node-name=disk{index},file.driver=file,file.filename={}", path.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive=disk{index},id=vd{}", (b'a' + index as u8) as char),
    ]
}

/// Start a daemonized QEMU with `args` (machine and disks) and, in `dir`, the sockets every
/// test VM has: `qmp.sock` (the monitor vmvault uses), `guest.sock` (a second monitor for the
/// test) and `qga.sock` (the guest-agent channel); returns its pid.
pub(crate) fn launch(dir: &Path, args: &[String]) -> i32 {
    let p = |n: &str| dir.join(n).display().to_string();
    let out = Command::new("qemu-system-x86_64")
        .args(args)
        .args(["-nodefaults", "-display", "none"])
        .args(["-qmp", &format!("unix:{},server=on,wait=off", p("qmp.sock"))])
        .args(["-qmp", &format!("unix:{},server=on,wait=off", p("guest.sock"))])
        .args(["-chardev", &format!("socket,path={},server=on,wait=off,id=qga0", p("qga.sock"))])
        .args([
            "-device",
            "virtio-serial",
            "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ])
        .args(["-daemonize", "-pidfile", &p("qemu.pid")])
        .output()
        .expect("run qemu-system-x86_64");
    assert!(out.status.success(), "qemu: {}", String::from_utf8_lossy(&out.stderr));
    let pid = std::fs::read_to_string(dir.join("qemu.pid")).expect("QEMU's pid file");
    pid.trim().parse().expect("a pid")
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test started.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
    }
}
