//! Standard output that a closed pipe ends quietly: `vmvault jobs --json | head -1` stops
//! when `head` has read enough, with status 0, as `ls | head` does — never a panic. The
//! crate's `println!`/`print!` (defined in `main.rs`) write through here.

use std::io::{ErrorKind, Write};

/// Write `text` (and a newline when `newline`) to standard output.
pub fn write(text: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = if newline { writeln!(out, "{text}") } else { write!(out, "{text}") };
    match written.and_then(|()| if newline { Ok(()) } else { out.flush() }) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("vmvault: error: writing to standard output: {e}");
            std::process::exit(1);
        }
    }
}
