//! The REST API under `/api/v1`: vault objects for clients' backends ([`objects`]), records
//! for people and tools ([`records`]), and cleanups the server runs itself ([`cleanup`]).
//! Every request but the OpenAPI document carries `Authorization: Bearer <token>`; each access
//! is checked against the token's grant ([`crate::auth`]); every refusal is logged with the
//! token's name. An error answers with the status its kind decides and a JSON body
//! `{"error", "kind", "hint"}` ([`caller::ErrorBody`]).

mod caller;
mod cleanup;
mod objects;
mod records;

use std::sync::Arc;

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use utoipa::OpenApi;

pub use caller::{AppState, ErrorBody, MAX_BODY, REQUEST_TIMEOUT, status_of};
pub use cleanup::{GcAnswer, GcRequest, PruneAnswer, PruneRequest};
pub use objects::{
    MAX_MISSING_BATCH, MISSING_CHUNKS_PATH, MissingRequest, ObjectEntry, PUT_HEADER, VERSION_HEADER,
};
pub use records::WhoAmI;

/// The router of the whole API.
pub fn router(state: Arc<AppState>) -> axum::Router {
    let guarded = axum::Router::new()
        .route(
            "/api/v1/objects/{*key}",
            get(objects::get_object)
                .head(objects::head_object)
                .put(objects::put_object)
                .delete(objects::delete_object),
        )
        .route("/api/v1/list", get(objects::list_objects))
        .route(MISSING_CHUNKS_PATH, post(objects::missing_chunks))
        .route("/api/v1/flush", post(objects::flush))
        .route("/api/v1/whoami", get(records::whoami))
        .route("/api/v1/vms", get(records::list_vms))
        .route("/api/v1/vms/{name}", get(records::get_vm))
        .route("/api/v1/vms/{name}/points", get(records::list_points))
        .route("/api/v1/vms/{name}/points/{point}", get(records::get_point))
        .route("/api/v1/policies", post(records::create_policy))
        .route("/api/v1/policies/{name}", get(records::get_policy))
        .route("/api/v1/jobs/{id}", get(records::get_job))
        .route("/api/v1/prune", post(cleanup::prune))
        .route("/api/v1/gc", post(cleanup::gc))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), caller::authenticate));
    axum::Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .merge(guarded)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(caller::body_limit))
        .layer(middleware::from_fn(caller::time_limit))
        .with_state(state)
}

/// The API's OpenAPI document, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vmvault vault server",
        description = "Vault objects for vmvault clients; the server never holds a key."
    ),
    paths(
        objects::get_object,
        objects::head_object,
        objects::put_object,
        objects::delete_object,
        objects::list_objects,
        objects::missing_chunks,
        objects::flush,
        records::whoami,
        records::list_vms,
        records::get_vm,
        records::list_points,
        records::get_point,
        records::create_policy,
        records::get_policy,
        records::get_job,
        cleanup::prune,
        cleanup::gc
    ),
    components(schemas(ObjectEntry, WhoAmI, MissingRequest, PruneRequest, GcRequest, ErrorBody))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
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
            "/api/v1/vms/{name}",
            "/api/v1/vms/{name}/points",
            "/api/v1/vms/{name}/points/{point}",
            "/api/v1/policies",
            "/api/v1/policies/{name}",
            "/api/v1/jobs/{id}",
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
