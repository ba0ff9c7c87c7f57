//! The vault and key commands as an operator runs them.

use std::path::Path;
use std::process::{Command, Output};

fn vmvault(vault: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmvault"));
    cmd.arg("--vault").arg(vault).args(args).env_remove("VMVAULT_PASSPHRASE").env_remove("VMVAULT_VAULT");
    cmd.env_remove("VMVAULT_NEW_PASSPHRASE").env_remove("VMVAULT_RECOVERY_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run vmvault")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const PASS: (&str, &str) = ("VMVAULT_PASSPHRASE", "first passphrase");

#[test]
fn init_warns_that_a_lost_passphrase_loses_the_backups_and_refuses_to_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let out = ok(vmvault(&vault, &["vault", "init"], &[PASS]));
    assert!(out.contains("if you lose it, every backup in this vault is lost"), "{out}");
    let before = testkit::files_under(&vault);
    let again = vmvault(&vault, &["vault", "init"], &[PASS]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("a vault already exists"));
    assert_eq!(testkit::files_under(&vault), before, "a second init changed the vault");
}

#[test]
fn a_wrong_passphrase_fails_with_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    ok(vmvault(&vault, &["vault", "init"], &[PASS]));
    let before = testkit::files_under(&vault);
    let wrong = [("VMVAULT_PASSPHRASE", "not it"), ("VMVAULT_NEW_PASSPHRASE", "whatever")];
    for args in [&["key", "change-passphrase"][..], &["key", "export", "--paper"][..]] {
        let out = vmvault(&vault, args, &wrong);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
        assert!(
            stderr.contains("wrong passphrase") && stderr.contains(&vault.display().to_string()),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "nothing printed on stdout");
        assert_eq!(testkit::files_under(&vault), before, "{args:?} wrote to the vault");
    }
}

#[test]
fn change_passphrase_rewraps_the_key_and_leaves_the_rest_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    ok(vmvault(&vault, &["vault", "init"], &[PASS]));
    let before = testkit::files_under(&vault);
    let pfile = dir.path().join("new-pass");
    std::fs::write(&pfile, "second passphrase\n").unwrap();
    ok(vmvault(
        &vault,
        &["key", "change-passphrase", "--new-passphrase-file", pfile.to_str().unwrap()],
        &[PASS],
    ));
    let after = testkit::files_under(&vault);
    let changed: Vec<_> =
        after.iter().filter(|(p, bytes)| before.get(*p) != Some(bytes)).map(|(p, _)| p.clone()).collect();
    assert_eq!(changed.len(), 1, "only the key file changes: {changed:?}");
    assert!(changed[0].ends_with("keys/master.key"));

    assert!(!vmvault(&vault, &["key", "export", "--paper"], &[PASS]).status.success(), "old passphrase");
    let out =
        ok(vmvault(&vault, &["key", "export", "--paper", "--passphrase-file", pfile.to_str().unwrap()], &[]));
    assert!(out.contains("recovery key"));
}

#[test]
fn a_paper_recovery_key_sets_a_new_passphrase_after_the_key_file_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    ok(vmvault(&vault, &["vault", "init"], &[PASS]));
    let paper = ok(vmvault(&vault, &["key", "export", "--paper"], &[PASS]));
    let key_line = paper.lines().find(|l| l.trim().len() == 65 && l.contains('-')).expect("key line").trim();
    assert!(!paper.contains("first passphrase"));

    // A person types it back in lower case, without dashes, with one confusable letter.
    let typed = key_line.replace('-', " ").to_lowercase().replacen('0', "o", 1);
    std::fs::write(vault.join("keys/master.key"), b"garbage").unwrap();
    let new = ("VMVAULT_NEW_PASSPHRASE", "after recovery");
    let mistyped = key_line.replacen(&key_line[0..1], if &key_line[0..1] == "A" { "B" } else { "A" }, 1);
    let out = vmvault(&vault, &["key", "import"], &[new, ("VMVAULT_RECOVERY_KEY", &mistyped)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("recovery key"));

    ok(vmvault(&vault, &["key", "import"], &[new, ("VMVAULT_RECOVERY_KEY", &typed)]));
    let again =
        ok(vmvault(&vault, &["key", "export", "--paper"], &[("VMVAULT_PASSPHRASE", "after recovery")]));
    assert!(again.contains(key_line), "same master key after import");

    // A recovery key of another vault is refused.
    let other = dir.path().join("other");
    ok(vmvault(&other, &["vault", "init"], &[PASS]));
    let out = vmvault(&other, &["key", "import"], &[new, ("VMVAULT_RECOVERY_KEY", key_line)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not belong to the vault"));
}

#[test]
fn vault_info_reports_format_and_kdf_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    ok(vmvault(&vault, &["vault", "init"], &[PASS]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(vmvault(&vault, &["vault", "info", "--json"], &[]))).unwrap();
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["encryption"], "aes-256-gcm");
    assert!(json["kdf"]["memory_kib"].as_u64().unwrap() >= 64 * 1024);
    assert_eq!(json["chunk_count"], 0);
    assert_eq!(json["chunk_size"], 4 << 20);
    assert_eq!(json["id"].as_str().unwrap().len(), 32);
    let text = json.to_string();
    for secret in ["salt", "wrapped", "master", "passphrase"] {
        assert!(!text.contains(secret), "info mentions {secret}");
    }

    let plain = dir.path().join("plain");
    ok(vmvault(&plain, &["vault", "init", "--no-encryption"], &[]));
    let text = ok(vmvault(&plain, &["vault", "info"], &[]));
    assert!(text.contains("encryption  none"), "{text}");
}

#[test]
fn commands_on_a_missing_vault_say_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = vmvault(&dir.path().join("nothing"), &["vault", "info"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("no vault here") && stderr.contains("vmvault vault init"), "{stderr}");
    assert!(!dir.path().join("nothing").exists(), "info created the directory");
}

#[test]
fn an_unlocked_key_serves_commands_without_a_passphrase_until_locked() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    ok(vmvault(&vault, &["vault", "init"], &[PASS]));
    let out = ok(vmvault(&vault, &["key", "unlock", "--timeout", "10m"], &[PASS]));
    assert!(out.contains("unlocked for 10m"), "{out}");
    let paper = ok(vmvault(&vault, &["key", "export", "--paper"], &[]));
    assert!(paper.contains("recovery key"));
    ok(vmvault(&vault, &["key", "lock"], &[]));
    let out = vmvault(&vault, &["key", "export", "--paper"], &[]);
    assert!(!out.status.success(), "locked again: the passphrase is needed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("VMVAULT_PASSPHRASE"));

    let bad = vmvault(&vault, &["key", "unlock", "--timeout", "forever"], &[PASS]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--timeout"));
}
