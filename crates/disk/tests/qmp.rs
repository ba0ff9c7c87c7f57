//! QMP and guest-agent clients against a real qemu-system-x86_64 (TCG, no guest OS).

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use disk::qmp::{GuestAgent, QmpClient};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// A QEMU with one qcow2 disk in its own directory; killed on drop.
struct RunningVm {
    dir: tempfile::TempDir,
    _qemu: testkit::qemu::Qemu,
}

impl RunningVm {
    fn start() -> RunningVm {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.qcow2");
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "64M"])
            .status()
            .unwrap();
        assert!(ok.success());
        let qemu = testkit::qemu::Qemu::start(dir.path(), &img);
        RunningVm { dir, _qemu: qemu }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn qmp_negotiates_runs_commands_and_delivers_events() {
    let vm = RunningVm::start();
    let mut qmp = QmpClient::connect(&vm.path("qmp.sock"), T).unwrap();
    assert!(qmp.version.starts_with(|c: char| c.is_ascii_digit()), "{}", qmp.version);
    assert_eq!(qmp.execute("query-status", json!({}), T).unwrap()["status"], "running");
    let nodes = qmp.execute("query-named-block-nodes", json!({}), T).unwrap();
    assert!(nodes.as_array().unwrap().iter().any(|n| n["node-name"] == "disk0"), "{nodes}");
    // A guest write, through the device as the guest would do it.
    let hmp =
        json!({ "command-line": "qemu-io -d /machine/peripheral/vda/virtio-backend \"write -P 0x5a 0 1M\"" });
    qmp.execute("human-monitor-command", hmp, T).unwrap();
    let stats = qmp.execute("query-blockstats", json!({}), T).unwrap();
    // qemu-io bypasses the byte counters but moves the device's highest written offset.
    assert_eq!(stats[0]["stats"]["wr_highest_offset"], 1 << 20, "{stats}");

    qmp.execute("stop", json!({}), T).unwrap();
    assert_eq!(qmp.wait_event("STOP", T).unwrap().name, "STOP");
    qmp.execute("cont", json!({}), T).unwrap();
    qmp.wait_event("RESUME", T).unwrap();

    let err = qmp.execute("no-such-command", json!({}), T).unwrap_err().to_string();
    assert!(
        err.contains("qmp.sock") && err.contains("no-such-command") && err.contains("not been found"),
        "{err}"
    );
    // The connection is still usable after an error.
    assert_eq!(qmp.execute("query-status", json!({}), T).unwrap()["status"], "running");
}

/// A monitor someone else holds (libvirt holds its domains' monitors) never greets a second
/// client: the error says so and names what to do, instead of hanging for the whole timeout.
#[test]
fn a_monitor_held_by_another_client_is_named_so() {
    let vm = RunningVm::start();
    let _holder = QmpClient::connect(&vm.path("qmp.sock"), T).unwrap();
    let err = QmpClient::connect(&vm.path("qmp.sock"), T).err().unwrap().to_string();
    assert!(err.contains("another client holds this monitor") && err.contains("import-libvirt"), "{err}");
}

#[test]
fn a_guest_agent_without_a_guest_is_reported_absent() {
    let vm = RunningVm::start();
    let err = GuestAgent::connect(&vm.path("qga.sock"), Duration::from_secs(2)).err().unwrap().to_string();
    assert!(err.contains("qga.sock") && err.contains("did not answer"), "{err}");
}

fn serve_once(path: &Path, greeting: &'static str) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            use std::io::Write;
            let _ = stream.write_all(greeting.as_bytes());
            std::thread::sleep(Duration::from_secs(3));
        }
    })
}

#[test]
fn a_dead_or_wrong_socket_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let short = Duration::from_millis(500);
    let err = QmpClient::connect(&dir.path().join("none.sock"), short).err().unwrap().to_string();
    assert!(err.contains("none.sock") && err.contains("nothing listens there"), "{err}");

    let _garbage = serve_once(&dir.path().join("garbage.sock"), "hello there\n");
    let err = QmpClient::connect(&dir.path().join("garbage.sock"), short).err().unwrap().to_string();
    assert!(err.contains("not JSON"), "{err}");

    let _other = serve_once(&dir.path().join("other.sock"), "{\"hello\": 1}\n");
    let err = QmpClient::connect(&dir.path().join("other.sock"), short).err().unwrap().to_string();
    assert!(err.contains("not a QMP socket"), "{err}");

    let _silent = serve_once(&dir.path().join("silent.sock"), "");
    let err = QmpClient::connect(&dir.path().join("silent.sock"), short).err().unwrap().to_string();
    assert!(err.contains("no QMP greeting"), "{err}");
}

fn hmp_write(qmp: &mut QmpClient, pattern: u8, offset: &str, len: &str) {
    let line =
        format!("qemu-io -d /machine/peripheral/vda/virtio-backend \"write -P {pattern} {offset} {len}\"");
    qmp.execute("human-monitor-command", json!({ "command-line": line }), T).unwrap();
}

fn read_export(socket: &Path, export: &str) -> Vec<u8> {
    use disk::BlockSource;
    let mut source = disk::nbd::NbdSource::connect_named(socket, export, None).unwrap();
    let size = source.size();
    let mut out = vec![0u8; size as usize];
    for (i, piece) in out.chunks_mut(4 << 20).enumerate() {
        source.read_at(i as u64 * (4 << 20), piece).unwrap();
    }
    out
}

#[test]
fn a_live_snapshot_shows_the_disk_as_it_was_while_the_guest_writes_on() {
    let vm = RunningVm::start();
    let mut guest = QmpClient::connect(&vm.path("guest.sock"), T).unwrap();
    hmp_write(&mut guest, 0x11, "0", "1M");
    hmp_write(&mut guest, 0x22, "8M", "1M");

    // A bitmap a crashed backup left behind, and one of the operator's own.
    for name in ["vmvault-left-by-a-crash", "operator-bitmap"] {
        let add = json!({ "node": "disk0", "name": name, "persistent": true });
        guest.execute("block-dirty-bitmap-add", add, T).unwrap();
    }
    let qmp = QmpClient::connect(&vm.path("qmp.sock"), T).unwrap();
    let work = vm.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let snapshot = disk::live::LiveSnapshot::start(
        qmp,
        &[(vm.path("disk.qcow2"), None, true)],
        "vmvault-p1",
        disk::scratch::WorkDir::create(&work, "scratch").unwrap(),
        disk::scratch::WorkDir::create(&work, "sockets").unwrap(),
        T,
    )
    .unwrap();
    // The guest writes on: over old data, and somewhere new.
    hmp_write(&mut guest, 0x33, "0", "512k");
    hmp_write(&mut guest, 0x44, "20M", "1M");

    let seen = read_export(snapshot.socket(), &snapshot.disks()[0].export);
    let mut expected = vec![0u8; 64 << 20];
    expected[..1 << 20].fill(0x11);
    expected[8 << 20..9 << 20].fill(0x22);
    assert!(seen == expected, "the export does not show the disk as it was at the snapshot");
    assert!(snapshot.finish(true, "vmvault-p1", "vmvault-").is_empty());

    // The new bitmap carries on and saw exactly the writes after the snapshot.
    let mut qmp = QmpClient::connect(&vm.path("qmp.sock"), T).unwrap();
    let (node, bitmaps) = disk::live::find_node(&mut qmp, &vm.path("disk.qcow2"), T).unwrap();
    assert_eq!(node, "disk0");
    let mut names: Vec<&str> = bitmaps.iter().map(|b| b.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["operator-bitmap", "vmvault-p1"], "stale vmvault bitmaps are removed, others kept");
    assert!(bitmaps.iter().all(|b| b.recording));
    assert!(!work.join("fleece-0.qcow2").exists(), "the overlay was left behind");
}
