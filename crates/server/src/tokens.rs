//! API tokens, made on the server host and kept there (`<state>/tokens.json`, mode 0600).
//! Only a hash of each secret is stored; the secret is shown once, at creation. Secrets are
//! 256 random bits, so a fast hash (BLAKE3) is enough, and comparing hashes is constant-time.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::auth::{Grant, Role};

/// What a token secret starts with, so a leaked one is recognisable in logs and scanners.
pub const SECRET_PREFIX: &str = "vmvt_";

/// One token as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Token {
    /// Unique name, shown in logs instead of the secret.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// VMs it is limited to; empty means all.
    pub vms: Vec<String>,
    /// BLAKE3 of the secret, hex.
    pub hash: String,
    /// When it was made.
    pub created: Timestamp,
}

impl Token {
    /// The rights it carries.
    pub fn grant(&self) -> Grant {
        Grant { role: self.role, vms: self.vms.clone() }
    }
}

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("a token named {0:?} exists; revoke it first or pick another name")]
    Exists(String),
    #[error("no token named {0:?}; see `vmvault server token list`")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
}

/// The server's token file.
pub struct TokenStore {
    path: PathBuf,
}

fn hash(secret: &str) -> blake3::Hash {
    blake3::hash(secret.as_bytes())
}

impl TokenStore {
    /// The token file in the server's state directory.
    pub fn new(state: &Path) -> TokenStore {
        TokenStore { path: state.join("tokens.json") }
    }

    fn error(&self, message: impl ToString) -> TokenError {
        TokenError::File { path: self.path.clone(), message: message.to_string() }
    }

    /// Every token.
    pub fn list(&self) -> Result<Vec<Token>, TokenError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.error(format!("damaged: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(self.error(e)),
        }
    }

    fn save(&self, tokens: &[Token]) -> Result<(), TokenError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
        }
        let temp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(tokens).map_err(|e| self.error(e))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| self.error(e))?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(|e| self.error(e))?;
        std::fs::rename(&temp, &self.path).map_err(|e| self.error(e))
    }

    /// Make a token; returns it and its secret, which is never stored.
    pub fn create(&self, name: &str, role: Role, vms: &[String]) -> Result<(Token, String), TokenError> {
        engine::names::check_name("token", name).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let mut tokens = self.list()?;
        if tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::Exists(name.to_string()));
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| TokenError::Invalid(format!("no random numbers: {e}")))?;
        let secret = format!("{SECRET_PREFIX}{}", hex::encode(random));
        let token = Token {
            name: name.to_string(),
            role,
            vms: vms.to_vec(),
            hash: hash(&secret).to_hex().to_string(),
            created: Timestamp::now(),
        };
        tokens.push(token.clone());
        self.save(&tokens)?;
        Ok((token, secret))
    }

    /// Forget a token; requests with it are refused from then on.
    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        let mut tokens = self.list()?;
        let before = tokens.len();
        tokens.retain(|t| t.name != name);
        if tokens.len() == before {
            return Err(TokenError::Unknown(name.to_string()));
        }
        self.save(&tokens)
    }

    /// The token whose secret this is.
    pub fn find(&self, secret: &str) -> Result<Option<Token>, TokenError> {
        let presented = hash(secret);
        Ok(self.list()?.into_iter().find(|t| blake3::Hash::from_hex(&t.hash).is_ok_and(|h| h == presented)))
    }
}
