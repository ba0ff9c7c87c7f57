//! vmvault's read-only NBD server: fixed newstyle negotiation, `OPT_GO`/`OPT_INFO`, structured
//! replies (reads as data and hole chunks), and `BLOCK_STATUS` on `base:allocation` — enough
//! for `qemu-img`, `qemu-nbd` and QEMU itself to use a recovery point as a disk at once.
//! Every client gets its own thread; writes are refused with `EPERM`.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use super::proto::*;

/// What an export serves.
pub trait ExportSource: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Granularity of [`ExportSource::is_zero`] (the chunk size).
    fn granularity(&self) -> u64;
    /// Whether the granule holding `offset` is known to be all zeros (a hole).
    fn is_zero(&self, offset: u64) -> bool;
}

/// Largest read or status request served.
const MAX_REQUEST: u32 = 32 << 20;
/// Option payloads larger than this are refused (names and queries are short).
const MAX_OPTION: u32 = 64 << 10;
const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;
const META_CONTEXT_ID: u32 = 1;
const CMD_CACHE: u16 = 5;

/// Where to listen.
#[derive(Clone, Debug)]
pub enum Listen {
    /// A unix socket at this path (created; removed when the server stops).
    Unix(PathBuf),
    /// A TCP address (loopback is recommended: NBD has no authentication here).
    Tcp(String),
}

impl Listen {
    /// Parse `unix:PATH` or `tcp:HOST:PORT`.
    pub fn parse(text: &str) -> Option<Listen> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Some(Listen::Unix(PathBuf::from(path)));
        }
        text.strip_prefix("tcp:").map(|addr| Listen::Tcp(addr.to_string()))
    }
}

/// Serve `source` read-only under `name` until the listener fails. Each client runs on its
/// own thread; a client that misbehaves is disconnected without affecting the others.
pub fn serve(
    listen: &Listen,
    name: &str,
    source: Arc<dyn ExportSource>,
    ready: impl FnOnce(),
) -> io::Result<()> {
    match listen {
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path)?;
            let _cleanup = RemoveOnDrop(path.clone());
            ready();
            for stream in listener.incoming() {
                let stream = stream?;
                spawn_client(stream.try_clone()?, stream, name, &source);
            }
        }
        Listen::Tcp(addr) => {
            let listener = TcpListener::bind(addr)?;
            ready();
            for stream in listener.incoming() {
                let stream = stream?;
                let _ = stream.set_nodelay(true);
                spawn_client(stream.try_clone()?, stream, name, &source);
            }
        }
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn spawn_client<R: Read + Send + 'static, W: Write + Send + 'static>(
    r: R,
    w: W,
    name: &str,
    source: &Arc<dyn ExportSource>,
) {
    let (name, source) = (name.to_string(), Arc::clone(source));
    std::thread::spawn(move || {
        let mut client = Client {
            r: BufReader::new(r),
            w: BufWriter::new(w),
            name,
            source,
            structured: false,
            meta: false,
        };
        let _ = client.run();
    });
}

struct Client<R: Read, W: Write> {
    r: BufReader<R>,
    w: BufWriter<W>,
    name: String,
    source: Arc<dyn ExportSource>,
    structured: bool,
    meta: bool,
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

impl<R: Read, W: Write> Client<R, W> {
    fn run(&mut self) -> io::Result<()> {
        self.w.write_all(&NBDMAGIC.to_be_bytes())?;
        self.w.write_all(&IHAVEOPT.to_be_bytes())?;
        self.w.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
        self.w.flush()?;
        let client_flags = self.u32()?;
        if client_flags & CLIENT_FIXED_NEWSTYLE == 0 {
            return Err(invalid("client is not fixed newstyle"));
        }
        let no_zeroes = client_flags & CLIENT_NO_ZEROES != 0;
        if self.negotiate(no_zeroes)? {
            self.transmit()?;
        }
        Ok(())
    }

    fn u16(&mut self) -> io::Result<u16> {
        let mut b = [0u8; 2];
        self.r.read_exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.r.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn flags(&self) -> u16 {
        TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_SEND_FLUSH | TFLAG_CAN_MULTI_CONN
    }

    fn reply(&mut self, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
        self.w.write_all(&OPT_REPLY_MAGIC.to_be_bytes())?;
        self.w.write_all(&option.to_be_bytes())?;
        self.w.write_all(&kind.to_be_bytes())?;
        self.w.write_all(&(data.len() as u32).to_be_bytes())?;
        self.w.write_all(data)?;
        self.w.flush()
    }

    /// Option haggling; true when the client entered transmission.
    fn negotiate(&mut self, no_zeroes: bool) -> io::Result<bool> {
        loop {
            if self.u64()? != IHAVEOPT {
                return Err(invalid("bad option magic"));
            }
            let option = self.u32()?;
            let len = self.u32()?;
            if len > MAX_OPTION {
                return Err(invalid("option too long"));
            }
            let mut data = vec![0u8; len as usize];
            self.r.read_exact(&mut data)?;
            match option {
                OPT_EXPORT_NAME => {
                    self.w.write_all(&self.source.size().to_be_bytes())?;
                    self.w.write_all(&self.flags().to_be_bytes())?;
                    if !no_zeroes {
                        self.w.write_all(&[0u8; 124])?;
                    }
                    self.w.flush()?;
                    return Ok(true);
                }
                OPT_ABORT => {
                    self.reply(option, REP_ACK, &[])?;
                    return Ok(false);
                }
                OPT_LIST => {
                    let mut entry = (self.name.len() as u32).to_be_bytes().to_vec();
                    entry.extend_from_slice(self.name.as_bytes());
                    self.reply(option, REP_SERVER, &entry)?;
                    self.reply(option, REP_ACK, &[])?;
                }
                OPT_STRUCTURED_REPLY => {
                    self.structured = true;
                    self.reply(option, REP_ACK, &[])?;
                }
                OPT_INFO | OPT_GO => {
                    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                    info.extend_from_slice(&self.source.size().to_be_bytes());
                    info.extend_from_slice(&self.flags().to_be_bytes());
                    self.reply(option, REP_INFO, &info)?;
                    let mut sizes = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                    for v in [1u32, 4096, MAX_REQUEST] {
                        sizes.extend_from_slice(&v.to_be_bytes());
                    }
                    self.reply(option, REP_INFO, &sizes)?;
                    self.reply(option, REP_ACK, &[])?;
                    if option == OPT_GO {
                        return Ok(true);
                    }
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                    if !self.structured {
                        self.reply(option, REP_ERR_INVALID, b"structured replies first")?;
                        continue;
                    }
                    let queries =
                        parse_meta_queries(&data).ok_or_else(|| invalid("bad meta context request"))?;
                    let wanted = queries.is_empty() && option == OPT_LIST_META_CONTEXT
                        || queries.iter().any(|q| q == CONTEXT_BASE_ALLOCATION || q == "base:");
                    if wanted {
                        let mut ctx = META_CONTEXT_ID.to_be_bytes().to_vec();
                        ctx.extend_from_slice(CONTEXT_BASE_ALLOCATION.as_bytes());
                        self.reply(option, REP_META_CONTEXT, &ctx)?;
                        if option == OPT_SET_META_CONTEXT {
                            self.meta = true;
                        }
                    }
                    self.reply(option, REP_ACK, &[])?;
                }
                _ => self.reply(option, REP_ERR_UNSUP, &[])?,
            }
        }
    }

    fn transmit(&mut self) -> io::Result<()> {
        let size = self.source.size();
        loop {
            if self.u32()? != REQUEST_MAGIC {
                return Err(invalid("bad request magic"));
            }
            let _flags = self.u16()?;
            let kind = self.u16()?;
            let cookie = self.u64()?;
            let offset = self.u64()?;
            let len = self.u32()?;
            let in_range = offset.checked_add(u64::from(len)).is_some_and(|end| end <= size);
            match kind {
                CMD_DISC => return Ok(()),
                CMD_WRITE => {
                    // Drain the payload, then refuse: the export is read-only.
                    io::copy(&mut (&mut self.r).take(u64::from(len)), &mut io::sink())?;
                    self.error(cookie, EPERM)?;
                }
                CMD_READ if !in_range || len > MAX_REQUEST => self.error(cookie, EINVAL)?,
                CMD_READ => self.read(cookie, offset, len)?,
                CMD_BLOCK_STATUS if !self.meta || !in_range => self.error(cookie, EINVAL)?,
                CMD_BLOCK_STATUS => self.block_status(cookie, offset, len)?,
                CMD_FLUSH | CMD_CACHE => self.ok(cookie)?,
                _ => self.error(cookie, EINVAL)?,
            }
        }
    }

    fn chunk_header(&mut self, flags: u16, kind: u16, cookie: u64, len: u32) -> io::Result<()> {
        self.w.write_all(&STRUCTURED_REPLY_MAGIC.to_be_bytes())?;
        self.w.write_all(&flags.to_be_bytes())?;
        self.w.write_all(&kind.to_be_bytes())?;
        self.w.write_all(&cookie.to_be_bytes())?;
        self.w.write_all(&len.to_be_bytes())
    }

    fn simple(&mut self, cookie: u64, error: u32) -> io::Result<()> {
        self.w.write_all(&SIMPLE_REPLY_MAGIC.to_be_bytes())?;
        self.w.write_all(&error.to_be_bytes())?;
        self.w.write_all(&cookie.to_be_bytes())
    }

    fn ok(&mut self, cookie: u64) -> io::Result<()> {
        if self.structured {
            self.chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0)?;
        } else {
            self.simple(cookie, 0)?;
        }
        self.w.flush()
    }

    fn error(&mut self, cookie: u64, errno: u32) -> io::Result<()> {
        if self.structured {
            self.chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, 6)?;
            self.w.write_all(&errno.to_be_bytes())?;
            self.w.write_all(&0u16.to_be_bytes())?;
        } else {
            self.simple(cookie, errno)?;
        }
        self.w.flush()
    }

    /// Runs of the request that are holes or data, cut at granule boundaries.
    fn runs(&self, offset: u64, len: u64) -> Vec<(u64, u64, bool)> {
        let g = self.source.granularity().max(1);
        let end = offset + len;
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        let mut at = offset;
        while at < end {
            let next = ((at / g) + 1) * g;
            let piece_end = next.min(end);
            let zero = self.source.is_zero(at);
            match out.last_mut() {
                Some((_, l, z)) if *z == zero => *l += piece_end - at,
                _ => out.push((at, piece_end - at, zero)),
            }
            at = piece_end;
        }
        out
    }

    fn read(&mut self, cookie: u64, offset: u64, len: u32) -> io::Result<()> {
        if !self.structured {
            let mut buf = vec![0u8; len as usize];
            return match self.source.read_at(offset, &mut buf) {
                Ok(()) => {
                    self.simple(cookie, 0)?;
                    self.w.write_all(&buf)?;
                    self.w.flush()
                }
                Err(_) => self.error(cookie, EIO),
            };
        }
        let runs = self.runs(offset, u64::from(len));
        let last = runs.len().saturating_sub(1);
        for (i, (at, run_len, zero)) in runs.into_iter().enumerate() {
            let flags = if i == last { REPLY_FLAG_DONE } else { 0 };
            if zero {
                self.chunk_header(flags, REPLY_TYPE_OFFSET_HOLE, cookie, 12)?;
                self.w.write_all(&at.to_be_bytes())?;
                self.w.write_all(&(run_len as u32).to_be_bytes())?;
                continue;
            }
            let mut buf = vec![0u8; run_len as usize];
            if self.source.read_at(at, &mut buf).is_err() {
                // Data already sent stays valid; the error ends the reply.
                return self.error(cookie, EIO);
            }
            self.chunk_header(flags, REPLY_TYPE_OFFSET_DATA, cookie, 8 + run_len as u32)?;
            self.w.write_all(&at.to_be_bytes())?;
            self.w.write_all(&buf)?;
        }
        if len == 0 {
            self.chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0)?;
        }
        self.w.flush()
    }

    fn block_status(&mut self, cookie: u64, offset: u64, len: u32) -> io::Result<()> {
        let len = u64::from(len.max(1)).min(self.source.size() - offset);
        // A descriptor's length is 32 bits: long runs are split at a granule-aligned limit.
        let g = self.source.granularity().max(1);
        let limit = (u64::from(u32::MAX) / g * g).max(g.min(u64::from(u32::MAX)));
        let mut payload = META_CONTEXT_ID.to_be_bytes().to_vec();
        for (_, mut run_len, zero) in self.runs(offset, len) {
            while run_len > 0 {
                let piece = run_len.min(limit);
                payload.extend_from_slice(&(piece as u32).to_be_bytes());
                payload.extend_from_slice(&(if zero { STATE_HOLE | STATE_ZERO } else { 0 }).to_be_bytes());
                run_len -= piece;
            }
        }
        self.chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, payload.len() as u32)?;
        self.w.write_all(&payload)?;
        self.w.flush()
    }
}

/// The queries of a (LIST|SET)_META_CONTEXT request: u32 name length, name, u32 count,
/// then count × (u32 length, query).
fn parse_meta_queries(data: &[u8]) -> Option<Vec<String>> {
    let take_u32 = |d: &[u8], at: usize| {
        d.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let name_len = take_u32(data, 0)?;
    let mut at = 4usize.checked_add(name_len)?;
    let count = take_u32(data, at)?;
    at += 4;
    let mut out = Vec::new();
    for _ in 0..count.min(64) {
        let len = take_u32(data, at)?;
        at += 4;
        let q = data.get(at..at.checked_add(len)?)?;
        out.push(String::from_utf8_lossy(q).into_owned());
        at += len;
    }
    Some(out)
}
