//! How answers show values: times as RFC 3339 in UTC with milliseconds, and an event
//! and a stream as the API's JSON.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use triggers_client::{Event, StreamInfo};

/// RFC 3339 in UTC with milliseconds.
pub(crate) fn ts(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, as [`ts`] writes it.
pub(super) fn timestamp_now() -> String {
    ts(&Utc::now())
}

/// An event as the API shows it.
pub(crate) fn event_json(e: &Event) -> Value {
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

/// A stream as the API shows it (its cursor is the page's `next_cursor`, not per row).
pub(super) fn stream_json(s: &StreamInfo) -> Value {
    json!({
        "name": s.name,
        "last_seq": s.last_seq,
        "done_seq": s.done_seq,
        "state": s.state,
        "blocking_event": s.blocking_event,
        "blocking_error": s.blocking_error,
        "next_attempt_at": s.next_attempt_at.as_ref().map(ts),
    })
}
