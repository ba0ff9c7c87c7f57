//! At most [`MAX_CONNECTIONS_PER_CLIENT`] connections from one address at a time: one client
//! (a host gone wrong, or an attacker) cannot take every connection the server can hold. A
//! connection over the limit is answered `503` with a JSON error body after its TLS handshake
//! and its request's headers, and closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Connections one address may hold at once (a host backing up several VMs uses a few dozen).
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 64;

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// An acceptor that counts connections per client address around an inner one (TLS).
#[derive(Clone)]
pub struct PerClient<A> {
    inner: A,
    counts: Counts,
    max: usize,
}

impl<A> PerClient<A> {
    /// Limit `inner` to `max` connections per client address.
    pub fn new(inner: A, max: usize) -> PerClient<A> {
        PerClient { inner, counts: Counts::default(), max }
    }
}

/// One connection's place in the count, given back when the connection is dropped.
struct Place {
    counts: Counts,
    address: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// A TCP stream holding its place in the count.
pub struct Counted {
    stream: TcpStream,
    _place: Place,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What a connection over the limit reads before it is closed.
fn refusal(max: usize) -> Vec<u8> {
    let body = format!(
        r#"{{"error":"more than {max} connections from this address at once","kind":"limit","hint":"close idle connections, or wait"}}"#
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How long a connection over the limit may take to send its request's headers.
const REFUSAL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Read a request's headers (up to 16 KiB), to answer them.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    Ok(())
}

impl<A, S> Accept<TcpStream, S> for PerClient<A>
where
    A: Accept<Counted, S>,
    A::Future: Send + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(A::Stream, A::Service)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let address = match stream.peer_addr() {
            Ok(peer) => peer.ip(),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let over = {
            let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
            let n = counts.entry(address).or_insert(0);
            *n += 1;
            *n > self.max
        };
        let place = Place { counts: Arc::clone(&self.counts), address };
        let accepted = self.inner.accept(Counted { stream, _place: place }, service);
        let max = self.max;
        Box::pin(async move {
            let (mut stream, service) = accepted.await?;
            if over {
                // Answer the request, not the connection: a client that reads an answer
                // before it sent anything would not take it for one.
                let _ = tokio::time::timeout(REFUSAL_WAIT, read_head(&mut stream)).await;
                let _ = stream.write_all(&refusal(max)).await;
                let _ = stream.shutdown().await;
                return Err(io::Error::other("too many connections from one address"));
            }
            Ok((stream, service))
        })
    }
}
