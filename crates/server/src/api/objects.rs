//! The object API a client's vault backend speaks: read, write (create-if-absent or
//! compare-and-swap), delete and list objects, each checked against the caller's grant; the
//! batch question "which of these chunks do you lack?"; and flush.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vault::backend::{Put, Version};
use vault::layout::ObjectClass;
use vault::{ErrorKind, VaultError};

use super::caller::{ApiError, AppState, Caller};
use crate::auth::{Access, Grant};
use crate::scope;

/// The route that answers which chunks of a batch the vault lacks (shared with the client).
pub const MISSING_CHUNKS_PATH: &str = "/api/v1/chunks/missing";

/// Most chunk ids one "missing" question may name.
pub const MAX_MISSING_BATCH: usize = 4096;

/// Header that carries a mutable document's version (the backend's opaque version string).
pub const VERSION_HEADER: &str = "x-vmvault-version";

/// Header of a create-if-absent answer: `created` or `existed`.
pub const PUT_HEADER: &str = "x-vmvault-put";

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
pub(super) async fn get_object(
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
pub(super) async fn head_object(
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
pub(super) enum PutWay {
    /// Store unless present (chunks, indexes, manifests).
    CreateIfAbsent,
    /// Compare-and-swap on `x-vmvault-version` (absent: the document must not exist).
    Swap,
}

#[derive(Deserialize)]
pub(super) struct PutQuery {
    mode: PutWay,
}

/// Write an object: `?mode=create-if-absent`, or `?mode=swap` with the version read in
/// `x-vmvault-version` (none: create). A chunk's stored-bytes checksum is checked first.
#[utoipa::path(put, path = "/api/v1/objects/{key}", params(("key" = String, Path, description = "object key"),
        ("mode" = String, Query, description = "create-if-absent or swap")),
    responses((status = 200, description = "written, or already present"), (status = 412, description = "lost a race"),
        (status = 422, description = "a chunk failed its checksum"), (status = 403, description = "not for this token")))]
pub(super) async fn put_object(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
    Query(query): Query<PutQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expected = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()).map(|v| Version(v.to_string()));
    let access = if expected.is_some() { Access::Update } else { Access::Create };
    if matches!(ObjectClass::of(&key), ObjectClass::Unknown | ObjectClass::PointOther { .. }) {
        return Err(ApiError::new(ErrorKind::Invalid, format!("{key}: not an object vmvault writes")));
    }
    caller.check_object(&state, access, &key, Some(&body)).await?;
    if let Err(rejected) = crate::validate::check_write(&state.backend, &key, &body).await {
        caller.log_refused(&rejected.message);
        return Err(ApiError::new(rejected.kind, rejected.message));
    }
    match query.mode {
        PutWay::CreateIfAbsent => {
            let put = state.backend.put_if_absent(&key, body).await?;
            if put == Put::Created {
                caller.wrote(&state, access, &key)?;
            }
            let answer = if put == Put::Created { "created" } else { "existed" };
            Ok(([(PUT_HEADER, answer)], StatusCode::OK).into_response())
        }
        PutWay::Swap => {
            let version = state.backend.compare_and_swap(&key, expected.as_ref(), body).await?;
            caller.wrote(&state, access, &key)?;
            Ok((version_headers(&version), StatusCode::OK).into_response())
        }
    }
}

/// Delete an object (absent is fine).
#[utoipa::path(delete, path = "/api/v1/objects/{key}", params(("key" = String, Path, description = "object key")),
    responses((status = 204, description = "gone"), (status = 403, description = "not for this token")))]
pub(super) async fn delete_object(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.check_object(&state, Access::Delete, &key, None).await?;
    state.backend.delete(&key).await?;
    caller.wrote(&state, Access::Delete, &key)?;
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
pub(super) struct ListQuery {
    prefix: String,
}

/// The objects under a prefix that this token may read.
#[utoipa::path(get, path = "/api/v1/list", params(("prefix" = String, Query, description = "key prefix")),
    responses((status = 200, body = Vec<ObjectEntry>)))]
pub(super) async fn list_objects(
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
pub(super) async fn missing_chunks(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Json(request): Json<MissingRequest>,
) -> Result<Json<MissingRequest>, ApiError> {
    if request.ids.len() > MAX_MISSING_BATCH {
        return Err(ApiError::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Invalid,
            format!("at most {MAX_MISSING_BATCH} ids per question"),
            None,
        ));
    }
    let mut ids = Vec::with_capacity(request.ids.len());
    for hex in request.ids {
        let id: vault::ChunkId =
            hex.parse().map_err(|e: vault::id::BadId| ApiError::new(ErrorKind::Invalid, e.to_string()))?;
        caller.check(Access::Read, &vault::layout::chunk(&id))?;
        ids.push(id);
    }
    let missing = state.backend.missing_chunks(&ids).await?;
    Ok(Json(MissingRequest { ids: missing.iter().map(|id| id.to_hex()).collect() }))
}

/// Make earlier writes durable (before a client commits a manifest).
#[utoipa::path(post, path = "/api/v1/flush", responses((status = 204, description = "durable")))]
pub(super) async fn flush(State(state): State<Arc<AppState>>) -> Result<StatusCode, ApiError> {
    state.backend.flush().await?;
    Ok(StatusCode::NO_CONTENT)
}
