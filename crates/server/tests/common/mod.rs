//! What the server tests share: a real server on loopback over TLS, serving a real vault
//! with VM `web` (one backup) and policy `gold`, and tokens of each role.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::sync::Arc;

use engine::NoProgress;
use engine::backup::BackupOptions;
use engine::catalog::Catalog;
use engine::catalog::policy::Policy;
use engine::limits::Limits;
use engine::retention::Retention;
use engine::services::vms::{self, NewVm};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use server::auth::Role;
use server::client::{Trust, http_client};
use server::run::{ServerConfig, serve};
use server::tls::Identity;
use server::tokens::TokenStore;
use vault::backend::LocalBackend;
use vault::{InitEncryption, Vault};

pub struct Api {
    pub dir: std::path::PathBuf,
    pub base: String,
    pub http: reqwest::Client,
    pub admin: String,
    pub reader: String,
    /// Backup-operator tokens: for every VM, and for `web` alone.
    pub host: String,
    pub host_web: String,
    pub fingerprint: String,
    pub point: String,
    pub vault_dir: String,
}

impl Api {
    pub async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        self.send(&self.admin, Method::GET, path, None).await
    }

    /// An error answer: the status, and the body's kind, which must say the same.
    pub async fn error(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let (status, text) = self.send(token, method, path, body).await;
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {status} {text:?}: {e}"));
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {text}");
        (status, body["kind"].as_str().unwrap_or_default().to_string())
    }
}

pub fn sh(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A vault with VM `web` (one backup) and policy `gold`, served on loopback.
pub async fn setup(dir: &Path) -> Api {
    let image = dir.join("web.raw");
    sh("qemu-img", &["create", "-q", "-f", "raw", image.to_str().unwrap(), "16M"]);
    sh("qemu-io", &["-f", "raw", "-c", "write -P 0x5a 0 4M", image.to_str().unwrap()]);
    let backend = Arc::new(LocalBackend::new(dir.join("vault")));
    let vault = Arc::new(Vault::create(backend.clone(), InitEncryption::None).await.unwrap());
    let catalog = Catalog::of(vault.vault());
    let new = NewVm { name: "web".into(), disks: vec![(Some("vda".into()), image)], ..Default::default() };
    vms::add(catalog, vms::prepare(new, &Limits::default()).unwrap()).await.unwrap();
    let retention = Retention::parse(Some("7"), None, None, None).unwrap();
    let gold = Policy::new("gold", "daily 02:00", "UTC", retention).unwrap();
    engine::services::policies::create(catalog, &gold).await.unwrap();
    let point =
        engine::backup::backup(Arc::clone(&vault), "web", BackupOptions::default(), Arc::new(NoProgress))
            .await
            .unwrap()
            .point_id;

    let state = dir.join("state");
    let identity = Identity::self_signed(&state, &["localhost".to_string()]).unwrap();
    let fingerprint = identity.fingerprint().unwrap();
    let pin = fingerprint.clone();
    let tokens = TokenStore::new(&state);
    let (_, admin) = tokens.create("admin", Role::Admin, &[]).unwrap();
    let (_, reader) = tokens.create("reader", Role::Reader, &[]).unwrap();
    let (_, host) = tokens.create("host", Role::BackupOperator, &[]).unwrap();
    let (_, host_web) = tokens.create("host-web", Role::BackupOperator, &["web".to_string()]).unwrap();
    let config = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), backend, state, identity };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(config, move |bound| {
        let _ = tx.send(bound);
    }));
    let bound = rx.await.unwrap();
    let http = http_client(&Trust::Fingerprint(pin)).unwrap();
    let vault_dir = dir.join("vault").display().to_string();
    let base = format!("https://{bound}");
    Api { dir: dir.to_path_buf(), base, http, admin, reader, host, host_web, point, vault_dir, fingerprint }
}
