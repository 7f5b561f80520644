//! `POST /events`, `POST /events/batch`, `GET /events/{id}`: sending events and reading
//! one back.
//!
//! Where a sent event is validated, in order: here, the JSON body as HTTP sees it
//! (unknown fields, a missing payload, fields of the wrong JSON type, the `debug` flag
//! against `DebugFlag::ALL`); then the client's `NewEvent::check` (payload and metadata
//! objects, NUL characters, numbers beyond `numeric`), called before group commit so
//! one bad event never fails a group; then the extension (sizes, lengths, control
//! characters), which has the last word. `POST /events/batch` commits alone, so it
//! leaves the object checks to the extension, which names the event
//! (`events[3].payload ...`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use triggers_client::NewEvent;

use super::auth::{over_limit, Sender, Tenant};
use super::error::{AppError, ErrorCode};
use super::parse::{self, debug_flag, only_fields, opt_string, IdPath, JsonObject, Params};
use super::shapes::{Accepted, BatchAccepted, BatchIn, ErrorEnvelope, EventEnvelope, EventIn};
use super::state::AppState;
use crate::render::{event_json, timestamp_now};

/// Most events in one `POST /events/batch`.
const MAX_BATCH: usize = 1000;

/// `POST /events`, `POST /events/batch`, `GET /events/{id}`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/events", post(post_event))
        .route("/events/batch", post(post_batch))
        .route("/events/{id}", get(get_event))
}

/// One event of a POST body (`what` prefixes field names: "events[3]."), read for its
/// shape as JSON; the rules on the values are the client's and the extension's. Takes
/// the object apart, so a payload is moved, never copied.
fn new_event(
    mut object: Map<String, Value>,
    tenant: &str,
    what: &str,
) -> Result<NewEvent, AppError> {
    only_fields(
        &object,
        &["payload", "metadata", "idempotency_key", "stream"],
        what,
    )?;
    let payload = object.remove("payload").ok_or_else(|| {
        AppError::new(
            ErrorCode::InvalidPayload,
            format!("{what}payload is required"),
        )
    })?;
    let key = opt_string(&object, "idempotency_key", what)?;
    let stream = opt_string(&object, "stream", what)?;
    let mut event = NewEvent::new(payload).tenant(tenant);
    match object.remove("metadata") {
        None | Some(Value::Null) => {}
        Some(metadata) => event = event.metadata(metadata),
    }
    if let Some(key) = key {
        event = event.idempotency_key(key);
    }
    if let Some(stream) = stream {
        event = event.stream(stream);
    }
    Ok(event)
}

/// POST /events
// The debug parameter's pattern and description are filled in from DebugFlag::ALL by
// openapi.rs (utoipa takes a pattern only as a literal).
#[utoipa::path(post, path = "/events", request_body = EventIn, params(("debug" = Option<String>, Query), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\u0021-\u007E]([\u0020-\u007E]*[\u0021-\u007E])?$", description = "idempotency key; must equal the body's idempotency_key if both are sent")), responses((status = 200, description = "Accepted and committed (or a duplicate of an earlier idempotency key)", body = Accepted), (status = 413, description = "Body over 1 MiB, or payload over max_payload_bytes", body = ErrorEnvelope), (status = 503, description = "The queue is full (--max-queue-depth) or the database cannot be reached: retry after Retry-After", body = ErrorEnvelope)))]
pub(super) async fn post_event(
    State(state): State<AppState>,
    Sender(tenant): Sender,
    headers: HeaderMap,
    query: Params,
    JsonObject(body): JsonObject,
) -> Result<Response, AppError> {
    state.queue.admit(&tenant).await?;
    let pairs = parse::query(query, &["debug"], false)?;
    // new_event checks the field (and takes the body apart); the comparison needs it.
    let body_key = body
        .get("idempotency_key")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut event = new_event(body, &tenant, "")?;
    if let Some(header_key) = headers.get("idempotency-key") {
        let header_key = header_key.to_str().map_err(|_| {
            AppError::new(ErrorCode::InvalidParameter, "Idempotency-Key must be text")
        })?;
        if let Some(body_key) = body_key {
            if body_key != header_key {
                return Err(AppError::new(
                    ErrorCode::InvalidParameter,
                    "Idempotency-Key header and idempotency_key field differ",
                ));
            }
        }
        event = event.idempotency_key(header_key);
    }
    if let Some(flag) = debug_flag(&pairs)? {
        event = event.debug(flag);
    }
    // What the client can tell without the database is refused here, with its field
    // named, so it never joins (and fails) a group.
    event.check()?;
    state
        .tenants
        .admit_events(&tenant, 1)
        .map_err(|o| over_limit(&o))?;
    let sent = state.group.enqueue(event).await?;
    let now = timestamp_now();
    let mut data = json!({"event_id": sent.event_id, "status": "accepted", "timestamp": now});
    if sent.duplicate {
        data["duplicate"] = Value::Bool(true);
    }
    Ok(Json(json!({"data": data, "timestamp": now})).into_response())
}

/// POST /events/batch
#[utoipa::path(post, path = "/events/batch", request_body = BatchIn, responses((status = 200, description = "All accepted and committed, ids in order", body = BatchAccepted), (status = 413, description = "Body over 1 MiB, or a payload over max_payload_bytes", body = ErrorEnvelope), (status = 503, description = "The queue is full (--max-queue-depth) or the database cannot be reached: retry after Retry-After", body = ErrorEnvelope)))]
pub(super) async fn post_batch(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
    JsonObject(mut body): JsonObject,
) -> Result<Response, AppError> {
    state.queue.admit(&tenant).await?;
    parse::query(query, &[], false)?;
    only_fields(&body, &["events"], "body")?;
    let Some(Value::Array(items)) = body.remove("events") else {
        return Err(AppError::new(
            ErrorCode::InvalidParameter,
            "events must be an array of events",
        ));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(AppError::new(
            ErrorCode::InvalidParameter,
            format!(
                "events must hold 1 to {MAX_BATCH} events, got {}",
                items.len()
            ),
        ));
    }
    let events = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(object) => new_event(object, &tenant, &format!("events[{i}].")),
            _ => Err(AppError::new(
                ErrorCode::InvalidParameter,
                format!("events[{i}] must be an object"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    state
        .tenants
        .admit_events(&tenant, events.len() as u64)
        .map_err(|o| over_limit(&o))?;
    let ids = state.client.enqueue_batch(&events).await?;
    let now = timestamp_now();
    Ok(Json(json!({
        "data": {"event_ids": ids, "count": ids.len(), "status": "accepted", "timestamp": now},
        "timestamp": now
    }))
    .into_response())
}

/// GET /events/{id}
#[utoipa::path(get, path = "/events/{id}", params(("id" = uuid::Uuid, Path, description = "event id")), responses((status = 200, description = "The event", body = EventEnvelope), (status = 404, description = "No such event for this tenant (or not processed yet)", body = ErrorEnvelope)))]
pub(super) async fn get_event(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath,
) -> Result<Response, AppError> {
    let event = state.client.get_event(&tenant, id).await?;
    Ok(Json(json!({"data": event_json(&event)})).into_response())
}
