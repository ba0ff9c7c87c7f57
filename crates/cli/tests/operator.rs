//! What an operator does with the CLI: register, back up, list points, restore, survive a kill.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

/// An encrypted vault in a scratch directory.
fn lab() -> Lab {
    let lab = Lab::local(Some("operator passphrase"));
    lab.ok(&["vault", "init"]);
    lab
}

#[test]
fn backup_json_and_points_json_carry_the_promised_fields() {
    let lab = lab();
    let os = lab.path("os.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", os.to_str().unwrap(), "64M"]);
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x61 0 8M", os.to_str().unwrap()]);
    lab.ok(&[
        "vm",
        "add",
        "app",
        "--disk",
        &format!("vda={}", os.display()),
        "--vcpus",
        "2",
        "--memory",
        "2048",
    ]);
    let summary = lab.json(&["backup", "app", "--json", "--retain-until", "2099-01-31"]);
    for field in ["point_id", "bytes_read", "bytes_new", "bytes_zero", "duration_s", "disks"] {
        assert!(summary.get(field).is_some(), "summary lacks {field}: {summary}");
    }
    assert_eq!(summary["bytes_read"], 8 << 20);
    assert_eq!(summary["disks"][0]["label"], "vda");
    let points = lab.json(&["points", "app", "--json"]);
    let first = &points[0];
    assert_eq!(first["id"], summary["point_id"]);
    assert_eq!(first["kind"], "on-demand");
    assert_eq!(first["consistency"], "crash");
    assert!(first["time"].as_str().unwrap().starts_with("20"));
    assert!(first["retain_until"].as_str().unwrap().starts_with("2099-01-31"));
    let text = lab.ok(&["points", "app"]);
    assert!(text.contains(summary["point_id"].as_str().unwrap()), "{text}");
}

#[test]
fn a_backup_killed_mid_transfer_leaves_no_point_and_the_next_one_succeeds() {
    let lab = lab();
    let os = lab.path("os.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", os.to_str().unwrap(), "64M"]);
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x71 0 16M", os.to_str().unwrap()]);
    // A raw data disk of random bytes: slow enough to kill mid-way.
    let data = lab.path("data.raw");
    sh("dd", &["if=/dev/urandom", &format!("of={}", data.display()), "bs=1M", "count=768", "status=none"]);
    lab.ok(&[
        "vm",
        "add",
        "db",
        "--disk",
        &format!("vda={}", os.display()),
        "--disk",
        &format!("data={}", data.display()),
    ]);
    let first = lab.json(&["backup", "db", "--json", "--disk", "vda"]);
    let first_id = first["point_id"].as_str().unwrap().to_string();
    let os_at_first = lab.path("os-first.qcow2");
    std::fs::copy(&os, &os_at_first).unwrap();
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x72 4M 4M", os.to_str().unwrap()]);

    let chunks_before = count_files(&lab.path("vault/chunks"));
    let stderr = std::fs::File::create(lab.path("killed.stderr")).unwrap();
    let mut child = lab.cmd(&["backup", "db"]).stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_files(&lab.path("vault/chunks")) < chunks_before + 3 {
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(lab.path("killed.stderr")).unwrap_or_default();
            panic!("the backup ended ({status}) before it could be killed: {err}");
        }
        assert!(Instant::now() < deadline, "no chunks appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let points = lab.json(&["points", "db", "--json"]);
    assert_eq!(points.as_array().unwrap().len(), 1, "the killed backup left a point: {points}");
    // Its job reads as failed at once (its process is gone), and it blocks nothing.
    let jobs = lab.json(&["jobs", "--vm", "db", "--json"]);
    let killed = jobs.as_array().unwrap().last().unwrap();
    assert_eq!(killed["status"], "failed", "{killed}");
    assert!(killed["error"].as_str().unwrap().contains("stopped responding"), "{killed}");
    let second = lab.json(&["backup", "db", "--json"]);
    assert_ne!(second["point_id"], first["point_id"]);
    let points = lab.json(&["points", "db", "--json"]);
    assert_eq!(points.as_array().unwrap().len(), 2);

    let restored = lab.path("restored-first.qcow2");
    lab.ok(&[
        "restore",
        "disk",
        "db",
        "--point",
        &first_id,
        "--disk",
        "vda",
        "--to",
        restored.to_str().unwrap(),
    ]);
    assert!(same(&os_at_first, &restored));
    let restored_data = lab.path("restored-data.raw");
    lab.ok(&[
        "restore",
        "disk",
        "db",
        "--point",
        "latest",
        "--disk",
        "data",
        "--to",
        restored_data.to_str().unwrap(),
    ]);
    assert!(same(&data, &restored_data));
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path())
            } else {
                usize::from(!e.file_name().to_string_lossy().starts_with('.'))
            }
        })
        .sum()
}

#[test]
fn restore_replace_refuses_a_running_vm_and_keeps_the_old_disk_aside() {
    let lab = lab();
    let os = lab.path("os.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", os.to_str().unwrap(), "32M"]);
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x51 0 4M", os.to_str().unwrap()]);
    lab.ok(&["vm", "add", "svc", "--disk", &format!("vda={}", os.display())]);
    lab.ok(&["backup", "svc"]);
    let at_backup = lab.path("at-backup.qcow2");
    std::fs::copy(&os, &at_backup).unwrap();
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x52 0 4M", os.to_str().unwrap()]);
    let changed = lab.path("changed.qcow2");
    std::fs::copy(&os, &changed).unwrap();

    // The VM is "running": qemu-nbd holds the image open for writing.
    let mut holder = Command::new("qemu-nbd")
        .args(["-f", "qcow2", "-k", lab.path("run.sock").to_str().unwrap(), os.to_str().unwrap()])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.path("run.sock").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = lab.run(&["restore", "replace", "svc", "--point", "latest"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(line.contains("in use") && line.contains("stop VM"), "{line}");
    assert!(same(&os, &changed), "the disk was touched");

    let text = lab.ok(&["restore", "replace", "svc", "--point", "latest", "--disk", "vda"]);
    assert!(same(&os, &at_backup), "the disk holds the point again");
    let kept: Vec<_> = std::fs::read_dir(lab.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("os.qcow2.pre-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "{text}");
    assert!(same(&kept[0], &changed), "the previous content was kept aside");
}

#[test]
fn restore_vm_makes_a_new_registered_vm_with_new_identity() {
    let lab = lab();
    let os = lab.path("os.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", os.to_str().unwrap(), "32M"]);
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x53 1M 2M", os.to_str().unwrap()]);
    let xml = lab.path("domain.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='kvm'><name>shop</name><uuid>6f1c2a4e-0000-4000-8000-000000000001</uuid>\
             <memory unit='KiB'>2097152</memory><vcpu placement='static'>4</vcpu><devices>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>\
             <interface type='network'><mac address='52:54:00:11:22:33'/><source network='default'/></interface>\
             <channel type='unix'><source mode='bind' path='/run/shop/qga.sock'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\
             </devices></domain>",
            os.display()
        ),
    )
    .unwrap();
    lab.ok(&["vm", "import-libvirt", xml.to_str().unwrap()]);
    let shop = lab.json(&["vm", "show", "shop", "--json"]);
    assert_eq!(shop["vcpus"], 4);
    assert_eq!(shop["memory_mib"], 2048);
    assert_eq!(shop["uuid"], "6f1c2a4e-0000-4000-8000-000000000001");
    assert_eq!(shop["nics"][0]["mac"], "52:54:00:11:22:33");
    assert_eq!(shop["disks"].as_array().unwrap().len(), 1, "the cdrom is not a disk");
    // libvirt holds the agent channel of its domains (and its path changes): not kept.
    assert!(shop.get("qga").is_none(), "the agent path was taken from the XML: {shop}");
    assert!(shop.get("qmp").is_none(), "libvirt keeps its monitor socket out of the XML");
    // Another VM (a disk belongs to one VM), registered by hand with its sockets.
    let live_disk = lab.path("live.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", live_disk.to_str().unwrap(), "32M"]);
    lab.ok(&[
        "vm",
        "add",
        "live",
        "--disk",
        live_disk.to_str().unwrap(),
        "--qmp",
        "/run/live/qmp.sock",
        "--qga",
        "/run/live/qga.sock",
    ]);
    let live = lab.json(&["vm", "show", "live", "--json"]);
    assert_eq!(
        (live["qmp"].as_str(), live["qga"].as_str()),
        (Some("/run/live/qmp.sock"), Some("/run/live/qga.sock"))
    );

    lab.ok(&["backup", "shop"]);
    let out = lab.path("restored");
    lab.ok(&["restore", "vm", "shop", "--point", "latest", "--as", "shop2", "--to", out.to_str().unwrap()]);
    let shop2 = lab.json(&["vm", "show", "shop2", "--json"]);
    assert_ne!(shop2["uuid"], shop["uuid"]);
    assert_ne!(shop2["nics"][0]["mac"], shop["nics"][0]["mac"]);
    assert_eq!(shop2["vcpus"], 4);
    let disk = PathBuf::from(shop2["disks"][0]["path"].as_str().unwrap());
    assert!(disk.starts_with(&out));
    assert!(same(&os, &disk));
    let domain = std::fs::read_to_string(out.join("shop2.xml")).unwrap();
    assert!(domain.contains(&disk.display().to_string()) && domain.contains(shop2["uuid"].as_str().unwrap()));
    let script = std::fs::read_to_string(out.join("shop2.qemu.sh")).unwrap();
    assert!(
        script.contains("qemu-system-x86_64") && script.contains(shop2["nics"][0]["mac"].as_str().unwrap())
    );
}

#[test]
fn limits_are_enforced_when_a_vm_is_registered() {
    let lab = lab();
    let huge = lab.path("huge.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", huge.to_str().unwrap(), "4096G"]);
    let out = lab.run(&["vm", "add", "big", "--disk", huge.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("larger than the 4095 GiB"));

    let small = lab.path("small.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", small.to_str().unwrap(), "1M"]);
    let mut args = vec!["vm".to_string(), "add".into(), "many".into()];
    for i in 0..18 {
        args.push("--disk".into());
        args.push(format!("d{i}={}", small.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.run(&args);
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("17 data disks; at most 16"));
    assert!(lab.json(&["vm", "list", "--json"]).as_array().unwrap().is_empty(), "nothing registered");

    let missing = lab.run(&["vm", "add", "ghost", "--disk", "/nonexistent/disk.qcow2"]);
    assert!(stderr_line(&missing).contains("/nonexistent/disk.qcow2"));
}

#[test]
fn the_demo_runs_the_main_job_and_proves_its_restores() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_vmvault"))
        .args(["demo", "--dir", demo.to_str().unwrap()])
        .env_remove("VMVAULT_VAULT")
        .env_remove("VMVAULT_PASSPHRASE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.matches("qemu-img compare: identical").count(), 3, "{text}");
    assert!(text.contains("[vda incremental, data full]"), "{text}");
    // The vault it made is a real one: the CLI reads it.
    let points = Command::new(env!("CARGO_BIN_EXE_vmvault"))
        .args(["points", "demo", "--json"])
        .env("VMVAULT_VAULT", demo.join("vault"))
        .env("VMVAULT_PASSPHRASE", "vmvault-demo")
        .output()
        .unwrap();
    let points: serde_json::Value = serde_json::from_slice(&points.stdout).unwrap();
    assert_eq!(points.as_array().unwrap().len(), 2);
}
