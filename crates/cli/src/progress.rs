//! Progress as a person sees it: a bar with bytes, rate and ETA on a terminal, nothing otherwise.

use std::io::IsTerminal;
use std::sync::Arc;

use engine::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar on stderr, or silence when stderr is not a terminal (or `quiet`).
pub fn for_terminal(quiet: bool) -> Arc<dyn Progress> {
    if quiet || !std::io::stderr().is_terminal() {
        Arc::new(engine::NoProgress)
    } else {
        Arc::new(Bar(ProgressBar::hidden()))
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, label: &str, total: u64) {
        self.0.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.0.set_length(total);
        self.0.set_position(0);
        let style = ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        self.0.set_style(style);
        self.0.set_prefix(label.to_string());
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
