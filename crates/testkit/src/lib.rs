//! Real parts for tests (dev-dependency only): a real S3 endpoint, `moto_server`, on
//! loopback, started once per test process and killed with it; a slow network in front of
//! it ([`slow_link`]); a real QEMU ([`qemu`]).

pub mod guest;
pub mod guest_disks;
pub mod guest_tree;
pub mod libvirt;
pub mod qemu;
pub mod slow_link;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use vault::backend::S3Backend;

/// Credentials moto accepts (it checks none).
const ACCESS_KEY: &str = "testing";
const SECRET_KEY: &str = "testing";

/// moto's own server (what `moto_server` runs), with one request served at a time. moto
/// checks `If-Match`/`If-None-Match` and then writes without holding a lock (moto 5.2,
/// `s3/responses.py`), so two racing conditional PUTs can both succeed, which real S3 never
/// lets happen: the concurrent-writer tests lost an update about one run in three.
const SERIALISED_MOTO: &str = r#"
import sys, threading
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
def one_at_a_time(environ, start_response):
    with lock:
        return list(app(environ, start_response))
run_simple("127.0.0.1", int(sys.argv[1]), one_at_a_time, threaded=True)
"#;

/// A running moto S3 server.
pub struct Moto {
    endpoint: String,
}

/// The process's S3 endpoint, started on first use. The server gets SIGKILL when the test
/// process ends (it is started from a thread that lives as long as the process, with
/// `PR_SET_PDEATHSIG`), so no test leaves it running.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let port = free_port();
            let mut command = Command::new("python3");
            command.args(["-c", SERIALISED_MOTO, &port.to_string()]);
            command.stdout(Stdio::null()).stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; it only marks the child to die with us.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let started = command.spawn().map(|child| (child, port));
            let _ = tx.send(started.map(|(_, port)| port).map_err(|e| e.to_string()));
            loop {
                std::thread::park();
            }
        });
        let port = match rx.recv() {
            Ok(Ok(port)) => port,
            Ok(Err(e)) => {
                panic!("moto's server did not start ({e}); install it with `pip install 'moto[server]'`")
            }
            Err(e) => panic!("moto_server starter thread: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on port {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { endpoint: format!("http://127.0.0.1:{port}") }
    })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

impl Moto {
    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A new, empty bucket with a name unique in this process.
    pub fn new_bucket(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("vault-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let status = self.request("PUT", &format!("/{name}"));
        assert!(status.starts_with("HTTP/1.1 200"), "creating bucket {name}: {status}");
        name
    }

    /// The `AWS_*` settings that point a vault at this endpoint.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// A backend on `s3://BUCKET/PREFIX` of this endpoint.
    pub fn backend(&self, url: &str) -> Arc<S3Backend> {
        let settings = self.settings();
        let lookup = |name: &str| settings.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        Arc::new(S3Backend::from_url_with(url, lookup).expect("S3 backend on moto"))
    }

    /// A vault location in a new bucket: `s3://BUCKET/vault`.
    pub fn new_vault_url(&self) -> String {
        format!("s3://{}/vault", self.new_bucket())
    }

    /// One unsigned request (moto checks no signatures); returns the status line.
    fn request(&self, method: &str, path: &str) -> String {
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).expect("connect to moto_server");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("send to moto_server");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.lines().next().unwrap_or_default().to_string()
    }
}

/// Every file under `dir` with its bytes, by path relative to `dir`: to show that something
/// left a directory exactly as it was.
pub fn files_under(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).expect("read a test directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
                out.insert(name, std::fs::read(&path).expect("read a test file"));
            }
        }
    }
    out
}

/// A tmpfs mounted at a path (the tests run as root), unmounted when dropped: a small file
/// system that really fills, for the kernel's own ENOSPC.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mount a tmpfs of `size` (`48m`, `1G`) at `at`, made if missing.
    pub fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("make the mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs at {} (the tests run as root)", at.display());
        Tmpfs(at.to_path_buf())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
