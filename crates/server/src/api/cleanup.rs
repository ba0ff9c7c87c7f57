//! Cleanups the server runs itself, without the key: prune (retention and purge) and GC, as
//! server jobs, for an admin token that is limited to no VM.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use vault::ErrorKind;

use super::caller::{ApiError, AppState, Caller, log_denied};

/// Only an admin token for every VM may run cleanups on the server.
fn check_admin(caller: &Caller, what: &str) -> Result<(), ApiError> {
    let token = &caller.0;
    if token.role == crate::auth::Role::Admin && token.vms.is_empty() {
        return Ok(());
    }
    log_denied(token, &format!("run {what}"));
    Err(ApiError::with_status(
        StatusCode::FORBIDDEN,
        ErrorKind::Denied,
        format!("token {:?} (role {}) may not run {what}", token.name, token.role.as_str()),
        Some("it takes an admin token for every VM".into()),
    ))
}

/// What to clean up.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct PruneRequest {
    /// One VM, or every VM with points.
    pub vm: Option<String>,
    /// Only report.
    pub dry_run: bool,
}

/// A cleanup's reports and the server's job that made them.
#[derive(Deserialize, Serialize)]
pub struct PruneAnswer {
    /// Per VM.
    pub reports: Vec<engine::prune::PruneReport>,
    /// The server's job id.
    pub job: String,
}

/// Apply retention and purge soft-deleted data, on the server, without the key: each manifest's
/// point signature is checked with the config's public point key before retention reads it.
#[utoipa::path(post, path = "/api/v1/prune", request_body = PruneRequest,
    responses((status = 200, description = "the reports and the job id"), (status = 403, description = "not an admin token")))]
pub(super) async fn prune(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Json(request): Json<PruneRequest>,
) -> Result<Json<PruneAnswer>, ApiError> {
    check_admin(&caller, "prune")?;
    if let Some(vm) = &request.vm {
        engine::names::check_name("VM", vm)?;
    }
    let vault = vault::Vault::open(Arc::clone(&state.backend)).await?;
    let (reports, job) =
        engine::prune::prune_job(&vault, request.vm.as_deref(), jiff::Timestamp::now(), request.dry_run)
            .await?;
    Ok(Json(PruneAnswer { reports, job: job.id }))
}

/// How to collect garbage.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct GcRequest {
    /// Only report.
    pub dry_run: bool,
    /// How long to wait for older backups, in seconds.
    pub max_wait_s: u64,
}

/// A collection's report and the server's job.
#[derive(Deserialize, Serialize)]
pub struct GcAnswer {
    /// What it found and did.
    pub report: vault::gc::GcReport,
    /// The server's job id.
    pub job: String,
}

/// Collect unreferenced chunks on the server (GC needs no key).
#[utoipa::path(post, path = "/api/v1/gc", request_body = GcRequest,
    responses((status = 200, description = "the report and the job id"), (status = 403, description = "not an admin token")))]
pub(super) async fn gc(
    State(state): State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Json(request): Json<GcRequest>,
) -> Result<Json<GcAnswer>, ApiError> {
    check_admin(&caller, "gc")?;
    let vault = vault::Vault::open(Arc::clone(&state.backend)).await?;
    let options = vault::gc::GcOptions {
        dry_run: request.dry_run,
        max_wait: std::time::Duration::from_secs(request.max_wait_s),
        ..Default::default()
    };
    let (report, job) = engine::prune::gc_job(vault, options).await?;
    Ok(Json(GcAnswer { report, job: job.id }))
}
