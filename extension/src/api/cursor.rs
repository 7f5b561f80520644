//! Inbox cursors: the SQL side of `triggers_core::Cursor`. Decoding returns NULL for a
//! cursor this version did not make; `triggers.inbox` turns that into TG005.

use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;
use triggers_core::Cursor;

/// Microseconds from 1970-01-01 to 2000-01-01, Postgres's timestamp epoch.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// The opaque cursor for the inbox position `(created_at, event_id)`.
#[pg_extern(immutable, parallel_safe)]
pub fn _cursor(created_at: TimestampWithTimeZone, event_id: Uuid) -> String {
    Cursor {
        created_at_us: created_at.into_inner().saturating_add(PG_EPOCH_US),
        event_id: *event_id.as_bytes(),
    }
    .encode()
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._cursor IS 'Internal: the opaque inbox cursor of (created_at, event_id).';",
    name = "comment_cursor",
    requires = [_cursor]
);

/// The `created_at` of a cursor, or NULL when it is not a cursor.
#[pg_extern(immutable, parallel_safe)]
pub fn _cursor_created_at(cursor: &str) -> Option<TimestampWithTimeZone> {
    let c = Cursor::decode(cursor).ok()?;
    TimestampWithTimeZone::try_from(c.created_at_us.checked_sub(PG_EPOCH_US)?).ok()
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._cursor_created_at IS 'Internal: the created_at of an inbox cursor, or NULL if malformed.';",
    name = "comment_cursor_created_at",
    requires = [_cursor_created_at]
);

/// The `event_id` of a cursor, or NULL when it is not a cursor.
#[pg_extern(immutable, parallel_safe)]
pub fn _cursor_event_id(cursor: &str) -> Option<Uuid> {
    Cursor::decode(cursor)
        .ok()
        .map(|c| Uuid::from_bytes(c.event_id))
}

pgrx::extension_sql!(
    "COMMENT ON FUNCTION triggers._cursor_event_id IS 'Internal: the event_id of an inbox cursor, or NULL if malformed.';",
    name = "comment_cursor_event_id",
    requires = [_cursor_event_id]
);
