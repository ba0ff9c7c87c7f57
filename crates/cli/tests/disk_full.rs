//! A backup that fills the vault's disk: the kernel's own ENOSPC (a tmpfs of 48 MiB under the
//! vault). The backup fails with one clear message that names the cause once and says what
//! became of what it had stored; the chunks it stored are removed again, so the vault is not
//! left full, verify passes and the next backup works. When another backup is running, the
//! chunks are held until `vmvault gc`, and the message says how much and how to free it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Lab, stderr_line};

fn random_file(path: &Path, mib: u32) {
    let status = Command::new("dd")
        .args(["if=/dev/urandom", &format!("of={}", path.display()), "bs=1M", &format!("count={mib}")])
        .arg("status=none")
        .status()
        .unwrap();
    assert!(status.success());
}

fn used_bytes(dir: &Path) -> u64 {
    let out = Command::new("du").args(["-s", "-B1"]).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap()
}

/// A vault on a 48 MiB tmpfs, with `small` (4 MiB, fits) and `big` (80 MiB of random bytes,
/// does not fit) registered.
fn lab_on_small_disk() -> (Lab, testkit::Tmpfs) {
    let mut lab = Lab::local(None);
    let mount = testkit::Tmpfs::mount(&lab.path("fs"), "48m");
    lab.vault = mount.path().join("vault").display().to_string();
    lab.ok(&["vault", "init", "--no-encryption"]);
    for (vm, mib) in [("small", 4), ("big", 80)] {
        let image = lab.path(&format!("{vm}.raw"));
        random_file(&image, mib);
        lab.ok(&["vm", "add", vm, "--disk", &format!("vda={}", image.display())]);
    }
    (lab, mount)
}

#[test]
fn a_backup_that_fills_the_disk_removes_what_it_stored() {
    let (lab, mount) = lab_on_small_disk();
    let before = used_bytes(mount.path());
    let out = lab.run(&["backup", "big"]);
    assert!(!out.status.success());
    let err = stderr_line(&out);
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    assert!(err.contains("it had stored were removed again"), "{err}");
    // The space is free again: nothing but a few small documents more than before.
    let after = used_bytes(mount.path());
    assert!(after < before + (1 << 20), "the failed backup left {after} bytes used (before: {before})");
    let info = lab.json(&["vault", "info", "--json"]);
    assert_eq!(info["chunk_count"], 0, "{info}");
    lab.ok(&["verify", "--read-data"]);
    let point = lab.json(&["backup", "small", "--json"]);
    assert_eq!(point["disks"][0]["mode"], "full");
    lab.ok(&["verify", "--read-data"]);
}

#[test]
fn while_another_backup_runs_the_space_is_held_until_gc_and_the_message_says_so() {
    let (lab, mount) = lab_on_small_disk();
    // A backup of `small` that started first, paused while its session is live.
    let mut other =
        lab.cmd(&["backup", "small"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let session = mount.path().join("vault/sessions/backup-small.json");
    while !session.exists() {
        assert!(other.try_wait().unwrap().is_none(), "the backup of small ended before it was paused");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(other.id() as i32, libc::SIGSTOP) };
    let out = lab.run(&["backup", "big"]);
    assert!(!out.status.success());
    let err = stderr_line(&out);
    assert!(err.contains("are held until `vmvault gc` removes them"), "{err}");
    assert!(err.contains("MiB"), "the message does not say how much: {err}");
    // The held space is real: the resumed backup meets a full disk too (and cleans up after
    // itself); `vmvault gc` then frees what the first one held.
    unsafe { libc::kill(other.id() as i32, libc::SIGCONT) };
    let _ = other.wait().unwrap();
    let full = used_bytes(mount.path());
    let gc = lab.json(&["gc", "--json"]);
    assert!(gc["deleted"].as_u64().unwrap() > 0, "{gc}");
    assert!(used_bytes(mount.path()) + (20 << 20) < full, "gc freed too little");
    let point = lab.json(&["backup", "small", "--json"]);
    assert_eq!(point["disks"][0]["mode"], "full");
    lab.ok(&["verify", "--read-data"]);
}
