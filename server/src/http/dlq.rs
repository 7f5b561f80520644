//! `GET /dlq` and `POST /dlq/redrive`: the tenant's dead letters, and moving them back
//! to the queue.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Tenant;
use super::error::AppError;
use super::parse::{self, int_param, Params};
use super::shapes::{DeadLetters, Redriven};
use super::state::AppState;
use crate::render::{timestamp_now, ts};

/// `GET /dlq`, `POST /dlq/redrive`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/dlq", get(dlq))
        .route("/dlq/redrive", post(redrive))
}

/// GET /dlq
#[utoipa::path(get, path = "/dlq", params(("limit" = Option<i32>, Query, minimum = 1, maximum = 1000, description = "default 50")), responses((status = 200, description = "Dead letters, oldest first", body = DeadLetters)))]
pub(super) async fn dlq(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = parse::query(query, &["limit"], false)?;
    let letters = state
        .client
        .dead_letters(&tenant, int_param(&pairs, "limit")?.unwrap_or(50))
        .await?;
    let data: Vec<Value> = letters
        .iter()
        .map(|d| {
            json!({
                "msg_id": d.msg_id, "event_id": d.event_id, "error": d.error, "attempts": d.attempts,
                "failed_at": d.failed_at.as_ref().map(ts), "payload": d.message.get("payload"),
            })
        })
        .collect();
    Ok(Json(json!({"data": data})).into_response())
}

/// POST /dlq/redrive
#[utoipa::path(post, path = "/dlq/redrive", params(("limit" = Option<i32>, Query, minimum = 1, maximum = 10000, description = "default 100")), responses((status = 200, description = "How many were moved back to the queue", body = Redriven)))]
pub(super) async fn redrive(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = parse::query(query, &["limit"], false)?;
    let moved = state
        .client
        .redrive(&tenant, int_param(&pairs, "limit")?.unwrap_or(100))
        .await?;
    Ok(Json(json!({"data": {"redriven": moved, "timestamp": timestamp_now()}})).into_response())
}
