//! Reading requests: the extractors and helpers every route parses its path, query
//! string and JSON body with. Each refuses with the API's own error (400 in the error
//! envelope, naming the parameter or field), never axum's plain-text rejection. What
//! one route accepts (an event's fields, the inbox's filters) is in that route's file.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use triggers_client::{DebugFlag, EventId};

use super::error::{AppError, ErrorCode};

/// Request bodies over this are refused with 413 PAYLOAD_TOO_LARGE.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON object body. Not JSON → INVALID_JSON; over [`MAX_BODY_BYTES`] →
/// PAYLOAD_TOO_LARGE.
pub(super) struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::new(
                        ErrorCode::PayloadTooLarge,
                        format!(
                            "the request body is over {} MiB",
                            MAX_BODY_BYTES / (1024 * 1024)
                        ),
                    )
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
pub(super) struct IdPath(pub EventId);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let NamePath(raw) = NamePath::from_request_parts(parts, state).await?;
        raw.parse().map(IdPath).map_err(|_| {
            AppError::new(
                ErrorCode::InvalidParameter,
                format!("'{}' is not an event id (a UUID)", raw.escape_default()),
            )
        })
    }
}

/// The `{id}` of a route as some other UUID (an endpoint's); anything else is 400
/// INVALID_PARAMETER.
pub(super) struct UuidPath(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for UuidPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let NamePath(raw) = NamePath::from_request_parts(parts, state).await?;
        raw.parse().map(UuidPath).map_err(|_| {
            AppError::new(
                ErrorCode::InvalidParameter,
                format!("'{}' is not an id (a UUID)", raw.escape_default()),
            )
        })
    }
}

/// The `{name}` of a route, percent-decoded (a `/` in a name travels as `%2F`); a path
/// that is not UTF-8 is 400 INVALID_PARAMETER. What the name may hold is the client's
/// and the extension's to check.
pub(super) struct NamePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for NamePath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                AppError::new(
                    ErrorCode::InvalidParameter,
                    format!("bad path: {}", e.body_text()),
                )
            })?;
        Ok(NamePath(name))
    }
}

/// The query string as a handler takes it: its pairs, or why axum could not read them.
pub(super) type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The query's pairs; any name not in `known` is refused, except `metadata.<k>` and
/// `payload.<k>` where `containment` allows them. Text Postgres cannot store is refused
/// here, naming the parameter, as the client refuses it in its own arguments.
pub(super) fn query(
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

/// The `metadata.<k>=v` and `payload.<k>=v` pairs as containment objects (`@>`), each
/// `None` without such pairs. A value that reads as a JSON number, boolean or null is
/// matched as one, anything else as a string.
pub(super) fn containment_filters(pairs: &[(String, String)]) -> (Option<Value>, Option<Value>) {
    let (mut metadata, mut payload) = (Map::new(), Map::new());
    for (key, value) in pairs {
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
    let object = |m: Map<String, Value>| (!m.is_empty()).then_some(Value::Object(m));
    (object(metadata), object(payload))
}

/// The value of `key`, if the query has it.
pub(super) fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// An integer parameter. Its range is the extension's to check.
pub(super) fn int_param(pairs: &[(String, String)], key: &str) -> Result<Option<i32>, AppError> {
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

/// An RFC 3339 time parameter.
pub(super) fn time_param(
    pairs: &[(String, String)],
    key: &str,
) -> Result<Option<DateTime<Utc>>, AppError> {
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

/// The `debug` parameter, one of [`DebugFlag::ALL`].
pub(super) fn debug_flag(pairs: &[(String, String)]) -> Result<Option<DebugFlag>, AppError> {
    param(pairs, "debug")
        .map(|v| {
            v.parse::<DebugFlag>()
                .map_err(|e| AppError::new(ErrorCode::InvalidParameter, e.to_string()))
        })
        .transpose()
}

/// Rejects fields the route does not know, so a typo is an error, not silently ignored.
pub(super) fn only_fields(
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
pub(super) fn opt_string(
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
