//! A restore killed outright (SIGKILL, mid-write) leaves nothing at its final name — not a
//! disk, not a VM definition, not a replaced disk — and the next restore to the same place
//! cleans up after it and restores bit-exact.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Lab;

fn same(a: &Path, b: &Path) -> bool {
    Command::new("qemu-img").args(["compare", "-q"]).arg(a).arg(b).status().unwrap().success()
}

/// A VM `web` with a 160 MiB disk of random bytes, backed up once.
fn lab_with_backup() -> (Lab, PathBuf) {
    let lab = Lab::local(None);
    lab.ok(&["vault", "init", "--no-encryption"]);
    let image = lab.path("web.raw");
    let out = Command::new("dd")
        .args(["if=/dev/urandom", &format!("of={}", image.display()), "bs=1M", "count=160", "status=none"])
        .output()
        .unwrap();
    assert!(out.status.success());
    lab.ok(&["vm", "add", "web", "--disk", &format!("vda={}", image.display())]);
    lab.ok(&["backup", "web"]);
    (lab, image)
}

/// Start `vmvault args`, wait until it has created `partial(pid)`, then kill it.
fn kill_mid_write(lab: &Lab, args: &[&str], partial: impl Fn(u32) -> PathBuf) {
    let mut child = lab.cmd(args).stdout(std::process::Stdio::null()).spawn().unwrap();
    let partial = partial(child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !partial.exists() {
        assert!(child.try_wait().unwrap().is_none(), "vmvault {args:?} ended before it was killed");
        assert!(Instant::now() < deadline, "{} never appeared", partial.display());
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "vmvault {args:?} finished ({status}) before the kill landed");
    assert!(partial.exists(), "a killed process cannot clean up: {} should be left", partial.display());
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".vmvault-"))
        .collect()
}

#[test]
fn a_killed_disk_restore_leaves_nothing_at_its_target() {
    let (lab, image) = lab_with_backup();
    let to = lab.path("restored.raw");
    let args = [
        "restore",
        "disk",
        "web",
        "--point",
        "latest",
        "--disk",
        "vda",
        "--format",
        "raw",
        "--to",
        to.to_str().unwrap(),
    ];
    kill_mid_write(&lab, &args, |pid| lab.path(&format!(".restored.raw.vmvault-partial-{pid}")));
    assert!(!to.exists(), "a killed restore left a file at --to");
    lab.ok(&args);
    assert!(same(&to, &image));
    assert!(leftovers(lab.dir.path()).is_empty(), "{:?}", leftovers(lab.dir.path()));
}

#[test]
fn a_killed_vm_restore_leaves_no_disk_no_definition_and_no_vm() {
    let (lab, image) = lab_with_backup();
    let dir = lab.path("copy");
    std::fs::create_dir(&dir).unwrap();
    let args = ["restore", "vm", "web", "--point", "latest", "--as", "web2", "--to", dir.to_str().unwrap()];
    kill_mid_write(&lab, &args, |pid| dir.join(format!(".web2-vda.raw.vmvault-partial-{pid}")));
    for name in ["web2-vda.raw", "web2.xml", "web2.qemu.sh"] {
        assert!(!dir.join(name).exists(), "a killed VM restore left {name}");
    }
    assert!(!lab.run(&["vm", "show", "web2"]).status.success(), "a killed VM restore registered the VM");
    lab.ok(&args);
    assert!(same(&dir.join("web2-vda.raw"), &image));
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}

#[test]
fn a_killed_replace_leaves_the_disk_as_it_was() {
    let (lab, image) = lab_with_backup();
    // The disk changes after the backup: a replace would put the backed-up content back.
    let before = lab.path("before.raw");
    let out =
        Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x61 0 1M"]).arg(&image).output().unwrap();
    assert!(out.status.success());
    std::fs::copy(&image, &before).unwrap();
    let args = ["restore", "replace", "web", "--point", "latest", "--disk", "vda"];
    kill_mid_write(&lab, &args, |pid| lab.path(&format!("..web.raw.vmvault-restore.vmvault-partial-{pid}")));
    assert!(same(&image, &before), "a killed replace changed the disk");
    assert!(
        !leftovers(lab.dir.path()).iter().any(|n| n.contains("pre-restore")),
        "{:?}",
        leftovers(lab.dir.path())
    );
    lab.ok(&args);
    assert!(!same(&image, &before), "the replace did not restore the backed-up content");
    assert!(leftovers(lab.dir.path()).is_empty(), "{:?}", leftovers(lab.dir.path()));
}

#[test]
fn a_file_restore_is_marked_incomplete_until_everything_is_in_place() {
    let lab = Lab::local(None);
    lab.ok(&["vault", "init", "--no-encryption"]);
    let tree = lab.path("tree");
    std::fs::create_dir(&tree).unwrap();
    let out = Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={}", tree.join("big.bin").display()),
            "bs=1M",
            "count=150",
            "status=none",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(tree.join("small.txt"), "small\n").unwrap();
    let image = lab.path("fs.raw");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("200M")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(tree.join("big.bin")).unwrap();
    lab.ok(&["vm", "add", "fs", "--disk", &format!("vda={}", image.display())]);
    lab.ok(&["backup", "fs"]);

    let killed = lab.path("killed");
    let args = ["files", "get", "fs", "/big.bin", "/small.txt", "--to", killed.to_str().unwrap()];
    kill_mid_write(&lab, &args, |_| killed.join(".vmvault-incomplete"));

    let whole = lab.path("whole");
    lab.ok(&["files", "get", "fs", "/small.txt", "--to", whole.to_str().unwrap()]);
    assert!(!whole.join(".vmvault-incomplete").exists(), "a complete file restore kept its marker");
    assert_eq!(std::fs::read(whole.join("small.txt")).unwrap(), b"small\n");

    let partly = lab.path("partly");
    let out = lab.run(&["files", "get", "fs", "/small.txt", "/nosuch", "--to", partly.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        partly.join(".vmvault-incomplete").exists(),
        "a file restore with a failed entry lost its marker"
    );
    assert!(partly.join("small.txt").exists());
}
