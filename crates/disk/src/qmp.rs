//! Talking to a running QEMU: the QMP monitor (capabilities negotiation, commands with
//! timeouts, asynchronous events) and the guest agent (qemu-ga, for freezing filesystems).
//! Both speak one JSON object per line over a unix socket; errors name the socket and say
//! whether nothing listens there, something else does, or it stopped answering.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{DiskError, Result};

/// How long QEMU may take to greet a new client.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest line accepted from QEMU (query results of big VMs stay far below this).
const MAX_LINE: usize = 16 << 20;

/// One JSON-lines connection with deadlines.
struct Lines {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Lines {
    fn connect(socket: &Path, what: &str) -> Result<Lines> {
        let stream = UnixStream::connect(socket).map_err(|e| {
            let why = match e.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                    format!("nothing listens there ({e}); is the VM running, and is this its {what} socket?")
                }
                _ => e.to_string(),
            };
            DiskError::Qmp { socket: socket.to_path_buf(), message: why }
        })?;
        let writer = stream.try_clone().map_err(|e| DiskError::io(socket, e))?;
        Ok(Lines { socket: socket.to_path_buf(), reader: BufReader::new(stream), writer })
    }

    fn error(&self, message: impl Into<String>) -> DiskError {
        DiskError::Qmp { socket: self.socket.clone(), message: message.into() }
    }

    fn send(&mut self, value: &Value) -> Result<()> {
        let mut line = value.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| self.error(format!("sending failed: {e}")))
    }

    /// The next JSON object, or `None` when `deadline` passed first.
    fn receive(&mut self, deadline: Instant) -> Result<Option<Value>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        self.reader.get_ref().set_read_timeout(Some(left)).map_err(|e| self.error(e.to_string()))?;
        let mut line = String::new();
        match (&mut self.reader).take(MAX_LINE as u64).read_line(&mut line) {
            Ok(0) => Err(self.error("the connection was closed (did QEMU exit?)")),
            Ok(_) => serde_json::from_str(&line).map(Some).map_err(|_| {
                self.error(format!("answered something that is not JSON: {:?}", truncate(&line)))
            }),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(self.error(format!("receiving failed: {e}"))),
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

/// A QMP connection to a running QEMU.
pub struct QmpClient {
    lines: Lines,
    next_id: u64,
    events: VecDeque<Value>,
    /// QEMU's version as its greeting reported it (`major.minor.micro`).
    pub version: String,
}

/// One asynchronous QMP event.
#[derive(Clone, Debug, PartialEq)]
pub struct QmpEvent {
    /// Event name (`STOP`, `BLOCK_JOB_COMPLETED`…).
    pub name: String,
    /// Its data (`null` when none).
    pub data: Value,
}

impl QmpClient {
    /// Connect, read the greeting and negotiate capabilities, all within `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<QmpClient> {
        let mut lines = Lines::connect(socket, "QMP")?;
        let deadline = Instant::now() + timeout;
        // QEMU greets at once, unless another client holds the monitor (it serves one).
        let wait = timeout.min(GREETING_TIMEOUT);
        let greeting = lines.receive(Instant::now() + wait)?.ok_or_else(|| {
            lines.error(format!(
                "no QMP greeting within {} s: another client holds this monitor (QEMU serves one at a \
                 time; libvirt keeps the monitor of every domain it runs — register such a VM with \
                 `vmvault vm import-libvirt NAME`), or it is not a QMP socket",
                wait.as_secs_f32()
            ))
        })?;
        let Some(qmp) = greeting.get("QMP") else {
            return Err(lines
                .error(format!("not a QMP socket (it greeted with {})", truncate(&greeting.to_string()))));
        };
        let v = &qmp["version"]["qemu"];
        let version = format!("{}.{}.{}", v["major"], v["minor"], v["micro"]);
        let mut client = QmpClient { lines, next_id: 1, events: VecDeque::new(), version };
        client.execute_until("qmp_capabilities", json!({}), deadline)?;
        Ok(client)
    }

    /// Run a command and return its `return` value; QMP errors become [`DiskError::Qmp`]
    /// naming the command and QEMU's description.
    pub fn execute(&mut self, command: &str, arguments: Value, timeout: Duration) -> Result<Value> {
        self.execute_until(command, arguments, Instant::now() + timeout)
    }

    fn execute_until(&mut self, command: &str, arguments: Value, deadline: Instant) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            request["arguments"] = arguments;
        }
        self.lines.send(&request)?;
        loop {
            let Some(message) = self.lines.receive(deadline)? else {
                return Err(self.lines.error(format!("{command}: no answer in time (QEMU is busy or hung)")));
            };
            if message.get("event").is_some() {
                self.events.push_back(message);
                continue;
            }
            if message.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = message.get("error") {
                let desc = error["desc"].as_str().unwrap_or("no description");
                return Err(self.lines.error(format!("{command}: {desc}")));
            }
            return Ok(message.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Wait for the event `name` (one already received counts), at most `timeout`.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<QmpEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.events.iter().position(|e| e["event"] == name) {
                let event = self.events.remove(pos).unwrap_or(Value::Null);
                return Ok(QmpEvent { name: name.to_string(), data: event["data"].clone() });
            }
            match self.lines.receive(deadline)? {
                Some(message) if message.get("event").is_some() => self.events.push_back(message),
                Some(_) => {}
                None => {
                    return Err(self
                        .lines
                        .error(format!("no {name} event within {} s", timeout.as_secs_f32())));
                }
            }
        }
    }

    /// Events received so far and not yet waited for.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        self.events
            .drain(..)
            .map(|e| QmpEvent {
                name: e["event"].as_str().unwrap_or_default().to_string(),
                data: e["data"].clone(),
            })
            .collect()
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.lines.socket
    }
}

/// A connection to the QEMU guest agent inside a VM.
pub struct GuestAgent {
    lines: Lines,
}

impl GuestAgent {
    /// Connect and synchronise (`guest-sync` with a random token) within `timeout`; an agent
    /// that does not answer in time is reported absent.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<GuestAgent> {
        let mut agent = GuestAgent { lines: Lines::connect(socket, "guest agent")? };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let token = u64::from(std::process::id()) << 32 | u64::from(nanos);
        agent.lines.send(&json!({ "execute": "guest-sync", "arguments": { "id": token } }))?;
        let deadline = Instant::now() + timeout;
        loop {
            match agent.lines.receive(deadline)? {
                Some(message) if message["return"].as_u64() == Some(token) => return Ok(agent),
                Some(_) => {}
                None => {
                    return Err(agent.lines.error(
                        "the guest agent did not answer (not installed or not running in the guest)",
                    ));
                }
            }
        }
    }

    /// Run a guest agent command and return its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value, timeout: Duration) -> Result<Value> {
        let mut request = json!({ "execute": command });
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            request["arguments"] = arguments;
        }
        self.lines.send(&request)?;
        let deadline = Instant::now() + timeout;
        let Some(message) = self.lines.receive(deadline)? else {
            return Err(self.lines.error(format!("{command}: no answer in time")));
        };
        if let Some(error) = message.get("error") {
            let desc = error["desc"].as_str().unwrap_or("no description");
            return Err(self.lines.error(format!("{command}: {desc}")));
        }
        Ok(message.get("return").cloned().unwrap_or(Value::Null))
    }
}
