//! [`Error`], the one error type of every call.

use deadpool_postgres::PoolError;
use triggers_core::ErrorCode;

/// Everything a call can fail with. SQL errors are told apart by the SQLSTATE the
/// extension raises (see `triggers_core::ErrorCode`), never by message text; each
/// carries the extension's message, which names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection URL or pool settings could not be used.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// No connection could be had: the database is down, unreachable or overloaded.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answers but the `triggers` extension is not installed in it.
    #[error("the triggers extension is not installed in this database")]
    ExtensionMissing,
    /// TG001: the payload is NULL or not a JSON object (or was rejected on purpose).
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// TG002: the metadata is not a JSON object.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    /// TG003: the payload is larger than the configured limit.
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// TG004: an argument is out of its domain (a limit, a status, a tenant, a flag).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// TG005: an inbox cursor that this version did not produce.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// TG006: no such event for this tenant (or not processed yet).
    #[error("not found: {0}")]
    NotFound(String),
    /// TG007: the event is not in a state that allows the operation.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// TG008: the event has used all of its manual retries.
    #[error("retries exhausted: {0}")]
    RetriesExhausted(String),
    /// TG009: the API key is malformed, unknown or revoked.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// TG010: a per-tenant limit is reached (its webhook endpoints, say).
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// TG011: the calling role is bound to another tenant (`triggers.grant_tenant`).
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// 57014: the statement was cancelled: it ran past its `statement_timeout`, or its
    /// caller went away (a cancel request).
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// Postgres refused a value of the call as data (SQLSTATE class 22, data exception,
    /// or 54, program limit exceeded): the input is at fault, not the database, so the
    /// same call can never succeed. The message is Postgres's, with its SQLSTATE.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A result the client could not read (a bug, or a database of another version).
    #[error("unexpected result: {0}")]
    Decode(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return if e.is_closed() {
                Error::Unavailable(e.to_string())
            } else {
                Error::Database(e)
            };
        };
        let message = remote_message(db.message()).to_string();
        match ErrorCode::from_sqlstate(db.code().code()) {
            Some(ErrorCode::InvalidPayload) => Error::InvalidPayload(message),
            Some(ErrorCode::InvalidMetadata) => Error::InvalidMetadata(message),
            Some(ErrorCode::PayloadTooLarge) => Error::PayloadTooLarge(message),
            Some(ErrorCode::InvalidParameter) => Error::InvalidParameter(message),
            Some(ErrorCode::InvalidCursor) => Error::InvalidCursor(message),
            Some(ErrorCode::NotFound) => Error::NotFound(message),
            Some(ErrorCode::InvalidState) => Error::InvalidState(message),
            Some(ErrorCode::RetriesExhausted) => Error::RetriesExhausted(message),
            Some(ErrorCode::InvalidApiKey) => Error::Unauthorized(message),
            Some(ErrorCode::LimitReached) => Error::LimitReached(message),
            Some(ErrorCode::NotPermitted) => Error::NotPermitted(message),
            // 3F000 invalid_schema_name, 42883 undefined_function: no extension here.
            None if matches!(db.code().code(), "3F000" | "42883")
                && message.contains("triggers") =>
            {
                Error::ExtensionMissing
            }
            // Class 22 (data exception) and 54 (too complex): what was sent is at fault.
            None if db.code().code().starts_with("22") || db.code().code().starts_with("54") => {
                Error::InvalidInput(format!("{message} (SQLSTATE {})", db.code().code()))
            }
            None if db.code().code() == "57014" => Error::Cancelled(message),
            // Class 08 (connection exception) and 57P (operator intervention: shutdown).
            None if db.code().code().starts_with("08") || db.code().code().starts_with("57P") => {
                Error::Unavailable(message)
            }
            // PL/Proxy's own errors (not a node's, passed on above): it could not reach
            // or keep the tenant's node.
            None if db.code().code() == "XX000" && message.starts_with("PL/Proxy function ") => {
                Error::Unavailable(message)
            }
            None => Error::Database(e),
        }
    }
}

/// A node's own message from one PL/Proxy passed on (`triggers.ack(2): [node_db] REMOTE
/// ERROR: event … not found`), so that an answer through the proxy reads as one from a
/// single database; any other message as it is.
fn remote_message(message: &str) -> &str {
    const REMOTE: &str = "] REMOTE ERROR: ";
    match message.split_once(REMOTE) {
        Some((origin, own)) if origin.starts_with("triggers.") && origin.contains("): [") => own,
        _ => message,
    }
}

impl From<PoolError> for Error {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) if e.as_db_error().is_some() => e.into(),
            other => Error::Unavailable(other.to_string()),
        }
    }
}

impl Error {
    /// The extension's error code behind this error, if it came from one.
    pub fn code(&self) -> Option<ErrorCode> {
        self.sql_error().map(|(code, _)| code)
    }

    /// The extension's error code and its message (which names the field at fault),
    /// if this error came from one.
    pub fn sql_error(&self) -> Option<(ErrorCode, &str)> {
        Some(match self {
            Error::InvalidPayload(m) => (ErrorCode::InvalidPayload, m),
            Error::InvalidMetadata(m) => (ErrorCode::InvalidMetadata, m),
            Error::PayloadTooLarge(m) => (ErrorCode::PayloadTooLarge, m),
            Error::InvalidParameter(m) => (ErrorCode::InvalidParameter, m),
            Error::InvalidCursor(m) => (ErrorCode::InvalidCursor, m),
            Error::NotFound(m) => (ErrorCode::NotFound, m),
            Error::InvalidState(m) => (ErrorCode::InvalidState, m),
            Error::RetriesExhausted(m) => (ErrorCode::RetriesExhausted, m),
            Error::Unauthorized(m) => (ErrorCode::InvalidApiKey, m),
            Error::LimitReached(m) => (ErrorCode::LimitReached, m),
            Error::NotPermitted(m) => (ErrorCode::NotPermitted, m),
            _ => return None,
        })
    }

    /// True when the database could not be reached, as opposed to one that answered
    /// with an error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Database(e) => e.is_closed() || e.as_db_error().is_none(),
            _ => false,
        }
    }
}
