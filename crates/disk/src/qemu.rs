//! QEMU's command-line tools, for what vmvault does not do in-process: persistent dirty
//! bitmaps (qemu-img bitmap), read-only NBD exports of an image (qemu-nbd), creating images.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{DiskError, Result};
use crate::image::DiskFormat;

/// A persistent dirty bitmap stored in a qcow2 image.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Bitmap {
    /// Its name.
    pub name: String,
    /// Bytes per bit.
    pub granularity: u64,
    /// qemu's flags: `auto` (tracks writes), `in-use` (not closed cleanly: contents unknown).
    #[serde(default)]
    pub flags: Vec<String>,
}

impl Bitmap {
    /// Whether the bitmap can be trusted to hold every write since it was added.
    pub fn is_consistent(&self) -> bool {
        self.flags.iter().any(|f| f == "auto") && !self.flags.iter().any(|f| f == "in-use")
    }
}

fn run(tool: &str, args: &[&std::ffi::OsStr], target: &Path) -> Result<String> {
    let out = Command::new(tool).args(args).stdin(Stdio::null()).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DiskError::ToolMissing { tool: tool.into() },
        _ => DiskError::io(target, e),
    })?;
    if !out.status.success() {
        // A tool that failed on an image another process holds failed for that reason: ask
        // the lock itself rather than reading the tool's words.
        if crate::lock::is_in_use(target).unwrap_or(false) {
            return Err(DiskError::InUse { path: target.to_path_buf() });
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ");
        return Err(DiskError::Tool { tool: tool.into(), target: target.display().to_string(), message });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// The persistent bitmaps of a qcow2 image.
pub fn bitmaps(image: &Path) -> Result<Vec<Bitmap>> {
    let json =
        run("qemu-img", &[os("info"), os("--output=json"), os("-f"), os("qcow2"), image.as_os_str()], image)?;
    #[derive(Deserialize)]
    struct Info {
        #[serde(rename = "format-specific")]
        format_specific: Option<FormatSpecific>,
    }
    #[derive(Deserialize)]
    struct FormatSpecific {
        data: Option<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(default)]
        bitmaps: Vec<Bitmap>,
    }
    let info: Info = serde_json::from_str(&json)
        .map_err(|e| DiskError::image(image, format!("unexpected qemu-img info output: {e}")))?;
    Ok(info.format_specific.and_then(|f| f.data).map(|d| d.bitmaps).unwrap_or_default())
}

/// Add a persistent dirty bitmap; from now on every write to the image marks it.
pub fn add_bitmap(image: &Path, name: &str) -> Result<()> {
    run("qemu-img", &[os("bitmap"), os("--add"), os("-f"), os("qcow2"), image.as_os_str(), os(name)], image)
        .map(|_| ())
}

/// Remove a persistent dirty bitmap.
pub fn remove_bitmap(image: &Path, name: &str) -> Result<()> {
    run(
        "qemu-img",
        &[os("bitmap"), os("--remove"), os("-f"), os("qcow2"), image.as_os_str(), os(name)],
        image,
    )
    .map(|_| ())
}

/// Create an empty image of `size` bytes.
pub fn create_image(path: &Path, format: DiskFormat, size: u64) -> Result<()> {
    let size = size.to_string();
    run(
        "qemu-img",
        &[os("create"), os("-q"), os("-f"), os(format.as_str()), path.as_os_str(), os(&size)],
        path,
    )
    .map(|_| ())
}

/// Clients an export serves at once, besides the one that reads the bitmap.
pub const NBD_CLIENTS: usize = 4;

/// A read-only export of an image by qemu-nbd on a unix socket, stopped when dropped.
pub struct NbdExport {
    child: Child,
    socket: PathBuf,
}

impl NbdExport {
    /// Export `image` read-only; with `bitmap`, also as the context `qemu:dirty-bitmap:NAME`.
    pub fn start(image: &Path, format: DiskFormat, bitmap: Option<&str>, socket: &Path) -> Result<Self> {
        let mut cmd = Command::new("qemu-nbd");
        cmd.arg("--read-only").arg("--format").arg(format.as_str()).arg("--socket").arg(socket);
        // One connection reads the bitmap, NBD_CLIENTS more read data; the page cache stays on so
        // the kernel's readahead serves sequential runs.
        cmd.arg(format!("--shared={}", NBD_CLIENTS + 1));
        if let Some(name) = bitmap {
            cmd.arg("--bitmap").arg(name);
        }
        cmd.arg(image).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // If vmvault dies before any client connects, qemu-nbd must not live on holding the
        // image lock: the kernel kills it when the thread that started it is gone.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DiskError::ToolMissing { tool: "qemu-nbd".into() },
            _ => DiskError::io(image, e),
        })?;
        let mut export = NbdExport { child, socket: socket.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(20);
        // The socket file appears at bind(), before listen(): wait until it accepts, which
        // /proc/net/unix shows without connecting (a probe client leaving would end qemu-nbd).
        while !is_listening(socket) {
            if let Ok(Some(_)) = export.child.try_wait() {
                let mut message = String::new();
                if let Some(mut err) = export.child.stderr.take() {
                    let _ = err.read_to_string(&mut message);
                }
                return Err(DiskError::Tool {
                    tool: "qemu-nbd".into(),
                    target: image.display().to_string(),
                    message: message.trim().replace('\n', "; "),
                });
            }
            if Instant::now() > deadline {
                return Err(DiskError::Tool {
                    tool: "qemu-nbd".into(),
                    target: image.display().to_string(),
                    message: "not listening on its socket after 20 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(export)
    }

    /// The unix socket to connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// Whether a unix socket at `path` is listening (flag `__SO_ACCEPTCON` in /proc/net/unix).
fn is_listening(path: &Path) -> bool {
    const SO_ACCEPTCON: u32 = 0x0001_0000;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else { return path.exists() };
    let wanted = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[7..].join(" ") == wanted
            && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & SO_ACCEPTCON != 0)
    })
}

impl Drop for NbdExport {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
