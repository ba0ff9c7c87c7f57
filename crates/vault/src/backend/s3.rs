//! A vault in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Garage…), through the
//! `object_store` crate.
//!
//! The two kinds of write map onto conditional requests: create-if-absent is a PUT with
//! `If-None-Match: *`, compare-and-swap a PUT with `If-Match: <ETag read>`; a store that
//! answers 412 lost the race. Objects above [`MULTIPART_FROM`] go up in parts, several at once;
//! multipart uploads cannot be made conditional everywhere, so those (only ever chunks, whose
//! key is their content's id) are written after a HEAD finds them absent — a racing writer
//! stores the same bytes. Transient errors (5xx, timeouts, dropped connections) are retried
//! with exponential backoff by `object_store`, for at most [`RETRY_FOR`] per request. A PUT
//! that succeeds is durable, so [`Backend::flush`] has nothing to do.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
    WriteMultipart,
};

use super::{Backend, ObjectInfo, Put, Version, check_key};
use crate::error::{Result, VaultError};

/// Objects this large or larger are uploaded in parts.
pub const MULTIPART_FROM: usize = 16 << 20;

/// Size of one part of a multipart upload.
const PART_SIZE: usize = 8 << 20;

/// Parts of one object in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// The variables that configure the connection.
pub const SETTINGS: [&str; 6] = [
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

/// How long one request is retried before its error is reported.
pub const RETRY_FOR: Duration = Duration::from_secs(60);

/// A vault stored under a prefix of an S3 bucket.
#[derive(Clone)]
pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
}

impl S3Backend {
    /// The vault at `s3://BUCKET[/PREFIX]`, configured from the usual `AWS_*` variables
    /// (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`…).
    pub fn from_url(url: &str) -> Result<S3Backend> {
        S3Backend::from_url_with(url, |name| std::env::var(name).ok())
    }

    /// As [`S3Backend::from_url`], with [`SETTINGS`] looked up by `setting` first (tests and
    /// servers configure several stores in one process this way). A plain-http endpoint is
    /// accepted only when it is named explicitly.
    pub fn from_url_with(url: &str, setting: impl Fn(&str) -> Option<String>) -> Result<S3Backend> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| invalid_url(url, "it must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        if bucket.is_empty() {
            return Err(invalid_url(url, "it names no bucket"));
        }
        if !prefix.is_empty() {
            check_key(prefix).map_err(|_| {
                invalid_url(url, "the prefix may hold only letters, digits, '.', '-', '_' and '/'")
            })?;
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: 6,
            retry_timeout: RETRY_FOR,
        });
        for name in SETTINGS {
            if let Some(value) = setting(name) {
                let key = name
                    .to_ascii_lowercase()
                    .parse::<AmazonS3ConfigKey>()
                    .map_err(|e| VaultError::Invalid(format!("{name}: {e}")))?;
                builder = builder.with_config(key, value);
            }
        }
        if setting("AWS_REGION").is_none() && setting("AWS_DEFAULT_REGION").is_none() {
            builder = builder.with_region("us-east-1");
        }
        let endpoint = setting("AWS_ENDPOINT_URL").or_else(|| setting("AWS_ENDPOINT")).unwrap_or_default();
        let options = ClientOptions::new()
            .with_allow_http(endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120));
        let store = builder.with_client_options(options).build().map_err(|e| {
            invalid_url(
                url,
                &format!("{e}; set AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
            )
        })?;
        Ok(S3Backend { store: Arc::new(store), bucket: bucket.to_string(), prefix: prefix.to_string() })
    }

    fn path(&self, key: &str) -> Result<Path> {
        check_key(key)?;
        Ok(if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        })
    }

    fn failed(&self, key: &str, e: object_store::Error) -> VaultError {
        match e {
            object_store::Error::NotFound { .. } => {
                VaultError::NotFound { location: self.location(), key: key.to_string() }
            }
            e => VaultError::Storage {
                location: self.location(),
                key: key.to_string(),
                message: format!(
                    "{}; check the endpoint, the bucket and the credentials (AWS_*)",
                    one_line(&e)
                ),
            },
        }
    }

    async fn put_large(&self, key: &str, path: &Path, data: Bytes) -> Result<Put> {
        if self.head(key).await?.is_some() {
            return Ok(Put::Existed);
        }
        let upload = self.store.put_multipart(path).await.map_err(|e| self.failed(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for part in data.chunks(PART_SIZE) {
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| self.failed(key, e))?;
            writer.write(part);
        }
        writer.finish().await.map_err(|e| self.failed(key, e))?;
        Ok(Put::Created)
    }
}

fn invalid_url(url: &str, why: &str) -> VaultError {
    VaultError::Invalid(format!("vault {url}: {why}"))
}

/// An object_store error on one line, without the request's URL query (which may hold a
/// signature) — the source chain says what failed.
fn one_line(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        let got = self.store.get(&path).await.map_err(|e| self.failed(key, e))?;
        got.bytes().await.map_err(|e| self.failed(key, e))
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(key, e)),
        }
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<Put> {
        let path = self.path(key)?;
        if data.len() >= MULTIPART_FROM {
            return self.put_large(key, &path, data).await;
        }
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, PutPayload::from(data), options).await {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Ok(Put::Existed)
            }
            Err(e) => Err(self.failed(key, e)),
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        let path = self.path(key)?;
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed(key, e)),
        };
        let etag = got.meta.e_tag.clone().ok_or_else(|| VaultError::Storage {
            location: self.location(),
            key: key.to_string(),
            message: "the store returned no ETag, so documents cannot be updated safely".into(),
        })?;
        Ok(Some((got.bytes().await.map_err(|e| self.failed(key, e))?, Version(etag))))
    }

    async fn compare_and_swap(&self, key: &str, expected: Option<&Version>, data: Bytes) -> Result<Version> {
        let path = self.path(key)?;
        let mode = match expected {
            None => PutMode::Create,
            Some(version) => PutMode::Update(UpdateVersion { e_tag: Some(version.0.clone()), version: None }),
        };
        let options = PutOptions { mode, ..Default::default() };
        match self.store.put_opts(&path, PutPayload::from(data), options).await {
            Ok(done) => done.e_tag.map(Version).ok_or_else(|| VaultError::Storage {
                location: self.location(),
                key: key.to_string(),
                message: "the store returned no ETag for a write".into(),
            }),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Err(VaultError::Conflict { key: key.to_string() })
            }
            Err(e) => Err(self.failed(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // List the directory-like part, then keep the keys that start with the whole prefix.
        let dir_part = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
        let full = match (self.prefix.is_empty(), dir_part.is_empty()) {
            (true, _) => dir_part.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{dir_part}", self.prefix),
        };
        let base = (!full.is_empty()).then(|| Path::from(full.as_str()));
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let objects: Vec<object_store::ObjectMeta> =
            self.store.list(base.as_ref()).try_collect().await.map_err(|e| self.failed(prefix, e))?;
        let mut out: Vec<ObjectInfo> = objects
            .into_iter()
            .filter_map(|meta| {
                let key = meta.location.as_ref().strip_prefix(strip.as_str())?.to_string();
                (key.starts_with(prefix) && check_key(&key).is_ok())
                    .then_some(ObjectInfo { key, size: meta.size })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn is_remote(&self) -> bool {
        true
    }
}
