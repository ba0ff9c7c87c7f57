//! The operator's commands against a vault in an S3 bucket (moto_server on loopback), exactly
//! as on a local directory: init, register, back up, restore bit-exact, verify, prune, GC.

mod common;

use std::process::Command;

use common::*;

#[test]
fn every_vault_command_works_on_an_s3_bucket() {
    let lab = Lab::s3(Some("s3 passphrase"));
    lab.ok(&["vault", "init"]);
    let info = lab.ok(&["vault", "info"]);
    assert!(info.contains(&lab.vault) && info.contains("AES-256-GCM"), "{info}");

    let os = lab.dir.path().join("os.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", os.to_str().unwrap(), "64M"]);
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x61 0 12M", os.to_str().unwrap()]);
    lab.ok(&["vm", "add", "web", "--disk", &format!("vda={}", os.display())]);
    let first = lab.json(&["backup", "web", "--json"]);
    assert_eq!(first["disks"][0]["mode"], "full");
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x62 40M 4M", os.to_str().unwrap()]);
    let second = lab.json(&["backup", "web", "--json"]);
    assert_eq!(second["disks"][0]["mode"], "incremental");
    assert_eq!(second["bytes_read"], 4 << 20);
    assert_eq!(lab.json(&["points", "web", "--json"]).as_array().unwrap().len(), 2);

    let restored = lab.dir.path().join("restored.qcow2");
    lab.ok(&[
        "restore",
        "disk",
        "web",
        "--point",
        "latest",
        "--disk",
        "vda",
        "--to",
        restored.to_str().unwrap(),
    ]);
    assert!(same(&os, &restored), "the restore from S3 differs from the disk");
    lab.ok(&["verify", "--read-data"]);

    // Protection, cleanup and GC on the bucket: both points are within retention, so GC
    // must free nothing that they reference (verify reads every chunk back afterwards).
    let first_id = first["point_id"].as_str().unwrap();
    let policy =
        ["policy", "create", "p", "--schedule", "daily 01:00", "--timezone", "UTC", "--keep-daily", "7"];
    lab.ok(&policy);
    lab.ok(&["protect", "web", "--policy", "p"]);
    let listed = lab.ok(&["points", "web"]);
    assert!(listed.contains(first_id), "{listed}");
    lab.ok(&["prune"]);
    lab.ok(&["gc"]);
    lab.ok(&["verify", "--read-data"]);
    assert_eq!(lab.json(&["points", "web", "--json"]).as_array().unwrap().len(), 2);

    // A wrong passphrase on the bucket is one clear line, and changes nothing.
    let out = lab.cmd(&["points", "web"]).env("VMVAULT_PASSPHRASE", "wrong").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("wrong passphrase") && err.contains(&lab.vault), "{err}");
}

#[test]
fn an_unreachable_bucket_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_vmvault"))
        .args(["vault", "info"])
        .env("VMVAULT_VAULT", "s3://gone/vault")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("s3://gone/vault") && err.contains("check the endpoint"), "{err}");
}
