//! The live stream over SQL: events as processing stores them, after a delivery
//! position, each once and in order (sql/live.sql), and [`crate::Client::subscribe`],
//! which follows it for as long as it is polled.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures_util::Stream;
use serde_json::Value;

use crate::error::Error;
use crate::exec::{Exec, On};
use crate::listener::{Listener, STORED_CHANNEL};
use crate::rows::event_from_row;
use crate::storable::check_texts;
use crate::types::Event;
use crate::Client;

/// Where an event stands in the live stream: the stream resumes after it. Opaque: it
/// orders events, and means nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub i64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Text that is not a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a position of the live stream (the id of an event it sent)")]
pub struct NotAPosition(pub String);

impl FromStr for Position {
    type Err = NotAPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u64>()
            .ok()
            .and_then(|n| i64::try_from(n).ok())
            .filter(|_| !s.starts_with('+'))
            .map(Position)
            .ok_or_else(|| NotAPosition(s.chars().take(100).collect()))
    }
}

/// A stored event as the live stream carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Its delivery position.
    pub position: Position,
    /// Its tenant.
    pub tenant: String,
    /// The event, as the inbox shows it.
    pub event: Event,
}

/// Which stored events a subscriber wants: one tenant's (or, `None`, all: a server's one
/// reader), on a stream, with metadata and payload containing the given objects
/// (containment, as `@>`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveFilter {
    /// The tenant.
    pub tenant: Option<String>,
    /// Only events on this stream.
    pub stream: Option<String>,
    /// Only events whose metadata contains this object.
    pub metadata_contains: Option<Value>,
    /// Only events whose payload contains this object.
    pub payload_contains: Option<Value>,
}

impl LiveFilter {
    /// One tenant's events.
    pub fn tenant(tenant: impl Into<String>) -> LiveFilter {
        LiveFilter {
            tenant: Some(tenant.into()),
            ..LiveFilter::default()
        }
    }

    /// Whether a stored event passes: the same rule as the SQL function's filters.
    pub fn matches(&self, tenant: &str, event: &Event) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self
                .stream
                .as_deref()
                .is_none_or(|s| event.stream.as_deref() == Some(s))
            && self.metadata_contains.as_ref().is_none_or(|want| {
                event
                    .metadata
                    .as_ref()
                    .is_some_and(|have| json_contains(have, want))
            })
            && self
                .payload_contains
                .as_ref()
                .is_none_or(|want| json_contains(&event.payload, want))
    }
}

/// jsonb's `@>`: every key of an object in `want` is in `have` with a contained value;
/// every element of an array in `want` is contained in some element of `have`'s array
/// (a scalar also in an array at the top level); scalars are equal.
pub fn json_contains(have: &Value, want: &Value) -> bool {
    fn inner(have: &Value, want: &Value, top: bool) -> bool {
        match (have, want) {
            (Value::Object(h), Value::Object(w)) => w
                .iter()
                .all(|(k, wv)| h.get(k).is_some_and(|hv| inner(hv, wv, false))),
            (Value::Array(h), Value::Array(w)) => {
                w.iter().all(|wv| h.iter().any(|hv| inner(hv, wv, false)))
            }
            (Value::Array(h), w) if top && !w.is_object() => h.iter().any(|hv| scalar_eq(hv, w)),
            (h, w) => scalar_eq(h, w),
        }
    }
    inner(have, want, true)
}

/// Equal scalars: numbers by value (jsonb compares 1.0 and 1 equal), others as JSON.
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || x.to_string().parse::<f64>().ok() == y.to_string().parse::<f64>().ok()
        }
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => false,
        _ => a == b,
    }
}

const STORED_COLUMNS: &str =
    "position, tenant, event_id, status, payload, metadata, stream, seq, created_at, \
     updated_at, processed_at, delivered_at, retry_count, error_message, idempotency_key";

impl<E: Exec> On<E> {
    /// Stored events after `after`, in position order, at most `limit` (1 to 10,000):
    /// only positions every transaction below has settled, unless `upto` names one
    /// already known settled (then exactly those up to it). A page also ends once its
    /// payloads and metadata reach the database's byte budget (4 MiB), so a short page
    /// is not the end: read on from its last position until one is empty.
    pub async fn stored(
        &self,
        filter: &LiveFilter,
        after: Position,
        limit: i32,
        upto: Option<Position>,
    ) -> Result<Vec<StoredEvent>, Error> {
        self.stored_within(filter, after, limit, upto, None).await
    }

    /// [`On::stored`] with a byte budget of its own: the page ends with the event that
    /// brings its payloads and metadata to `max_bytes` (at least one event).
    pub async fn stored_within(
        &self,
        filter: &LiveFilter,
        after: Position,
        limit: i32,
        upto: Option<Position>,
        max_bytes: Option<i32>,
    ) -> Result<Vec<StoredEvent>, Error> {
        let texts: Vec<(&str, &str)> = [
            ("tenant", filter.tenant.as_deref()),
            ("stream", filter.stream.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        check_texts(&texts)?;
        // Without a budget of its own, the page has the function's default.
        let sql = format!(
            "SELECT {STORED_COLUMNS} FROM triggers.stored($1, $2, $3, $4, $5, $6, $7{})",
            if max_bytes.is_some() { ", $8" } else { "" }
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &filter.tenant,
            &after.0,
            &limit,
            &filter.stream,
            &filter.metadata_contains,
            &filter.payload_contains,
            &upto.map(|p| p.0),
            &max_bytes,
        ];
        let used = if max_bytes.is_some() { 8 } else { 7 };
        let rows = self.conn.all(&sql, &params[..used]).await?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    position: Position(
                        row.try_get("position")
                            .map_err(|e| Error::Decode(e.to_string()))?,
                    ),
                    tenant: row
                        .try_get("tenant")
                        .map_err(|e| Error::Decode(e.to_string()))?,
                    event: event_from_row(row)?,
                })
            })
            .collect()
    }

    /// The last position every transaction has settled, in this connection's view: a
    /// reader that starts here gets what is stored from now on. `tenant`: whose stream
    /// the caller reads; a single database does not need it, a PL/Proxy proxy does
    /// (positions are each node's own).
    pub async fn stored_horizon(&self, tenant: Option<&str>) -> Result<Position, Error> {
        Ok(Position(
            self.conn
                .one("SELECT triggers.stored_horizon($1)", &[&tenant])
                .await?
                .get(0),
        ))
    }
}

/// How long a subscriber sleeps between looks when no notification comes: short
/// after a notification (the horizon may be waiting on a transaction that is about to
/// end) and for [`BUSY`] after it found events (a worker notifies at most every 50 ms),
/// long otherwise (a fallback for a lost connection).
const SOON: Duration = Duration::from_millis(5);
const BUSY: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_secs(1);
/// How long a subscriber waits before trying again after the database failed.
const RETRY: Duration = Duration::from_secs(1);

struct Following {
    client: Client,
    filter: LiveFilter,
    last: Option<Position>,
    listener: Option<Listener>,
    ready: VecDeque<StoredEvent>,
    soon: bool,
    found: Option<tokio::time::Instant>,
}

impl Following {
    /// The next event, waiting for it; database errors are retried (the stream
    /// resumes from the last position it yielded); a refused filter ends it.
    async fn next(&mut self) -> Option<Result<StoredEvent, Error>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.last = Some(event.position);
                return Some(Ok(event));
            }
            match self.fill().await {
                Ok(true) => continue,
                Ok(false) => self.wait().await,
                Err(e @ (Error::InvalidParameter(_) | Error::InvalidCursor(_))) => {
                    return Some(Err(e))
                }
                Err(_) => {
                    self.listener = None;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    async fn fill(&mut self) -> Result<bool, Error> {
        let on = self.client.pooled().await?;
        let after = match self.last {
            Some(p) => p,
            None => {
                let now = on.stored_horizon(self.filter.tenant.as_deref()).await?;
                self.last = Some(now);
                now
            }
        };
        if self.listener.is_none() {
            self.listener = self.client.listener_on(STORED_CHANNEL).await.ok();
        }
        let events = on.stored(&self.filter, after, 500, None).await?;
        if !events.is_empty() {
            self.found = Some(tokio::time::Instant::now());
        }
        self.ready.extend(events);
        Ok(!self.ready.is_empty())
    }

    async fn wait(&mut self) {
        let busy = self.found.is_some_and(|at| at.elapsed() < BUSY);
        let pause = if std::mem::take(&mut self.soon) || busy {
            SOON
        } else {
            IDLE
        };
        match &self.listener {
            Some(listener) => match listener.wait_for_events(pause).await {
                Ok(woken) => self.soon = woken,
                Err(_) => self.listener = None,
            },
            None => tokio::time::sleep(pause).await,
        }
    }
}

impl Client {
    /// See [`On::stored_within`].
    pub async fn stored_within(
        &self,
        filter: &LiveFilter,
        after: Position,
        limit: i32,
        upto: Option<Position>,
        max_bytes: Option<i32>,
    ) -> Result<Vec<StoredEvent>, Error> {
        self.pooled()
            .await?
            .stored_within(filter, after, limit, upto, max_bytes)
            .await
    }

    /// See [`On::stored`].
    pub async fn stored(
        &self,
        filter: &LiveFilter,
        after: Position,
        limit: i32,
        upto: Option<Position>,
    ) -> Result<Vec<StoredEvent>, Error> {
        self.pooled()
            .await?
            .stored(filter, after, limit, upto)
            .await
    }

    /// See [`On::stored_horizon`]. The view is the pooled connection's: follow the
    /// stream on a [`Client::dedicated`] client.
    pub async fn stored_horizon(&self, tenant: Option<&str>) -> Result<Position, Error> {
        self.pooled().await?.stored_horizon(tenant).await
    }

    /// The ids (`trg_<id>_…`) of API keys revoked at or after `since`.
    pub async fn revoked_keys(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<String>, Error> {
        let rows = self
            .pooled()
            .await?
            .conn
            .all("SELECT triggers.revoked_keys($1)", &[&since])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Follows the live stream: every event stored after `from` (`None`: from now) that
    /// passes `filter`, in position order, each once, for as long as the stream is
    /// polled. It reconnects by itself and resumes after the last event it yielded;
    /// only a filter the database refuses ends it (with that error). Uses a connection
    /// of its own (the horizon it reads is per connection) and one to LISTEN.
    pub fn subscribe(
        &self,
        filter: LiveFilter,
        from: Option<Position>,
    ) -> impl Stream<Item = Result<StoredEvent, Error>> + Send + 'static {
        let following = Following {
            client: self.dedicated().unwrap_or_else(|| self.clone()),
            filter,
            last: from,
            listener: None,
            ready: VecDeque::new(),
            soon: false,
            found: None,
        };
        futures_util::stream::unfold(Some(following), |state| async move {
            let mut following = state?;
            let item = following.next().await?;
            let done = item.is_err();
            Some((item, (!done).then_some(following)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containment_follows_jsonb() {
        assert!(json_contains(
            &json!({"a": 1, "b": {"c": [1, 2]}}),
            &json!({"b": {"c": [2]}})
        ));
        assert!(json_contains(&json!({"a": 1.0}), &json!({"a": 1})));
        assert!(!json_contains(&json!({"a": "1"}), &json!({"a": 1})));
        assert!(!json_contains(&json!({"a": [1]}), &json!({"a": 1})));
        assert!(json_contains(&json!([1, 2]), &json!(2)));
        assert!(json_contains(&json!({"a": null}), &json!({"a": null})));
        assert!(!json_contains(&json!({}), &json!({"a": null})));
    }

    #[test]
    fn a_position_is_a_non_negative_integer() {
        assert_eq!("42".parse::<Position>(), Ok(Position(42)));
        assert!("-1".parse::<Position>().is_err());
        assert!("+1".parse::<Position>().is_err());
        assert!("1.5".parse::<Position>().is_err());
        assert!("9223372036854775808".parse::<Position>().is_err());
    }
}
