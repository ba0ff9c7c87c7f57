//! The client side: a [`Backend`] that keeps the vault's objects on a vmvault server, so every
//! vault operation — backup, restore, verify, files — runs unchanged on a hypervisor host
//! while the key stays there. The server's certificate is pinned by its SHA-256 fingerprint
//! (as printed when the server first starts) or checked against a CA file.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::StatusCode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use vault::VaultError;
use vault::backend::{Backend, ObjectInfo, Put, Version, check_key};

use crate::api::{ObjectEntry, PUT_HEADER, VERSION_HEADER};
use crate::tls::{fingerprint, normalize_fingerprint};

/// How the client trusts the server.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The SHA-256 fingerprint of the server's certificate (any case, colons optional).
    Fingerprint(String),
    /// A PEM file of CA certificates.
    CaFile(std::path::PathBuf),
}

/// Accepts exactly the certificate with the pinned fingerprint, and checks that the server
/// holds its key (the handshake signature).
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if normalize_fingerprint(&fingerprint(end_entity)) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has fingerprint {}, not the one given",
                fingerprint(end_entity)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Times a request is sent again after a transient failure; the pauses (0.25 s doubling)
/// add up to about 8 s, enough for a server restart.
const RETRIES: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_millis(250);

/// Which failures a request may be sent again after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Sending it twice does what sending it once does (reads, create-if-absent writes,
    /// deletes): after any dropped connection, or an overloaded server (502, 503, 504).
    Idempotent,
    /// A compare-and-swap or a server-side job: only when the server was certainly never
    /// reached (connection refused), since a lost answer could hide a write that happened.
    Unsent,
}

impl Retry {
    fn after(self, e: &reqwest::Error) -> bool {
        use std::io::ErrorKind::*;
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                return match self {
                    Retry::Unsent => io.kind() == ConnectionRefused,
                    Retry::Idempotent => matches!(
                        io.kind(),
                        ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
                    ),
                };
            }
            source = inner.source();
        }
        // hyper reports a connection closed mid-request without an I/O error.
        self == Retry::Idempotent && e.is_request() && !e.is_connect() && !e.is_timeout()
    }
}

fn overloaded(status: StatusCode) -> bool {
    matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

/// A vault on a vmvault server.
pub struct RemoteBackend {
    base: String,
    token: String,
    http: reqwest::Client,
}

fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, VaultError> {
    crate::run::install_crypto();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| VaultError::Invalid(format!("TLS setup: {e}")))?;
    Ok(match trust {
        Trust::Fingerprint(text) => {
            let fingerprint = normalize_fingerprint(text);
            if fingerprint.len() != 64 {
                return Err(VaultError::Invalid(format!(
                    "--fingerprint {text:?} is not a SHA-256 fingerprint (64 hex digits, as the server printed it)"
                )));
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { fingerprint, provider }))
                .with_no_client_auth()
        }
        Trust::CaFile(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| VaultError::Invalid(format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| VaultError::Invalid(format!("{}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| VaultError::Invalid(format!("{}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    })
}

/// An HTTPS client that trusts a vault server as `trust` says, for tools that call the API
/// directly (the CLI's backend is one).
pub fn http_client(trust: &Trust) -> Result<reqwest::Client, VaultError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(trust)?)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| VaultError::Invalid(format!("TLS client: {e}")))
}

impl RemoteBackend {
    /// The vault served at `url` (`https://HOST:PORT`), reached with `token`.
    pub fn new(url: &str, token: &str, trust: &Trust) -> Result<RemoteBackend, VaultError> {
        if !url.starts_with("https://") {
            return Err(VaultError::Invalid(format!("{url}: a vault server is reached over https://")));
        }
        let http = http_client(trust)?;
        Ok(RemoteBackend { base: url.trim_end_matches('/').to_string(), token: token.to_string(), http })
    }

    fn object_url(&self, key: &str) -> Result<String, VaultError> {
        check_key(key)?;
        Ok(format!("{}/api/v1/objects/{key}", self.base))
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    /// Send, and turn transport failures and refusals into vault errors naming `what`. A
    /// transient failure (the server restarting, a dropped connection, an overloaded proxy) is
    /// tried again after a pause that doubles, as far as `retry` allows.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        retry: Retry,
    ) -> Result<reqwest::Response, VaultError> {
        let mut pause = FIRST_PAUSE;
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let again = attempt <= RETRIES;
            let Some(this) = request.try_clone() else { break request.send().await };
            match this.send().await {
                Ok(r) if again && retry == Retry::Idempotent && overloaded(r.status()) => {}
                Err(e) if again && retry.after(&e) => {}
                sent => break sent,
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        };
        let response = response.map_err(|e| self.unreachable(what, &e))?;
        match response.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let reason = response.text().await.unwrap_or_default();
                Err(VaultError::Denied { location: self.location(), what: what.to_string(), reason })
            }
            _ => Ok(response),
        }
    }

    fn unreachable(&self, what: &str, e: &reqwest::Error) -> VaultError {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            message = format!("{message}: {inner}");
            source = inner.source();
        }
        VaultError::Storage {
            location: self.location(),
            key: what.to_string(),
            message: format!(
                "the vault server did not answer ({message}); check the URL, --fingerprint and that the server runs"
            ),
        }
    }

    async fn failed(&self, what: &str, response: reqwest::Response) -> VaultError {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        // The server's error body names what happened and, apart, what to do.
        let message = match serde_json::from_str::<crate::api::ErrorBody>(&text) {
            Ok(body) => match body.hint {
                Some(hint) => format!("{} ({hint})", body.error),
                None => body.error,
            },
            Err(_) => text.trim().to_string(),
        };
        match status {
            StatusCode::NOT_FOUND => {
                VaultError::NotFound { location: self.location(), key: what.to_string() }
            }
            StatusCode::PRECONDITION_FAILED => VaultError::Conflict { key: what.to_string() },
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                VaultError::Denied { location: self.location(), what: what.to_string(), reason: message }
            }
            _ => VaultError::Storage {
                location: self.location(),
                key: what.to_string(),
                message: format!("server answered {status}: {message}"),
            },
        }
    }

    fn version_of(response: &reqwest::Response) -> Option<Version> {
        response.headers().get(VERSION_HEADER).and_then(|v| v.to_str().ok()).map(|v| Version(v.to_string()))
    }

    /// Ask the server to run an operation (`prune`, `gc`) itself, without the key.
    pub async fn run_on_server<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        operation: &str,
        request: &Q,
    ) -> Result<A, VaultError> {
        let url = format!("{}/api/v1/{operation}", self.base);
        let response = self
            .send(self.request(reqwest::Method::POST, url).json(request), operation, Retry::Unsent)
            .await?;
        if !response.status().is_success() {
            return Err(self.failed(operation, response).await);
        }
        response.json().await.map_err(|e| self.unreachable(operation, &e))
    }
}

#[async_trait]
impl Backend for RemoteBackend {
    fn location(&self) -> String {
        self.base.clone()
    }

    async fn get(&self, key: &str) -> vault::Result<Bytes> {
        match self.get_versioned(key).await? {
            Some((bytes, _)) => Ok(bytes),
            None => Err(VaultError::NotFound { location: self.location(), key: key.to_string() }),
        }
    }

    async fn head(&self, key: &str) -> vault::Result<Option<u64>> {
        let response = self
            .send(self.request(reqwest::Method::HEAD, self.object_url(key)?), key, Retry::Idempotent)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                response
                    .headers()
                    .get("x-vmvault-size")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            _ => Err(self.failed(key, response).await),
        }
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> vault::Result<Put> {
        let url = format!("{}?mode=create-if-absent", self.object_url(key)?);
        let response =
            self.send(self.request(reqwest::Method::PUT, url).body(data), key, Retry::Idempotent).await?;
        if !response.status().is_success() {
            return Err(self.failed(key, response).await);
        }
        let created = response.headers().get(PUT_HEADER).is_some_and(|v| v.as_bytes() == b"created");
        Ok(if created { Put::Created } else { Put::Existed })
    }

    async fn get_versioned(&self, key: &str) -> vault::Result<Option<(Bytes, Version)>> {
        let response = self
            .send(self.request(reqwest::Method::GET, self.object_url(key)?), key, Retry::Idempotent)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let version = Self::version_of(&response).unwrap_or_else(|| Version(String::new()));
                let bytes = response.bytes().await.map_err(|e| self.unreachable(key, &e))?;
                Ok(Some((bytes, version)))
            }
            _ => Err(self.failed(key, response).await),
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&Version>,
        data: Bytes,
    ) -> vault::Result<Version> {
        let url = format!("{}?mode=swap", self.object_url(key)?);
        let mut request = self.request(reqwest::Method::PUT, url).body(data);
        if let Some(version) = expected {
            request = request.header(VERSION_HEADER, &version.0);
        }
        let response = self.send(request, key, Retry::Unsent).await?;
        if !response.status().is_success() {
            return Err(self.failed(key, response).await);
        }
        Self::version_of(&response).ok_or_else(|| VaultError::Storage {
            location: self.location(),
            key: key.to_string(),
            message: "the server returned no version for a write".into(),
        })
    }

    async fn delete(&self, key: &str) -> vault::Result<()> {
        let response = self
            .send(self.request(reqwest::Method::DELETE, self.object_url(key)?), key, Retry::Idempotent)
            .await?;
        if response.status().is_success() || response.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.failed(key, response).await)
        }
    }

    async fn list(&self, prefix: &str) -> vault::Result<Vec<ObjectInfo>> {
        let url = format!("{}/api/v1/list", self.base);
        let request = self.request(reqwest::Method::GET, url).query(&[("prefix", prefix)]);
        let response = self.send(request, prefix, Retry::Idempotent).await?;
        if !response.status().is_success() {
            return Err(self.failed(prefix, response).await);
        }
        let entries: Vec<ObjectEntry> = response.json().await.map_err(|e| self.unreachable(prefix, &e))?;
        Ok(entries.into_iter().map(|e| ObjectInfo { key: e.key, size: e.size }).collect())
    }

    async fn flush(&self) -> vault::Result<()> {
        let url = format!("{}/api/v1/flush", self.base);
        let response =
            self.send(self.request(reqwest::Method::POST, url), "flush", Retry::Idempotent).await?;
        if response.status().is_success() { Ok(()) } else { Err(self.failed("flush", response).await) }
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn missing_chunks(&self, ids: &[vault::ChunkId]) -> vault::Result<Vec<vault::ChunkId>> {
        let mut missing = Vec::new();
        for batch in ids.chunks(crate::api::MAX_MISSING_BATCH) {
            let body = crate::api::MissingRequest { ids: batch.iter().map(|id| id.to_hex()).collect() };
            let url = format!("{}{}", self.base, crate::api::MISSING_CHUNKS_PATH);
            let response = self
                .send(
                    self.request(reqwest::Method::POST, url).json(&body),
                    crate::api::MISSING_CHUNKS_PATH,
                    Retry::Idempotent,
                )
                .await?;
            if !response.status().is_success() {
                return Err(self.failed(crate::api::MISSING_CHUNKS_PATH, response).await);
            }
            let answer: crate::api::MissingRequest =
                response.json().await.map_err(|e| self.unreachable(crate::api::MISSING_CHUNKS_PATH, &e))?;
            for hex in answer.ids {
                missing.push(hex.parse().map_err(|_| {
                    VaultError::Invalid(format!("the server answered {hex:?}, not a chunk id"))
                })?);
            }
        }
        Ok(missing)
    }
}
