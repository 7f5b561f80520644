//! The HTTP API. [`app`] builds the whole router, so tests can drive it with `oneshot`.
//! It only translates: requests into calls of the client, `crate::guard` and
//! `crate::services`, and their results into answers. One file per resource, each with
//! its routes and handlers; beside them the key check and the limits that follow it,
//! the correlation id, reading requests, errors, `/openapi.json` and its shapes, and
//! `AppState`.

mod auth;
pub mod correlation;
mod dashboard;
mod dlq;
pub mod error;
mod events;
mod health;
mod inbox;
pub mod live;
mod metrics;
pub mod openapi;
mod parse;
mod shapes;
mod state;
mod streams;
mod webhooks;

pub use auth::{Sender, Tenant};
pub use parse::MAX_BODY_BYTES;
pub use state::{defaults, AppState, Settings, DEFAULT_RATE_LIMIT};

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::Router;
use tower_http::compression::CompressionLayer;

use error::{AppError, ErrorCode};

/// The router with every route and middleware.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(dashboard::routes())
        .merge(openapi::routes())
        .merge(events::routes())
        .merge(live::routes())
        .merge(inbox::routes())
        .merge(dlq::routes())
        .merge(streams::routes())
        .merge(metrics::routes())
        .merge(webhooks::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn(auth::limits_layer))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(CompressionLayer::new())
        .layer(correlation::trace_layer())
        .layer(middleware::from_fn(correlation::correlation_id))
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
