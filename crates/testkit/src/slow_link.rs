//! A slow network in front of a real server: a loopback TCP proxy that holds every request
//! for a fixed delay before passing it on, as a store across a WAN would answer. What the
//! server says is passed back unchanged; only time is added.
//!
//! Used where an operation must take long enough to be killed in a chosen phase (GC, prune):
//! on loopback they finish before a kill can land.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

/// A running proxy; it lives as long as the test process.
pub struct SlowLink {
    endpoint: String,
}

impl SlowLink {
    /// Proxy to `upstream` (`http://HOST:PORT`), delaying each read from the client by `delay`.
    pub fn start(upstream: &str, delay: Duration) -> SlowLink {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (Ok(client_back), Ok(server_back)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || pump(client, server, delay));
                std::thread::spawn(move || pump(server_back, client_back, Duration::ZERO));
            }
        });
        SlowLink { endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Copy `from` to `to` until either side closes, sleeping `delay` before passing on each read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                std::thread::sleep(delay);
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
