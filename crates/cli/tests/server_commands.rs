//! A vault served by `vmvault server` on loopback over HTTPS, used by `vmvault --vault
//! https://…` clients with tokens of every role.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::*;

/// A running server process, killed when dropped.
struct Server {
    child: Child,
    url: String,
    fingerprint: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The operator's host (vault and server state) and the clients' view of it.
struct Site {
    lab: Lab,
    server: Option<Server>,
    tokens: Vec<(&'static str, String)>,
}

const PASSPHRASE: &str = "server passphrase";

impl Site {
    fn new() -> Site {
        let lab = Lab::local(Some(PASSPHRASE));
        lab.ok(&["vault", "init"]);
        let mut site = Site { lab, server: None, tokens: vec![] };
        for (name, role, vms) in [
            ("reader", "reader", vec![]),
            ("backup", "backup-operator", vec![]),
            ("restore", "restore-operator", vec![]),
            ("admin", "admin", vec![]),
            ("web-only", "admin", vec!["web"]),
        ] {
            let mut args = vec!["server", "token", "create", name, "--role", role, "--state"];
            let state = site.lab.path("state").display().to_string();
            args.push(&state);
            for vm in &vms {
                args.extend(["--vm", vm]);
            }
            let secret = site.lab.ok(&args).trim().to_string();
            assert!(secret.starts_with("vmvt_"), "{secret}");
            site.tokens.push((name, secret));
        }
        site.start();
        site
    }

    fn start(&mut self) {
        self.start_on("127.0.0.1:0");
    }

    fn start_on(&mut self, listen: &str) {
        let log = self.lab.path("server.log");
        let mut child = self
            .lab
            .cmd(&["server", "--listen", listen, "--state", self.lab.path("state").to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let second = lines.next().unwrap().unwrap();
        let url = first.split_whitespace().nth(3).unwrap().to_string();
        let fingerprint = second.split_whitespace().nth(3).unwrap().to_string();
        assert!(url.starts_with("https://127.0.0.1:") && fingerprint.len() == 95, "{first} / {second}");
        self.server = Some(Server { child, url, fingerprint, log });
    }

    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    fn secret(&self, token: &str) -> &str {
        &self.tokens.iter().find(|(n, _)| *n == token).unwrap().1
    }

    /// A client command as `token`, against the server.
    fn client(&self, token: &str, args: &[&str]) -> Command {
        let server = self.server();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmvault"));
        cmd.args(args)
            .env("VMVAULT_VAULT", &server.url)
            .env("VMVAULT_FINGERPRINT", &server.fingerprint)
            .env("VMVAULT_TOKEN", self.secret(token))
            .env("VMVAULT_PASSPHRASE", PASSPHRASE)
            .env("XDG_RUNTIME_DIR", self.lab.dir.path());
        cmd
    }

    fn run(&self, token: &str, args: &[&str]) -> Output {
        self.client(token, args).output().unwrap()
    }

    fn ok(&self, token: &str, args: &[&str]) -> String {
        let out = self.run(token, args);
        assert!(out.status.success(), "{token}: vmvault {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn denied(&self, token: &str, args: &[&str]) -> String {
        let out = self.run(token, args);
        assert!(!out.status.success(), "{token}: vmvault {args:?} should be refused");
        let err = stderr_line(&out);
        assert!(err.contains("refused"), "{token}: vmvault {args:?}: {err}");
        err
    }

    /// Whether the latest point of `vm`'s disk vda, restored by the restore-operator, equals
    /// `disk` (qemu-img compare).
    fn restores_bit_exact(&self, vm: &str, disk: &Path) -> bool {
        let to = self.lab.path(&format!("{vm}-r.qcow2"));
        self.ok(
            "restore",
            &["restore", "disk", vm, "--point", "latest", "--disk", "vda", "--to", to.to_str().unwrap()],
        );
        same(disk, &to)
    }

    /// A VM with a qcow2 disk of `mib` MiB written with `pattern`, registered by an admin.
    fn vm(&self, name: &str, pattern: u8, mib: u64) -> PathBuf {
        let disk = self.lab.path(&format!("{name}.qcow2"));
        sh("qemu-img", &["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "64M"]);
        let write = format!("write -P {pattern} 0 {mib}M");
        sh("qemu-io", &["-f", "qcow2", "-c", &write, disk.to_str().unwrap()]);
        self.ok("admin", &["vm", "add", name, "--disk", &format!("vda={}", disk.display())]);
        disk
    }
}

fn log_of(server: &Server) -> String {
    std::fs::read_to_string(&server.log).unwrap_or_default()
}

#[test]
fn a_wrong_fingerprint_is_refused_before_anything_is_sent() {
    let site = Site::new();
    let real = &site.server().fingerprint;
    let other = format!("{}{}", if real.starts_with('0') { '1' } else { '0' }, &real[1..]);
    let out = site.client("admin", &["vm", "list"]).env("VMVAULT_FINGERPRINT", &other).output().unwrap();
    let err = stderr_line(&out);
    assert!(!out.status.success() && err.contains("certificate has fingerprint"), "{err}");
    let out = site.client("admin", &["vm", "list"]).env_remove("VMVAULT_FINGERPRINT").output().unwrap();
    assert!(stderr_line(&out).contains("--fingerprint"));
    let out = site.client("admin", &["vm", "list"]).env("VMVAULT_TOKEN", "vmvt_forged").output().unwrap();
    assert!(stderr_line(&out).contains("no valid token"));
    assert!(log_of(site.server()).contains("an unknown or revoked token"));

    // Revoked on the server host while it runs: refused from the next request on.
    site.ok("reader", &["vm", "list"]);
    site.lab.ok(&[
        "server",
        "token",
        "revoke",
        "reader",
        "--state",
        site.lab.path("state").to_str().unwrap(),
    ]);
    let out = site.run("reader", &["vm", "list"]);
    assert!(!out.status.success() && stderr_line(&out).contains("no valid token"), "{}", stderr_line(&out));
}

#[test]
fn each_role_is_allowed_and_denied_exactly_what_it_should() {
    let site = Site::new();
    let disk = site.vm("web", 0x21, 8);
    site.ok("backup", &["backup", "web"]);
    let restored = site.lab.path("r.qcow2");
    let restore =
        ["restore", "disk", "web", "--point", "latest", "--disk", "vda", "--to", restored.to_str().unwrap()];
    // A disk of its own (a disk belongs to one VM).
    let db_image = site.lab.path("db-table.qcow2");
    common::sh("qemu-img", &["create", "-q", "-f", "qcow2", db_image.to_str().unwrap(), "8M"]);
    let db_disk = format!("vda={}", db_image.display());
    let policy =
        ["policy", "create", "p", "--schedule", "daily 01:00", "--timezone", "UTC", "--keep-daily", "7"];
    // (token, command, allowed)
    let table: Vec<(&str, Vec<&str>, bool)> = vec![
        ("reader", vec!["vm", "list"], true),
        ("reader", vec!["points", "web"], true),
        ("reader", vec!["backup", "web"], false),
        ("reader", restore.to_vec(), false),
        ("reader", vec!["gc"], false),
        ("backup", vec!["backup", "web"], true),
        ("backup", vec!["vm", "add", "db", "--disk", &db_disk], true),
        ("backup", vec!["vm", "remove", "db"], false),
        ("backup", policy.to_vec(), false),
        ("backup", vec!["gc"], false),
        ("restore", restore.to_vec(), true),
        ("restore", vec!["backup", "web"], false),
        ("restore", vec!["vm", "remove", "db"], false),
        ("admin", policy.to_vec(), true),
        ("admin", vec!["protect", "web", "--policy", "p"], true),
        ("admin", vec!["vm", "remove", "db"], true),
        ("reader", vec!["prune"], false),
        ("backup", vec!["prune"], false),
        ("restore", vec!["prune"], false),
        ("web-only", vec!["gc"], false),
        ("admin", vec!["prune"], true),
        ("admin", vec!["gc"], true),
    ];
    for (token, args, allowed) in &table {
        if *allowed {
            site.ok(token, args);
        } else {
            site.denied(token, args);
        }
    }
    assert!(same(&disk, &restored), "the restore through the server differs");
    let log = log_of(site.server());
    assert!(log.contains("denied: token reader (role reader)"), "{log}");
    assert!(log.contains("denied: token web-only (role admin) may not run gc"), "{log}");
    assert!(
        log.contains("denied: token backup (role backup-operator) may not delete catalog/vms/db.json"),
        "{log}"
    );
    for (_, secret) in &site.tokens {
        assert!(!log.contains(secret.as_str()), "a token secret is in the server log");
    }
}

#[test]
fn a_vm_scoped_token_cannot_see_other_vms() {
    let site = Site::new();
    site.vm("web", 0x31, 4);
    site.vm("db", 0x32, 4);
    site.ok("admin", &["backup", "db"]);
    let listed = site.ok("web-only", &["vm", "list"]);
    assert!(listed.contains("web") && !listed.contains("db"), "{listed}");
    site.ok("web-only", &["backup", "web"]);
    let out = site.run("web-only", &["points", "db"]);
    assert!(!out.status.success(), "a web-only token listed db's points");
    site.denied("web-only", &["backup", "db"]);

    // Job records name their VM inside: a scoped token sees only its VMs' jobs.
    let jobs: serde_json::Value = serde_json::from_str(&site.ok("admin", &["jobs", "--json"])).unwrap();
    let db_job = jobs.as_array().unwrap().iter().find(|j| j["vm"] == "db").unwrap()["id"].as_str().unwrap();
    let seen: serde_json::Value = serde_json::from_str(&site.ok("web-only", &["jobs", "--json"])).unwrap();
    let vms: Vec<&str> = seen.as_array().unwrap().iter().filter_map(|j| j["vm"].as_str()).collect();
    assert!(!vms.is_empty() && vms.iter().all(|vm| *vm == "web"), "{seen}");
    site.denied("web-only", &["job", "show", db_job]);
    site.denied("web-only", &["job", "cancel", db_job]);
    assert!(
        log_of(site.server())
            .contains(&format!("token web-only (role admin) may not read jobs/{db_job}.json"))
    );
}

#[test]
fn four_vms_back_up_at_once_through_one_server_and_restore_bit_exact() {
    let site = Site::new();
    let disks: Vec<(String, PathBuf)> =
        (0..4).map(|i| (format!("vm{i}"), site.vm(&format!("vm{i}"), 0x41 + i as u8, 12))).collect();
    let running: Vec<Child> = disks
        .iter()
        .map(|(vm, _)| site.client("backup", &["backup", vm]).stdout(Stdio::null()).spawn().unwrap())
        .collect();
    for mut child in running {
        assert!(child.wait().unwrap().success(), "a concurrent backup failed");
    }
    for (vm, disk) in &disks {
        assert!(site.restores_bit_exact(vm, disk), "{vm} restored differently");
    }
}

#[test]
fn a_server_killed_mid_backup_fails_the_client_clearly_and_leaves_no_point() {
    let mut site = Site::new();
    let disk = site.vm("big", 0x51, 1);
    // Incompressible data, so the transfer takes a while.
    let noise = site.lab.path("noise.bin");
    sh("dd", &["if=/dev/urandom", &format!("of={}", noise.display()), "bs=1M", "count=60", "status=none"]);
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", &format!("write -s {} 0 60M", noise.display()), disk.to_str().unwrap()],
    );
    let child = site
        .client("backup", &["backup", "big"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once the backup's job record says it is transferring.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let transferring = || {
        std::fs::read_dir(site.lab.path("vault/jobs")).into_iter().flatten().flatten().any(|e| {
            std::fs::read_to_string(e.path())
                .is_ok_and(|t| t.contains("\"transfer\"") && t.contains("in-progress"))
        })
    };
    while !transferring() {
        assert!(std::time::Instant::now() < deadline, "the backup never reached its transfer phase");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(site.server.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backup survived its server");
    assert!(err.contains("vault server did not answer"), "{err}");

    site.start();
    let points: serde_json::Value =
        serde_json::from_str(&site.ok("admin", &["points", "big", "--json"])).unwrap();
    assert_eq!(points.as_array().unwrap().len(), 0, "a point was left by the killed backup");
    site.ok("backup", &["backup", "big"]);
    assert!(site.restores_bit_exact("big", &disk));
}

#[test]
fn a_client_waits_out_a_server_restart() {
    let mut site = Site::new();
    let disk = site.vm("web", 0x61, 8);
    let server = site.server.as_mut().unwrap();
    let listen = server.url.trim_start_matches("https://").to_string();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let client =
        site.client("backup", &["backup", "web"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
    std::thread::sleep(std::time::Duration::from_secs(1));
    site.start_on(&listen);
    let out = client.unwrap().wait_with_output().unwrap();
    assert!(out.status.success(), "the backup gave up: {}", String::from_utf8_lossy(&out.stderr));
    assert!(site.restores_bit_exact("web", &disk));
}

#[test]
fn a_marker_in_a_guest_disk_is_nowhere_in_the_servers_vault_or_log() {
    let site = Site::new();
    let marker = b"VMVAULT-SERVER-MARKER-5e1d";
    let text: Vec<u8> = marker.iter().copied().chain(*b"\n").cycle().take(6 << 20).collect();
    let src = site.lab.path("marker.bin");
    std::fs::write(&src, &text).unwrap();
    let disk = site.vm("secret", 0x61, 1);
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", &format!("write -s {} 1M 6M", src.display()), disk.to_str().unwrap()],
    );
    site.ok("backup", &["backup", "secret"]);
    site.ok("restore", &["files", "parts", "secret", "--point", "latest"]);
    let mut found = vec![];
    walk(&site.lab.path("vault"), &mut |path, bytes| {
        if bytes.windows(marker.len()).any(|w| w == marker) {
            found.push(path.display().to_string());
        }
    });
    assert!(found.is_empty(), "marker found in {found:?}");
    assert!(!log_of(site.server()).contains("VMVAULT-SERVER-MARKER"));
}

fn walk(dir: &Path, f: &mut impl FnMut(&Path, &[u8])) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, f);
        } else {
            f(&path, &std::fs::read(&path).unwrap());
        }
    }
}

/// schemathesis (a property-based API tester, installed by `.ci/run`) sends 50 generated
/// requests per operation of the OpenAPI document, with an admin token and with a
/// backup-operator token: not one gets a 5xx answer.
#[test]
fn generated_requests_never_get_a_server_error() {
    let site = Site::new();
    site.vm("web", 0x61, 4);
    site.ok("backup", &["backup", "web"]);
    let schema = format!("{}/api/v1/openapi.json", site.server().url);
    for token in ["admin", "backup"] {
        let out = Command::new("schemathesis")
            .args(["run", &schema, "--tls-verify", "false", "-n", "50", "-c", "not_a_server_error"])
            .args(["-H", &format!("Authorization: Bearer {}", site.secret(token))])
            .env("NO_COLOR", "1")
            .output()
            .unwrap_or_else(|e| panic!("schemathesis: {e} (install it with `pip install schemathesis`)"));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{token}: schemathesis found server errors:\n{report}");
        // The summary line: "N generated, N passed" (failures would be counted on it).
        let summary = report.lines().find(|l| l.contains(" generated, ")).unwrap_or_default();
        assert!(summary.trim_end().ends_with(" passed") && !summary.contains("failed"), "{token}:\n{report}");
    }
}
