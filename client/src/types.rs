//! The values the API returns: events, their ids and statuses, and what the calls
//! report (enqueue results, batch results, settings, dead letters, streams, metrics).

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// How long an event sent with the `queue_delay` debug flag waits before processing
    /// can claim it.
    pub queue_delay_ms: i32,
    /// Manual retries (`retry`) a failed event may have.
    pub max_manual_retries: i32,
    /// What a stream does when its head is dead-lettered: `continue` with the next
    /// event (the default), or `halt` until the head is retried, redriven or skipped
    /// with `resume_stream`.
    pub stream_failure_policy: String,
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

/// Where an ordered stream is (SPEC §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    /// Nothing of it is queued.
    Idle,
    /// Its head is queued and ready, or being processed.
    Active,
    /// Its head failed and backs off; the rest of the stream waits behind it.
    Waiting,
    /// Its head was dead-lettered under `stream_failure_policy = 'halt'`: the stream
    /// stops until the head is retried, redriven or skipped (`resume_stream`).
    Halted,
}

impl StreamState {
    /// Every state.
    pub const ALL: [StreamState; 4] = [
        StreamState::Idle,
        StreamState::Active,
        StreamState::Waiting,
        StreamState::Halted,
    ];

    /// The state as the SQL API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Idle => "idle",
            StreamState::Active => "active",
            StreamState::Waiting => "waiting",
            StreamState::Halted => "halted",
        }
    }
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream state name that is not one of idle, active, waiting, halted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stream state '{0}': expected idle, active, waiting or halted")]
pub struct UnknownStreamState(pub String);

impl FromStr for StreamState {
    type Err = UnknownStreamState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStreamState(s.to_string()))
    }
}

/// One ordered stream of a tenant: how far enqueue and processing have come on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its name.
    pub name: String,
    /// The last seq handed out at enqueue.
    pub last_seq: i64,
    /// Every seq up to this one is finished (stored, or dead-lettered and passed).
    pub done_seq: i64,
    /// Where it is.
    pub state: StreamState,
    /// The event it waits on: the backing-off head when waiting, the dead-lettered head
    /// when halted.
    pub blocking_event: Option<EventId>,
    /// Why: the blocking event's last error.
    pub blocking_error: Option<String>,
    /// When a waiting stream's head is tried again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Pass to the next `streams` call to read the page after this stream.
    pub cursor: String,
}

/// One page of a tenant's streams, by name, and the cursor to the next (`None` on the
/// last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    /// The streams, ordered by name.
    pub streams: Vec<StreamInfo>,
    /// Pass as `after` for the next page.
    pub next_cursor: Option<String>,
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

/// One minute of `triggers.metrics_history()`: events processed in it and their
/// latency percentiles (ms; `None` in a minute without events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteStats {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Events processed (stored or dead-lettered after processing) in it.
    pub processed: i64,
    /// Median latency, enqueue to processed.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

/// `triggers.counters()`: what only grows, for Prometheus's `rate()` and
/// `histogram_quantile()`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// The tenant, or `None` for all tenants.
    pub tenant: Option<String>,
    /// Events queued by producers (a repeated idempotency key is not counted).
    pub enqueued: i64,
    /// Times processing stored an event (again after a manual retry).
    pub stored: i64,
    /// Times an event was queued again after a failure: back-off, manual retry, redrive.
    pub retried: i64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: i64,
    /// Events acknowledged (pending to delivered).
    pub acknowledged: i64,
    /// Latencies (enqueue to stored) in the histogram.
    pub latency_count: i64,
    /// Their sum, in seconds.
    pub latency_sum_s: f64,
    /// Cumulative counts at increasing upper bounds.
    pub latency_buckets: Vec<LatencyBucket>,
}

/// One bound of [`Counters::latency_buckets`]: how many latencies were at most `le_s`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencyBucket {
    /// The upper bound, in seconds.
    pub le_s: f64,
    /// Latencies at most `le_s`.
    pub count: i64,
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
    /// Streams whose head backs off after a failure, the rest of the stream waiting.
    #[serde(default)]
    pub streams_waiting: i64,
    /// Streams halted on a dead-lettered head (`stream_failure_policy = 'halt'`).
    #[serde(default)]
    pub streams_halted: i64,
    /// When processing last stored an event.
    pub last_processed_at: Option<DateTime<Utc>>,
    /// Events stored per minute over the last five minutes.
    pub processing_rate_per_min: f64,
    /// Age of the oldest queued message, in seconds.
    pub oldest_queued_age_s: f64,
    /// Enqueue-to-stored latency.
    pub latency_ms: Latency,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state reads back from the name the SQL API gives it; anything else is refused.
    #[test]
    fn stream_states_round_trip_their_sql_names() {
        for state in StreamState::ALL {
            assert_eq!(state.as_str().parse::<StreamState>(), Ok(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        assert_eq!(
            "stuck".parse::<StreamState>(),
            Err(UnknownStreamState("stuck".into()))
        );
    }
}

/// What a valid API key is (`triggers.authenticate_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its id (the part after `trg_`).
    pub key_id: String,
    /// When it stops working, if ever.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}
