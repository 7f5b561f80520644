//! `GET /inbox`, `POST /inbox/{id}/ack`, `POST /inbox/{id}/retry`: reading the tenant's
//! stored events page by page, acknowledging them, and re-queueing failed ones.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use triggers_client::{InboxQuery, Order, Status};

use super::auth::Tenant;
use super::error::{AppError, ErrorCode};
use super::parse::{self, containment_filters, int_param, param, time_param, IdPath, Params};
use super::shapes::{Acked, ErrorEnvelope, InboxPage, Retrying};
use super::state::AppState;
use crate::render::{event_json, timestamp_now, ts};

/// `GET /inbox`, `POST /inbox/{id}/ack`, `POST /inbox/{id}/retry`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/inbox", get(get_inbox))
        .route("/inbox/{id}/ack", post(ack))
        .route("/inbox/{id}/retry", post(retry))
}

/// GET /inbox
#[utoipa::path(get, path = "/inbox", params(("status" = Option<String>, Query, pattern = "^(pending|delivered|failed)(,(pending|delivered|failed))*$", description = "comma list of pending, delivered, failed (default all)"), ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339; created at or after"), ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339; created before"), ("stream" = Option<String>, Query, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F]*$"), ("limit" = Option<i32>, Query, minimum = 1, maximum = 1000, description = "default 50; a page also ends early, with next_cursor, once its payloads and metadata reach the server's --max-page-bytes (4 MiB by default)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("order" = Option<String>, Query, pattern = "^(asc|desc)$", description = "asc (default) or desc")), responses((status = 200, description = "A page. Also filters metadata.<k>=v and payload.<k>=v by containment (a value that reads as a JSON number, boolean or null matches as one)", body = InboxPage)))]
pub(super) async fn get_inbox(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = parse::query(
        query,
        &["status", "from", "to", "stream", "limit", "cursor", "order"],
        true,
    )?;
    let mut inbox = InboxQuery::new(tenant.as_str());
    if let Some(list) = param(&pairs, "status") {
        let statuses = list
            .split(',')
            .map(|s| s.trim().parse::<Status>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AppError::new(ErrorCode::InvalidParameter, e.to_string()))?;
        inbox = inbox.status(statuses);
    }
    inbox = inbox.created_between(time_param(&pairs, "from")?, time_param(&pairs, "to")?);
    if let Some(stream) = param(&pairs, "stream") {
        inbox = inbox.stream(stream);
    }
    let limit = int_param(&pairs, "limit")?.unwrap_or(50);
    inbox = inbox.limit(limit);
    if let Some(cursor) = param(&pairs, "cursor") {
        inbox = inbox.after(cursor);
    }
    inbox = inbox.order(match param(&pairs, "order") {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(other) => {
            return Err(AppError::new(
                ErrorCode::InvalidParameter,
                format!("order must be asc or desc, got '{other}'"),
            ))
        }
    });
    let (metadata, payload) = containment_filters(&pairs);
    if let Some(metadata) = metadata {
        inbox = inbox.metadata_contains(metadata);
    }
    if let Some(payload) = payload {
        inbox = inbox.payload_contains(payload);
    }
    // Bounded in bytes too: a page ends early, with its cursor, at --max-page-bytes.
    let page = state
        .client
        .inbox(&inbox.max_bytes(state.page_bytes))
        .await?;
    Ok(Json(json!({
        "data": page.events.iter().map(event_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
        "limit": limit,
    }))
    .into_response())
}

/// POST /inbox/{id}/ack
#[utoipa::path(post, path = "/inbox/{id}/ack", params(("id" = uuid::Uuid, Path)), responses((status = 200, description = "Delivered (idempotent)", body = Acked), (status = 404, description = "No such event", body = ErrorEnvelope), (status = 409, description = "The event failed", body = ErrorEnvelope)))]
pub(super) async fn ack(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath,
) -> Result<Response, AppError> {
    let event = state.client.ack(&tenant, id).await?;
    let at = event
        .delivered_at
        .as_ref()
        .map(ts)
        .unwrap_or_else(timestamp_now);
    Ok(
        Json(json!({"data": {"event_id": event.event_id, "status": "delivered", "timestamp": at}}))
            .into_response(),
    )
}

/// POST /inbox/{id}/retry
#[utoipa::path(post, path = "/inbox/{id}/retry", params(("id" = uuid::Uuid, Path)), responses((status = 200, description = "Re-queued", body = Retrying), (status = 404, description = "No such event", body = ErrorEnvelope), (status = 409, description = "Not failed, or its manual retries used up (max_manual_retries)", body = ErrorEnvelope)))]
pub(super) async fn retry(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath,
) -> Result<Response, AppError> {
    let attempt = state.client.retry(&tenant, id).await?;
    Ok(
        Json(json!({"data": {"event_id": id, "status": "retrying", "new_attempt": attempt}}))
            .into_response(),
    )
}
