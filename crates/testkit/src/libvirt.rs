//! A real libvirtd for tests (started by hand as root, with virtlogd, when none runs: these
//! machines have no systemd) and booted test guests defined in it as domains of type `qemu`
//! (TCG), each undefined again — checkpoints and all — when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The URI the tests use.
pub const URI: &str = "qemu:///system";

/// Run `virsh -c URI args…`; returns its stdout, panics with its stderr on failure.
pub fn virsh(args: &[&str]) -> String {
    let out = try_virsh(args);
    assert!(out.0, "virsh {args:?}: {}", out.2);
    out.1
}

/// Run `virsh -c URI args…`; returns (success, stdout, stderr).
pub fn try_virsh(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("virsh").args(["-c", URI]).args(args).output().expect("run virsh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Make sure libvirtd (and virtlogd) run and answer.
pub fn daemon() {
    if try_virsh(&["version"]).0 {
        return;
    }
    let _ = Command::new("virtlogd").arg("-d").status();
    let _ = Command::new("libvirtd").arg("-d").status();
    wait_answering();
}

/// Stop libvirtd and start it again (the domains keep running), as a host update would.
pub fn restart_daemon() {
    let _ = Command::new("pkill").args(["-x", "libvirtd"]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Command::new("pgrep").args(["-x", "libvirtd"]).status().is_ok_and(|s| s.success()) {
        assert!(Instant::now() < deadline, "libvirtd did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("libvirtd").arg("-d").status();
    wait_answering();
}

fn wait_answering() {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !try_virsh(&["version"]).0 {
        assert!(Instant::now() < deadline, "libvirtd does not answer at {URI}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A test guest defined in libvirt; destroyed and undefined when dropped.
pub struct LibvirtGuest {
    /// The domain's name.
    pub name: String,
    /// Where its serial console is written.
    pub serial: PathBuf,
}

impl LibvirtGuest {
    /// Define the domain `name` booting `root` (a [`crate::guest::overlay`]) as `vda`, with
    /// `data` disks (path, format) as `vdb`…, a guest-agent channel and its console in
    /// `dir/<name>.serial.log`. `dir` is made readable to libvirt's QEMU user.
    pub fn define(name: &str, dir: &Path, root: &Path, data: &[(&Path, &str)]) -> LibvirtGuest {
        daemon();
        open_to_qemu(dir);
        let serial = dir.join(format!("{name}.serial.log"));
        let mut disks = String::new();
        for (i, (path, format)) in std::iter::once((root, "qcow2")).chain(data.iter().copied()).enumerate() {
            disks.push_str(&format!(
                "<disk type='file' device='disk'><driver name='qemu' type='{format}'/><source file='{}'/>\
                 <target dev='vd{}' bus='virtio'/></disk>\n",
                path.display(),
                (b'a' + i as u8) as char
            ));
        }
        let xml = format!(
            "<domain type='qemu'>\n<name>{name}</name>\n<memory unit='MiB'>512</memory>\n<vcpu>1</vcpu>\n\
             <os><type arch='x86_64' machine='q35'>hvm</type></os>\n<features><acpi/></features>\n\
             <cpu mode='custom'><model>qemu64</model></cpu>\n<devices>\n{disks}\
             <interface type='user'><model type='virtio'/></interface>\n\
             <serial type='file'><source path='{}'/><target port='0'/></serial>\n\
             <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\n\
             <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>\n</devices>\n</domain>\n",
            serial.display()
        );
        let file = dir.join(format!("{name}.xml"));
        std::fs::write(&file, xml).expect("write the domain XML");
        virsh(&["define", &file.display().to_string()]);
        LibvirtGuest { name: name.to_string(), serial }
    }

    /// Start it and wait until the guest agent answers.
    pub fn start(&self) {
        let _ = std::fs::remove_file(&self.serial);
        virsh(&["start", &self.name]);
        wait_for_agent(&self.name);
    }

    /// `virsh domstate`.
    pub fn state(&self) -> String {
        virsh(&["domstate", &self.name]).trim().to_string()
    }
}

/// Wait until the guest agent of `domain` answers `guest-ping` through libvirt.
pub fn wait_for_agent(domain: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !try_virsh(&["qemu-agent-command", domain, r#"{"execute":"guest-ping"}"#]).0 {
        assert!(Instant::now() < deadline, "the guest agent of {domain} does not answer");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Run `command` in the guest of `domain` through libvirt's agent; returns its exit code and
/// standard output.
pub fn guest_exec(domain: &str, command: &str) -> (i64, String) {
    let args = serde_like_exec(command);
    let out = virsh(&["qemu-agent-command", domain, &args]);
    let pid = number_after(&out, "\"pid\":").expect("guest-exec answered a pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // While the domain is paused (a test of exactly that) the agent does not answer.
        let (_, status, _) = try_virsh(&[
            "qemu-agent-command",
            domain,
            &format!(r#"{{"execute":"guest-exec-status","arguments":{{"pid":{pid}}}}}"#),
        ]);
        if status.contains("\"exited\":true") {
            let code = number_after(&status, "\"exitcode\":").unwrap_or(-1);
            let data = status.split("\"out-data\":\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("");
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_default();
            return (code, String::from_utf8_lossy(&bytes).into_owned());
        }
        assert!(Instant::now() < deadline, "guest command {command:?} did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn serde_like_exec(command: &str) -> String {
    let escaped = command.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"{{"execute":"guest-exec","arguments":{{"path":"/bin/sh","arg":["-c","{escaped}"],"capture-output":true}}}}"#
    )
}

fn number_after(text: &str, key: &str) -> Option<i64> {
    let rest = text.split(key).nth(1)?.trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '-')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Let libvirt's QEMU user (libvirt-qemu) reach files in `dir` (a test's temporary directory is
/// private to root).
pub fn open_to_qemu(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod the test directory");
}

impl Drop for LibvirtGuest {
    fn drop(&mut self) {
        let _ = try_virsh(&["destroy", &self.name]);
        let _ = try_virsh(&["undefine", "--checkpoints-metadata", &self.name]);
    }
}
