//! The HTTP API's errors: the stable codes of SPEC §6 ([`ErrorCode`], with the SQL
//! API's codes mapped onto them) and [`AppError`], which renders the
//! `{"error":{...}}` envelope every failing route answers with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::correlation::{current_correlation_id, ErrorDetail};
use crate::render::timestamp_now;

/// The stable error codes of the HTTP API (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not JSON.
    InvalidJson,
    /// The payload is missing or not a JSON object.
    InvalidPayload,
    /// The metadata is not a JSON object.
    InvalidMetadataType,
    /// A parameter (query, path, field) is out of its domain.
    InvalidParameter,
    /// An inbox cursor this server did not hand out.
    InvalidCursor,
    /// No `Authorization` header.
    MissingAuthorization,
    /// An `Authorization` header that is not `Bearer <key>`.
    InvalidAuthScheme,
    /// A key that is malformed, unknown or revoked.
    InvalidToken,
    /// No such route or resource.
    NotFound,
    /// The path exists, but not for this method.
    MethodNotAllowed,
    /// The event is not in a state that allows the operation.
    InvalidState,
    /// The event has used all of its manual retries.
    MaxRetriesExceeded,
    /// The body is over 1 MiB, or the payload over its limit.
    PayloadTooLarge,
    /// The key sent more requests, or its tenant more events, than their limit per
    /// minute allows.
    RateLimitExceeded,
    /// A tenant is at one of its caps: events queued, requests in flight, live streams
    /// open, webhook endpoints.
    LimitExceeded,
    /// The database role the server runs as is bound to another tenant.
    Forbidden,
    /// The database is down or unreachable.
    ServiceUnavailable,
    /// A bug or an unexpected failure; details are logged, not sent.
    InternalError,
}

impl ErrorCode {
    /// The code as it appears in the envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::InvalidPayload => "INVALID_PAYLOAD",
            ErrorCode::InvalidMetadataType => "INVALID_METADATA_TYPE",
            ErrorCode::InvalidParameter => "INVALID_PARAMETER",
            ErrorCode::InvalidCursor => "INVALID_CURSOR",
            ErrorCode::MissingAuthorization => "MISSING_AUTHORIZATION",
            ErrorCode::InvalidAuthScheme => "INVALID_AUTH_SCHEME",
            ErrorCode::InvalidToken => "INVALID_TOKEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::MaxRetriesExceeded => "MAX_RETRIES_EXCEEDED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::InvalidPayload
            | ErrorCode::InvalidMetadataType
            | ErrorCode::InvalidParameter
            | ErrorCode::InvalidCursor => StatusCode::BAD_REQUEST,
            ErrorCode::MissingAuthorization
            | ErrorCode::InvalidAuthScheme
            | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidState | ErrorCode::MaxRetriesExceeded => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimitExceeded | ErrorCode::LimitExceeded => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every code.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidJson,
        ErrorCode::InvalidPayload,
        ErrorCode::InvalidMetadataType,
        ErrorCode::InvalidParameter,
        ErrorCode::InvalidCursor,
        ErrorCode::MissingAuthorization,
        ErrorCode::InvalidAuthScheme,
        ErrorCode::InvalidToken,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InvalidState,
        ErrorCode::MaxRetriesExceeded,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimitExceeded,
        ErrorCode::LimitExceeded,
        ErrorCode::Forbidden,
        ErrorCode::ServiceUnavailable,
        ErrorCode::InternalError,
    ];

    /// The HTTP code for an error the extension raised.
    pub fn from_sql(code: triggers_client::ErrorCode) -> ErrorCode {
        use triggers_client::ErrorCode as Sql;
        match code {
            Sql::InvalidPayload => ErrorCode::InvalidPayload,
            Sql::InvalidMetadata => ErrorCode::InvalidMetadataType,
            Sql::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Sql::InvalidParameter => ErrorCode::InvalidParameter,
            Sql::InvalidCursor => ErrorCode::InvalidCursor,
            Sql::NotFound => ErrorCode::NotFound,
            Sql::InvalidState => ErrorCode::InvalidState,
            Sql::RetriesExhausted => ErrorCode::MaxRetriesExceeded,
            Sql::InvalidApiKey => ErrorCode::InvalidToken,
            Sql::LimitReached => ErrorCode::LimitExceeded,
            Sql::NotPermitted => ErrorCode::Forbidden,
        }
    }
}

/// An error answered as `{"error":{"code","message","timestamp","correlation_id"}}`.
#[derive(Debug)]
pub struct AppError {
    code: ErrorCode,
    message: String,
    /// What went wrong inside, for the log only (the correlation middleware logs it).
    detail: Option<String>,
    /// Seconds to put in a Retry-After header.
    retry_after: Option<u64>,
}

impl AppError {
    /// An error with `code` and a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
        }
    }

    /// The same error, answered with `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The same error, with a detail for the log that the client never sees.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The seconds of its Retry-After header, if it has one.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }
}

impl From<crate::services::queue_bound::Refused> for AppError {
    fn from(refused: crate::services::queue_bound::Refused) -> Self {
        use crate::services::queue_bound::Refused;
        match refused {
            Refused::Full {
                bound,
                retry_after_s,
            } => AppError::new(
                ErrorCode::ServiceUnavailable,
                format!(
                    "the queue is full ({bound} messages waiting, --max-queue-depth); retry later"
                ),
            )
            .with_retry_after(retry_after_s),
            Refused::Database(e) => e.into(),
        }
    }
}

impl From<triggers_client::Error> for AppError {
    fn from(e: triggers_client::Error) -> Self {
        if let Some((sql, message)) = e.sql_error() {
            // The extension's message names the field at fault; it is safe to show.
            return AppError::new(ErrorCode::from_sql(sql), message);
        }
        if let triggers_client::Error::InvalidInput(message) = &e {
            // Postgres refused what the client sent as data: the input is at fault.
            return AppError::new(ErrorCode::InvalidParameter, message.clone());
        }
        if let triggers_client::Error::Cancelled(_) = &e {
            // The server's statement timeout: the request asked for more work than one
            // request may do (a filter no index serves over many events, say).
            return AppError::new(
                ErrorCode::ServiceUnavailable,
                "the request's query ran past the server's statement timeout (--statement-timeout); narrow it, or retry later",
            )
            .with_retry_after(1)
            .with_detail(e.to_string());
        }
        let code = if e.is_unavailable() {
            ErrorCode::ServiceUnavailable
        } else {
            ErrorCode::InternalError
        };
        let message = match code {
            ErrorCode::ServiceUnavailable => "the database is unavailable",
            _ => "internal error",
        };
        AppError::new(code, message).with_detail(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code.as_str(),
                "message": self.message,
                "timestamp": timestamp_now(),
                "correlation_id": current_correlation_id(),
            }
        });
        let mut response = (self.code.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        if let Some(detail) = self.detail {
            response.extensions_mut().insert(ErrorDetail(detail));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extension refuses what was sent: every one of its errors is the client's fault.
    #[test]
    fn every_sql_error_is_a_4xx() {
        for sql in triggers_client::ErrorCode::ALL {
            let code = ErrorCode::from_sql(sql);
            assert!(code.status().is_client_error(), "{sql:?} → {code:?}");
        }
    }
}
