//! Every call of the SQL API, as a method of [`On`]: over a pooled connection (what
//! [`crate::Client`] uses) or the caller's own connection or transaction through
//! [`crate::on`] (so an event can be enqueued atomically with the caller's writes: the
//! transactional outbox).

use std::time::Duration;

use serde_json::Value;

use crate::error::Error;
use crate::exec::{Exec, On};
use crate::inbox::{InboxQuery, Page};
use crate::new_event::{BatchArray, NewEvent};
use crate::rows::{
    dead_letter_from_row, event_from_row, stream_from_row, DEAD_LETTER_COLUMNS, EVENT_COLUMNS,
    STREAM_COLUMNS,
};
use crate::storable::check_texts;
use crate::types::{
    BatchResult, Counters, DeadLetter, Enqueued, Event, EventId, Metrics, MinuteStats, Settings,
    StreamInfo, StreamPage,
};

impl<E: Exec> On<E> {
    /// Queues one event. See [`NewEvent`] for its fields.
    pub async fn enqueue(&self, event: &NewEvent) -> Result<Enqueued, Error> {
        event.check_storable("")?;
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
            if event.check_storable("").is_err() {
                event.check_storable(&format!("events[{i}]."))?;
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

    /// Re-queues a failed event; returns the manual attempt number (1 to `max_manual_retries`, 3 by default).
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
        let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM triggers.dead_letters($1, $2)");
        let rows = self.conn.all(&sql, &[&tenant, &limit]).await?;
        Ok(rows.iter().map(dead_letter_from_row).collect())
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

    /// One page of the tenant's ordered streams, by name: up to `limit` (1 to 1000)
    /// after the stream whose `cursor` is `after` (`None`: from the first).
    pub async fn streams(
        &self,
        tenant: &str,
        limit: i32,
        after: Option<&str>,
    ) -> Result<StreamPage, Error> {
        check_texts(&[
            ("tenant", tenant),
            ("after_cursor", after.unwrap_or_default()),
        ])?;
        let sql = format!("SELECT {STREAM_COLUMNS} FROM triggers.streams($1, $2, $3)");
        let rows = self.conn.all(&sql, &[&tenant, &limit, &after]).await?;
        let streams = rows
            .iter()
            .map(stream_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // A full page may have more after it; a short one is the last.
        let next_cursor = if rows.len() == limit as usize {
            streams.last().map(|s| s.cursor.clone())
        } else {
            None
        };
        Ok(StreamPage {
            streams,
            next_cursor,
        })
    }

    /// One of the tenant's streams, `None` if it has none of that name.
    pub async fn stream(&self, tenant: &str, name: &str) -> Result<Option<StreamInfo>, Error> {
        check_texts(&[("tenant", tenant), ("stream", name)])?;
        let sql = format!("SELECT {STREAM_COLUMNS} FROM triggers.stream($1, $2)");
        let rows = self.conn.all(&sql, &[&tenant, &name]).await?;
        rows.first().map(stream_from_row).transpose()
    }

    /// Skips the dead-lettered head a halted stream waits on, so the stream goes on
    /// with its next event; returns the new `done_seq`. [`Error::NotFound`] for a
    /// stream the tenant does not have, [`Error::InvalidState`] for one not halted.
    pub async fn resume_stream(&self, tenant: &str, name: &str) -> Result<i64, Error> {
        check_texts(&[("tenant", tenant), ("stream", name)])?;
        Ok(self
            .conn
            .one("SELECT triggers.resume_stream($1, $2)", &[&tenant, &name])
            .await?
            .get(0))
    }

    /// The processing settings (`triggers.config`).
    pub async fn settings(&self) -> Result<Settings, Error> {
        let row = self
            .conn
            .one(
                "SELECT max_retries, backoff_base_ms, backoff_cap_ms, max_payload_bytes, batch_size, \
                        visibility_timeout_s, notify_throttle_ms, queue_delay_ms, max_manual_retries, \
                        stream_failure_policy \
                   FROM triggers.config",
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
            queue_delay_ms: row.get(7),
            max_manual_retries: row.get(8),
            stream_failure_policy: row.get(9),
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

    /// The counters that only grow and the all-time latency histogram, of one tenant or of
    /// all with `None` (`triggers.counters()`).
    pub async fn counters(&self, tenant: Option<&str>) -> Result<Counters, Error> {
        check_texts(&[("tenant", tenant.unwrap_or_default())])?;
        let json: Value = self
            .conn
            .one("SELECT triggers.counters($1)", &[&tenant])
            .await?
            .get(0);
        serde_json::from_value(json).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Per minute over the last `minutes` (1 to 1440), oldest first: events processed and
    /// latency percentiles, of one tenant or of all with `None`.
    pub async fn metrics_history(
        &self,
        tenant: Option<&str>,
        minutes: i32,
    ) -> Result<Vec<MinuteStats>, Error> {
        check_texts(&[("tenant", tenant.unwrap_or_default())])?;
        let rows = self
            .conn
            .all(
                "SELECT minute, processed, p50_ms::float8, p95_ms::float8, p99_ms::float8
                   FROM triggers.metrics_history($1, $2)",
                &[&tenant, &minutes],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MinuteStats {
                minute: r.get(0),
                processed: r.get(1),
                p50_ms: r.get(2),
                p95_ms: r.get(3),
                p99_ms: r.get(4),
            })
            .collect())
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

    /// Messages waiting in the work queue of `tenant` (`None`: of every tenant),
    /// counted up to `up_to`, so a count never walks more than that many: what the
    /// server's back-pressure compares with its bounds (`triggers.queue_depth`).
    pub async fn queue_depth(&self, tenant: Option<&str>, up_to: i64) -> Result<i64, Error> {
        if let Some(tenant) = tenant {
            check_texts(&[("tenant", tenant)])?;
        }
        Ok(self
            .conn
            .one("SELECT triggers.queue_depth($1, $2)", &[&tenant, &up_to])
            .await?
            .get(0))
    }

    /// Creates an API key for the tenant; the plaintext is returned this once.
    pub async fn create_api_key(&self, tenant: &str, name: &str) -> Result<String, Error> {
        self.create_expiring_api_key(tenant, name, None).await
    }

    /// Creates an API key for the tenant that is refused from `expires_at` on (never
    /// with `None`); the plaintext is returned this once.
    pub async fn create_expiring_api_key(
        &self,
        tenant: &str,
        name: &str,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<String, Error> {
        check_texts(&[("tenant", tenant), ("name", name)])?;
        Ok(self
            .conn
            .one(
                "SELECT triggers.create_api_key($1, $2, $3)",
                &[&tenant, &name, &expires_at],
            )
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

    /// A valid key's tenant, id and expiry; [`Error::Unauthorized`] for a bad key.
    pub async fn authenticate_key(&self, token: &str) -> Result<crate::KeyInfo, Error> {
        check_texts(&[("token", token)])?;
        let row = self
            .conn
            .one(
                "SELECT tenant, key_id, expires_at FROM triggers.authenticate_key($1)",
                &[&token],
            )
            .await?;
        Ok(crate::KeyInfo {
            tenant: row.get(0),
            key_id: row.get(1),
            expires_at: row.get(2),
        })
    }
}
