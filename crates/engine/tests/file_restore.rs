//! Files out of recovery points: a real GPT + ext4 disk built with sfdisk and mkfs.ext4 -d,
//! backed up into an encrypted vault, browsed and extracted without restoring the disk.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use engine::files::PointDisk;
use guestfs::detect::FsKind;
use guestfs::extract::extract;

fn sfdisk(image: &Path, script: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", image.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_the_root_of_a_large_disk_reads_a_few_chunks_and_files_come_back_whole() {
    let lab = Lab::new(true).await;
    let src = lab.path("src");
    std::fs::create_dir_all(src.join("etc/ssh")).unwrap();
    std::fs::create_dir_all(src.join("home/ana")).unwrap();
    std::fs::write(src.join("etc/hostname"), "db01\n").unwrap();
    std::fs::write(src.join("etc/ssh/sshd_config"), "PermitRootLogin no\n".repeat(200)).unwrap();
    let photo: Vec<u8> = (0..9_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(src.join("home/ana/photo.raw"), &photo).unwrap();
    std::os::unix::fs::symlink("photo.raw", src.join("home/ana/latest")).unwrap();

    let image = lab.path("db01.raw");
    sh("truncate", &["-s", "2560M", image.to_str().unwrap()]);
    sfdisk(&image, "label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n");
    sh(
        "mkfs.ext4",
        &[
            "-F",
            "-q",
            "-L",
            "rootfs",
            "-d",
            src.to_str().unwrap(),
            "-E",
            "offset=1048576",
            image.to_str().unwrap(),
            "2500M",
        ],
    );
    lab.register("db01", &[("vda", &image)]).await;
    let point = lab.backup("db01").await;

    let disk = PointDisk::open(Arc::clone(&lab.vault), "db01", &point.point_id, None).await.unwrap();
    let reader = Arc::clone(&disk.reader);
    let (names, parts, chunks_for_ls) = tokio::task::spawn_blocking(move || {
        let (_, volumes) = disk.volumes().unwrap();
        let (volume, fs) = disk.filesystem(None).unwrap();
        assert_eq!((volume.number, volume.fs, volume.label.as_deref()), (1, FsKind::Ext, Some("rootfs")));
        let mut names: Vec<String> = fs.list(b"/").unwrap().iter().map(|e| e.display_name()).collect();
        names.sort();
        (names, volumes.len(), reader.chunks_fetched())
    })
    .await
    .unwrap();
    assert_eq!(names, ["etc", "home", "lost+found"]);
    assert_eq!(parts, 1);
    // A 2.5 GiB disk is 640 chunks; the table, superblock, root inode and root directory are
    // near its start.
    eprintln!("listing / of a 2.5 GiB disk fetched {chunks_for_ls} chunks");
    assert!(chunks_for_ls <= 4, "listing / fetched {chunks_for_ls} chunks");

    let disk = PointDisk::open(Arc::clone(&lab.vault), "db01", "latest", Some("vda")).await.unwrap();
    let dest = lab.path("restored-files");
    let report = tokio::task::spawn_blocking({
        let dest = dest.clone();
        move || {
            let (_, fs) = disk.filesystem(Some(1)).unwrap();
            extract(fs.as_ref(), &[b"/etc".to_vec(), b"/home".to_vec()], &dest).unwrap()
        }
    })
    .await
    .unwrap();
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(dest.join("home/ana/photo.raw")).unwrap(), photo);
    assert_eq!(
        std::fs::read(dest.join("etc/ssh/sshd_config")).unwrap(),
        std::fs::read(src.join("etc/ssh/sshd_config")).unwrap()
    );
    assert_eq!(std::fs::read_link(dest.join("home/ana/latest")).unwrap(), Path::new("photo.raw"));
}
