//! Webhooks (SPEC §10): the tenant's endpoints (`/webhooks/endpoints…`), their
//! deliveries, and an event's deliveries and resending it (`/events/{id}/deliveries`,
//! `/events/{id}/resend`). The rules (urls, filters, the schedule) are the extension's;
//! here are the shapes of the bodies.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use triggers_client::{Attempt, Delivery, Endpoint, EndpointChange};

use super::auth::Tenant;
use super::error::{AppError, ErrorCode};
use super::parse::{
    self, int_param, only_fields, opt_string, IdPath, JsonObject, Params, UuidPath,
};
use super::shapes::{
    CreatedEndpoint, DeletedEndpoint, DeliveryList, EndpointEnvelope, EndpointIn, EndpointList,
    EndpointPatch, ErrorEnvelope, EventDeliveries, RecoverIn, Recovered, ResendIn, Resent,
    RotatedSecret,
};
use super::state::AppState;
use crate::render::{timestamp_now, ts};

/// The routes of webhooks.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/webhooks/endpoints",
            post(create_endpoint).get(list_endpoints),
        )
        .route(
            "/webhooks/endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route(
            "/webhooks/endpoints/{id}/rotate-secret",
            post(rotate_secret),
        )
        .route(
            "/webhooks/endpoints/{id}/deliveries",
            get(endpoint_deliveries),
        )
        .route("/webhooks/endpoints/{id}/recover", post(recover))
        .route("/events/{id}/deliveries", get(event_deliveries))
        .route("/events/{id}/resend", post(resend))
}

/// An endpoint as the API shows it.
fn endpoint_json(e: &Endpoint) -> Value {
    json!({
        "endpoint_id": e.endpoint_id,
        "url": e.url,
        "filter": e.filter,
        "description": e.description,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "rotating_until": e.rotating_until.as_ref().map(ts),
        "created_at": ts(&e.created_at),
        "updated_at": ts(&e.updated_at),
    })
}

/// A delivery as the API shows it.
fn delivery_json(d: &Delivery) -> Value {
    json!({
        "delivery_id": d.delivery_id,
        "endpoint_id": d.endpoint_id,
        "event_id": d.event_id,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.as_ref().map(ts),
        "created_at": ts(&d.created_at),
        "finished_at": d.finished_at.as_ref().map(ts),
        "last_status_code": d.last_status_code,
        "last_latency_ms": d.last_latency_ms,
        "last_error": d.last_error,
    })
}

fn attempt_json(a: &Attempt) -> Value {
    json!({
        "attempt": a.attempt,
        "attempted_at": ts(&a.attempted_at),
        "status_code": a.status_code,
        "latency_ms": a.latency_ms,
        "response": a.response,
        "error": a.error,
    })
}

/// A `filter` field: an object (its rules are the extension's), or null.
fn filter_field(object: &Map<String, Value>) -> Result<Option<Value>, AppError> {
    match object.get("filter") {
        None | Some(Value::Null) => Ok(None),
        Some(filter @ Value::Object(_)) => Ok(Some(filter.clone())),
        Some(_) => Err(AppError::new(
            ErrorCode::InvalidParameter,
            "filter must be an object with \"stream\" and/or \"metadata\", or null",
        )),
    }
}

fn uuid_field(object: &Map<String, Value>, field: &str) -> Result<uuid::Uuid, AppError> {
    opt_string(object, field, "")?
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::InvalidParameter,
                format!("{field} is required: an id (a UUID)"),
            )
        })
}

/// POST /webhooks/endpoints
#[utoipa::path(post, path = "/webhooks/endpoints", request_body = EndpointIn, responses((status = 201, description = "Created; the secret is shown only now", body = CreatedEndpoint)))]
pub(super) async fn create_endpoint(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
    JsonObject(body): JsonObject,
) -> Result<Response, AppError> {
    parse::query(query, &[], false)?;
    only_fields(&body, &["url", "filter", "description"], "body")?;
    let url = opt_string(&body, "url", "")?
        .ok_or_else(|| AppError::new(ErrorCode::InvalidParameter, "url is required"))?;
    let filter = filter_field(&body)?;
    let description = opt_string(&body, "description", "")?;
    let created = state
        .client
        .create_endpoint(&tenant, &url, filter.as_ref(), description.as_deref())
        .await?;
    let endpoint = state.client.endpoint(&tenant, created.endpoint_id).await?;
    let mut data = endpoint_json(&endpoint);
    data["secret"] = json!(created.secret);
    Ok((
        StatusCode::CREATED,
        Json(json!({"data": data, "timestamp": timestamp_now()})),
    )
        .into_response())
}

/// GET /webhooks/endpoints
#[utoipa::path(get, path = "/webhooks/endpoints", responses((status = 200, description = "The tenant's endpoints, oldest first", body = EndpointList)))]
pub(super) async fn list_endpoints(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Response, AppError> {
    parse::query(query, &[], false)?;
    let endpoints = state.client.endpoints(&tenant).await?;
    let data: Vec<Value> = endpoints.iter().map(endpoint_json).collect();
    Ok(Json(json!({"data": data, "timestamp": timestamp_now()})).into_response())
}

/// GET /webhooks/endpoints/{id}
#[utoipa::path(get, path = "/webhooks/endpoints/{id}", params(("id" = uuid::Uuid, Path, description = "endpoint id")), responses((status = 200, description = "The endpoint", body = EndpointEnvelope), (status = 404, description = "No such endpoint for this tenant", body = ErrorEnvelope)))]
pub(super) async fn get_endpoint(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    UuidPath(id): UuidPath,
) -> Result<Response, AppError> {
    let endpoint = state.client.endpoint(&tenant, id).await?;
    Ok(
        Json(json!({"data": endpoint_json(&endpoint), "timestamp": timestamp_now()}))
            .into_response(),
    )
}

/// PATCH /webhooks/endpoints/{id}
#[utoipa::path(patch, path = "/webhooks/endpoints/{id}", params(("id" = uuid::Uuid, Path, description = "endpoint id")), request_body = EndpointPatch, responses((status = 200, description = "The endpoint as it is now", body = EndpointEnvelope), (status = 404, description = "No such endpoint for this tenant", body = ErrorEnvelope)))]
pub(super) async fn update_endpoint(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    UuidPath(id): UuidPath,
    JsonObject(body): JsonObject,
) -> Result<Response, AppError> {
    only_fields(&body, &["url", "filter", "enabled", "description"], "body")?;
    let enabled = match body.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(AppError::new(
                ErrorCode::InvalidParameter,
                "enabled must be true or false",
            ))
        }
    };
    let change = EndpointChange {
        url: opt_string(&body, "url", "")?,
        // A null filter is every event, as {} is.
        filter: match body.get("filter") {
            Some(Value::Null) => Some(json!({})),
            _ => filter_field(&body)?,
        },
        enabled,
        description: opt_string(&body, "description", "")?,
    };
    let endpoint = state.client.update_endpoint(&tenant, id, &change).await?;
    Ok(
        Json(json!({"data": endpoint_json(&endpoint), "timestamp": timestamp_now()}))
            .into_response(),
    )
}

/// DELETE /webhooks/endpoints/{id}
#[utoipa::path(delete, path = "/webhooks/endpoints/{id}", params(("id" = uuid::Uuid, Path, description = "endpoint id")), responses((status = 200, description = "Deleted, with its deliveries", body = DeletedEndpoint), (status = 404, description = "No such endpoint for this tenant", body = ErrorEnvelope)))]
pub(super) async fn delete_endpoint(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    UuidPath(id): UuidPath,
) -> Result<Response, AppError> {
    if !state.client.delete_endpoint(&tenant, id).await? {
        return Err(not_found(id));
    }
    Ok(
        Json(json!({"data": {"endpoint_id": id, "deleted": true, "timestamp": timestamp_now()}}))
            .into_response(),
    )
}

fn not_found(id: uuid::Uuid) -> AppError {
    AppError::new(ErrorCode::NotFound, format!("no endpoint {id}"))
}

/// POST /webhooks/endpoints/{id}/rotate-secret
#[utoipa::path(post, path = "/webhooks/endpoints/{id}/rotate-secret", params(("id" = uuid::Uuid, Path, description = "endpoint id")), responses((status = 200, description = "The new secret, shown only now; the previous one signs too for 24 hours", body = RotatedSecret), (status = 404, description = "No such endpoint for this tenant", body = ErrorEnvelope)))]
pub(super) async fn rotate_secret(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    UuidPath(id): UuidPath,
) -> Result<Response, AppError> {
    let secret = state.client.rotate_endpoint_secret(&tenant, id).await?;
    let endpoint = state.client.endpoint(&tenant, id).await?;
    Ok(Json(json!({"data": {
        "endpoint_id": id,
        "secret": secret,
        "previous_valid_until": endpoint.rotating_until.as_ref().map(ts),
    }}))
    .into_response())
}

/// GET /webhooks/endpoints/{id}/deliveries
#[utoipa::path(get, path = "/webhooks/endpoints/{id}/deliveries", params(("id" = uuid::Uuid, Path, description = "endpoint id"), ("limit" = Option<i32>, Query, minimum = 1, maximum = 1000, description = "default 50")), responses((status = 200, description = "The endpoint's deliveries, newest event first, each with its last attempt", body = DeliveryList), (status = 404, description = "No such endpoint for this tenant", body = ErrorEnvelope)))]
pub(super) async fn endpoint_deliveries(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    UuidPath(id): UuidPath,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = parse::query(query, &["limit"], false)?;
    let limit = int_param(&pairs, "limit")?.unwrap_or(50);
    // 404 for another tenant's (or no) endpoint, not an empty list.
    state.client.endpoint(&tenant, id).await?;
    let deliveries = state
        .client
        .deliveries(&tenant, None, Some(id), limit)
        .await?;
    let data: Vec<Value> = deliveries.iter().map(delivery_json).collect();
    Ok(Json(json!({"data": data, "timestamp": timestamp_now()})).into_response())
}

/// POST /webhooks/endpoints/{id}/recover
#[utoipa::path(post, path = "/webhooks/endpoints/{id}/recover", params(("id" = uuid::Uuid, Path, description = "endpoint id")), request_body = RecoverIn, responses((status = 200, description = "How many failed deliveries are tried again now", body = Recovered), (status = 404, description = "No such endpoint for this tenant", body = ErrorEnvelope)))]
pub(super) async fn recover(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    UuidPath(id): UuidPath,
    JsonObject(body): JsonObject,
) -> Result<Response, AppError> {
    only_fields(&body, &["since"], "body")?;
    let since = opt_string(&body, "since", "")?
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::InvalidParameter,
                "since is required: an RFC 3339 time",
            )
        })?;
    let recovered = state.client.recover(&tenant, id, since).await?;
    Ok(Json(json!({"data": {
        "endpoint_id": id, "recovered": recovered, "timestamp": timestamp_now(),
    }}))
    .into_response())
}

/// GET /events/{id}/deliveries
#[utoipa::path(get, path = "/events/{id}/deliveries", params(("id" = uuid::Uuid, Path, description = "event id")), responses((status = 200, description = "The event's deliveries, each with every attempt", body = EventDeliveries), (status = 404, description = "No such event for this tenant", body = ErrorEnvelope)))]
pub(super) async fn event_deliveries(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath,
) -> Result<Response, AppError> {
    state.client.get_event(&tenant, id).await?;
    let deliveries = state
        .client
        .deliveries(&tenant, Some(id), None, 1000)
        .await?;
    let mut attempts: HashMap<i64, Vec<Value>> = HashMap::new();
    for a in state.client.delivery_attempts(&tenant, id).await? {
        attempts
            .entry(a.delivery_id)
            .or_default()
            .push(attempt_json(&a));
    }
    let data: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            let mut json = delivery_json(d);
            json["attempt_log"] = json!(attempts.remove(&d.delivery_id).unwrap_or_default());
            json
        })
        .collect();
    Ok(Json(json!({"data": data, "timestamp": timestamp_now()})).into_response())
}

/// POST /events/{id}/resend
#[utoipa::path(post, path = "/events/{id}/resend", params(("id" = uuid::Uuid, Path, description = "event id")), request_body = ResendIn, responses((status = 200, description = "The delivery is due now", body = Resent), (status = 404, description = "No such event or endpoint for this tenant", body = ErrorEnvelope), (status = 409, description = "The event failed processing: it was never stored, so it is not delivered", body = ErrorEnvelope)))]
pub(super) async fn resend(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath,
    JsonObject(body): JsonObject,
) -> Result<Response, AppError> {
    only_fields(&body, &["endpoint_id"], "body")?;
    let endpoint_id = uuid_field(&body, "endpoint_id")?;
    let delivery_id = state.client.resend(&tenant, id, endpoint_id).await?;
    Ok(Json(json!({"data": {
        "event_id": id, "endpoint_id": endpoint_id, "delivery_id": delivery_id,
        "status": "pending", "timestamp": timestamp_now(),
    }}))
    .into_response())
}
