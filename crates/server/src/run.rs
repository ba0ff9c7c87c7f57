//! Starting the server: TLS identity, tokens, the router, and serving until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use vault::backend::Backend;

use crate::api::{AppState, router};
use axum_server::tls_rustls::RustlsAcceptor;

use crate::limit::{MAX_CONNECTIONS_PER_CLIENT, PerClient};
use crate::owners::Owners;
use crate::tls::Identity;
use crate::tokens::TokenStore;

/// Longest a client may take to send a request's headers (or to start the next request on a
/// kept-alive connection) before it is disconnected.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How to run a server.
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The vault it serves.
    pub backend: Arc<dyn Backend>,
    /// Its own state: tokens, the self-signed certificate.
    pub state: PathBuf,
    /// The TLS identity.
    pub identity: Identity,
}

/// Why the server stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(pub String);

/// Make sure rustls has its crypto provider (ring) before any TLS is set up.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Serve the API over HTTPS until the process is stopped. `ready` is called once listening,
/// with the bound address (useful when the port was 0).
pub async fn serve(config: ServerConfig, ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    install_crypto();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        config.identity.cert_pem.into_bytes(),
        config.identity.key_pem.into_bytes(),
    )
    .await
    .map_err(|e| ServeError(format!("TLS certificate or key not usable: {e}")))?;
    let state = Arc::new(AppState {
        backend: config.backend,
        tokens: TokenStore::new(&config.state),
        owners: Owners::load(&config.state),
    });
    // HTTP/1.1 only, which is what vmvault's client speaks: no HTTP/2 stream machinery to
    // attack, and the header and body limits below apply to every request.
    let mut only_http1 = (*tls.get_inner()).clone();
    only_http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    tls.reload_from_config(Arc::new(only_http1));
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| ServeError(format!("cannot listen on {}: {e}", config.listen)))?;
    let bound = listener.local_addr().map_err(|e| ServeError(e.to_string()))?;
    ready(bound);
    let acceptor = PerClient::new(RustlsAcceptor::new(tls), MAX_CONNECTIONS_PER_CLIENT);
    let mut server = axum_server::from_tcp(listener).acceptor(acceptor);
    // A client gets 10 s for the TLS handshake (the acceptor's default) and HEADER_TIMEOUT for
    // a request's headers, also between requests on a kept-alive connection: a slow or idle
    // client cannot hold connections open.
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    server
        .serve(router(state).into_make_service_with_connect_info::<SocketAddr>())
        .await
        .map_err(|e| ServeError(format!("server stopped: {e}")))
}
