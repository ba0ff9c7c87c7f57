//! Pre- and post-snapshot scripts of a VM, configured like Azure's
//! `VMSnapshotScriptPluginConfig.json`: the pre-script quiesces applications before the
//! snapshot instant, the post-script resumes them after it. Scripts run on the host (they may
//! reach into the guest however the operator likes: ssh, guest-exec) and must be owned by root
//! and not writable by group or others, or they do not run.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Longest a script may be given.
pub const MAX_TIMEOUT_S: u64 = 1800;

fn default_timeout() -> u64 {
    30
}

fn yes() -> bool {
    true
}

/// A VM's script configuration (Azure's member names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptConfig {
    /// Run before the snapshot instant.
    #[serde(default)]
    pub pre_script_location: Option<PathBuf>,
    /// Run after it.
    #[serde(default)]
    pub post_script_location: Option<PathBuf>,
    /// Arguments of the pre-script.
    #[serde(default)]
    pub pre_script_params: Vec<String>,
    /// Arguments of the post-script.
    #[serde(default)]
    pub post_script_params: Vec<String>,
    /// Retries after a failed pre-script.
    #[serde(default)]
    pub pre_script_no_of_retries: u32,
    /// Retries after a failed post-script.
    #[serde(default)]
    pub post_script_no_of_retries: u32,
    /// Seconds each run may take (default 30, at most 1800).
    #[serde(default = "default_timeout")]
    pub timeout_in_seconds: u64,
    /// Whether a failed script lets the backup go on (with lower consistency).
    #[serde(default = "yes")]
    pub continue_backup_on_failure: bool,
    /// Whether to freeze the guest's file systems through its agent as well.
    #[serde(default = "yes")]
    pub fs_freeze_enabled: bool,
}

impl ScriptConfig {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<ScriptConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::Invalid(format!("{}: {e}", path.display())))?;
        let config: ScriptConfig = serde_json::from_str(&text).map_err(|e| {
            EngineError::Invalid(format!("{}: not a script configuration: {e}", path.display()))
        })?;
        config.check()?;
        Ok(config)
    }

    /// Limits: timeout 1–1800 s, at most 3 retries.
    pub fn check(&self) -> Result<()> {
        if !(1..=MAX_TIMEOUT_S).contains(&self.timeout_in_seconds) {
            return Err(EngineError::Limit(format!(
                "timeoutInSeconds {} is outside 1–{MAX_TIMEOUT_S}",
                self.timeout_in_seconds
            )));
        }
        if self.pre_script_no_of_retries > 3 || self.post_script_no_of_retries > 3 {
            return Err(EngineError::Limit("a script may be retried at most 3 times".into()));
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_in_seconds)
    }

    /// Run the pre-script, if any: `Ok(None)` when there is none, `Ok(Some(Ok(())))` when it
    /// succeeded, `Ok(Some(Err(why)))` when it failed and the backup may go on.
    pub fn run_pre(&self) -> Result<Option<std::result::Result<(), String>>> {
        self.run(
            self.pre_script_location.as_deref(),
            &self.pre_script_params,
            self.pre_script_no_of_retries,
            "pre",
        )
    }

    /// Run the post-script, if any (same answers as [`ScriptConfig::run_pre`]).
    pub fn run_post(&self) -> Result<Option<std::result::Result<(), String>>> {
        self.run(
            self.post_script_location.as_deref(),
            &self.post_script_params,
            self.post_script_no_of_retries,
            "post",
        )
    }

    fn run(
        &self,
        script: Option<&Path>,
        params: &[String],
        retries: u32,
        which: &str,
    ) -> Result<Option<std::result::Result<(), String>>> {
        let Some(script) = script else { return Ok(None) };
        let mut last = String::new();
        for _ in 0..=retries {
            match run_once(script, params, self.timeout()) {
                Ok(()) => return Ok(Some(Ok(()))),
                Err(why) => last = why,
            }
        }
        let message = format!("{which}-script {}: {last}", script.display());
        if self.continue_backup_on_failure {
            Ok(Some(Err(message)))
        } else {
            Err(EngineError::Invalid(format!(
                "{message}; the backup stops (continueBackupOnFailure is false)"
            )))
        }
    }
}

/// Refuse a script anyone but root could have changed.
fn check_owner(script: &Path) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(script).map_err(|e| e.to_string())?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "not run: it must be owned by root and not writable by group or others (owner uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

fn run_once(script: &Path, params: &[String], timeout: Duration) -> std::result::Result<(), String> {
    check_owner(script)?;
    let mut child = Command::new(script)
        .args(params)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    // What the script says on stderr, its end kept for the job's notes when it fails. A
    // process the script left behind may hold the pipe open: the words are taken as they are
    // once the script is gone, never waited for beyond a moment.
    let said = child.stderr.take().map(Said::collect);
    let last_words = |said: Option<Said>| {
        let text = said.map(Said::last_words).unwrap_or_default();
        if text.is_empty() { String::new() } else { format!("; it said: {text}") }
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("failed ({status}){}", last_words(said))),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "timed out after {} s and was killed{}",
                    timeout.as_secs(),
                    last_words(said)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The end of what a script writes to a pipe, gathered by a thread of its own.
struct Said {
    kept: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Said {
    /// Bytes kept: the last 4 KiB.
    const KEEP: usize = 4096;

    fn collect(mut from: impl std::io::Read + Send + 'static) -> Said {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&kept);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                let Ok(mut kept) = shared.lock() else { return };
                if n == 0 {
                    return;
                }
                kept.extend_from_slice(&buf[..n]);
                let excess = kept.len().saturating_sub(Self::KEEP);
                kept.drain(..excess);
            }
        });
        Said { kept, reader }
    }

    /// The last lines (at most 3, and 500 bytes) said so far, on one line; waits at most
    /// 200 ms for the pipe to close.
    fn last_words(self) -> String {
        let deadline = Instant::now() + Duration::from_millis(200);
        while !self.reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let kept = self.kept.lock().map(|k| k.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&kept);
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let last = lines[lines.len().saturating_sub(3)..].join(" | ");
        last.chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect()
    }
}
