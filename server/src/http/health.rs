//! `GET /health` (liveness) and `GET /ready` (readiness): no API key needed.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::{AppError, ErrorCode};
use super::shapes::{ErrorEnvelope, HealthOut};
use super::state::AppState;

/// `GET /health`, `GET /ready`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// Liveness: the process is up and serving. Never touches the database.
#[utoipa::path(get, path = "/health", security(()), responses((status = 200, description = "The process is up", body = HealthOut)))]
pub(super) async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers and has the extension, and the server follows its
/// key announcements (so that keys are checked from memory).
#[utoipa::path(get, path = "/ready", security(()), responses((status = 200, description = "The database answers and has the extension, and key announcements are followed", body = HealthOut), (status = 503, description = "The database is down, or its key announcements are not followed yet", body = ErrorEnvelope)))]
pub(super) async fn ready(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    state.client.ping().await?;
    if !state.keys.current() {
        return Err(AppError::new(
            ErrorCode::ServiceUnavailable,
            "not following the database's key announcements yet",
        )
        .with_retry_after(1));
    }
    Ok(Json(json!({"status": "ok"})))
}
