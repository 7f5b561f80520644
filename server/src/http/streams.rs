//! `GET /streams`, `GET /streams/{name}`, `POST /streams/{name}/resume`: the tenant's
//! ordered streams (SPEC §4.4), how far each has come, and skipping the dead-lettered
//! head a halted stream waits on.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::auth::Tenant;
use super::error::{AppError, ErrorCode};
use super::parse::{self, int_param, param, NamePath, Params};
use super::shapes::{ErrorEnvelope, Resumed, StreamEnvelope, StreamList};
use super::state::AppState;
use crate::render::{stream_json, timestamp_now};

/// `GET /streams`, `GET /streams/{name}`, `POST /streams/{name}/resume`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/streams", get(list_streams))
        .route("/streams/{name}", get(get_stream))
        .route("/streams/{name}/resume", post(resume_stream))
}

/// GET /streams
#[utoipa::path(get, path = "/streams", params(("limit" = Option<i32>, Query, minimum = 1, maximum = 1000, description = "default 50"), ("cursor" = Option<String>, Query, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F]*$", description = "next_cursor of the previous page")), responses((status = 200, description = "A page of the tenant's streams, by name", body = StreamList)))]
pub(super) async fn list_streams(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = parse::query(query, &["limit", "cursor"], false)?;
    let limit = int_param(&pairs, "limit")?.unwrap_or(50);
    let page = state
        .client
        .streams(&tenant, limit, param(&pairs, "cursor"))
        .await?;
    Ok(Json(json!({
        "data": {
            "streams": page.streams.iter().map(stream_json).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
            "limit": limit,
        },
        "timestamp": timestamp_now(),
    }))
    .into_response())
}

/// GET /streams/{name}
#[utoipa::path(get, path = "/streams/{name}", params(("name" = String, Path, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F]*$", description = "the stream (a / in it as %2F)")), responses((status = 200, description = "The stream", body = StreamEnvelope), (status = 404, description = "No such stream", body = ErrorEnvelope)))]
pub(super) async fn get_stream(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    NamePath(name): NamePath,
) -> Result<Response, AppError> {
    let stream =
        state.client.stream(&tenant, &name).await?.ok_or_else(|| {
            AppError::new(ErrorCode::NotFound, format!("stream {name} not found"))
        })?;
    Ok(Json(json!({"data": stream_json(&stream), "timestamp": timestamp_now()})).into_response())
}

/// POST /streams/{name}/resume
#[utoipa::path(post, path = "/streams/{name}/resume", params(("name" = String, Path, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F]*$", description = "the stream (a / in it as %2F)")), responses((status = 200, description = "The dead-lettered head is skipped; the stream goes on from done_seq", body = Resumed), (status = 404, description = "No such stream", body = ErrorEnvelope), (status = 409, description = "The stream is not halted", body = ErrorEnvelope)))]
pub(super) async fn resume_stream(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    NamePath(name): NamePath,
) -> Result<Response, AppError> {
    let done_seq = state.client.resume_stream(&tenant, &name).await?;
    Ok(
        Json(json!({"data": {"name": name, "done_seq": done_seq, "timestamp": timestamp_now()}}))
            .into_response(),
    )
}
