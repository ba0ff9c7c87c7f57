//! A thread that checks something at a steady pace until it finds a problem or is dropped:
//! how a live snapshot keeps an eye on the VM it holds (see [`crate::live`]).

use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The watching thread; stopped (and joined) when dropped — at once, not after its next
/// check: the end of a backup waits for it.
pub struct Watch {
    /// Dropped to wake and stop the thread.
    stop: Option<Sender<()>>,
    tripped: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Run `check` every `every` until it returns what went wrong (kept, see
    /// [`Watch::tripped`]) or the watch is dropped.
    pub fn spawn(every: Duration, mut check: impl FnMut() -> Option<String> + Send + 'static) -> Watch {
        let (stop, stopped) = channel::<()>();
        let tripped = Arc::new(Mutex::new(None));
        let tripped2 = Arc::clone(&tripped);
        let thread = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                if let Some(problem) = check() {
                    if let Ok(mut slot) = tripped2.lock() {
                        *slot = Some(problem);
                    }
                    return;
                }
            }
        });
        Watch { stop: Some(stop), tripped, thread: Some(thread) }
    }

    /// What the check found, once it found something.
    pub fn tripped(&self) -> Option<String> {
        self.tripped.lock().ok().and_then(|t| t.clone())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_dropped_watch_stops_without_waiting_for_its_next_check() {
        let watch = Watch::spawn(Duration::from_secs(3600), || None);
        let began = Instant::now();
        drop(watch);
        assert!(began.elapsed() < Duration::from_secs(60), "the drop waited for the hourly check");
    }

    #[test]
    fn a_problem_found_is_kept() {
        let watch = Watch::spawn(Duration::from_millis(1), || Some("the VM paused".into()));
        while watch.tripped().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(watch.tripped().as_deref(), Some("the VM paused"));
    }
}
