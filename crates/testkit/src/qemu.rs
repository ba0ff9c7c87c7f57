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
        let p = |n: &str| dir.join(n).display().to_string();
        let mut second: Vec<String> = Vec::new();
        if let Some(raw) = raw {
            second.push("-blockdev".into());
            second
                .push(format!("driver=raw,node-name=disk1,file.driver=file,file.filename={}", raw.display()));
            second.extend(["-device".into(), "virtio-blk-pci,drive=disk1,id=vdb".into()]);
        }
        let out = Command::new("qemu-system-x86_64")
            .args(["-machine", "q35,accel=tcg", "-m", "128", "-nographic", "-nodefaults", "-display", "none"])
            .args(["-qmp", &format!("unix:{},server=on,wait=off", p("qmp.sock"))])
            .args(["-qmp", &format!("unix:{},server=on,wait=off", p("guest.sock"))])
            .args([
                "-blockdev",
                &format!("driver=qcow2,node-name=disk0,file.driver=file,file.filename={}", image.display()),
            ])
            .args(["-device", "virtio-blk-pci,drive=disk0,id=vda"])
            .args(&second)
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
        Qemu { pid: pid.trim().parse().expect("a pid") }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test started.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
    }
}
