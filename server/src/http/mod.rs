//! The HTTP API. [`app`] builds the whole router, so tests can drive it with `oneshot`.

mod api;
mod auth;
mod body;
pub mod correlation;
pub mod group;
pub mod limit;
pub mod openapi;

pub use auth::{KeyCache, Tenant};

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::compression::CompressionLayer;

use crate::error::{AppError, ErrorCode};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database, through the client crate.
    pub client: triggers_client::Client,
    /// The per-key rate limit, if any.
    pub limiter: Option<limit::Limiter>,
    /// Group commit for POST /events.
    pub group: group::GroupCommit,
    /// Recently authenticated keys.
    pub keys: KeyCache,
}

/// The default per-key rate limit, requests per minute.
pub const DEFAULT_RATE_LIMIT: u32 = 1000;

impl AppState {
    /// State over `client` with the default rate limit and two group committers.
    /// Needs a Tokio runtime (the committers are tasks).
    pub fn new(client: triggers_client::Client) -> AppState {
        let group = group::GroupCommit::start(client.clone(), 2);
        AppState {
            client,
            limiter: Some(limit::Limiter::per_minute(DEFAULT_RATE_LIMIT)),
            group,
            keys: KeyCache::default(),
        }
    }

    /// The same with `per_minute` requests per key (0: no limit).
    pub fn with_rate_limit(mut self, per_minute: u32) -> AppState {
        self.limiter = (per_minute > 0).then(|| limit::Limiter::per_minute(per_minute));
        self
    }
}

/// Request bodies over this are refused with 413 PAYLOAD_TOO_LARGE.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The router with every route and middleware.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/", get(api::index))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/events", post(api::post_event))
        .route("/events/batch", post(api::post_batch))
        .route("/events/{id}", get(api::get_event))
        .route("/inbox", get(api::get_inbox))
        .route("/inbox/{id}/ack", post(api::ack))
        .route("/inbox/{id}/retry", post(api::retry))
        .route("/dlq", get(api::dlq))
        .route("/dlq/redrive", post(api::redrive))
        .route("/metrics", get(api::metrics))
        .route("/metrics/prometheus", get(api::prometheus))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limit::rate_limit,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(CompressionLayer::new())
        .layer(correlation::trace_layer())
        .layer(middleware::from_fn(correlation::correlation_id))
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Liveness: the process is up and serving. Never touches the database.
#[utoipa::path(get, path = "/health", security(()), responses((status = 200, description = "The process is up", body = openapi::HealthOut)))]
async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers and has the extension.
#[utoipa::path(get, path = "/ready", security(()), responses((status = 200, description = "The database answers and has the extension", body = openapi::HealthOut), (status = 503, description = "The database is down", body = openapi::ErrorEnvelope)))]
async fn ready(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    state.client.ping().await?;
    Ok(Json(json!({"status": "ok"})))
}

async fn not_found() -> AppError {
    AppError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed(method: axum::http::Method) -> AppError {
    AppError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on this path"),
    )
}
