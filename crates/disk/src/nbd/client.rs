//! vmvault's NBD client: fixed newstyle handshake, structured replies, metadata contexts
//! (`base:allocation`, `qemu:dirty-bitmap:…`) and BLOCK_STATUS, reads and writes.
//!
//! Synchronous and one request at a time: the transfer phase reads 4 MiB blocks in order from a
//! local socket, where one outstanding request already keeps qemu-nbd busy.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::proto::*;
use crate::error::{DiskError, Result};

/// One run of blocks with the same status, as BLOCK_STATUS reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusExtent {
    /// Start in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Context-specific flags (e.g. [`STATE_HOLE`], [`STATE_ZERO`], [`STATE_DIRTY`]).
    pub flags: u32,
}

/// A connection to one NBD export, in transmission phase.
pub struct NbdClient<S: Read + Write> {
    stream: S,
    name: String,
    size: u64,
    transmission_flags: u16,
    contexts: HashMap<String, u32>,
    next_cookie: u64,
}

impl NbdClient<UnixStream> {
    /// Connect to a unix socket and open `export`, selecting the metadata `contexts` asked for.
    pub fn connect_unix(socket: &Path, export: &str, contexts: &[&str]) -> Result<Self> {
        let stream = UnixStream::connect(socket).map_err(|e| DiskError::io(socket, e))?;
        NbdClient::handshake(stream, &socket.display().to_string(), export, contexts)
    }
}

impl NbdClient<std::net::TcpStream> {
    /// Connect over TCP (loopback) and open `export`.
    pub fn connect_tcp(addr: &str, export: &str, contexts: &[&str]) -> Result<Self> {
        let stream = std::net::TcpStream::connect(addr).map_err(|e| DiskError::io(addr, e))?;
        let _ = stream.set_nodelay(true);
        NbdClient::handshake(stream, addr, export, contexts)
    }
}

impl<S: Read + Write> NbdClient<S> {
    /// Run the newstyle handshake on an open stream. `name` names the server in errors.
    pub fn handshake(mut stream: S, name: &str, export: &str, contexts: &[&str]) -> Result<Self> {
        let proto = |what: &str| DiskError::Nbd { server: name.to_string(), message: what.to_string() };
        let io = |e: std::io::Error| DiskError::io(name, e);
        if read_u64(&mut stream).map_err(io)? != NBDMAGIC || read_u64(&mut stream).map_err(io)? != IHAVEOPT {
            return Err(proto("not a newstyle NBD server"));
        }
        let server_flags = read_u16(&mut stream).map_err(io)?;
        if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(proto("server does not speak fixed newstyle"));
        }
        let mut client_flags = CLIENT_FIXED_NEWSTYLE;
        if server_flags & FLAG_NO_ZEROES != 0 {
            client_flags |= CLIENT_NO_ZEROES;
        }
        stream.write_all(&client_flags.to_be_bytes()).map_err(io)?;

        let mut client = NbdClient {
            stream,
            name: name.to_string(),
            size: 0,
            transmission_flags: 0,
            contexts: HashMap::new(),
            next_cookie: 1,
        };
        client.send_option(OPT_STRUCTURED_REPLY, &[])?;
        let (reply, _) = client.read_option_reply(OPT_STRUCTURED_REPLY)?;
        if reply != REP_ACK {
            return Err(proto("server refused structured replies"));
        }
        if !contexts.is_empty() {
            client.set_meta_contexts(export, contexts)?;
        }
        client.go(export)?;
        Ok(client)
    }

    fn set_meta_contexts(&mut self, export: &str, contexts: &[&str]) -> Result<()> {
        let mut data = Vec::new();
        data.extend_from_slice(&(export.len() as u32).to_be_bytes());
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&(contexts.len() as u32).to_be_bytes());
        for c in contexts {
            data.extend_from_slice(&(c.len() as u32).to_be_bytes());
            data.extend_from_slice(c.as_bytes());
        }
        self.send_option(OPT_SET_META_CONTEXT, &data)?;
        loop {
            let (reply, payload) = self.read_option_reply(OPT_SET_META_CONTEXT)?;
            match reply {
                REP_META_CONTEXT if payload.len() >= 4 => {
                    let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    let context = String::from_utf8_lossy(&payload[4..]).into_owned();
                    self.contexts.insert(context, id);
                }
                REP_ACK => break,
                other => return Err(self.option_error(OPT_SET_META_CONTEXT, other, &payload)),
            }
        }
        for c in contexts {
            if !self.contexts.contains_key(*c) {
                return Err(DiskError::NbdContextMissing {
                    server: self.name.clone(),
                    context: c.to_string(),
                });
            }
        }
        Ok(())
    }

    fn go(&mut self, export: &str) -> Result<()> {
        let mut data = Vec::new();
        data.extend_from_slice(&(export.len() as u32).to_be_bytes());
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        self.send_option(OPT_GO, &data)?;
        let mut got_export = false;
        loop {
            let (reply, payload) = self.read_option_reply(OPT_GO)?;
            match reply {
                REP_INFO if payload.len() >= 2 => {
                    let kind = u16::from_be_bytes([payload[0], payload[1]]);
                    if kind == INFO_EXPORT && payload.len() == 12 {
                        let mut size = [0u8; 8];
                        size.copy_from_slice(&payload[2..10]);
                        self.size = u64::from_be_bytes(size);
                        self.transmission_flags = u16::from_be_bytes([payload[10], payload[11]]);
                        got_export = true;
                    }
                }
                REP_ACK => break,
                other => return Err(self.option_error(OPT_GO, other, &payload)),
            }
        }
        if !got_export {
            return Err(self.protocol("server did not describe the export"));
        }
        Ok(())
    }

    fn protocol(&self, message: &str) -> DiskError {
        DiskError::Nbd { server: self.name.clone(), message: message.to_string() }
    }

    fn io(&self, e: std::io::Error) -> DiskError {
        DiskError::io(&self.name, e)
    }

    fn option_error(&self, option: u32, reply: u32, payload: &[u8]) -> DiskError {
        let text = String::from_utf8_lossy(payload);
        self.protocol(&format!("option {option} refused (reply {reply:#x}): {text}"))
    }

    fn send_option(&mut self, option: u32, data: &[u8]) -> Result<()> {
        let mut msg = Vec::with_capacity(16 + data.len());
        msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
        msg.extend_from_slice(&option.to_be_bytes());
        msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
        msg.extend_from_slice(data);
        self.stream.write_all(&msg).map_err(|e| self.io(e))
    }

    fn read_option_reply(&mut self, option: u32) -> Result<(u32, Vec<u8>)> {
        let magic = read_u64(&mut self.stream).map_err(|e| self.io(e))?;
        let got_option = read_u32(&mut self.stream).map_err(|e| self.io(e))?;
        let reply = read_u32(&mut self.stream).map_err(|e| self.io(e))?;
        let len = read_u32(&mut self.stream).map_err(|e| self.io(e))?;
        if magic != OPT_REPLY_MAGIC || got_option != option || len > 64 * 1024 {
            return Err(self.protocol("malformed option reply"));
        }
        let mut payload = vec![0u8; len as usize];
        self.stream.read_exact(&mut payload).map_err(|e| self.io(e))?;
        Ok((reply, payload))
    }

    /// Size of the export in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the export refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.transmission_flags & TFLAG_READ_ONLY != 0
    }

    fn send_request(&mut self, kind: u16, flags: u16, offset: u64, length: u32, data: &[u8]) -> Result<u64> {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let mut msg = Vec::with_capacity(28 + data.len());
        msg.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        msg.extend_from_slice(&flags.to_be_bytes());
        msg.extend_from_slice(&kind.to_be_bytes());
        msg.extend_from_slice(&cookie.to_be_bytes());
        msg.extend_from_slice(&offset.to_be_bytes());
        msg.extend_from_slice(&length.to_be_bytes());
        self.stream.write_all(&msg).map_err(|e| self.io(e))?;
        if !data.is_empty() {
            self.stream.write_all(data).map_err(|e| self.io(e))?;
        }
        Ok(cookie)
    }

    fn check_range(&self, offset: u64, length: u64) -> Result<()> {
        if offset.checked_add(length).is_none_or(|end| end > self.size) || length > u64::from(MAX_PAYLOAD) {
            return Err(self.protocol(&format!("request {offset}+{length} outside the export or too large")));
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at `offset`. Holes the server reports are filled with zeros.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let cookie = self.send_request(CMD_READ, 0, offset, buf.len() as u32, &[])?;
        self.read_reply(
            cookie,
            |client, chunk_type, len| match chunk_type {
                REPLY_TYPE_OFFSET_DATA => {
                    let at = read_u64(&mut client.stream).map_err(|e| client.io(e))?;
                    let data_len = len.checked_sub(8).ok_or_else(|| client.protocol("short data chunk"))?;
                    let start =
                        at.checked_sub(offset).ok_or_else(|| client.protocol("data before request"))?;
                    let end = start + u64::from(data_len);
                    if end > buf.len() as u64 {
                        return Err(client.protocol("data past the end of the request"));
                    }
                    client.stream.read_exact(&mut buf[start as usize..end as usize]).map_err(|e| client.io(e))
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    if len != 12 {
                        return Err(client.protocol("malformed hole chunk"));
                    }
                    let at = read_u64(&mut client.stream).map_err(|e| client.io(e))?;
                    let hole = read_u32(&mut client.stream).map_err(|e| client.io(e))?;
                    let start =
                        at.checked_sub(offset).ok_or_else(|| client.protocol("hole before request"))?;
                    let end = start + u64::from(hole);
                    if end > buf.len() as u64 {
                        return Err(client.protocol("hole past the end of the request"));
                    }
                    buf[start as usize..end as usize].fill(0);
                    Ok(())
                }
                _ => Err(client.protocol(&format!("unexpected reply chunk {chunk_type} to a read"))),
            },
            true,
        )
    }

    /// BLOCK_STATUS of one selected context over `offset..offset+length`: runs in order,
    /// covering at least a prefix of the range (call again for the rest, or use [`Self::extents`]).
    pub fn block_status(&mut self, context: &str, offset: u64, length: u32) -> Result<Vec<StatusExtent>> {
        self.check_range(offset, 0)?;
        let id = *self.contexts.get(context).ok_or_else(|| DiskError::NbdContextMissing {
            server: self.name.clone(),
            context: context.into(),
        })?;
        let length = length.min((self.size - offset).min(u64::from(u32::MAX)) as u32);
        let cookie = self.send_request(CMD_BLOCK_STATUS, 0, offset, length, &[])?;
        let mut out = Vec::new();
        self.read_reply(
            cookie,
            |client, chunk_type, len| {
                if chunk_type != REPLY_TYPE_BLOCK_STATUS || len < 4 || (len - 4) % 8 != 0 {
                    return Err(client.protocol("malformed block status chunk"));
                }
                let got_id = read_u32(&mut client.stream).map_err(|e| client.io(e))?;
                let mut at = offset;
                for _ in 0..(len - 4) / 8 {
                    let ext_len = u64::from(read_u32(&mut client.stream).map_err(|e| client.io(e))?);
                    let flags = read_u32(&mut client.stream).map_err(|e| client.io(e))?;
                    if got_id == id && ext_len > 0 {
                        out.push(StatusExtent { offset: at, length: ext_len, flags });
                    }
                    at += ext_len;
                }
                Ok(())
            },
            false,
        )?;
        if out.is_empty() {
            return Err(self.protocol("block status reply made no progress"));
        }
        Ok(out)
    }

    /// Status of the whole range `offset..offset+length` in one context, merged into runs.
    pub fn extents(&mut self, context: &str, offset: u64, length: u64) -> Result<Vec<StatusExtent>> {
        let end = offset
            .checked_add(length)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| self.protocol(&format!("status request {offset}+{length} outside the export")))?;
        let mut out: Vec<StatusExtent> = Vec::new();
        let mut at = offset;
        while at < end {
            let ask = (end - at).min(1 << 30) as u32;
            for mut ext in self.block_status(context, at, ask)? {
                ext.length = ext.length.min(end - ext.offset);
                match out.last_mut() {
                    Some(last) if last.flags == ext.flags && last.offset + last.length == ext.offset => {
                        last.length += ext.length
                    }
                    _ => out.push(ext),
                }
                at = ext.offset + ext.length;
                if at >= end {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Write `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        let cookie = self.send_request(CMD_WRITE, 0, offset, data.len() as u32, data)?;
        self.read_reply(
            cookie,
            |client, t, _| Err(client.protocol(&format!("unexpected chunk {t} to a write"))),
            false,
        )
    }

    /// Ask the server to make written data durable.
    pub fn flush(&mut self) -> Result<()> {
        let cookie = self.send_request(CMD_FLUSH, 0, 0, 0, &[])?;
        self.read_reply(
            cookie,
            |client, t, _| Err(client.protocol(&format!("unexpected chunk {t} to a flush"))),
            false,
        )
    }

    /// Say goodbye; the server closes the connection.
    pub fn disconnect(mut self) {
        let _ = self.send_request(CMD_DISC, 0, 0, 0, &[]);
    }

    /// Read one reply (simple or structured). `on_chunk` consumes a chunk's payload of `len`
    /// bytes for types other than NONE and ERROR. A read must be answered with structured chunks.
    fn read_reply<F>(&mut self, cookie: u64, mut on_chunk: F, is_read: bool) -> Result<()>
    where
        F: FnMut(&mut Self, u16, u32) -> Result<()>,
    {
        let mut error = None;
        loop {
            let magic = read_u32(&mut self.stream).map_err(|e| self.io(e))?;
            if magic == SIMPLE_REPLY_MAGIC {
                let errno = read_u32(&mut self.stream).map_err(|e| self.io(e))?;
                let got = read_u64(&mut self.stream).map_err(|e| self.io(e))?;
                if got != cookie {
                    return Err(self.protocol("reply to an unknown request"));
                }
                if errno != 0 {
                    return Err(DiskError::NbdServer {
                        server: self.name.clone(),
                        errno,
                        message: String::new(),
                    });
                }
                if is_read {
                    return Err(self.protocol("simple reply to a read after structured replies were agreed"));
                }
                return Ok(());
            }
            if magic != STRUCTURED_REPLY_MAGIC {
                return Err(self.protocol("bad reply magic"));
            }
            let flags = read_u16(&mut self.stream).map_err(|e| self.io(e))?;
            let chunk_type = read_u16(&mut self.stream).map_err(|e| self.io(e))?;
            let got = read_u64(&mut self.stream).map_err(|e| self.io(e))?;
            let len = read_u32(&mut self.stream).map_err(|e| self.io(e))?;
            if got != cookie {
                return Err(self.protocol("reply to an unknown request"));
            }
            if len > MAX_PAYLOAD + 16 {
                return Err(self.protocol("reply chunk too large"));
            }
            match chunk_type {
                REPLY_TYPE_NONE => {}
                REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
                    let mut payload = vec![0u8; len as usize];
                    self.stream.read_exact(&mut payload).map_err(|e| self.io(e))?;
                    let errno =
                        payload.get(0..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                    let msg_len =
                        payload.get(4..6).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize).unwrap_or(0);
                    let message =
                        payload.get(6..6 + msg_len).map(String::from_utf8_lossy).unwrap_or_default();
                    error = Some(DiskError::NbdServer {
                        server: self.name.clone(),
                        errno,
                        message: message.into_owned(),
                    });
                }
                _ => on_chunk(self, chunk_type, len)?,
            }
            if flags & REPLY_FLAG_DONE != 0 {
                return match error {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
        }
    }
}

fn read_u16(r: &mut impl Read) -> std::io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}
