//! Records for people and tools: who the caller is, the registered VMs, their recovery points,
//! policies and job records — read without the key, each answer a catalog record as the
//! engine keeps it. Handlers only check the caller and call the engine.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vault::layout;

use super::caller::{ApiError, AppState, Caller};
use crate::auth::Access;
use engine::catalog::Catalog;
use engine::catalog::policy::Policy;
use engine::catalog::vm::VmRecord;
use engine::jobs::JobRecord;
use engine::points::{PointReader, RecoveryPoint};

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
pub(super) async fn whoami(axum::Extension(caller): axum::Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.0.name.clone(),
        role: caller.0.role.as_str().into(),
        vms: caller.0.vms.clone(),
    })
}

/// The registered VMs this token may see.
#[utoipa::path(get, path = "/api/v1/vms", responses((status = 200, body = Vec<String>)))]
pub(super) async fn list_vms(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Vec<String>>, ApiError> {
    let grant = caller.0.grant();
    let vault = state.vault().await?;
    let vms: Vec<VmRecord> = Catalog::of(&vault).list().await?;
    Ok(Json(
        vms.into_iter()
            .map(|vm| vm.name)
            .filter(|name| grant.allows(Access::Read, &layout::vm(name)))
            .collect(),
    ))
}

/// One registered VM.
#[utoipa::path(get, path = "/api/v1/vms/{name}", params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "the VM's record"), (status = 404, description = "no such VM"),
        (status = 400, description = "not a VM name"), (status = 403, description = "not for this token")))]
pub(super) async fn get_vm(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<VmRecord>, ApiError> {
    engine::names::check_name("VM", &name)?;
    caller.check(Access::Read, &layout::vm(&name))?;
    let vault = state.vault().await?;
    Ok(Json(Catalog::of(&vault).get(&name).await?))
}

/// A VM's recovery points, oldest first (each manifest's signature checked without the key),
/// as `vmvault points --json` lists them: each with `state` `intact`, and after them the
/// damaged ones (`id`, `state` `damaged`, `problem`).
#[utoipa::path(get, path = "/api/v1/vms/{name}/points", params(("name" = String, Path, description = "VM name")),
    responses((status = 200, description = "the points"), (status = 404, description = "no such VM and no points")))]
pub(super) async fn list_points(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    Ok(Json(points_of(&state, &caller, &name).await?))
}

/// One recovery point of a VM.
#[utoipa::path(get, path = "/api/v1/vms/{name}/points/{point}",
    params(("name" = String, Path, description = "VM name"), ("point" = String, Path, description = "point id")),
    responses((status = 200, description = "the point"), (status = 404, description = "no such point")))]
pub(super) async fn get_point(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((name, point)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    engine::names::check_name("point", &point)?;
    let found = points_of(&state, &caller, &name).await?.into_iter().find(|p| p["id"] == point.as_str());
    found.map(Json).ok_or_else(|| engine::EngineError::NoSuchPoint { vm: name, point }.into())
}

async fn points_of(state: &AppState, caller: &Caller, vm: &str) -> Result<Vec<serde_json::Value>, ApiError> {
    engine::names::check_name("VM", vm)?;
    caller.check(Access::Read, &layout::points_of(vm))?;
    let vault = state.vault().await?;
    let (manifests, damaged) = PointReader::Structure(&vault).scan(vm).await?;
    if manifests.is_empty() && damaged.is_empty() {
        // A VM with no points must at least be registered.
        Catalog::of(&vault).get::<VmRecord>(vm).await?;
    }
    let mut rows = Vec::with_capacity(manifests.len() + damaged.len());
    for manifest in &manifests {
        let mut row = serde_json::to_value(RecoveryPoint::from(manifest))
            .map_err(|e| ApiError::new(vault::ErrorKind::Failed, e.to_string()))?;
        row["state"] = "intact".into();
        rows.push(row);
    }
    for d in damaged {
        rows.push(serde_json::json!({ "id": d.point, "state": "damaged", "problem": d.cause.to_string() }));
    }
    Ok(rows)
}

/// One policy.
#[utoipa::path(get, path = "/api/v1/policies/{name}", params(("name" = String, Path, description = "policy name")),
    responses((status = 200, description = "the policy"), (status = 404, description = "no such policy")))]
pub(super) async fn get_policy(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Policy>, ApiError> {
    let vault = state.vault().await?;
    Ok(Json(Catalog::of(&vault).get(&name).await?))
}

/// Create a policy (the body is the policy record).
#[utoipa::path(post, path = "/api/v1/policies",
    responses((status = 201, description = "created"), (status = 409, description = "a policy of that name exists"),
        (status = 400, description = "an invalid name, zone or retention"), (status = 403, description = "not for this token")))]
pub(super) async fn create_policy(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Json(policy): Json<Policy>,
) -> Result<StatusCode, ApiError> {
    engine::names::check_name("policy", &policy.name)?;
    caller.check(Access::Create, &layout::policy(&policy.name))?;
    let vault = state.vault().await?;
    engine::services::policies::create(Catalog::of(&vault), &policy).await?;
    Ok(StatusCode::CREATED)
}

/// One job record.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = String, Path, description = "job id")),
    responses((status = 200, description = "the job"), (status = 404, description = "no such job")))]
pub(super) async fn get_job(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    engine::names::check_name("job", &id)?;
    caller.check_object(&state, Access::Read, &layout::job(&id), None).await?;
    let vault = state.vault().await?;
    Ok(Json(engine::catalog::job::get(Catalog::of(&vault), &id).await?))
}
