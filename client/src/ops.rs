//! Every call of the SQL API on any `tokio_postgres::GenericClient`: a pooled
//! connection, or the caller's own transaction (so an event can be enqueued atomically
//! with the caller's writes: the transactional outbox).

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use crate::inbox::{InboxQuery, Page};
use crate::types::{
    BatchArray, BatchResult, DeadLetter, Enqueued, Event, EventId, Metrics, NewEvent, Settings,
};
use crate::{storable, Error};

/// The columns of an event, in the order [`event_from_row`] reads them.
pub(crate) const EVENT_COLUMNS: &str =
    "event_id, status, payload, metadata, stream, seq, created_at, \
     updated_at, processed_at, delivered_at, retry_count, error_message, idempotency_key";

pub(crate) fn event_from_row(row: &Row) -> Result<Event, Error> {
    let decode = |e: tokio_postgres::Error| Error::Decode(e.to_string());
    let status: String = row.try_get("status").map_err(decode)?;
    Ok(Event {
        event_id: EventId(row.try_get("event_id").map_err(decode)?),
        status: status
            .parse()
            .map_err(|e: crate::types::UnknownStatus| Error::Decode(e.to_string()))?,
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

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Refuses text arguments Postgres cannot store (a NUL character), naming the argument:
/// [`Error::InvalidParameter`] "`field` contains a NUL character (\u0000), which Postgres
/// cannot store". Every call checks its own arguments; a caller that passes text on
/// (the server's query parameters) checks it the same way.
pub fn check_texts(fields: &[(&str, &str)]) -> Result<(), Error> {
    storable::texts(
        "",
        fields.iter().map(|&(field, value)| (field, Some(value))),
    )
    .map_err(Error::InvalidParameter)
}

/// How calls reach the database: [`Plain`] prepares each statement per call (any
/// connection or transaction of the caller's); a pooled connection of [`crate::Client`]
/// prepares each statement once per connection and reuses it.
pub trait Exec: Sync {
    /// Runs `sql`, expecting exactly one row.
    fn one<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a;
    /// Runs `sql`, returning every row.
    fn all<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a;
}

/// A caller's connection or transaction, as an [`Exec`].
pub struct Plain<'c, C>(&'c C);

impl<C: GenericClient + Sync> Exec for Plain<'_, C> {
    async fn one<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Row, Error> {
        Ok(self.0.query_one(sql, params).await?)
    }
    async fn all<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Vec<Row>, Error> {
        Ok(self.0.query(sql, params).await?)
    }
}

impl Exec for deadpool_postgres::Object {
    async fn one<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Row, Error> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query_one(&statement, params).await?)
    }
    async fn all<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Vec<Row>, Error> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query(&statement, params).await?)
    }
}

/// The SQL API over an [`Exec`]. Get one with [`on`] for your own connection or
/// transaction; [`crate::Client`]'s methods use one over a pooled connection.
pub struct On<E> {
    pub(crate) conn: E,
}

/// The SQL API on `conn`: a `tokio_postgres::Client` or `Transaction`. Calls run in
/// whatever transaction `conn` is in.
///
/// ```no_run
/// # async fn outbox(db: &mut tokio_postgres::Client) -> Result<(), triggers_client::Error> {
/// use triggers_client::{on, NewEvent};
/// let tx = db.transaction().await?;
/// tx.execute("UPDATE orders SET state = 'paid' WHERE id = 42", &[]).await?;
/// on(&tx).enqueue(&NewEvent::new(serde_json::json!({"order": 42, "state": "paid"}))).await?;
/// tx.commit().await?; // both or neither
/// # Ok(())
/// # }
/// ```
pub fn on<C: GenericClient + Sync>(conn: &C) -> On<Plain<'_, C>> {
    On { conn: Plain(conn) }
}

impl<E: Exec> On<E> {
    /// Queues one event. See [`NewEvent`] for its fields.
    pub async fn enqueue(&self, event: &NewEvent) -> Result<Enqueued, Error> {
        event.check()?;
        let debug = event.debug.map(|d| d.as_str());
        let row = self
            .conn
            .one(
                "SELECT event_id, duplicate FROM triggers.enqueue_ex(payload => $1, metadata => $2, \
                 tenant => $3, idempotency_key => $4, stream => $5, debug => $6)",
                &[&event.payload, &event.metadata, &event.tenant, &event.idempotency_key, &event.stream, &debug],
            )
            .await?;
        Ok(Enqueued {
            event_id: EventId(row.get(0)),
            duplicate: row.get(1),
        })
    }

    /// Queues events of one tenant, all or nothing; returns their ids in order.
    pub async fn enqueue_batch(&self, events: &[NewEvent]) -> Result<Vec<EventId>, Error> {
        Ok(self
            .enqueue_batch_ex(events)
            .await?
            .into_iter()
            .map(|e| e.event_id)
            .collect())
    }

    /// Queues events of one tenant, all or nothing; returns for each, in order, its id
    /// and whether it repeated an idempotency key (then it was not queued again).
    pub async fn enqueue_batch_ex(&self, events: &[NewEvent]) -> Result<Vec<Enqueued>, Error> {
        let Some(first) = events.first() else {
            return Err(Error::InvalidParameter(
                "events must hold at least one event".into(),
            ));
        };
        if let Some(other) = events.iter().find(|e| e.tenant != first.tenant) {
            return Err(Error::InvalidParameter(format!(
                "one batch, one tenant: got '{}' and '{}'",
                first.tenant, other.tenant
            )));
        }
        for (i, event) in events.iter().enumerate() {
            if event.check().is_err() {
                event.check_as(&format!("events[{i}]."))?;
            }
        }
        let array = tokio_postgres::types::Json(BatchArray(events));
        let rows = self
            .conn
            .all(
                "SELECT event_id, duplicate FROM triggers.enqueue_batch_ex($1, $2)",
                &[&array, &first.tenant],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Enqueued {
                event_id: EventId(r.get(0)),
                duplicate: r.get(1),
            })
            .collect())
    }

    /// Runs the processing workflow once (`None`s take the configured values).
    pub async fn process_batch(
        &self,
        batch_size: Option<i32>,
        visibility_timeout_s: Option<i32>,
    ) -> Result<BatchResult, Error> {
        let row = self
            .conn
            .one(
                "SELECT read, stored, retried, dead_lettered FROM triggers.process_batch($1, $2)",
                &[&batch_size, &visibility_timeout_s],
            )
            .await?;
        Ok(BatchResult {
            read: row.get(0),
            stored: row.get(1),
            retried: row.get(2),
            dead_lettered: row.get(3),
        })
    }

    /// One page of an inbox query.
    pub async fn inbox(&self, query: &InboxQuery) -> Result<Page, Error> {
        query.page_on(&self.conn).await
    }

    /// One event of the tenant.
    pub async fn get_event(&self, tenant: &str, id: EventId) -> Result<Event, Error> {
        check_texts(&[("tenant", tenant)])?;
        let sql = format!("SELECT {EVENT_COLUMNS} FROM triggers.get_event($1, $2)");
        event_from_row(&self.conn.one(&sql, &[&id.0, &tenant]).await?)
    }

    /// Marks a pending event delivered (idempotent).
    pub async fn ack(&self, tenant: &str, id: EventId) -> Result<Event, Error> {
        check_texts(&[("tenant", tenant)])?;
        let sql = format!("SELECT {EVENT_COLUMNS} FROM triggers.ack($1, $2)");
        event_from_row(&self.conn.one(&sql, &[&id.0, &tenant]).await?)
    }

    /// Re-queues a failed event; returns the manual attempt number (1 to 3).
    pub async fn retry(&self, tenant: &str, id: EventId) -> Result<i32, Error> {
        check_texts(&[("tenant", tenant)])?;
        Ok(self
            .conn
            .one("SELECT triggers.retry($1, $2)", &[&id.0, &tenant])
            .await?
            .get(0))
    }

    /// The tenant's dead letters, oldest first.
    pub async fn dead_letters(&self, tenant: &str, limit: i32) -> Result<Vec<DeadLetter>, Error> {
        check_texts(&[("tenant", tenant)])?;
        let rows = self
            .conn
            .all(
                "SELECT msg_id, event_id, error, attempts, failed_at, message FROM triggers.dead_letters($1, $2)",
                &[&tenant, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                msg_id: r.get(0),
                event_id: r.get::<_, Option<uuid::Uuid>>(1).map(EventId),
                error: r.get(2),
                attempts: r.get(3),
                failed_at: r.get(4),
                message: r.get(5),
            })
            .collect())
    }

    /// Moves up to `limit` of the tenant's dead letters back to the queue.
    pub async fn redrive(&self, tenant: &str, limit: i32) -> Result<i32, Error> {
        check_texts(&[("tenant", tenant)])?;
        Ok(self
            .conn
            .one("SELECT triggers.redrive($1, $2)", &[&tenant, &limit])
            .await?
            .get(0))
    }

    /// The processing settings (`triggers.config`).
    pub async fn settings(&self) -> Result<Settings, Error> {
        let row = self
            .conn
            .one(
                "SELECT max_retries, backoff_base_ms, backoff_cap_ms, max_payload_bytes, batch_size, \
                        visibility_timeout_s, notify_throttle_ms FROM triggers.config",
                &[],
            )
            .await?;
        Ok(Settings {
            max_retries: row.get(0),
            backoff_base_ms: row.get(1),
            backoff_cap_ms: row.get(2),
            max_payload_bytes: row.get(3),
            batch_size: row.get(4),
            visibility_timeout_s: row.get(5),
            notify_throttle_ms: row.get(6),
        })
    }

    /// Metrics of one tenant, or of all with `None`.
    pub async fn metrics(&self, tenant: Option<&str>) -> Result<Metrics, Error> {
        check_texts(&[("tenant", tenant.unwrap_or_default())])?;
        let json: Value = self
            .conn
            .one("SELECT triggers.metrics($1)", &[&tenant])
            .await?
            .get(0);
        serde_json::from_value(json).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Deletes delivered and failed events unchanged for `older_than`; returns how many.
    pub async fn purge(&self, older_than: Duration) -> Result<i64, Error> {
        let secs = older_than.as_secs_f64();
        Ok(self
            .conn
            .one("SELECT triggers.purge(make_interval(secs => $1))", &[&secs])
            .await?
            .get(0))
    }

    /// Creates an API key for the tenant; the plaintext is returned this once.
    pub async fn create_api_key(&self, tenant: &str, name: &str) -> Result<String, Error> {
        check_texts(&[("tenant", tenant), ("name", name)])?;
        Ok(self
            .conn
            .one("SELECT triggers.create_api_key($1, $2)", &[&tenant, &name])
            .await?
            .get(0))
    }

    /// Revokes one of the tenant's keys (by the key or its id); true if it was active.
    pub async fn revoke_api_key(&self, tenant: &str, key: &str) -> Result<bool, Error> {
        check_texts(&[("tenant", tenant), ("key", key)])?;
        Ok(self
            .conn
            .one("SELECT triggers.revoke_api_key($1, $2)", &[&tenant, &key])
            .await?
            .get(0))
    }

    /// The tenant a key belongs to; [`Error::Unauthorized`] for a bad key.
    pub async fn authenticate(&self, token: &str) -> Result<String, Error> {
        check_texts(&[("token", token)])?;
        Ok(self
            .conn
            .one("SELECT triggers.authenticate($1)", &[&token])
            .await?
            .get(0))
    }
}
