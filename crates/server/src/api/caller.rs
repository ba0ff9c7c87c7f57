//! What every handler shares: the server's state, the authenticated caller and its checks,
//! and the error answer — a status decided by the error's kind, and a JSON body with the
//! message and, apart from it, the hint.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vault::backend::Backend;
use vault::{ErrorKind, VaultError};

use crate::auth::Access;
use crate::owners::Owners;
use crate::scope;
use crate::tokens::{Token, TokenStore};

/// Largest request body: a chunk (4 MiB of plaintext, sealed) with room to spare.
pub const MAX_BODY: usize = 64 << 20;

/// Longest a request may take, body included; a stalled client is cut off after it.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What the handlers share.
pub struct AppState {
    /// Where the vault lives.
    pub backend: Arc<dyn Backend>,
    /// The server's tokens.
    pub tokens: TokenStore,
    /// Which token wrote each job record and session.
    pub owners: Owners,
}

impl AppState {
    /// The vault, opened afresh (its config may have changed since the last request).
    pub(super) async fn vault(&self) -> Result<vault::Vault, ApiError> {
        Ok(vault::Vault::open(Arc::clone(&self.backend)).await?)
    }
}

/// The caller, once its token checked out.
#[derive(Clone)]
pub(super) struct Caller(pub(super) Token);

impl Caller {
    pub(super) fn check(&self, access: Access, key: &str) -> Result<(), ApiError> {
        if self.0.grant().allows(access, key) { Ok(()) } else { Err(self.deny(access, key)) }
    }

    /// Check an access to an object, including, for a VM-scoped token, the VM a job object
    /// belongs to (read from the job record); `new` is the content of a record being written.
    pub(super) async fn check_object(
        &self,
        state: &AppState,
        access: Access,
        key: &str,
        new: Option<&[u8]>,
    ) -> Result<(), ApiError> {
        self.check(access, key)?;
        let changes = matches!(access, Access::Update | Access::Delete);
        if changes && !self.is_admin() && !state.owners.may_change(key, &self.0.name) {
            return Err(self.deny(access, key));
        }
        if scope::may_touch_job(state.backend.as_ref(), &self.0.grant(), key, new).await? {
            Ok(())
        } else {
            Err(self.deny(access, key))
        }
    }

    fn is_admin(&self) -> bool {
        self.0.role == crate::auth::Role::Admin
    }

    /// Note what the caller just created or deleted, for [`Owners`] (an admin owns nothing:
    /// what it writes stays changeable by the hosts).
    pub(super) fn wrote(&self, state: &AppState, access: Access, key: &str) -> Result<(), ApiError> {
        let noted = match access {
            Access::Create if !self.is_admin() => state.owners.created(key, &self.0.name),
            Access::Delete => state.owners.deleted(key),
            _ => Ok(()),
        };
        noted.map_err(|e| ApiError::new(ErrorKind::Failed, format!("the server's owner list: {e}")))
    }

    /// Log an upload the server refused for what it holds (a forged manifest, a malformed
    /// document): one line with the token's name.
    pub(super) fn log_refused(&self, why: &str) {
        log_denied(&self.0, &format!("write this: {why}"));
    }

    /// Log a refusal and say it in one line.
    pub(super) fn deny(&self, access: Access, key: &str) -> ApiError {
        log_denied(&self.0, &format!("{} {key}", verb(access)));
        ApiError::new(
            ErrorKind::Denied,
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
pub(super) fn log_denied(token: &Token, what: &str) {
    eprintln!(
        "{} denied: token {} (role {}) may not {what}",
        jiff::Timestamp::now(),
        token.name,
        token.role.as_str()
    );
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// One line: what happened, to what.
    pub error: String,
    /// The error's kind (`not-found`, `exists`, `invalid`, …), which also decided the status.
    pub kind: String,
    /// What to do about it, when there is something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

/// The HTTP status of each kind of error.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Exists | ErrorKind::Refused | ErrorKind::Cancelled => StatusCode::CONFLICT,
        ErrorKind::Conflict => StatusCode::PRECONDITION_FAILED,
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Damaged => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Denied => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Busy => StatusCode::LOCKED,
        ErrorKind::Limit => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An answer of this kind, without a hint.
    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError::with_status(status_of(kind), kind, message.into(), None)
    }

    /// An answer whose status is not its kind's (413, 401, 408).
    pub(super) fn with_status(
        status: StatusCode,
        kind: ErrorKind,
        error: String,
        hint: Option<String>,
    ) -> ApiError {
        ApiError { status, body: ErrorBody { error, kind: kind.as_str().into(), hint } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// How an answer names the server's vault: never by its path on the server.
const VAULT_SHOWN_AS: &str = "the server's vault";

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        let e = e.with_location_shown_as(VAULT_SHOWN_AS);
        ApiError::with_status(status_of(e.kind()), e.kind(), e.to_string(), e.hint())
    }
}

impl From<engine::EngineError> for ApiError {
    fn from(e: engine::EngineError) -> Self {
        match e {
            engine::EngineError::Vault(e) => e.into(),
            e => ApiError::with_status(status_of(e.kind()), e.kind(), e.to_string(), e.hint()),
        }
    }
}

/// Let a request through only with a valid token (its caller goes with it).
pub(super) async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
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
            ApiError::with_status(
                StatusCode::UNAUTHORIZED,
                ErrorKind::Denied,
                "no valid token".into(),
                Some("set VMVAULT_TOKEN to a token of this server".into()),
            )
            .into_response()
        }
        Err(e) => ApiError::new(ErrorKind::Failed, e.to_string()).into_response(),
    }
}

/// Answer 413 to a request that announces a body over [`MAX_BODY`], before reading
/// any of it, and close the connection (the rest of the body is never read).
pub(super) async fn body_limit(request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(length) if length > MAX_BODY as u64 => {
            let mut answer = ApiError::with_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::Limit,
                format!("a body of {length} bytes; at most {} are accepted", MAX_BODY),
                None,
            )
            .into_response();
            // HTTP/2 has no such header (the stream ends on its own); HTTP/1 closes.
            if request.version() < axum::http::Version::HTTP_2 {
                let close = axum::http::HeaderValue::from_static("close");
                answer.headers_mut().insert(axum::http::header::CONNECTION, close);
            }
            answer
        }
        _ => next.run(request).await,
    }
}

/// Cut off a request that takes longer than [`REQUEST_TIMEOUT`].
pub(super) async fn time_limit(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::with_status(
            StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Unavailable,
            format!("the request took longer than {} s", REQUEST_TIMEOUT.as_secs()),
            None,
        )
        .into_response(),
    }
}
