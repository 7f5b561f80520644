//! Request bodies and response shapes shared by the API routes.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use triggers_client::{Event, EventId};

use crate::error::{AppError, ErrorCode};

/// A JSON object body. Not JSON → INVALID_JSON; over the body limit → PAYLOAD_TOO_LARGE.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::new(ErrorCode::PayloadTooLarge, "the request body is over 1 MiB")
                } else {
                    AppError::new(ErrorCode::InvalidJson, rejection.body_text())
                }
            })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => Ok(JsonObject(object)),
            Ok(_) => Err(AppError::new(
                ErrorCode::InvalidJson,
                "the body must be a JSON object",
            )),
            Err(e) => Err(AppError::new(
                ErrorCode::InvalidJson,
                format!("the body is not valid JSON: {e}"),
            )),
        }
    }
}

/// The `{id}` of a route as an event id; anything else is 400 INVALID_PARAMETER (axum's
/// own rejection would be plain text, outside the error envelope).
pub struct IdPath(pub EventId);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                AppError::new(
                    ErrorCode::InvalidParameter,
                    format!("bad path: {}", e.body_text()),
                )
            })?;
        raw.parse().map(IdPath).map_err(|_| {
            AppError::new(
                ErrorCode::InvalidParameter,
                format!("'{}' is not an event id (a UUID)", raw.escape_default()),
            )
        })
    }
}

/// RFC 3339 in UTC with milliseconds.
pub fn ts(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An event as the API shows it.
pub fn event_json(e: &Event) -> Value {
    json!({
        "event_id": e.event_id,
        "status": e.status,
        "payload": e.payload,
        "metadata": e.metadata,
        "stream": e.stream,
        "seq": e.seq,
        "created_at": ts(&e.created_at),
        "updated_at": ts(&e.updated_at),
        "processed_at": e.processed_at.as_ref().map(ts),
        "delivered_at": e.delivered_at.as_ref().map(ts),
        "retry_count": e.retry_count,
        "error_message": e.error_message,
    })
}

/// Rejects fields the route does not know, so a typo is an error, not silently ignored.
pub fn only_fields(
    object: &Map<String, Value>,
    known: &[&str],
    what: &str,
) -> Result<(), AppError> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(AppError::new(
            ErrorCode::InvalidParameter,
            format!(
                "{what}: unknown field '{unknown}' (expected {})",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// An optional string field.
pub fn opt_string(
    object: &Map<String, Value>,
    field: &str,
    what: &str,
) -> Result<Option<String>, AppError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AppError::new(
            ErrorCode::InvalidParameter,
            format!("{what}{field} must be a string"),
        )),
    }
}
