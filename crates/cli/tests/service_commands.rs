//! Policies, protection, jobs, verify from the command line, as an operator uses them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

/// An unencrypted vault in a scratch directory.
fn lab() -> Lab {
    let lab = Lab::local(None);
    lab.ok(&["vault", "init", "--no-encryption"]);
    lab
}

/// Register a VM with a raw disk of `random_mib` random MiB.
fn vm(lab: &Lab, name: &str, random_mib: usize) -> PathBuf {
    let image = lab.path(&format!("{name}.raw"));
    let out = Command::new("dd")
        .args(["if=/dev/urandom", &format!("of={}", image.display()), "bs=1M"])
        .arg(format!("count={random_mib}"))
        .arg("status=none")
        .output()
        .unwrap();
    assert!(out.status.success());
    lab.ok(&["vm", "add", name, "--disk", &format!("vda={}", image.display())]);
    image
}

#[test]
fn policy_show_prints_next_runs_in_the_zone_and_in_utc() {
    let lab = lab();
    lab.ok(&[
        "policy",
        "create",
        "gold",
        "--schedule",
        "daily 02:30",
        "--timezone",
        "Europe/Madrid",
        "--keep-daily",
        "30",
        "--keep-weekly",
        "12:sun",
        "--keep-monthly",
        "12:last",
        "--keep-yearly",
        "5:dec",
    ]);
    let out = lab.ok(&["policy", "show", "gold", "--next", "3", "--from", "2026-03-27T12:00:00Z"]);
    let runs: Vec<&str> = out.lines().filter(|l| l.starts_with("    2026")).map(str::trim).collect();
    assert_eq!(
        runs,
        [
            "2026-03-28T02:30:00+01:00  2026-03-28T01:30:00Z",
            "2026-03-29T03:00:00+02:00  2026-03-29T01:00:00Z",
            "2026-03-30T02:30:00+02:00  2026-03-30T00:30:00Z",
        ]
    );
    let err = lab.fails(&[
        "policy",
        "create",
        "big",
        "--schedule",
        "daily 01:00",
        "--timezone",
        "UTC",
        "--keep-daily",
        "10000",
    ]);
    assert!(err.contains("between 1 and 9999"), "{err}");
    let err = lab.fails(&["policy", "create", "none", "--schedule", "daily 01:00", "--timezone", "UTC"]);
    assert!(err.contains("at least one retention rule"), "{err}");
    let err = lab.fails(&[
        "policy",
        "create",
        "x",
        "--schedule",
        "every 5h from 01:00 for 8h",
        "--timezone",
        "UTC",
        "--keep-daily",
        "1",
    ]);
    assert!(err.contains("4, 6, 8 or 12"), "{err}");
    let err = lab.fails(&[
        "policy",
        "create",
        "y",
        "--schedule",
        "daily 01:00",
        "--timezone",
        "Moon/Base",
        "--keep-daily",
        "1",
    ]);
    assert!(err.contains("IANA"), "{err}");
    let err = lab.fails(&["vault", "set", "--soft-delete-days", "7"]);
    assert!(err.contains("at least 14"), "{err}");
}

#[test]
fn soft_delete_then_undelete_then_restore() {
    let lab = lab();
    let image = vm(&lab, "web", 8);
    lab.ok(&[
        "policy",
        "create",
        "gold",
        "--schedule",
        "weekly mon,thu 22:00",
        "--timezone",
        "UTC",
        "--keep-daily",
        "7",
    ]);
    lab.ok(&["protect", "web", "--policy", "gold"]);
    let point = lab.json(&["backup", "web", "--json"])["point_id"].as_str().unwrap().to_string();
    let err = lab.fails(&["vm", "remove", "web"]);
    assert!(err.contains("unprotect web"), "{err}");
    lab.ok(&["lock", "web"]);
    let err = lab.fails(&["unprotect", "web", "--delete-data"]);
    assert!(err.contains("delete lock"), "{err}");
    lab.ok(&["unlock", "web"]);
    let out = lab.ok(&["unprotect", "web", "--delete-data"]);
    assert!(out.contains("soft-deleted") && out.contains("undelete"), "{out}");
    let items = lab.json(&["items", "--json"]);
    assert_eq!(items[0]["state"], "soft-deleted");
    let err =
        lab.fails(&["restore", "disk", "web", "--point", &point, "--disk", "vda", "--to", "/tmp/never.raw"]);
    assert!(err.contains("undelete"), "{err}");
    lab.ok(&["undelete", "web"]);
    let restored = lab.path("restored.raw");
    lab.ok(&[
        "restore",
        "disk",
        "web",
        "--point",
        &point,
        "--disk",
        "vda",
        "--to",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&image).unwrap(), std::fs::read(&restored).unwrap());
    let jobs = lab.json(&["jobs", "--vm", "web", "--json"]);
    let ops: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["operation"].as_str().unwrap()).collect();
    assert_eq!(ops, ["backup", "restore"]);
    assert!(jobs.as_array().unwrap().iter().all(|j| j["status"] == "completed"), "{jobs}");
}

#[test]
fn a_backup_cancelled_from_another_process_commits_nothing() {
    let lab = lab();
    vm(&lab, "db", 640);
    let stderr = std::fs::File::create(lab.path("backup.stderr")).unwrap();
    let mut child = lab.cmd(&["backup", "db"]).stdout(Stdio::null()).stderr(stderr).spawn().unwrap();

    // Find the job once it is in its transfer phase, and cancel it from here.
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = loop {
        assert!(Instant::now() < deadline, "the backup job never reached its transfer phase");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the backup ended ({status}) before it could be cancelled");
        }
        let jobs = lab.json(&["jobs", "--status", "in-progress", "--json"]);
        let running = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["phases"].as_array().unwrap().last().is_some_and(|p| p["name"] == "transfer"));
        if let Some(job) = running {
            break job["id"].as_str().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = lab.ok(&["job", "cancel", &id]);
    assert!(out.contains("Cancel requested"), "{out}");
    let status = child.wait().unwrap();
    assert!(!status.success());
    let err = std::fs::read_to_string(lab.path("backup.stderr")).unwrap();
    assert!(err.contains("cancelled") && err.contains("nothing was committed"), "{err}");

    let job = lab.json(&["job", "show", &id, "--json"]);
    assert_eq!(job["status"], "cancelled");
    assert_eq!(lab.json(&["points", "db", "--json"]).as_array().unwrap().len(), 0);
    let err = lab.fails(&["job", "wait", &id]);
    assert!(err.contains("cancelled"), "{err}");
    let err = lab.fails(&["job", "cancel", &id]);
    assert!(err.contains("already ended"), "{err}");

    // The VM is free for the next backup, and verify finds it whole.
    lab.ok(&["backup", "db"]);
    lab.ok(&["verify", "--read-data"]);
}

#[test]
fn verify_fails_and_names_the_point_when_a_chunk_is_missing() {
    let lab = lab();
    vm(&lab, "app", 6);
    let point = lab.json(&["backup", "app", "--json"])["point_id"].as_str().unwrap().to_string();
    let chunks = lab.path("vault/chunks");
    let victim = std::fs::read_dir(&chunks)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    let out = lab.run(&["verify", "app"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("missing from the vault") && stdout.contains(&point), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("app/{point}")), "{stderr}");
}

#[test]
fn a_group_backs_up_its_members_together_and_keeps_them_registered() {
    let lab = lab();
    vm(&lab, "db", 2);
    vm(&lab, "web", 1);
    let err = lab.fails(&["group", "create", "solo", "db"]);
    assert!(err.contains("at least two VMs"), "{err}");
    let err = lab.fails(&["group", "create", "shop", "db", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
    lab.ok(&["group", "create", "shop", "db", "web"]);
    assert_eq!(lab.json(&["group", "show", "shop", "--json"])["members"], serde_json::json!(["db", "web"]));
    let err = lab.fails(&["vm", "remove", "web"]);
    assert!(err.contains("consistency group shop") && err.contains("group delete shop"), "{err}");

    let out = lab.ok(&["backup", "--group", "shop"]);
    assert!(out.contains("Consistency group shop: snapshot instant"), "{out}");
    let instants: Vec<serde_json::Value> = ["db", "web"]
        .iter()
        .map(|vm| {
            let points = lab.json(&["points", vm, "--json"]);
            assert_eq!(points.as_array().unwrap().len(), 1);
            assert_eq!(points[0]["group"]["name"], "shop");
            points[0]["group"]["instant"].clone()
        })
        .collect();
    assert_eq!(instants[0], instants[1], "both points record one instant");
    let usage = lab.run(&["backup", "--group", "shop", "--disk", "vda"]);
    assert!(
        !usage.status.success() && String::from_utf8_lossy(&usage.stderr).contains("cannot be used with")
    );

    lab.ok(&["group", "delete", "shop"]);
    lab.ok(&["vm", "remove", "web"]);
    let err = lab.fails(&["backup", "--group", "shop"]);
    assert!(err.contains("no consistency group \"shop\""), "{err}");
}
