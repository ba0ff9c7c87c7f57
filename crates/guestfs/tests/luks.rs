//! LUKS volumes made by cryptsetup, opened in process with the passphrase: LUKS2 encrypted by
//! `cryptsetup reencrypt --encrypt` with PBKDF2, Argon2i and Argon2id keyslots, and LUKS1
//! formatted by `cryptsetup luksFormat` (its data encrypted by OpenSSL's AES-XTS with the
//! volume key cryptsetup dumps). The ext4 inside each reads back as its source tree; a wrong
//! passphrase is refused by name.

use std::path::Path;
use std::sync::Arc;

use guestfs::extract::extract;
use guestfs::{BlockReader, FsKind, GuestDisk, Passphrase};
use testkit::guest_disks::{differences, luks1_encrypt, luks2_encrypt, run, tree};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn layout(image: &Path, passphrase: &[u8]) -> guestfs::Layout {
    let reader: Arc<dyn BlockReader> = Arc::new(std::fs::File::open(image).unwrap());
    let disk = GuestDisk { label: "vda".into(), reader };
    guestfs::scan_unlocking(&[disk], 0, &[Passphrase::new(passphrase.to_vec())]).unwrap()
}

fn inner_ext4(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("usr/lib")).unwrap();
    std::fs::write(src.join("etc/hostname"), "secret-host\n").unwrap();
    std::fs::write(src.join("usr/lib/os-release"), "ID=test\n").unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", src.join("etc/os-release")).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    std::fs::write(src.join("etc/data.bin"), data).unwrap();
    let image = dir.join("inner.ext4");
    run("mkfs.ext4", &["-q", "-F", "-L", "cryptroot", "-d", s(&src), s(&image), "24M"]);
    (src, image)
}

fn check_opens(image: &Path, src: &Path, out: &Path, version: &str) {
    let found = layout(image, b"correct horse");
    let volume = &found.volumes[0];
    assert_eq!((volume.fs, volume.label.as_deref(), volume.os_root), (FsKind::Ext4, Some("cryptroot"), true));
    assert!(
        volume.note.as_deref().is_some_and(|n| n.starts_with(&format!("inside {version} "))),
        "{volume:?}"
    );
    let fs = guestfs::open_volume(found.default_volume().unwrap()).unwrap();
    let report = extract(fs.as_ref(), &[b"/etc".to_vec(), b"/usr".to_vec()], out).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    let mut want = tree(src);
    let got = tree(out);
    want.retain(|k, _| got.contains_key(k) || !k.starts_with("lost+found"));
    let diff = differences(&want, &got);
    assert!(diff.is_empty(), "{version}: differs from its source:\n{}", diff.join("\n"));

    let wrong = layout(image, b"wrong horse");
    let volume = &wrong.volumes[0];
    assert_eq!(volume.fs, FsKind::Luks);
    let note = volume.note.clone().unwrap_or_default();
    assert!(note.contains("opens none of its 1 keyslots"), "{note}");
    let err = wrong.default_volume().unwrap_err().to_string();
    assert!(err.contains("crypto_LUKS") && err.contains("opens none"), "{err}");
}

#[test]
fn luks2_volumes_cryptsetup_encrypted_open_with_pbkdf2_argon2i_and_argon2id() {
    let dir = tempfile::tempdir().unwrap();
    let (src, inner) = inner_ext4(dir.path());
    for kdf in ["pbkdf2", "argon2i", "argon2id"] {
        let image = dir.path().join(format!("{kdf}.luks"));
        luks2_encrypt(&inner, &image, b"correct horse", kdf);
        let dump = run("cryptsetup", &["luksDump", s(&image)]);
        assert!(dump.contains(&format!("PBKDF:      {kdf}")), "{dump}");
        check_opens(&image, &src, &dir.path().join(format!("out-{kdf}")), "LUKS2");
        std::fs::remove_file(&image).unwrap();
    }
}

#[test]
fn a_luks1_volume_cryptsetup_formatted_opens_with_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let (src, inner) = inner_ext4(dir.path());
    let image = dir.path().join("v1.luks");
    luks1_encrypt(&inner, &image, b"correct horse");
    check_opens(&image, &src, &dir.path().join("out"), "LUKS1");
}

#[test]
fn lvm_inside_luks_as_ubuntu_encrypts_it_reads_its_root_lv() {
    use testkit::guest_disks::{Loop, lv_create, lv_extent, lvm, vg_create};
    let dir = tempfile::tempdir().unwrap();
    let (src, root_fs) = inner_ext4(dir.path());
    // A PV image with VG "ubuntu-crypt" and its root LV holding the ext4, then encrypted whole.
    let pv_image = dir.path().join("pv.img");
    run("truncate", &["-s", "64M", s(&pv_image)]);
    {
        let pv = Loop::attach(&pv_image, 0, 64 << 20);
        vg_create("ubuntu-crypt", &[&pv]);
        lv_create("ubuntu-crypt", "root", "24M", &[]);
        let (at, _) = lv_extent("ubuntu-crypt", "root", &pv);
        run(
            "dd",
            &[
                &format!("if={}", s(&root_fs)),
                &format!("of={}", s(&pv_image)),
                "bs=1M",
                &format!("seek={}", at >> 20),
                "conv=notrunc",
                "status=none",
            ],
        );
        lvm("vgchange", &["-q", "--driverloaded", "n", "-an", "ubuntu-crypt"]);
    }
    let image = dir.path().join("crypt.luks");
    luks2_encrypt(&pv_image, &image, b"correct horse", "pbkdf2");
    std::fs::remove_file(&pv_image).unwrap();

    let found = layout(&image, b"correct horse");
    let kinds: Vec<(&str, FsKind, bool)> =
        found.volumes.iter().map(|v| (v.id.as_str(), v.fs, v.os_root)).collect();
    assert_eq!(kinds, [("0", FsKind::LvmMember, false), ("ubuntu-crypt/root", FsKind::Ext4, true)]);
    let fs = guestfs::open_volume(found.default_volume().unwrap()).unwrap();
    let out = dir.path().join("out");
    extract(fs.as_ref(), &[b"/etc".to_vec()], &out).unwrap();
    let mut want = tree(&src);
    want.retain(|k, _| k.starts_with("etc"));
    assert!(differences(&want, &tree(&out)).is_empty());
}
