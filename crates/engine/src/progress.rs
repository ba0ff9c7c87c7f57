//! How the engine reports progress without printing: the CLI draws a bar, the server records
//! jobs, tests ignore it.

/// Receives progress of one long operation.
pub trait Progress: Send + Sync {
    /// A new phase of the job begins (`snapshot`, `transfer`, `commit`…).
    fn phase(&self, _name: &str) {}
    /// A phase starts that will move `total` bytes; `label` says what (e.g. a disk).
    fn start(&self, label: &str, total: u64);
    /// `bytes` more were done.
    fn advance(&self, bytes: u64);
    /// The phase ended.
    fn finish(&self);
    /// Whether the operator asked the job this progress belongs to to stop; long loops that
    /// have no cancel flag of their own (restores, verify) ask between steps.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Bytes in binary units, for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}
