//! Inbox queries: a typed builder and the pages it reads. The stream that follows
//! cursors page after page, [`InboxQuery::stream_on`], is in client.rs beside the
//! [`crate::Client`] it reads through.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Error;
use crate::exec::Exec;
use crate::rows::{event_from_row, EVENT_COLUMNS};
use crate::storable;
use crate::types::{Event, Status};

/// Oldest first or newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Ascending `(created_at, event_id)`.
    #[default]
    Asc,
    /// Descending.
    Desc,
}

/// One page of events and the cursor to the next (`None` on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The events, in the query's order.
    pub events: Vec<Event>,
    /// Pass to [`InboxQuery::after`] for the next page.
    pub next_cursor: Option<String>,
}

/// What to read from a tenant's inbox.
///
/// ```no_run
/// # async fn demo(client: &triggers_client::Client) -> Result<(), triggers_client::Error> {
/// use triggers_client::{InboxQuery, Status};
/// let page = client
///     .inbox(&InboxQuery::new("acme").status([Status::Pending]).limit(100))
///     .await?;
/// for event in &page.events {
///     client.ack("acme", event.event_id).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct InboxQuery {
    tenant: String,
    statuses: Vec<Status>,
    after: Option<String>,
    limit: i32,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    stream: Option<String>,
    metadata_contains: Option<Value>,
    payload_contains: Option<Value>,
    min_retry_count: Option<i32>,
    max_retry_count: Option<i32>,
    order: Order,
    max_bytes: Option<i32>,
}

impl InboxQuery {
    /// Every status, oldest first, 50 per page.
    pub fn new(tenant: impl Into<String>) -> Self {
        InboxQuery {
            tenant: tenant.into(),
            statuses: Status::ALL.to_vec(),
            after: None,
            limit: 50,
            from: None,
            to: None,
            stream: None,
            metadata_contains: None,
            payload_contains: None,
            min_retry_count: None,
            max_retry_count: None,
            order: Order::Asc,
            max_bytes: None,
        }
    }

    /// A page ends early, with its cursor, once its payloads and metadata reach
    /// `max_bytes` (counted uncompressed; a page holds at least one event)
    /// [default: the database's, 4 MiB].
    pub fn max_bytes(mut self, max_bytes: i32) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// Only these statuses.
    pub fn status(mut self, statuses: impl IntoIterator<Item = Status>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Start after this cursor (from a previous [`Page`]).
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.after = Some(cursor.into());
        self
    }

    /// Events per page, 1 to 1000.
    pub fn limit(mut self, limit: i32) -> Self {
        self.limit = limit;
        self
    }

    /// Created at or after `from`, and before `to`.
    pub fn created_between(
        mut self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Self {
        self.from = from;
        self.to = to;
        self
    }

    /// Only events of this stream.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Only events whose metadata contains this object (`@>`).
    pub fn metadata_contains(mut self, object: Value) -> Self {
        self.metadata_contains = Some(object);
        self
    }

    /// Only events whose payload contains this object (`@>`).
    pub fn payload_contains(mut self, object: Value) -> Self {
        self.payload_contains = Some(object);
        self
    }

    /// Only events with retry_count in this range.
    pub fn retry_count_between(mut self, min: Option<i32>, max: Option<i32>) -> Self {
        self.min_retry_count = min;
        self.max_retry_count = max;
        self
    }

    /// Oldest or newest first.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Refuses, naming the field, what Postgres could not store (see `storable`).
    fn check(&self) -> Result<(), Error> {
        let texts = [
            ("tenant", Some(self.tenant.as_str())),
            ("after_cursor", self.after.as_deref()),
            ("stream", self.stream.as_deref()),
        ];
        storable::texts("", texts).map_err(Error::InvalidParameter)?;
        let objects = [
            ("metadata_contains", &self.metadata_contains),
            ("payload_contains", &self.payload_contains),
        ];
        for (field, value) in objects {
            if let Some(value) = value {
                storable::json(field, value).map_err(Error::InvalidParameter)?;
            }
        }
        Ok(())
    }

    pub(crate) async fn page_on<E: Exec>(&self, conn: &E) -> Result<Page, Error> {
        self.check()?;
        let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        let order = match self.order {
            Order::Asc => "asc",
            Order::Desc => "desc",
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, cursor, more FROM triggers.inbox(tenant => $1, status => $2, after_cursor => $3, \
             lim => $4, from_time => $5, to_time => $6, stream => $7, metadata_contains => $8, \
             payload_contains => $9, min_retry_count => $10, max_retry_count => $11, \"order\" => $12{})",
            // Without a budget of its own, the page has the function's default.
            if self.max_bytes.is_some() { ", max_bytes => $13" } else { "" }
        );
        let rows = conn
            .all(
                &sql,
                &[
                    &self.tenant as &(dyn tokio_postgres::types::ToSql + Sync),
                    &statuses,
                    &self.after,
                    &self.limit,
                    &self.from,
                    &self.to,
                    &self.stream,
                    &self.metadata_contains,
                    &self.payload_contains,
                    &self.min_retry_count,
                    &self.max_retry_count,
                    &order,
                    &self.max_bytes,
                ][..if self.max_bytes.is_some() { 13 } else { 12 }],
            )
            .await?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // A full page may have more after it, and so may one that stopped at its byte
        // budget (its last row says so); another short one is the last.
        let more = rows.len() == self.limit as usize
            || rows
                .last()
                .is_some_and(|r| r.try_get::<_, Option<bool>>("more").ok().flatten() == Some(true));
        let next_cursor = if more {
            rows.last().map(|r| r.get::<_, String>("cursor"))
        } else {
            None
        };
        Ok(Page {
            events,
            next_cursor,
        })
    }
}
