//! `vmvault files …` on a backed-up disk with a GPT, an ext4 and a FAT partition.

use std::path::Path;
use std::process::Command;

mod common;

use common::Lab;

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
    let lab = Lab::local(Some("files passphrase"));
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
    let fs: Vec<(&str, &str, &str, &str)> = parts["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let field = |k: &str| v[k].as_str().unwrap();
            (field("id"), field("part_type"), field("fs"), field("label"))
        })
        .collect();
    assert_eq!(fs, [("1", "Linux filesystem", "ext4", "root"), ("2", "Microsoft basic data", "vfat", "ESP")]);
    let table = lab.ok(&["files", "parts", "web"]);
    assert!(table.contains(": a GPT partition table\n"), "{table}");

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
    assert!(out.contains("Extracted 2 files, 0 hard links, 0 streams, 2 directories"), "{out}");
    assert_eq!(std::fs::read(lab.path("got/nginx/sites/default.conf")).unwrap(), b"listen 80;\n");
    let jobs: serde_json::Value = serde_json::from_str(&lab.ok(&["jobs", "--vm", "web", "--json"])).unwrap();
    assert_eq!(jobs.as_array().unwrap().last().unwrap()["operation"], "file-restore");

    let missing = lab.run(&["files", "cat", "web", "/etc/shadow"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("/etc/shadow") && err.contains("no such file"), "{err}");
}

fn wait_for_socket(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(std::time::Instant::now() < deadline, "vmvault mount never listened on {}", path.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn mount_serves_a_point_over_nbd_to_qemu_tools_and_an_overlay() {
    let lab = Lab::local(Some("files passphrase"));
    lab.ok(&["vault", "init"]);
    let img = lab.path("app.raw");
    sh("truncate", &["-s", "48M", s(&img)], None);
    for (pattern, at) in [(0x11, "0"), (0x22, "4M"), (0x33, "20M"), (0x44, "44M")] {
        sh("qemu-io", &["-f", "raw", "-c", &format!("write -P {pattern} {at} 4M"), s(&img)], None);
    }
    lab.ok(&["vm", "add", "app", "--disk", &format!("vda={}", img.display())]);
    lab.ok(&["backup", "app"]);

    let sock = lab.path("nbd.sock");
    let mut server = Command::new(env!("CARGO_BIN_EXE_vmvault"))
        .args(["mount", "app", "--point", "latest", "--nbd", &format!("unix:{}", sock.display())])
        .env("VMVAULT_VAULT", lab.path("vault"))
        .env("VMVAULT_PASSPHRASE", "files passphrase")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_socket(&sock);
    let uri = format!("nbd+unix:///?socket={}", sock.display());

    assert!(qemu_img(&["info", &uri]).contains("48 MiB"));
    assert_eq!(
        qemu_img(&["compare", "-f", "raw", "-F", "raw", &uri, s(&img)]).trim(),
        "Images are identical."
    );
    // The same as the disk a restore writes.
    let restored = lab.path("restored.qcow2");
    lab.ok(&[
        "restore",
        "disk",
        "app",
        "--point",
        "latest",
        "--disk",
        "vda",
        "--to",
        s(&restored),
        "--format",
        "qcow2",
    ]);
    assert_eq!(qemu_img(&["compare", "-f", "raw", &uri, s(&restored)]).trim(), "Images are identical.");
    // Zero chunks are reported as holes (BLOCK_STATUS base:allocation).
    let map: serde_json::Value =
        serde_json::from_str(&qemu_img(&["map", "--output=json", "-f", "raw", &uri])).unwrap();
    let zeros: u64 = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["zero"] == true)
        .map(|e| e["length"].as_u64().unwrap())
        .sum();
    assert_eq!(zeros, 32 << 20, "{map}");
    // convert reads it whole.
    let copy = lab.path("copy.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", &uri, s(&copy)]);
    assert_eq!(qemu_img(&["compare", "-F", "raw", s(&copy), s(&img)]).trim(), "Images are identical.");
    // qemu-nbd re-exports it.
    let sock2 = lab.path("re.sock");
    sh("qemu-nbd", &["-r", "-f", "raw", "--fork", "-k", s(&sock2), &uri], None);
    let uri2 = format!("nbd+unix:///?socket={}", sock2.display());
    assert_eq!(
        qemu_img(&["compare", "-f", "raw", "-F", "raw", &uri2, s(&img)]).trim(),
        "Images are identical."
    );
    // A qcow2 overlay on it is writable: how a VM boots from a backup at once.
    let overlay = lab.path("overlay.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-F", "raw", "-b", &uri, s(&overlay)]);
    sh("qemu-io", &["-f", "qcow2", "-c", "write -P 0x99 4M 64k", s(&overlay)], None);
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", "read -P 0x99 4M 64k", "-c", "read -P 0x22 5M 1M", s(&overlay)],
        None,
    );
    // Writes to the export itself are refused.
    let write = Command::new("qemu-io").args(["-f", "raw", "-c", "write 0 4k", &uri]).output().unwrap();
    assert!(!write.status.success() || String::from_utf8_lossy(&write.stdout).contains("failed"));

    unsafe {
        libc::kill(server.id() as i32, libc::SIGTERM);
    }
    server.wait().unwrap();
    assert!(!sock.exists(), "the socket was left behind");

    // Loopback TCP works the same.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_vmvault"))
        .args(["mount", "app", "--nbd", &format!("tcp:127.0.0.1:{port}")])
        .env("VMVAULT_VAULT", lab.path("vault"))
        .env("VMVAULT_PASSPHRASE", "files passphrase")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "no TCP listener");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let tcp = format!("nbd://127.0.0.1:{port}");
    assert_eq!(
        qemu_img(&["compare", "-f", "raw", "-F", "raw", &tcp, s(&img)]).trim(),
        "Images are identical."
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn an_encrypted_root_opens_with_its_luks_passphrase_and_nothing_else_is_shown_without_it() {
    use testkit::guest_disks::{differences, luks2_encrypt, partition, run, tree};
    let lab = Lab::local(Some("files passphrase"));
    lab.ok(&["vault", "init"]);
    // The root filesystem, as an image, encrypted by cryptsetup into a LUKS2 volume.
    let src = lab.path("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("usr/lib")).unwrap();
    std::fs::write(src.join("etc/hostname"), "vault-host\n").unwrap();
    std::fs::write(src.join("usr/lib/os-release"), "ID=test\n").unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", src.join("etc/os-release")).unwrap();
    std::fs::write(src.join("etc/shadow"), "root:$6$secret:19000::::::\n").unwrap();
    // Metadata a root carries, copied into the image by mkfs.ext4 -d: an SELinux label, an
    // ACL with a named user, a file capability.
    run(
        "setfattr",
        &["-n", "security.selinux", "-v", "system_u:object_r:shadow_t:s0", s(&src.join("etc/shadow"))],
    );
    run("setfacl", &["-m", "u:1001:r--", s(&src.join("etc/hostname"))]);
    std::fs::write(src.join("usr/lib/ping"), "not really\n").unwrap();
    run("setcap", &["cap_net_raw+ep", s(&src.join("usr/lib/ping"))]);
    let root = lab.path("root.ext4");
    run("mkfs.ext4", &["-q", "-F", "-d", s(&src), s(&root), "32M"]);
    let luks = lab.path("root.luks");
    luks2_encrypt(&root, &luks, b"open sesame", "argon2id");
    // The disk: ESP, an ext4 /boot, and the LUKS2 partition written in place.
    let img = lab.path("crypt.raw");
    run("truncate", &["-s", "128M", s(&img)]);
    let parts = partition(
        &img,
        "label: gpt\nstart=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         size=32768, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
         type=CA7D7CCB-63ED-4C53-861C-1742536059CC\n",
    );
    run("mkfs.vfat", &["-F", "16", "--offset", &(parts[0].0 / 512).to_string(), s(&img), "32768"]);
    run("mkfs.ext4", &["-q", "-F", "-L", "boot", "-E", &format!("offset={}", parts[1].0), s(&img), "16M"]);
    run(
        "dd",
        &[
            &format!("if={}", s(&luks)),
            &format!("of={}", s(&img)),
            "bs=1M",
            &format!("seek={}", parts[2].0 >> 20),
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    lab.ok(&["vm", "add", "crypt", "--disk", &format!("vda={}", img.display())]);
    lab.ok(&["backup", "crypt"]);

    // Without the passphrase: an error naming the LUKS partition, never the ESP or /boot.
    let err = lab.fails(&["files", "cat", "crypt", "/etc/hostname"]);
    assert!(err.contains("3 is crypto_LUKS") && err.contains("no passphrase was given"), "{err}");
    assert!(err.contains("--luks-passphrase-file") && err.contains("--partition"), "what to do: {err}");
    let parts_out = lab.ok(&["files", "parts", "crypt"]);
    assert!(parts_out.contains("Linux LUKS") && parts_out.contains("crypto_LUKS"), "{parts_out}");

    // With it (the file ends in a newline, as `echo` writes it): the root's files.
    let key = lab.path("luks.pass");
    std::fs::write(&key, "open sesame\n").unwrap();
    let k = s(&key);
    assert_eq!(
        lab.ok(&["files", "cat", "crypt", "--luks-passphrase-file", k, "/etc/hostname"]),
        "vault-host\n"
    );
    assert_eq!(
        lab.ok(&["files", "cat", "crypt", "--luks-passphrase-file", k, "/etc/os-release"]),
        "ID=test\n"
    );
    let parts_out = lab.ok(&["files", "parts", "crypt", "--luks-passphrase-file", k]);
    assert!(parts_out.contains("ext4 (OS root)") && parts_out.contains("inside LUKS2"), "{parts_out}");
    let out = lab.path("restored");
    lab.ok(&["files", "get", "crypt", "--luks-passphrase-file", k, "/etc", "/usr", "--to", s(&out)]);
    let diff = differences(&tree(&src), &tree(&out));
    assert!(diff.is_empty(), "the encrypted root differs from its source:\n{}", diff.join("\n"));
    assert!(!tree(&out)["etc/shadow"].xattrs.is_empty(), "the label was restored");
    // Without extended attributes when asked so.
    let bare = lab.path("bare");
    lab.ok(&["files", "get", "crypt", "--luks-passphrase-file", k, "/etc", "--no-xattrs", "--to", s(&bare)]);
    assert!(tree(&bare).values().all(|n| n.xattrs.is_empty()), "--no-xattrs set attributes");
    // The JSON listing shows them: the label as text, the ACL as getfacl writes it.
    let listing: serde_json::Value = serde_json::from_str(&lab.ok(&[
        "files",
        "ls",
        "crypt",
        "--luks-passphrase-file",
        k,
        "/etc",
        "--json",
    ]))
    .unwrap();
    let entry = |name: &str| listing.as_array().unwrap().iter().find(|e| e["name"] == name).unwrap().clone();
    let shadow = entry("shadow");
    assert_eq!(shadow["xattrs"][0]["name"], "security.selinux", "{shadow}");
    assert_eq!(shadow["xattrs"][0]["text"], "system_u:object_r:shadow_t:s0", "{shadow}");
    let hostname = entry("hostname");
    let acl = hostname["xattrs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "system.posix_acl_access")
        .unwrap();
    assert_eq!(acl["acl"], "user::rw-,user:1001:r--,group::r--,mask::r--,other::r--", "{hostname}");
    assert_eq!(entry("os-release")["target"], "../usr/lib/os-release");
    assert!(hostname["links"] == 1 && hostname["inode"].as_u64().is_some(), "{hostname}");

    // A wrong passphrase is said to be wrong.
    std::fs::write(&key, "close sesame").unwrap();
    let err = lab.fails(&["files", "cat", "crypt", "--luks-passphrase-file", k, "/etc/hostname"]);
    assert!(err.contains("opens none of its 1 keyslots"), "{err}");
    // Nothing decrypted was written anywhere but where files were asked for.
    let vault_bytes: Vec<u8> = testkit::files_under(&lab.path("vault")).into_values().flatten().collect();
    assert!(!vault_bytes.windows(10).any(|w| w == b"vault-host"), "plaintext reached the vault");
}
