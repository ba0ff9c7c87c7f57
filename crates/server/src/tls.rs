//! The server's TLS identity: a certificate and key given by the operator, or a self-signed
//! pair made on first start (`<state>/tls/`), and the SHA-256 fingerprint clients pin.

use std::path::{Path, PathBuf};

/// Why the TLS identity could not be had.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    path: PathBuf,
    message: String,
}

fn error(path: &Path, message: impl ToString) -> TlsError {
    TlsError { path: path.to_path_buf(), message: message.to_string() }
}

/// A certificate chain and key, PEM.
pub struct Identity {
    /// The certificate (chain), PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

impl Identity {
    /// The operator's own certificate and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            cert_pem: std::fs::read_to_string(cert).map_err(|e| error(cert, e))?,
            key_pem: std::fs::read_to_string(key).map_err(|e| error(key, e))?,
        })
    }

    /// The self-signed pair in `<state>/tls/`, made now if absent (for `localhost`, the
    /// host's name and the given extra names).
    pub fn self_signed(state: &Path, names: &[String]) -> Result<Identity, TlsError> {
        let dir = state.join("tls");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if cert.exists() && key.exists() {
            return Identity::load(&cert, &key);
        }
        let mut subject = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        subject.extend(names.iter().cloned());
        let made = rcgen::generate_simple_self_signed(subject).map_err(|e| error(&cert, e))?;
        let identity = Identity { cert_pem: made.cert.pem(), key_pem: made.key_pair.serialize_pem() };
        std::fs::create_dir_all(&dir).map_err(|e| error(&dir, e))?;
        write_private(&key, identity.key_pem.as_bytes())?;
        std::fs::write(&cert, identity.cert_pem.as_bytes()).map_err(|e| error(&cert, e))?;
        Ok(identity)
    }

    /// SHA-256 of the first certificate's DER bytes, as colon-separated upper-case hex.
    pub fn fingerprint(&self) -> Result<String, TlsError> {
        let der =
            first_der(&self.cert_pem).ok_or_else(|| error(Path::new("certificate"), "no PEM certificate"))?;
        Ok(fingerprint(&der))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| error(path, e))?;
    file.write_all(bytes).map_err(|e| error(path, e))
}

/// The DER bytes of the first certificate in a PEM text.
fn first_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok().map(|c| c.to_vec())
}

/// SHA-256 of DER bytes as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// A fingerprint as typed: any case, with or without colons.
pub fn normalize_fingerprint(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_uppercase()
}
