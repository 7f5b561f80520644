//! Rows of the SQL API's result sets decoded into the client's types, with the column
//! lists the queries select so both stay in step.

use tokio_postgres::Row;

use crate::error::Error;
use crate::types::{DeadLetter, Event, EventId, StreamInfo, UnknownStatus, UnknownStreamState};

/// The columns of an event, in the order [`event_from_row`] reads them.
pub(crate) const EVENT_COLUMNS: &str =
    "event_id, status, payload, metadata, stream, seq, created_at, \
     updated_at, processed_at, delivered_at, retry_count, error_message, idempotency_key";

/// An event row (selected with [`EVENT_COLUMNS`]).
pub(crate) fn event_from_row(row: &Row) -> Result<Event, Error> {
    let decode = |e: tokio_postgres::Error| Error::Decode(e.to_string());
    let status: String = row.try_get("status").map_err(decode)?;
    Ok(Event {
        event_id: EventId(row.try_get("event_id").map_err(decode)?),
        status: status
            .parse()
            .map_err(|e: UnknownStatus| Error::Decode(e.to_string()))?,
        payload: row.try_get("payload").map_err(decode)?,
        metadata: row.try_get("metadata").map_err(decode)?,
        stream: row.try_get("stream").map_err(decode)?,
        seq: row.try_get("seq").map_err(decode)?,
        created_at: row.try_get("created_at").map_err(decode)?,
        updated_at: row.try_get("updated_at").map_err(decode)?,
        processed_at: row.try_get("processed_at").map_err(decode)?,
        delivered_at: row.try_get("delivered_at").map_err(decode)?,
        retry_count: row.try_get("retry_count").map_err(decode)?,
        error_message: row.try_get("error_message").map_err(decode)?,
        idempotency_key: row.try_get("idempotency_key").map_err(decode)?,
    })
}

/// The columns of a dead letter, in the order [`dead_letter_from_row`] reads them.
pub(crate) const DEAD_LETTER_COLUMNS: &str =
    "msg_id, event_id, error, attempts, failed_at, message";

/// A dead-letter row (selected with [`DEAD_LETTER_COLUMNS`]).
pub(crate) fn dead_letter_from_row(r: &Row) -> DeadLetter {
    DeadLetter {
        msg_id: r.get(0),
        event_id: r.get::<_, Option<uuid::Uuid>>(1).map(EventId),
        error: r.get(2),
        attempts: r.get(3),
        failed_at: r.get(4),
        message: r.get(5),
    }
}

/// The columns of a stream, in the order [`stream_from_row`] reads them.
pub(crate) const STREAM_COLUMNS: &str =
    "stream, last_seq, done_seq, state, blocking_event, blocking_error, next_attempt_at, cursor";

/// A row of `triggers.streams` (selected with [`STREAM_COLUMNS`]).
pub(crate) fn stream_from_row(row: &Row) -> Result<StreamInfo, Error> {
    let decode = |e: tokio_postgres::Error| Error::Decode(e.to_string());
    let state: String = row.try_get("state").map_err(decode)?;
    Ok(StreamInfo {
        name: row.try_get("stream").map_err(decode)?,
        last_seq: row.try_get("last_seq").map_err(decode)?,
        done_seq: row.try_get("done_seq").map_err(decode)?,
        state: state
            .parse()
            .map_err(|e: UnknownStreamState| Error::Decode(e.to_string()))?,
        blocking_event: row
            .try_get::<_, Option<uuid::Uuid>>("blocking_event")
            .map_err(decode)?
            .map(EventId),
        blocking_error: row.try_get("blocking_error").map_err(decode)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(decode)?,
        cursor: row.try_get("cursor").map_err(decode)?,
    })
}
