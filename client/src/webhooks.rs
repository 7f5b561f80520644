//! Webhooks (sql/webhooks.sql): endpoints and their deliveries, and the calls the
//! server's delivery workers make. Functions that make or read a secret need the
//! session's `triggers.secrets_key` (the server puts it in its connection settings).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;

use crate::error::Error;
use crate::exec::{Exec, On};
use crate::storable::check_texts;
use crate::types::EventId;

/// A new endpoint: its id, and its secret (`whsec_…`), which is shown only now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    /// Its id.
    pub endpoint_id: uuid::Uuid,
    /// Its signing secret.
    pub secret: String,
}

/// A webhook endpoint (never its secrets).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Its id.
    pub endpoint_id: uuid::Uuid,
    /// Where deliveries go.
    pub url: String,
    /// Which events: `None` for all, else `{"stream", "metadata"}` by containment.
    pub filter: Option<Value>,
    /// The owner's note.
    pub description: Option<String>,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why it is disabled.
    pub disabled_reason: Option<String>,
    /// Until when the previous secret signs too, during a rotation.
    pub rotating_until: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A delivery of an event to an endpoint, with its last attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id.
    pub delivery_id: i64,
    /// The endpoint.
    pub endpoint_id: uuid::Uuid,
    /// The event.
    pub event_id: EventId,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When processing wrote it.
    pub created_at: DateTime<Utc>,
    /// When it succeeded or failed for good.
    pub finished_at: Option<DateTime<Utc>>,
    /// The last attempt's HTTP status (none when there was no answer).
    pub last_status_code: Option<i32>,
    /// The last attempt's latency.
    pub last_latency_ms: Option<i32>,
    /// The last attempt's error.
    pub last_error: Option<String>,
}

/// What to change of an endpoint (`update_endpoint`); `None` keeps a value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointChange {
    /// A new url.
    pub url: Option<String>,
    /// A new filter; `{}` for every event.
    pub filter: Option<Value>,
    /// Enable or disable it.
    pub enabled: Option<bool>,
    /// A new note.
    pub description: Option<String>,
}

/// One logged attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The delivery.
    pub delivery_id: i64,
    /// Its endpoint.
    pub endpoint_id: uuid::Uuid,
    /// 1, 2, ...
    pub attempt: i32,
    /// When the answer (or the failure) came.
    pub attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status; `None` when there was no answer.
    pub status_code: Option<i32>,
    /// From sending to the answer.
    pub latency_ms: Option<i32>,
    /// The start of the answer's body.
    pub response: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Webhook metrics of a tenant or of all (`triggers.webhook_metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookMetrics {
    /// Deliveries waiting for their next attempt (or in flight).
    pub pending: i64,
    /// Deliveries a receiver took (2xx).
    pub succeeded: i64,
    /// Deliveries that failed every attempt of the schedule.
    pub failed: i64,
    /// Attempts made at the deliveries kept.
    pub attempts: i64,
    /// Endpoints.
    pub endpoints: i64,
    /// From stored to received, the last 1,000 successes of each endpoint.
    pub latency_ms: DeliveryLatency,
}

/// Percentiles of delivery latency, in milliseconds (`None` before any success).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DeliveryLatency {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, url, filter, description, enabled, disabled_reason, \
     rotating_until, created_at, updated_at";

fn endpoint_from_row(row: &Row) -> Endpoint {
    Endpoint {
        endpoint_id: row.get(0),
        url: row.get(1),
        filter: row.get(2),
        description: row.get(3),
        enabled: row.get(4),
        disabled_reason: row.get(5),
        rotating_until: row.get(6),
        created_at: row.get(7),
        updated_at: row.get(8),
    }
}

impl<E: Exec> On<E> {
    /// Creates an endpoint of the tenant; returns its id and its secret (shown only now).
    pub async fn create_endpoint(
        &self,
        tenant: &str,
        url: &str,
        filter: Option<&Value>,
        description: Option<&str>,
    ) -> Result<NewEndpoint, Error> {
        check_texts(&[("tenant", tenant), ("url", url)])?;
        let row = self
            .conn
            .one(
                "SELECT endpoint_id, secret FROM triggers.create_endpoint($1, $2, $3, $4)",
                &[&tenant, &url, &filter, &description],
            )
            .await?;
        Ok(NewEndpoint {
            endpoint_id: row.get(0),
            secret: row.get(1),
        })
    }

    /// The tenant's endpoints, oldest first.
    pub async fn endpoints(&self, tenant: &str) -> Result<Vec<Endpoint>, Error> {
        check_texts(&[("tenant", tenant)])?;
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM triggers.endpoints($1)");
        let rows = self.conn.all(&sql, &[&tenant]).await?;
        Ok(rows.iter().map(endpoint_from_row).collect())
    }

    /// The tenant's deliveries of an event or to an endpoint (or both), newest event first.
    pub async fn deliveries(
        &self,
        tenant: &str,
        event_id: Option<EventId>,
        endpoint_id: Option<uuid::Uuid>,
        limit: i32,
    ) -> Result<Vec<Delivery>, Error> {
        check_texts(&[("tenant", tenant)])?;
        let event = event_id.map(|e| e.0);
        let rows = self
            .conn
            .all(
                "SELECT delivery_id, endpoint_id, event_id, status, attempts, next_attempt_at, created_at,
                        finished_at, last_status_code, last_latency_ms, last_error
                   FROM triggers.deliveries($1, $2, $3, $4)",
                &[&tenant, &event, &endpoint_id, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Delivery {
                delivery_id: r.get(0),
                endpoint_id: r.get(1),
                event_id: EventId(r.get(2)),
                status: r.get(3),
                attempts: r.get(4),
                next_attempt_at: r.get(5),
                created_at: r.get(6),
                finished_at: r.get(7),
                last_status_code: r.get(8),
                last_latency_ms: r.get(9),
                last_error: r.get(10),
            })
            .collect())
    }

    /// Changes an endpoint; returns it as it is now.
    pub async fn update_endpoint(
        &self,
        tenant: &str,
        endpoint_id: uuid::Uuid,
        change: &EndpointChange,
    ) -> Result<Endpoint, Error> {
        check_texts(&[("tenant", tenant)])?;
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM triggers.update_endpoint($1, $2, url => $3, filter => $4, \
             enabled => $5, description => $6)"
        );
        let row = self
            .conn
            .one(
                &sql,
                &[
                    &tenant,
                    &endpoint_id,
                    &change.url,
                    &change.filter,
                    &change.enabled,
                    &change.description,
                ],
            )
            .await?;
        Ok(endpoint_from_row(&row))
    }

    /// One endpoint of the tenant ([`Error::NotFound`] when it has none of that id).
    pub async fn endpoint(&self, tenant: &str, endpoint_id: uuid::Uuid) -> Result<Endpoint, Error> {
        check_texts(&[("tenant", tenant)])?;
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM triggers.endpoint($1, $2)");
        let row = self.conn.one(&sql, &[&tenant, &endpoint_id]).await?;
        Ok(endpoint_from_row(&row))
    }

    /// Gives an endpoint a new secret, returned only now; the previous one keeps signing
    /// beside it for 24 hours.
    pub async fn rotate_endpoint_secret(
        &self,
        tenant: &str,
        endpoint_id: uuid::Uuid,
    ) -> Result<String, Error> {
        check_texts(&[("tenant", tenant)])?;
        Ok(self
            .conn
            .one(
                "SELECT triggers.rotate_endpoint_secret($1, $2)",
                &[&tenant, &endpoint_id],
            )
            .await?
            .get(0))
    }

    /// Deletes an endpoint and its deliveries; whether it existed.
    pub async fn delete_endpoint(
        &self,
        tenant: &str,
        endpoint_id: uuid::Uuid,
    ) -> Result<bool, Error> {
        check_texts(&[("tenant", tenant)])?;
        Ok(self
            .conn
            .one(
                "SELECT triggers.delete_endpoint($1, $2)",
                &[&tenant, &endpoint_id],
            )
            .await?
            .get(0))
    }

    /// Sends a stored event to one of the tenant's endpoints again, now; the delivery id.
    pub async fn resend(
        &self,
        tenant: &str,
        event_id: EventId,
        endpoint_id: uuid::Uuid,
    ) -> Result<i64, Error> {
        check_texts(&[("tenant", tenant)])?;
        Ok(self
            .conn
            .one(
                "SELECT triggers.resend($1, $2, $3)",
                &[&tenant, &event_id.0, &endpoint_id],
            )
            .await?
            .get(0))
    }

    /// Queues again the endpoint's failed deliveries created since `since`; how many.
    pub async fn recover(
        &self,
        tenant: &str,
        endpoint_id: uuid::Uuid,
        since: DateTime<Utc>,
    ) -> Result<i64, Error> {
        check_texts(&[("tenant", tenant)])?;
        Ok(self
            .conn
            .one(
                "SELECT triggers.recover($1, $2, $3)",
                &[&tenant, &endpoint_id, &since],
            )
            .await?
            .get(0))
    }

    /// Every attempt at delivering one of the tenant's events, per delivery, in order.
    pub async fn delivery_attempts(
        &self,
        tenant: &str,
        event_id: EventId,
    ) -> Result<Vec<Attempt>, Error> {
        check_texts(&[("tenant", tenant)])?;
        let rows = self
            .conn
            .all(
                "SELECT delivery_id, endpoint_id, attempt, attempted_at, status_code, latency_ms, response, error
                   FROM triggers.delivery_attempts($1, $2)",
                &[&tenant, &event_id.0],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Attempt {
                delivery_id: r.get(0),
                endpoint_id: r.get(1),
                attempt: r.get(2),
                attempted_at: r.get(3),
                status_code: r.get(4),
                latency_ms: r.get(5),
                response: r.get(6),
                error: r.get(7),
            })
            .collect())
    }

    /// Webhook metrics of one tenant, or of all with `None`.
    pub async fn webhook_metrics(&self, tenant: Option<&str>) -> Result<WebhookMetrics, Error> {
        check_texts(&[("tenant", tenant.unwrap_or_default())])?;
        let json: Value = self
            .conn
            .one("SELECT triggers.webhook_metrics($1)", &[&tenant])
            .await?
            .get(0);
        serde_json::from_value(json).map_err(|e| Error::Decode(e.to_string()))
    }
}
