//! `vmvault files …` on a backed-up disk with a GPT, an ext4 and a FAT partition.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vmvault"))
            .args(args)
            .env("VMVAULT_VAULT", self.path("vault"))
            .env("VMVAULT_PASSPHRASE", "files passphrase")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "vmvault {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

fn sh(cmd: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn files_parts_ls_cat_find_and_get_read_a_point_without_restoring_it() {
    let lab = Lab { dir: tempfile::tempdir().unwrap() };
    lab.ok(&["vault", "init"]);
    let src = lab.path("src");
    std::fs::create_dir_all(src.join("etc/nginx/sites")).unwrap();
    std::fs::write(src.join("etc/nginx/nginx.conf"), "worker_processes 4;\n").unwrap();
    std::fs::write(src.join("etc/nginx/sites/default.conf"), "listen 80;\n").unwrap();
    std::fs::write(src.join("etc/motd"), "welcome\n").unwrap();
    let img = lab.path("web.raw");
    sh("truncate", &["-s", "96M", s(&img)], None);
    sh(
        "sfdisk",
        &["-q", s(&img)],
        Some(
            "label: gpt\nstart=2048, size=131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\nstart=133120, size=59392, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=efi\n",
        ),
    );
    sh("mkfs.ext4", &["-F", "-q", "-L", "root", "-d", s(&src), "-E", "offset=1048576", s(&img), "64M"], None);
    sh("mkfs.vfat", &["-F", "16", "-n", "ESP", "--offset", "133120", s(&img), "29696"], None);
    let boot = lab.path("grub.cfg");
    std::fs::write(&boot, "set timeout=5\n").unwrap();
    sh("mcopy", &["-i", &format!("{}@@{}", img.display(), 133120 * 512), s(&boot), "::/grub.cfg"], None);
    lab.ok(&["vm", "add", "web", "--disk", &format!("vda={}", img.display())]);
    lab.ok(&["backup", "web"]);

    let parts: serde_json::Value =
        serde_json::from_str(&lab.ok(&["files", "parts", "web", "--json"])).unwrap();
    assert_eq!(parts["table"], "gpt");
    let fs: Vec<(u64, &str, &str)> = parts["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["number"].as_u64().unwrap(), v["fs"].as_str().unwrap(), v["label"].as_str().unwrap()))
        .collect();
    assert_eq!(fs, [(1, "ext", "root"), (2, "fat", "ESP")]);

    assert_eq!(lab.ok(&["files", "ls", "web", "/etc"]), "motd\nnginx/\n");
    let long = lab.ok(&["files", "ls", "web", "--long", "/etc/motd"]);
    assert!(long.starts_with("-rw-") && long.trim_end().ends_with(" motd"), "{long}");
    assert_eq!(lab.ok(&["files", "cat", "web", "/etc/nginx/nginx.conf"]), "worker_processes 4;\n");
    assert_eq!(lab.ok(&["files", "cat", "web", "--partition", "2", "/grub.cfg"]), "set timeout=5\n");
    assert_eq!(
        lab.ok(&["files", "find", "web", "--name", "*.conf"]),
        "/etc/nginx/nginx.conf\n/etc/nginx/sites/default.conf\n"
    );

    let out =
        lab.ok(&["files", "get", "web", "--point", "latest", "/etc/nginx", "--to", s(&lab.path("got"))]);
    assert!(out.contains("Extracted 2 files, 2 directories"), "{out}");
    assert_eq!(std::fs::read(lab.path("got/nginx/sites/default.conf")).unwrap(), b"listen 80;\n");
    let jobs: serde_json::Value = serde_json::from_str(&lab.ok(&["jobs", "--vm", "web", "--json"])).unwrap();
    assert_eq!(jobs.as_array().unwrap().last().unwrap()["operation"], "file-restore");

    let missing = lab.run(&["files", "cat", "web", "/etc/shadow"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("/etc/shadow") && err.contains("no such file"), "{err}");
}
