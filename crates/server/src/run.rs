//! Starting the server: TLS identity, tokens, the router, and serving until stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use vault::backend::Backend;

use crate::api::{AppState, router};
use crate::tls::Identity;
use crate::tokens::TokenStore;

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
    let state = Arc::new(AppState { backend: config.backend, tokens: TokenStore::new(&config.state) });
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| ServeError(format!("cannot listen on {}: {e}", config.listen)))?;
    let bound = listener.local_addr().map_err(|e| ServeError(e.to_string()))?;
    ready(bound);
    axum_server::from_tcp_rustls(listener, tls)
        .serve(router(state).into_make_service_with_connect_info::<SocketAddr>())
        .await
        .map_err(|e| ServeError(format!("server stopped: {e}")))
}
