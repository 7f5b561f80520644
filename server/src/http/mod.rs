//! The HTTP API. [`app`] builds the whole router, so tests can drive it with `oneshot`.
//!
//! One file per resource, each with its routes and handlers: events.rs (`POST /events`,
//! `POST /events/batch`, `GET /events/{id}`), inbox.rs (`GET /inbox`, ack, retry),
//! dlq.rs, streams.rs (`GET /streams`, `GET /streams/{name}`, resume), metrics.rs (JSON
//! and Prometheus), health.rs (`/health`, `/ready`), dashboard.rs (`GET /`), openapi.rs
//! (`/openapi.json`), live.rs (`GET /inbox/stream`, the live stream, and its hub), webhooks.rs
//! (endpoints, deliveries, resend). Beside them: auth.rs (the API key check and the
//! per-key and per-tenant limits that follow it, from crate::guard), backpressure.rs
//! (503 while the queue is full),
//! correlation.rs (correlation id, request log), group.rs (group commit), parse.rs
//! (reading paths, queries and bodies), render.rs (times, events and streams in
//! answers), error.rs (`AppError` and the error codes), shapes.rs (the document's schema
//! types), state.rs (`AppState`).

mod auth;
mod backpressure;
pub mod correlation;
mod dashboard;
mod dlq;
pub mod error;
mod events;
pub mod group;
mod health;
mod inbox;
pub mod live;
mod metrics;
pub mod openapi;
mod parse;
pub(crate) mod render;
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
