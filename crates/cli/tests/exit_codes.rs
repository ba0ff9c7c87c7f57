//! A failed command tells its kind by its exit code, says what happened in one line and what
//! to do on a second, `vmvault: hint: …`, line — so a script can tell "no such VM" from "the
//! vault did not answer" without reading the text.

mod common;

use common::{Lab, stderr_line};

fn code(lab: &Lab, args: &[&str]) -> (i32, String) {
    let out = lab.run(args);
    (out.status.code().unwrap_or(-1), stderr_line(&out))
}

#[test]
fn each_kind_of_failure_has_its_exit_code_and_its_hint_its_own_line() {
    let lab = Lab::local(None);
    // No vault yet: not found, and how to make one.
    let (status, err) = code(&lab, &["vm", "list"]);
    assert_eq!(status, 3, "{err}");
    assert!(err.lines().nth(1).is_some_and(|hint| hint.contains("vmvault vault init")), "{err}");
    lab.ok(&["vault", "init", "--no-encryption"]);
    let (status, err) = code(&lab, &["vault", "init", "--no-encryption"]);
    assert_eq!(status, 4, "a vault exists: {err}");

    let image = lab.path("web.raw");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw", image.to_str().unwrap(), "16M"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let disk = format!("vda={}", image.display());
    lab.ok(&["vm", "add", "web", "--disk", &disk]);
    gold_policy(&lab);
    lab.ok(&["protect", "web", "--policy", "gold"]);

    let cases: &[(&[&str], i32, &str)] = &[
        (&["vm", "show", "nosuch"], 3, "vmvault vm list"),
        (&["points", "nosuch"], 3, ""),
        (&["job", "show", "20990101T000000Z-000000"], 3, "vmvault jobs"),
        (&["vm", "add", "web", "--disk", &disk], 4, "vm remove web"),
        (&["vm", "show", "bad/name"], 2, ""),
        (&["vm", "remove", "web"], 5, "unprotect web"),
        (&["policy", "delete", "gold"], 5, "vmvault protect"),
        (&["undelete", "web"], 5, ""),
        (&["backup", "web", "--retain-until", "9999-12-31"], 8, ""),
        (&["backup", "web", "--retain-until", "2001-01-01"], 2, ""),
    ];
    for (args, expected, hint) in cases {
        let (status, err) = code(&lab, args);
        assert_eq!(status, *expected, "vmvault {args:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("vmvault: error: "), "{err}");
        if !hint.is_empty() {
            let second = err.lines().nth(1).unwrap_or_default();
            assert!(
                second.starts_with("vmvault: hint: ") && second.contains(hint),
                "vmvault {args:?}: {err}"
            );
            assert!(!first.contains(hint), "the hint is also in the message: {err}");
        }
    }
}

#[test]
fn a_reader_that_stops_reading_ends_the_command_quietly() {
    let lab = Lab::local(None);
    lab.ok(&["vault", "init", "--no-encryption"]);
    for args in [&["jobs", "--json"][..], &["vault", "info"], &["vm", "list"]] {
        let mut child = lab
            .cmd(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The pipe closes before the command writes a byte: its first write meets EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "vmvault {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "vmvault {args:?}: {stderr}");
    }
}

#[test]
fn a_file_that_looks_like_no_disk_is_added_only_with_force() {
    let lab = Lab::local(None);
    lab.ok(&["vault", "init", "--no-encryption"]);
    let empty = lab.path("empty.raw");
    std::fs::write(&empty, b"").unwrap();
    let text = lab.path("notes.txt");
    std::fs::write(&text, "this is a note, not a disk\n".repeat(100_000)).unwrap();
    let zeros = lab.path("zeros.raw");
    std::fs::File::create(&zeros).unwrap().set_len(16 << 20).unwrap();
    for (name, file) in [("empty", &empty), ("notes", &text)] {
        let disk = format!("vda={}", file.display());
        let (status, err) = code(&lab, &["vm", "add", name, "--disk", &disk]);
        assert_eq!(status, 2, "{err}");
        assert!(err.contains("does not look like a disk") && err.contains("--force"), "{err}");
        lab.ok(&["vm", "add", name, "--disk", &disk, "--force"]);
    }
    lab.ok(&["vm", "add", "blank", "--disk", &format!("vda={}", zeros.display())]);
}

/// Policy `gold`: daily at 02:30 UTC, seven days kept.
fn gold_policy(lab: &Lab) {
    let args = "policy create gold --schedule daily_02:30 --timezone UTC --keep-daily 7";
    let args: Vec<String> = args.split(' ').map(|a| a.replace('_', " ")).collect();
    lab.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// An unencrypted vault with VM `web` (an 8 MiB raw disk).
fn web_lab() -> Lab {
    let lab = Lab::local(None);
    lab.ok(&["vault", "init", "--no-encryption"]);
    let image = lab.path("web.raw");
    std::fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
    lab.ok(&["vm", "add", "web", "--disk", &format!("vda={}", image.display())]);
    lab
}

/// Flip one bit in the middle of a point's manifest, behind the vault's back.
fn flip_manifest(lab: &Lab, point: &str) {
    let manifest = lab.path(&format!("vault/points/web/{point}/manifest.json"));
    let mut bytes = std::fs::read(&manifest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&manifest, bytes).unwrap();
}

#[test]
fn verify_names_what_it_was_asked_about_and_the_point_a_damaged_manifest_is() {
    let lab = web_lab();
    let (status, err) = code(&lab, &["verify", "nosuch"]);
    assert_eq!(status, 3, "an unknown VM is not a clean verify: {err}");
    let (status, err) = code(&lab, &["verify", "web", "--point", "20990101T000000Z-0000"]);
    assert_eq!(status, 3, "{err}");
    // A registered VM without points checks 0 points, truthfully.
    assert!(lab.ok(&["verify", "web"]).contains("Checked 0 points"));

    let point = lab.json(&["backup", "web", "--json"])["point_id"].as_str().unwrap().to_string();
    flip_manifest(&lab, &point);
    let out = lab.run(&["verify", "web"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), stderr_line(&out));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("affects VM web point {point}")), "{stdout}");
    assert!(stderr.contains(&format!("web/{point}")), "the error names the point: {stderr}");
}

#[test]
fn points_shows_a_damaged_point_and_only_a_damaged_point_can_be_deleted_at_once() {
    let lab = web_lab();
    let first = lab.json(&["backup", "web", "--json"])["point_id"].as_str().unwrap().to_string();
    let second = lab.json(&["backup", "web", "--json"])["point_id"].as_str().unwrap().to_string();
    flip_manifest(&lab, &first);

    let table = lab.ok(&["points", "web"]);
    assert!(table.lines().any(|l| l.starts_with(&first) && l.contains("DAMAGED")), "{table}");
    assert!(table.lines().any(|l| l.starts_with(&second) && !l.contains("DAMAGED")), "{table}");
    let rows = lab.json(&["points", "web", "--json"]);
    let states: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["state"].as_str().unwrap().to_string()))
        .collect();
    assert!(
        states.contains(&(first.clone(), "damaged".into()))
            && states.contains(&(second.clone(), "intact".into())),
        "{states:?}"
    );

    let (status, err) = code(&lab, &["points", "delete", "web", "--point", &second, "--damaged"]);
    assert_eq!(status, 5, "an intact point was not refused: {err}");
    let usage = lab.run(&["points", "delete", "web", "--point", &first]);
    assert_eq!(usage.status.code(), Some(2), "--damaged is required");
    lab.ok(&["points", "delete", "web", "--point", &first, "--damaged"]);
    let table = lab.ok(&["points", "web"]);
    assert!(!table.contains(&first) && table.contains(&second), "{table}");
    assert!(!lab.path(&format!("vault/points/web/{first}/vda.fidx")).exists(), "its index is left");
    lab.ok(&["verify", "web"]);
}

#[test]
fn verify_reads_the_catalog_documents_backups_and_restores_need() {
    let lab = web_lab();
    gold_policy(&lab);
    lab.ok(&["backup", "web"]);
    lab.ok(&["verify"]);
    std::fs::write(lab.path("vault/catalog/checkpoints/web.json"), "{ not json").unwrap();
    std::fs::write(lab.path("vault/catalog/policies/gold.json"), "{ \"name\": 3 }").unwrap();
    let out = lab.run(&["verify", "web"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("DAMAGED catalog/checkpoints/web.json") && stdout.contains("affects VM web"),
        "{stdout}"
    );
    assert!(!stdout.contains("policies/gold.json"), "a VM's verify reports another record: {stdout}");
    let out = lab.run(&["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("DAMAGED catalog/policies/gold.json"), "{stdout}");
    assert!(stdout.contains("DAMAGED catalog/checkpoints/web.json"), "{stdout}");
    // The backup itself goes on (issue 14): it notes the unreadable change tracking.
    let summary = lab.json(&["backup", "web", "--json"]);
    let notes = summary["notes"].to_string();
    assert!(notes.contains("change tracking is unreadable"), "{notes}");
}
