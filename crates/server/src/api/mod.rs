//! The REST API under `/api/v1`: vault objects for clients' backends, a batch question
//! "which of these chunks do you lack?", and listings for people. Every request but the
//! OpenAPI document carries `Authorization: Bearer <token>`; each object access is checked
//! against the token's grant ([`crate::auth`]); every refusal is logged with the token's name.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use vault::VaultError;
use vault::backend::{Backend, Put, Version};

mod cleanup;

pub use cleanup::{GcAnswer, GcRequest, PruneAnswer, PruneRequest};

use crate::auth::{Access, Grant};
use crate::scope;
use crate::tokens::{Token, TokenStore};

/// Largest request body: a chunk (4 MiB of plaintext, sealed) with room to spare.
pub const MAX_BODY: usize = 64 << 20;

/// The route that answers which chunks of a batch the vault lacks (shared with the client).
pub const MISSING_CHUNKS_PATH: &str = "/api/v1/chunks/missing";

/// Most chunk ids one "missing" question may name.
pub const MAX_MISSING_BATCH: usize = 4096;

/// Longest a request may take, body included; a stalled client is cut off after it.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Header that carries a mutable document's version (the backend's opaque version string).
pub const VERSION_HEADER: &str = "x-vmvault-version";

/// Header of a create-if-absent answer: `created` or `existed`.
pub const PUT_HEADER: &str = "x-vmvault-put";

/// What the handlers share.
pub struct AppState {
    /// Where the vault lives.
    pub backend: Arc<dyn Backend>,
    /// The server's tokens.
    pub tokens: TokenStore,
}

/// The caller, once its token checked out.
#[derive(Clone)]
struct Caller(Token);

impl Caller {
    fn check(&self, access: Access, key: &str) -> Result<(), ApiError> {
        if self.0.grant().allows(access, key) { Ok(()) } else { Err(self.deny(access, key)) }
    }

    /// Check an access to an object, including, for a VM-scoped token, the VM a job object
    /// belongs to (read from the job record); `new` is the content of a record being written.
    async fn check_object(
        &self,
        state: &AppState,
        access: Access,
        key: &str,
        new: Option<&[u8]>,
    ) -> Result<(), ApiError> {
        self.check(access, key)?;
        if scope::may_touch_job(state.backend.as_ref(), &self.0.grant(), key, new).await? {
            Ok(())
        } else {
            Err(self.deny(access, key))
        }
    }

    /// Log a refusal and say it in one line.
    fn deny(&self, access: Access, key: &str) -> ApiError {
        log_denied(&self.0, access, key);
        ApiError(
            StatusCode::FORBIDDEN,
            format!("token {:?} (role {}) may not {} {key}", self.0.name, self.0.role.as_str(), verb(access)),
        )
    }
}

fn verb(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Create => "create",
        Access::Update => "overwrite",
        Access::Delete => "delete",
    }
}

/// One line on the server's log for every refused request; the token's name, never its secret.
fn log_denied(token: &Token, access: Access, key: &str) {
    eprintln!(
        "{} denied: token {} (role {}) may not {} {key}",
        jiff::Timestamp::now(),
        token.name,
        token.role.as_str(),
        verb(access)
    );
}

/// An error answer: a status and one line of text.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        let status = match &e {
            VaultError::NotFound { .. } => StatusCode::NOT_FOUND,
            VaultError::Conflict { .. } => StatusCode::PRECONDITION_FAILED,
            VaultError::Invalid(_) => StatusCode::BAD_REQUEST,
            VaultError::ChunkChecksum { .. } | VaultError::Corrupt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

async fn authenticate(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let secret = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let found = match &secret {
        Some(secret) => state.tokens.find(secret),
        None => Ok(None),
    };
    match found {
        Ok(Some(token)) => {
            request.extensions_mut().insert(Caller(token));
            next.run(request).await
        }
        Ok(None) => {
            eprintln!(
                "{} denied: {} {} with {}",
                jiff::Timestamp::now(),
                request.method(),
                request.uri().path(),
                if secret.is_some() { "an unknown or revoked token" } else { "no token" }
            );
            ApiError(
                StatusCode::UNAUTHORIZED,
                "no valid token; set VMVAULT_TOKEN to a token of this server".into(),
            )
            .into_response()
        }
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Cut off a request that takes longer than [`REQUEST_TIMEOUT`].
async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {} s", REQUEST_TIMEOUT.as_secs()),
        )
        .into_response(),
    }
}

/// The router of the whole API.
pub fn router(state: Arc<AppState>) -> axum::Router {
    let guarded = axum::Router::new()
        .route(
            "/api/v1/objects/{*key}",
            get(get_object).head(head_object).put(put_object).delete(delete_object),
        )
        .route("/api/v1/list", get(list_objects))
        .route(MISSING_CHUNKS_PATH, post(missing_chunks))
        .route("/api/v1/flush", post(flush))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/vms", get(list_vms))
        .route("/api/v1/prune", post(cleanup::prune))
        .route("/api/v1/gc", post(cleanup::gc))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate));
    axum::Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .merge(guarded)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(time_limit))
        .with_state(state)
}

/// The API's OpenAPI document, generated from the handlers below.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vmvault vault server",
        description = "Vault objects for vmvault clients; the server never holds a key."
    ),
    paths(
        get_object,
        head_object,
        put_object,
        delete_object,
        list_objects,
        missing_chunks,
        flush,
        whoami,
        list_vms,
        cleanup::prune,
        cleanup::gc
    ),
    components(schemas(ObjectEntry, WhoAmI, MissingRequest, PruneRequest, GcRequest))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

fn version_headers(version: &Version) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&version.0) {
        headers.insert(VERSION_HEADER, value);
    }
    headers
}

/// Read an object; its version comes in `x-vmvault-version`.
#[utoipa::path(get, path = "/api/v1/objects/{key}", params(("key" = String, Path, description = "object key")),
    responses((status = 200, description = "the object's bytes"), (status = 404, description = "absent"), (status = 403, description = "not for this token")))]
async fn get_object(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    caller.check_object(&state, Access::Read, &key, None).await?;
    match state.backend.get_versioned(&key).await? {
        Some((bytes, version)) => Ok((version_headers(&version), bytes).into_response()),
        None => Err(VaultError::NotFound { location: state.backend.location(), key }.into()),
    }
}

/// Whether an object exists, and its size in `x-vmvault-size`.
#[utoipa::path(head, path = "/api/v1/objects/{key}", params(("key" = String, Path, description = "object key")),
    responses((status = 200, description = "present"), (status = 404, description = "absent")))]
async fn head_object(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    caller.check_object(&state, Access::Read, &key, None).await?;
    match state.backend.head(&key).await? {
        Some(size) => Ok(([("x-vmvault-size", size.to_string())], StatusCode::OK).into_response()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

/// How a PUT writes.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
enum PutWay {
    /// Store unless present (chunks, indexes, manifests).
    CreateIfAbsent,
    /// Compare-and-swap on `x-vmvault-version` (absent: the document must not exist).
    Swap,
}

#[derive(Deserialize)]
struct PutQuery {
    mode: PutWay,
}

/// Write an object: `?mode=create-if-absent`, or `?mode=swap` with the version read in
/// `x-vmvault-version` (none: create). A chunk's stored-bytes checksum is checked first.
#[utoipa::path(put, path = "/api/v1/objects/{key}", params(("key" = String, Path, description = "object key"),
        ("mode" = String, Query, description = "create-if-absent or swap")),
    responses((status = 200, description = "written, or already present"), (status = 412, description = "lost a race"),
        (status = 422, description = "a chunk failed its checksum"), (status = 403, description = "not for this token")))]
async fn put_object(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
    Query(query): Query<PutQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expected = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).map(|v| Version(v.to_string()));
    let access = if expected.is_some() { Access::Update } else { Access::Create };
    caller.check_object(&state, access, &key, Some(&body)).await?;
    if let Some(id) = vault::layout::chunk_id_of(&key) {
        vault::blob::check(&id, &body)?;
    }
    match query.mode {
        PutWay::CreateIfAbsent => {
            let put = state.backend.put_if_absent(&key, body).await?;
            let answer = if put == Put::Created { "created" } else { "existed" };
            Ok(([(PUT_HEADER, answer)], StatusCode::OK).into_response())
        }
        PutWay::Swap => {
            let version = state.backend.compare_and_swap(&key, expected.as_ref(), body).await?;
            Ok((version_headers(&version), StatusCode::OK).into_response())
        }
    }
}

/// Delete an object (absent is fine).
#[utoipa::path(delete, path = "/api/v1/objects/{key}", params(("key" = String, Path, description = "object key")),
    responses((status = 204, description = "gone"), (status = 403, description = "not for this token")))]
async fn delete_object(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.check_object(&state, Access::Delete, &key, None).await?;
    state.backend.delete(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One listed object.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ObjectEntry {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

#[derive(Deserialize)]
struct ListQuery {
    prefix: String,
}

/// The objects under a prefix that this token may read.
#[utoipa::path(get, path = "/api/v1/list", params(("prefix" = String, Query, description = "key prefix")),
    responses((status = 200, body = Vec<ObjectEntry>)))]
async fn list_objects(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<ObjectEntry>>, ApiError> {
    let grant: Grant = caller.0.grant();
    let mut visible = Vec::new();
    for o in state.backend.list(&query.prefix).await? {
        if grant.allows(Access::Read, &o.key)
            && scope::may_touch_job(state.backend.as_ref(), &grant, &o.key, None).await?
        {
            visible.push(ObjectEntry { key: o.key, size: o.size });
        }
    }
    Ok(Json(visible))
}

/// Chunk ids (hex) a client is about to upload.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct MissingRequest {
    /// At most 4096 ids.
    pub ids: Vec<String>,
}

/// Which of these chunks the vault lacks, so a client sends only those.
#[utoipa::path(post, path = "/api/v1/chunks/missing", request_body = MissingRequest,
    responses((status = 200, body = MissingRequest, description = "the ids the vault lacks")))]
async fn missing_chunks(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Json(request): Json<MissingRequest>,
) -> Result<Json<MissingRequest>, ApiError> {
    if request.ids.len() > MAX_MISSING_BATCH {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_MISSING_BATCH} ids per question"),
        ));
    }
    let mut ids = Vec::with_capacity(request.ids.len());
    for hex in request.ids {
        let id: vault::ChunkId = hex
            .parse()
            .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{hex:?} is not a chunk id")))?;
        caller.check(Access::Read, &vault::layout::chunk(&id))?;
        ids.push(id);
    }
    let missing = state.backend.missing_chunks(&ids).await?;
    Ok(Json(MissingRequest { ids: missing.iter().map(|id| id.to_hex()).collect() }))
}

/// Make earlier writes durable (before a client commits a manifest).
#[utoipa::path(post, path = "/api/v1/flush", responses((status = 204, description = "durable")))]
async fn flush(State(state): State<Arc<AppState>>) -> Result<StatusCode, ApiError> {
    state.backend.flush().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's token.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// Token name.
    pub name: String,
    /// Role.
    pub role: String,
    /// VMs it is limited to (empty: all).
    pub vms: Vec<String>,
}

/// Who the server takes the caller for.
#[utoipa::path(get, path = "/api/v1/whoami", responses((status = 200, body = WhoAmI)))]
async fn whoami(axum::Extension(caller): axum::Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.0.name.clone(),
        role: caller.0.role.as_str().into(),
        vms: caller.0.vms.clone(),
    })
}

/// The registered VMs this token may see.
#[utoipa::path(get, path = "/api/v1/vms", responses((status = 200, body = Vec<String>)))]
async fn list_vms(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Vec<String>>, ApiError> {
    let grant = caller.0.grant();
    let vms = engine::registry::list(state.backend.as_ref())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(
        vms.into_iter()
            .map(|vm| vm.name)
            .filter(|name| grant.allows(Access::Read, &vault::layout::vm(name)))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/api/v1/objects/{key}",
            "/api/v1/list",
            "/api/v1/chunks/missing",
            "/api/v1/flush",
            "/api/v1/whoami",
            "/api/v1/vms",
            "/api/v1/prune",
            "/api/v1/gc",
        ] {
            assert!(paths.contains_key(path), "{path} missing from the OpenAPI document");
        }
        let object = &paths["/api/v1/objects/{key}"];
        for method in ["get", "head", "put", "delete"] {
            assert!(object.get(method).is_some(), "objects: {method}");
        }
    }
}
