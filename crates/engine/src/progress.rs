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
