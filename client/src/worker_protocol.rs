//! The delivery workers' protocol (feature `worker-protocol`, which `triggers-server`
//! turns on): claiming due deliveries, reading their events, recording attempts, and
//! the plaintext secrets an endpoint signs with. Not part of the SDK: a service that
//! sends and reads events never needs it, and the secrets it returns are what the
//! database keeps sealed.

use crate::client::Client;
use crate::error::Error;
use crate::exec::{Exec, On};
use crate::rows::{event_from_row, EVENT_COLUMNS};
use crate::types::{Event, EventId};

/// A delivery a worker took: send it, then [`On::record_attempts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// Its id.
    pub delivery_id: i64,
    /// The endpoint.
    pub endpoint_id: uuid::Uuid,
    /// The tenant of both.
    pub tenant: String,
    /// Where to POST.
    pub url: String,
    /// The event.
    pub event_id: EventId,
    /// This attempt's number (1, 2, ...).
    pub attempt: i32,
}

/// What an attempt got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptOutcome {
    /// The receiver's HTTP status; `None` when there was no answer (then `error`).
    pub status_code: Option<i32>,
    /// From sending to the answer's status.
    pub latency_ms: i32,
    /// The start of the answer's body.
    pub response: Option<String>,
    /// Why there was no answer, or why it is not a success.
    pub error: Option<String>,
    /// The receiver's Retry-After, in seconds.
    pub retry_after_s: Option<i32>,
}

impl<E: Exec> On<E> {
    /// For delivery workers: up to `limit` due deliveries, each attempt counted and
    /// leased for `lease_s` seconds (due again then, if its outcome is never recorded).
    pub async fn claim_deliveries(
        &self,
        limit: i32,
        lease_s: i32,
    ) -> Result<Vec<ClaimedDelivery>, Error> {
        let rows = self
            .conn
            .all(
                "SELECT delivery_id, endpoint_id, tenant, url, event_id, attempt
                   FROM triggers._claim_deliveries($1, $2)",
                &[&limit, &lease_s],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ClaimedDelivery {
                delivery_id: r.get(0),
                endpoint_id: r.get(1),
                tenant: r.get(2),
                url: r.get(3),
                event_id: EventId(r.get(4)),
                attempt: r.get(5),
            })
            .collect())
    }

    /// For delivery workers: the events of claimed deliveries, in one read.
    pub async fn delivery_events(&self, ids: &[EventId]) -> Result<Vec<Event>, Error> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        let sql = format!("SELECT {EVENT_COLUMNS} FROM triggers._delivery_events($1)");
        self.conn
            .all(&sql, &[&ids])
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    /// For delivery workers: logs what each attempt got and moves its delivery on
    /// (succeeded, the next attempt, or failed), all in one transaction; each
    /// delivery's status afterwards, in order (`None` when its endpoint was deleted).
    pub async fn record_attempts(
        &self,
        attempts: &[(ClaimedDelivery, AttemptOutcome)],
    ) -> Result<Vec<Option<String>>, Error> {
        let column = |f: &dyn Fn(&(ClaimedDelivery, AttemptOutcome)) -> Option<i32>| {
            attempts.iter().map(f).collect::<Vec<Option<i32>>>()
        };
        let ids: Vec<i64> = attempts.iter().map(|(d, _)| d.delivery_id).collect();
        let numbers = column(&|(d, _)| Some(d.attempt));
        let codes = column(&|(_, o)| o.status_code);
        let latencies = column(&|(_, o)| Some(o.latency_ms));
        let retry_afters = column(&|(_, o)| o.retry_after_s);
        let responses: Vec<Option<&str>> = attempts
            .iter()
            .map(|(_, o)| o.response.as_deref())
            .collect();
        let errors: Vec<Option<&str>> = attempts.iter().map(|(_, o)| o.error.as_deref()).collect();
        let rows = self
            .conn
            .all(
                "SELECT triggers._record_attempts($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &ids,
                    &numbers,
                    &codes,
                    &latencies,
                    &responses,
                    &errors,
                    &retry_afters,
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The secrets an endpoint signs with now, newest first (needs the secrets key).
    pub async fn endpoint_secrets(&self, endpoint_id: uuid::Uuid) -> Result<Vec<String>, Error> {
        let secrets: Option<Vec<String>> = self
            .conn
            .one("SELECT triggers._endpoint_secrets($1)", &[&endpoint_id])
            .await?
            .get(0);
        Ok(secrets.unwrap_or_default())
    }
}

impl Client {
    /// For delivery workers: due deliveries, counted and leased (see [`On::claim_deliveries`]).
    pub async fn claim_deliveries(
        &self,
        limit: i32,
        lease_s: i32,
    ) -> Result<Vec<ClaimedDelivery>, Error> {
        self.pooled().await?.claim_deliveries(limit, lease_s).await
    }

    /// For delivery workers: the events of claimed deliveries.
    pub async fn delivery_events(&self, ids: &[EventId]) -> Result<Vec<Event>, Error> {
        self.pooled().await?.delivery_events(ids).await
    }

    /// For delivery workers: many attempts' outcomes in one transaction.
    pub async fn record_attempts(
        &self,
        attempts: &[(ClaimedDelivery, AttemptOutcome)],
    ) -> Result<Vec<Option<String>>, Error> {
        self.pooled().await?.record_attempts(attempts).await
    }

    /// The secrets an endpoint signs with now (needs the secrets key).
    pub async fn endpoint_secrets(&self, endpoint_id: uuid::Uuid) -> Result<Vec<String>, Error> {
        self.pooled().await?.endpoint_secrets(endpoint_id).await
    }
}
