//! The API routes of SPEC §6 (all but the live stream), each scoped to the tenant of
//! the request's key. Validation that the extension does (payload shape, sizes, limits,
//! cursors) is left to it, so HTTP and SQL give the same answer.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use triggers_client::{InboxQuery, NewEvent, Order, Status};

use super::auth::Tenant;
use super::body::{event_json, only_fields, opt_string, ts, IdPath, JsonObject};
use super::openapi::{
    Accepted, Acked, BatchAccepted, BatchIn, DeadLetters, ErrorEnvelope, EventEnvelope, EventIn,
    InboxPage, MetricsOut, Redriven, Retrying,
};
use super::{timestamp_now, AppState};
use crate::error::{AppError, ErrorCode};

type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The query's pairs; any name not in `known` is refused, except `metadata.<k>` and
/// `payload.<k>` where `containment` allows them.
fn params(
    query: Params,
    known: &[&str],
    containment: bool,
) -> Result<Vec<(String, String)>, AppError> {
    let Query(pairs) = query.map_err(|e| {
        AppError::new(
            ErrorCode::InvalidParameter,
            format!("bad query string: {}", e.body_text()),
        )
    })?;
    for (key, value) in &pairs {
        let field = format!("query parameter '{}'", key.replace('\0', "\\u0000"));
        triggers_client::check_texts(&[(&field, key), (&field, value)])?;
        let prefixed = key.starts_with("metadata.") || key.starts_with("payload.");
        if !(known.contains(&key.as_str()) || prefixed && containment) {
            return Err(AppError::new(
                ErrorCode::InvalidParameter,
                format!("unknown query parameter '{key}'"),
            ));
        }
    }
    Ok(pairs)
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn int_param(pairs: &[(String, String)], key: &str) -> Result<Option<i32>, AppError> {
    param(pairs, key)
        .map(|v| {
            v.parse().map_err(|_| {
                AppError::new(
                    ErrorCode::InvalidParameter,
                    format!("{key} must be an integer, got '{v}'"),
                )
            })
        })
        .transpose()
}

fn time_param(pairs: &[(String, String)], key: &str) -> Result<Option<DateTime<Utc>>, AppError> {
    param(pairs, key)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    AppError::new(
                        ErrorCode::InvalidParameter,
                        format!("{key} must be an RFC 3339 time, got '{v}'"),
                    )
                })
        })
        .transpose()
}

/// One event of a POST body, checked for shape; the extension checks the rest.
/// Takes the object apart, so a payload is moved, never copied.
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
    // The two type checks the extension makes most often, made here too (same codes,
    // same words): a bad event caught before group commit never sends its group down
    // the one-event-at-a-time path.
    if !payload.is_object() {
        return Err(AppError::new(
            ErrorCode::InvalidPayload,
            format!(
                "{what}payload must be a JSON object, got {}",
                json_type(&payload)
            ),
        ));
    }
    let key = opt_string(&object, "idempotency_key", what)?;
    let stream = opt_string(&object, "stream", what)?;
    let mut event = NewEvent::new(payload).tenant(tenant);
    match object.remove("metadata") {
        None | Some(Value::Null) => {}
        Some(metadata) if metadata.is_object() => event = event.metadata(metadata),
        Some(other) => {
            return Err(AppError::new(
                ErrorCode::InvalidMetadataType,
                format!(
                    "{what}metadata must be a JSON object or NULL, got {}",
                    json_type(&other)
                ),
            ))
        }
    }
    if let Some(key) = key {
        event = event.idempotency_key(key);
    }
    if let Some(stream) = stream {
        event = event.stream(stream);
    }
    Ok(event)
}

/// A JSON value's type as Postgres's `jsonb_typeof` names it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn debug_flag(pairs: &[(String, String)]) -> Result<Option<triggers_client::DebugFlag>, AppError> {
    use triggers_client::DebugFlag::*;
    param(pairs, "debug")
        .map(|v| match v {
            "validation_error" => Ok(ValidationError),
            "processing_error" => Ok(ProcessingError),
            "queue_delay" => Ok(QueueDelay),
            "dlq_routing" => Ok(DlqRouting),
            other => Err(AppError::new(
                ErrorCode::InvalidParameter,
                format!("debug must be validation_error, processing_error, queue_delay or dlq_routing, got '{other}'"),
            )),
        })
        .transpose()
}

/// POST /events
#[utoipa::path(post, path = "/events", request_body = EventIn, params(("debug" = Option<String>, Query, pattern = "^(validation_error|processing_error|queue_delay|dlq_routing)$", description = "validation_error (answers 400), processing_error, queue_delay or dlq_routing"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\u0021-\u007E]([\u0020-\u007E]*[\u0021-\u007E])?$", description = "idempotency key; must equal the body's idempotency_key if both are sent")), responses((status = 200, description = "Accepted and committed (or a duplicate of an earlier idempotency key)", body = Accepted), (status = 413, description = "Body over 1 MiB, or payload over max_payload_bytes", body = ErrorEnvelope)))]
pub async fn post_event(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    query: Params,
    JsonObject(body): JsonObject,
) -> Result<Response, AppError> {
    let pairs = params(query, &["debug"], false)?;
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
    // What Postgres cannot store is refused here, with its field named, so it never
    // joins (and fails) a group.
    event.check()?;
    let sent = state.group.enqueue(event).await?;
    let now = timestamp_now();
    let mut data = json!({"event_id": sent.event_id, "status": "accepted", "timestamp": now});
    if sent.duplicate {
        data["duplicate"] = Value::Bool(true);
    }
    Ok(Json(json!({"data": data, "timestamp": now})).into_response())
}

/// POST /events/batch
#[utoipa::path(post, path = "/events/batch", request_body = BatchIn, responses((status = 200, description = "All accepted and committed, ids in order", body = BatchAccepted), (status = 413, description = "Body over 1 MiB, or a payload over max_payload_bytes", body = ErrorEnvelope)))]
pub async fn post_batch(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
    JsonObject(mut body): JsonObject,
) -> Result<Response, AppError> {
    params(query, &[], false)?;
    only_fields(&body, &["events"], "body")?;
    let Some(Value::Array(items)) = body.remove("events") else {
        return Err(AppError::new(
            ErrorCode::InvalidParameter,
            "events must be an array of events",
        ));
    };
    if items.is_empty() || items.len() > 1000 {
        return Err(AppError::new(
            ErrorCode::InvalidParameter,
            format!("events must hold 1 to 1000 events, got {}", items.len()),
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
pub async fn get_event(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath,
) -> Result<Response, AppError> {
    let event = state.client.get_event(&tenant, id).await?;
    Ok(Json(json!({"data": event_json(&event)})).into_response())
}

/// GET /inbox
#[utoipa::path(get, path = "/inbox", params(("status" = Option<String>, Query, pattern = "^(pending|delivered|failed)(,(pending|delivered|failed))*$", description = "comma list of pending, delivered, failed (default all)"), ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339; created at or after"), ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339; created before"), ("stream" = Option<String>, Query, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F]*$"), ("limit" = Option<i32>, Query, minimum = 1, maximum = 1000, description = "default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("order" = Option<String>, Query, pattern = "^(asc|desc)$", description = "asc (default) or desc")), responses((status = 200, description = "A page. Also filters metadata.<k>=v and payload.<k>=v by containment (a value that reads as a JSON number, boolean or null matches as one)", body = InboxPage)))]
pub async fn get_inbox(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = params(
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
    // metadata.<k>=v and payload.<k>=v: containment; a value that reads as a JSON number,
    // boolean or null is matched as one, anything else as a string.
    let (mut metadata, mut payload) = (Map::new(), Map::new());
    for (key, value) in &pairs {
        let parsed = match serde_json::from_str::<Value>(value) {
            Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
            _ => Value::String(value.clone()),
        };
        if let Some(field) = key.strip_prefix("metadata.") {
            metadata.insert(field.to_string(), parsed);
        } else if let Some(field) = key.strip_prefix("payload.") {
            payload.insert(field.to_string(), parsed);
        }
    }
    if !metadata.is_empty() {
        inbox = inbox.metadata_contains(Value::Object(metadata));
    }
    if !payload.is_empty() {
        inbox = inbox.payload_contains(Value::Object(payload));
    }
    let page = state.client.inbox(&inbox).await?;
    Ok(Json(json!({
        "data": page.events.iter().map(event_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
        "limit": limit,
    }))
    .into_response())
}

/// POST /inbox/{id}/ack
#[utoipa::path(post, path = "/inbox/{id}/ack", params(("id" = uuid::Uuid, Path)), responses((status = 200, description = "Delivered (idempotent)", body = Acked), (status = 404, description = "No such event", body = ErrorEnvelope), (status = 409, description = "The event failed", body = ErrorEnvelope)))]
pub async fn ack(
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
#[utoipa::path(post, path = "/inbox/{id}/retry", params(("id" = uuid::Uuid, Path)), responses((status = 200, description = "Re-queued", body = Retrying), (status = 404, description = "No such event", body = ErrorEnvelope), (status = 409, description = "Not failed, or 3 manual retries used", body = ErrorEnvelope)))]
pub async fn retry(
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

/// GET /dlq
#[utoipa::path(get, path = "/dlq", params(("limit" = Option<i32>, Query, minimum = 1, maximum = 1000, description = "default 50")), responses((status = 200, description = "Dead letters, oldest first", body = DeadLetters)))]
pub async fn dlq(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = params(query, &["limit"], false)?;
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
pub async fn redrive(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    query: Params,
) -> Result<Response, AppError> {
    let pairs = params(query, &["limit"], false)?;
    let moved = state
        .client
        .redrive(&tenant, int_param(&pairs, "limit")?.unwrap_or(100))
        .await?;
    Ok(Json(json!({"data": {"redriven": moved, "timestamp": timestamp_now()}})).into_response())
}

/// GET /metrics
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "The tenant's metrics", body = MetricsOut)))]
pub async fn metrics(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Response, AppError> {
    let m = state.client.metrics(Some(&tenant)).await?;
    let mut data = serde_json::to_value(&m).map_err(|e| {
        AppError::new(ErrorCode::InternalError, "internal error").with_detail(e.to_string())
    })?;
    data["last_processed_at"] = json!(m.last_processed_at.as_ref().map(ts));
    Ok(Json(json!({"data": data, "timestamp": timestamp_now()})).into_response())
}

/// GET /metrics/prometheus
#[utoipa::path(get, path = "/metrics/prometheus", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn prometheus(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Response, AppError> {
    let m = state.client.metrics(Some(&tenant)).await?;
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            text.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    let t = format!(
        "tenant=\"{}\"",
        tenant.replace('\\', "\\\\").replace('"', "\\\"")
    );
    metric(
        "triggers_events",
        "gauge",
        "Stored events by status.",
        &[
            (&format!("{t},status=\"pending\""), m.pending as f64),
            (&format!("{t},status=\"delivered\""), m.delivered as f64),
            (&format!("{t},status=\"failed\""), m.failed as f64),
        ],
    );
    metric(
        "triggers_queue_depth",
        "gauge",
        "Messages waiting in the queue.",
        &[(&t, m.queue_depth as f64)],
    );
    metric(
        "triggers_dlq_count",
        "gauge",
        "Messages in the dead-letter queue.",
        &[(&t, m.dlq_count as f64)],
    );
    metric(
        "triggers_oldest_queued_age_seconds",
        "gauge",
        "Age of the oldest queued message.",
        &[(&t, m.oldest_queued_age_s)],
    );
    metric(
        "triggers_processing_rate_per_minute",
        "gauge",
        "Events stored per minute, last 5 minutes.",
        &[(&t, m.processing_rate_per_min)],
    );
    let latency: Vec<(String, f64)> = [
        ("0.5", m.latency_ms.p50),
        ("0.95", m.latency_ms.p95),
        ("0.99", m.latency_ms.p99),
    ]
    .into_iter()
    .filter_map(|(q, v)| v.map(|v| (format!("{t},quantile=\"{q}\""), v / 1000.0)))
    .collect();
    let latency: Vec<(&str, f64)> = latency.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        "triggers_latency_seconds",
        "gauge",
        "Enqueue-to-stored latency quantiles, last 5 minutes.",
        &latency,
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// GET / — a placeholder until the dashboard lands.
#[utoipa::path(get, path = "/", security(()), responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
pub async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>triggers</title></head>\
         <body><h1>triggers</h1><p>The dashboard is coming. The API is live: see /openapi.json (soon), \
         /health, /ready.</p></body></html>",
    )
        .into_response()
}
