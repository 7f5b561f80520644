//! The values the API deals in.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event's id: a UUIDv7 assigned at enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub uuid::Uuid);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for EventId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(EventId)
    }
}

/// Where an event is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored by processing, not yet acknowledged.
    Pending,
    /// Acknowledged by a consumer.
    Delivered,
    /// Retries exhausted, a non-retryable error, or routed to the dead-letter queue.
    Failed,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 3] = [Status::Pending, Status::Delivered, Status::Failed];

    /// The status as the SQL API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of pending, delivered, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status '{0}': expected pending, delivered or failed")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its id.
    pub event_id: EventId,
    /// Where it is in its lifecycle.
    pub status: Status,
    /// The producer's JSON object.
    pub payload: Value,
    /// The producer's metadata object, if any.
    pub metadata: Option<Value>,
    /// Its ordering stream, if any.
    pub stream: Option<String>,
    /// Its position in the stream.
    pub seq: Option<i64>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When processing stored it.
    pub processed_at: Option<DateTime<Utc>>,
    /// When it was acknowledged.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Processing attempts beyond the first, plus manual retries.
    pub retry_count: i32,
    /// The last failure, if any.
    pub error_message: Option<String>,
    /// The producer's idempotency key, if any.
    pub idempotency_key: Option<String>,
}

/// A debug flag that makes an event misbehave on purpose, for testing consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DebugFlag {
    /// Enqueue rejects the event as an invalid payload.
    ValidationError,
    /// Processing fails every attempt: retries, then the dead-letter queue.
    ProcessingError,
    /// The event becomes visible to processing only after a delay.
    QueueDelay,
    /// Processing sends the event straight to the dead-letter queue.
    DlqRouting,
}

impl DebugFlag {
    /// The flag as the SQL API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DebugFlag::ValidationError => "validation_error",
            DebugFlag::ProcessingError => "processing_error",
            DebugFlag::QueueDelay => "queue_delay",
            DebugFlag::DlqRouting => "dlq_routing",
        }
    }
}

/// An event to enqueue, built up field by field.
///
/// ```
/// use triggers_client::NewEvent;
/// let event = NewEvent::new(serde_json::json!({"order": 42}))
///     .tenant("acme")
///     .metadata(serde_json::json!({"source": "shop"}))
///     .idempotency_key("order-42");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub(crate) payload: Value,
    pub(crate) metadata: Option<Value>,
    pub(crate) tenant: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) stream: Option<String>,
    pub(crate) debug: Option<DebugFlag>,
}

impl NewEvent {
    /// An event with this payload (a JSON object) for tenant `default`.
    pub fn new(payload: Value) -> Self {
        NewEvent {
            payload,
            metadata: None,
            tenant: "default".to_string(),
            idempotency_key: None,
            stream: None,
            debug: None,
        }
    }

    /// Attaches metadata (a JSON object).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The tenant the event belongs to.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// A key that makes enqueueing idempotent within the tenant.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Puts the event on an ordered stream.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Sets a debug flag.
    pub fn debug(mut self, flag: DebugFlag) -> Self {
        self.debug = Some(flag);
        self
    }

    /// The tenant the event belongs to.
    pub fn tenant_name(&self) -> &str {
        &self.tenant
    }

    /// Refuses, naming the field, what Postgres could not store: a NUL character in any
    /// string or key, or a number beyond `numeric`'s range. The enqueue calls check
    /// this themselves; call it to learn early.
    pub fn check(&self) -> Result<(), crate::Error> {
        self.check_as("")
    }

    /// [`NewEvent::check`] with `prefix` before each field name ("events[3].").
    pub(crate) fn check_as(&self, prefix: &str) -> Result<(), crate::Error> {
        use crate::storable;
        let named = |field: &str| format!("{prefix}{field}");
        if let Err(e) = storable::json(&named("payload"), &self.payload) {
            return Err(crate::Error::InvalidPayload(e));
        }
        let texts = [
            ("tenant", Some(self.tenant.as_str())),
            ("idempotency_key", self.idempotency_key.as_deref()),
            ("stream", self.stream.as_deref()),
        ];
        storable::texts(prefix, texts).map_err(crate::Error::InvalidParameter)?;
        match &self.metadata {
            Some(m) => {
                storable::json(&named("metadata"), m).map_err(crate::Error::InvalidParameter)
            }
            None => Ok(()),
        }
    }
}

/// `enqueue_batch`'s array, written straight from the events: no copy of any payload.
#[derive(Debug)]
pub(crate) struct BatchArray<'a>(pub &'a [NewEvent]);

impl serde::Serialize for BatchArray<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(BatchElement))
    }
}

/// One element: `{payload, metadata?, idempotency_key?, stream?, debug?}`.
struct BatchElement<'a>(&'a NewEvent);

impl serde::Serialize for BatchElement<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("payload", &e.payload)?;
        if let Some(m) = &e.metadata {
            map.serialize_entry("metadata", m)?;
        }
        if let Some(k) = &e.idempotency_key {
            map.serialize_entry("idempotency_key", k)?;
        }
        if let Some(s) = &e.stream {
            map.serialize_entry("stream", s)?;
        }
        if let Some(d) = e.debug {
            map.serialize_entry("debug", d.as_str())?;
        }
        map.end()
    }
}

/// What `enqueue` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The event's id (the first event's, for a repeated idempotency key).
    pub event_id: EventId,
    /// True when the idempotency key was seen before and nothing was queued.
    pub duplicate: bool,
}

/// What one `process_batch` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchResult {
    /// Messages claimed.
    pub read: i32,
    /// Messages stored as events.
    pub stored: i32,
    /// Messages that failed and will be tried again after a backoff.
    pub retried: i32,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: i32,
}

/// The database's processing settings: the row of `triggers.config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Attempts past the first before a failing message is dead-lettered.
    pub max_retries: i32,
    /// Backoff before the first retry, doubling per attempt.
    pub backoff_base_ms: i32,
    /// Longest backoff.
    pub backoff_cap_ms: i32,
    /// Largest payload enqueue accepts (its stored size).
    pub max_payload_bytes: i32,
    /// Messages `process_batch` claims when not told.
    pub batch_size: i32,
    /// `process_batch`'s visibility timeout when not told.
    pub visibility_timeout_s: i32,
    /// Least time between two wake-up notifications of one session.
    pub notify_throttle_ms: i32,
}

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// pgmq's message id in `triggers_events_dlq`.
    pub msg_id: i64,
    /// The event it carries, when the message named a valid one.
    pub event_id: Option<EventId>,
    /// Why it was dead-lettered.
    pub error: Option<String>,
    /// Processing attempts it had.
    pub attempts: Option<i32>,
    /// When it was dead-lettered.
    pub failed_at: Option<DateTime<Utc>>,
    /// The whole message.
    pub message: Value,
}

/// Latency from enqueue to stored over the recent window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Latency {
    /// The window, in seconds.
    pub window_s: i64,
    /// Median, if anything was processed in the window.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// `triggers.metrics()`: exact counts by status and the queue's health.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// The tenant, or `None` for all tenants.
    pub tenant: Option<String>,
    /// Stored events.
    pub total: i64,
    /// Stored, not yet acknowledged.
    pub pending: i64,
    /// Acknowledged.
    pub delivered: i64,
    /// Failed.
    pub failed: i64,
    /// Messages waiting in the queue.
    pub queue_depth: i64,
    /// Messages in the dead-letter queue.
    pub dlq_count: i64,
    /// When processing last stored an event.
    pub last_processed_at: Option<DateTime<Utc>>,
    /// Events stored per minute over the last five minutes.
    pub processing_rate_per_min: f64,
    /// Age of the oldest queued message, in seconds.
    pub oldest_queued_age_s: f64,
    /// Enqueue-to-stored latency.
    pub latency_ms: Latency,
}
