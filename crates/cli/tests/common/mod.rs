//! The operator's seat shared by the CLI tests: a scratch directory, a vault (a directory in
//! it, or an S3 bucket on the test process's moto_server) and the `vmvault` binary.
#![allow(dead_code)]

pub mod libvirt;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Lab {
    pub dir: tempfile::TempDir,
    /// `--vault` for every command.
    pub vault: String,
    passphrase: Option<&'static str>,
}

impl Lab {
    /// A vault in `<dir>/vault`, unlocked with `passphrase` (none: unencrypted), not yet created.
    pub fn local(passphrase: Option<&'static str>) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault").display().to_string();
        Lab { dir, vault, passphrase }
    }

    /// A vault in a new bucket of the test process's S3 endpoint, not yet created.
    pub fn s3(passphrase: Option<&'static str>) -> Lab {
        Lab { vault: testkit::moto().new_vault_url(), ..Lab::local(passphrase) }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmvault"));
        cmd.args(args)
            .env("VMVAULT_VAULT", &self.vault)
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .env_remove("VMVAULT_NEW_PASSPHRASE");
        if self.vault.starts_with("s3://") {
            cmd.envs(testkit::moto().settings());
        }
        match self.passphrase {
            Some(passphrase) => cmd.env("VMVAULT_PASSPHRASE", passphrase),
            None => cmd.env_remove("VMVAULT_PASSPHRASE"),
        };
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "vmvault {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run a command that must fail with a one-line error; returns it.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "vmvault {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        stderr_line(&out)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
}

pub fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `qemu-img compare`: true when both images hold the same content.
pub fn same(a: &Path, b: &Path) -> bool {
    Command::new("qemu-img").args(["compare", "-q"]).arg(a).arg(b).status().unwrap().success()
}

/// The one line a failed command printed.
/// A failed command's stderr: one error line, and at most one hint line after it (what to do,
/// kept apart from what happened).
pub fn stderr_line(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = text.trim_end().lines().collect();
    assert!(
        lines.len() == 1 || (lines.len() == 2 && lines[1].starts_with("vmvault: hint: ")),
        "one line: {text:?}"
    );
    text
}
