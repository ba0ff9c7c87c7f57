//! A thread that checks something at a steady pace until it finds a problem or is dropped:
//! how a live snapshot keeps an eye on the VM it holds (see [`crate::live`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The watching thread; stopped (and joined) when dropped.
pub struct Watch {
    stop: Arc<AtomicBool>,
    tripped: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Run `check` every `every` until it returns what went wrong (kept, see
    /// [`Watch::tripped`]) or the watch is dropped.
    pub fn spawn(every: Duration, mut check: impl FnMut() -> Option<String> + Send + 'static) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let tripped = Arc::new(Mutex::new(None));
        let (stop2, tripped2) = (Arc::clone(&stop), Arc::clone(&tripped));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                std::thread::sleep(every);
                if let Some(problem) = check() {
                    if let Ok(mut slot) = tripped2.lock() {
                        *slot = Some(problem);
                    }
                    return;
                }
            }
        });
        Watch { stop, tripped, thread: Some(thread) }
    }

    /// What the check found, once it found something.
    pub fn tripped(&self) -> Option<String> {
        self.tripped.lock().ok().and_then(|t| t.clone())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
